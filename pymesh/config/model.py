"""Typed, validated Istio resources: what the rest of pymesh reads after `pymesh.config` loads YAML.

Values here are immutable and already checked (durations parsed to seconds, regexes compiled,
enums upper-cased as Istio spells them). Loading, schema validation and cross-resource analysis
live beside this module; the runtime compiles these into a `Snapshot` (`pymesh.snapshot`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

MatchKind = Literal["exact", "prefix", "regex"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource came from: file name and 1-based line of its document start."""

    file: str
    line: int


@dataclass(frozen=True, slots=True)
class Meta:
    """A resource's identity: kind, apiVersion, namespace, name, labels and where it was read."""

    kind: str
    api_version: str
    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    source: Source | None = None

    @property
    def ref(self) -> str:
        """`Kind namespace/name`, as error messages name a resource."""
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Istio StringMatch: exactly one of exact / prefix / regex (regex is compiled, full match)."""

    kind: MatchKind
    value: str
    regex: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class HTTPMatchRequest:
    """One `http[].match[]` block: every set condition must hold (AND)."""

    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    # header names lower-cased; a StringMatch of None means "header present" (Istio's `{}`)
    headers: dict[str, StringMatch | None] = field(default_factory=dict)
    without_headers: dict[str, StringMatch | None] = field(default_factory=dict)
    query_params: dict[str, StringMatch | None] = field(default_factory=dict)
    port: int | None = None
    source_labels: dict[str, str] = field(default_factory=dict)
    ignore_uri_case: bool = False
    # the calling workload's own namespace must be this one (resolved when routes compile)
    source_namespace: str = ""


@dataclass(frozen=True, slots=True)
class Destination:
    """`route[].destination`: host as written (resolved later), optional subset and port."""

    host: str
    subset: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    """`headers.request` / `headers.response`: `set` replaces, `add` appends, `remove` drops.

    Names are lower-cased; values are literal (Envoy's `%...%` operators are refused, and `%%`
    is already turned into `%`)."""

    set: dict[str, str] = field(default_factory=dict)
    add: dict[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Headers:
    """`http[].headers` or `http[].route[].headers`: operations on the request sent upstream and
    on the response handed back to the caller."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


@dataclass(frozen=True, slots=True)
class RouteDestination:
    """`http[].route[]`: a destination, its weight (None when the route has one destination),
    and header operations that apply when this destination is chosen."""

    destination: Destination
    weight: int | None = None
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class HTTPRetry:
    """`http[].retries`. retry_on is the raw comma list split and trimmed, in order."""

    attempts: int
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """`fault.delay`: wait `fixed_delay` seconds before sending, for `percentage` % of requests
    (None: unset — as in Istio, no request is delayed; the deprecated `percent` is folded in)."""

    fixed_delay: float
    percentage: float | None = None


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """`fault.abort`: answer `http_status` (or gRPC status `grpc_status`, a code name such as
    `UNAVAILABLE`) without calling the destination, for `percentage` % of requests (None:
    unset — as in Istio, no request is aborted)."""

    http_status: int | None = None
    grpc_status: str | None = None
    percentage: float | None = None


@dataclass(frozen=True, slots=True)
class HTTPFaultInjection:
    """`http[].fault`: a delay, an abort, or both (decided independently)."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True, slots=True)
class HTTPMirrorPolicy:
    """One mirror (`mirror` + `mirrorPercentage`, or an item of `mirrors`): where the copy
    goes and for which share of requests (percentage 0..100; unset means 100)."""

    destination: Destination
    percentage: float = 100.0


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    """`rewrite.uriRegexRewrite`: every match of `match` in the path is replaced by `rewrite`
    (RE2 substitution syntax: `\\1` refers to a capture group)."""

    match: str
    rewrite: str
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class HTTPRewrite:
    """`http[].rewrite`: the path (or the matched prefix), or a regex rewrite of it, and the
    authority (Host) sent upstream."""

    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


DerivePort = Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"]


@dataclass(frozen=True, slots=True)
class HTTPRedirect:
    """`http[].redirect`: answer with a redirect (`redirect_code`, default 301) instead of
    calling a destination. Unset parts of the new URL come from the request."""

    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: DerivePort | None = None
    scheme: str | None = None
    redirect_code: int = 301


@dataclass(frozen=True, slots=True)
class HTTPDirectResponse:
    """`http[].directResponse`: answer `status` with `body` (a string's UTF-8 bytes, or decoded
    base64 `bytes`) instead of calling a destination."""

    status: int
    body: bytes | None = None


UnmatchedPreflights = Literal["UNSPECIFIED", "FORWARD", "IGNORE"]


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """`http[].corsPolicy`: enforced by the inbound side for requests to this VirtualService's
    hosts (`pymesh.policy.cors`; preflights answered by the mesh, headers added to responses).

    The deprecated `allowOrigin` strings are folded into `allow_origins` as exact matches."""

    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: UnmatchedPreflights = "UNSPECIFIED"


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    """One `http[]` rule of a VirtualService."""

    name: str = ""
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[RouteDestination, ...] = ()
    timeout: float | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirrors: tuple[HTTPMirrorPolicy, ...] = ()
    rewrite: HTTPRewrite | None = None
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    headers: Headers | None = None
    cors_policy: CorsPolicy | None = None


@dataclass(frozen=True, slots=True)
class VirtualService:
    """networking.istio.io VirtualService (the parts pymesh implements)."""

    meta: Meta
    hosts: tuple[str, ...]
    http: tuple[HTTPRoute, ...] = ()


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """`trafficPolicy.outlierDetection`; durations in seconds, Istio's defaults filled in."""

    consecutive_5xx_errors: int | None = 5
    consecutive_gateway_errors: int | None = None
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0


LbSimple = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "UNSPECIFIED"]
HashKeyKind = Literal["header", "cookie", "source_ip", "query"]


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    """`loadBalancer.consistentHash`: what the hash key is and which table maps it to endpoints.

    `key` names the source (`header` / `cookie` / `query` use `name`; `source_ip` hashes the
    caller's own address). `algorithm` is `RING_HASH` (Ketama, `minimum_ring_size` entries) or
    `MAGLEV` (`table_size`, a prime). A cookie with `cookie_ttl` set (0 = a session cookie) is
    generated when the request lacks it, as Envoy does.
    """

    key: HashKeyKind
    name: str = ""
    cookie_path: str = ""
    cookie_ttl: float | None = None
    cookie_attributes: tuple[tuple[str, str], ...] = ()
    algorithm: Literal["RING_HASH", "MAGLEV"] = "RING_HASH"
    minimum_ring_size: int = 1024
    table_size: int = 65537


@dataclass(frozen=True, slots=True)
class LocalityDistribute:
    """`localityLbSetting.distribute[]`: from a client locality pattern, weights per locality
    pattern (`region/zone/subzone`, a trailing `*` matches the rest)."""

    from_: str
    to: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class LocalityLbSetting:
    """`loadBalancer.localityLbSetting`. `failover` pairs are regions (from, to);
    `failover_priority` are label keys or `key=value` pairs, in order; `enabled` None = unset."""

    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[tuple[str, str], ...] = ()
    failover_priority: tuple[str, ...] = ()
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class LoadBalancerSettings:
    """`trafficPolicy.loadBalancer`: a simple policy or a consistent hash, plus locality."""

    simple: LbSimple | None = None
    consistent_hash: ConsistentHash | None = None
    locality_lb_setting: LocalityLbSetting | None = None


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    """`connectionPool.tcp.tcpKeepalive` (durations in seconds; None = the OS default)."""

    probes: int | None = None
    time: float | None = None
    interval: float | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPoolSettings:
    """`trafficPolicy.connectionPool`, `tcp.*` and `http.*` flattened, durations in seconds.

    None means "not set": Istio's default applies — no limit for the counts, a 10 s connect
    timeout (`DEFAULT_CONNECT_TIMEOUT`), a 1 h idle timeout (`DEFAULT_IDLE_TIMEOUT`), unlimited
    requests per connection. Istio treats a count of 0 as unset; so does pymesh (None here).
    Cluster-wide limits (Envoy's circuit breakers): `max_connections` (pymesh: concurrent
    HTTP/1.1 requests, each needs its own connection), `http1_max_pending_requests`,
    `http2_max_requests` (all requests, any protocol), `max_retries` (concurrent retries).
    Per-connection knobs the endpoint pool reads: `connect_timeout`, `idle_timeout`,
    `max_requests_per_connection`, `max_connection_duration`, `tcp_keepalive`.
    """

    DEFAULT_CONNECT_TIMEOUT: ClassVar[float] = 10.0
    DEFAULT_IDLE_TIMEOUT: ClassVar[float] = 3600.0

    # tcp
    max_connections: int | None = None
    connect_timeout: float | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: float | None = None
    tcp_idle_timeout: float | None = None
    # http
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE"] = "DEFAULT"
    use_client_protocol: bool = False


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """`trafficPolicy.retryBudget`: concurrent retries allowed are
    max(`min_retry_concurrency`, `percent` % of active requests) — Envoy's retry budget.
    The defaults (20 %, 3) apply to every cluster, set or not (DESIGN.md)."""

    percent: float = 20.0
    min_retry_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class ClientTLSSettings:
    """`trafficPolicy.tls`: how a client speaks TLS to the destination.

    ISTIO_MUTUAL: the mesh's own mTLS (the workload's SVID; the server's SPIFFE ID checked);
    MUTUAL / SIMPLE: TLS to a destination outside the mesh with the given files; DISABLE:
    plaintext. Paths are files on this machine (Kubernetes secrets mean nothing here)."""

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] = "DISABLE"
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class PortTrafficPolicy:
    """`trafficPolicy.portLevelSettings[]`: replaces the policy's loadBalancer, connectionPool
    and outlierDetection for one port — wholesale, unset ones fall back to defaults (Istio)."""

    port: int
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """`trafficPolicy`; None means "not set here" so subset policies can override field by field."""

    load_balancer: LoadBalancerSettings | None = None
    outlier_detection: OutlierDetection | None = None
    connection_pool: ConnectionPoolSettings | None = None
    retry_budget: RetryBudget | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()
    tls: ClientTLSSettings | None = None


@dataclass(frozen=True, slots=True)
class Subset:
    """`subsets[]`: a name, endpoint labels, and an optional policy that overrides the rule's."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True, slots=True)
class DestinationRule:
    """networking.istio.io DestinationRule (the parts pymesh implements)."""

    meta: Meta
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()


@dataclass(frozen=True, slots=True)
class ServicePort:
    """`ServiceEntry.ports[]`: the port callers dial, its name, protocol and target port."""

    number: int
    name: str
    protocol: str = "HTTP"
    target_port: int | None = None


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    """A ServiceEntry endpoint or a WorkloadEntry: where a workload listens.

    `ports` maps a service port *name* to the port this workload listens on.
    """

    address: str
    ports: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    locality: str = ""
    weight: int = 1
    service_account: str = ""
    network: str = ""


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """networking.istio.io ServiceEntry (the parts pymesh implements)."""

    meta: Meta
    hosts: tuple[str, ...]
    ports: tuple[ServicePort, ...] = ()
    resolution: Literal["STATIC", "DNS", "NONE", "DNS_ROUND_ROBIN"] = "NONE"
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    endpoints: tuple[WorkloadEndpoint, ...] = ()
    # labels of WorkloadEntries (same namespace) this entry selects, when set
    workload_selector: dict[str, str] | None = None
    # SPIFFE identities the workloads of this entry may present (checked once mTLS lands)
    subject_alt_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    """networking.istio.io WorkloadEntry: one workload outside Kubernetes."""

    meta: Meta
    endpoint: WorkloadEndpoint


@dataclass(frozen=True, slots=True)
class SidecarPort:
    """`egress[].port` / `ingress[].port` of a Sidecar."""

    number: int
    protocol: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class EgressListener:
    """`Sidecar.egress[]`: the hosts (`namespace/dnsName`, as written) the workload may call,
    on `port` (None: every port no other listener names)."""

    hosts: tuple[str, ...]
    port: SidecarPort | None = None
    bind: str = ""


OutboundMode = Literal["REGISTRY_ONLY", "ALLOW_ANY"]


@dataclass(frozen=True, slots=True)
class Sidecar:
    """networking.istio.io Sidecar: which workloads it applies to (`workload_selector`; None
    makes it its namespace's default), what they may call (`egress`; empty means every
    service), and what happens to hosts outside the registry (`outbound_mode`; None: unset,
    the mesh default ALLOW_ANY). `ingress` and `inbound_connection_pool` are kept as
    validated plain data for the inbound side."""

    meta: Meta
    workload_selector: dict[str, str] | None = None
    egress: tuple[EgressListener, ...] = ()
    outbound_mode: OutboundMode | None = None
    ingress: tuple[dict[str, object], ...] = ()
    inbound_connection_pool: dict[str, object] | None = None


MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    """security.istio.io PeerAuthentication: the mTLS mode a workload's server requires.

    `selector` is `selector.matchLabels` (None, or no labels: the whole namespace — the whole
    mesh in the root namespace). `port_level_mtls` maps a port the workload listens on to its
    mode (only with a selector, as Istio requires). `UNSET` inherits (see
    `pymesh.policy.peerauthn`)."""

    meta: Meta
    selector: dict[str, str] | None = None
    mode: MtlsMode = "UNSET"
    port_level_mtls: dict[int, MtlsMode] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuleSource:
    """`rules[].from[].source`: fields AND-ed, values of one field OR-ed, `not_*` negated.

    Principals are Istio's form (`cluster.local/ns/default/sa/sleep`, no `spiffe://`);
    service accounts are `namespace/name`; IP fields are CIDR blocks (a bare IP is a /32 or
    /128). String values use Istio's matching: exact, `prefix*`, `*suffix`, `*` (non-empty)."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleOperation:
    """`rules[].to[].operation`: fields AND-ed, values of one field OR-ed, `not_*` negated.

    Hosts are lower-cased, without a port (`host:*` is read as `host`); ports are strings of
    port numbers; methods are case-sensitive; paths start with `/` or `*`."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleCondition:
    """`rules[].when[]`: the attribute `key` must match one of `values` (when set) and none of
    `not_values`. Keys: `request.headers[<name>]` (name lower-cased), `source.ip`,
    `remote.ip`, `source.namespace`, `source.principal`, `source.serviceAccount`,
    `destination.ip`, `destination.port`, `connection.sni`."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationRule:
    """`rules[]`: matches when one of `sources` (or none given), one of `operations` (or none
    given) and every condition match. An empty rule matches every request."""

    sources: tuple[RuleSource, ...] = ()
    operations: tuple[RuleOperation, ...] = ()
    conditions: tuple[RuleCondition, ...] = ()


AuthzAction = Literal["ALLOW", "DENY", "AUDIT"]


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    """security.istio.io AuthorizationPolicy (ALLOW, DENY, AUDIT).

    `selector` is `selector.matchLabels` (None, or no labels: every workload of the namespace —
    of the mesh in the root namespace). No `rules` never matches: an ALLOW policy without rules
    (`spec: {}`) denies every request to the workloads it selects. Evaluation lives in
    `pymesh.policy.authz`."""

    meta: Meta
    action: AuthzAction = "ALLOW"
    selector: dict[str, str] | None = None
    rules: tuple[AuthorizationRule, ...] = ()


@dataclass(frozen=True, slots=True)
class RawResource:
    """A validated resource pymesh parses now but uses in a later release
    (none today: every kind pymesh reads is typed): its meta and its spec as plain data."""

    meta: Meta
    spec: dict[str, object]


Resource = (
    VirtualService
    | DestinationRule
    | ServiceEntry
    | WorkloadEntry
    | Sidecar
    | PeerAuthentication
    | AuthorizationPolicy
    | RawResource
)


@dataclass(frozen=True, slots=True)
class ConfigSet:
    """Every resource of one load, in file order."""

    resources: tuple[Resource, ...] = ()

    def of(self, kind: type[Resource]) -> list[Resource]:
        """The resources of one Python type, in order."""
        return [r for r in self.resources if isinstance(r, kind)]
