"""Snapshots and the registry, in process: what a view holds, that the agent's own loader
accepts it, sharing per view, debounce, registration idempotence, leases and edge stats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pymesh.config import load_text
from pymesh.snapshot import cluster_name, compile_snapshot
from pymesh_controlplane.agents import EdgeSample
from pymesh_controlplane.hub import Snapshot, Subscription
from pymesh_controlplane.registry import NotRegisteredError, WorkloadPort, WorkloadSpec
from pymesh_controlplane.resources import InvalidConfigError
from pymesh_controlplane.server import ControlPlane, Settings

pytestmark = pytest.mark.anyio

REVIEWS = "reviews.default.svc.cluster.local"


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    settings = Settings(data_dir=tmp_path, debounce=0.2, durable=False)
    async with ControlPlane(settings, admin_token="t") as plane:
        yield plane


def spec(service: str = "reviews", port: int = 18081, **kw: object) -> WorkloadSpec:
    ports = (WorkloadPort("http", port, 9080),)
    return WorkloadSpec(service, "default", "127.0.0.1", ports, **kw)  # type: ignore[arg-type]


def load(snap: Snapshot) -> object:
    """What an agent does with a snapshot: the pymesh loader over its documents."""
    text = "\n---\n".join(json.dumps(d) for d in snap.documents())
    return load_text(text, "snapshot.yaml")


async def settle(cp: ControlPlane, revision: int) -> None:
    assert await cp.hub.wait_revision(revision, 2.0)


async def test_registered_workload_becomes_an_endpoint(cp: ControlPlane) -> None:
    reg = await cp.registry.register(spec(labels={"version": "v1"}), "agent-1")
    await settle(cp, reg.revision)
    snap = cp.hub.snapshot("default", {})
    kinds = [(d["kind"], d["metadata"]["name"]) for d in snap.documents()]
    assert kinds == [("ServiceEntry", "reviews.pymesh-registry"), ("WorkloadEntry", reg.workload)]
    cs = load(snap)
    compiled = compile_snapshot(cs, "default")  # type: ignore[arg-type]
    cluster = compiled.clusters[cluster_name(REVIEWS, 9080, None)]
    assert [(e.address, e.port, e.labels.get("version")) for e in cluster.endpoints] == [
        ("127.0.0.1", 18081, "v1")
    ]


async def test_own_service_entry_selects_registered_workloads(cp: ControlPlane) -> None:
    await cp.resources.apply(
        """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  location: MESH_INTERNAL
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v2, labels: {version: v2}}]
""",
        "se.yaml",
    )
    reg = await cp.registry.register(spec(labels={"version": "v2"}), "agent-1")
    await settle(cp, reg.revision)
    snap = cp.hub.snapshot("default", {})
    assert [d["kind"] for d in snap.documents()] == [
        "DestinationRule",  # stored resources: in creation order, then by key
        "ServiceEntry",
        "WorkloadEntry",
    ]  # no generated ServiceEntry: the stored one defines the host
    compiled = compile_snapshot(load(snap), "default")  # type: ignore[arg-type]
    v2 = compiled.clusters[cluster_name(REVIEWS, 9080, "v2")]
    assert [e.port for e in v2.endpoints] == [18081]


SIDECAR_WORLD = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 1001}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: other}
spec:
  hosts: [ratings]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 1002}, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: other}
spec:
  host: ratings
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: billing, namespace: other}
spec:
  hosts: [billing]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 1003}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  http:
    - match: [{uri: {prefix: /rate}}]
      route: [{destination: {host: ratings.other.svc.cluster.local, subset: v1}}]
    - route: [{destination: {host: cart}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: ["./*"]}]
"""


async def test_sidecar_view_with_its_destinations(cp: ControlPlane) -> None:
    res = await cp.resources.apply(SIDECAR_WORLD, "world.yaml")
    await settle(cp, res.revision)
    shop = cp.hub.snapshot("shop", {"app": "web"})
    assert shop.view.to_dict() == {
        "everything": False,
        "namespace": "shop",
        "sidecar": "Sidecar shop/default",
        "egress": ["shop/*"],
    }
    names = [
        (d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in shop.documents()
    ]
    # the route to ratings.other brings ratings' ServiceEntry and DestinationRule along;
    # billing (not in the egress, not routed to) stays out
    assert sorted(names) == [
        ("DestinationRule", "other", "ratings"),
        ("ServiceEntry", "other", "ratings"),
        ("ServiceEntry", "shop", "cart"),
        ("Sidecar", "shop", "default"),
        ("VirtualService", "shop", "cart"),
    ]
    compiled = compile_snapshot(load(shop), "shop")  # type: ignore[arg-type]
    assert cluster_name("ratings.other.svc.cluster.local", 80, "v1") in compiled.clusters
    # a namespace without a Sidecar sees everything; such views are shared across namespaces
    other = cp.hub.snapshot("other", {})
    assert other.view.everything and other.count == 6
    assert cp.hub.snapshot("default", {}) is other


async def test_snapshots_are_computed_once_per_view_and_revision(cp: ControlPlane) -> None:
    res = await cp.resources.apply(SIDECAR_WORLD, "world.yaml")
    await settle(cp, res.revision)
    a = cp.hub.snapshot("shop", {"app": "a"})
    b = cp.hub.snapshot("shop", {"app": "b"})
    assert a is b and a.message is b.message  # encoded once, shared
    # a change outside the view produces the same content: the agents keep what they hold
    res2 = await cp.resources.apply(
        SIDECAR_WORLD.split("---\n")[3].replace("1003", "1004"), "billing.yaml"
    )
    await settle(cp, res2.revision)
    assert cp.hub.snapshot("shop", {"app": "a"}) is a
    assert cp.hub.snapshot("other", {}).revision == res2.revision


async def test_push_debounce_is_leading_edge(cp: ControlPlane) -> None:
    sub: Subscription = cp.hub.subscribe("agent-1", "default", {})
    sub.sent = cp.hub.snapshot("default", {})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = await cp.registry.register(spec(port=20000), "w0")
    snap = await sub.next(2.0)
    assert snap is not None and snap.revision == first.revision
    assert loop.time() - t0 < 0.15  # the first change goes out at once, not after 200 ms
    # a burst inside the window coalesces into one push carrying all of it
    last = 0
    for i in range(1, 6):
        last = (await cp.registry.register(spec(port=20000 + i), f"w{i}")).revision
    snap = await sub.next(2.0)
    assert snap is not None and snap.revision == last
    assert snap.count == 1 + 6  # the generated ServiceEntry and six workloads
    assert await sub.next(0.3) is None  # nothing else queued
    cp.hub.unsubscribe(sub)
    assert cp.metrics.pushes._value.get() == 2  # type: ignore[attr-defined]


async def test_registration_is_idempotent_by_address(cp: ControlPlane) -> None:
    a = await cp.registry.register(spec(), "worker-1")
    b = await cp.registry.register(spec(), "worker-2")  # a pre-fork sibling: same address
    assert a.workload == b.workload and a.created and not b.created
    again = await cp.registry.register(spec(), "worker-1")  # a reconnect: no new endpoint
    assert again.workload == a.workload
    _, rows = await cp.registry.workloads()
    assert [(r.id, sorted(agents)) for r, agents in rows] == [
        (a.workload, ["worker-1", "worker-2"])
    ]
    assert await cp.registry.deregister(a.workload, "worker-1") is False  # worker-2 serves on
    assert await cp.registry.deregister(a.workload, "worker-2") is True
    assert (await cp.registry.workloads())[1] == []
    with pytest.raises(NotRegisteredError):
        await cp.registry.heartbeat(a.workload, "worker-1")


async def test_registration_validated_like_config(cp: ControlPlane) -> None:
    with pytest.raises(InvalidConfigError) as info:
        await cp.registry.register(spec(labels={"bad key!": "x"}), "a")
    assert "invalid label key" in str(info.value)
    with pytest.raises(InvalidConfigError):
        bad_port = WorkloadSpec("reviews", "default", "127.0.0.1", (WorkloadPort("h_t", 1),))
        await cp.registry.register(bad_port, "a")


async def test_expired_lease_removes_the_endpoint_and_pushes(cp: ControlPlane) -> None:
    reg = await cp.registry.register(spec(), "agent-1", ttl=0.2)
    await settle(cp, reg.revision)
    sub = cp.hub.subscribe("watcher", "default", {})
    sub.sent = cp.hub.snapshot("default", {})
    assert sub.sent.count == 2
    ttl, interval = await cp.registry.heartbeat(reg.workload, "agent-1")
    assert ttl == 0.2 and interval == 0.067
    snap = await sub.next(3.0)  # no more heartbeats: the lease expires, the endpoint goes
    assert snap is not None and snap.count == 0
    cp.hub.unsubscribe(sub)


async def test_heartbeat_stats_become_edges(cp: ControlPlane) -> None:
    reg = await cp.registry.register(spec(service="productpage"), "pp-1")
    t = 100.0
    for n in (0, 50):
        t += 5.0
        sample = EdgeSample(t, requests=10 + n, errors=n // 10, latency_ms_sum=20.0 + 2 * n)
        await cp.registry.heartbeat(reg.workload, "pp-1", [(REVIEWS + ":9080", sample)])
    (edge,) = cp.agents.edges()
    assert (edge.source_service, edge.destination) == ("productpage", REVIEWS + ":9080")
    assert edge.rps == pytest.approx(10.0)
    assert edge.error_rate == pytest.approx(0.1)
    assert edge.latency_ms_mean == pytest.approx(2.0)
    assert edge.to_dict()["requests"] == 60
