"""Istio's standard metrics, and the mesh's health, in one Prometheus registry per `Mesh`.

How this works: `IstioMetrics` defines Istio's metrics with Istio's names, types, buckets and
labels (so Istio's Grafana dashboards and Kiali's queries read them unchanged). A finished call
is counted by `observe(series, ...)` into the `Series` of its label tuple (the edge caches the
series per destination, endpoint, code and flags); a collector renders the series at scrape
time. `observe` does not take a lock or touch a bucket: it appends the call's three values to
the series' raw list (one C call, atomic under the GIL), and the raw values are folded into
counts and buckets under the lock when something reads the series (`snapshot`, `observed`) or
the raw list grows past a few thousand values. What a scrape shows is exact. (A list, not an
`array('d')`: the array parses each value with `PyArg_Parse`, ~0.7 µs a call more in the
client bench, and boxes every value again when folded; the list keeps up to 1024 durations
alive per series, ~24 KB.) Cardinality is bounded:
past `max_series` label tuples, new tuples lose their principals and workload names
("unknown"), which keeps the count of series bounded by services × codes × flags.

`HealthCollector` reads the mesh's state at scrape time (certificate expiry, snapshot
version, endpoints and ejections per cluster); retries, retry-budget and circuit-breaker
overflows are counted from the decision records as calls finish.

Pre-fork servers: each worker process has its own `Mesh`, hence its own registry. With
`PYMESH_METRICS_DIR` set, `IstioMetrics` shares its counts with the other workers through
files in that directory and its registry serves the sum of all workers
(`pymesh.telemetry.multiprocess`); prometheus_client's own multiprocess mode is not used.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_right as _bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from pymesh.mesh import Mesh
    from pymesh.telemetry.multiprocess import SharedMetrics

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

# Envoy's default histogram buckets, which Istio's stats filter uses for all three request
# histograms (milliseconds and bytes alike) unless `sidecar.istio.io/statsHistogramBuckets`
# overrides them
BUCKETS = (
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300000.0,
    600000.0,
    1800000.0,
    3600000.0,
)
DURATION_BUCKETS = BYTES_BUCKETS = BUCKETS
_LE = (*(floatToGoString(b) for b in BUCKETS), "+Inf")  # type: ignore[no-untyped-call]
UNKNOWN = "unknown"


FOLD_AT = 3 * 1024  # raw values a series keeps before `observe` folds them (1024 calls)


class Series:
    """The request metrics of one label tuple: the count, and per histogram the sum and the
    per-bucket counts (not cumulative; the last slot is +Inf), updated under the owner's lock
    by `IstioMetrics.fold`; `raw` holds the calls observed since, three values each (duration in
    ms, request bytes, response bytes)."""

    __slots__ = ("count", "dur", "dur_sum", "labels", "raw", "req", "req_sum", "resp", "resp_sum")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.raw: list[float] = []
        self.count = 0
        self.dur_sum = 0.0
        self.req_sum = 0
        self.resp_sum = 0
        n = len(BUCKETS) + 1
        self.dur = [0] * n
        self.req = [0] * n
        self.resp = [0] * n

    def __repr__(self) -> str:
        return f"Series(count={self.count}, labels={self.labels})"


class IstioMetrics:
    """Istio's request and TCP metrics in `registry`.

    The four request metrics (`istio_requests_total` and the three histograms) are kept here,
    not in prometheus_client's `Counter` / `Histogram`, and rendered by a collector at scrape
    time: prometheus_client takes a lock and walks the buckets per observation of each metric
    (~1.5 µs for the four), which is half of the per-call budget telemetry has. One `Series` per
    label tuple, its calls appended raw and bucketed in batches when read: a fraction of that.
    The exposition is the same."""

    def __init__(
        self, registry: CollectorRegistry, max_series: int = 2000, metrics_dir: str | None = None
    ) -> None:
        self.registry = registry
        self.max_series = max_series
        self._series: dict[tuple[str, ...], Series] = {}
        self._lock = threading.Lock()
        registry.register(_RequestCollector(self))
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
        # pre-fork servers: with a metrics directory (`metrics_dir`, "" for none; default
        # $PYMESH_METRICS_DIR)
        # the workers share their counts through files and this registry serves their sum
        self.shared: SharedMetrics | None = None
        directory = os.environ.get("PYMESH_METRICS_DIR") if metrics_dir is None else metrics_dir
        if directory:
            from pymesh.telemetry.multiprocess import SharedMetrics

            self.shared = SharedMetrics(self, directory)

    def series(self, labels: tuple[str, ...]) -> Series:
        """The series of `labels` (made on first use; coarsened past `max_series`)."""
        got = self._series.get(labels)
        if got is None:
            with self._lock:
                if len(self._series) >= self.max_series and labels not in self._series:
                    labels = _coarse(labels)
                got = self._series.get(labels)
                if got is None:
                    got = self._series[labels] = Series(labels)
        return got

    def observe(self, series: Series, duration_ms: float, bytes_in: int, bytes_out: int) -> None:
        """Count one finished request in `series` (see the module's header: appended raw,
        folded into buckets when read)."""
        raw = series.raw
        raw.extend((duration_ms, bytes_in, bytes_out))
        if len(raw) >= FOLD_AT:
            self.fold(series)

    def fold(self, series: Series) -> None:
        """Fold `series`' raw values into its count and buckets. Other threads may append
        meanwhile: what they add after the length is read stays for the next fold (`extend`
        of a tuple and `del` of a slice are each atomic under the GIL)."""
        with self._lock:
            raw = series.raw
            n = len(raw)
            n -= n % 3
            if not n:
                return
            values = raw[:n]
            del raw[:n]
            durations, requests, responses = values[0::3], values[1::3], values[2::3]
            _add_buckets(series.dur, durations)
            _add_buckets(series.req, requests)
            _add_buckets(series.resp, responses)
            series.count += n // 3
            series.dur_sum += sum(durations)
            series.req_sum += int(sum(requests))
            series.resp_sum += int(sum(responses))

    def _fold_all(self) -> None:
        for series in list(self._series.values()):
            if series.raw:
                self.fold(series)

    def snapshot(
        self,
    ) -> list[tuple[tuple[str, ...], int, float, list[int], int, list[int], int, list[int]]]:
        """A consistent copy of every series (for the collector), every call observed so far
        counted."""
        self._fold_all()
        with self._lock:
            return [
                (s.labels, s.count, s.dur_sum, s.dur[:], s.req_sum, s.req[:], s.resp_sum, s.resp[:])
                for s in self._series.values()
            ]

    def rows(
        self,
    ) -> list[tuple[tuple[str, ...], int, float, list[int], int, list[int], int, list[int]]]:
        """What a scrape shows: `snapshot()`, or in multiprocess mode the sum of this process'
        series and the other workers' files."""
        shared = self.shared
        return self.snapshot() if shared is None else shared.merged_rows()

    def observed(self) -> tuple[int, int]:
        """(requests counted, series): a cheap sign of change for the multiprocess writer."""
        self._fold_all()
        with self._lock:
            return sum(s.count for s in self._series.values()), len(self._series)

    def counters(self) -> tuple[Counter, ...]:
        """The prometheus_client counters (TCP metrics and mesh health), in a fixed order."""
        return (
            self.tcp_sent,
            self.tcp_received,
            self.tcp_opened,
            self.tcp_closed,
            self.retries,
            self.retries_exhausted,
            self.retry_overflow,
            self.circuit_open,
        )

    def reset_after_fork(self) -> None:
        """In a forked child: count from zero (what the parent counted is the parent's to
        report) with a fresh lock (another thread may have held the parent's at the fork).
        The series objects stay: the edges cache them."""
        self._lock = threading.Lock()
        n = len(BUCKETS) + 1
        for s in self._series.values():
            del s.raw[:]
            s.count = 0
            s.dur_sum = 0.0
            s.req_sum = 0
            s.resp_sum = 0
            s.dur[:] = [0] * n
            s.req[:] = [0] * n
            s.resp[:] = [0] * n
        for counter in self.counters():
            counter.clear()

    def __repr__(self) -> str:
        return f"IstioMetrics(series={len(self._series)}, max_series={self.max_series})"


def _add_buckets(counts: list[int], values: list[float]) -> None:
    """Add `values` to per-bucket `counts` (a value goes in the first bucket whose bound is not
    below it; the last slot is +Inf): sorted once in C, then one `bisect` per bound — a few
    hundred nanoseconds per value less than a `bisect` per value."""
    ordered = sorted(values)
    below = 0
    for i, bound in enumerate(BUCKETS):
        upto = _bisect_right(ordered, bound, below)
        counts[i] += upto - below
        below = upto
    counts[-1] += len(ordered) - below


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    out = []
    total = 0
    for le, n in zip(_LE, counts, strict=True):
        total += n
        out.append((le, float(total)))
    return out


class _RequestCollector:
    """Renders `IstioMetrics`' request series as Prometheus families at scrape time."""

    def __init__(self, metrics: IstioMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        """The families' names (for the registry's duplicate check), without samples."""
        return self._families([])

    def collect(self) -> list[Metric]:
        """The request metrics as they are now."""
        return self._families(self._metrics.rows())

    @staticmethod
    def _families(rows: list[Any]) -> list[Metric]:
        requests = CounterMetricFamily("istio_requests", "Requests handled.", labels=LABELS)
        duration = HistogramMetricFamily(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds.",
            labels=LABELS,
        )
        req = HistogramMetricFamily(
            "istio_request_bytes", "HTTP request body size in bytes.", labels=LABELS
        )
        resp = HistogramMetricFamily(
            "istio_response_bytes", "HTTP response body size in bytes.", labels=LABELS
        )
        for labels, count, dur_sum, dur, req_sum, req_b, resp_sum, resp_b in rows:
            values = list(labels)
            requests.add_metric(values, count)
            duration.add_metric(values, _cumulative(dur), dur_sum)
            req.add_metric(values, _cumulative(req_b), req_sum)
            resp.add_metric(values, _cumulative(resp_b), resp_sum)
        return [requests, duration, req, resp]

    def __repr__(self) -> str:
        return f"_RequestCollector({self._metrics!r})"


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
