"""End to end: routing through real uvicorn backends — weighted splits, header matches,
passthrough, Kubernetes name forms and service→target ports, and config updates in flight.

Every test runs with the sync and the async meshed client (the `kind` fixture)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from tests.e2e.meshkit import (
    URL,
    Reply,
    decision,
    destination_rule,
    endpoint,
    eventually,
    load_config,
    make_mesh,
    route_to,
    service_entry,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(30)]


def split_80_20(*rules: dict[str, Any]) -> dict[str, Any]:
    return virtual_service(
        [*rules, {"route": [route_to("v1", weight=80), route_to("v2", weight=20)]}]
    )


async def test_weighted_split_80_20_within_5_points(backends: Any, connect: Any) -> None:
    v1, v2 = backends("v1", "v2")
    mesh = make_mesh(
        service_entry([endpoint(v1), endpoint(v2)]),
        destination_rule(subsets=["v1", "v2"]),
        split_80_20(),
    )
    c = connect(mesh)
    n = 1000
    got: Counter[str] = Counter()
    for _ in range(n):
        r = await c.get(URL)
        assert r.status_code == 200
        name = r.headers["x-backend"]
        got[name] += 1
        d = decision(r)
        assert d.subset == name  # the decision names the subset that answered
        assert r.text == name
    share_v1 = got["v1"] * 100 / n
    assert 75 <= share_v1 <= 85, got
    assert got["v1"] + got["v2"] == n
    assert (v1.count, v2.count) == (got["v1"], got["v2"])


async def test_header_match_sends_jason_to_v3_others_to_split(backends: Any, connect: Any) -> None:
    v1, v2, v3 = backends("v1", "v2", "v3")
    mesh = make_mesh(
        service_entry([endpoint(v1), endpoint(v2), endpoint(v3)]),
        destination_rule(subsets=["v1", "v2", "v3"]),
        split_80_20(
            {
                "name": "jason",
                "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                "route": [route_to("v3")],
            }
        ),
    )
    c = connect(mesh)
    others: Counter[str] = Counter()
    for i in range(200):
        r = await c.get(URL, headers={"end-user": "jason"})
        assert r.headers["x-backend"] == "v3"
        assert "http[0]" in decision(r).route
        # someone else (another user, or no user at all) goes to the split
        r = await c.get(URL, headers={"end-user": "alice"} if i % 2 else {})
        others[r.headers["x-backend"]] += 1
        assert "http[1]" in decision(r).route
    assert v3.count == 200
    assert others["v3"] == 0
    assert others["v1"] > others["v2"] > 0, others


async def test_uri_prefix_match(backends: Any, connect: Any) -> None:
    v1, v2 = backends("v1", "v2")
    mesh = make_mesh(
        service_entry([endpoint(v1), endpoint(v2)]),
        destination_rule(subsets=["v1", "v2"]),
        virtual_service(
            [
                {"match": [{"uri": {"prefix": "/beta/"}}], "route": [route_to("v2")]},
                {"route": [route_to("v1")]},
            ]
        ),
    )
    c = connect(mesh)
    for path, want in [("/beta/x", "v2"), ("/beta", "v1"), ("/", "v1"), ("/beta/?q=1", "v2")]:
        r = await c.get(f"http://reviews:9080{path}")
        assert r.headers["x-backend"] == want, path


async def test_round_robin_from_destination_rule(backends: Any, connect: Any) -> None:
    bs = backends("a", "b", "c")
    mesh = make_mesh(service_entry([endpoint(x) for x in bs]), destination_rule(lb="ROUND_ROBIN"))
    c = connect(mesh)
    order = [(await c.get(URL)).headers["x-backend"] for _ in range(30)]
    assert [x.count for x in bs] == [10, 10, 10]
    assert order[:3] * 10 == order  # a fixed cycle
    assert decision(await c.get(URL)).endpoint_reason == "ROUND_ROBIN"


async def test_unknown_host_passes_through(backends: Any, connect: Any) -> None:
    v1, outside = backends("v1", "outside")
    mesh = make_mesh(service_entry([endpoint(v1)]))
    c = connect(mesh)
    for url in (f"{outside.url}/plain?x=1", f"http://localhost:{outside.port}/by-name"):
        r = await c.get(url)
        assert r.status_code == 200
        assert r.headers["x-backend"] == "outside"
        assert "pymesh.decision" not in r.extensions
    assert outside.targets == ["/plain?x=1", "/by-name"]
    assert v1.count == 0


@pytest.mark.parametrize(
    "host",
    ["reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"],
)
async def test_name_forms_and_service_port_to_target_port(
    backends: Any, connect: Any, host: str
) -> None:
    web, admin = backends("web", "admin")
    ports = [
        {"number": 9080, "name": "http", "protocol": "HTTP"},
        {"number": 9081, "name": "admin", "protocol": "HTTP"},
    ]
    ep = {"address": "127.0.0.1", "ports": {"http": web.port, "admin": admin.port}}
    mesh = make_mesh(service_entry([ep], ports=ports))
    c = connect(mesh)

    r = await c.get(f"http://{host}:9080/a/b?q=1")
    assert (r.status_code, r.headers["x-backend"]) == (200, "web")
    d = decision(r)
    assert d.service == "reviews.default.svc.cluster.local"
    assert [a.endpoint for a in d.attempts] == [web.label]
    assert "9080" in d.destination

    r = await c.get(f"http://{host}:9081/admin")
    assert (r.status_code, r.headers["x-backend"]) == (200, "admin")
    assert [a.endpoint for a in decision(r).attempts] == [admin.label]

    assert web.targets == ["/a/b?q=1"]  # path and query arrive as sent
    assert admin.targets == ["/admin"]


async def test_other_namespace_reaches_service_by_namespaced_name(
    backends: Any, connect: Any
) -> None:
    import random

    import pymesh
    from tests.e2e.meshkit import to_yaml

    (b,) = backends("v1")
    mesh = pymesh.Mesh.from_yaml(
        to_yaml(service_entry([endpoint(b)])),
        service="ratings",
        namespace="other",
        rng=random.Random(1),
    )
    c = connect(mesh)
    for host in ("reviews.default", "reviews.default.svc.cluster.local"):
        r = await c.get(f"http://{host}:9080/")
        assert (r.status_code, r.headers["x-backend"]) == (200, "v1")
        assert decision(r).service == "reviews.default.svc.cluster.local"
    # bare `reviews` from namespace `other` is reviews.other: not this service
    assert mesh.snapshot.resolve("reviews") is None


async def test_update_switches_route_and_calls_in_flight_finish_on_old(
    backends: Any, connect: Any
) -> None:
    v1, v2 = backends("v1", "v2")
    v1.script = lambda n: Reply(delay=0.4) if n == 1 else Reply()  # the first call stays in flight
    base = [service_entry([endpoint(v1), endpoint(v2)]), destination_rule(subsets=["v1", "v2"])]
    mesh = make_mesh(*base, virtual_service([{"route": [route_to("v1")]}]))
    c = connect(mesh)
    old_version = mesh.snapshot.version
    result: dict[str, Any] = {}

    async def in_flight() -> None:
        result["r"] = await c.background_get(URL)

    async with anyio.create_task_group() as tg:
        tg.start_soon(in_flight)
        await eventually(lambda: v1.count == 1)  # it reached v1 and waits there
        mesh.update(load_config(*base, virtual_service([{"route": [route_to("v2")]}])))
        new_version = mesh.snapshot.version
        assert new_version != old_version
        for _ in range(20):
            r = await c.get(URL)
            assert r.headers["x-backend"] == "v2"
            assert decision(r).snapshot_version == new_version
            assert decision(r).subset == "v2"
    old = result["r"]
    assert (old.status_code, old.headers["x-backend"]) == (200, "v1")
    assert decision(old).snapshot_version == old_version
    assert v1.count == 1


async def test_ejection_survives_update_with_same_endpoints(backends: Any, connect: Any) -> None:
    good, bad = backends("good", "bad")
    bad.always(503)
    se = service_entry([endpoint(good), endpoint(bad)])
    dr = destination_rule(
        outlier={
            "consecutive5xxErrors": 3,
            "interval": "1s",
            "baseEjectionTime": "30s",
            "maxEjectionPercent": 100,
        }
    )
    retries = {"attempts": 2, "retryOn": "5xx"}
    mesh = make_mesh(se, dr, virtual_service([{"route": [route_to()], "retries": retries}]))
    c = connect(mesh)
    for _ in range(200):
        r = await c.get(URL)
        assert r.status_code == 200
        if bad.count >= 3:
            break
    assert bad.count == 3

    # a new route (a timeout added), the same endpoints: the ejection must carry over
    vs2 = virtual_service([{"route": [route_to()], "retries": retries, "timeout": "5s"}])
    mesh.update(load_config(se, dr, vs2))
    for _ in range(30):
        r = await c.get(URL)
        assert r.status_code == 200
        assert decision(r).snapshot_version == mesh.snapshot.version
        assert [a.endpoint for a in decision(r).attempts] == [good.label]
    assert bad.count == 3

    # an identical push (a heartbeat resend) resets nothing either
    mesh.update(load_config(se, dr, vs2))
    for _ in range(30):
        assert (await c.get(URL)).status_code == 200
    assert bad.count == 3

    # nor does a new load balancer for the same endpoints (the endpoint state is per address)
    dr_rr = destination_rule(
        lb="ROUND_ROBIN", outlier=dr["spec"]["trafficPolicy"]["outlierDetection"]
    )
    mesh.update(load_config(se, dr_rr, vs2))
    for _ in range(30):
        assert (await c.get(URL)).status_code == 200
    assert bad.count == 3
