"""pymesh_django served for real, in subprocesses (so this test process never configures
Django): the project in tests/integrations/djangoproject/ under gunicorn (WSGI, behind the proxy:
XFCC with an HMAC on TCP, without one on a Unix socket), under ASGI on `Mesh.server` (mesh mTLS)
and on plain uvicorn (XFCC), and readiness without a lifespan (the first requests wait, bounded,
then 503)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pymesh.identity import CertificateAuthority, SpiffeId, WorkloadIdentity
from pymesh.xfcc import MAC_HEADER, XFCC_HEADER, XfccSigner, format_xfcc
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

GUNICORN = Path(sys.executable).with_name("gunicorn")

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
  - to: [{operation: {paths: ["/health"]}}]
"""

PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"
XFCC = format_xfcc("spiffe://cluster.local/ns/default/sa/reviews", PRODUCTPAGE)


class Project:
    """The files a test project process reads: Istio YAML, the dev CA, the XFCC key."""

    def __init__(self, root: Path) -> None:
        self.config = root / "mesh.yaml"
        self.config.write_text(POLICY)
        self.ca_dir = root / "ca"
        self.ca = CertificateAuthority.load_or_create(self.ca_dir)
        self.signer = XfccSigner.create_file(root / "xfcc.key")
        self.key_file = root / "xfcc.key"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(ROOT),
            DJANGO_SETTINGS_MODULE="tests.integrations.djangoproject.settings",
            PYMESH_TEST_CONFIG=str(self.config),
            PYMESH_TEST_CA=str(self.ca_dir),
            PYMESH_TEST_XFCC_KEY=str(self.key_file),
            **extra,
        )
        return env

    def client(self, sa: str) -> httpx.Client:
        sid = SpiffeId.workload("cluster.local", "default", sa)
        identity = WorkloadIdentity.from_ca(self.ca, sid)
        return httpx.Client(verify=identity.client_context(), timeout=10)

    def signed(self, xfcc: str = XFCC) -> dict[str, str]:
        return {XFCC_HEADER: xfcc, MAC_HEADER: self.signer.sign(xfcc)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project(tmp_path_factory.mktemp("djangoproject"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def gunicorn(env: dict[str, str], bind: str | None = None, *options: str) -> Iterator[str]:
    """gunicorn serving the project's WSGI app: on a loopback socket bound here (yields its
    base URL), or on `bind` (`unix:PATH`; yields PATH once it accepts connections)."""
    args = [str(GUNICORN), "--log-level", "warning", "--graceful-timeout", "2"]
    args += ["--no-control-socket", *(options or ("-w", "1"))]
    with contextlib.ExitStack() as stack:
        fds: tuple[int, ...] = ()
        if bind is None:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            sock.set_inheritable(True)
            fds = (sock.fileno(),)
            bind = f"fd://{sock.fileno()}"
            where = f"http://127.0.0.1:{sock.getsockname()[1]}"
        else:
            where = bind.removeprefix("unix:")
        proc = subprocess.Popen(
            [*args, "--bind", bind, "tests.integrations.djangoproject.wsgi"],
            env=env,
            cwd=ROOT,
            pass_fds=fds,
        )
        stack.callback(_stop, proc)
        if bind.startswith("unix:"):
            deadline = time.monotonic() + 15
            while not _accepts(where):
                assert proc.poll() is None, "gunicorn exited"
                assert time.monotonic() < deadline, "gunicorn did not listen"
                time.sleep(0.02)
        yield where


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
        except OSError:
            return False
        return True


# -- WSGI (gunicorn), behind the proxy ----------------------------------------------------


@pytest.fixture(scope="module")
def wsgi(project: Project) -> Iterator[str]:
    with gunicorn(project.env()) as url:
        yield url


def test_wsgi_xfcc_with_a_valid_mac_is_the_caller_identity(project: Project, wsgi: str) -> None:
    r = httpx.get(f"{wsgi}/whoami", headers=project.signed(), timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert (body["peer"], body["sa"]) == (PRODUCTPAGE, "productpage")
    assert body["xfcc"] is None  # identity headers never reach the app


def test_wsgi_xfcc_without_a_valid_mac_is_ignored_and_policy_denies(
    project: Project, wsgi: str
) -> None:
    url = f"{wsgi}/whoami"
    assert httpx.get(url, headers={XFCC_HEADER: XFCC}, timeout=10).status_code == 403
    forged = {XFCC_HEADER: XFCC, MAC_HEADER: project.signer.sign("URI=spiffe://x/y")}
    r = httpx.get(url, headers=forged, timeout=10)
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    # allowed by path: served, without an identity
    r = httpx.get(f"{wsgi}/health", headers={XFCC_HEADER: XFCC}, timeout=10)
    assert (r.status_code, r.json()["peer"], r.json()["xfcc"]) == (200, None, None)


def test_wsgi_deny_by_path_and_normalization(project: Project, wsgi: str) -> None:
    for path in ("/private/x", "/api/..%2Fprivate/x", "//private/x", "/%70rivate/x"):
        r = httpx.get(f"{wsgi}{path}", headers=project.signed(), timeout=10)
        assert (r.status_code, r.text) == (403, "RBAC: access denied"), path
    # what Django routes is what authorization saw
    r = httpx.get(f"{wsgi}//health", timeout=10)
    assert r.status_code == 200
    assert (r.json()["path"], r.json()["path_info"]) == ("/health", "/health")
    r = httpx.get(f"{wsgi}/api/a//b/../c", headers=project.signed(), timeout=10)
    assert (r.status_code, r.json()["path"]) == (200, "/api/a/c")


def test_wsgi_on_a_unix_socket_trusts_xfcc_without_a_mac(project: Project, tmp_path: Path) -> None:
    # mounted under SCRIPT_NAME=/app too: the prefix survives normalization, or 404
    env = project.env(PYMESH_TEST_UNIX_SOCKET="1", SCRIPT_NAME="/app")
    with gunicorn(env, bind=f"unix:{tmp_path / 'app.sock'}") as path:
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, base_url="http://reviews", timeout=10) as c:
            r = c.get("/app/whoami", headers={XFCC_HEADER: XFCC})
            assert (r.status_code, r.json()["peer"]) == (200, PRODUCTPAGE)
            assert (r.json()["path"], r.json()["path_info"]) == ("/app/whoami", "/whoami")
            # policy paths are the paths clients send, mount prefix included (as Envoy sees them)
            r = c.get("/app/private/x", headers={XFCC_HEADER: XFCC})
            assert (r.status_code, r.json()["path_info"]) == (200, "/private/x")
            assert c.get("/app/whoami").status_code == 403
            r = c.get("/app/api//x/../y", headers={XFCC_HEADER: XFCC})
            assert (r.status_code, r.json()["path"], r.json()["path_info"]) == (
                200,
                "/app/api/y",
                "/api/y",
            )
            assert c.get("/app/..%2Fwhoami", headers={XFCC_HEADER: XFCC}).status_code == 404


def test_wsgi_first_requests_wait_bounded_then_503_until_ready(project: Project) -> None:
    env = project.env(PYMESH_TEST_SLOW_START="1.5", PYMESH_TEST_READY_TIMEOUT="0.5")
    with gunicorn(env) as url:
        headers = project.signed()
        t0 = time.monotonic()
        r = httpx.get(f"{url}/whoami", headers=headers, timeout=10)
        assert (r.status_code, r.text) == (503, "mesh not ready")
        statuses = [r.status_code]
        while r.status_code == 503:
            assert time.monotonic() - t0 < 15, statuses
            r = httpx.get(f"{url}/whoami", headers=headers, timeout=10)
            statuses.append(r.status_code)
        assert r.status_code == 200 and r.json()["peer"] == PRODUCTPAGE
        # each refused request waited its bound: no busy 503s while the mesh was building
        assert len(statuses) <= 5, statuses


def test_wsgi_preforked_workers_each_build_their_own_mesh(project: Project) -> None:
    # --preload loads the app (and starts the mesh) in the master; its threads do not survive
    # the fork, so each worker must build and renew its own
    with gunicorn(project.env(), None, "-w", "2", "--preload") as url:
        seen: dict[int, bool] = {}
        with httpx.Client(timeout=10) as c:  # a new connection per request: both workers
            for _ in range(40):
                r = c.get(f"{url}/whoami", headers={**project.signed(), "connection": "close"})
                assert (r.status_code, r.json()["peer"]) == (200, PRODUCTPAGE)
                seen[r.json()["pid"]] = r.json()["renewing"]
                if len(seen) == 2:
                    break
        assert seen and all(seen.values()), seen


# -- ASGI: on Mesh.server (mesh mTLS) and on plain uvicorn (XFCC) ---------------------------


@pytest.fixture(scope="module")
def asgi(project: Project) -> Iterator[dict[str, Any]]:
    script = ROOT / "tests" / "integrations" / "djangoproject" / "serve_asgi.py"
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=project.env(),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        assert line, "serve_asgi.py exited before serving"
        yield json.loads(line)
        proc.stdin.close()
        proc.wait(timeout=15)
        assert proc.returncode == 0
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_asgi_on_mesh_server_mtls_allow_and_deny(project: Project, asgi: dict[str, Any]) -> None:
    base = f"https://127.0.0.1:{asgi['mtls']}"
    with project.client("productpage") as c:
        r = c.get(base + "/whoami")
        assert (r.status_code, r.json()["peer"]) == (200, PRODUCTPAGE)
        for path in ("/private/x", "/api/..%2Fprivate/x", "//private/x"):
            r = c.get(base + path)
            assert (r.status_code, r.text) == (403, "RBAC: access denied"), path
        # XFCC from a caller that holds its own certificate changes nothing
        r = c.get(base + "/whoami", headers=project.signed(format_xfcc(None, "spiffe://x/y")))
        assert (r.json()["peer"], r.json()["xfcc"]) == (PRODUCTPAGE, None)
    with project.client("ratings") as c:
        assert c.get(base + "/whoami").status_code == 403
        r = c.get(base + "/health")
        assert (r.status_code, r.json()["sa"]) == (200, "ratings")
    # PERMISSIVE: plaintext on the same port, without an identity
    plain = f"http://127.0.0.1:{asgi['mtls']}"
    assert httpx.get(plain + "/whoami", timeout=10).status_code == 403
    r = httpx.get(plain + "/health", timeout=10)
    assert (r.status_code, r.json()["peer"]) == (200, None)


def test_asgi_on_plain_uvicorn_the_middleware_decides(
    project: Project, asgi: dict[str, Any]
) -> None:
    base = f"http://127.0.0.1:{asgi['plain']}"
    r = httpx.get(base + "/whoami", headers=project.signed(), timeout=10)
    assert (r.status_code, r.json()["peer"], r.json()["xfcc"]) == (200, PRODUCTPAGE, None)
    assert httpx.get(base + "/whoami", headers={XFCC_HEADER: XFCC}, timeout=10).status_code == 403
    r = httpx.get(base + "/api/..%2Fprivate/x", headers=project.signed(), timeout=10)
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    r = httpx.get(base + "//health", timeout=10)
    assert (r.status_code, r.json()["path"], r.json()["peer"]) == (200, "/health", None)
