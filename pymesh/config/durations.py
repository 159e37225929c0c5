"""Go-style durations (`1.5s`, `100ms`, `1h30m`, `250us`) as Istio YAML writes them.

Istio's durations are protobuf `Duration`s written as Go's `time.ParseDuration` reads them: a
sequence of decimal numbers, each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`); `0` alone
needs no unit. pymesh refuses negative durations: no Istio field takes one.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pymesh.config.findings import q

# nanoseconds per unit; both micro signs Go accepts (U+00B5 and U+03BC)
_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")
# protobuf Duration's range: about 10,000 years
MAX_SECONDS = 315_576_000_000


class DurationError(ValueError):
    """A duration string that Go's `time.ParseDuration` (or pymesh) would refuse."""


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration string: `"1.5s"` → 1.5, `"1h30m"` → 5400.0.

    Raises `DurationError` (a `ValueError`) for malformed or negative input.
    """
    s = text.strip()
    if not s:
        raise DurationError("empty duration")
    if s[0] == "-":
        raise DurationError(f"negative duration {q(text)} is not allowed")
    if s[0] == "+":
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = Decimal(0)
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise DurationError(f'invalid duration {q(text)} (write e.g. "1.5s", "100ms", "1h30m")')
        number, unit = m.group(1), m.group(2)
        if not unit:
            raise DurationError(
                f'invalid duration {q(text)}: missing unit (write e.g. "{number}s")'
            )
        if unit not in _UNITS:
            raise DurationError(
                f"invalid duration {q(text)}: unknown unit {q(unit)} (units: ns, us, ms, s, m, h)"
            )
        try:
            total += Decimal(number) * _UNITS[unit]
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
            raise DurationError(f"invalid duration {q(text)}") from exc
        pos = m.end()
    seconds = total / Decimal(1_000_000_000)
    if seconds > MAX_SECONDS:
        raise DurationError(f"duration {q(text)} is too large")
    return float(seconds)


def format_duration(seconds: float) -> str:
    """A short Go-style spelling of `seconds` (`0.1` → `"100ms"`), for messages."""
    if seconds == 0:
        return "0s"
    if seconds < 1e-3:
        return f"{seconds * 1e6:g}us"
    if seconds < 1:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds:g}s"
