"""The uvicorn protocol subclass: the TLS peer reaches the app in scope["extensions"]["tls"],
checked once per connection, and a refused peer never gets a request through. Real TLS on
loopback with throwaway certificates made here (the identity layer has its own tests)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pymesh.errors import MeshError
from pymesh.server.runner import MeshServer

pytestmark = pytest.mark.slow


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    uri: str | None = None,
    ca: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if uri:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        b = b.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, ca=True)
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> Path:
        p = d / name
        p.write_bytes(data)
        files[name] = p
        return p

    write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(
            who, key, (ca.subject, ca_key), uri=f"spiffe://cluster.local/ns/default/sa/{who}"
        )
        write(f"{who}.pem", cert.public_bytes(serialization.Encoding.PEM))
        write(
            f"{who}.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return files


seen: list[dict[str, Any]] = []


async def echo_tls(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    tls = scope.get("extensions", {}).get("tls")
    seen.append(tls or {})
    body = (tls or {}).get("pymesh.peer") or "none"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


def server_context(pki: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["server.pem"], pki["server.key"])
    ctx.load_verify_locations(pki["ca.pem"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client(pki: dict[str, Path]) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    ctx.check_hostname = False
    ctx.load_cert_chain(pki["client.pem"], pki["client.key"])
    return httpx.Client(verify=ctx)


def uri_san(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uri


def test_peer_identity_reaches_the_app_once_per_connection(pki: dict[str, Path]) -> None:
    calls = []

    def verify(ssl_object: ssl.SSLObject) -> str:
        der = ssl_object.getpeercert(binary_form=True)
        calls.append(der)
        return uri_san(der)

    seen.clear()
    srv = MeshServer(echo_tls, ssl_context=lambda: server_context(pki), verify_peer=verify)
    with srv, client(pki) as c:
        bodies = [c.get(f"https://127.0.0.1:{srv.port}/").text for _ in range(5)]
    assert bodies == ["spiffe://cluster.local/ns/default/sa/client"] * 5
    assert len(calls) == 1  # one connection, checked once
    tls = seen[0]
    assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert tls["client_cert_name"] == "commonName=client"
    assert tls["tls_version"] in (0x0303, 0x0304)


def test_refused_peer_gets_no_request_through(pki: dict[str, Path]) -> None:
    def refuse(ssl_object: ssl.SSLObject) -> str:
        raise MeshError("not expected")

    seen.clear()
    srv = MeshServer(echo_tls, ssl_context=lambda: server_context(pki), verify_peer=refuse)
    with srv, client(pki) as c, pytest.raises(httpx.TransportError):
        c.get(f"https://127.0.0.1:{srv.port}/")
    assert seen == []


def test_plain_http_has_no_tls_extension() -> None:
    seen.clear()
    with MeshServer(echo_tls) as srv, httpx.Client() as c:
        assert c.get(f"{srv.url}/").text == "none"
    assert seen == [{}]
