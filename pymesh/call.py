"""The one request shape and the one result shape that every filter sees.

An adapter converts its native request once into a `Call` and gets back an `Outcome`. Both are
plain slotted objects (cheaper to build than frozen dataclasses; measured in docs/performance.md).
A `Call` is not changed by filters except through its `decision`, the record of what the mesh
decided and tried, which travels back on the `Outcome` and on every error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# the mesh's own request header: the caller's workload metadata (Istio's metadata exchange,
# `workload;namespace;app;version`) and, when the attempt has one, its remaining deadline in
# milliseconds as a fifth field — one header for both, as each header costs on every hop
MESH_HEADER_RAW = b"x-pymesh-peer"
_INF = float("inf")


class Attempt:
    """One try of a call: which endpoint, what came back (status or failure), how long."""

    __slots__ = ("detail", "duration", "endpoint", "failure", "retry_on", "status")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.status: int | None = None
        self.failure: str | None = None
        self.duration = 0.0
        self.retry_on: str | None = None  # the retryOn condition that led to another try
        self.detail: str | None = None  # why, when the failure name is not enough (TLS peer)

    def describe(self) -> str:
        """`127.0.0.1:8001 → 503` or `127.0.0.1:8002 → connect-failure`."""
        what = str(self.status) if self.status is not None else (self.failure or "?")
        if self.detail:
            what += f" ({self.detail})"
        return f"{self.endpoint} → {what}"

    def __repr__(self) -> str:
        return f"Attempt({self.describe()}, {self.duration * 1000:.1f}ms)"


class Decision:
    """The decision record of one call: route, destination, endpoints and attempts, snapshot.

    Telemetry, access logs and `explain` read it; errors carry it as `.decision`.
    """

    __slots__ = (
        "attempts",
        "destination",
        "endpoint_reason",
        "flags",
        "notes",
        "reason",
        "route",
        "service",
        "snapshot_version",
        "subset",
    )

    def __init__(self, snapshot_version: str, service: str) -> None:
        self.snapshot_version = snapshot_version
        self.service = service  # the destination service host, as the mesh knows it
        self.route = ""  # "VirtualService ns/name http[i] (name)" or "default"
        self.destination = ""  # cluster: host|subset|port
        self.subset: str | None = None
        self.endpoint_reason = ""
        self.attempts: list[Attempt] = []
        self.flags: list[str] = []
        self.reason = ""
        self.notes: list[str] = []  # what else the route did: mirrors sent or skipped, faults

    def note(self, text: str) -> None:
        """Record something the route did that is not an attempt (a mirror, a fault)."""
        self.notes.append(text)

    def add_flag(self, flag: str) -> None:
        """Add an Envoy response flag once."""
        if flag not in self.flags:
            self.flags.append(flag)

    @property
    def response_flags(self) -> str:
        """Envoy's rendering: comma-joined flags, or "-" when there are none."""
        return ",".join(self.flags) if self.flags else "-"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for logs and `explain`."""
        return {
            "snapshot_version": self.snapshot_version,
            "service": self.service,
            "route": self.route,
            "destination": self.destination,
            "subset": self.subset,
            "endpoint_reason": self.endpoint_reason,
            "attempts": [
                {
                    "endpoint": a.endpoint,
                    "status": a.status,
                    "failure": a.failure,
                    "duration_ms": round(a.duration * 1000, 3),
                    "retry_on": a.retry_on,
                }
                for a in self.attempts
            ],
            "response_flags": self.response_flags,
            "reason": self.reason,
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        return (
            f"Decision(service={self.service!r}, route={self.route!r}, "
            f"destination={self.destination!r}, attempts={self.attempts!r}, "
            f"flags={self.response_flags!r}, snapshot={self.snapshot_version!r})"
        )


class Call:
    """One request as the mesh sees it, converted once at the edge.

    `native` is the adapter's own request object; `deadline` is absolute on the monotonic clock
    (`inf` when none); `replayable` says whether the body was buffered and may be sent again.

    What goes upstream may differ from what the caller sent (VirtualService `rewrite` and
    `headers`): a sender builds its request from `send_target` (the raw path and query; equal
    to `target` unless rewritten) and `send_headers` (None: the native request's headers as they
    are; else the full header list to send, the Host header carrying a rewritten authority).
    `response_ops` (None, or a `pymesh.policy.header_ops.HeaderOps` sequence) are the response
    header operations the edge applies before handing the response back.
    """

    __slots__ = (
        "_headers",
        "attempt_deadline",
        "authority",
        "bytes_in",
        "cluster",
        "deadline",
        "decision",
        "direction",
        "endpoint",
        "hash_key",
        "host",
        "mesh_metadata",
        "method",
        "native",
        "path",
        "peer",
        "port",
        "protocol",
        "query",
        "replayable",
        "response_ops",
        "route",
        "scheme",
        "send_headers",
        "send_target",
        "set_cookie",
        "span",
        "status",
        "t0",
        "target",
        "trace_headers",
        "trace_id",
        "tried",
    )
    # Telemetry's lean path keeps a client call's record on the call itself (see
    # `pymesh.telemetry.hub.MeshTelemetry.start_lean`); these are set only there.
    status: int | None
    bytes_in: int  # request body bytes
    t0: float  # perf_counter at the start
    trace_id: int
    span: Any  # the OpenTelemetry client span of a sampled call, else None

    def __init__(
        self,
        *,
        direction: str,
        protocol: str,
        scheme: str,
        host: str,
        port: int,
        authority: str,
        method: str,
        target: bytes,
        headers: Any,
        native: Any,
        replayable: bool,
        decision: Decision,
        deadline: float = float("inf"),
        peer: str | None = None,
    ) -> None:
        self.direction = direction
        self.protocol = protocol
        self.scheme = scheme
        self.host = host
        self.port = port
        self.authority = authority
        self.method = method
        self.target = target
        path, _, query = target.decode("latin-1").partition("?")
        self.path = path
        self.query = query
        self._headers = headers
        self.native = native
        self.replayable = replayable
        self.decision = decision
        self.deadline = deadline
        self.peer = peer
        # set by the route tier as the call goes down the stack
        self.route: Any = None  # the matched RouteEntry
        self.cluster: Any = None  # the chosen ClusterState
        self.endpoint: Any = None  # the EndpointState of the current attempt
        self.attempt_deadline = deadline
        self.tried: list[Any] = []  # endpoints earlier attempts used
        # consistent hashing (balancer tier, first attempt): the call's hash key (None: none),
        # and a `Set-Cookie` value the edge adds to the response when the cookie was generated
        self.hash_key: int | None = None
        self.set_cookie: str | None = None
        # what the sender sends (the route tier rewrites these; see the class docstring)
        self.send_target = target
        self.send_headers: list[tuple[bytes, bytes]] | None = None
        self.response_ops: Any = None
        # telemetry on: the workload metadata each attempt sends, with how long the next hop
        # has left, and the trace-context headers (`upstream_headers`)
        self.mesh_metadata: bytes | None = None
        self.trace_headers: Sequence[tuple[bytes, bytes]] = ()

    def header(self, name: str) -> str | None:
        """A request header by lower-case name; repeated headers joined by ','."""
        got: str | None = self._headers.get(name)
        return got

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The request headers as the caller sent them, as raw (name, value) byte pairs."""
        h = self._headers
        raw = getattr(h, "raw", None)
        if raw is not None:
            return list(raw)
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in h.items()]

    def upstream_headers(self, now: float) -> list[tuple[bytes, bytes]]:
        """What a sender sends for this attempt: `send_headers` (else the native request's raw
        headers), plus, with telemetry on, the trace-context headers and the mesh header: the
        workload metadata and the attempt's remaining deadline in milliseconds when it has one
        — the route timeout, a per-try timeout or a deadline inherited from the request being
        served, whichever ends first (Envoy's `x-envoy-expected-rq-timeout-ms`, also written
        per attempt). They go after the route's header operations, as Envoy's router adds its
        tracing headers to the upstream request."""
        meta = self.mesh_metadata
        headers = self.send_headers
        if meta is None:
            return self.native.headers.raw if headers is None else headers
        if headers is None:
            headers = self.native.headers.raw
        deadline = self.attempt_deadline
        if deadline != _INF:
            meta = b"%s;%d" % (meta, max(0, int((deadline - now) * 1000)))
        return [*headers, *self.trace_headers, (MESH_HEADER_RAW, meta)]

    def __repr__(self) -> str:
        return f"Call({self.method} {self.scheme}://{self.authority}{self.path})"


class Outcome:
    """The result of a call: a response (`status`, `native`) or an `error`, plus the record."""

    __slots__ = ("decision", "endpoint", "error", "grpc_status", "native", "status")

    def __init__(
        self,
        status: int | None,
        native: Any,
        decision: Decision,
        error: BaseException | None = None,
        grpc_status: int | None = None,
        endpoint: Any = None,
    ) -> None:
        self.status = status
        self.native = native
        self.decision = decision
        self.error = error
        self.grpc_status = grpc_status
        self.endpoint = endpoint

    def __repr__(self) -> str:
        flags = self.decision.response_flags
        return f"Outcome(status={self.status}, error={self.error!r}, flags={flags})"
