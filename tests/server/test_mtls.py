"""Mesh mTLS on the wire, both directions, real TLS on loopback: the meshed httpx clients
(sync and async) against `Mesh.server`, and against servers presenting every kind of bad
certificate — each refused before the first request byte, with an error a user understands."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

import pymesh
from pymesh.asgi import peer
from pymesh.identity import CertificateAuthority
from pymesh.server.runner import MeshServer
from tests.identity.certkit import REVIEWS, LeafSpec, ca_key, key_pem, make_leaf

pytestmark = pytest.mark.slow

STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec: {mtls: {mode: STRICT}}
"""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(peer(scope)).encode()})


def service_entry(port: int, sa: str = "reviews") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  ports: [{{number: 9080, name: http}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}, serviceAccount: {sa}}}]
"""


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate("cluster.local")


@pytest.fixture(scope="module")
def reviews(ca: CertificateAuthority) -> Iterator[MeshServer]:
    mesh = pymesh.Mesh.from_yaml(STRICT, service="reviews", ca=ca)
    with mesh.server(app) as srv:
        yield srv
    mesh.close()


def get(mesh: pymesh.Mesh, kind: str) -> httpx.Response:
    if kind == "sync":
        with mesh.http_client(timeout=5) as c:
            return c.get("http://reviews:9080/")

    async def go() -> httpx.Response:
        async with mesh.async_http_client(timeout=5) as c:
            return await c.get("http://reviews:9080/")

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_meshed_clients_speak_mtls_to_mesh_serve(
    reviews: MeshServer, ca: CertificateAuthority, kind: str
) -> None:
    mesh = pymesh.Mesh.from_yaml(service_entry(reviews.port), service="productpage", ca=ca)
    try:
        r = get(mesh, kind)
    finally:
        mesh.close()
    assert r.status_code == 200
    assert r.text == "spiffe://cluster.local/ns/default/sa/productpage"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_server_identity_not_expected_for_the_destination(
    reviews: MeshServer, ca: CertificateAuthority, kind: str
) -> None:
    mesh = pymesh.Mesh.from_yaml(
        service_entry(reviews.port, sa="ratings"), service="productpage", ca=ca
    )
    try:
        with pytest.raises(pymesh.CallError) as ei:
            get(mesh, kind)
    finally:
        mesh.close()
    msg = str(ei.value)
    assert "spiffe://cluster.local/ns/default/sa/reviews is not one of the identities" in msg
    assert "sa/ratings" in msg


def test_client_without_identity_cannot_reach_strict(reviews: MeshServer) -> None:
    # no ca: this workload has no identity, so no auto mTLS: plaintext is refused by STRICT
    mesh = pymesh.Mesh.from_yaml(service_entry(reviews.port), service="productpage")
    try:
        with pytest.raises(httpx.TransportError):
            get(mesh, "sync")
    finally:
        mesh.close()


def _server_with(ca: CertificateAuthority, spec: LeafSpec, signer: Any = None) -> MeshServer:
    """A TLS server presenting a hand-made leaf (signed by `signer`'s CA, default `ca`)."""
    issuer = signer or ca
    key, leaf = make_leaf(issuer, ca_key(issuer), spec)
    d = Path(tempfile.mkdtemp())
    (d / "key.pem").write_bytes(key_pem(key))
    (d / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))

    def context() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
        return ctx

    return MeshServer(app, ssl_context=context)


NOW = time.time()
BAD_SERVERS = {
    "expired": (LeafSpec(not_before=NOW - 7200, not_after=NOW - 3600), "expired"),
    "not-yet-valid": (LeafSpec(not_before=NOW + 3600, not_after=NOW + 7200), "not yet valid"),
    "ca-true": (LeafSpec(ca=True), "CA"),
    "two-uri-sans": (LeafSpec(uris=(REVIEWS, "spiffe://cluster.local/ns/default/sa/x")), "URI"),
    "dns-san-like-spiffe-no-uri": (
        LeafSpec(uris=(), dns=("spiffe://cluster.local/ns/default/sa/reviews",)),
        "URI SAN",
    ),
    "nul-in-san": (LeafSpec(uris=("spiffe://cluster.local/ns/default/sa/rev\x00iews",)), ""),
    "eku-client-auth-only": (LeafSpec(eku=[ExtendedKeyUsageOID.CLIENT_AUTH]), ""),
    "wrong-trust-domain": (LeafSpec(uris=("spiffe://evil.org/ns/default/sa/reviews",)), "trust"),
}


@pytest.mark.parametrize("case", sorted(BAD_SERVERS))
def test_meshed_client_refuses_bad_server_certificates(ca: CertificateAuthority, case: str) -> None:
    spec, words = BAD_SERVERS[case]
    srv = _server_with(ca, spec)
    with srv:
        mesh = pymesh.Mesh.from_yaml(service_entry(srv.port), service="productpage", ca=ca)
        try:
            with pytest.raises(pymesh.CallError) as ei:
                get(mesh, "sync")
        finally:
            mesh.close()
    err = ei.value
    assert err.decision is not None
    assert all(a.failure == "connect-failure" for a in err.decision.attempts)
    assert words.lower() in str(err).lower()


def test_meshed_client_refuses_a_server_from_another_ca(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.generate("cluster.local")
    srv = _server_with(ca, LeafSpec(), signer=other)
    with srv:
        mesh = pymesh.Mesh.from_yaml(service_entry(srv.port), service="productpage", ca=ca)
        try:
            with pytest.raises(pymesh.CallError):
                get(mesh, "sync")
        finally:
            mesh.close()


def test_rotation_under_load_zero_failures(ca: CertificateAuthority) -> None:
    """2 s leaves on both sides, 500 requests across at least 3 rotations: no failure."""
    short = CertificateAuthority.generate("cluster.local", leaf_ttl=2)
    server_mesh = pymesh.Mesh.from_yaml(STRICT, service="reviews", ca=short)
    with server_mesh.server(app) as srv:
        client_mesh = pymesh.Mesh.from_yaml(
            service_entry(srv.port), service="productpage", ca=short
        )
        assert client_mesh.identity is not None and server_mesh.identity is not None
        failures = 0
        start_gen = client_mesh.identity.generation
        deadline = time.monotonic() + 20
        with client_mesh.http_client(timeout=5) as c:
            sent = 0
            while sent < 500 or client_mesh.identity.generation - start_gen < 3:
                try:
                    r = c.get("http://reviews:9080/")
                    failures += r.status_code != 200
                except httpx.HTTPError:
                    failures += 1
                sent += 1
                time.sleep(0.012)
                assert time.monotonic() < deadline, "rotations did not happen in time"
        rotations = client_mesh.identity.generation - start_gen
        client_mesh.close()
    server_mesh.close()
    assert sent >= 500 and rotations >= 3
    assert failures == 0
