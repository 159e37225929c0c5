"""The control plane's Prometheus metrics (served at `/metrics`).

Each `Metrics` has its own registry, so several control planes in one process (tests) do not
collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """Counters, gauges and histograms of one control plane."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pushes = Counter(
            "pymesh_cp_pushes", "Snapshots written to agent watch streams.", registry=r
        )
        self.push_latency = Histogram(
            "pymesh_cp_push_latency_seconds",
            "From a store change reaching the control plane to its snapshots being queued "
            "on every affected stream.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.connected_agents = Gauge(
            "pymesh_cp_connected_agents", "Open watch streams.", registry=r
        )
        self.applies = Counter(
            "pymesh_cp_applies", "Accepted applies and deletes of resources.", registry=r
        )
        self.rejected_applies = Counter(
            "pymesh_cp_rejected_applies",
            "Applies and deletes refused because the configuration was invalid.",
            registry=r,
        )
        self.acks = Counter("pymesh_cp_acks", "ACKs and NACKs from agents.", ["result"], registry=r)
        self.registrations = Counter(
            "pymesh_cp_registrations", "Workload registrations.", registry=r
        )
        self.csrs = Counter(
            "pymesh_cp_csrs",
            "Certificate signing requests by result (signed, rejected, limited).",
            ["result"],
            registry=r,
        )
        self.store_revision = Gauge(
            "pymesh_cp_store_revision", "The store revision the snapshots are at.", registry=r
        )
        self.workloads = Gauge(
            "pymesh_cp_registered_workloads", "Registered workloads (live leases).", registry=r
        )
        self.views = Gauge(
            "pymesh_cp_views", "Distinct views (snapshots) the connected agents use.", registry=r
        )

    def __repr__(self) -> str:
        return "Metrics()"

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
