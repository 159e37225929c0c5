"""Every supported field parses into the model as Istio means it (tables of YAML → model)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from pymesh.config import load_text
from pymesh.config.model import (
    ConfigSet,
    Destination,
    DestinationRule,
    EgressListener,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    LoadBalancerSettings,
    Meta,
    OutlierDetection,
    PeerAuthentication,
    RouteDestination,
    ServiceEntry,
    ServicePort,
    Sidecar,
    SidecarPort,
    StringMatch,
    Subset,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
)

SE_REVIEWS = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
"""


DR_REVIEWS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""


def _one(kind: str, spec: str, *, extra: str = SE_REVIEWS) -> Any:
    api = "security.istio.io/v1" if kind.endswith(("Policy", "Authentication")) else None
    api = api or "networking.istio.io/v1"
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    text = f"apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: x\nspec:\n{body}\n---\n{extra}"
    cs = load_text(text, "t.yaml")
    return cs.resources[0]


def _rule_spec(rule: str) -> str:
    lines = textwrap.dedent(rule).strip().splitlines()
    body = "\n".join(("  - " if i == 0 else "    ") + ln for i, ln in enumerate(lines))
    return "hosts: [reviews]\nhttp:\n" + body


def _vs_rule(rule: str) -> HTTPRoute:
    vs = _one("VirtualService", _rule_spec(rule), extra=SE_REVIEWS + "---" + DR_REVIEWS)
    assert isinstance(vs, VirtualService)
    return vs.http[0]


ROUTE = "route: [{destination: {host: reviews}}]"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param(
            ROUTE,
            HTTPRoute(route=(RouteDestination(Destination("reviews")),)),
            id="single-destination-weight-none",
        ),
        pytest.param(
            "name: r1\n" + ROUTE,
            HTTPRoute(name="r1", route=(RouteDestination(Destination("reviews")),)),
            id="name",
        ),
        pytest.param(
            "route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]",
            HTTPRoute(route=(RouteDestination(Destination("reviews", "v1", 9080)),)),
            id="destination-subset-port",
        ),
        pytest.param(
            """
            route:
            - {destination: {host: reviews, subset: v1}, weight: 90}
            - {destination: {host: reviews, subset: v2}, weight: 10}
            - {destination: {host: reviews, subset: v3}, weight: 0}
            """,
            HTTPRoute(
                route=(
                    RouteDestination(Destination("reviews", "v1"), 90),
                    RouteDestination(Destination("reviews", "v2"), 10),
                    RouteDestination(Destination("reviews", "v3"), 0),
                )
            ),
            id="weights",
        ),
        pytest.param(
            """
            route:
            - {destination: {host: reviews, subset: v1}, weight: 100}
            - {destination: {host: reviews, subset: v2}}
            """,
            HTTPRoute(
                route=(
                    RouteDestination(Destination("reviews", "v1"), 100),
                    RouteDestination(Destination("reviews", "v2"), 0),
                )
            ),
            id="missing-weight-is-zero",
        ),
        pytest.param(
            ROUTE + "\ntimeout: 1.5s",
            HTTPRoute(route=(RouteDestination(Destination("reviews")),), timeout=1.5),
            id="timeout",
        ),
        pytest.param(
            ROUTE + "\nretries: {attempts: 3, perTryTimeout: 250ms, retryOn: '5xx, reset,503'}",
            HTTPRoute(
                route=(RouteDestination(Destination("reviews")),),
                retries=HTTPRetry(3, 0.25, ("5xx", "reset", "503")),
            ),
            id="retries",
        ),
        pytest.param(
            ROUTE + "\nretries: {attempts: 2}",
            HTTPRoute(
                route=(RouteDestination(Destination("reviews")),),
                retries=HTTPRetry(2, None, None),
            ),
            id="retries-defaults",
        ),
        pytest.param(
            ROUTE + "\nretries: {attempts: 0}",
            HTTPRoute(
                route=(RouteDestination(Destination("reviews")),),
                retries=HTTPRetry(0),
            ),
            id="retries-disabled",
        ),
        pytest.param(
            ROUTE + "\nretries: {attempts: 1, retryOn: 'gateway-error,reset-before-request,"
            "envoy-ratelimited,retriable-4xx,retriable-status-codes,"
            "http3-post-connect-failure,cancelled,deadline-exceeded,internal,"
            "resource-exhausted,unavailable,100,599'}",
            HTTPRoute(
                route=(RouteDestination(Destination("reviews")),),
                retries=HTTPRetry(
                    1,
                    None,
                    (
                        "gateway-error",
                        "reset-before-request",
                        "envoy-ratelimited",
                        "retriable-4xx",
                        "retriable-status-codes",
                        "http3-post-connect-failure",
                        "cancelled",
                        "deadline-exceeded",
                        "internal",
                        "resource-exhausted",
                        "unavailable",
                        "100",
                        "599",
                    ),
                ),
            ),
            id="retry-on-every-token",
        ),
    ],
)
def test_http_route_fields(rule: str, expected: HTTPRoute) -> None:
    assert _vs_rule(rule) == expected


def _match(yaml_match: str) -> HTTPMatchRequest:
    lines = textwrap.dedent(yaml_match).strip().splitlines()
    match = "match:\n" + "\n".join(("- " if i == 0 else "  ") + ln for i, ln in enumerate(lines))
    return _vs_rule(match + "\n" + ROUTE).match[0]


@pytest.mark.parametrize(
    ("yaml_match", "expected"),
    [
        ("name: m\nuri: {exact: /a}", HTTPMatchRequest(name="m", uri=StringMatch("exact", "/a"))),
        ("uri: {prefix: /api}", HTTPMatchRequest(uri=StringMatch("prefix", "/api"))),
        ("scheme: {exact: https}", HTTPMatchRequest(scheme=StringMatch("exact", "https"))),
        ("method: {exact: GET}", HTTPMatchRequest(method=StringMatch("exact", "GET"))),
        (
            "authority: {prefix: reviews}",
            HTTPMatchRequest(authority=StringMatch("prefix", "reviews")),
        ),
        (
            "headers: {End-User: {exact: jason}, x-any: {}}",
            HTTPMatchRequest(headers={"end-user": StringMatch("exact", "jason"), "x-any": None}),
        ),
        (
            "withoutHeaders: {X-Debug: {prefix: '1'}}",
            HTTPMatchRequest(without_headers={"x-debug": StringMatch("prefix", "1")}),
        ),
        (
            "queryParams: {Key: {exact: 'true'}, flag: {}}",
            HTTPMatchRequest(query_params={"Key": StringMatch("exact", "true"), "flag": None}),
        ),
        ("port: 9080", HTTPMatchRequest(port=9080)),
        (
            "sourceLabels: {app: productpage, version: v1}",
            HTTPMatchRequest(source_labels={"app": "productpage", "version": "v1"}),
        ),
        ("ignoreUriCase: true", HTTPMatchRequest(ignore_uri_case=True)),
        ("gateways: [mesh]", HTTPMatchRequest()),
    ],
)
def test_match_fields(yaml_match: str, expected: HTTPMatchRequest) -> None:
    assert _match(yaml_match) == expected


def test_regex_match_is_compiled_for_full_match() -> None:
    m = _match(r"uri: {regex: '/api/v[0-9]+'}")
    assert m.uri is not None and m.uri.kind == "regex" and m.uri.regex is not None
    assert m.uri.regex.fullmatch("/api/v12")
    assert not m.uri.regex.fullmatch("/api/v12/x")


def test_virtual_service_hosts_gateways_export_to() -> None:
    vs = _one(
        "VirtualService",
        """
        hosts: [reviews, reviews.prod.svc.cluster.local]
        gateways: [mesh]
        exportTo: ["*"]
        http:
        - route: [{destination: {host: reviews}}]
        """,
    )
    assert isinstance(vs, VirtualService)
    assert vs.hosts == ("reviews", "reviews.prod.svc.cluster.local")
    assert vs.meta == Meta(
        "VirtualService", "networking.istio.io/v1", "x", "default", source=vs.meta.source
    )
    assert vs.meta.source is not None and (vs.meta.source.file, vs.meta.source.line) == (
        "t.yaml",
        1,
    )


@pytest.mark.parametrize(
    ("yaml_od", "expected"),
    [
        pytest.param("{}", OutlierDetection(), id="istio-defaults"),
        pytest.param(
            "{consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m,"
            " maxEjectionPercent: 50, minHealthPercent: 20}",
            OutlierDetection(7, None, 300.0, 900.0, 50, 20),
            id="all-fields",
        ),
        pytest.param(
            "{consecutiveGatewayErrors: 4}",
            OutlierDetection(consecutive_5xx_errors=5, consecutive_gateway_errors=4),
            id="gateway-errors-keep-5xx-default",
        ),
        pytest.param(
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 3}",
            OutlierDetection(consecutive_5xx_errors=None, consecutive_gateway_errors=3),
            id="zero-disables",
        ),
        pytest.param(
            "{consecutiveErrors: 6}",
            OutlierDetection(consecutive_5xx_errors=None, consecutive_gateway_errors=6),
            id="deprecated-consecutiveErrors-means-gateway-errors",
        ),
        pytest.param(
            "{consecutiveErrors: 6, consecutive5xxErrors: 9}",
            OutlierDetection(consecutive_5xx_errors=9, consecutive_gateway_errors=6),
            id="consecutiveErrors-with-5xx",
        ),
    ],
)
def test_outlier_detection(yaml_od: str, expected: OutlierDetection) -> None:
    dr = _one("DestinationRule", f"host: reviews\ntrafficPolicy: {{outlierDetection: {yaml_od}}}")
    assert isinstance(dr, DestinationRule)
    assert dr.traffic_policy == TrafficPolicy(outlier_detection=expected)


@pytest.mark.parametrize(
    ("simple", "expected"),
    [
        ("ROUND_ROBIN", "ROUND_ROBIN"),
        ("LEAST_REQUEST", "LEAST_REQUEST"),
        ("RANDOM", "RANDOM"),
        ("PASSTHROUGH", "PASSTHROUGH"),
        ("UNSPECIFIED", "UNSPECIFIED"),
        ("LEAST_CONN", "LEAST_REQUEST"),
    ],
)
def test_load_balancer_simple(simple: str, expected: str) -> None:
    dr = _one(
        "DestinationRule", f"host: reviews\ntrafficPolicy: {{loadBalancer: {{simple: {simple}}}}}"
    )
    assert isinstance(dr, DestinationRule)
    lb = LoadBalancerSettings(simple=expected)  # type: ignore[arg-type]
    assert dr.traffic_policy == TrafficPolicy(load_balancer=lb)


def test_destination_rule_subsets() -> None:
    dr = _one(
        "DestinationRule",
        """
        host: reviews.default.svc.cluster.local
        exportTo: ["."]
        subsets:
        - name: v1
          labels: {version: v1}
        - name: v2
          labels: {version: v2}
          trafficPolicy: {loadBalancer: {simple: RANDOM}}
        """,
    )
    assert dr == DestinationRule(
        meta=dr.meta,
        host="reviews.default.svc.cluster.local",
        traffic_policy=None,
        subsets=(
            Subset("v1", {"version": "v1"}),
            Subset(
                "v2",
                {"version": "v2"},
                TrafficPolicy(load_balancer=LoadBalancerSettings(simple="RANDOM")),
            ),
        ),
    )


def test_service_entry_fields() -> None:
    se = _one(
        "ServiceEntry",
        """
        hosts: [api.example.com]
        addresses: [240.0.0.1]
        exportTo: ["*"]
        location: MESH_INTERNAL
        resolution: STATIC
        subjectAltNames: ["spiffe://cluster.local/ns/default/sa/api"]
        ports:
        - {number: 443, name: https-api, protocol: https, targetPort: 8443}
        - {number: 8080, name: grpc-web}
        - {number: 9000, name: metrics}
        endpoints:
        - address: 10.0.0.1
          ports: {https-api: 9443}
          labels: {version: v1}
          locality: us-east1/us-east1-b
          weight: 3
          serviceAccount: api
          network: net1
        - address: 10.0.0.2
        """,
        extra="",
    )
    assert se == ServiceEntry(
        meta=se.meta,
        hosts=("api.example.com",),
        ports=(
            ServicePort(443, "https-api", "HTTPS", 8443),
            ServicePort(8080, "grpc-web", "GRPC", None),
            ServicePort(9000, "metrics", "HTTP", None),
        ),
        resolution="STATIC",
        location="MESH_INTERNAL",
        endpoints=(
            WorkloadEndpoint(
                "10.0.0.1",
                {"https-api": 9443},
                {"version": "v1"},
                "us-east1/us-east1-b",
                3,
                "api",
                "net1",
            ),
            WorkloadEndpoint("10.0.0.2"),
        ),
        subject_alt_names=("spiffe://cluster.local/ns/default/sa/api",),
    )


@pytest.mark.parametrize("resolution", ["NONE", "DNS", "DNS_ROUND_ROBIN"])
def test_service_entry_resolutions(resolution: str) -> None:
    se = _one(
        "ServiceEntry",
        f"hosts: [httpbin.org]\nresolution: {resolution}\nports: [{{number: 80, name: http}}]",
        extra="",
    )
    assert isinstance(se, ServiceEntry)
    assert (se.resolution, se.location, se.workload_selector) == (
        resolution,
        "MESH_EXTERNAL",
        None,
    )


def test_service_entry_workload_selector_and_workload_entry() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: prod}
spec:
  hosts: [ratings]
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-1, namespace: prod, labels: {team: a}}
spec:
  address: vm1.example.com
  ports: {http: 8080}
  labels: {app: ratings}
  serviceAccount: ratings
  locality: eu/west
  weight: 2
  network: vpc
"""
    se, we = load_text(text).resources
    assert isinstance(se, ServiceEntry) and se.workload_selector == {"app": "ratings"}
    assert isinstance(we, WorkloadEntry)
    assert we.meta.labels == {"team": "a"} and we.meta.namespace == "prod"
    assert we.endpoint == WorkloadEndpoint(
        "vm1.example.com", {"http": 8080}, {"app": "ratings"}, "eu/west", 2, "ratings", "vpc"
    )


SIDECAR = """
    workloadSelector: {labels: {app: reviews}}
    ingress:
    - port: {number: 9080, protocol: HTTP, name: http}
      defaultEndpoint: 127.0.0.1:8080
      connectionPool: {http: {http1MaxPendingRequests: 10, idleTimeout: 30s}}
    egress:
    - hosts: ["./*", "istio-system/*"]
      port: {number: 80, protocol: http, name: http}
    - hosts: ["*/reviews.default.svc.cluster.local"]
    inboundConnectionPool: {tcp: {maxConnections: 10, connectTimeout: 1s}}
    outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    """


def test_sidecar_model() -> None:
    r = _one("Sidecar", SIDECAR)
    assert isinstance(r, Sidecar)
    assert r.meta.kind == "Sidecar" and r.meta.name == "x"
    assert r.workload_selector == {"app": "reviews"}
    assert r.egress == (
        EgressListener(("./*", "istio-system/*"), SidecarPort(80, "HTTP", "http")),
        EgressListener(("*/reviews.default.svc.cluster.local",)),
    )
    assert r.outbound_mode == "REGISTRY_ONLY"
    # the inbound side's parts are kept as validated data (durations in seconds)
    assert r.ingress[0]["connectionPool"] == {
        "http": {"http1MaxPendingRequests": 10, "idleTimeout": 30.0}
    }
    assert r.inbound_connection_pool == {"tcp": {"maxConnections": 10, "connectTimeout": 1.0}}


def test_default_namespace_and_labels() -> None:
    cs = load_text(SE_REVIEWS, default_namespace="prod")
    (se,) = cs.resources
    assert isinstance(se, ServiceEntry)
    assert se.meta.namespace == "prod"
    assert se.meta.ref == "ServiceEntry prod/reviews"


@pytest.mark.parametrize("api", ["v1", "v1beta1", "v1alpha3"])
def test_networking_versions(api: str) -> None:
    cs = load_text(SE_REVIEWS.replace("networking.istio.io/v1", f"networking.istio.io/{api}"))
    assert cs.resources[0].meta.api_version == f"networking.istio.io/{api}"


@pytest.mark.parametrize("api", ["v1", "v1beta1"])
def test_security_versions(api: str) -> None:
    text = f"apiVersion: security.istio.io/{api}\nkind: PeerAuthentication\nmetadata: {{name: a}}\n"
    cs = load_text(text)
    assert isinstance(cs.resources[0], PeerAuthentication)


def test_multi_document_with_empty_documents() -> None:
    text = "---\n# only a comment\n---\n" + SE_REVIEWS + "\n---\n---\n"
    cs = load_text(text)
    assert [r.meta.name for r in cs.resources] == ["reviews"]


def test_kubernetes_list() -> None:
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {name: a}
  spec: {hosts: [a], ports: [{number: 80, name: http}]}
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {name: b}
  spec: {hosts: [b], ports: [{number: 80, name: http}]}
"""
    assert [r.meta.name for r in load_text(text).resources] == ["a", "b"]


def test_json_text() -> None:
    text = (
        '{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",\n'
        ' "metadata": {"name": "r"},\n'
        ' "spec": {"host": "reviews", "trafficPolicy": {"outlierDetection":\n'
        '   {"maxEjectionPercent": 50, "interval": "1s"}}}}'
    )
    (dr,) = load_text(text, "r.json").resources
    assert isinstance(dr, DestinationRule) and dr.traffic_policy is not None
    assert dr.traffic_policy.outlier_detection == OutlierDetection(
        interval=1.0, max_ejection_percent=50
    )


def test_config_set_of() -> None:
    cs = load_text(SE_REVIEWS)
    assert isinstance(cs, ConfigSet)
    assert cs.of(ServiceEntry) == list(cs.resources)
    assert cs.of(VirtualService) == []
