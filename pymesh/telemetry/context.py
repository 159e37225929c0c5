"""Trace context: what one hop knows about its trace, how it travels in headers, and how it
flows from an inbound request to the outbound calls made while serving it.

How this works: a meshed server parses the caller's headers (W3C `traceparent` / `tracestate`
and `baggage`, or B3 single / multi) into a `TraceContext` for its own server span and puts it
in the `CURRENT` context variable while the app runs. A meshed client reads `CURRENT` (no app
code): its call becomes a child of the server span, inherits the sampling decision and the
remaining deadline, and writes the headers for the next hop. asyncio tasks copy context
variables; threads do not — `pymesh.telemetry.wrap_executor` and `propagating` carry them.

Parsing follows the W3C Trace Context spec as its test suite checks it today: an invalid
`traceparent` restarts the trace; a `tracestate` is kept only with a valid `traceparent`, and
dropped whole when a member is malformed or there are more than 32 members; a repeated key
keeps its first member. Repeated headers are folded:
`tracestate` and `baggage` joined with ",", a repeated `traceparent` is invalid.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from pymesh.call import MESH_HEADER_RAW

# workload metadata exchange (Istio's x-envoy-peer-metadata) and the remaining deadline:
# `workload;namespace;app;version[;milliseconds]` (see `pymesh.call.MESH_HEADER_RAW`)
PEER_HEADER = MESH_HEADER_RAW.decode()

_rand = random.getrandbits  # ids need uniqueness, not secrecy
_HEX = frozenset("0123456789abcdef")
_MAX_MEMBERS = 32
# the current spec's key grammar (Level 1's tenant@system form is a special case of it)
_KEY = re.compile(r"^[a-z0-9][a-z0-9_\-*/@]{0,255}$")
_VALUE = re.compile(r"^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$")


class TraceContext:
    """One hop of a trace: ids (ints), the sampling decision, vendor state and baggage, the
    absolute deadline (monotonic, `inf` when none), and the OTel span when sampled."""

    __slots__ = (
        "baggage",
        "deadline",
        "parent_id",
        "sampled",
        "span",
        "span_id",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        parent_id: int,
        sampled: bool,
        tracestate: str = "",
        baggage: str = "",
        deadline: float = float("inf"),
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # 0 for a root
        self.sampled = sampled
        self.tracestate = tracestate
        self.baggage = baggage
        self.deadline = deadline
        self.span: Any = None  # the OTel span (sampled calls only)

    @property
    def trace_id_hex(self) -> str:
        """The trace id as 32 lower-case hex digits."""
        return f"{self.trace_id:032x}"

    def traceparent(self) -> str:
        """This hop's `traceparent` header value."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    def __repr__(self) -> str:
        return f"TraceContext({self.traceparent()}, tracestate={self.tracestate!r})"


CURRENT: ContextVar[TraceContext | None] = ContextVar("pymesh_trace", default=None)


def new_id(bits: int) -> int:
    """A random non-zero id of `bits` bits."""
    while True:
        v = _rand(bits)
        if v:
            return v


def _hex_id(text: str, digits: int) -> int:
    """The id in `text` (exactly `digits` lower-case hex digits, not all zero), or 0."""
    if len(text) != digits or not _HEX.issuperset(text):
        return 0
    return int(text, 16)


# version, trace id, parent id, flags, and what a later version may add after a "-"
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL
)


def parse_traceparent(value: str) -> tuple[int, int, bool] | None:
    """(trace id, parent id, sampled) from a `traceparent` value, or None when invalid: not
    lower-case hex in the four fields, version ff, version 00 with more after the flags (a
    later version may add fields after a "-"), or an all-zero id. (One regular expression,
    matched in C: every served request parses one.)"""
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return None
    version, trace, parent, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    trace_id = int(trace, 16)
    parent_id = int(parent, 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, bool(int(flags, 16) & 1)


def valid_tracestate(value: str) -> str | None:
    """`value` as a normalized tracestate (members joined by ","), or None when the spec says
    to discard it (a malformed member, more than 32 members). A repeated key keeps its first
    (left-most, most recent) member: the spec lets a vendor discard duplicates, which Level 1
    answered by dropping the whole list and the current spec and its test suite do not."""
    members = []
    keys = set()
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        key, eq, val = member.partition("=")
        if not eq or not _KEY.match(key) or not _VALUE.match(val):
            return None
        if key in keys:
            continue
        keys.add(key)
        members.append(member)
    if len(members) > _MAX_MEMBERS:
        return None
    return ",".join(members)


def _b3_sampled(value: str | None) -> bool | None:
    if value is None:
        return None
    return value in ("1", "d", "true")


def parse_b3(headers: dict[str, str]) -> tuple[int, int, bool | None] | None:
    """(trace id, span id, sampled or None) from B3 single (`b3`) or multi (`x-b3-*`)."""
    single = headers.get("b3")
    if single is not None:
        parts = single.split("-")
        if len(parts) == 1:  # sampling only ("0", "1", "d"): no ids to continue
            return None
        if len(parts) < 2:
            return None
        trace = parts[0]
        trace_id = _hex_id(trace.rjust(32, "0") if len(trace) == 16 else trace, 32)
        span_id = _hex_id(parts[1], 16)
        if not trace_id or not span_id:
            return None
        return trace_id, span_id, _b3_sampled(parts[2] if len(parts) > 2 else None)
    trace_h = headers.get("x-b3-traceid")
    span_h = headers.get("x-b3-spanid")
    if trace_h is None or span_h is None:
        return None
    trace_h = trace_h.lower()
    trace_id = _hex_id(trace_h.rjust(32, "0") if len(trace_h) == 16 else trace_h, 32)
    span_id = _hex_id(span_h.lower(), 16)
    if not trace_id or not span_id:
        return None
    if headers.get("x-b3-flags") == "1":
        return trace_id, span_id, True
    return trace_id, span_id, _b3_sampled(headers.get("x-b3-sampled"))


# every header a meshed client may write for propagation (lower-case, raw)
PROPAGATED = frozenset(
    {
        b"traceparent",
        b"tracestate",
        b"baggage",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        MESH_HEADER_RAW,
    }
)

_WANTED = frozenset(
    {
        "traceparent",
        "tracestate",
        "baggage",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-flags",
        PEER_HEADER,
        "x-request-id",
    }
)
_WANTED_B = frozenset(h.encode() for h in _WANTED)


def collect(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """The propagation headers among raw (lower-case) `headers`, repeated ones folded
    (a repeated `traceparent` becomes invalid); None when there are none."""
    got: dict[str, str] | None = None
    for name, value in headers:
        if name in _WANTED_B:
            key = name.decode("latin-1")
            text = value.decode("latin-1").strip(" \t")  # OWS a server may have left on
            if got is None:
                got = {}
            prev = got.get(key)
            if prev is None:
                got[key] = text
            elif key == "traceparent":
                got[key] = "invalid"
            else:
                got[key] = prev + "," + text
    return got


class Propagation:
    """Which header formats are read and written: any of "tracecontext", "baggage", "b3"
    (single header), "b3multi". Reading tries them in order; writing writes all."""

    __slots__ = ("b3", "b3multi", "baggage", "tracecontext")

    def __init__(self, formats: Iterable[str] = ("tracecontext", "baggage")) -> None:
        names = set(formats)
        unknown = names - {"tracecontext", "baggage", "b3", "b3multi"}
        if unknown:
            raise ValueError(f"unknown propagation format(s): {sorted(unknown)}")
        self.tracecontext = "tracecontext" in names
        self.baggage = "baggage" in names
        self.b3 = "b3" in names
        self.b3multi = "b3multi" in names

    def extract(self, got: dict[str, str]) -> tuple[int, int, bool | None, str, str] | None:
        """(trace id, parent id, sampled or None, tracestate, baggage) from collected headers."""
        baggage = got.get("baggage", "") if self.baggage else ""
        if self.tracecontext:
            tp = got.get("traceparent")
            parsed = parse_traceparent(tp) if tp is not None else None
            if parsed is not None:
                ts = got.get("tracestate")
                state = (valid_tracestate(ts) or "") if ts else ""
                return parsed[0], parsed[1], parsed[2], state, baggage
        if self.b3 or self.b3multi:
            b3 = parse_b3(got)
            if b3 is not None:
                return b3[0], b3[1], b3[2], "", baggage
        return None

    def pairs(self, ctx: TraceContext) -> list[tuple[bytes, bytes]]:
        """`ctx` as raw (lower-case name, value) header pairs, every configured format."""
        flag = b"01" if ctx.sampled else b"00"
        out: list[tuple[bytes, bytes]] = []
        if self.tracecontext:
            out.append((b"traceparent", b"00-%032x-%016x-%s" % (ctx.trace_id, ctx.span_id, flag)))
            if ctx.tracestate:
                out.append((b"tracestate", ctx.tracestate.encode("latin-1")))
        if self.baggage and ctx.baggage:
            out.append((b"baggage", ctx.baggage.encode("latin-1")))
        if self.b3:
            out.append((b"b3", b"%032x-%016x-%s" % (ctx.trace_id, ctx.span_id, flag[1:])))
        if self.b3multi:
            out.append((b"x-b3-traceid", b"%032x" % ctx.trace_id))
            out.append((b"x-b3-spanid", b"%016x" % ctx.span_id))
            if ctx.parent_id:
                out.append((b"x-b3-parentspanid", b"%016x" % ctx.parent_id))
            out.append((b"x-b3-sampled", flag[1:]))
        return out

    def inject(self, ctx: TraceContext, set_header: Any) -> None:
        """Write `ctx` as headers through `set_header(name, value)` (text)."""
        for name, value in self.pairs(ctx):
            set_header(name.decode("latin-1"), value.decode("latin-1"))

    def __repr__(self) -> str:
        on = [n for n in self.__slots__ if getattr(self, n)]
        return f"Propagation({on})"
