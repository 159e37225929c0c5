"""Compile validated Istio resources into the tables the request path reads.

A `Snapshot` is immutable: virtual hosts with their ordered route tables (predicates compiled by
`pymesh.policy.routing`), clusters (a service port, optionally narrowed to a subset, with its
endpoints, load balancer and outlier settings), and the name resolution Kubernetes DNS would do
from this workload's namespace. Building one does no I/O; the runtime swaps snapshots whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from pymesh.config.hosts import canonical_host
from pymesh.config.model import (
    ConfigSet,
    DestinationRule,
    OutlierDetection,
    ServiceEntry,
    ServicePort,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
)
from pymesh.policy.retry import RetryPolicy
from pymesh.policy.routing import Predicate, compile_rule_matches


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One address a cluster sends to."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict)
    weight: int = 1
    locality: str = ""
    service_account: str = ""

    @property
    def label(self) -> str:
        """`address:port`, as logs and errors name an endpoint."""
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A destination the balancer tier serves: service host, service port, optional subset."""

    name: str
    host: str
    port: int
    subset: str | None
    lb: str
    outlier: OutlierDetection | None
    endpoints: tuple[EndpointSpec, ...]


@dataclass(frozen=True, slots=True)
class DestinationChoice:
    """One weighted destination of a route; `port` None means "the port the caller dialed"."""

    host: str
    subset: str | None
    port: int | None


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """A compiled `http[]` rule: where it sends, with which weights, timeout and retries."""

    name: str
    destinations: tuple[DestinationChoice, ...]
    cumulative: tuple[int, ...]
    total: int
    timeout: float | None
    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """The routes for one service host (first match wins), and which resource they came from."""

    host: str
    source: str
    table: tuple[tuple[Predicate, RouteEntry], ...]


@dataclass(frozen=True, slots=True)
class Service:
    """A host the mesh knows, its ports by number, and (for display) who defined it."""

    host: str
    ports: Mapping[int, ServicePort]
    source: str


DEFAULT_RETRY = RetryPolicy.from_istio(None, None, None)


def cluster_name(host: str, port: int, subset: str | None) -> str:
    """Envoy-style cluster name: `outbound|9080|v1|reviews.default.svc.cluster.local`."""
    return f"outbound|{port}|{subset or ''}|{host}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the request path needs for one configuration version."""

    version: str
    namespace: str
    services: Mapping[str, Service]
    vhosts: Mapping[str, VirtualHost]
    clusters: Mapping[str, ClusterSpec]
    _names: dict[str, str | None] = field(default_factory=dict)

    def resolve(self, name: str) -> str | None:
        """The mesh host a request's host name means, or None when the mesh does not know it
        (passthrough). `reviews`, `reviews.default` and `reviews.default.svc.cluster.local`
        are the same service seen from namespace `default`."""
        try:
            return self._names[name]
        except KeyError:
            pass
        key = name.lower().rstrip(".")
        found: str | None = None
        if key in self.vhosts or key in self.services:
            found = key
        else:
            full = canonical_host(key, self.namespace)
            if full in self.vhosts or full in self.services:
                found = full
            else:
                for pattern in (*self.vhosts, *self.services):
                    if pattern.startswith("*") and key.endswith(pattern[1:]):
                        found = pattern
                        break
        if len(self._names) < 10_000:  # bounded: hostile callers cannot grow it forever
            self._names[name] = found
        return found

    def cluster_for(self, choice: DestinationChoice, dialed_port: int) -> ClusterSpec | None:
        """The cluster a route destination means for a call that dialed `dialed_port`."""
        port = choice.port or dialed_port
        return self.clusters.get(cluster_name(choice.host, port, choice.subset))


def _merge(base: TrafficPolicy | None, over: TrafficPolicy | None) -> TrafficPolicy:
    base = base or TrafficPolicy()
    if over is None:
        return base
    return TrafficPolicy(
        load_balancer=over.load_balancer or base.load_balancer,
        outlier_detection=over.outlier_detection or base.outlier_detection,
    )


def _endpoint_port(ep: WorkloadEndpoint, port: ServicePort) -> int:
    return ep.ports.get(port.name) or port.target_port or port.number


def compile_snapshot(
    config: ConfigSet,
    namespace: str,
    source_labels: Mapping[str, str] | None = None,
    version: str | None = None,
) -> Snapshot:
    """Build a snapshot of `config` as seen by a workload in `namespace` with `source_labels`."""
    labels = dict(source_labels or {})
    entries = [r for r in config.resources if isinstance(r, ServiceEntry)]
    workloads = [r for r in config.resources if isinstance(r, WorkloadEntry)]
    rules = [r for r in config.resources if isinstance(r, DestinationRule)]
    vss = [r for r in config.resources if isinstance(r, VirtualService)]

    services: dict[str, Service] = {}
    service_endpoints: dict[str, list[WorkloadEndpoint]] = {}
    resolution: dict[str, str] = {}
    written: dict[str, str] = {}  # canonical host -> the name as the ServiceEntry wrote it
    for se in entries:
        eps = list(se.endpoints)
        if se.workload_selector is not None:
            sel = se.workload_selector
            eps += [
                w.endpoint
                for w in workloads
                if w.meta.namespace == se.meta.namespace
                and all(w.endpoint.labels.get(k) == v for k, v in sel.items())
            ]
        for h in se.hosts:
            host = canonical_host(h, se.meta.namespace)
            if host in services:
                continue  # first definition wins; `analyze` reports the conflict
            services[host] = Service(host, {p.number: p for p in se.ports}, se.meta.ref)
            service_endpoints[host] = eps
            resolution[host] = se.resolution
            written[host] = h.strip().rstrip(".")

    drs: dict[str, DestinationRule] = {}
    for dr in rules:
        drs.setdefault(canonical_host(dr.host, dr.meta.namespace), dr)

    clusters: dict[str, ClusterSpec] = {}
    for host, svc in services.items():
        dest_rule = drs.get(host)
        subsets: list[tuple[str | None, dict[str, str], TrafficPolicy | None]] = [
            (None, {}, dest_rule.traffic_policy if dest_rule else None)
        ]
        if dest_rule:
            subsets += [
                (s.name, s.labels, _merge(dest_rule.traffic_policy, s.traffic_policy))
                for s in dest_rule.subsets
            ]
        for number, sport in svc.ports.items():
            for subset, sel, policy in subsets:
                eps = service_endpoints[host]
                specs = tuple(
                    EndpointSpec(
                        address=e.address,
                        port=_endpoint_port(e, sport),
                        labels=e.labels,
                        weight=e.weight,
                        locality=e.locality,
                        service_account=e.service_account,
                    )
                    for e in eps
                    if all(e.labels.get(k) == v for k, v in sel.items())
                )
                if not eps and resolution[host] in ("DNS", "NONE", "DNS_ROUND_ROBIN"):
                    # no endpoints: the host itself as written, resolved by DNS at connect time
                    specs = (EndpointSpec(address=written[host], port=sport.target_port or number),)
                tp = policy or TrafficPolicy()
                name = cluster_name(host, number, subset)
                clusters[name] = ClusterSpec(
                    name=name,
                    host=host,
                    port=number,
                    subset=subset,
                    lb=tp.load_balancer or "LEAST_REQUEST",
                    outlier=tp.outlier_detection,
                    endpoints=specs,
                )

    vhosts: dict[str, VirtualHost] = {}
    for vs in vss:
        table: list[tuple[Predicate, RouteEntry]] = []
        for i, rule in enumerate(vs.http):
            pred = compile_rule_matches(rule.match, labels)
            if pred is None:
                continue
            choices = []
            weights = []
            for rd in rule.route:
                dhost = canonical_host(rd.destination.host, vs.meta.namespace)
                choices.append(DestinationChoice(dhost, rd.destination.subset, rd.destination.port))
                weights.append(
                    100 if rd.weight is None and len(rule.route) == 1 else rd.weight or 0
                )
                _ensure_external_cluster(clusters, dhost, rd.destination.port, services)
            cumulative = []
            run = 0
            for w in weights:
                run += w
                cumulative.append(run)
            r = rule.retries
            retry = (
                RetryPolicy.from_istio(r.attempts, r.retry_on, r.per_try_timeout)
                if r is not None
                else DEFAULT_RETRY
            )
            label = f"{vs.meta.ref} http[{i}]" + (f" ({rule.name})" if rule.name else "")
            entry = RouteEntry(label, tuple(choices), tuple(cumulative), run, rule.timeout, retry)
            table.append((pred, entry))
        for h in vs.hosts:
            host = canonical_host(h, vs.meta.namespace)
            vhosts.setdefault(host, VirtualHost(host, vs.meta.ref, tuple(table)))

    for host in services:
        if host not in vhosts:
            entry = RouteEntry(
                "default", (DestinationChoice(host, None, None),), (100,), 100, None, DEFAULT_RETRY
            )
            vhosts[host] = VirtualHost(host, "default", ((_always, entry),))

    if version is None:
        digest = hashlib.sha256(repr(config.resources).encode()).hexdigest()[:12]
        version = f"static-{digest}"
    return Snapshot(version, namespace, services, vhosts, clusters)


def _always(_: object) -> bool:
    return True


def _ensure_external_cluster(
    clusters: dict[str, ClusterSpec], host: str, port: int | None, services: Mapping[str, Service]
) -> None:
    """A route may name a host no ServiceEntry declares (an external name): send to it by DNS."""
    if host in services or port is None:
        return
    name = cluster_name(host, port, None)
    if name not in clusters:
        clusters[name] = ClusterSpec(
            name, host, port, None, "LEAST_REQUEST", None, (EndpointSpec(host, port),)
        )
