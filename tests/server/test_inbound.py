"""The inbound side for real: `Mesh.server` with mesh mTLS, PeerAuthentication, path
normalization and AuthorizationPolicy, against real clients on loopback (httpx with an SVID,
raw sockets for what httpx refuses to send, curl as a non-Python client)."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import pymesh
from pymesh.asgi import peer
from pymesh.identity import CertificateAuthority, SpiffeId, WorkloadIdentity
from tests.helpers import curl, shared_data

pytestmark = pytest.mark.slow

DENY_PRIVATE = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-private, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/private/*", "/private"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-productpage, namespace: default}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
  - to: [{operation: {paths: ["/health"]}}]
"""

STRICT = """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec: {mtls: {mode: STRICT}}
"""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = f"{scope['path']}|{scope['raw_path'].decode()}|{peer(scope)}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate("cluster.local")


def identity(ca: CertificateAuthority, sa: str) -> WorkloadIdentity:
    return WorkloadIdentity.from_ca(ca, SpiffeId.workload("cluster.local", "default", sa))


@pytest.fixture(scope="module")
def permissive(ca: CertificateAuthority) -> Iterator[tuple[pymesh.Mesh, Any]]:
    mesh = pymesh.Mesh.from_yaml(DENY_PRIVATE, service="reviews", ca=ca)
    with mesh.server(app) as srv:
        yield mesh, srv
    mesh.close()


@pytest.fixture(scope="module")
def strict(ca: CertificateAuthority) -> Iterator[tuple[pymesh.Mesh, Any]]:
    mesh = pymesh.Mesh.from_yaml(DENY_PRIVATE + STRICT, service="reviews", ca=ca)
    with mesh.server(app) as srv:
        yield mesh, srv
    mesh.close()


def test_mtls_peer_reaches_app_and_allow_policy_applies(
    permissive: tuple[pymesh.Mesh, Any], ca: CertificateAuthority
) -> None:
    _, srv = permissive
    with httpx.Client(verify=identity(ca, "productpage").client_context()) as c:
        r = c.get(f"https://127.0.0.1:{srv.port}/reviews/1")
        assert r.status_code == 200
        assert r.text == "/reviews/1|/reviews/1|spiffe://cluster.local/ns/default/sa/productpage"
    with httpx.Client(verify=identity(ca, "ratings").client_context()) as c:
        r = c.get(f"https://127.0.0.1:{srv.port}/reviews/1")
        assert (r.status_code, r.text) == (403, "RBAC: access denied")
        assert "only-productpage" not in r.text  # the policy name goes to the log only
        assert c.get(f"https://127.0.0.1:{srv.port}/health").status_code == 200


def test_permissive_takes_plaintext_and_tls_without_identity(
    permissive: tuple[pymesh.Mesh, Any],
) -> None:
    _, srv = permissive
    plain = httpx.get(f"http://127.0.0.1:{srv.port}/health")
    assert plain.status_code == 200 and plain.text.endswith("|None")
    # no identity: the ALLOW policy that needs productpage's principal denies
    assert httpx.get(f"http://127.0.0.1:{srv.port}/reviews/1").status_code == 403
    tls = httpx.get(f"https://127.0.0.1:{srv.port}/health", verify=ssl._create_unverified_context())
    assert tls.status_code == 200 and tls.text.endswith("|None")


def test_strict_refuses_plaintext_and_certificate_less_tls(
    strict: tuple[pymesh.Mesh, Any], ca: CertificateAuthority
) -> None:
    _, srv = strict
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{srv.port}/health")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"https://127.0.0.1:{srv.port}/health", verify=ssl._create_unverified_context())
    with httpx.Client(verify=identity(ca, "productpage").client_context()) as c:
        assert c.get(f"https://127.0.0.1:{srv.port}/health").status_code == 200


def test_certificate_from_another_ca_is_refused(strict: tuple[pymesh.Mesh, Any]) -> None:
    _, srv = strict
    other = CertificateAuthority.generate("cluster.local")
    with (
        httpx.Client(verify=identity(other, "productpage").client_context()) as c,
        pytest.raises(httpx.TransportError),
    ):
        c.get(f"https://127.0.0.1:{srv.port}/health")


def _encode_once(s: str) -> str:
    return quote(s, safe="/")


def _encode_twice(s: str) -> str:
    return quote(quote(s, safe="/"), safe="/")


def test_deny_private_holds_for_every_traversal_payload_on_a_real_server(
    permissive: tuple[pymesh.Mesh, Any], ca: CertificateAuthority
) -> None:
    """Istio's own fuzzing wordlist, plain and percent-encoded once and twice, sent raw (no
    client-side normalization) to a real server: nothing reaches /private."""
    _, srv = permissive
    payloads = [
        line.rstrip("\n")
        for line in shared_data("istio-traversal-wordlist.txt").read_text().splitlines()
        if line.strip()
    ]
    assert len(payloads) == 847
    conn = RawTls(srv.port, identity(ca, "productpage").client_context())
    reached: list[str] = []
    statuses: dict[int, int] = {}
    try:
        for payload in payloads:
            for enc in (lambda s: s, _encode_once, _encode_twice):
                target = "/public/" + enc(payload)
                if any(c in target for c in " \r\n\t#"):
                    target = "/public/" + _encode_once(payload)
                status, body = conn.get(target)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200 and body.split(b"|")[0].decode().startswith("/private"):
                    reached.append(target)
    finally:
        conn.close()
    assert reached == []
    # the traversals that resolve into /private are really denied (403), not just lost
    assert statuses.get(403, 0) > 300, statuses


def _read_chunked(f: Any) -> bytes:
    out = b""
    while True:
        size = int(f.readline().split(b";")[0], 16)
        chunk = f.read(size + 2)[:size]
        if size == 0:
            return out
        out += chunk


class RawTls:
    """One keep-alive TLS connection sending request targets exactly as given (no client-side
    normalization); reconnects when the server closes (it does after a 400)."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port = port
        self.ctx = ctx
        self.sock: ssl.SSLSocket | None = None

    def _connect(self) -> Any:
        self.close()
        self.sock = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port)))
        return self.sock.makefile("rb")

    def get(self, target: str) -> tuple[int, bytes]:
        for _ in range(2):
            f = self._connect() if self.sock is None else self._file
            self._file = f
            assert self.sock is not None
            self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: reviews\r\n\r\n".encode("latin-1"))
            status_line = f.readline()
            if not status_line:
                self.close()
                continue
            status = int(status_line.split()[1])
            length = 0
            close = chunked = False
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
                elif name.lower() == "transfer-encoding":
                    chunked = True
            body = _read_chunked(f) if chunked else f.read(length) if length else b""
            if close:
                self.close()
            return status, body
        return 400, b""  # the server refused the request line itself

    def close(self) -> None:
        if self.sock is not None:
            self._file.close()
            self.sock.close()
            self.sock = None


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (b"X-Bad: a\x00b", 400),
        (b"X-Fine:   padded   ", 200),
    ],
)
def test_header_hygiene_on_the_wire(
    permissive: tuple[pymesh.Mesh, Any], header: bytes, status: int
) -> None:
    _, srv = permissive
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: reviews\r\n" + header + b"\r\n\r\n")
        got = s.recv(4096)
    assert int(got.split()[1]) == status


def test_xfcc_from_the_network_is_ignored(permissive: tuple[pymesh.Mesh, Any]) -> None:
    _, srv = permissive
    r = httpx.get(
        f"http://127.0.0.1:{srv.port}/reviews/1",
        headers={"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/productpage"},
    )
    assert r.status_code == 403  # no identity claimed by a header


def test_curl_with_a_client_certificate_and_the_dns_san_name(
    strict: tuple[pymesh.Mesh, Any], ca: CertificateAuthority, tmp_path: Path
) -> None:
    """A stock TLS client that checks DNS names only: curl with an SVID, verifying the
    server by the DNS SAN derived from its identity."""
    _, srv = strict
    key, svid = ca.issue(SpiffeId.workload("cluster.local", "default", "productpage"))
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "cert.pem").write_text(svid.chain_pem())
    (tmp_path / "ca.pem").write_text(ca.trust_bundle.pem())
    name = "reviews.default.serviceaccount.identity.cluster.local"
    cmd = [
        curl(),
        "-sS",
        "--cert",
        str(tmp_path / "cert.pem"),
        "--key",
        str(tmp_path / "key.pem"),
        "--cacert",
        str(tmp_path / "ca.pem"),
        "--resolve",
        f"{name}:{srv.port}:127.0.0.1",
        f"https://{name}:{srv.port}/reviews/1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("|spiffe://cluster.local/ns/default/sa/productpage")
    wrong = [c.replace(name, "ratings.default.serviceaccount.identity.cluster.local") for c in cmd]
    bad = subprocess.run(wrong, capture_output=True, text=True, timeout=20)
    assert bad.returncode != 0


@pytest.mark.parametrize("extra", ["", STRICT], ids=["permissive", "strict"])
def test_stop_does_not_wait_for_idle_tls_clients(ca: CertificateAuthority, extra: str) -> None:
    """An idle pooled TLS client never answers a close_notify: the server drops its idle TLS
    connections at once on stop instead of waiting for it (uvicorn's graceful wait stays for
    requests in flight)."""
    import time

    mesh = pymesh.Mesh.from_yaml(DENY_PRIVATE + extra, service="reviews", ca=ca)
    srv = mesh.server(app).start()
    client = httpx.Client(verify=identity(ca, "productpage").client_context())
    try:
        assert client.get(f"https://127.0.0.1:{srv.port}/reviews/1").status_code == 200
        started = time.monotonic()
        srv.stop(timeout=30)
        took = time.monotonic() - started
    finally:
        client.close()
        mesh.close()
    assert took < 5, f"stop() waited {took:.1f} s for an idle TLS client"
