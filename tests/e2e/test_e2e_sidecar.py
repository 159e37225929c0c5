"""End to end: Sidecar egress with the sync and the async meshed client — REGISTRY_ONLY refuses
hosts outside the imported services with a clear error (flag NR), ALLOW_ANY passes them
through, and a service the egress hosts do not import is treated as unknown."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import pymesh
from tests.e2e.meshkit import endpoint, make_mesh, resource, service_entry

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(30)]


def sidecar(hosts: list[str], mode: str, **spec: Any) -> dict[str, Any]:
    return resource(
        "Sidecar",
        "default",
        {"egress": [{"hosts": hosts}], "outboundTrafficPolicy": {"mode": mode}, **spec},
    )


async def test_registry_only_refuses_what_the_sidecar_does_not_import(
    backends: Any, connect: Any
) -> None:
    v1, v2 = backends("v1", "v2")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        service_entry([endpoint(v2)], host="ratings"),
        sidecar(["./ratings.default.svc.cluster.local"], "REGISTRY_ONLY"),
    )
    c = connect(mesh)
    r = await c.get("http://ratings:9080/")
    assert (r.status_code, r.text) == (200, "v2")
    # a mesh service this workload does not import
    with pytest.raises(pymesh.EgressDeniedError) as info:
        await c.get("http://reviews:9080/")
    err = info.value
    assert isinstance(err, httpx.TransportError) and isinstance(err, pymesh.NoRouteError)
    assert err.decision.flags == ["NR"]
    assert str(err) == (
        "egress to reviews:9080 refused: Sidecar default/default has outboundTrafficPolicy "
        "REGISTRY_ONLY, which allows only the mesh services it imports, and "
        "reviews.default.svc.cluster.local is a mesh service, but the egress hosts do not "
        "import it (egress hosts: ./ratings.default.svc.cluster.local)"
    )
    # a host that is no mesh service at all (here: a live server, still refused)
    with pytest.raises(pymesh.EgressDeniedError, match=r"127\.0\.0\.1 is not a mesh service"):
        await c.get(v1.url)
    assert v1.count == 0


async def test_allow_any_passes_unknown_and_unimported_hosts_through(
    backends: Any, connect: Any
) -> None:
    v1, v2 = backends("v1", "v2")
    # `localhost:<v2's port>` is a mesh service whose endpoint is v1: imported, it is routed
    # to v1; not imported, it is an unknown host and goes to the network, where v2 answers
    entry = service_entry(
        [endpoint(v1)], host="localhost", ports=[{"number": v2.port, "name": "http"}]
    )
    url = f"http://localhost:{v2.port}/"
    imported = make_mesh(entry, sidecar(["./*"], "ALLOW_ANY"))
    assert (await connect(imported).get(url)).text == "v1"
    unimported = make_mesh(entry, sidecar(["istio-system/*"], "ALLOW_ANY"))
    c = connect(unimported)
    r = await c.get(url)
    assert r.text == "v2" and "pymesh.decision" not in r.extensions
    r = await c.get(v1.url)  # unknown hosts pass through, as without a Sidecar
    assert r.text == "v1"


async def test_workload_selector_picks_the_sidecar(backends: Any, connect: Any) -> None:
    (v1,) = backends("v1")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        sidecar(["./*"], "ALLOW_ANY"),  # the namespace default
        resource(
            "Sidecar",
            "frontend",
            {
                "workloadSelector": {"labels": {"app": "frontend"}},
                "egress": [{"hosts": ["istio-system/*"]}],
                "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            },
        ),
    )
    with pytest.raises(pymesh.EgressDeniedError, match="Sidecar default/frontend"):
        await connect(mesh).get("http://reviews:9080/")
