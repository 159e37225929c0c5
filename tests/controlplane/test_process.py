"""The control plane as a real process (`pymesh-controlplane serve`) on a loopback port:
apply reaches a raw watch stream in under a second; bad input is refused and nothing stored;
leases expire into pushes; a restart keeps the config, the revision and the leases' grace."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.controlplane.conftest import BIN, ControlPlaneProcess, read_messages

pytestmark = pytest.mark.slow

SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  location: MESH_INTERNAL
  workloadSelector: {labels: {app: reviews}}
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
    - route: [{destination: {host: reviews}}]
      timeout: {timeout}
"""
YAML = {"content-type": "application/yaml"}
REGISTER = {
    "agent": "reviews-1",
    "service": "reviews",
    "address": "127.0.0.1",
    "ports": [{"name": "http", "port": 18081, "servicePort": 9080}],
}


def kinds(msg: dict[str, Any]) -> list[str]:
    return [d["kind"] for d in msg["resources"]]


def test_apply_reaches_a_watch_stream_within_a_second(cp_factory: Any) -> None:
    cp: ControlPlaneProcess = cp_factory()
    with cp.client(headers=cp.auth) as c:
        assert c.post("/v1/apply", content=SE, headers=YAML).status_code == 200
        with c.stream("GET", "/v1/watch", params={"agent": "w-1", "namespace": "default"}) as r:
            assert r.headers["content-type"] == "application/x-ndjson"
            lines = r.iter_lines()
            (first,) = read_messages(lines, 1, 5.0)
            assert first["type"] == "snapshot" and kinds(first) == ["ServiceEntry"]
            for timeout in ("1s", "2s", "3s"):
                t0 = time.monotonic()
                applied = c.post(
                    "/v1/apply", content=VS.replace("{timeout}", timeout), headers=YAML
                ).json()
                (msg,) = read_messages(lines, 1, 5.0)
                assert time.monotonic() - t0 < 1.0
                assert msg["revision"] == applied["revision"]
                vs = [d for d in msg["resources"] if d["kind"] == "VirtualService"]
                assert vs[0]["spec"]["http"][0]["timeout"] == timeout
        status = c.get("/v1/agents").json()["items"]
        assert [(a["agent"], a["sent"]["revision"]) for a in status] == [
            ("w-1", applied["revision"])
        ]
        metrics = httpx.get(cp.url + "/metrics").text
        assert "pymesh_cp_pushes_total 3.0" in metrics


def test_bad_requests_are_refused_and_nothing_is_stored(cp_factory: Any) -> None:
    cp: ControlPlaneProcess = cp_factory("--max-body", "2048")
    with cp.client() as anon, cp.client(headers=cp.auth) as c:
        assert anon.post("/v1/apply", content=SE, headers=YAML).status_code == 401
        assert anon.delete("/v1/resources/ServiceEntry/default/reviews").status_code == 401
        r = c.post("/v1/apply", content=SE.replace("hosts:", "hostz:"), headers=YAML)
        assert r.status_code == 422
        assert "spec.hostz" in [f["path"] for f in r.json()["findings"]]
        r = c.post("/v1/apply", content=SE + "#" * 3000, headers=YAML)
        assert r.status_code == 413
        assert c.get("/v1/resources").json()["items"] == []
        r = c.put("/v1/resources/ServiceEntry/default/reviews", content=SE, headers=YAML)
        assert r.status_code == 201
        r = c.put(
            "/v1/resources/ServiceEntry/default/reviews",
            content=SE.replace("9080", "9081"),
            headers=YAML | {"If-Match": '"1"'},
        )
        assert r.status_code == 412
        doc = c.get("/v1/resources/ServiceEntry/default/reviews").json()
        assert doc["spec"]["ports"][0]["number"] == 9080


def test_expired_lease_removes_the_endpoint_and_pushes(cp_factory: Any) -> None:
    cp: ControlPlaneProcess = cp_factory("--lease-ttl", "0.6", "--heartbeat", "0.2")
    with cp.client(headers=cp.auth) as c:
        c.post("/v1/apply", content=SE, headers=YAML)
        reg = c.post("/v1/workloads", json=REGISTER).json()
        assert (reg["ttlSeconds"], reg["heartbeatSeconds"]) == (0.6, 0.2)
        with c.stream("GET", "/v1/watch", params={"agent": "w-1"}) as r:
            lines = r.iter_lines()
            (first,) = read_messages(lines, 1, 5.0)
            assert kinds(first) == ["ServiceEntry", "WorkloadEntry"]
            for _ in range(4):  # heartbeats keep it: 0.8 s > one TTL
                time.sleep(0.2)
                hb = c.post(
                    f"/v1/workloads/{reg['workload']}/heartbeat", json={"agent": "reviews-1"}
                )
                assert hb.status_code == 200
            t0 = time.monotonic()
            (gone,) = read_messages(lines, 1, 5.0)  # heartbeats stop: the endpoint goes
            assert kinds(gone) == ["ServiceEntry"]
            assert time.monotonic() - t0 < 2.0
        hb = c.post(f"/v1/workloads/{reg['workload']}/heartbeat", json={"agent": "reviews-1"})
        assert hb.status_code == 404 and hb.json()["error"] == "not_registered"


def test_restart_keeps_config_and_watchers_resume(cp_factory: Any) -> None:
    cp: ControlPlaneProcess = cp_factory("--lease-ttl", "3")
    with cp.client(headers=cp.auth) as c:
        applied = c.post("/v1/apply", content=SE, headers=YAML).json()
        reg = c.post("/v1/workloads", json=REGISTER).json()
        ca_hash = c.get("/v1/version").json()["caHash"]
        with c.stream("GET", "/v1/watch", params={"agent": "w-1"}) as r:
            (held,) = read_messages(r.iter_lines(), 1, 5.0)
            t0 = time.monotonic()
            assert cp.stop() == 0  # SIGTERM with a stream open: a clean, quick exit
            assert time.monotonic() - t0 < 5.0
    assert held["revision"] == reg["revision"] > applied["revision"]
    cp.start()
    with cp.client(headers=cp.auth) as c:
        assert c.get("/v1/version").json()["caHash"] == ca_hash  # the CA is kept
        # the registration survived with one TTL of grace; its heartbeat renews it
        hb = c.post(f"/v1/workloads/{reg['workload']}/heartbeat", json={"agent": "reviews-1"})
        assert hb.status_code == 200
        (w,) = c.get("/v1/workloads").json()["items"]
        assert w["lease"]["confirmed"] is True
        params = {"agent": "w-1", "digest": held["digest"]}
        with c.stream("GET", "/v1/watch", params=params) as r:
            lines = r.iter_lines()
            (cur,) = read_messages(lines, 1, 5.0)
            # nothing changed while it was away: no resend, the same digest
            assert cur == {
                "type": "current",
                "revision": held["revision"],
                "digest": held["digest"],
            }
            applied2 = c.post(
                "/v1/apply", content=VS.replace("{timeout}", "2s"), headers=YAML
            ).json()
            (msg,) = read_messages(lines, 1, 5.0)
            assert msg["revision"] == applied2["revision"] > held["revision"]
            assert kinds(msg) == ["ServiceEntry", "VirtualService", "WorkloadEntry"]


def test_refuses_non_loopback_listen(tmp_path: Any) -> None:
    r = subprocess.run(
        [
            *(str(BIN), "serve", "--data-dir", str(tmp_path)),
            *("--listen", "0.0.0.0:0", "--insecure-http"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2 and "loopback" in r.stderr


def test_https_with_a_certificate_from_its_ca_and_svids_as_credentials(
    cp_factory: Any, tmp_path: Any
) -> None:
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from pymesh.identity import CertificateAuthority, SpiffeId, create_csr, generate_key
    from pymesh.identity.bundle import load_pem_certificates
    from pymesh.identity.tls import key_and_chain_pem

    cp: ControlPlaneProcess = cp_factory(tls=True)
    assert cp.url.startswith("https://")
    leaf_pem = ssl.get_server_certificate(("127.0.0.1", cp.port))
    sans = x509.load_pem_x509_certificate(leaf_pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert {"pymesh-controlplane", "localhost"} <= set(sans.value.get_values_for_type(x509.DNSName))
    with cp.client(headers=cp.auth) as c:
        assert c.get("/v1/version").json()["tls"] is True
        token = c.post("/v1/tokens", json={"serviceAccount": "reviews"}).json()["token"]
    key = generate_key()
    csr = x509.load_der_x509_csr(create_csr(key)).public_bytes(Encoding.PEM).decode()
    with cp.client(headers={"Authorization": f"Bearer {token}"}) as c:
        svid = c.post("/v1/certificates", json={"csr": csr}).json()
    chain = load_pem_certificates(svid["certificateChain"])

    def with_cert(key: Any, chain: Any, name: str) -> httpx.Client:
        (tmp_path / name).write_bytes(key_and_chain_pem(key, chain))
        ctx = ssl.create_default_context(cafile=str(cp.ca_file))
        ctx.load_cert_chain(str(tmp_path / name))
        return httpx.Client(base_url=cp.url, verify=ctx, timeout=5.0)

    # the SVID alone authenticates the workload (no bearer token): register as itself...
    with with_cert(key, chain, "svid.pem") as c:
        r = c.post("/v1/workloads", json=REGISTER | {"serviceAccount": "reviews"})
        assert r.status_code == 200, r.text
        # ...but nothing else: another identity, or admin operations
        assert c.post("/v1/workloads", json=REGISTER).status_code == 403
        assert c.get("/v1/resources").status_code == 403
    with cp.client() as anon:
        assert anon.get("/v1/resources").status_code == 401
    # a certificate from another CA does not get through the handshake
    other_key, other = CertificateAuthority.generate().issue(
        SpiffeId.workload("cluster.local", "default", "reviews")
    )
    with with_cert(other_key, other.chain, "other.pem") as c, pytest.raises(httpx.HTTPError):
        c.get("/v1/workloads")
