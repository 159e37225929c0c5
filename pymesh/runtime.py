"""Balancer- and endpoint-tier state that lives across snapshots.

How this works: a `Runtime` owns one `ClusterState` per cluster name and one `EndpointState` per
(cluster, address, port, identity). `apply(snapshot)` diffs: clusters and endpoints that remain
keep their objects — requests in flight, ejections, round-robin cursors — so a push that repeats
the same endpoints resets nothing. Objects that disappear are dropped; calls in flight that hold
them finish normally. Every decision is delegated to `pymesh.policy`; this module only keeps the
state those decisions read and write. The clock and the random source are injected.

Each cluster also keeps its `CircuitBreaker` (requests active and pending, retries in progress:
connection-pool limits and the retry budget) across snapshots, even when its load balancer
changes, and its locality `Layers` (endpoints by priority, with each level's share of traffic),
rebuilt only when the healthy set changes. Consistent-hash tables are cached the same way.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from pymesh.config.model import ConnectionPoolSettings
from pymesh.policy.balancer import Balancer, balancer_for
from pymesh.policy.limits import Admission, admit, retry_allowed
from pymesh.policy.locality import Layers
from pymesh.policy.outlier import (
    OutlierState,
    detection_suspended,
    is_ejected,
    record_result,
)
from pymesh.snapshot import ClusterSpec, EndpointSpec, Snapshot


class Signal(Protocol):
    """Wakes one waiter; `set` may be called from any thread (`pymesh._shim` has the
    async and sync kinds)."""

    def set(self) -> None:
        """Wake the waiter."""
        ...


class Waiter:
    """A pending attempt waiting for a connection slot. `state`: 0 waiting, 1 granted (it owns
    a slot now), 2 gave up. Changed only under the breaker's lock."""

    __slots__ = ("signal", "state")

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self.state = 0

    def __repr__(self) -> str:
        return f"Waiter({('waiting', 'granted', 'gave up')[self.state]})"


class CircuitBreaker:
    """One cluster's circuit-breaker counters (Envoy's cluster resource manager).

    How this works: an attempt is *admitted* (`active` + 1) by `admit`, or waits in `waiters`
    (`pending` + 1) for a slot, or overflows. `release` — called when the attempt's endpoint
    in-flight count drops, i.e. when its response body is closed or it failed — hands the slot
    to the oldest waiter (so a freed slot cannot be stolen and a waiter never starves), else
    frees it. `retries` counts retries in progress for `maxRetries` and the retry budget. One
    `threading.Lock` guards the counters: critical sections are a few operations and never
    wait, so async code takes it too, and sync clients on many threads stay exact.
    """

    __slots__ = ("active", "lock", "pending", "retries", "waiters")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.pending = 0
        self.retries = 0
        self.waiters: deque[Waiter] = deque()

    def admit(
        self, pool: ConnectionPoolSettings | None, signal: Callable[[], Signal]
    ) -> tuple[Admission, Waiter | None]:
        """Admit one attempt under `pool`'s limits: `go` (admitted), `wait` (with the Waiter to
        wait on, made with `signal()`), or an overflow (nothing counted)."""
        with self.lock:
            if pool is None:
                self.active += 1
                return "go", None
            decision = admit(
                self.active,
                self.pending,
                pool.http2_max_requests,
                pool.max_connections,
                pool.http1_max_pending_requests,
            )
            if decision == "go":
                self.active += 1
            elif decision == "wait":
                waiter = Waiter(signal())
                self.waiters.append(waiter)
                self.pending += 1
                return decision, waiter
            return decision, None

    def give_up(self, waiter: Waiter) -> bool:
        """A waiter stops waiting (deadline, timeout, cancellation). True when it was granted a
        slot meanwhile — it owns the slot and must use or `release` it."""
        with self.lock:
            if waiter.state == 1:
                return True
            if waiter.state == 0:
                waiter.state = 2
                self.pending -= 1
                self.waiters.remove(waiter)  # a waiting waiter is always queued
            return False

    def release(self) -> None:
        """An admitted attempt ended: its slot goes to the oldest waiter, else it is freed."""
        with self.lock:
            waiters = self.waiters
            while waiters:
                w = waiters.popleft()
                if w.state == 0:
                    w.state = 1
                    self.pending -= 1
                    w.signal.set()
                    return
            self.active -= 1

    def unadmit(self) -> None:
        """Take back an admission whose attempt never reached an endpoint."""
        self.release()

    def begin_retry(self, percent: float, min_concurrency: int, max_retries: int | None) -> str:
        """Start a retry if `maxRetries` and the budget allow (counted until `end_retry`);
        "" when started, else the limit that stopped it."""
        with self.lock:
            why = retry_allowed(
                self.retries, self.active, self.pending, percent, min_concurrency, max_retries
            )
            if not why:
                self.retries += 1
            return why

    def end_retry(self) -> None:
        """A retry's attempt ended."""
        with self.lock:
            self.retries -= 1

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(active={self.active}, pending={self.pending}, retries={self.retries})"
        )


class EndpointState:
    """One endpoint of one cluster: requests in flight and outlier memory.

    `active` is the endpoint's in-flight count (least request reads it). The endpoint tier
    raises it (`acquire`) when an attempt is sent and lowers it (`release`) when the attempt
    ends (its body closed, or it failed); lowering it also releases the attempt's slot in the
    cluster's circuit breaker. The count is the length of a deque whose `append` and `pop`
    are atomic, so sync clients on many threads keep it exact without a lock (a read-modify-
    write of an int, `active += 1`, can lose an update when threads switch in between).
    """

    __slots__ = ("_inflight", "address", "breaker", "label", "outlier", "port", "spec")

    def __init__(self, spec: EndpointSpec, breaker: CircuitBreaker | None = None) -> None:
        self.spec = spec
        self.address = spec.address
        self.port = spec.port
        self.label = spec.label
        self._inflight: deque[None] = deque()
        self.breaker = breaker or CircuitBreaker()
        self.outlier = OutlierState()

    @property
    def active(self) -> int:
        """Requests in flight to this endpoint."""
        return len(self._inflight)

    def acquire(self) -> None:
        """One more attempt in flight."""
        self._inflight.append(None)

    def release(self) -> None:
        """An attempt ended: one fewer in flight, and its circuit-breaker slot released."""
        try:
            self._inflight.pop()
        except IndexError:  # never below zero
            return
        self.breaker.release()

    @property
    def weight(self) -> int:
        """Load-balancing weight."""
        return self.spec.weight

    @property
    def priority(self) -> int:
        """Locality priority seen from this workload (0 = first choice)."""
        return self.spec.priority

    @property
    def locality(self) -> str:
        """`region/zone/subzone`."""
        return self.spec.locality

    def __repr__(self) -> str:
        return f"EndpointState({self.label}, active={self.active}, {self.outlier!r})"


class ClusterState:
    """The balancer tier for one cluster: its endpoints, balancer, healthy set, locality
    layers and circuit breaker."""

    __slots__ = (
        "_healthy",
        "_healthy_until",
        "_layered",
        "_layers",
        "_layers_for",
        "balancer",
        "breaker",
        "endpoints",
        "name",
        "spec",
    )

    def __init__(self, spec: ClusterSpec) -> None:
        self.name = spec.name
        self.spec = spec
        self.balancer: Balancer = _balancer(spec)
        self.breaker = CircuitBreaker()
        self.endpoints: list[EndpointState] = []
        self._healthy: list[EndpointState] | None = None
        self._healthy_until = 0.0
        self._layered = False
        self._layers: Layers | None = None
        self._layers_for: Sequence[EndpointState] | None = None

    def set_endpoints(self, endpoints: list[EndpointState]) -> None:
        """Take a new endpoint list (after a snapshot diff)."""
        self.endpoints = endpoints
        self._healthy = None
        self._layers = None
        self._layers_for = None
        self._layered = self.spec.locality_weights is not None or any(
            e.spec.priority for e in endpoints
        )

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
        self,
        now: float,
        rng: random.Random,
        avoid: Collection[EndpointState],
        key: int | None = None,
    ) -> EndpointState | None:
        """The endpoint for the next attempt, or None when no endpoint may take traffic.
        With locality priorities, first the priority level (by health, Envoy's priority load)
        and locality; `key` is the call's consistent-hash key (None: none)."""
        cands: Sequence[EndpointState] = self.candidates(now)
        if not cands:
            return None
        if self._layered:
            layers = self._layers
            if layers is None or self._layers_for is not cands:
                layers = Layers(self.endpoints, cands, self.spec.locality_weights)
                self._layers = layers
                self._layers_for = cands
            x = (key % 10_000) / 10_000 if key is not None else rng.random()
            cands = layers.choose(x, rng.random(), key is not None)  # type: ignore[assignment]
        return self.balancer.pick(cands, rng, avoid, key)

    def layers(self, now: float) -> Layers | None:
        """The locality layers in use at `now` (None when the cluster has none), for tools."""
        if not self._layered:
            return None
        return Layers(self.endpoints, self.candidates(now), self.spec.locality_weights)

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
        return (
            f"ClusterState({self.name}, endpoints={len(self.endpoints)}, {self.balancer!r}, "
            f"{self.breaker!r})"
        )


def _balancer(spec: ClusterSpec) -> Balancer:
    h = spec.hash
    if h is None:
        return balancer_for(spec.lb)
    return balancer_for(spec.lb, h.table_size if spec.lb == "MAGLEV" else h.minimum_ring_size)


class EdgeStats:
    """Calls, errors and latency (until the response headers) per destination service,
    cumulative since start: what the agent's heartbeats carry to the control plane for its
    dashboard and `pymeshctl top`. One dict lookup and three additions per call."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[str, list[float]] = {}

    def record(self, destination: str, error: bool, seconds: float) -> None:
        """Count one finished call to `destination`."""
        row = self._rows.get(destination)
        if row is None:
            row = self._rows[destination] = [0, 0, 0.0]
        row[0] += 1
        if error:
            row[1] += 1
        row[2] += seconds

    def rows(self) -> list[dict[str, object]]:
        """The counters as the control plane's heartbeat takes them."""
        return [
            {
                "destination": dest,
                "requests": int(row[0]),
                "errors": int(row[1]),
                "latencyMsSum": round(row[2] * 1000, 3),
            }
            for dest, row in list(self._rows.items())
        ]

    def __repr__(self) -> str:
        return f"EdgeStats({len(self._rows)} destinations)"


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
        self.edge_stats = EdgeStats()
        self.snapshot = snapshot
        self.apply(snapshot)

    def apply(self, snapshot: Snapshot) -> None:
        """Take a new snapshot: update clusters and endpoints by diff, keep what remains."""
        clusters: dict[str, ClusterState] = {}
        for name, spec in snapshot.clusters.items():
            state = self.clusters.get(name)
            if state is None:
                state = ClusterState(spec)
            elif (state.spec.lb, state.spec.hash) != (spec.lb, spec.hash):
                state.balancer = _balancer(spec)  # counters, ejections, breaker carry over
            by_key = {(e.address, e.port, e.spec.service_account): e for e in state.endpoints}
            eps: list[EndpointState] = []
            for es in spec.endpoints:
                cur = by_key.get((es.address, es.port, es.service_account))
                if cur is None:
                    cur = EndpointState(es, state.breaker)
                else:
                    cur.spec = es
                eps.append(cur)
            state.spec = spec
            state.set_endpoints(eps)
            clusters[name] = state
        self.clusters = clusters
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return f"Runtime(snapshot={self.snapshot.version}, clusters={len(self.clusters)})"
