"""End to end: consistent hashing (header, cookie, query, ring hash and Maglev) and locality
load balancing against real uvicorn backends, with the sync and the async meshed client."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

import pymesh
from tests.e2e.meshkit import (
    URL,
    Backend,
    decision,
    destination_rule,
    endpoint,
    in_flight,
    load_config,
    make_mesh,
    resource,
    service_entry,
    to_yaml,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(60)]


def hashing_rule(consistent_hash: dict[str, Any], **policy: Any) -> dict[str, Any]:
    dr = destination_rule()
    dr["spec"]["trafficPolicy"] = {"loadBalancer": {"consistentHash": consistent_hash}, **policy}
    return dr


async def where(c: Any, users: list[str], header: str = "x-user") -> dict[str, str]:
    """Which backend answers each user."""
    out = {}
    for u in users:
        r = await c.get(URL, headers={header: u})
        assert r.status_code == 200
        out[u] = r.headers["x-backend"]
    return out


@pytest.mark.parametrize(
    "algorithm",
    [{}, {"ringHash": {"minimumRingSize": 256}}, {"maglev": {"tableSize": 5003}}],
    ids=["ring-default", "ring", "maglev"],
)
async def test_header_hash_is_sticky_and_removing_one_of_five_moves_a_fifth(
    backends: Any, connect: Any, algorithm: dict[str, Any]
) -> None:
    bs = backends("b0", "b1", "b2", "b3", "b4")
    rule = hashing_rule({"httpHeaderName": "x-user", **algorithm})
    mesh = make_mesh(service_entry([endpoint(b) for b in bs]), rule)
    c = connect(mesh)
    users = [f"user-{i}" for i in range(300)]
    before = await where(c, users)
    assert await where(c, users[:100]) == {u: before[u] for u in users[:100]}  # sticky
    assert len(set(before.values())) == 5
    assert "on header x-user" in decision(await c.get(URL, headers={"x-user": "u"})).endpoint_reason
    gone = bs[2]
    mesh.update(load_config(service_entry([endpoint(b) for b in bs if b is not gone]), rule))
    after = await where(c, users)
    moved = [u for u in users if after[u] != before[u]]
    assert all(after[u] != gone.name for u in users)
    assert 0.1 < len(moved) / len(users) < 0.32, len(moved)
    if "maglev" not in algorithm:  # a ring moves exactly the keys the endpoint owned
        assert all(before[u] == gone.name for u in moved)
    assert in_flight(mesh) == 0


async def test_generated_cookie_keeps_a_client_on_one_endpoint(backends: Any, connect: Any) -> None:
    bs = backends("b0", "b1", "b2")
    rule = hashing_rule({"httpCookie": {"name": "sticky", "path": "/", "ttl": "60s"}})
    mesh = make_mesh(service_entry([endpoint(b) for b in bs]), rule)
    first_backends = Counter()
    for _ in range(6):  # a new client (no cookie) each time
        c = connect(mesh)
        r = await c.get(URL)
        cookie = r.headers["set-cookie"]
        assert cookie.startswith('sticky="') and cookie.endswith("; Max-Age=60; Path=/; HttpOnly")
        home = r.headers["x-backend"]
        first_backends[home] += 1
        for _ in range(5):  # httpx keeps the cookie and sends it back: same endpoint
            r = await c.get(URL)
            assert r.headers["x-backend"] == home
            assert "set-cookie" not in r.headers
        await c.aclose()
    assert sum(first_backends.values()) == 6


async def test_query_parameter_hash(backends: Any, connect: Any) -> None:
    bs = backends("b0", "b1", "b2")
    mesh = make_mesh(
        service_entry([endpoint(b) for b in bs]), hashing_rule({"httpQueryParameterName": "u"})
    )
    c = connect(mesh)
    seen: dict[str, set[str]] = {}
    for i in range(60):
        u = f"{i % 12}"
        r = await c.get(f"{URL}items?u={u}&page={i}")
        seen.setdefault(u, set()).add(r.headers["x-backend"])
    assert all(len(s) == 1 for s in seen.values())
    assert len({next(iter(s)) for s in seen.values()}) > 1


def locality_mesh(local: Backend, near: Backend, far: Backend, **kw: Any) -> pymesh.Mesh:
    se = service_entry(
        [
            {**endpoint(local), "locality": "us-east/zone-a/rack-1"},
            {**endpoint(near), "locality": "us-east/zone-b/rack-1"},
            {**endpoint(far), "locality": "us-west/zone-a/rack-1"},
        ]
    )
    dr = destination_rule(
        outlier={
            "consecutive5xxErrors": 1,
            "interval": "50ms",
            "baseEjectionTime": "400ms",
            "maxEjectionPercent": 100,
        }
    )
    return pymesh.Mesh.from_yaml(to_yaml(se, dr, *kw.pop("extra", ())), service="frontend", **kw)


async def served_by(c: Any, n: int = 20) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        r = await c.get(URL)
        if r.status_code == 200:
            out[r.headers["x-backend"]] += 1
    return out


async def test_locality_stays_local_fails_over_in_order_and_comes_back(
    backends: Any, connect: Any
) -> None:
    local, near, far = backends("local", "near", "far")
    mesh = locality_mesh(local, near, far, locality="us-east/zone-a/rack-1")
    c = connect(mesh)
    assert await served_by(c) == {"local": 20}
    local.always(503)
    await served_by(c, 1)  # the one 503 that ejects it
    assert await served_by(c) == {"near": 20}  # same region, other zone
    near.always(503)
    await served_by(c, 1)
    assert await served_by(c) == {"far": 20}  # then the other region
    local.healthy()
    near.healthy()
    time.sleep(0.45)  # ejections end: traffic comes home
    assert await served_by(c) == {"local": 20}
    assert in_flight(mesh) == 0


async def test_locality_comes_from_the_workloads_own_workload_entry(
    backends: Any, connect: Any
) -> None:
    local, near, far = backends("local", "near", "far")
    me = resource(
        "WorkloadEntry",
        "frontend-1",
        {"address": "10.9.9.9", "labels": {"app": "frontend"}, "locality": "us-west/zone-a"},
    )
    mesh = locality_mesh(local, near, far, extra=[me])
    assert mesh.snapshot.source_locality == "us-west/zone-a"
    c = connect(mesh)
    assert await served_by(c) == {"far": 20}


async def test_distribute_splits_by_locality_weight(backends: Any, connect: Any) -> None:
    local, near, far = backends("local", "near", "far")
    se = service_entry(
        [
            {**endpoint(local), "locality": "us-east/zone-a/rack-1"},
            {**endpoint(near), "locality": "us-east/zone-b/rack-1"},
            {**endpoint(far), "locality": "us-west/zone-a/rack-1"},
        ]
    )
    dr = destination_rule()
    dr["spec"]["trafficPolicy"] = {
        "loadBalancer": {
            "localityLbSetting": {
                "distribute": [
                    {
                        "from": "us-east/zone-a/*",
                        "to": {"us-east/zone-a/*": 75, "us-east/zone-b/*": 25},
                    }
                ]
            }
        }
    }
    mesh = pymesh.Mesh.from_yaml(
        to_yaml(se, dr), service="frontend", locality="us-east/zone-a/rack-1"
    )
    c = connect(mesh)
    got = await served_by(c, 200)
    assert set(got) == {"local", "near"}  # us-west is not named: no traffic
    assert 0.6 < got["local"] / 200 < 0.9
