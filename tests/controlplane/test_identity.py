"""Join tokens and CSR signing through the API (in process): a token gets its own identity and
nothing else; expired, revoked and unknown tokens are refused; garbage CSRs and CSRs naming
another identity are refused; signing is rate-limited per identity; secrets are stored
hashed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pymesh.identity import SpiffeId, create_csr, generate_key
from pymesh_controlplane.server import ControlPlane, Settings
from pymesh_controlplane.tokens import TOKEN_PREFIX, parse_token

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    settings = Settings(data_dir=tmp_path, durable=False, csr_rate=0.001, csr_burst=3)
    async with ControlPlane(settings, admin_token="admin-secret") as cp:
        yield cp


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=plane.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as c:
        yield c


async def token_for(client: httpx.AsyncClient, sa: str, ttl: float | None = 3600.0) -> str:
    r = await client.post(
        "/v1/tokens", json={"serviceAccount": sa, "ttlSeconds": ttl}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def pem_csr(identity: SpiffeId | None = None) -> str:
    return (
        x509.load_der_x509_csr(create_csr(generate_key(), identity))
        .public_bytes(Encoding.PEM)
        .decode()
    )


async def test_token_gets_its_own_svid(client: httpx.AsyncClient, plane: ControlPlane) -> None:
    token = await token_for(client, "reviews")
    parsed = parse_token(token)
    assert parsed is not None
    bundle = (await client.get("/v1/trust-bundle")).json()
    assert parsed[2] == bundle["caHash"] == plane.ca_hash  # the pin travels in the token
    auth = {"Authorization": f"Bearer {token}"}
    r = await client.post("/v1/certificates", json={"csr": pem_csr()}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["spiffeId"] == "spiffe://cluster.local/ns/default/sa/reviews"
    leaf = x509.load_pem_x509_certificates(body["certificateChain"].encode())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [body["spiffeId"]]
    assert body["trustBundle"] == bundle["roots"]
    # the same token registers that identity, and no other
    reg = {
        "agent": "r-1",
        "service": "reviews",
        "serviceAccount": "reviews",
        "address": "127.0.0.1",
        "ports": [{"name": "http", "port": 18081}],
    }
    assert (await client.post("/v1/workloads", json=reg, headers=auth)).status_code == 200
    other = reg | {"serviceAccount": "ratings"}
    assert (await client.post("/v1/workloads", json=other, headers=auth)).status_code == 403


async def test_a_token_never_gets_another_identity(client: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {await token_for(client, 'reviews')}"}
    other = SpiffeId.workload("cluster.local", "default", "ratings")
    r = await client.post("/v1/certificates", json={"csr": pem_csr(other)}, headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "csr_rejected"
    r = await client.post(
        "/v1/certificates", json={"csr": pem_csr(), "serviceAccount": "ratings"}, headers=auth
    )
    assert r.status_code == 403
    r = await client.post("/v1/certificates", json={"csr": "garbage"}, headers=auth)
    assert r.status_code == 400 and "not a certificate signing request" in r.json()["message"]


async def test_expired_revoked_and_unknown_tokens_are_refused(client: httpx.AsyncClient) -> None:
    short = await token_for(client, "reviews", ttl=0.05)
    revoked = await token_for(client, "reviews")
    rid = parse_token(revoked)[0]  # type: ignore[index]
    r = await client.delete(f"/v1/tokens/{rid}", headers=ADMIN)
    assert r.json() == {"id": rid, "revoked": True}
    assert (await client.delete(f"/v1/tokens/{rid}", headers=ADMIN)).status_code == 404
    await asyncio.sleep(0.1)
    forged = revoked.replace(parse_token(revoked)[1], "x" * 43)  # type: ignore[index]
    for token in (short, revoked, forged, "pmj1.nope.nope.nope"):
        r = await client.post(
            "/v1/certificates",
            json={"csr": pem_csr()},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 401, token
    items = (await client.get("/v1/tokens", headers=ADMIN)).json()["items"]
    assert [(t["serviceAccount"], t["expired"]) for t in items] == [("reviews", True)]


async def test_signing_is_rate_limited_per_identity(client: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {await token_for(client, 'reviews')}"}
    codes = [
        (await client.post("/v1/certificates", json={"csr": pem_csr()}, headers=auth)).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    # another identity has its own bucket
    admin_csr = {"csr": pem_csr(), "namespace": "default", "serviceAccount": "ratings"}
    assert (await client.post("/v1/certificates", json=admin_csr, headers=ADMIN)).status_code == 200
    assert 'pymesh_cp_csrs_total{result="limited"} 1.0' in (await client.get("/metrics")).text


async def test_token_secrets_are_stored_hashed(
    client: httpx.AsyncClient, plane: ControlPlane
) -> None:
    token = await token_for(client, "reviews")
    token_id, secret, _ = parse_token(token)  # type: ignore[misc]
    (kv,) = (await plane.store.range(TOKEN_PREFIX, prefix=True)).kvs
    assert kv.key == TOKEN_PREFIX + token_id
    assert secret.encode() not in kv.value
    listed = (await client.get("/v1/tokens", headers=ADMIN)).text
    assert secret not in listed and "secretSha256" not in listed
