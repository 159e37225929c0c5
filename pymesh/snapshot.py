"""Compile validated Istio resources into the tables the request path reads.

A `Snapshot` is immutable: virtual hosts with their ordered route tables (predicates compiled by
`pymesh.policy.routing`), clusters (a service port, optionally narrowed to a subset, with its
endpoints, load balancer and outlier settings), and the name resolution Kubernetes DNS would do
from this workload's namespace. Building one does no I/O; the runtime swaps snapshots whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pymesh.config.hosts import canonical_host
from pymesh.config.model import (
    ClientTLSSettings,
    ConfigSet,
    ConnectionPoolSettings,
    ConsistentHash,
    Destination,
    DestinationRule,
    Headers,
    HTTPRedirect,
    HTTPRoute,
    LoadBalancerSettings,
    OutlierDetection,
    RetryBudget,
    ServiceEntry,
    ServicePort,
    Sidecar,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
)
from pymesh.policy.egress import EgressPolicy, compile_egress, select_sidecar
from pymesh.policy.fault import FaultPolicy
from pymesh.policy.header_ops import HeaderOps, authority_of, compile_header_ops
from pymesh.policy.local import LocalReply, direct_reply
from pymesh.policy.locality import plan_localities
from pymesh.policy.retry import RetryPolicy
from pymesh.policy.rewrite import PathRewrite, compile_path_rewrite
from pymesh.policy.routing import Predicate, compile_match, compile_rule_matches
from pymesh.policy.sampling import millionths


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One address a cluster sends to."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict)
    weight: int = 1
    locality: str = ""
    service_account: str = ""
    # locality priority seen from this workload (0 = first choice; `pymesh.policy.locality`)
    priority: int = 0
    # the SPIFFE ID this endpoint must present over mesh mTLS ("" when it is not a mesh
    # workload: no serviceAccount, so no identity to expect and no auto mTLS)
    identity: str = ""

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
    # `trafficPolicy.connectionPool` after subset/port merging; None when unset (Istio defaults)
    connection_pool: ConnectionPoolSettings | None = None
    # `loadBalancer.consistentHash` (then `lb` is RING_HASH or MAGLEV)
    hash: ConsistentHash | None = None
    retry_budget: RetryBudget = field(default_factory=RetryBudget)
    # locality-weighted balancing (`localityLbSetting.distribute`): weight per endpoint locality
    locality_weights: Mapping[str, int] | None = None
    # `trafficPolicy.tls` after merging; None: auto — mesh mTLS to endpoints with an identity
    tls: ClientTLSSettings | None = None
    # identities any endpoint may present besides its own (ServiceEntry / tls subjectAltNames)
    subject_alt_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DestinationChoice:
    """One weighted destination of a route; `port` None means "the port the caller dialed".
    `route[].headers` of this destination: request and response operations, and the authority
    a request `set` of `host` asks for."""

    host: str
    subset: str | None
    port: int | None
    request_ops: HeaderOps | None = None
    response_ops: HeaderOps | None = None
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class MirrorTarget:
    """Where a rule mirrors requests to, and for which share of them (millionths)."""

    choice: DestinationChoice
    share: int


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """A compiled `http[]` rule: where it sends, with which weights, timeout and retries; what
    it injects (`fault`) and mirrors; whether it answers locally (`redirect`, `direct`); and
    how it changes the request (`path_rewrite`, `authority`, `request_ops`) and the response
    (`response_ops`). `transforms` / `response_transforms` say whether any of the request /
    response changes (the rule's or a destination's) apply, so the router skips them cheaply."""

    name: str
    destinations: tuple[DestinationChoice, ...]
    cumulative: tuple[int, ...]
    total: int
    timeout: float | None
    retry: RetryPolicy
    fault: FaultPolicy | None = None
    mirrors: tuple[MirrorTarget, ...] = ()
    redirect: HTTPRedirect | None = None
    direct: LocalReply | None = None
    path_rewrite: PathRewrite | None = None
    authority: str | None = None
    request_ops: HeaderOps | None = None
    response_ops: HeaderOps | None = None
    transforms: bool = False
    response_transforms: bool = False


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
    # this workload's locality and address (consistent hashing's `useSourceIp` hashes it)
    source_locality: str = ""
    source_address: str = ""
    # the Sidecar egress policy of this workload (None: no Sidecar applies — every service
    # visible, unknown hosts pass through); whether any route injects faults / mirrors
    egress: EgressPolicy | None = None
    has_faults: bool = False
    has_mirrors: bool = False

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


def _port_policy(tp: TrafficPolicy | None, port: int) -> tuple[TrafficPolicy | None, bool]:
    """Istio's GetPortLevelTrafficPolicy: the port's `portLevelSettings` entry replaces the
    policy's loadBalancer, connectionPool and outlierDetection wholesale (unset ones fall back
    to defaults, not to the policy's); True when there was one."""
    if tp is None:
        return None, False
    for pl in tp.port_level_settings:
        if pl.port == port:
            return (
                TrafficPolicy(
                    load_balancer=pl.load_balancer,
                    outlier_detection=pl.outlier_detection,
                    connection_pool=pl.connection_pool,
                    retry_budget=tp.retry_budget,
                    tls=pl.tls,
                ),
                True,
            )
    return tp, False


def effective_policy(
    rule: TrafficPolicy | None, subset: TrafficPolicy | None, port: int
) -> TrafficPolicy:
    """The traffic policy of one cluster, merged as Istio's MergeSubsetTrafficPolicy does: the
    rule's policy for `port`, overridden field by field by the subset's — wholesale when the
    subset has port-level settings for `port`."""
    base, _ = _port_policy(rule, port)
    if subset is None:
        return base or TrafficPolicy()
    over, port_level = _port_policy(subset, port)
    assert over is not None
    if base is None:
        return over
    return TrafficPolicy(
        load_balancer=(
            over.load_balancer
            if over.load_balancer is not None or port_level
            else base.load_balancer
        ),
        outlier_detection=(
            over.outlier_detection
            if over.outlier_detection is not None or port_level
            else base.outlier_detection
        ),
        connection_pool=(
            over.connection_pool
            if over.connection_pool is not None or port_level
            else base.connection_pool
        ),
        retry_budget=over.retry_budget or base.retry_budget,
        tls=over.tls if over.tls is not None or port_level else base.tls,
    )


def workload_identity(
    config: ConfigSet, namespace: str, labels: Mapping[str, str]
) -> tuple[str, str]:
    """(locality, address) of this workload from its own WorkloadEntry: the entries of
    `namespace` whose labels include all of `labels`. A value the matching entries disagree on
    (several replicas) is "" — pass `Mesh(..., locality=...)` then."""
    mine = [
        r.endpoint
        for r in config.resources
        if isinstance(r, WorkloadEntry)
        and r.meta.namespace == namespace
        and labels
        and all(r.endpoint.labels.get(k) == v for k, v in labels.items())
    ]
    localities = {e.locality for e in mine}
    addresses = {e.address for e in mine}
    return (
        localities.pop() if len(localities) == 1 else "",
        addresses.pop() if len(addresses) == 1 else "",
    )


def _cluster(
    name: str,
    host: str,
    number: int,
    subset: str | None,
    tp: TrafficPolicy,
    specs: tuple[EndpointSpec, ...],
    locality: str,
    labels: Mapping[str, str],
    sans: tuple[str, ...] = (),
) -> ClusterSpec:
    """One cluster: balancer, limits and the endpoints' locality priorities from `tp`."""
    lbs = tp.load_balancer or LoadBalancerSettings()
    hash_ = lbs.consistent_hash
    lb = hash_.algorithm if hash_ is not None else (lbs.simple or "LEAST_REQUEST")
    prios, weights = plan_localities(
        locality, labels, specs, lbs.locality_lb_setting, tp.outlier_detection is not None
    )
    if weights is not None:  # `distribute` leaves unnamed localities without traffic (Istio)
        specs = tuple(e for e in specs if weights.get(e.locality, 0) > 0)
    elif any(prios):
        specs = tuple(replace(e, priority=p) for e, p in zip(specs, prios, strict=True))
    return ClusterSpec(
        name=name,
        host=host,
        port=number,
        subset=subset,
        lb=lb,
        outlier=tp.outlier_detection,
        endpoints=specs,
        connection_pool=tp.connection_pool,
        hash=hash_,
        retry_budget=tp.retry_budget or RetryBudget(),
        locality_weights=weights,
        tls=tp.tls,
        subject_alt_names=(tp.tls.subject_alt_names if tp.tls else ()) or sans,
    )


def _endpoint_port(ep: WorkloadEndpoint, port: ServicePort) -> int:
    return ep.ports.get(port.name) or port.target_port or port.number


def compile_snapshot(
    config: ConfigSet,
    namespace: str,
    source_labels: Mapping[str, str] | None = None,
    version: str | None = None,
    locality: str | None = None,
    trust_domain: str = "cluster.local",
) -> Snapshot:
    """Build a snapshot of `config` as seen by a workload in `namespace` with `source_labels`
    and `locality` (`region/zone/subzone`; None: from its own WorkloadEntry, if any)."""
    labels = dict(source_labels or {})
    entries = [r for r in config.resources if isinstance(r, ServiceEntry)]
    workloads = [r for r in config.resources if isinstance(r, WorkloadEntry)]
    rules = [r for r in config.resources if isinstance(r, DestinationRule)]
    vss = [r for r in config.resources if isinstance(r, VirtualService)]

    services: dict[str, Service] = {}
    service_endpoints: dict[str, list[WorkloadEndpoint]] = {}
    resolution: dict[str, str] = {}
    written: dict[str, str] = {}  # canonical host -> the name as the ServiceEntry wrote it
    owner_ns: dict[str, str] = {}  # canonical host -> the namespace of its ServiceEntry
    sans: dict[str, tuple[str, ...]] = {}
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
            owner_ns[host] = se.meta.namespace
            sans[host] = se.subject_alt_names

    drs: dict[str, DestinationRule] = {}
    for dr in rules:
        drs.setdefault(canonical_host(dr.host, dr.meta.namespace), dr)

    own_locality, own_address = workload_identity(config, namespace, labels)
    if locality is None:
        locality = own_locality
    clusters: dict[str, ClusterSpec] = {}
    for host, svc in services.items():
        dest_rule = drs.get(host)
        rule_policy = dest_rule.traffic_policy if dest_rule else None
        subsets: list[tuple[str | None, dict[str, str], TrafficPolicy | None]] = [(None, {}, None)]
        if dest_rule:
            subsets += [(s.name, s.labels, s.traffic_policy) for s in dest_rule.subsets]
        for number, sport in svc.ports.items():
            for subset, sel, subset_policy in subsets:
                eps = service_endpoints[host]
                specs = tuple(
                    EndpointSpec(
                        address=e.address,
                        port=_endpoint_port(e, sport),
                        labels=e.labels,
                        weight=e.weight,
                        locality=e.locality,
                        service_account=e.service_account,
                        identity=(
                            f"spiffe://{trust_domain}/ns/{owner_ns[host]}/sa/{e.service_account}"
                            if e.service_account
                            else ""
                        ),
                    )
                    for e in eps
                    if all(e.labels.get(k) == v for k, v in sel.items())
                )
                if not eps and resolution[host] in ("DNS", "NONE", "DNS_ROUND_ROBIN"):
                    # no endpoints: the host itself as written, resolved by DNS at connect time
                    specs = (EndpointSpec(address=written[host], port=sport.target_port or number),)
                tp = effective_policy(rule_policy, subset_policy, number)
                name = cluster_name(host, number, subset)
                clusters[name] = _cluster(
                    name, host, number, subset, tp, specs, locality, labels, sans[host]
                )

    vhosts: dict[str, VirtualHost] = {}
    for vs in vss:
        table: list[tuple[Predicate, RouteEntry]] = []
        for i, rule in enumerate(vs.http):
            table += _rule_entries(vs, i, rule, labels, namespace, clusters, services)
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
    return Snapshot(
        version,
        namespace,
        services,
        vhosts,
        clusters,
        source_locality=locality,
        source_address=own_address,
        egress=_egress(config, namespace, labels),
        has_faults=any(e.fault is not None for v in vhosts.values() for _, e in v.table),
        has_mirrors=any(e.mirrors for v in vhosts.values() for _, e in v.table),
    )


def _choice(namespace: str, dest: Destination, headers: Headers | None) -> DestinationChoice:
    request = headers.request if headers is not None else None
    response = headers.response if headers is not None else None
    return DestinationChoice(
        canonical_host(dest.host, namespace),
        dest.subset,
        dest.port,
        request_ops=compile_header_ops(request),
        response_ops=compile_header_ops(response),
        authority=authority_of(request),
    )


def _rule_entries(
    vs: VirtualService,
    index: int,
    rule: HTTPRoute,
    labels: Mapping[str, str],
    namespace: str,
    clusters: dict[str, ClusterSpec],
    services: Mapping[str, Service],
) -> list[tuple[Predicate, RouteEntry]]:
    """The table entries of one `http[]` rule for this workload: one, or one per match block
    when the rule rewrites a matched prefix (the block that matched decides what is replaced,
    as Envoy has one route per block); none when no block can match this workload."""
    pred = compile_rule_matches(rule.match, labels, namespace)
    if pred is None:
        return []
    ns = vs.meta.namespace
    choices = []
    weights = []
    for rd in rule.route:
        choice = _choice(ns, rd.destination, rd.headers)
        choices.append(choice)
        weights.append(100 if rd.weight is None and len(rule.route) == 1 else rd.weight or 0)
        _ensure_external_cluster(clusters, choice.host, choice.port, services)
    mirrors = []
    for mp in rule.mirrors:
        choice = _choice(ns, mp.destination, None)
        _ensure_external_cluster(clusters, choice.host, choice.port, services)
        share = millionths(mp.percentage)
        if share:
            mirrors.append(MirrorTarget(choice, share))
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
    request = rule.headers.request if rule.headers is not None else None
    response = rule.headers.response if rule.headers is not None else None
    request_ops = compile_header_ops(request)
    response_ops = compile_header_ops(response)
    authority = (rule.rewrite.authority if rule.rewrite else None) or authority_of(request)
    direct = rule.direct_response
    entry = RouteEntry(
        f"{vs.meta.ref} http[{index}]" + (f" ({rule.name})" if rule.name else ""),
        tuple(choices),
        tuple(cumulative),
        run,
        rule.timeout,
        retry,
        fault=FaultPolicy.from_istio(rule.fault) if rule.fault is not None else None,
        mirrors=tuple(mirrors),
        redirect=rule.redirect,
        direct=direct_reply(direct.status, direct.body) if direct is not None else None,
        authority=authority,
        request_ops=request_ops,
        response_ops=response_ops,
        transforms=bool(
            rule.rewrite is not None
            or request_ops
            or authority
            or any(c.request_ops or c.authority for c in choices)
        ),
        response_transforms=bool(response_ops or any(c.response_ops for c in choices)),
    )
    rewrite = rule.rewrite
    if rewrite is not None and rewrite.uri and rule.match:
        out = []
        for m in rule.match:
            p = compile_match(m, labels, namespace)
            if p is not None:
                out.append((p, replace(entry, path_rewrite=compile_path_rewrite(rewrite, m))))
        return out
    return [(pred, replace(entry, path_rewrite=compile_path_rewrite(rewrite, None)))]


def _egress(config: ConfigSet, namespace: str, labels: Mapping[str, str]) -> EgressPolicy | None:
    """The egress policy of the Sidecar that applies to this workload, if one does."""
    sidecars = [r for r in config.resources if isinstance(r, Sidecar)]
    sidecar = select_sidecar(sidecars, namespace, labels)
    if sidecar is None:
        return None
    owners: dict[str, str] = {}  # canonical host -> the namespace that declared it
    for r in config.resources:
        if isinstance(r, (ServiceEntry, VirtualService)):
            for h in r.hosts:
                owners.setdefault(canonical_host(h, r.meta.namespace), r.meta.namespace)
    return compile_egress(sidecar, owners)


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
