"""The HTTP API in process (httpx over ASGI): auth, status codes, error bodies, the workload
principal seam, ACK/NACK status. The real process and the watch stream are in
test_process.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pymesh_controlplane.auth import Principal
from pymesh_controlplane.server import ControlPlane, Settings

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": "Bearer admin-secret"}
WORKLOAD = {"Authorization": "Bearer join-reviews"}
YAML = {"content-type": "application/yaml"}

SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 18081}}]
"""


class JoinTokens:
    """A stand-in for the identity layer's join tokens: one token bound to default/reviews."""

    def authenticate(self, token: str) -> Principal | None:
        return Principal("workload", "default", "reviews") if token == "join-reviews" else None


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path, max_body=4096, durable=False, extra_authenticators=(JoinTokens(),)
    )
    async with ControlPlane(settings, admin_token="admin-secret") as cp:
        transport = httpx.ASGITransport(app=cp.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as c:
            yield c


def register_body(**kw: object) -> dict[str, object]:
    body: dict[str, object] = {
        "agent": "reviews-1",
        "service": "reviews",
        "serviceAccount": "reviews",
        "address": "127.0.0.1",
        "ports": [{"name": "http", "port": 18081, "servicePort": 9080}],
    }
    body.update(kw)
    return body


async def test_health_and_spec(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json()["status"] == "ready"
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/apply", "/v1/watch", "/v1/workloads", "/v1/agents/{agent}/ack"} <= set(
        spec["paths"]
    )
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    metrics = (await client.get("/metrics")).text
    for name in (
        "pymesh_cp_pushes_total",
        "pymesh_cp_push_latency_seconds_bucket",
        "pymesh_cp_connected_agents",
        "pymesh_cp_rejected_applies_total",
    ):
        assert name in metrics


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/v1/apply"),
        ("PUT", "/v1/resources/ServiceEntry/default/reviews"),
        ("DELETE", "/v1/resources/ServiceEntry/default/reviews"),
        ("POST", "/v1/workloads"),
        ("GET", "/v1/resources"),
        ("GET", "/v1/watch?agent=a"),
        ("GET", "/v1/agents"),
    ],
)
async def test_anonymous_calls_are_refused(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
        r = await client.request(method, url, content=SE, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/v1/resources", headers=ADMIN)).json()["items"] == []


async def test_apply_invalid_is_422_with_findings(client: httpx.AsyncClient) -> None:
    bad = SE + "---\n" + SE.replace("name: reviews", "name: ratings").replace("hosts", "hostz")
    r = await client.post("/v1/apply?filename=mesh.yaml", content=bad, headers=ADMIN | YAML)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_config"
    (finding,) = [f for f in body["findings"] if f["severity"] == "error" and f["code"] == "PM0002"]
    assert (finding["file"], finding["line"], finding["path"]) == ("mesh.yaml", 14, "spec.hostz")
    assert (await client.get("/v1/resources", headers=ADMIN)).json()["items"] == []
    metrics = (await client.get("/metrics")).text
    assert "pymesh_cp_rejected_applies_total 1.0" in metrics
    r = await client.post("/v1/apply", content=b"\xff\xfe", headers=ADMIN)
    assert r.status_code == 400


async def test_oversized_bodies_are_413(client: httpx.AsyncClient) -> None:
    big = SE + "#" * 5000
    r = await client.post("/v1/apply", content=big, headers=ADMIN | YAML)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"#" * 1000

    r = await client.post("/v1/apply", content=chunks(), headers=ADMIN | YAML)
    assert r.status_code == 413
    assert (await client.get("/v1/resources", headers=ADMIN)).json()["items"] == []


async def test_put_get_if_match(client: httpx.AsyncClient) -> None:
    url = "/v1/resources/serviceentries/default/reviews"
    r = await client.put(url, content=SE, headers=ADMIN | YAML | {"If-None-Match": "*"})
    assert r.status_code == 201
    etag = r.headers["etag"]
    r = await client.get(url, headers=ADMIN)
    assert r.headers["etag"] == etag
    assert r.json()["metadata"]["resourceVersion"] == etag.strip('"')
    changed = SE.replace("18081", "18082")
    r = await client.put(url, content=changed, headers=ADMIN | YAML | {"If-Match": '"1"'})
    assert r.status_code == 412 and r.json()["error"] == "precondition_failed"
    r = await client.put(url, content=changed, headers=ADMIN | YAML | {"If-Match": etag})
    assert r.status_code == 200
    r = await client.delete(url, headers=ADMIN | {"If-Match": etag})
    assert r.status_code == 412
    r = await client.put("/v1/resources/vs/default/reviews", content=SE, headers=ADMIN | YAML)
    assert r.status_code == 400 and "URL names" in r.json()["message"]
    assert (await client.delete(url, headers=ADMIN)).status_code == 200
    assert (await client.get(url, headers=ADMIN)).status_code == 404
    r = await client.get("/v1/resources/Gateway", headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_workload_principal_is_scoped(client: httpx.AsyncClient) -> None:
    # a join token for default/reviews may register default/reviews only
    r = await client.post("/v1/workloads", json=register_body(), headers=WORKLOAD)
    assert r.status_code == 200, r.text
    reg = r.json()
    assert reg["created"] and reg["ttlSeconds"] == 15.0 and reg["heartbeatSeconds"] == 5.0
    r = await client.post(
        "/v1/workloads", json=register_body(serviceAccount="ratings"), headers=WORKLOAD
    )
    assert r.status_code == 403
    r = await client.post("/v1/apply", content=SE, headers=WORKLOAD | YAML)
    assert r.status_code == 403  # admin operations need the admin token
    r = await client.get("/v1/snapshot?namespace=prod", headers=WORKLOAD)
    assert r.status_code == 403
    r = await client.get(f"/v1/snapshot?workload={reg['workload']}", headers=WORKLOAD)
    assert r.status_code == 200
    snap = r.json()
    assert snap["type"] == "snapshot" and [d["kind"] for d in snap["resources"]] == [
        "ServiceEntry",
        "WorkloadEntry",
    ]
    hb = await client.post(
        f"/v1/workloads/{reg['workload']}/heartbeat",
        json={"agent": "reviews-1", "stats": [{"destination": "ratings:9080", "requests": 3}]},
        headers=WORKLOAD,
    )
    assert hb.status_code == 200 and hb.json() == {"ttlSeconds": 15.0, "heartbeatSeconds": 5.0}
    r = await client.post(
        "/v1/workloads/nope-123/heartbeat", json={"agent": "reviews-1"}, headers=ADMIN
    )
    assert r.status_code == 404 and r.json()["error"] == "not_registered"
    r = await client.delete(f"/v1/workloads/{reg['workload']}/agents/reviews-1", headers=WORKLOAD)
    assert r.json() == {"workload": reg["workload"], "agent": "reviews-1", "workloadRemoved": True}


async def test_ack_nack_status(client: httpx.AsyncClient) -> None:
    snap = (await client.get("/v1/snapshot", headers=ADMIN)).json()
    r = await client.post(
        "/v1/agents/a-1/ack",
        json={"revision": snap["revision"], "digest": snap["digest"], "error": "boom: bad route"},
        headers=ADMIN,
    )
    assert r.status_code == 204
    (st,) = (await client.get("/v1/agents", headers=ADMIN)).json()["items"]
    assert st["nack"] == {
        "revision": snap["revision"],
        "digest": snap["digest"],
        "error": "boom: bad route",
    }
    await client.post(
        "/v1/agents/a-1/ack",
        json={"revision": snap["revision"], "digest": snap["digest"]},
        headers=ADMIN,
    )
    (st,) = (await client.get("/v1/agents", headers=ADMIN)).json()["items"]
    assert st["nack"] is None and st["acked"]["digest"] == snap["digest"]


async def test_request_validation_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/workloads", json=register_body(ports=[]), headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = await client.post("/v1/workloads", json=register_body(surprise=1), headers=ADMIN)
    assert r.status_code == 422
    r = await client.get("/v1/snapshot?labels=novalue", headers=ADMIN)
    assert r.status_code == 400
    r = await client.post("/v1/workloads", json=register_body(labels={"a b": "c"}), headers=ADMIN)
    assert r.status_code == 422 and r.json()["findings"]
