"""`MeshTelemetry`: the one hook every meshed edge reports a finished call to.

How this works: an edge (the httpx transport, the ASGI and WSGI middleware; later gRPC and the
proxy) makes a `CallRecord` when a call starts (`outbound` / `inbound`: trace context from
`pymesh.telemetry.context`, an OTel span only when sampled) and hands it to `finish` when the
call is over — for a response, when its body is closed, so bytes and duration are whole.
`finish` counts the call in Istio's metrics (label children cached per label tuple), keeps the
record in a bounded ring for `Mesh.explain`, writes the access-log line when the access log is
on (and this call is sampled for it), and ends the span. Nothing here runs when a mesh's
telemetry is off: edges test `mesh.telemetry is None` and take their old path.

Client calls take a lean path instead when the access log is off (the usual case):
`start_lean` gives the `Call` itself its trace ids and headers (and, when sampled, its client
span), `finish_call` counts it, keeps a small tuple in the ring and ends the span, and
`explain` turns that tuple into a record only when asked. A call that fails or is answered
locally gets a full record then (`record_of`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from pymesh.call import Call, Decision
from pymesh.telemetry.context import (
    CURRENT,
    PEER_HEADER,
    Propagation,
    TraceContext,
    new_id,
)
from pymesh.telemetry.metrics import UNKNOWN, HealthCollector, IstioMetrics, Series

if TYPE_CHECKING:
    from pymesh.mesh import Mesh
    from pymesh.telemetry import TelemetryConfig

access_logger = logging.getLogger("pymesh.access")
_INF = float("inf")
_rand = random.getrandbits  # ids need uniqueness, not secrecy (`or 1`: never zero)
# series-cache entries per direction; a full cache starts over (endpoints come and go: a cache
# that stopped caching would make every later call build its labels)
_MAX_CACHED = 10_000
# finished records are counted in batches of about this many (and before every read)
# a lean client call's entry in the explain ring (`MeshTelemetry.finish_call`): (t0,
# duration, status, request bytes, response bytes, trace id, decision, endpoint, method,
# authority, path)
_Lean = tuple[float, float, int | None, int, int, int, Decision, Any, str, str, str]


_perf = time.perf_counter
_monotonic = time.monotonic


_OTEL: Any = None


def _otel() -> Any:
    """The OpenTelemetry API names spans need, imported once, on first use (a mesh with
    telemetry off never imports OpenTelemetry)."""
    global _OTEL
    if _OTEL is None:
        from types import SimpleNamespace

        from opentelemetry import context, trace
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )
        from opentelemetry.trace.span import TraceState

        _OTEL = SimpleNamespace(
            Context=context.Context,
            get_current=context.get_current,
            attach=context.attach,
            detach=context.detach,
            get_current_span=trace.get_current_span,
            set_span_in_context=trace.set_span_in_context,
            get_tracer_provider=trace.get_tracer_provider,
            NonRecordingSpan=NonRecordingSpan,
            SpanContext=SpanContext,
            TraceState=TraceState,
            SAMPLED=TraceFlags(TraceFlags.SAMPLED),
            CLIENT=SpanKind.CLIENT,
            SERVER=SpanKind.SERVER,
            Status=Status,
            ERROR=StatusCode.ERROR,
        )
    return _OTEL


def _otel_current_getter(ot: Any) -> Callable[[], Any]:
    """What reads OpenTelemetry's current context: the `get` of the context variable behind it
    when OpenTelemetry keeps it in one (its default runtime context), which skips two Python
    calls per meshed call; else `opentelemetry.context.get_current`."""
    from opentelemetry import context

    var = getattr(getattr(context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    if isinstance(var, contextvars.ContextVar):
        return var.get
    return ot.get_current  # type: ignore[no-any-return]


class CallRecord:
    """One finished (or finishing) call as telemetry sees it: what was asked, what came back,
    the decision record, the trace context, bytes and timing."""

    __slots__ = (
        "authority",
        "bytes_in",
        "bytes_out",
        "decision",
        "direction",
        "duration",
        "endpoint",
        "flags",
        "method",
        "mtls",
        "path",
        "peer",
        "peer_meta",
        "reason",
        "request_id",
        "start",
        "status",
        "t0",
        "trace",
    )

    def __init__(self, direction: str, method: str, authority: str, path: str) -> None:
        self.direction = direction  # "outbound" (client) or "inbound" (server)
        self.method = method
        self.authority = authority
        self.path = path
        self.status: int | None = None
        self.bytes_in = 0  # request body bytes
        self.bytes_out = 0  # response body bytes
        self.start = time.time()
        self.t0 = _perf()
        self.duration = 0.0
        self.decision: Decision | None = None
        self.flags = ""  # inbound refusals: the flag; outbound: read from the decision
        self.reason = ""
        self.peer: str | None = None  # the caller's principal (inbound)
        self.peer_meta = ""  # the caller's workload metadata, x-pymesh-peer (inbound)
        self.request_id: str | None = None
        self.trace: TraceContext | None = None
        self.endpoint: Any = None  # the EndpointState of the last attempt (outbound)
        self.mtls = False

    @property
    def response_flags(self) -> str:
        """Envoy's rendering of the flags ("-" when none)."""
        d = self.decision
        if d is not None and d.flags:
            return d.response_flags
        return self.flags or "-"

    def as_dict(self) -> dict[str, Any]:
        """The access-log line / `explain` entry."""
        d = self.decision
        ep = self.endpoint
        out: dict[str, Any] = {
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.start))
            + f".{int(self.start * 1000) % 1000:03d}Z",
            "direction": self.direction,
            "method": self.method,
            "path": self.path,
            "protocol": "HTTP/1.1",
            "response_code": self.status or 0,
            "response_flags": self.response_flags,
            "bytes_received": self.bytes_in,
            "bytes_sent": self.bytes_out,
            "duration": round(self.duration * 1000, 3),
            "upstream_host": ep.label if ep is not None else None,
            "upstream_cluster": (d.destination or None) if d is not None else None,
            "route_name": (d.route or None) if d is not None else None,
            "authority": self.authority,
            "x_request_id": self.request_id,
            "trace_id": self.trace.trace_id_hex if self.trace is not None else None,
            "downstream_peer_principal": self.peer,
            "reason": self.reason or (d.reason if d is not None else "") or None,
        }
        if d is not None and self.direction == "outbound":
            out["decision"] = d.as_dict()
        return out

    def __repr__(self) -> str:
        return (
            f"CallRecord({self.direction} {self.method} {self.authority}{self.path} → "
            f"{self.status}, flags={self.response_flags})"
        )


def _writer(access_log: Any) -> Callable[[str], None] | None:
    if access_log is False or access_log is None:
        return None
    if access_log is True:
        return lambda line: access_logger.info(line)
    if isinstance(access_log, logging.Logger):
        return lambda line: access_log.info(line)
    if hasattr(access_log, "write"):

        def write(line: str) -> None:
            access_log.write(line + "\n")
            flush = getattr(access_log, "flush", None)
            if flush is not None:
                flush()

        return write
    if callable(access_log):
        return access_log  # type: ignore[no-any-return]
    raise TypeError(f"access_log: True, a Logger, a file or a callable, not {access_log!r}")


def _service_parts(host: str) -> tuple[str, str]:
    """(service name, namespace) of a mesh host: `reviews.default.svc.cluster.local`."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[0], parts[1]
    return host, UNKNOWN


def _principal_parts(principal: str | None) -> tuple[str, str]:
    """(service account, namespace) from `spiffe://td/ns/<ns>/sa/<sa>`."""
    if not principal:
        return UNKNOWN, UNKNOWN
    parts = principal.split("/")
    try:
        return parts[parts.index("sa") + 1], parts[parts.index("ns") + 1]
    except (ValueError, IndexError):
        return UNKNOWN, UNKNOWN


class MeshTelemetry:
    """The telemetry of one `Mesh`: its registry and metrics, the explain ring, the access log,
    the tracer and sampler. Made by `Mesh(telemetry=...)`; read through `mesh.telemetry`."""

    def __init__(self, mesh: Mesh, config: TelemetryConfig) -> None:
        self.mesh = mesh
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics: IstioMetrics | None = None
        if config.metrics:
            self.metrics = IstioMetrics(self.registry, config.max_series)
            self.registry.register(HealthCollector(mesh))
        self.recent: deque[CallRecord | _Lean] = deque(maxlen=config.explain_size)
        self._log = _writer(config.access_log)
        self._log_share = config.access_log_sampling
        self.sampling = config.sampling
        self.propagation = Propagation(config.propagation)
        # W3C trace context and baggage only (the default): a root's headers are one
        # `traceparent` (baggage is only ever passed on)
        self._w3c_only = set(config.propagation) <= {"tracecontext", "baggage"} and (
            self.propagation.tracecontext
        )
        self._rng = random.Random()
        # client calls take the lean path (`start_lean`) unless they are access-logged
        self.lean = config.access_log is None or config.access_log is False
        ot = self._ot = _otel()
        self._otel_current = _otel_current_getter(ot)
        self._otel_span = ot.get_current_span
        self._tracer: Any = None
        self._tracer_from = config.tracer_provider
        labels = mesh.labels
        principal = str(mesh.spiffe_id) if mesh.identity is not None else UNKNOWN
        app = labels.get("app", mesh.service)
        version = labels.get("version", UNKNOWN)
        self._self = (mesh.service, mesh.namespace, principal, app, version)
        host = f"{mesh.service}.{mesh.namespace}.svc.cluster.local"
        self._self_dst = (*self._self, host, mesh.service, mesh.namespace)
        self.peer_header = f"{mesh.service};{mesh.namespace};{app};{version}"
        self.peer_metadata = self.peer_header.encode()  # what `Call.mesh_metadata` carries
        # the metric series of a finished call, by what its labels are made of (bounded)
        self._out_series: dict[tuple[Any, ...], Series] = {}
        self._in_series: dict[tuple[Any, ...], Series] = {}

    # -- tracing -----------------------------------------------------------------------------
    def tracer(self) -> Any:
        """The OTel tracer (from `configure`'s provider, else the global one)."""
        t = self._tracer
        if t is None:
            provider = self._tracer_from or _otel().get_tracer_provider()
            t = self._tracer = provider.get_tracer("pymesh")
        return t

    def _root_sampled(self) -> bool:
        share = self.sampling
        return share >= 1.0 or (share > 0.0 and self._rng.random() < share)

    def outbound_context(self) -> TraceContext:
        """The trace context of a new client call: a child of the inbound request being served
        (zero-code propagation), of the app's own current OTel span, or a new root."""
        parent = CURRENT.get()
        if parent is not None:
            ctx = TraceContext(
                parent.trace_id,
                _rand(64) or 1,
                parent.span_id,
                parent.sampled,
                parent.tracestate,
                parent.baggage,
                parent.deadline,
            )
            if parent.span is not None:
                ctx.span = parent.span  # parent span, replaced by the client span when sampled
            return ctx
        otel = self._otel_current()
        if otel:  # the app has an OTel context of its own (an empty one is falsy: no lookup)
            span = self._otel_span(otel)
            span_ctx = span.get_span_context()
            if span_ctx.is_valid:
                ctx = TraceContext(
                    span_ctx.trace_id,
                    _rand(64) or 1,
                    span_ctx.span_id,
                    span_ctx.trace_flags.sampled,
                )
                ctx.span = span
                return ctx
        share = self.sampling
        sampled = share >= 1.0 or (share > 0.0 and self._rng.random() < share)
        return TraceContext(_rand(128) or 1, _rand(64) or 1, 0, sampled)

    def inbound_context(self, got: dict[str, str] | None, deadline: float = _INF) -> TraceContext:
        """The trace context of a served request from its collected propagation headers (and
        the deadline its caller sent)."""
        if got is not None:
            parsed = self.propagation.extract(got)
            if parsed is not None:
                trace_id, parent_id, sampled, state, baggage = parsed
                if sampled is None:
                    sampled = self._root_sampled()
                return TraceContext(
                    trace_id, new_id(64), parent_id, sampled, state, baggage, deadline
                )
            if "baggage" in got and self.propagation.baggage:
                ctx = TraceContext(new_id(128), new_id(64), 0, self._root_sampled())
                ctx.baggage = got["baggage"]
                ctx.deadline = deadline
                return ctx
        return TraceContext(new_id(128), new_id(64), 0, self._root_sampled(), deadline=deadline)

    def start_span(
        self, ctx: TraceContext, method: str, path: str, start: float, kind: str
    ) -> None:
        """Start the OTel span of a sampled call; its span id becomes the context's."""
        ot = self._ot
        parent_span = ctx.span
        if parent_span is None or parent_span.get_span_context().trace_id != ctx.trace_id:
            if ctx.parent_id:
                state = ot.TraceState.from_header([ctx.tracestate]) if ctx.tracestate else None
                parent_span = ot.NonRecordingSpan(
                    ot.SpanContext(
                        ctx.trace_id,
                        ctx.parent_id,
                        is_remote=True,
                        trace_flags=ot.SAMPLED,
                        trace_state=state,
                    )
                )
            else:
                parent_span = None
        # a root gets an empty context: not the app's current span
        parent = ot.set_span_in_context(parent_span) if parent_span is not None else ot.Context()
        span = (self._tracer or self.tracer()).start_span(
            method,
            context=parent,
            kind=ot.CLIENT if kind == "client" else ot.SERVER,
            start_time=int(start * 1e9),
            attributes={"http.request.method": method, "url.path": path},
        )
        ctx.span = span
        sc = span.get_span_context()
        # an SDK's span: its ids are the context's. OpenTelemetry's no-op tracer (API only, no
        # SDK) hands back the parent's context: keep pymesh's own new span id then, so each hop
        # still gets its own parent id
        parent_id = parent_span.get_span_context().span_id if parent_span is not None else 0
        span_id = sc.span_id
        if span_id and span_id != parent_id:  # (a valid span context has a non-zero span id)
            ctx.trace_id = sc.trace_id
            ctx.span_id = span_id
            ctx.sampled = bool(sc.trace_flags & 1)  # TraceFlags is an int: bit 0 is "sampled"

    def _end_span(self, rec: CallRecord, span: Any) -> None:
        """End the span of a recorded call (`_close_span` with the record's fields)."""
        self._close_span(
            span,
            rec.direction,
            rec.authority,
            rec.path,
            rec.status,
            rec.decision,
            rec.endpoint,
            rec.mtls,
            rec.peer,
            rec.flags,
            rec.reason,
            int((rec.start + rec.duration) * 1e9),
        )

    def _close_span(
        self,
        span: Any,
        direction: str,
        authority: str,
        path: str,
        status: int | None,
        d: Decision | None,
        ep: Any,
        mtls: bool,
        peer: str | None,
        flags: str,
        reason: str,
        end_ns: int,
    ) -> None:
        """Set a finished call's attributes on its span and end it (from a record, or from a
        lean call's own fields: no record made for it)."""
        host, _, port = authority.rpartition(":")
        if not host or not port.isdigit():
            host, port = authority, ""
        scheme = "https" if mtls else "http"
        attrs: dict[str, Any] = {
            "server.address": host,
            "network.protocol.version": "1.1",
            "url.scheme": scheme,
        }
        if port:
            attrs["server.port"] = int(port)
        outbound = direction == "outbound"
        if outbound:
            attrs["url.full"] = f"{scheme}://{authority}{path}"
        if status:
            attrs["http.response.status_code"] = status
        if d is not None:
            if d.flags:
                flags = d.response_flags
            attrs["pymesh.response_flags"] = flags or "-"
            attrs["pymesh.snapshot_version"] = str(d.snapshot_version)
            if outbound:
                attrs["pymesh.route"] = d.route
                attrs["pymesh.destination.service"] = d.service
                attrs["pymesh.destination.cluster"] = d.destination
                if d.subset:
                    attrs["pymesh.destination.subset"] = d.subset
                attrs["pymesh.attempts"] = len(d.attempts)
                if ep is not None:
                    attrs["pymesh.endpoint"] = ep.label
        elif flags:
            attrs["pymesh.response_flags"] = flags
        if peer:
            attrs["pymesh.peer.principal"] = peer
        span.set_attributes(attrs)
        if status is None or status >= 500 or (outbound and status >= 400):
            reason = reason or (d.reason if d is not None else "")
            span.set_attribute("error.type", str(status) if status else flags or "-")
            ot = self._ot
            span.set_status(ot.Status(ot.ERROR, reason or None))
        span.end(end_time=end_ns)

    # -- the lean path: client calls --------------------------------------------------------
    def start_lean(self, call: Call) -> bool:
        """Start a client call that needs no record of its own: give `call` its trace
        (`trace_id`, `trace_headers`, the deadline it inherits, its client `span` when sampled)
        and its start time. False when the call takes the full path instead (`outbound`:
        access-logged, or inside an app's own OpenTelemetry span).

        Why there are two paths: an unsampled call's telemetry must cost a few µs, and in a
        request path as long as httpx's every object made, every Python call and every C
        function touched costs several times what it costs alone (the code is out of the
        CPU's instruction cache each time; measured: docs/performance.md). On this path an
        unsampled call has no record object and no trace-context object: the call carries its
        ids, and `finish_call` keeps a small tuple for `explain`. A sampled call takes it too
        (its span is the only extra), which saves it the record as well.
        """
        if not self.lean:
            return False
        parent = CURRENT.get()
        if parent is None:
            if self._otel_current():  # the app's own context (an empty one is falsy)
                return False
            share = self.sampling
            if share and (share >= 1.0 or self._rng.random() < share):
                root = TraceContext(_rand(128) or 1, _rand(64) or 1, 0, True)
                return self._start_sampled(call, root)
            trace_id = call.trace_id = _rand(128) or 1
            if self._w3c_only:  # the default: one `traceparent`, made here
                value = b"00-%032x-%016x-00" % (trace_id, _rand(64) or 1)
                call.trace_headers = ((b"traceparent", value),)
            else:
                ctx = TraceContext(trace_id, _rand(64) or 1, 0, False)
                call.trace_headers = self.propagation.pairs(ctx)
        elif parent.sampled:
            ctx = TraceContext(
                parent.trace_id,
                _rand(64) or 1,
                parent.span_id,
                True,
                parent.tracestate,
                parent.baggage,
                parent.deadline,
            )
            ctx.span = parent.span  # the parent span, replaced by the client span
            return self._start_sampled(call, ctx)
        else:
            call.trace_id = parent.trace_id
            ctx = TraceContext(
                parent.trace_id,
                _rand(64) or 1,
                parent.span_id,
                False,
                parent.tracestate,
                parent.baggage,
            )
            call.trace_headers = self.propagation.pairs(ctx)
            call.deadline = call.attempt_deadline = parent.deadline
        call.span = None
        call.t0 = _perf()
        return True

    def _start_sampled(self, call: Call, ctx: TraceContext) -> bool:
        """`start_lean` for a sampled call: its client span started, its ids the span's."""
        self.start_span(ctx, call.method, call.path, time.time(), "client")
        call.trace_id = ctx.trace_id
        call.trace_headers = self.propagation.pairs(ctx)
        call.deadline = call.attempt_deadline = ctx.deadline
        call.span = ctx.span
        call.t0 = _perf()
        return True

    def finish_call(self, call: Call, received: int) -> None:
        """A lean call's response body was closed after `received` bytes: count it, keep a
        small entry for `explain` (the call itself is not kept), end its span if sampled."""
        t0 = call.t0
        duration = _perf() - t0
        d = call.decision
        ep = call.endpoint
        status = call.status
        bytes_in = call.bytes_in
        authority = call.authority
        trace_id, method, path = call.trace_id, call.method, call.path
        entry = (t0, duration, status, bytes_in, received, trace_id, d, ep, method, authority, path)
        self.recent.append(entry)
        span = call.span
        if span is not None:  # sampled: the span ends with the call's own fields, no record
            self._close_span(
                span,
                "outbound",
                authority,
                path,
                status,
                d,
                ep,
                False,
                None,
                "",
                "",
                time.time_ns(),
            )
        metrics = self.metrics
        if metrics is not None:
            flags = ",".join(d.flags) if d.flags else "-"
            key = (d.service, ep, status, flags)
            series = self._out_series.get(key) or self._series_out(key, d, authority)
            metrics.observe(series, duration * 1000, bytes_in, received)
            if flags != "-" or len(d.attempts) > 1:
                self._health(metrics, d)

    def finish_failed(
        self, rec: CallRecord | None, call: Call, bytes_in: int, reason: str = ""
    ) -> None:
        """Finish the record of a client call that failed (`rec` None: a lean call's,
        made from `call` now)."""
        if rec is None:
            rec = self.record_of(call)
        rec.bytes_in = bytes_in
        rec.endpoint = call.endpoint
        if reason:
            rec.reason = reason
        self.finish(rec)

    def finish_body(self, rec: CallRecord, received: int) -> None:
        """`finish` a call whose response body was closed after `received` bytes."""
        rec.bytes_out = received
        self.finish(rec)

    def record_of(self, call: Call) -> CallRecord:
        """The full record of a lean call that takes the full path after all (it failed,
        or its reply was made locally)."""
        rec = CallRecord("outbound", call.method, call.authority, call.path)
        rec.t0 = call.t0
        rec.start = time.time() - (_perf() - call.t0)
        rec.status = getattr(call, "status", None)
        rec.decision = call.decision
        rec.endpoint = call.endpoint
        rec.request_id = call.header("x-request-id")
        span = getattr(call, "span", None)
        rec.trace = TraceContext(call.trace_id, 0, 0, span is not None)
        rec.trace.span = span  # a sampled call's span, which `finish` ends
        return rec

    @staticmethod
    def _lean_record(entry: _Lean) -> CallRecord:
        """The record an explain-ring entry of a lean call stands for."""
        t0, duration, status, bytes_in, bytes_out, trace_id, d, ep, method, authority, path = entry
        rec = CallRecord("outbound", method, authority, path)
        rec.t0 = t0
        rec.start = time.time() - (_perf() - t0)
        rec.duration = duration
        rec.status = status
        rec.bytes_in = bytes_in
        rec.bytes_out = bytes_out
        rec.trace = TraceContext(trace_id, 0, 0, False)
        rec.decision = d
        rec.endpoint = ep
        return rec

    # -- records -----------------------------------------------------------------------------
    def outbound(self, method: str, authority: str, path: str) -> CallRecord:
        """Start the record of a client call, with its trace context (span if sampled)."""
        rec = CallRecord("outbound", method, authority, path)
        ctx = rec.trace = self.outbound_context()
        if ctx.sampled:
            self.start_span(ctx, rec.method, rec.path, rec.start, "client")
        return rec

    def outbound_pairs(self, rec: CallRecord) -> list[tuple[bytes, bytes]]:
        """The trace-context headers of a mesh call, as raw pairs. The workload metadata and
        the remaining deadline go in the mesh header, written per attempt by the sender
        (`Call.upstream_headers` with `call.mesh_metadata = telemetry.peer_metadata`), after
        the route's timeouts apply."""
        ctx = rec.trace
        assert ctx is not None
        return self.propagation.pairs(ctx)

    def outbound_headers(self, rec: CallRecord, set_header: Callable[[str, str], None]) -> None:
        """Write the trace context of a call leaving the mesh (a passthrough host): no deadline
        and no workload metadata go to hosts outside the mesh."""
        ctx = rec.trace
        assert ctx is not None
        self.propagation.inject(ctx, set_header)

    def inbound(
        self,
        method: str,
        authority: str,
        path: str,
        got: dict[str, str] | None,
    ) -> CallRecord:
        """Start the record of a served request, with its trace context (span if sampled)."""
        rec = CallRecord("inbound", method, authority, path)
        deadline = _INF
        if got is not None:
            meta = got.get(PEER_HEADER)
            if meta is not None:
                # `workload;namespace;app;version[;remaining milliseconds]`
                fields = meta.split(";")
                if len(fields) == 5:
                    with contextlib.suppress(ValueError):
                        left = max(0.0, float(fields.pop())) / 1000
                        deadline = _monotonic() + left
                rec.peer_meta = ";".join(fields[:4])
        ctx = rec.trace = self.inbound_context(got, deadline)
        if ctx.sampled:
            self.start_span(ctx, rec.method, rec.path, rec.start, "server")
        return rec

    def finish(self, rec: CallRecord) -> None:
        """The call is over: count it, keep it for `explain`, log it, end its span."""
        rec.duration = _perf() - rec.t0
        self.recent.append(rec)
        metrics = self.metrics
        if metrics is not None:
            d = rec.decision
            flags = d.response_flags if d is not None and d.flags else (rec.flags or "-")
            if rec.direction == "outbound":
                if d is None:  # a passthrough call (a host outside the mesh)
                    key: tuple[Any, ...] = (rec.authority, None, rec.status, flags)
                else:
                    key = (d.service, rec.endpoint, rec.status, flags)
                series = self._out_series.get(key)
                if series is None:
                    series = self._series_out(key, d, rec.authority)
                if d is not None and (d.flags or len(d.attempts) > 1):
                    self._health(metrics, d)
            else:
                key = (rec.peer, rec.peer_meta, rec.status, flags, rec.mtls)
                series = self._in_series.get(key)
                if series is None:
                    series = metrics.series(self._inbound_labels(rec, flags))
                    if len(self._in_series) >= _MAX_CACHED:
                        self._in_series.clear()
                    self._in_series[key] = series
            metrics.observe(series, rec.duration * 1000, rec.bytes_in, rec.bytes_out)
        log = self._log
        if log is not None and (self._log_share >= 1.0 or self._rng.random() < self._log_share):
            log(json.dumps(rec.as_dict(), separators=(",", ":")))
        ctx = rec.trace
        if ctx is not None and ctx.sampled and ctx.span is not None:
            self._end_span(rec, ctx.span)
            ctx.span = None  # ended: the explain ring keeps the ids, not the SDK's span

    def _series_out(self, key: tuple[Any, ...], d: Decision | None, authority: str) -> Series:
        """The series of a client call's key (service, endpoint, status, flags), made on first
        use and cached."""
        metrics = self.metrics
        assert metrics is not None
        _, ep, status, flags = key
        series = metrics.series(self._outbound_labels(d, ep, status, authority, flags))
        if len(self._out_series) >= _MAX_CACHED:
            self._out_series.clear()
        self._out_series[key] = series
        return series

    def _health(self, metrics: IstioMetrics, d: Decision) -> None:
        flags = d.flags
        n = len(d.attempts)
        service = d.service
        if n > 1:
            metrics.retries.labels(service).inc(n - 1)
        if "URX" in flags:
            metrics.retries_exhausted.labels(service).inc()
        if "UO" in flags:
            if "not retried" in d.reason:
                metrics.retry_overflow.labels(service).inc()
            else:
                metrics.circuit_open.labels(service).inc()

    def _outbound_labels(
        self, d: Decision | None, ep: Any, status: int | None, authority: str, flags: str
    ) -> tuple[str, ...]:
        code = str(status or 0)
        if d is None:  # a passthrough call (a host outside the mesh), as Istio labels them
            host = authority.rpartition(":")[0] or authority
            dst = (UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, host, "PassthroughCluster", UNKNOWN)
            return ("source", *self._self, *dst, "http", code, "", flags, "none")
        host = d.service
        name, ns = _service_parts(host)
        if ep is not None:
            spec = ep.spec
            app = spec.labels.get("app", name)
            version = spec.labels.get("version", UNKNOWN)
            workload = spec.service_account or app
            principal = spec.identity if self.mesh.identity is not None else ""
        else:
            app, version, workload, principal = name, UNKNOWN, UNKNOWN, ""
        principal = principal or UNKNOWN
        mtls = "mutual_tls" if principal != UNKNOWN else "none"
        dst = (workload, ns, principal, app, version, host, name, ns)
        return ("source", *self._self, *dst, "http", code, "", flags, mtls)

    def _inbound_labels(self, rec: CallRecord, flags: str) -> tuple[str, ...]:
        sa, ns = _principal_parts(rec.peer)
        meta = rec.peer_meta.split(";") if rec.peer_meta else []
        if len(meta) == 4:
            workload, ns2, app, version = meta
            ns = ns2 if ns == UNKNOWN else ns
        else:
            workload, app, version = sa, UNKNOWN, UNKNOWN
        src = (workload, ns, rec.peer or UNKNOWN, app, version)
        mtls = "mutual_tls" if rec.mtls else "none"
        code = str(rec.status or 0)
        return ("destination", *src, *self._self_dst, "http", code, "", flags, mtls)

    def explain(self, last: int = 10) -> list[dict[str, Any]]:
        """The records of the last `last` finished calls, oldest first."""
        recent = list(self.recent)
        if last <= 0:
            return []
        return [
            (r if isinstance(r, CallRecord) else self._lean_record(r)).as_dict()
            for r in recent[-last:]
        ]

    def metrics_text(self) -> bytes:
        """This mesh's metrics in Prometheus' text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def __repr__(self) -> str:
        return (
            f"MeshTelemetry({self.mesh.service}, metrics={self.metrics is not None}, "
            f"access_log={self._log is not None}, sampling={self.sampling}, "
            f"recent={len(self.recent)})"
        )


def refusal_flag(verdict: Any) -> str:
    """The response flag of an inbound refusal: RBAC for a 403 (AuthorizationPolicy, or
    PeerAuthentication's mTLS requirement), DPE (downstream protocol error) for a 400."""
    status = verdict.status
    if status == 403:
        return "RBAC"
    if status == 400:
        return "DPE"
    return ""


def attach_span(ctx: TraceContext | None) -> object | None:
    """Make a sampled server span the app's current OTel span (its own spans nest under it);
    returns the token for `detach_span` (None when nothing was attached)."""
    if ctx is None or ctx.span is None:
        return None
    ot = _otel()
    return ot.attach(ot.set_span_in_context(ctx.span))  # type: ignore[no-any-return]


def detach_span(token: object | None) -> None:
    """Undo `attach_span`."""
    if token is not None:
        _otel().detach(token)


def new_request_id() -> str:
    """A fresh x-request-id (random 128 bits, UUID-formatted as Envoy makes them)."""
    v = f"{new_id(128):032x}"
    return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"
