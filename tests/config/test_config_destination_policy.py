"""DestinationRule destination-side policy: consistentHash, localityLbSetting, connectionPool,
retryBudget and portLevelSettings — parsed into the model, refused where Istio refuses, merged
per port and subset as Istio merges them, and `analyze`'s locality warning (PM0103)."""

from __future__ import annotations

import textwrap

import pytest

from pymesh.config import analyze_text, load_text
from pymesh.config.model import (
    ConnectionPoolSettings,
    ConsistentHash,
    DestinationRule,
    LoadBalancerSettings,
    LocalityDistribute,
    LocalityLbSetting,
    OutlierDetection,
    PortTrafficPolicy,
    RetryBudget,
    TcpKeepalive,
    TrafficPolicy,
)
from pymesh.snapshot import compile_snapshot, effective_policy, workload_identity

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}, {number: 9443, name: http-alt}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}, locality: r1/z1/s1}
  - {address: 10.0.0.2, labels: {version: v1}, locality: r1/z2/s1}
  - {address: 10.0.0.3, labels: {version: v2}, locality: r2/z1/s1}
---
"""


def dr_yaml(policy: str, subsets: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\n"
        "spec:\n  host: reviews\n  trafficPolicy:\n"
        + textwrap.indent(textwrap.dedent(policy).strip("\n"), "    ")
        + "\n"
        + (textwrap.indent(textwrap.dedent(subsets).strip("\n"), "  ") + "\n" if subsets else "")
    )


def policy_of(policy: str) -> TrafficPolicy:
    cs = load_text(SE + dr_yaml(policy))
    dr = cs.of(DestinationRule)[0]
    assert isinstance(dr, DestinationRule) and dr.traffic_policy is not None
    return dr.traffic_policy


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("{httpHeaderName: X-User}", ConsistentHash("header", "x-user")),
        (
            "{httpCookie: {name: sid, path: /, ttl: 1h, attributes: [{name: Secure}]}}",
            ConsistentHash("cookie", "sid", "/", 3600.0, (("Secure", ""),)),
        ),
        ("{httpCookie: {name: sid}}", ConsistentHash("cookie", "sid")),
        ("{useSourceIp: true}", ConsistentHash("source_ip")),
        ("{httpQueryParameterName: u}", ConsistentHash("query", "u")),
        (
            "{httpHeaderName: x, ringHash: {minimumRingSize: 64}}",
            ConsistentHash("header", "x", minimum_ring_size=64),
        ),
        (
            "{httpHeaderName: x, minimumRingSize: 32}",
            ConsistentHash("header", "x", minimum_ring_size=32),
        ),
        (
            "{httpHeaderName: x, maglev: {tableSize: 5003}}",
            ConsistentHash("header", "x", algorithm="MAGLEV", table_size=5003),
        ),
    ],
)
def test_consistent_hash_model(yaml: str, expected: ConsistentHash) -> None:
    tp = policy_of(f"loadBalancer: {{consistentHash: {yaml}}}")
    assert tp.load_balancer == LoadBalancerSettings(consistent_hash=expected)


def test_locality_connection_pool_budget_and_port_level_model() -> None:
    tp = policy_of(
        """
        loadBalancer:
          simple: ROUND_ROBIN
          localityLbSetting:
            distribute: [{from: "r1/*", to: {"r1/z1/*": 80, "r2/*": 20}}]
            enabled: true
        connectionPool:
          tcp: {maxConnections: 10, connectTimeout: 250ms, tcpKeepalive: {probes: 3, time: 1m},
                maxConnectionDuration: 1h, idleTimeout: 5m}
          http: {http1MaxPendingRequests: 0, http2MaxRequests: 100, maxRequestsPerConnection: 1,
                 maxRetries: 4, idleTimeout: 30s, h2UpgradePolicy: DO_NOT_UPGRADE,
                 useClientProtocol: true}
        retryBudget: {percent: 12.5, minRetryConcurrency: 0}
        portLevelSettings:
        - port: {number: 9443}
          outlierDetection: {consecutive5xxErrors: 2}
        """
    )
    assert tp.load_balancer == LoadBalancerSettings(
        simple="ROUND_ROBIN",
        locality_lb_setting=LocalityLbSetting(
            distribute=(LocalityDistribute("r1/*", (("r1/z1/*", 80), ("r2/*", 20))),),
            enabled=True,
        ),
    )
    assert tp.connection_pool == ConnectionPoolSettings(
        max_connections=10,
        connect_timeout=0.25,
        tcp_keepalive=TcpKeepalive(3, 60.0, None),
        max_connection_duration=3600.0,
        tcp_idle_timeout=300.0,
        http1_max_pending_requests=None,  # 0 means unset, as in Istio
        http2_max_requests=100,
        max_requests_per_connection=1,
        max_retries=4,
        idle_timeout=30.0,
        h2_upgrade_policy="DO_NOT_UPGRADE",
        use_client_protocol=True,
    )
    assert tp.retry_budget == RetryBudget(12.5, 3)
    assert tp.port_level_settings == (
        PortTrafficPolicy(9443, outlier_detection=OutlierDetection(consecutive_5xx_errors=2)),
    )


@pytest.mark.parametrize(
    ("policy", "code", "path", "text"),
    [
        ("loadBalancer: {consistentHash: {}}", "PM0007", "consistentHash", "needs a hash key"),
        (
            "loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x}}",
            "PM0006",
            "consistentHash",
            "only one of",
        ),
        (
            "loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}",
            "PM0006",
            "loadBalancer",
            "only one of simple, consistentHash",
        ),
        (
            "loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}",
            "PM0006",
            "maglev.tableSize",
            "prime",
        ),
        (
            "loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 8, "
            "maglev: {tableSize: 7}}}",
            "PM0006",
            "consistentHash",
            "maglev is set",
        ),
        (
            "loadBalancer: {consistentHash: {useSourceIp: true, "
            "ringHash: {minimumRingSize: 9000000}}}",
            "PM0006",
            "ringHash.minimumRingSize",
            "1..8388608",
        ),
        (
            "loadBalancer: {consistentHash: {httpCookie: {path: /}}}",
            "PM0007",
            "httpCookie",
            '"name"',
        ),
        (
            "loadBalancer: {consistentHash: {httpHeaderName: 'bad header'}}",
            "PM0006",
            "httpHeaderName",
            "invalid header name",
        ),
        (
            "loadBalancer: {localityLbSetting: {distribute: [{from: r1, to: {r1: 60}}]}}",
            "PM0011",
            "distribute[0].to",
            "sum to 100, got 60",
        ),
        (
            "loadBalancer: {localityLbSetting: {distribute: [{from: 'r1/*/z', to: {r1: 100}}]}}",
            "PM0006",
            "distribute[0].from",
            "whole last segment",
        ),
        (
            "loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r1}]}}",
            "PM0006",
            "failover[0]",
            "must differ",
        ),
        (
            "loadBalancer: {localityLbSetting: {failover: [{from: r1/z1, to: r2}]}}",
            "PM0006",
            "failover[0].from",
            "names a region",
        ),
        (
            "loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}], "
            "distribute: [{from: r1, to: {r1: 100}}]}}",
            "PM0006",
            "localityLbSetting",
            "distribute cannot be set with failover",
        ),
        (
            "loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}], "
            "failoverPriority: [topology.istio.io/subzone]}}",
            "PM0006",
            "failoverPriority[0]",
            "topology label",
        ),
        ("connectionPool: {tcp: {maxConnections: -1}}", "PM0006", "maxConnections", "negative"),
        (
            "connectionPool: {http: {h2UpgradePolicy: UPGRADE}}",
            "PM0003",
            "h2UpgradePolicy",
            "does not support yet",
        ),
        (
            "connectionPool: {http: {http2KeepAlive: {interval: 1s}}}",
            "PM0003",
            "http2KeepAlive",
            "HTTP/2 upstream",
        ),
        ("retryBudget: {percent: 101}", "PM0006", "retryBudget.percent", "0..100"),
        ("retryBudget: {budgetInterval: 1s}", "PM0003", "budgetInterval", "not support yet"),
        (
            "portLevelSettings: [{loadBalancer: {simple: RANDOM}}]",
            "PM0007",
            "portLevelSettings[0]",
            '"port"',
        ),
        (
            "portLevelSettings: [{port: {number: 9080}, tls: {mode: MUTUAL}}]",
            "PM0007",
            "portLevelSettings[0].tls",
            "MUTUAL needs clientCertificate",
        ),
    ],
)
def test_refused_as_istio_refuses(policy: str, code: str, path: str, text: str) -> None:
    findings = analyze_text(SE + dr_yaml(policy))
    hits = [f for f in findings if f.code == code and f.severity == "error"]
    assert hits, findings
    assert any(path in f.path and text in f.message for f in hits), hits


def test_duplicate_port_level_settings_warn() -> None:
    findings = analyze_text(
        SE
        + dr_yaml(
            "portLevelSettings: [{port: {number: 9080}}, {port: {number: 9080}}]\n"
            "outlierDetection: {}"
        )
    )
    assert [(f.code, f.severity) for f in findings] == [("PM0006", "warning")]


@pytest.mark.parametrize(
    ("policy", "subsets", "paths"),
    [
        ("loadBalancer: {localityLbSetting: {enabled: true}}", "", ["spec.trafficPolicy"]),
        (
            "loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}\n"
            "outlierDetection: {}",
            "",
            [],
        ),
        ("loadBalancer: {localityLbSetting: {enabled: false}}", "", []),
        (
            "outlierDetection: {}",
            "subsets: [{name: v1, trafficPolicy: {loadBalancer: {localityLbSetting: {}}}}]",
            [],
        ),
        (
            "loadBalancer: {simple: RANDOM}",
            "subsets: [{name: v1, trafficPolicy: {loadBalancer: {localityLbSetting: {}}}}]",
            ["spec.subsets[0].trafficPolicy"],
        ),
        (
            "outlierDetection: {}\nportLevelSettings:\n"
            "- {port: {number: 9080}, loadBalancer: {localityLbSetting: {}}}",
            "",
            ["spec.trafficPolicy.portLevelSettings[0]"],
        ),
    ],
)
def test_analyze_warns_on_locality_without_outlier_detection(
    policy: str, subsets: str, paths: list[str]
) -> None:
    findings = analyze_text(SE + dr_yaml(policy, subsets))
    got = [f.path for f in findings if f.code == "PM0103"]
    assert got == [f"{p}.loadBalancer.localityLbSetting" for p in paths]
    assert all(f.severity == "warning" for f in findings if f.code == "PM0103")


RR = LoadBalancerSettings(simple="ROUND_ROBIN")
RANDOM = LoadBalancerSettings(simple="RANDOM")
POOL = ConnectionPoolSettings(max_connections=5)
OD = OutlierDetection()


@pytest.mark.parametrize(
    ("rule", "subset", "port", "expected"),
    [
        (None, None, 80, TrafficPolicy()),
        (TrafficPolicy(load_balancer=RR), None, 80, TrafficPolicy(load_balancer=RR)),
        # the subset overrides field by field
        (
            TrafficPolicy(load_balancer=RR, connection_pool=POOL),
            TrafficPolicy(load_balancer=RANDOM),
            80,
            TrafficPolicy(load_balancer=RANDOM, connection_pool=POOL),
        ),
        # the rule's port-level entry replaces its three fields whole (no inheritance)
        (
            TrafficPolicy(
                load_balancer=RR,
                connection_pool=POOL,
                retry_budget=RetryBudget(50.0, 1),
                port_level_settings=(PortTrafficPolicy(80, outlier_detection=OD),),
            ),
            None,
            80,
            TrafficPolicy(outlier_detection=OD, retry_budget=RetryBudget(50.0, 1)),
        ),
        (
            TrafficPolicy(
                load_balancer=RR, port_level_settings=(PortTrafficPolicy(80, outlier_detection=OD),)
            ),
            None,
            81,
            TrafficPolicy(
                load_balancer=RR, port_level_settings=(PortTrafficPolicy(80, outlier_detection=OD),)
            ),
        ),
        # the subset's port-level entry replaces the merged fields whole
        (
            TrafficPolicy(load_balancer=RR, connection_pool=POOL),
            TrafficPolicy(
                load_balancer=RANDOM,
                port_level_settings=(PortTrafficPolicy(80, outlier_detection=OD),),
            ),
            80,
            TrafficPolicy(outlier_detection=OD),
        ),
    ],
)
def test_effective_policy_merges_as_istio(
    rule: TrafficPolicy | None, subset: TrafficPolicy | None, port: int, expected: TrafficPolicy
) -> None:
    got = effective_policy(rule, subset, port)
    assert (got.load_balancer, got.connection_pool, got.outlier_detection, got.retry_budget) == (
        expected.load_balancer,
        expected.connection_pool,
        expected.outlier_detection,
        expected.retry_budget,
    )


def test_clusters_carry_the_policy_per_port_and_subset() -> None:
    yaml = SE + dr_yaml(
        """
        loadBalancer: {consistentHash: {httpHeaderName: x-user}}
        connectionPool: {tcp: {maxConnections: 3}}
        outlierDetection: {}
        portLevelSettings:
        - port: {number: 9443}
          loadBalancer: {simple: ROUND_ROBIN}
        """,
        "subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {retryBudget: {percent: 50}}}]",
    )
    snap = compile_snapshot(load_text(yaml), "default", {"app": "frontend"}, locality="r1/z1/s1")
    host = "reviews.default.svc.cluster.local"
    main = snap.clusters[f"outbound|9080||{host}"]
    assert main.lb == "RING_HASH" and main.hash == ConsistentHash("header", "x-user")
    assert main.connection_pool == ConnectionPoolSettings(max_connections=3)
    assert main.retry_budget == RetryBudget()
    assert [e.priority for e in main.endpoints] == [0, 1, 2]  # r1/z1/s1, r1/z2, r2
    alt = snap.clusters[f"outbound|9443||{host}"]
    assert (alt.lb, alt.hash, alt.connection_pool, alt.outlier) == ("ROUND_ROBIN", None, None, None)
    assert [e.priority for e in alt.endpoints] == [0, 0, 0]  # no outlier detection on 9443
    v1 = snap.clusters[f"outbound|9080|v1|{host}"]
    assert v1.retry_budget == RetryBudget(50.0, 3) and v1.lb == "RING_HASH"
    assert snap.source_locality == "r1/z1/s1"


def test_distribute_drops_unnamed_localities_from_the_cluster() -> None:
    yaml = SE + dr_yaml(
        'loadBalancer: {localityLbSetting: {distribute: [{from: "r1/*", to: {"r1/*": 100}}]}}'
    )
    snap = compile_snapshot(load_text(yaml), "default", locality="r1/z1/s1")
    main = snap.clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert [e.address for e in main.endpoints] == ["10.0.0.1", "10.0.0.2"]
    assert main.locality_weights == {"r1/z1/s1": 50, "r1/z2/s1": 50, "r2/z1/s1": 0}


def test_workload_identity_from_its_own_workload_entry() -> None:
    we = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: frontend-1}
spec: {address: 10.1.1.1, labels: {app: frontend}, locality: r2/z1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other}
spec: {address: 10.1.1.2, labels: {app: other}, locality: r9}
"""
    cs = load_text(we)
    assert workload_identity(cs, "default", {"app": "frontend"}) == ("r2/z1", "10.1.1.1")
    assert workload_identity(cs, "prod", {"app": "frontend"}) == ("", "")
    two = (
        we
        + "---\n"
        + we.split("---")[0].replace("frontend-1", "frontend-2").replace("10.1.1.1", "10.1.1.3")
    )
    assert workload_identity(load_text(two), "default", {"app": "frontend"}) == ("r2/z1", "")
