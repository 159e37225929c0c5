"""End to end: the errors a meshed call raises say which service, which rule and what was tried,
carry the decision record, and are httpx transport errors too. Sync and async clients alike."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import pymesh
from tests.e2e.meshkit import (
    URL,
    destination_rule,
    endpoint,
    make_mesh,
    route_to,
    service_entry,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(30)]

FQDN = "reviews.default.svc.cluster.local"


def check_error(err: Exception, flag: str) -> Any:
    """What every meshed-call error shares; returns its decision."""
    assert isinstance(err, httpx.TransportError)
    assert isinstance(err, pymesh.CallError)
    assert isinstance(err, pymesh.MeshError)
    d = err.decision  # type: ignore[attr-defined]
    assert d is not None
    assert flag in d.flags
    assert d.reason and d.reason in str(err)
    return d


async def test_no_route_error(backends: Any, connect: Any) -> None:
    (b,) = backends("v1")
    vs = virtual_service(
        [{"match": [{"headers": {"x-canary": {"exact": "yes"}}}], "route": [route_to()]}]
    )
    c = connect(make_mesh(service_entry([endpoint(b)]), vs))
    with pytest.raises(pymesh.NoRouteError) as ei:
        await c.get(URL)
    msg = str(ei.value)
    assert FQDN in msg
    assert "VirtualService default/reviews" in msg
    check_error(ei.value, "NR")
    assert ei.value.decision.attempts == []
    assert b.count == 0
    # the same call with the header is routed
    assert (await c.get(URL, headers={"x-canary": "yes"})).status_code == 200


async def test_no_healthy_endpoint_when_all_ejected(backends: Any, connect: Any) -> None:
    (b,) = backends("v1")
    b.always(503)
    dr = destination_rule(
        outlier={
            "consecutive5xxErrors": 1,
            "interval": "1s",
            "baseEjectionTime": "30s",
            "maxEjectionPercent": 100,
        }
    )
    c = connect(make_mesh(service_entry([endpoint(b)]), dr))
    assert (await c.get(URL)).status_code == 503  # ... and the only endpoint is ejected
    with pytest.raises(pymesh.NoHealthyEndpointError) as ei:
        await c.get(URL)
    msg = str(ei.value)
    assert "1 of 1 ejected" in msg
    assert FQDN in msg
    check_error(ei.value, "UH")
    assert b.count == 1


@pytest.mark.parametrize("how", ["subset-selects-nothing", "service-entry-without-endpoints"])
async def test_no_healthy_endpoint_when_none_defined(backends: Any, connect: Any, how: str) -> None:
    (b,) = backends("v1")
    if how == "subset-selects-nothing":
        mesh = make_mesh(
            service_entry([endpoint(b)]),
            destination_rule(subsets=["v1", "v9"]),
            virtual_service([{"route": [route_to("v9")]}]),
        )
    else:
        mesh = make_mesh(service_entry([]))
    c = connect(mesh)
    with pytest.raises(pymesh.NoHealthyEndpointError) as ei:
        await c.get(URL)
    assert "no endpoints" in str(ei.value)
    assert FQDN in str(ei.value)
    check_error(ei.value, "UH")
    assert b.count == 0


async def test_retries_exhausted_when_every_endpoint_refuses(
    connect: Any, refusing_port: Any
) -> None:
    p1, p2 = refusing_port(), refusing_port()
    c = connect(make_mesh(service_entry([endpoint(p1, "a"), endpoint(p2, "b")])))
    with pytest.raises(pymesh.RetriesExhaustedError) as ei:
        await c.get(URL)
    err = ei.value
    d = check_error(err, "URX")
    msg = str(err)
    assert "3 attempts" in msg
    assert FQDN in msg
    for p in (p1, p2):
        assert f"127.0.0.1:{p}" in msg  # every endpoint tried is listed
    assert msg.count("connect-failure") >= 3
    assert [a.failure for a in d.attempts] == ["connect-failure"] * 3
    assert {a.endpoint for a in d.attempts[:2]} == {f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"}
    assert d.attempts[0].retry_on == "connect-failure"


async def test_no_route_for_a_port_the_service_does_not_declare(
    backends: Any, connect: Any
) -> None:
    (b,) = backends("v1")
    c = connect(make_mesh(service_entry([endpoint(b)])))
    with pytest.raises(pymesh.NoRouteError) as ei:
        await c.get("http://reviews:9999/")
    assert "9999" in str(ei.value)
    assert FQDN in str(ei.value)
    check_error(ei.value, "NR")
    assert b.count == 0


async def test_decision_of_an_error_is_json_ready(connect: Any, refusing_port: Any) -> None:
    import json

    c = connect(make_mesh(service_entry([endpoint(refusing_port(), "a")])))
    with pytest.raises(pymesh.RetriesExhaustedError) as ei:
        await c.get(URL)
    d = json.loads(json.dumps(ei.value.decision.as_dict()))
    assert d["service"] == FQDN
    assert "URX" in d["response_flags"].split(",")
    assert [x["failure"] for x in d["attempts"]] == ["connect-failure"] * 3
