"""`MeshMiddleware` on a server other than `Mesh.server`: it reads only the ASGI TLS extension.
A client chain there (PEM, leaf first) is checked by the SPIFFE rules against the mesh's trust
bundle; a chain from another CA gives no identity."""

from __future__ import annotations

import asyncio
from typing import Any

import pymesh
from pymesh.asgi import MeshMiddleware, peer
from pymesh.identity import CertificateAuthority, SpiffeId

ALLOW_PRODUCTPAGE = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-productpage, namespace: default}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
"""


def call(mw: MeshMiddleware, chain: list[str]) -> tuple[int, str | None]:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["peer"] = peer(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw.app = app
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [(b"host", b"reviews")],
        "server": ("127.0.0.1", 8443),
        "client": ("127.0.0.1", 50000),
        "scheme": "https",
        "extensions": {"tls": {"client_cert_chain": chain, "tls_version": 0x0304}},
    }
    asyncio.run(mw(scope, receive, send))
    return sent[0]["status"], seen.get("peer")


def test_chain_from_another_server_is_checked_against_the_mesh_bundle() -> None:
    ca = CertificateAuthority.generate("cluster.local")
    mesh = pymesh.Mesh.from_yaml(ALLOW_PRODUCTPAGE, service="reviews", ca=ca)
    mw = MeshMiddleware(lambda s, r, c: None, mesh)  # type: ignore[arg-type, return-value]
    _, svid = ca.issue(SpiffeId.workload("cluster.local", "default", "productpage"))
    chain = [svid.chain_pem()]
    assert call(mw, chain) == (200, "spiffe://cluster.local/ns/default/sa/productpage")
    other = CertificateAuthority.generate("cluster.local")
    _, forged = other.issue(SpiffeId.workload("cluster.local", "default", "productpage"))
    status, who = call(mw, [forged.chain_pem()])
    assert (status, who) == (403, None)  # no identity: the ALLOW policy does not match
    mesh.close()
