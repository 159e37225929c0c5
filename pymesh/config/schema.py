"""The field tables: every field Istio defines for the kinds pymesh reads, and what pymesh does
with it.

Written from Istio's API reference (istio/api protos and the CRD OpenAPI schemas). Each field
has a type and a status:

- `SUPPORTED` — parsed, validated and (for the typed kinds) used;
- `OFF_CLUSTER` — an Istio field that means nothing off Kubernetes (`exportTo`, most metadata):
  accepted, reported as an info finding, ignored;
- `NOT_YET` — an Istio field pymesh does not implement yet: an error, never silently ignored.

A field missing from its message's table is an unknown field (an error with a did-you-mean).
`check` names a value check in `pymesh.config.validate`; `oneof` groups fields of which at most
one may be set; `alias_of` marks another spelling of a field (e.g. the proto name `mirror_percent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal


class Status(Enum):
    """What pymesh does with an Istio field."""

    SUPPORTED = "supported"
    OFF_CLUSTER = "off-cluster"
    NOT_YET = "not-yet"


ScalarName = Literal["string", "bool", "int32", "uint32", "uint64", "double", "duration", "any"]


@dataclass(frozen=True, slots=True)
class Scalar:
    """A scalar: string, bool, integer (with its protobuf width), double, duration or any."""

    name: ScalarName


@dataclass(frozen=True, slots=True)
class EnumT:
    """An enum spelled as Istio spells it (upper case)."""

    values: tuple[str, ...]
    not_yet: frozenset[str] = frozenset()
    # deprecated value -> the value it means
    deprecated: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """A nested message, by name in `MESSAGES`."""

    name: str


@dataclass(frozen=True, slots=True)
class ListOf:
    """A YAML list of `item`."""

    item: FieldType


@dataclass(frozen=True, slots=True)
class MapOf:
    """A YAML mapping from keys (strings, or port numbers) to `value`."""

    value: FieldType
    key: Literal["string", "port", "header", "label"] = "string"


FieldType = Scalar | EnumT | Message | ListOf | MapOf


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message: type, status, and how to check it."""

    type: FieldType
    status: Status = Status.SUPPORTED
    required: bool = False
    note: str = ""
    deprecated: str = ""
    alias_of: str = ""
    check: str = ""
    oneof: str = ""


S = Status.SUPPORTED
OFF = Status.OFF_CLUSTER
NY = Status.NOT_YET

STRING = Scalar("string")
BOOL = Scalar("bool")
INT32 = Scalar("int32")
UINT32 = Scalar("uint32")
UINT64 = Scalar("uint64")
DOUBLE = Scalar("double")
DURATION = Scalar("duration")
ANY = Scalar("any")
STRINGS = ListOf(STRING)
LABELS = MapOf(STRING, key="label")


def sup(
    t: FieldType,
    *,
    required: bool = False,
    check: str = "",
    oneof: str = "",
    deprecated: str = "",
    alias_of: str = "",
) -> Field:
    """A SUPPORTED field."""
    return Field(
        t, S, required=required, check=check, oneof=oneof, deprecated=deprecated, alias_of=alias_of
    )


def off(t: FieldType = ANY, note: str = "") -> Field:
    """An OFF_CLUSTER field: accepted and ignored, reported as info."""
    return Field(t, OFF, note=note)


def ny(note: str = "", *, deprecated: str = "", alias_of: str = "", oneof: str = "") -> Field:
    """A NOT_YET field: an Istio field pymesh refuses until it implements it."""
    return Field(ANY, NY, note=note, deprecated=deprecated, alias_of=alias_of, oneof=oneof)


EXPORT_TO_NOTE = "namespace visibility is a Kubernetes feature; pymesh sees every namespace"

# ---------------------------------------------------------------------------------------------
# Resource envelope and metadata

RESOURCE: dict[str, Field] = {
    "apiVersion": sup(STRING, required=True),
    "kind": sup(STRING, required=True),
    "metadata": sup(Message("ObjectMeta"), required=True),
    "spec": sup(ANY),
    "status": off(note="the Kubernetes control plane writes it"),
}

_K8S_META = "Kubernetes object metadata means nothing off-cluster"

MESSAGES: dict[str, dict[str, Field]] = {
    "ObjectMeta": {
        "name": sup(STRING, required=True, check="resource_name"),
        "namespace": sup(STRING, check="dns_label"),
        "labels": sup(LABELS),
        "annotations": off(note=_K8S_META),
        "uid": off(note=_K8S_META),
        "resourceVersion": off(note=_K8S_META),
        "generation": off(note=_K8S_META),
        "creationTimestamp": off(note=_K8S_META),
        "deletionTimestamp": off(note=_K8S_META),
        "deletionGracePeriodSeconds": off(note=_K8S_META),
        "managedFields": off(note=_K8S_META),
        "ownerReferences": off(note=_K8S_META),
        "finalizers": off(note=_K8S_META),
        "generateName": off(note=_K8S_META),
        "selfLink": off(note=_K8S_META),
    },
}

# ---------------------------------------------------------------------------------------------
# networking.istio.io VirtualService

MESSAGES["VirtualService"] = {
    "hosts": sup(STRINGS, check="vs_host"),
    "gateways": sup(STRINGS, check="gateway"),
    "http": sup(ListOf(Message("HTTPRoute"))),
    "tls": ny("TLS routes"),
    "tcp": ny("TCP routes"),
    "exportTo": off(STRINGS, EXPORT_TO_NOTE),
}
MESSAGES["HTTPRoute"] = {
    "name": sup(STRING),
    "match": sup(ListOf(Message("HTTPMatchRequest"))),
    "route": sup(ListOf(Message("HTTPRouteDestination"))),
    "redirect": sup(Message("HTTPRedirect")),
    "directResponse": sup(Message("HTTPDirectResponse")),
    "delegate": ny("VirtualService delegation"),
    "rewrite": sup(Message("HTTPRewrite")),
    "timeout": sup(DURATION, check="min_1ms"),
    "retries": sup(Message("HTTPRetry")),
    "fault": sup(Message("HTTPFaultInjection")),
    "mirror": sup(Message("Destination")),
    "mirrors": sup(ListOf(Message("HTTPMirrorPolicy"))),
    "mirrorPercent": sup(
        UINT32, check="percent", oneof="mirrorPercent", deprecated="use mirrorPercentage"
    ),
    "mirror_percent": sup(
        UINT32,
        check="percent",
        oneof="mirrorPercent",
        alias_of="mirrorPercent",
        deprecated="use mirrorPercentage",
    ),
    "mirrorPercentage": sup(Message("Percent"), oneof="mirrorPercent"),
    "corsPolicy": sup(Message("CorsPolicy")),
    "headers": sup(Message("Headers")),
}
MESSAGES["Percent"] = {
    "value": sup(DOUBLE, check="percent_double"),
}
MESSAGES["HTTPRedirect"] = {
    "uri": sup(STRING, check="uri_path"),
    "authority": sup(STRING, check="authority"),
    "port": sup(UINT32, check="port", oneof="redirectPort"),
    "derivePort": sup(EnumT(("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT")), oneof="redirectPort"),
    "scheme": sup(STRING, check="redirect_scheme"),
    "redirectCode": sup(UINT32, check="redirect_code"),
}
MESSAGES["HTTPDirectResponse"] = {
    "status": sup(UINT32, required=True, check="http_status"),
    "body": sup(Message("HTTPBody")),
}
MESSAGES["HTTPBody"] = {
    "string": sup(STRING, oneof="specifier"),
    "bytes": sup(STRING, oneof="specifier", check="base64"),
}
MESSAGES["HTTPRewrite"] = {
    "uri": sup(STRING, check="uri_path"),
    "authority": sup(STRING, check="authority"),
    "uriRegexRewrite": sup(Message("RegexRewrite")),
}
MESSAGES["RegexRewrite"] = {
    "match": sup(STRING, required=True, check="regex"),
    "rewrite": sup(STRING, required=True),
}
MESSAGES["HTTPFaultInjection"] = {
    "delay": sup(Message("FaultDelay")),
    "abort": sup(Message("FaultAbort")),
}
MESSAGES["FaultDelay"] = {
    "fixedDelay": sup(DURATION, check="min_1ms"),
    "exponentialDelay": ny("exponential delays (Istio does not support them either)"),
    "percentage": sup(Message("Percent"), check="fault_percentage", oneof="percentage"),
    "percent": sup(INT32, check="percent", oneof="percentage", deprecated="use percentage"),
}
MESSAGES["FaultAbort"] = {
    "httpStatus": sup(INT32, check="http_status", oneof="errorType"),
    "grpcStatus": sup(STRING, check="grpc_status", oneof="errorType"),
    "http2Error": ny("HTTP/2 abort faults (Istio refuses them too)", oneof="errorType"),
    "percentage": sup(Message("Percent"), check="fault_percentage"),
}
MESSAGES["HTTPMirrorPolicy"] = {
    "destination": sup(Message("Destination"), required=True),
    "percentage": sup(Message("Percent")),
}
MESSAGES["Headers"] = {
    "request": sup(Message("RequestHeaderOperations")),
    "response": sup(Message("ResponseHeaderOperations")),
}
# names are checked by the messages' POST rules (the request side may name the authority)
MESSAGES["RequestHeaderOperations"] = {
    "set": sup(MapOf(STRING)),
    "add": sup(MapOf(STRING)),
    "remove": sup(STRINGS),
}
MESSAGES["ResponseHeaderOperations"] = dict(MESSAGES["RequestHeaderOperations"])
MESSAGES["CorsPolicy"] = {
    "allowOrigin": sup(STRINGS, deprecated="use allowOrigins"),
    "allowOrigins": sup(ListOf(Message("StringMatch")), check="cors_origin"),
    "allowMethods": sup(STRINGS, check="cors_method"),
    "allowHeaders": sup(STRINGS, check="header_name"),
    "exposeHeaders": sup(STRINGS, check="header_name"),
    "maxAge": sup(DURATION, check="whole_seconds"),
    "allowCredentials": sup(BOOL),
    "unmatchedPreflights": sup(EnumT(("UNSPECIFIED", "FORWARD", "IGNORE"))),
}
MESSAGES["HTTPMatchRequest"] = {
    "name": sup(STRING),
    "uri": sup(Message("StringMatch")),
    "scheme": sup(Message("StringMatch")),
    "method": sup(Message("StringMatch")),
    "authority": sup(Message("StringMatch")),
    "headers": sup(MapOf(Message("PresenceStringMatch"), key="header")),
    "withoutHeaders": sup(MapOf(Message("PresenceStringMatch"), key="header")),
    "queryParams": sup(MapOf(Message("PresenceStringMatch"))),
    "port": sup(UINT32, check="port"),
    "sourceLabels": sup(LABELS),
    "gateways": sup(STRINGS, check="gateway"),
    "ignoreUriCase": sup(BOOL),
    "sourceNamespace": sup(STRING, check="dns_label"),
    "statPrefix": ny("per-match stat prefixes"),
}
_STRING_MATCH = {
    "exact": sup(STRING, oneof="matchType"),
    "prefix": sup(STRING, oneof="matchType"),
    "regex": sup(STRING, oneof="matchType", check="regex"),
}
MESSAGES["StringMatch"] = dict(_STRING_MATCH)
# the same message where `{}` means "present" (headers, withoutHeaders, queryParams)
MESSAGES["PresenceStringMatch"] = dict(_STRING_MATCH)
MESSAGES["HTTPRouteDestination"] = {
    "destination": sup(Message("Destination"), required=True),
    "weight": sup(INT32, check="weight"),
    "headers": sup(Message("Headers")),
}
MESSAGES["Destination"] = {
    "host": sup(STRING, required=True, check="dest_host"),
    "subset": sup(STRING, check="subset_name"),
    "port": sup(Message("PortSelector")),
}
MESSAGES["PortSelector"] = {
    "number": sup(UINT32, required=True, check="port"),
}
MESSAGES["HTTPRetry"] = {
    "attempts": sup(INT32, check="non_negative"),
    "perTryTimeout": sup(DURATION, check="min_1ms"),
    "retryOn": sup(STRING, check="retry_on"),
    "retryRemoteLocalities": ny("retryRemoteLocalities"),
    "retryIgnorePreviousHosts": ny("retryIgnorePreviousHosts"),
    "backoff": ny("a configurable retry back-off"),
}

# ---------------------------------------------------------------------------------------------
# networking.istio.io DestinationRule

MESSAGES["DestinationRule"] = {
    "host": sup(STRING, required=True, check="dr_host"),
    "trafficPolicy": sup(Message("TrafficPolicy")),
    "subsets": sup(ListOf(Message("Subset"))),
    "exportTo": off(STRINGS, EXPORT_TO_NOTE),
    "workloadSelector": ny("DestinationRule workload selectors"),
}
MESSAGES["TrafficPolicy"] = {
    "loadBalancer": sup(Message("LoadBalancerSettings")),
    "outlierDetection": sup(Message("OutlierDetection")),
    "connectionPool": sup(Message("DestinationConnectionPool")),
    "tls": sup(Message("ClientTLSSettings")),
    "portLevelSettings": sup(ListOf(Message("PortTrafficPolicy"))),
    "tunnel": ny("tunnel settings"),
    "proxyProtocol": ny("the PROXY protocol"),
    "retryBudget": sup(Message("RetryBudget")),
}
MESSAGES["PortTrafficPolicy"] = {
    "port": sup(Message("PortSelector"), required=True),
    "loadBalancer": sup(Message("LoadBalancerSettings")),
    "connectionPool": sup(Message("DestinationConnectionPool")),
    "outlierDetection": sup(Message("OutlierDetection")),
    "tls": sup(Message("ClientTLSSettings")),
}
MESSAGES["ClientTLSSettings"] = {
    "mode": sup(EnumT(("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"))),
    "clientCertificate": sup(STRING),
    "privateKey": sup(STRING),
    "caCertificates": sup(STRING),
    "credentialName": ny("Kubernetes secrets as TLS credentials (use the file fields)"),
    "subjectAltNames": sup(STRINGS),
    "sni": sup(STRING),
    "insecureSkipVerify": sup(BOOL),
    "caCrl": ny("certificate revocation lists"),
}
MESSAGES["RetryBudget"] = {
    "percent": sup(DOUBLE, check="percent_double"),
    "minRetryConcurrency": sup(UINT32),
    "budgetInterval": ny("retry budgets over an interval"),
}
# Istio's ConnectionPoolSettings as a DestinationRule uses it (the Sidecar's copy, read later,
# is `ConnectionPoolSettings` below): pymesh speaks HTTP/1.1 upstream, so HTTP/2-only knobs are
# not supported yet.
MESSAGES["DestinationConnectionPool"] = {
    "tcp": sup(Message("TCPSettings")),
    "http": sup(Message("DestinationHTTPSettings")),
}
MESSAGES["DestinationHTTPSettings"] = {
    "http1MaxPendingRequests": sup(INT32, check="non_negative"),
    "http2MaxRequests": sup(INT32, check="non_negative"),
    "maxRequestsPerConnection": sup(INT32, check="non_negative"),
    "maxRetries": sup(INT32, check="non_negative"),
    "idleTimeout": sup(DURATION, check="min_1ms"),
    "h2UpgradePolicy": sup(
        EnumT(("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"), not_yet=frozenset({"UPGRADE"}))
    ),
    "useClientProtocol": sup(BOOL),
    "maxConcurrentStreams": ny("HTTP/2 upstream connections"),
    "http2KeepAlive": ny("HTTP/2 upstream connections"),
}
MESSAGES["LoadBalancerSettings"] = {
    "simple": sup(
        EnumT(
            ("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"),
            deprecated=(("LEAST_CONN", "LEAST_REQUEST"),),
        ),
        oneof="lbPolicy",
    ),
    "consistentHash": sup(Message("ConsistentHashLB"), oneof="lbPolicy"),
    "localityLbSetting": sup(Message("LocalityLoadBalancerSetting")),
    "zoneAwareLbSetting": ny("zone-aware load balancing"),
    "warmupDurationSecs": ny("slow-start warm-up"),
    "warmup": ny("slow-start warm-up"),
}
MESSAGES["ConsistentHashLB"] = {
    "httpHeaderName": sup(STRING, oneof="hashKey", check="header_name"),
    "httpCookie": sup(Message("HTTPCookie"), oneof="hashKey"),
    "useSourceIp": sup(BOOL, oneof="hashKey"),
    "httpQueryParameterName": sup(STRING, oneof="hashKey"),
    "ringHash": sup(Message("RingHash"), oneof="hashAlgorithm"),
    "maglev": sup(Message("MagLev"), oneof="hashAlgorithm"),
    "minimumRingSize": sup(UINT64, deprecated="use ringHash.minimumRingSize"),
}
MESSAGES["RingHash"] = {
    "minimumRingSize": sup(UINT64, check="ring_size"),
}
MESSAGES["MagLev"] = {
    "tableSize": sup(UINT64, check="maglev_table_size"),
}
MESSAGES["HTTPCookie"] = {
    "name": sup(STRING, required=True, check="cookie_name"),
    "path": sup(STRING),
    "ttl": sup(DURATION),
    "attributes": sup(ListOf(Message("HTTPCookieAttribute"))),
}
MESSAGES["HTTPCookieAttribute"] = {
    "name": sup(STRING, required=True, check="cookie_name"),
    "value": sup(STRING),
}
MESSAGES["LocalityLoadBalancerSetting"] = {
    "distribute": sup(ListOf(Message("LocalityDistribute"))),
    "failover": sup(ListOf(Message("LocalityFailover"))),
    "failoverPriority": sup(STRINGS, check="failover_priority"),
    "enabled": sup(BOOL),
}
MESSAGES["LocalityDistribute"] = {
    "from": sup(STRING, check="locality_pattern"),
    "to": sup(MapOf(UINT32)),
}
MESSAGES["LocalityFailover"] = {
    "from": sup(STRING, check="failover_region"),
    "to": sup(STRING, check="failover_region"),
}
MESSAGES["OutlierDetection"] = {
    "consecutiveErrors": sup(
        INT32,
        check="non_negative",
        deprecated="use consecutiveGatewayErrors (it counts 502, 503, 504 and connect failures, "
        "as consecutiveErrors did)",
    ),
    "consecutive5xxErrors": sup(UINT32),
    "consecutiveGatewayErrors": sup(UINT32),
    "interval": sup(DURATION, check="min_1ms"),
    "baseEjectionTime": sup(DURATION, check="min_1ms"),
    "maxEjectionPercent": sup(INT32, check="percent"),
    "minHealthPercent": sup(INT32, check="percent"),
    "splitExternalLocalOriginErrors": ny("splitExternalLocalOriginErrors"),
    "consecutiveLocalOriginFailures": ny("consecutiveLocalOriginFailures"),
    "outlierDetectionHttpErrorCodes": ny("custom outlier error codes"),
}
MESSAGES["Subset"] = {
    "name": sup(STRING, required=True, check="subset_name"),
    "labels": sup(LABELS),
    "trafficPolicy": sup(Message("TrafficPolicy")),
}

# ---------------------------------------------------------------------------------------------
# networking.istio.io ServiceEntry and WorkloadEntry

MESSAGES["ServiceEntry"] = {
    "hosts": sup(STRINGS, required=True, check="se_host"),
    "addresses": off(STRINGS, "virtual IPs are allocated by Kubernetes networking"),
    "ports": sup(ListOf(Message("ServicePort"))),
    "location": sup(EnumT(("MESH_EXTERNAL", "MESH_INTERNAL"))),
    "resolution": sup(
        EnumT(
            ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"),
            not_yet=frozenset({"DYNAMIC_DNS"}),
        )
    ),
    "endpoints": sup(ListOf(Message("WorkloadEntry"))),
    "workloadSelector": sup(Message("WorkloadSelector")),
    "exportTo": off(STRINGS, EXPORT_TO_NOTE),
    "subjectAltNames": sup(STRINGS),
}
MESSAGES["ServicePort"] = {
    "number": sup(UINT32, required=True, check="port"),
    "protocol": sup(STRING, check="protocol"),
    "name": sup(STRING, required=True, check="port_name"),
    "targetPort": sup(UINT32, check="port"),
}
MESSAGES["WorkloadEntry"] = {
    "address": sup(STRING, required=True, check="address"),
    "ports": sup(MapOf(UINT32)),
    "labels": sup(LABELS),
    "network": sup(STRING),
    "locality": sup(STRING),
    "weight": sup(UINT32),
    "serviceAccount": sup(STRING),
}
MESSAGES["WorkloadSelector"] = {
    "labels": sup(LABELS),
}

# ---------------------------------------------------------------------------------------------
# networking.istio.io Sidecar (egress and outboundTrafficPolicy used now; ingress later)

MESSAGES["Sidecar"] = {
    "workloadSelector": sup(Message("WorkloadSelector")),
    "ingress": sup(ListOf(Message("IstioIngressListener"))),
    "egress": sup(ListOf(Message("IstioEgressListener"))),
    "inboundConnectionPool": sup(Message("ConnectionPoolSettings")),
    "outboundTrafficPolicy": sup(Message("OutboundTrafficPolicy")),
}
_CAPTURE = EnumT(("DEFAULT", "IPTABLES", "NONE"))
MESSAGES["IstioIngressListener"] = {
    "port": sup(Message("SidecarPort"), required=True),
    "bind": sup(STRING),
    "captureMode": off(_CAPTURE, "iptables traffic capture is how a Kubernetes sidecar works"),
    "defaultEndpoint": sup(STRING),
    "tls": sup(Message("ServerTLSSettings")),
    "connectionPool": sup(Message("ConnectionPoolSettings")),
}
MESSAGES["IstioEgressListener"] = {
    "port": sup(Message("SidecarPort")),
    "bind": sup(STRING),
    "captureMode": off(_CAPTURE, "iptables traffic capture is how a Kubernetes sidecar works"),
    "hosts": sup(STRINGS, required=True, check="sidecar_host"),
}
MESSAGES["SidecarPort"] = {
    "number": sup(UINT32, check="port"),
    "protocol": sup(STRING, check="protocol"),
    "name": sup(STRING),
    "targetPort": sup(UINT32, check="port", deprecated="targetPort of a Sidecar port is ignored"),
}
MESSAGES["OutboundTrafficPolicy"] = {
    "mode": sup(EnumT(("REGISTRY_ONLY", "ALLOW_ANY"))),
    "egressProxy": ny("egress proxies"),
}
MESSAGES["ConnectionPoolSettings"] = {
    "tcp": sup(Message("TCPSettings")),
    "http": sup(Message("HTTPSettings")),
}
MESSAGES["TCPSettings"] = {
    "maxConnections": sup(INT32, check="non_negative"),
    "connectTimeout": sup(DURATION, check="min_1ms"),
    "tcpKeepalive": sup(Message("TcpKeepalive")),
    "maxConnectionDuration": sup(DURATION, check="min_1ms"),
    "idleTimeout": sup(DURATION),
}
MESSAGES["TcpKeepalive"] = {
    "probes": sup(UINT32),
    "time": sup(DURATION, check="min_1ms"),
    "interval": sup(DURATION, check="min_1ms"),
}
MESSAGES["HTTPSettings"] = {
    "http1MaxPendingRequests": sup(INT32, check="non_negative"),
    "http2MaxRequests": sup(INT32, check="non_negative"),
    "maxRequestsPerConnection": sup(INT32, check="non_negative"),
    "maxRetries": sup(INT32, check="non_negative"),
    "idleTimeout": sup(DURATION, check="min_1ms"),
    "h2UpgradePolicy": sup(EnumT(("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"))),
    "useClientProtocol": sup(BOOL),
    "maxConcurrentStreams": sup(INT32, check="non_negative"),
    "http2KeepAlive": sup(Message("ConnectionKeepalive")),
}
MESSAGES["ConnectionKeepalive"] = {
    "interval": sup(DURATION, check="min_1ms"),
    "timeout": sup(DURATION, check="min_1ms"),
}
_TLS_VERSION = EnumT(("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"))
MESSAGES["ServerTLSSettings"] = {
    "httpsRedirect": sup(BOOL),
    "mode": sup(
        EnumT(
            (
                "PASSTHROUGH",
                "SIMPLE",
                "MUTUAL",
                "AUTO_PASSTHROUGH",
                "ISTIO_MUTUAL",
                "OPTIONAL_MUTUAL",
            )
        )
    ),
    "serverCertificate": sup(STRING),
    "privateKey": sup(STRING),
    "caCertificates": sup(STRING),
    "caCrl": sup(STRING),
    "credentialName": sup(STRING),
    "credentialNames": sup(STRINGS),
    "tlsCertificates": sup(ListOf(Message("TLSCertificate"))),
    "subjectAltNames": sup(STRINGS),
    "verifyCertificateSpki": sup(STRINGS),
    "verifyCertificateHash": sup(STRINGS),
    "minProtocolVersion": sup(_TLS_VERSION),
    "maxProtocolVersion": sup(_TLS_VERSION),
    "cipherSuites": sup(STRINGS),
    "caCertCredentialName": sup(STRING),
    "insecureSkipVerify": sup(BOOL),
}
MESSAGES["TLSCertificate"] = {
    "serverCertificate": sup(STRING),
    "privateKey": sup(STRING),
    "caCertificates": sup(STRING),
}

# ---------------------------------------------------------------------------------------------
# security.istio.io PeerAuthentication and AuthorizationPolicy (pymesh.policy.peerauthn, .authz)

MESSAGES["PeerAuthentication"] = {
    "selector": sup(Message("MatchLabelsSelector")),
    "mtls": sup(Message("MutualTLS")),
    "portLevelMtls": sup(MapOf(Message("MutualTLS"), key="port")),
}
MESSAGES["MutualTLS"] = {
    "mode": sup(EnumT(("UNSET", "DISABLE", "PERMISSIVE", "STRICT"))),
}
MESSAGES["MatchLabelsSelector"] = {
    "matchLabels": sup(LABELS),
}
_TARGET_REF = (
    "policies attached to a Gateway, waypoint or Service (targetRef); use selector to pick "
    "workloads"
)
MESSAGES["AuthorizationPolicy"] = {
    "selector": sup(Message("MatchLabelsSelector")),
    "targetRef": ny(_TARGET_REF),
    "targetRefs": ny(_TARGET_REF),
    "rules": sup(ListOf(Message("Rule"))),
    "action": sup(
        EnumT(("ALLOW", "DENY", "AUDIT", "CUSTOM"), not_yet=frozenset({"CUSTOM"})),
    ),
    "provider": ny("CUSTOM authorization providers"),
}
MESSAGES["Rule"] = {
    "from": sup(ListOf(Message("RuleFrom"))),
    "to": sup(ListOf(Message("RuleTo"))),
    "when": sup(ListOf(Message("Condition"))),
}
MESSAGES["RuleFrom"] = {
    "source": sup(Message("Source"), required=True),
}
MESSAGES["RuleTo"] = {
    "operation": sup(Message("Operation"), required=True),
}
_JWT = "request principals (JWT) — until JWT lands"
MESSAGES["Source"] = {
    "principals": sup(STRINGS, check="authz_principal"),
    "notPrincipals": sup(STRINGS, check="authz_principal"),
    "requestPrincipals": ny(_JWT),
    "notRequestPrincipals": ny(_JWT),
    "namespaces": sup(STRINGS, check="authz_string"),
    "notNamespaces": sup(STRINGS, check="authz_string"),
    "serviceAccounts": sup(STRINGS, check="authz_service_account"),
    "notServiceAccounts": sup(STRINGS, check="authz_service_account"),
    "ipBlocks": sup(STRINGS, check="ip_block"),
    "notIpBlocks": sup(STRINGS, check="ip_block"),
    "remoteIpBlocks": sup(STRINGS, check="ip_block"),
    "notRemoteIpBlocks": sup(STRINGS, check="ip_block"),
}
MESSAGES["Operation"] = {
    "hosts": sup(STRINGS, check="authz_host"),
    "notHosts": sup(STRINGS, check="authz_host"),
    "ports": sup(STRINGS, check="port_string"),
    "notPorts": sup(STRINGS, check="port_string"),
    "methods": sup(STRINGS, check="authz_method"),
    "notMethods": sup(STRINGS, check="authz_method"),
    "paths": sup(STRINGS, check="authz_path"),
    "notPaths": sup(STRINGS, check="authz_path"),
}
MESSAGES["Condition"] = {
    "key": sup(STRING, required=True, check="condition_key"),
    "values": sup(STRINGS),
    "notValues": sup(STRINGS),
}

# ---------------------------------------------------------------------------------------------
# Kinds


@dataclass(frozen=True, slots=True)
class KindInfo:
    """A kind pymesh reads: its API group, the versions that serve it, and its spec message."""

    group: str
    versions: tuple[str, ...]
    typed: bool  # built into a model class (else kept as RawResource)
    api_versions: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_versions", tuple(f"{self.group}/{v}" for v in self.versions))


_NET = ("v1", "v1beta1", "v1alpha3")
_SEC = ("v1", "v1beta1")

KINDS: dict[str, KindInfo] = {
    "VirtualService": KindInfo("networking.istio.io", _NET, True),
    "DestinationRule": KindInfo("networking.istio.io", _NET, True),
    "ServiceEntry": KindInfo("networking.istio.io", _NET, True),
    "WorkloadEntry": KindInfo("networking.istio.io", _NET, True),
    "Sidecar": KindInfo("networking.istio.io", _NET, True),
    "PeerAuthentication": KindInfo("security.istio.io", _SEC, True),
    "AuthorizationPolicy": KindInfo("security.istio.io", _SEC, True),
}

# Istio kinds pymesh does not read yet (an error that says so, rather than "unknown kind")
NOT_YET_KINDS: dict[str, str] = {
    "Gateway": "networking.istio.io",
    "EnvoyFilter": "networking.istio.io",
    "WorkloadGroup": "networking.istio.io",
    "ProxyConfig": "networking.istio.io",
    "RequestAuthentication": "security.istio.io",
    "Telemetry": "telemetry.istio.io",
    "WasmPlugin": "extensions.istio.io",
}
