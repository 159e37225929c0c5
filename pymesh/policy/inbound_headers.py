"""Inbound request header hygiene: one reading of the headers for authorization **and** the app.

Header-based policy is bypassed when the policy and the app read a header differently: a NUL
that one side truncates at (CVE-2019-9900), trailing whitespace one side keeps
(CVE-2019-18802), a header sent twice of which one side sees the first value and the other the
last (CVE-2021-32777). `clean_headers` settles each case once, and the server hands the app the
cleaned list, so both read the same thing:

- a value with NUL, CR, LF or any other control character except HTAB is rejected (400);
- leading and trailing whitespace (SP, HTAB) of a value is trimmed;
- a repeated header becomes **one** header, its values joined by `", "` in arrival order
  (RFC 9110 §5.3; `cookie` joins with `"; "`, RFC 6265) — except `host`, `content-length`,
  `content-type`, `authorization` and `proxy-authorization`, which must not repeat (400);
- names are lower-cased; a name that is not an RFC 9110 token is rejected (400);
- names containing `_` can be dropped or rejected (`underscores=`): WSGI folds `x-user` and
  `x_user` into one `HTTP_X_USER`, so behind WSGI a client could smuggle one as the other;
- names in `drop` (exact, lower-case) or starting with one of `drop_prefixes` are removed
  (e.g. `UNTRUSTED_HEADERS` / `UNTRUSTED_PREFIXES` from an untrusted downstream, CVE-2023-27487).

    from pymesh.policy.inbound_headers import clean_headers, HeaderRejection

    result = clean_headers(scope["headers"])
    if isinstance(result, HeaderRejection):
        ...  # answer result.status (400), log result.reason
    else:
        scope["headers"] = result.items   # what the app receives
        result.get("x-user")              # what authorization reads

Pure functions; no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, NamedTuple

__all__ = [
    "SINGLETON_HEADERS",
    "UNTRUSTED_HEADERS",
    "UNTRUSTED_PREFIXES",
    "CleanHeaders",
    "HeaderRejection",
    "clean_headers",
]

SINGLETON_HEADERS = frozenset(
    {b"host", b"content-length", b"content-type", b"authorization", b"proxy-authorization"}
)
# Identity and proxy-internal headers a downstream must never set (strip them unless the hop
# is authenticated, e.g. XFCC from pymesh-proxy over a Unix socket).
UNTRUSTED_HEADERS = frozenset({"x-forwarded-client-cert", "x-ssl-client-cert"})
UNTRUSTED_PREFIXES = ("x-pymesh-", "x-envoy-", "x-ssl-client-")

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_TOKEN = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_OWS = b" \t"

Underscores = Literal["allow", "drop", "reject"]


class _DecodedHeaders(Mapping[str, str]):
    """The `str` view of cleaned header pairs, decoded on first use: most requests never need
    it (authorization decisions are memoized when no rule reads headers)."""

    __slots__ = ("_dict", "_items")

    def __init__(self, items: list[tuple[bytes, bytes]]) -> None:
        self._items = items
        self._dict: dict[str, str] | None = None

    def _decoded(self) -> dict[str, str]:
        d = self._dict
        if d is None:
            d = self._dict = {n.decode("latin-1"): v.decode("latin-1") for n, v in self._items}
        return d

    def __getitem__(self, name: str) -> str:
        return self._decoded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{self._decoded()!r}"


class CleanHeaders(NamedTuple):
    """Headers after `clean_headers`.

    `items`: (lower-case name, value) byte pairs, one per name, in first-arrival order — give
    these to the app (ASGI `scope["headers"]`). `values`: the same as a `str` mapping (latin-1),
    what authorization reads (`AuthzRequest.headers`).
    """

    items: list[tuple[bytes, bytes]]
    values: Mapping[str, str]

    def get(self, name: str) -> str | None:
        """The (folded) value of lower-case header `name`, or None."""
        return self.values.get(name)


class HeaderRejection(NamedTuple):
    """Headers that must not be served: answer `status` (400); `reason` is for the log."""

    status: int
    reason: str


def _show(name: bytes) -> str:
    return repr(name[:40].decode("latin-1"))


def _rejection(pairs: list[tuple[bytes, bytes]]) -> HeaderRejection | None:
    """The first bad header of `pairs`, named (the slow path, after a batched check failed)."""
    for raw_name, raw_value in pairs:
        name = raw_name.lower()
        if not _TOKEN.fullmatch(name):
            return HeaderRejection(400, f"invalid header name {_show(raw_name)}")
        if _BAD_VALUE.search(raw_value):
            what = "NUL" if b"\x00" in raw_value else "a control character"
            return HeaderRejection(400, f"header {_show(name)} has {what} in its value")
    return None


@functools.lru_cache(maxsize=16)
def _as_bytes(
    drop: frozenset[str], prefixes: tuple[str, ...]
) -> tuple[frozenset[bytes], tuple[bytes, ...]]:
    """The drop lists as bytes, made once per list (names are compared before decoding)."""
    return (
        frozenset(n.encode("latin-1") for n in drop),
        tuple(p.encode("latin-1") for p in prefixes),
    )


def clean_headers(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    underscores: Underscores = "allow",
    drop: frozenset[str] = frozenset(),
    drop_prefixes: tuple[str, ...] = (),
) -> CleanHeaders | HeaderRejection:
    """Validate, trim, fold and filter raw header pairs (ASGI `scope["headers"]` shape).

    Returns `CleanHeaders` for both the app and authorization, or a `HeaderRejection` (400).
    """
    pairs = headers if isinstance(headers, list) else list(headers)
    if not pairs:
        return CleanHeaders([], {})
    # one regex pass over all names and one over all values (this runs per request)
    names = [n for n, _ in pairs]
    if (
        b"" in names
        or _NOT_TOKEN.search(b"".join(names))
        or _BAD_VALUE.search(b" ".join([v for _, v in pairs]))
    ):
        rejection = _rejection(pairs)
        if rejection is not None:
            return rejection
    filtering = bool(drop or drop_prefixes)
    if filtering:
        drop_b, prefixes_b = _as_bytes(drop, drop_prefixes)
    folded: dict[bytes, bytes] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.lower()
        if underscores != "allow" and b"_" in name:
            if underscores == "reject":
                return HeaderRejection(400, f"header name {_show(name)} contains '_'")
            continue
        if filtering and (name in drop_b or name.startswith(prefixes_b)):
            continue
        value = raw_value.strip(_OWS)
        old = folded.get(name)
        if old is None:
            folded[name] = value
        elif name in SINGLETON_HEADERS:
            return HeaderRejection(400, f"header {_show(name)} repeated")
        elif name == b"cookie":
            folded[name] = old + b"; " + value
        else:
            folded[name] = old + b", " + value
    items = list(folded.items())
    return CleanHeaders(items, _DecodedHeaders(items))
