"""Balancer- and endpoint-tier state that lives across snapshots.

How this works: a `Runtime` owns one `ClusterState` per cluster name and one `EndpointState` per
(cluster, address, port, identity). `apply(snapshot)` diffs: clusters and endpoints that remain
keep their objects — requests in flight, ejections, round-robin cursors — so a push that repeats
the same endpoints resets nothing. Objects that disappear are dropped; calls in flight that hold
them finish normally. Every decision is delegated to `pymesh.policy`; this module only keeps the
state those decisions read and write. The clock and the random source are injected.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection

from pymesh.policy.balancer import Balancer, balancer_for
from pymesh.policy.outlier import (
    OutlierState,
    detection_suspended,
    is_ejected,
    record_result,
)
from pymesh.snapshot import ClusterSpec, EndpointSpec, Snapshot


class EndpointState:
    """One endpoint of one cluster: requests in flight and outlier memory."""

    __slots__ = ("active", "address", "label", "outlier", "port", "spec")

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self.address = spec.address
        self.port = spec.port
        self.label = spec.label
        self.active = 0
        self.outlier = OutlierState()

    def __repr__(self) -> str:
        return f"EndpointState({self.label}, active={self.active}, {self.outlier!r})"


class ClusterState:
    """The balancer tier for one cluster: its endpoints, balancer and healthy set."""

    __slots__ = ("_healthy", "_healthy_until", "balancer", "endpoints", "name", "spec")

    def __init__(self, spec: ClusterSpec) -> None:
        self.name = spec.name
        self.spec = spec
        self.balancer: Balancer = balancer_for(spec.lb)
        self.endpoints: list[EndpointState] = []
        self._healthy: list[EndpointState] | None = None
        self._healthy_until = 0.0

    def candidates(self, now: float) -> list[EndpointState]:
        """Endpoints that may take traffic at `now` (not ejected, unless detection is
        suspended by minHealthPercent). Cached until the next ejection ends or starts."""
        cfg = self.spec.outlier
        if cfg is None:
            return self.endpoints
        healthy = self._healthy
        if healthy is not None and now < self._healthy_until:
            return healthy
        healthy = []
        until = float("inf")
        for e in self.endpoints:
            if is_ejected(e.outlier, now):
                assert e.outlier.ejected_until is not None
                until = min(until, e.outlier.ejected_until)
            else:
                healthy.append(e)
        if detection_suspended(cfg, len(healthy), len(self.endpoints)):
            healthy = list(self.endpoints)
        self._healthy = healthy
        self._healthy_until = until
        return healthy

    def pick(
        self, now: float, rng: random.Random, avoid: Collection[EndpointState]
    ) -> EndpointState | None:
        """The endpoint for the next attempt, or None when no endpoint may take traffic."""
        cands = self.candidates(now)
        if not cands:
            return None
        return self.balancer.pick(cands, rng, avoid)

    def record(self, ep: EndpointState, status: int | None, local_failure: bool, now: float) -> str:
        """Feed one result to outlier detection; returns the ejection reason, or ""."""
        cfg = self.spec.outlier
        if cfg is None:
            return ""
        healthy = self.candidates(now)
        ejected = len(self.endpoints) - len(healthy)
        ej = record_result(
            cfg, ep.outlier, status, local_failure, now, ejected, len(self.endpoints)
        )
        if ej is None:
            return ""
        self._healthy = None
        return ej.reason

    def ejected_count(self, now: float) -> int:
        """How many endpoints are ejected at `now`."""
        return sum(1 for e in self.endpoints if is_ejected(e.outlier, now))

    def __repr__(self) -> str:
        return f"ClusterState({self.name}, endpoints={len(self.endpoints)}, {self.balancer!r})"


class Runtime:
    """State shared by every client and server of one `Mesh`, carried across snapshots."""

    def __init__(
        self,
        snapshot: Snapshot,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.clusters: dict[str, ClusterState] = {}
        self.snapshot = snapshot
        self.apply(snapshot)

    def apply(self, snapshot: Snapshot) -> None:
        """Take a new snapshot: update clusters and endpoints by diff, keep what remains."""
        clusters: dict[str, ClusterState] = {}
        for name, spec in snapshot.clusters.items():
            old = self.clusters.get(name)
            state = old if old is not None and old.spec.lb == spec.lb else ClusterState(spec)
            by_key = {(e.address, e.port, e.spec.service_account): e for e in state.endpoints}
            if old is not None and state is not old:
                by_key = {(e.address, e.port, e.spec.service_account): e for e in old.endpoints}
            eps: list[EndpointState] = []
            for es in spec.endpoints:
                cur = by_key.get((es.address, es.port, es.service_account))
                if cur is None:
                    cur = EndpointState(es)
                else:
                    cur.spec = es
                eps.append(cur)
            state.spec = spec
            state.endpoints = eps
            state._healthy = None
            clusters[name] = state
        self.clusters = clusters
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return f"Runtime(snapshot={self.snapshot.version}, clusters={len(self.clusters)})"
