"""Typed, validated Istio resources: what the rest of pymesh reads after `pymesh.config` loads YAML.

Values here are immutable and already checked (durations parsed to seconds, regexes compiled,
enums upper-cased as Istio spells them). Loading, schema validation and cross-resource analysis
live beside this module; the runtime compiles these into a `Snapshot` (`pymesh.snapshot`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class Destination:
    """`route[].destination`: host as written (resolved later), optional subset and port."""

    host: str
    subset: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class RouteDestination:
    """`http[].route[]`: a destination and its weight (None when the route has one destination)."""

    destination: Destination
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class HTTPRetry:
    """`http[].retries`. retry_on is the raw comma list split and trimmed, in order."""

    attempts: int
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    """One `http[]` rule of a VirtualService."""

    name: str = ""
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[RouteDestination, ...] = ()
    timeout: float | None = None
    retries: HTTPRetry | None = None


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


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """`trafficPolicy`; None means "not set here" so subset policies can override field by field."""

    load_balancer: LbSimple | None = None
    outlier_detection: OutlierDetection | None = None


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
class RawResource:
    """A validated resource pymesh parses now but uses in a later release
    (Sidecar, PeerAuthentication, AuthorizationPolicy): its meta and its spec as plain data."""

    meta: Meta
    spec: dict[str, object]


Resource = VirtualService | DestinationRule | ServiceEntry | WorkloadEntry | RawResource


@dataclass(frozen=True, slots=True)
class ConfigSet:
    """Every resource of one load, in file order."""

    resources: tuple[Resource, ...] = ()

    def of(self, kind: type[Resource]) -> list[Resource]:
        """The resources of one Python type, in order."""
        return [r for r in self.resources if isinstance(r, kind)]
