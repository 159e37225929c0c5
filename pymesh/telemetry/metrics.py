"""Istio's standard metrics, and the mesh's health, in one Prometheus registry per `Mesh`.

How this works: `IstioMetrics` defines Istio's metrics with Istio's names, types, buckets and
labels (so Istio's Grafana dashboards and Kiali's queries read them unchanged). A finished call
is counted by `observe(labels, ...)`; the label children of one label tuple are looked up once
and cached in a dict, so a call costs a dict lookup plus four updates. Cardinality is bounded:
past `max_series` label tuples, new tuples lose their principals and workload names
("unknown"), which keeps the count of series bounded by services × codes × flags.

`HealthCollector` reads the mesh's state at scrape time (certificate expiry, snapshot
version, endpoints and ejections per cluster); retries, retry-budget and circuit-breaker
overflows are counted from the decision records as calls finish.

Pre-fork servers: each worker process has its own `Mesh`, hence its own registry; scrape each
worker's metrics listener (or let Prometheus discover one port per worker). Prometheus'
multiprocess mode is not used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS = tuple(n for n in LABELS if n not in ("response_code", "grpc_response_status"))

# Istio's stats plugin buckets: milliseconds, and bytes (powers of ten up to 1e9)
DURATION_BUCKETS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
BYTES_BUCKETS = tuple(float(10**i) for i in range(10))
UNKNOWN = "unknown"


class IstioMetrics:
    """Istio's request and TCP metrics in `registry`, with cached label children."""

    def __init__(self, registry: CollectorRegistry, max_series: int = 2000) -> None:
        self.registry = registry
        self.max_series = max_series
        self.requests = Counter(
            "istio_requests_total", "Requests handled.", LABELS, registry=registry
        )
        self.duration = Histogram(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds.",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.request_bytes = Histogram(
            "istio_request_bytes",
            "HTTP request body size in bytes.",
            LABELS,
            buckets=BYTES_BUCKETS,
            registry=registry,
        )
        self.response_bytes = Histogram(
            "istio_response_bytes",
            "HTTP response body size in bytes.",
            LABELS,
            buckets=BYTES_BUCKETS,
            registry=registry,
        )
        # TCP metrics: defined for the dashboards; fed by TCP proxying (pymesh-proxy)
        self.tcp_sent = Counter(
            "istio_tcp_sent_bytes_total", "TCP bytes sent.", TCP_LABELS, registry=registry
        )
        self.tcp_received = Counter(
            "istio_tcp_received_bytes_total", "TCP bytes received.", TCP_LABELS, registry=registry
        )
        self.tcp_opened = Counter(
            "istio_tcp_connections_opened_total",
            "TCP connections opened.",
            TCP_LABELS,
            registry=registry,
        )
        self.tcp_closed = Counter(
            "istio_tcp_connections_closed_total",
            "TCP connections closed.",
            TCP_LABELS,
            registry=registry,
        )
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any, Any]] = {}
        # mesh health, from decision records
        self.retries = Counter(
            "pymesh_retries_total",
            "Retry attempts made by meshed clients.",
            ("destination_service",),
            registry=registry,
        )
        self.retries_exhausted = Counter(
            "pymesh_retries_exhausted_total",
            "Calls that failed after every allowed attempt (flag URX).",
            ("destination_service",),
            registry=registry,
        )
        self.retry_overflow = Counter(
            "pymesh_retry_overflow_total",
            "Retries refused by the retry budget or maxRetries.",
            ("destination_service",),
            registry=registry,
        )
        self.circuit_open = Counter(
            "pymesh_circuit_breaker_overflow_total",
            "Attempts refused by a connection-pool limit (flag UO).",
            ("destination_service",),
            registry=registry,
        )

    def children(self, labels: tuple[str, ...]) -> tuple[Any, Any, Any, Any]:
        """The (requests, duration, request bytes, response bytes) children for `labels`."""
        got = self._children.get(labels)
        if got is None:
            if len(self._children) >= self.max_series:
                labels = _coarse(labels)
                got = self._children.get(labels)
                if got is not None:
                    return got
            got = (
                self.requests.labels(*labels),
                self.duration.labels(*labels),
                self.request_bytes.labels(*labels),
                self.response_bytes.labels(*labels),
            )
            self._children[labels] = got
        return got

    def observe(
        self, labels: tuple[str, ...], duration_ms: float, bytes_in: int, bytes_out: int
    ) -> None:
        """Count one finished request."""
        requests, duration, req_bytes, resp_bytes = self.children(labels)
        requests.inc()
        duration.observe(duration_ms)
        req_bytes.observe(bytes_in)
        resp_bytes.observe(bytes_out)

    def __repr__(self) -> str:
        return f"IstioMetrics(series={len(self._children)}, max_series={self.max_series})"


def _coarse(labels: tuple[str, ...]) -> tuple[str, ...]:
    """`labels` without the high-cardinality parts (principals and workload names)."""
    out = list(labels)
    for i in (1, 3, 6, 8):  # source/destination workload and principal
        out[i] = UNKNOWN
    return tuple(out)


class HealthCollector:
    """Mesh health read at scrape time: certificate expiry, snapshot version, endpoints and
    outlier ejections per cluster."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    def collect(self) -> Iterator[Metric]:
        """Yield the health gauges (called by the registry on each scrape)."""
        mesh = self._mesh
        info = GaugeMetricFamily(
            "pymesh_snapshot_info", "The configuration snapshot in use.", labels=["version"]
        )
        info.add_metric([str(mesh.runtime.snapshot.version)], 1)
        yield info
        identity = mesh.identity
        svid = getattr(identity, "svid", None) if identity is not None else None
        if svid is not None:
            expiry = GaugeMetricFamily(
                "pymesh_certificate_expiry_timestamp_seconds",
                "When the workload certificate expires (Unix time).",
                labels=["spiffe_id"],
            )
            expiry.add_metric([str(mesh.spiffe_id)], float(svid.not_after))
            yield expiry
        endpoints = GaugeMetricFamily(
            "pymesh_endpoints", "Endpoints per cluster.", labels=["cluster"]
        )
        ejected = GaugeMetricFamily(
            "pymesh_ejected_endpoints",
            "Endpoints ejected by outlier detection, per cluster.",
            labels=["cluster"],
        )
        now = mesh.runtime.clock()
        for name, cluster in list(mesh.runtime.clusters.items()):
            endpoints.add_metric([name], len(cluster.endpoints))
            ejected.add_metric([name], cluster.ejected_count(now))
        yield endpoints
        yield ejected

    def __repr__(self) -> str:
        return f"HealthCollector({self._mesh!r})"


def now_ms() -> float:
    """Wall-clock milliseconds (for logs)."""
    return time.time() * 1000
