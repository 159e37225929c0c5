"""Trace-context parsing as the W3C Trace Context spec (level 1) and its test suite's cases say:
traceparent shapes, tracestate validation, folding of repeated headers; B3 single and multi;
context propagation through executors."""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

import pytest

from pymesh.telemetry import propagating, wrap_executor
from pymesh.telemetry.context import (
    CURRENT,
    Propagation,
    TraceContext,
    collect,
    parse_b3,
    parse_traceparent,
    valid_tracestate,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
GOOD = f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (GOOD, True),
        (f"00-{TRACE}-{SPAN}-00", True),
        (f"00-{TRACE}-{SPAN}-09", True),  # other flag bits are ignored, sampled bit set
        (f"00-{TRACE.upper()}-{SPAN}-01", False),  # upper case
        (f"00-{'0' * 32}-{SPAN}-01", False),  # all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", False),  # all-zero parent id
        (f"ff-{TRACE}-{SPAN}-01", False),  # version ff is invalid
        (f"0-{TRACE}-{SPAN}-01", False),
        (f"00-{TRACE}-{SPAN}-01-extra", False),  # version 00 has exactly four fields
        (f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like", True),  # future version
        (f"cc-{TRACE}-{SPAN}-01.what", False),  # future version: a dash after the flags
        (f"00-{TRACE}-{SPAN}-0x", False),
        (f"00_{TRACE}-{SPAN}-01", False),
        (f"00-{TRACE[:-1]}-{SPAN}-01", False),
        (f" 00-{TRACE}-{SPAN}-01", False),
        ("", False),
    ],
)
def test_traceparent(value: str, ok: bool) -> None:
    got = parse_traceparent(value)
    assert (got is not None) == ok
    if ok and got is not None:
        assert got[0] == int(TRACE, 16) and got[1] == int(SPAN, 16)


@pytest.mark.parametrize(
    ("value", "out"),
    [
        ("foo=1", "foo=1"),
        ("foo=1,bar=2", "foo=1,bar=2"),
        ("foo=1 , bar=2\t", "foo=1,bar=2"),  # optional white space around members
        ("foo=1,,bar=2", "foo=1,bar=2"),  # empty members are allowed
        ("foo=1,foo=2", "foo=1"),  # a repeated key keeps its first (left-most) member
        ("foo=1,bar=2,foo=1", "foo=1,bar=2"),
        ("Foo=1", None),  # upper-case key
        ("foo", None),  # no "="
        ("foo=", None),  # empty value
        ("foo=bar=baz", None),  # "=" in the value
        ("foo=bar ", "foo=bar"),  # trailing space is OWS, stripped
        ("tenant@system=1", "tenant@system=1"),
        ("1tenant@system=1", "1tenant@system=1"),  # keys may start with a digit
        ("1foo=1", "1foo=1"),
        ("tenant@longersystemname=1", "tenant@longersystemname=1"),  # "@" anywhere after the
        ("foo@@bar=1", "foo@@bar=1"),  # first character (the current spec's key grammar)
        ("@foo=1", None),  # but not first
        ("_foo=1", None),
        ("a" * 256 + "=1", "a" * 256 + "=1"),
        ("a" * 257 + "=1", None),
        ("k=" + "v" * 256, "k=" + "v" * 256),
        ("k=" + "v" * 257, None),
        (",".join(f"k{i}=v" for i in range(32)), ",".join(f"k{i}=v" for i in range(32))),
        (",".join(f"k{i}=v" for i in range(33)), None),  # more than 32 members
    ],
)
def test_tracestate(value: str, out: str | None) -> None:
    assert valid_tracestate(value) == out


def test_repeated_headers_are_folded() -> None:
    got = collect(
        [
            (b"traceparent", GOOD.encode()),
            (b"tracestate", b"a=1"),
            (b"tracestate", b"b=2"),
            (b"x-other", b"x"),
        ]
    )
    assert got == {"traceparent": GOOD, "tracestate": "a=1,b=2"}
    p = Propagation()
    extracted = p.extract(got)
    assert extracted is not None and extracted[3] == "a=1,b=2"
    # two traceparent headers: invalid, the trace restarts (and tracestate is dropped)
    twice = collect([(b"traceparent", GOOD.encode()), (b"traceparent", GOOD.encode())])
    assert twice is not None and p.extract(twice) is None
    assert collect([(b"x-other", b"x")]) is None


def test_invalid_tracestate_is_dropped_but_traceparent_kept() -> None:
    got = {"traceparent": GOOD, "tracestate": "a=1,B=2"}
    extracted = Propagation().extract(got)
    assert extracted is not None and extracted[:2] == (int(TRACE, 16), int(SPAN, 16))
    assert extracted[3] == ""


def test_b3_single_and_multi() -> None:
    single = parse_b3({"b3": f"{TRACE}-{SPAN}-1"})
    assert single == (int(TRACE, 16), int(SPAN, 16), True)
    short = parse_b3({"b3": f"{TRACE[16:]}-{SPAN}-0-{SPAN}"})
    assert short == (int(TRACE[16:], 16), int(SPAN, 16), False)
    assert parse_b3({"b3": "0"}) is None  # sampling only: a new trace
    assert parse_b3({"b3": f"{TRACE}-{SPAN}"}) == (int(TRACE, 16), int(SPAN, 16), None)
    multi = parse_b3({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"})
    assert multi == (int(TRACE, 16), int(SPAN, 16), True)
    debug = parse_b3({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-flags": "1"})
    assert debug is not None and debug[2] is True
    assert parse_b3({"x-b3-traceid": "zz", "x-b3-spanid": SPAN}) is None


def test_inject_every_configured_format() -> None:
    ctx = TraceContext(int(TRACE, 16), int(SPAN, 16), 5, True, "a=1", "k=v")
    out: dict[str, str] = {}
    Propagation(("tracecontext", "baggage", "b3", "b3multi")).inject(ctx, out.__setitem__)
    assert out["traceparent"] == GOOD
    assert out["tracestate"] == "a=1" and out["baggage"] == "k=v"
    assert out["b3"] == f"{TRACE}-{SPAN}-1"
    assert out["x-b3-traceid"] == TRACE and out["x-b3-sampled"] == "1"
    assert out["x-b3-parentspanid"] == "0000000000000005"
    with pytest.raises(ValueError, match="unknown propagation"):
        Propagation(("jaeger",))


def test_context_reaches_wrapped_executors_and_propagating_threads() -> None:
    ctx = TraceContext(1, 2, 0, False)
    token = CURRENT.set(ctx)
    try:
        with ThreadPoolExecutor(1) as bare:
            assert bare.submit(CURRENT.get).result() is None  # thread pools do not copy
            wrapped = wrap_executor(bare)
            assert wrapped.submit(CURRENT.get).result() is ctx

            async def via_loop() -> object:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(wrapped, CURRENT.get)

            assert asyncio.run(via_loop()) is ctx
        assert contextvars.Context().run(propagating(CURRENT.get)) is ctx
    finally:
        CURRENT.reset(token)


@pytest.mark.parametrize(
    ("meta", "deadline", "attempt", "expected"),
    [
        (b"fe;default;fe;v1", float("inf"), float("inf"), b"fe;default;fe;v1"),  # no deadline
        (b"fe;default;fe;v1", 102.0, 102.0, b"fe;default;fe;v1;2000"),  # the route timeout
        (b"fe;default;fe;v1", 102.0, 100.75, b"fe;default;fe;v1;750"),  # a per-try timeout
        (b"fe;default;fe;v1", 99.0, 99.0, b"fe;default;fe;v1;0"),  # already past: never < 0
        (None, 102.0, 102.0, None),  # telemetry off: headers untouched
    ],
)
def test_each_attempt_sends_its_metadata_and_remaining_deadline(
    meta: bytes | None, deadline: float, attempt: float, expected: bytes | None
) -> None:
    import httpx

    from pymesh.call import Call, Decision

    request = httpx.Request("GET", "http://reviews/x", headers={"x-a": "1"})
    call = Call(
        direction="outbound",
        protocol="http",
        scheme="http",
        host="reviews",
        port=80,
        authority="reviews",
        method="GET",
        target=b"/x",
        headers=request.headers,
        native=request,
        replayable=True,
        decision=Decision("1", "reviews"),
        deadline=deadline,
    )
    call.mesh_metadata = meta
    call.attempt_deadline = attempt
    sent = dict(call.upstream_headers(now=100.0))
    assert sent.get(b"x-a") == b"1"
    assert sent.get(b"x-pymesh-peer") == expected


def test_a_served_request_reads_the_callers_metadata_and_deadline() -> None:
    import time

    import pymesh
    from pymesh.telemetry import TelemetryConfig

    mesh = pymesh.Mesh.from_yaml("", service="s", telemetry=TelemetryConfig(sampling=0.0))
    tel = mesh.telemetry
    assert tel is not None
    rec = tel.inbound("GET", "s", "/", {"x-pymesh-peer": "fe;default;fe;v1;1500"})
    assert rec.peer_meta == "fe;default;fe;v1"
    assert rec.trace is not None and 1.4 < rec.trace.deadline - time.monotonic() <= 1.5
    for meta in ("fe;default;fe;v1", "fe;default;fe;v1;soon"):  # no deadline, or a bad one
        rec = tel.inbound("GET", "s", "/", {"x-pymesh-peer": meta})
        assert rec.peer_meta == "fe;default;fe;v1"
        assert rec.trace is not None and rec.trace.deadline == float("inf")
