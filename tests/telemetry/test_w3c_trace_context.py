"""W3C Trace Context (Level 1) conformance, end to end, written from the spec: a caller sends
`traceparent` / `tracestate` headers (raw, as given: any case, repeated, with whitespace) to the
example's meshed service (examples/trace_context_service.py: no tracing code in the app), which
POSTs to a plain HTTP callback receiver on 127.0.0.1 with the mesh's httpx client (pymesh's
passthrough path). Every assertion is on the headers the receiver actually got.

The W3C harness (github.com/w3c/trace-context, `test/`) checks the same behaviour; these cases
are ours, one per rule of the spec: the trace continues (same trace id, a new parent id, the
sampled flag followed, `tracestate` carried in order) or restarts (a new trace id, `tracestate`
dropped), and `tracestate` is validated as Level 1's grammar and limits say.

Each case runs against three services: sampling every root trace with the OpenTelemetry SDK
(span ids come from the SDK), sampling none (ids from pymesh alone), and sampling every root
trace with only OpenTelemetry's API (a no-op tracer: what a bare install has).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind

from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _load_example() -> ModuleType:
    path = ROOT / "examples" / "trace_context_service.py"
    spec = importlib.util.spec_from_file_location("trace_context_service_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = _load_example()

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")


def tp(
    version: str = "00",
    trace: str = TRACE,
    parent: str = PARENT,
    flags: str = "01",
    extra: str = "",
) -> str:
    """A traceparent value (valid unless told otherwise)."""
    return f"{version}-{trace}-{parent}-{flags}{extra}"


# -- the service, the callback receiver, the caller -------------------------------------------


@dataclass
class Service:
    """One running example service and how its mesh samples."""

    name: str
    port: int
    sampling: float
    exporter: InMemorySpanExporter | None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Any]:
    rx = EXAMPLE.CallbackReceiver()
    yield rx
    rx.stop()


@pytest.fixture(scope="module", params=["sdk-sampled", "sdk-unsampled", "api-only"])
def service(request: pytest.FixtureRequest, receiver: Any) -> Iterator[Service]:
    name = request.param
    exporter = None
    provider: Any
    if name == "api-only":
        provider, sampling = NoOpTracerProvider(), 1.0
    else:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        sampling = 1.0 if name == "sdk-sampled" else 0.0
    mesh = EXAMPLE.make_mesh(sampling, tracer_provider=provider)
    server = mesh.server(EXAMPLE.TraceContextService(mesh)).start()
    try:
        yield Service(name, server.port, sampling, exporter)
    finally:
        server.stop()
        mesh.close()
        if isinstance(provider, TracerProvider):
            provider.shutdown()


@dataclass
class Hop:
    """The trace context one callback received."""

    trace_id: str
    parent_id: str
    flags: str
    tracestate: list[str] | None  # members, in order; None: no tracestate header


def call(
    service: Service, receiver: Any, headers: list[tuple[str, str]], callbacks: int = 1
) -> list[Hop]:
    """POST /test with `headers` exactly as given (names, order, repeats, whitespace), asking
    for `callbacks` callbacks; the trace context each callback received, in order."""
    paths = [f"/{uuid.uuid4().hex}/{i}" for i in range(callbacks)]
    body = json.dumps([{"url": receiver.url + p, "arguments": []} for p in paths]).encode()
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    try:
        conn.putrequest("POST", "/test", skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    assert response.status == 200, answer
    return [hop(receiver, p) for p in paths]


def hop(receiver: Any, path: str) -> Hop:
    """The trace context `path` received; it must be one valid version-00 traceparent."""
    parents = receiver.headers(path, "traceparent")
    assert len(parents) == 1, f"expected one traceparent, got {parents}"
    m = TRACEPARENT.fullmatch(parents[0])
    assert m, f"not a valid version-00 traceparent: {parents[0]!r}"
    trace_id, parent_id, flags = m.groups()
    assert trace_id != "0" * 32 and parent_id != "0" * 16, parents[0]
    states = receiver.headers(path, "tracestate")
    members = None
    if states:
        members = [m.strip(" \t") for m in ",".join(states).split(",") if m.strip(" \t")]
        assert members, f"an empty tracestate was sent: {states}"
    return Hop(trace_id, parent_id, flags, members)


def one(service: Service, receiver: Any, headers: list[tuple[str, str]]) -> Hop:
    (only,) = call(service, receiver, headers)
    return only


def case(case_id: str, *values: Any) -> Any:
    """One parametrized case."""
    return pytest.param(*values, id=case_id)


# -- traceparent: the trace continues --------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "flags"),
    [
        case("sampled", [("traceparent", tp())], "01"),
        case("not-sampled", [("traceparent", tp(flags="00"))], "00"),
        # version 00 defines only the sampled bit: the others are ignored and sent as 0
        case("unknown-flags-sampled", [("traceparent", tp(flags="09"))], "01"),
        case("unknown-flags-not-sampled", [("traceparent", tp(flags="fe"))], "00"),
        # a higher version is parsed as far as version 00 goes and sent on as version 00
        case("future-version", [("traceparent", tp("cc"))], "01"),
        case("future-version-extra-field", [("traceparent", tp("cc", extra="-future"))], "01"),
        case(
            "future-version-not-sampled", [("traceparent", tp("01", flags="00", extra="-x"))], "00"
        ),
        # header names are case-insensitive
        case("name-TraceParent", [("TraceParent", tp())], "01"),
        case("name-TRACEPARENT", [("TRACEPARENT", tp())], "01"),
        case("name-tRaCePaReNt", [("tRaCePaReNt", tp())], "01"),
        # whitespace around a field value is not part of the value (RFC 9110 section 5.5)
        case("leading-space", [("traceparent", " " + tp())], "01"),
        case("leading-tab", [("traceparent", "\t" + tp())], "01"),
        case("trailing-space", [("traceparent", tp() + " ")], "01"),
        case("trailing-tab", [("traceparent", tp() + "\t")], "01"),
        case("ows-both-sides", [("traceparent", " \t" + tp() + "\t ")], "01"),
    ],
)
def test_valid_traceparent_continues_the_trace(
    service: Service, receiver: Any, headers: list[tuple[str, str]], flags: str
) -> None:
    got = one(service, receiver, [*headers, ("tracestate", "foo=1")])
    assert got.trace_id == TRACE
    assert got.flags == flags  # the caller's decision, whatever this mesh samples itself
    assert got.tracestate == ["foo=1"]  # carried with the trace


# -- traceparent: the trace restarts ----------------------------------------------------------

HEX_UPPER = "0AF7651916CD43DD8448EB211C80319C"


@pytest.mark.parametrize(
    "headers",
    [
        # version
        case("version-ff", [("traceparent", tp("ff"))]),
        case("version-dot-first", [("traceparent", tp(".0"))]),
        case("version-dot-second", [("traceparent", tp("0."))]),
        case("version-not-hex", [("traceparent", tp("0g"))]),
        case("version-upper-case", [("traceparent", tp("0A"))]),
        case("version-3-digits", [("traceparent", tp("000"))]),
        case("version-4-digits", [("traceparent", tp("0000"))]),
        case("version-1-digit", [("traceparent", tp("0"))]),
        # trace id
        case("trace-id-all-zero", [("traceparent", tp(trace="0" * 32))]),
        case("trace-id-31-digits", [("traceparent", tp(trace=TRACE[:-1]))]),
        case("trace-id-33-digits", [("traceparent", tp(trace=TRACE + "1"))]),
        case("trace-id-upper-case", [("traceparent", tp(trace=HEX_UPPER))]),
        case("trace-id-dot", [("traceparent", tp(trace="." + TRACE[1:]))]),
        case("trace-id-not-hex", [("traceparent", tp(trace=TRACE[:-1] + "g"))]),
        # parent id
        case("parent-id-all-zero", [("traceparent", tp(parent="0" * 16))]),
        case("parent-id-15-digits", [("traceparent", tp(parent=PARENT[:-1]))]),
        case("parent-id-17-digits", [("traceparent", tp(parent=PARENT + "1"))]),
        case("parent-id-upper-case", [("traceparent", tp(parent=PARENT.upper()))]),
        case("parent-id-dot", [("traceparent", tp(parent=PARENT[:-1] + "."))]),
        # flags
        case("flags-1-digit", [("traceparent", tp(flags="1"))]),
        case("flags-3-digits", [("traceparent", tp(flags="001"))]),
        case("flags-dot-first", [("traceparent", tp(flags=".1"))]),
        case("flags-dot-second", [("traceparent", tp(flags="0."))]),
        case("flags-upper-case", [("traceparent", tp(flags="0A"))]),
        # shape: version 00 has exactly four fields; a higher version needs a dash after them
        case("version-00-extra-field", [("traceparent", tp(extra="-what-the-future"))]),
        case("version-00-trailing-dot", [("traceparent", tp(extra="."))]),
        case("future-version-no-dash", [("traceparent", tp("cc", extra=".what-the-future"))]),
        case("future-version-short", [("traceparent", tp("cc", flags="1"))]),
        case("wrong-delimiter", [("traceparent", tp().replace("-", "_", 1))]),
        case("empty", [("traceparent", "")]),
        # traceparent is a single value: a repeated or comma-joined header is invalid
        case(
            "duplicated",
            [("traceparent", tp(trace="12345678901234567890123456789012")), ("traceparent", tp())],
        ),
        case("duplicated-same-value", [("traceparent", tp()), ("traceparent", tp())]),
        case("comma-joined", [("traceparent", f"{tp()},{tp()}")]),
    ],
)
def test_invalid_traceparent_restarts_the_trace(
    service: Service, receiver: Any, headers: list[tuple[str, str]]
) -> None:
    got = one(service, receiver, [*headers, ("tracestate", "foo=1")])
    assert got.trace_id != TRACE  # a new trace id
    assert all(got.trace_id not in value for _, value in headers)
    assert got.tracestate is None  # the old trace's state goes with it


@pytest.mark.parametrize(
    "headers",
    [
        case("none", []),
        case("tracestate-only", [("tracestate", "foo=1")]),
        case("name-trace-parent", [("trace-parent", tp()), ("tracestate", "foo=1")]),
        case("name-trace.parent", [("trace.parent", tp()), ("tracestate", "foo=1")]),
    ],
)
def test_without_traceparent_a_new_trace_starts(
    service: Service, receiver: Any, headers: list[tuple[str, str]]
) -> None:
    got = one(service, receiver, headers)
    assert got.trace_id != TRACE
    assert got.tracestate is None  # a tracestate without a traceparent is discarded
    assert got.flags == ("01" if service.sampling == 1.0 else "00")  # this mesh's sampling


# -- tracestate ---------------------------------------------------------------------------------

KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
VALUE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")
MANY = [f"k{i:02d}=v{i:02d}{'x' * 14}" for i in range(1, 34)]  # 33 members, 20 characters each


def ts(*values: str, name: str = "tracestate") -> list[tuple[str, str]]:
    """tracestate headers, one per value."""
    return [(name, v) for v in values]


@pytest.mark.parametrize(
    ("headers", "members"),
    [
        case("two-members", ts("foo=1,bar=2"), ["foo=1", "bar=2"]),
        case("spec-example", ts(EXAMPLE.TRACESTATE), EXAMPLE.TRACESTATE.split(",")),
        case("order-preserved", ts("rojo=1,congo=2,baz=3"), ["rojo=1", "congo=2", "baz=3"]),
        # header names are case-insensitive; other names are not tracestate
        case("name-TraceState", ts("foo=1", name="TraceState"), ["foo=1"]),
        case("name-TRACESTATE", ts("foo=1", name="TRACESTATE"), ["foo=1"]),
        case("name-trace-state", ts("foo=1", name="trace-state"), None),
        case("name-trace.state", ts("foo=1", name="trace.state"), None),
        # repeated headers are combined in order (RFC 9110 section 5.3)
        case(
            "split-headers-folded-in-order",
            ts("foo=1,bar=2", "rojo=1,congo=2", "baz=3"),
            ["foo=1", "bar=2", "rojo=1", "congo=2", "baz=3"],
        ),
        # empty members and optional whitespace are allowed
        case("empty-member", ts("foo=1,,bar=2"), ["foo=1", "bar=2"]),
        case("empty-members-at-the-ends", ts(",foo=1,"), ["foo=1"]),
        case("whitespace-only-members", ts(" , foo=1 ,\t,"), ["foo=1"]),
        case("ows-around-commas", ts("foo=1 \t , \t bar=2, \t baz=3"), ["foo=1", "bar=2", "baz=3"]),
        case("ows-around-the-value", ts("\t foo=1 \t"), ["foo=1"]),
        case("empty-header", ts(""), None),
        case("empty-header-first", ts("", "foo=1"), ["foo=1"]),
        case("empty-header-last", ts("foo=1", ""), ["foo=1"]),
        # keys: a lower-case letter or a digit, then up to 255 of a-z 0-9 _ - * / @ (the
        # current spec's grammar; Level 1's tenant@system form is a special case of it)
        case("all-key-characters", ts(f"{KEY_CHARS}=1"), [f"{KEY_CHARS}=1"]),
        case(
            "multi-tenant-key", ts("fw529a3039@dt=FIgCdA,bar=2"), ["fw529a3039@dt=FIgCdA", "bar=2"]
        ),
        case("tenant-starts-with-digit", ts("0tenant@sys=1"), ["0tenant@sys=1"]),
        case("key-starts-with-digit", ts("0foo=1"), ["0foo=1"]),
        case(
            "multi-tenant-all-characters",
            ts(f"{KEY_CHARS}@a-z0-9_-*/=1"),
            [f"{KEY_CHARS}@a-z0-9_-*/=1"],
        ),
        case("key-256-characters", ts("foo=1", "z" * 256 + "=1"), ["foo=1", "z" * 256 + "=1"]),
        case("key-257-characters", ts("foo=1", "z" * 257 + "=1"), None),
        case(
            "tenant-241-system-14",
            ts("foo=1", "t" * 241 + "@" + "v" * 14 + "=1"),
            ["foo=1", "t" * 241 + "@" + "v" * 14 + "=1"],
        ),
        case(
            "at-sign-key-256-characters",
            ts("foo=1", "t" * 242 + "@" + "v" * 13 + "=1"),
            ["foo=1", "t" * 242 + "@" + "v" * 13 + "=1"],
        ),
        case("at-sign-key-257-characters", ts("foo=1", "t" * 242 + "@" + "v" * 14 + "=1"), None),
        case("at-sign-last", ts("foo@=1,bar=2"), ["foo@=1", "bar=2"]),
        case("two-at-signs", ts("foo@@bar=1,bar=2"), ["foo@@bar=1", "bar=2"]),
        case("two-systems", ts("foo@bar@baz=1,bar=2"), ["foo@bar@baz=1", "bar=2"]),
        case("key-upper-case", ts("FOO=1"), None),
        case("key-with-dot", ts("foo.bar=1"), None),
        case("key-space-before-equals", ts("foo =1"), None),
        case("key-starts-with-underscore", ts("_foo=1"), None),
        case("key-empty", ts("=1,bar=2"), None),
        case("at-sign-first", ts("@foo=1,bar=2"), None),
        # values: printable ASCII but "," and "=", not ending in a space, up to 256 characters
        case("all-value-characters", ts("foo=" + VALUE_CHARS), ["foo=" + VALUE_CHARS]),
        case("value-leading-space-kept", ts("foo= 1,bar=2"), ["foo= 1", "bar=2"]),
        case("value-256-characters", ts("foo=" + "v" * 256), ["foo=" + "v" * 256]),
        case("value-257-characters", ts("foo=" + "v" * 257), None),
        case("value-empty", ts("foo=,bar=3"), None),
        case("value-with-equals", ts("foo=bar=baz"), None),
        case("value-with-tab", ts("foo=a\tb"), None),
        case("member-without-equals", ts("foo,bar=2"), None),
        # at most 32 members; more (in one header or several) and the header is discarded
        case("32-members", ts(",".join(MANY[:32])), MANY[:32]),
        case("32-members-split", ts(",".join(MANY[:10]), ",".join(MANY[10:32])), MANY[:32]),
        case("33-members", ts(",".join(MANY)), None),
        case("33-members-split", ts(",".join(MANY[:32]), MANY[32]), None),
        # a repeated key: the spec lets a vendor discard duplicates (Level 1 dropped the whole
        # list; the current spec and its suite keep it): the first (left-most) member stays
        case("duplicated-key", ts("foo=1,foo=2"), ["foo=1"]),
        case("duplicated-member", ts("foo=1,foo=1"), ["foo=1"]),
        case("duplicated-key-split", ts("foo=1", "foo=2"), ["foo=1"]),
        case("duplicated-key-kept-in-place", ts("foo=1,bar=2,foo=3"), ["foo=1", "bar=2"]),
    ],
)
def test_tracestate(
    service: Service, receiver: Any, headers: list[tuple[str, str]], members: list[str] | None
) -> None:
    got = one(service, receiver, [("traceparent", tp()), *headers])
    assert got.trace_id == TRACE  # tracestate never affects the trace itself
    assert got.tracestate == members


def test_tracestate_over_512_characters_is_kept_whole(service: Service, receiver: Any) -> None:
    members = MANY[:32]
    assert len(",".join(members)) > 512  # the spec's "SHOULD propagate at least 512"
    got = one(service, receiver, [("traceparent", tp()), *ts(",".join(members))])
    assert got.tracestate == members


# -- hops: a new parent id each, the trace and the sampling decision kept ----------------------


@pytest.mark.parametrize("flags", ["01", "00"])
def test_each_hop_has_a_new_parent_id(
    service: Service, receiver: Any, flags: str, request: pytest.FixtureRequest
) -> None:
    got = one(service, receiver, [("traceparent", tp(flags=flags))])
    assert (got.trace_id, got.flags) == (TRACE, flags)
    assert got.parent_id != PARENT


@pytest.mark.parametrize(
    ("headers", "continued"),
    [
        case("valid-traceparent", [("traceparent", tp())], True),
        case("no-traceparent", [], False),
        case("invalid-traceparent", [("traceparent", tp(trace="0" * 32))], False),
    ],
)
def test_each_outbound_call_gets_its_own_parent_id(
    service: Service,
    receiver: Any,
    headers: list[tuple[str, str]],
    continued: bool,
    request: pytest.FixtureRequest,
) -> None:
    hops = call(service, receiver, headers, callbacks=3)
    assert len({h.trace_id for h in hops}) == 1  # one inbound request, one trace
    assert (hops[0].trace_id == TRACE) == continued
    assert len({h.parent_id for h in hops} - {PARENT}) == 3


@pytest.mark.parametrize("service", ["sdk-sampled"], indirect=True)
def test_the_hop_is_in_the_recorded_trace(service: Service, receiver: Any) -> None:
    """With the SDK, the parent id a callback receives is pymesh's client span, a child of its
    server span, a child of the caller's span."""
    assert service.exporter is not None
    service.exporter.clear()
    got = one(service, receiver, [("traceparent", tp())])
    spans = {s.context.span_id: s for s in service.exporter.get_finished_spans()}
    client = spans[int(got.parent_id, 16)]
    assert client.kind == SpanKind.CLIENT and client.parent is not None
    server = spans[client.parent.span_id]
    assert server.kind == SpanKind.SERVER and server.parent is not None
    assert f"{server.parent.span_id:016x}" == PARENT
    assert f"{server.context.trace_id:032x}" == TRACE


def test_concurrent_requests_keep_their_own_traces(service: Service, receiver: Any) -> None:
    traces = [uuid.uuid4().hex for _ in range(8)]

    def one_request(trace: str) -> list[Hop]:
        return call(service, receiver, [("traceparent", tp(trace=trace, flags="00"))], 2)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one_request, traces))
    for trace, hops in zip(traces, results, strict=True):
        assert [h.trace_id for h in hops] == [trace, trace]
