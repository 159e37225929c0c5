"""pymesh_fastapi served for real: a FastAPI app behind `add_mesh`, on `Mesh.server` with mesh
mTLS (allow and deny by principal and by path, `Depends(peer)`), and on plain uvicorn with XFCC
(behind the proxy), the lifespan order, and readiness without a lifespan."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

import pymesh
import pymesh_fastapi
from pymesh.identity import CertificateAuthority, SpiffeId, WorkloadIdentity
from pymesh.server.runner import MeshServer
from pymesh.xfcc import MAC_HEADER, XFCC_HEADER, XfccSigner, format_xfcc

pytestmark = pytest.mark.slow

POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-private, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/private/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-callers, namespace: default}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
  - to: [{operation: {paths: ["/health", "/secure"]}}]
"""

PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate("cluster.local")


def svid_client(ca: CertificateAuthority, sa: str) -> httpx.Client:
    """An httpx client holding `sa`'s SVID (and trusting the mesh's CA)."""
    identity = WorkloadIdentity.from_ca(ca, SpiffeId.workload("cluster.local", "default", sa))
    return httpx.Client(verify=identity.client_context(), timeout=10)


def make_app(mesh: pymesh.Mesh, events: list[str], **options: Any) -> FastAPI:
    """The app under test; its own lifespan records what it saw."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = mesh.identity is not None and "running" in repr(mesh.identity)
        events.append(f"app startup (mesh running: {running})")
        yield
        events.append("app shutdown")

    app = FastAPI(lifespan=lifespan)
    pymesh_fastapi.add_mesh(app, mesh, **options)

    @app.get("/whoami")
    async def whoami(
        caller: Annotated[SpiffeId | None, Depends(pymesh_fastapi.peer)],
    ) -> dict[str, str | None]:
        return {
            "peer": str(caller) if caller else None,
            "sa": caller.service_account if caller else None,
        }

    @app.get("/health")
    async def health(caller: Annotated[SpiffeId | None, Depends(pymesh_fastapi.peer)]) -> str:
        return str(caller)

    @app.get("/secure")
    def secure(caller: Annotated[SpiffeId, Depends(pymesh_fastapi.require_peer)]) -> str:
        return caller.uri

    @app.get("/private/{rest:path}")
    async def private(rest: str) -> str:
        return "private " + rest

    return app


@pytest.fixture(scope="module")
def served(ca: CertificateAuthority) -> Iterator[tuple[pymesh.Mesh, MeshServer, list[int]]]:
    """The app on `Mesh.server` (mesh mTLS, PERMISSIVE), counting policy decisions."""
    mesh = pymesh.Mesh.from_yaml(POLICY, service="reviews", ca=ca)
    checks: list[int] = []
    compiled = mesh.inbound_policy()
    original = compiled.check

    def counting(request: Any) -> Any:
        checks.append(1)
        return original(request)

    compiled.check = counting  # type: ignore[method-assign]
    with mesh.server(make_app(mesh, [])) as srv:
        yield mesh, srv, checks
    mesh.close()


def test_allow_and_deny_by_principal_and_path_over_mtls(
    served: tuple[pymesh.Mesh, MeshServer, list[int]], ca: CertificateAuthority
) -> None:
    _, srv, checks = served
    base = f"https://127.0.0.1:{srv.port}"
    with svid_client(ca, "productpage") as c:
        before = len(checks)
        r = c.get(base + "/whoami")
        assert r.status_code == 200
        assert r.json() == {"peer": PRODUCTPAGE, "sa": "productpage"}
        assert len(checks) - before == 1  # Mesh.server's middleware decided; add_mesh's stood by
        # denied by path, whoever asks, also when the path is disguised
        for path in ("/private/x", "/whoami/..%2Fprivate/x", "//private/x", "/%70rivate/x"):
            r = c.get(base + path)
            assert (r.status_code, r.text) == (403, "RBAC: access denied"), path
        assert c.get(base + "/secure").text == f'"{PRODUCTPAGE}"'
    with svid_client(ca, "ratings") as c:
        # denied by principal; the policy's name is not told to the caller
        r = c.get(base + "/whoami")
        assert (r.status_code, r.text) == (403, "RBAC: access denied")
        # allowed by path, with the caller's identity
        r = c.get(base + "/health")
        assert (r.status_code, r.json()) == (200, "spiffe://cluster.local/ns/default/sa/ratings")


def test_peer_is_none_and_require_peer_401_without_mtls(
    served: tuple[pymesh.Mesh, MeshServer, list[int]],
) -> None:
    _, srv, _ = served
    # PERMISSIVE: plaintext is admitted, without an identity
    r = httpx.get(f"http://127.0.0.1:{srv.port}/health")
    assert (r.status_code, r.json()) == (200, "None")
    r = httpx.get(f"http://127.0.0.1:{srv.port}/secure")
    assert r.status_code == 401
    assert httpx.get(f"http://127.0.0.1:{srv.port}/whoami").status_code == 403


def test_lifespan_mesh_ready_before_app_startup_and_closed_after_shutdown(
    ca: CertificateAuthority,
) -> None:
    mesh = pymesh.Mesh.from_yaml(POLICY, service="reviews", ca=ca)
    events: list[str] = []
    # plain uvicorn (no Mesh.server): only add_mesh's lifespan starts the mesh
    server = MeshServer(make_app(mesh, events))
    assert "stopped" in repr(mesh.identity)
    with server:
        assert events == ["app startup (mesh running: True)"]
        assert httpx.get(f"{server.url}/health").status_code == 200
    assert events == ["app startup (mesh running: True)", "app shutdown"]
    assert "stopped" in repr(mesh.identity)  # the mesh closed after the app's own shutdown


def test_behind_the_proxy_xfcc_trusted_only_with_a_valid_mac(
    ca: CertificateAuthority, tmp_path: Any
) -> None:
    mesh = pymesh.Mesh.from_yaml(POLICY, service="reviews", ca=ca)
    signer = XfccSigner.create_file(tmp_path / "xfcc.key")
    xfcc = format_xfcc("spiffe://cluster.local/ns/default/sa/reviews", PRODUCTPAGE)
    with MeshServer(make_app(mesh, [], xfcc_signer=signer)) as server:
        url = f"{server.url}/whoami"
        r = httpx.get(url, headers={XFCC_HEADER: xfcc, MAC_HEADER: signer.sign(xfcc)})
        assert (r.status_code, r.json()["peer"]) == (200, PRODUCTPAGE)
        assert httpx.get(url, headers={XFCC_HEADER: xfcc}).status_code == 403
        bad = {XFCC_HEADER: xfcc, MAC_HEADER: "0" * 64}
        assert httpx.get(url, headers=bad).status_code == 403


def test_without_lifespan_first_request_waits_bounded_then_503(
    ca: CertificateAuthority,
) -> None:
    mesh = pymesh.Mesh.from_yaml(POLICY, service="reviews", ca=ca)
    release = threading.Event()
    real_start = mesh.start

    def slow_start() -> pymesh.Mesh:
        release.wait(10)
        return real_start()

    mesh.start = slow_start  # type: ignore[method-assign]
    app = make_app(mesh, [], ready_timeout=0.3)
    with MeshServer(app, lifespan="off") as server:
        t0 = time.monotonic()
        r = httpx.get(f"{server.url}/health")
        assert (r.status_code, r.text) == (503, "mesh not ready")
        assert 0.25 < time.monotonic() - t0 < 5
        release.set()
        deadline = time.monotonic() + 5
        while (r := httpx.get(f"{server.url}/health")).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert r.status_code == 200
        assert "running" in repr(mesh.identity)
    mesh.close()


def test_lifespan_fails_startup_when_the_mesh_cannot_start(ca: CertificateAuthority) -> None:
    mesh = pymesh.Mesh.from_yaml(POLICY, service="reviews", ca=ca)

    def failing_start() -> pymesh.Mesh:
        raise pymesh.MeshError("no certificate")

    mesh.start = failing_start  # type: ignore[method-assign]
    events: list[str] = []
    app = make_app(mesh, events)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # the ASGI lifespan protocol, as a server drives it
    with pytest.raises(pymesh_fastapi.MeshNotReady, match="could not start: no certificate"):
        asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "could not start" in sent[0]["message"] and "no certificate" in sent[0]["message"]
    assert events == []  # the app's own startup never ran on an unready mesh
