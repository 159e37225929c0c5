"""`pymeshctl` against a real control plane process: every command, the configuration sources,
HTTPS verification, and one-line errors (never a traceback) for what users get wrong."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pymesh.identity import create_csr, generate_key
from tests.cli.conftest import Ctl, no_traceback, start_control_plane

pytestmark = pytest.mark.slow

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s}
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
    - match: [{headers: {x-user: {exact: jason}}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - route:
        - {destination: {host: reviews, subset: v1}, weight: 80}
        - {destination: {host: reviews, subset: v2}, weight: 20}
      retries: {attempts: 2, perTryTimeout: 1s}
      timeout: 5s
"""

TYPO = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
    - route:
        - destination: {host: reviews, subset: v1}
      retries: {attemps: 3}
"""

AUTHZ = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-get, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
    - to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec:
  mtls: {mode: STRICT}
"""


@pytest.fixture(scope="module")
def applied(ctl_cp: Ctl, tmp_path_factory: pytest.TempPathFactory) -> Ctl:
    """The control plane with MESH applied (through the raw API)."""
    with ctl_cp.client() as c:
        r = c.post("/v1/apply", content=MESH, headers={"content-type": "application/yaml"})
        assert r.status_code == 200, r.text
    return ctl_cp


def register(c: httpx.Client, agent: str, port: int, version: str) -> str:
    body = {
        "agent": agent,
        "service": "reviews",
        "address": "127.0.0.1",
        "serviceAccount": "reviews",
        "ports": [{"name": "http", "port": port, "servicePort": 9080}],
        "labels": {"version": version},
    }
    r = c.post("/v1/workloads", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["workload"])


def first_message(c: httpx.Client, agent: str, workload: str) -> dict[str, Any]:
    with c.stream("GET", "/v1/watch", params={"agent": agent, "workload": workload}) as s:
        for line in s.iter_lines():
            if line.strip():
                msg: dict[str, Any] = json.loads(line)
                return msg
    raise AssertionError("no watch message")


def revision(cp: Ctl) -> int:
    with cp.client() as c:
        return int(c.get("/v1/version").json()["revision"])


# ------------------------------------------------------------------------------ apply, get, delete


def test_apply_good_prints_each_resource_and_get_reads_them(
    ctl_cp: Ctl, ctl: Any, tmp_path: Path
) -> None:
    f = tmp_path / "mesh.yaml"
    f.write_text(MESH.replace("reviews", "details"))
    r = ctl("apply", "-f", f, *ctl_cp.flags())
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "ServiceEntry default/details created",
        "DestinationRule default/details created",
        "VirtualService default/details created",
    ]
    again = ctl("apply", "-f", f, *ctl_cp.flags())
    assert "VirtualService default/details unchanged" in again.stdout

    table = ctl("get", "vs", *ctl_cp.flags())
    assert table.exit_code == 0
    head, *rows = table.stdout.splitlines()
    assert head.split() == ["NAME", "HOSTS", "HTTP", "RULES", "REVISION"]
    assert any(row.split()[:3] == ["details", "details", "2"] for row in rows)

    one = ctl("get", "virtualservices", "details", "-o", "json", *ctl_cp.flags())
    doc = json.loads(one.stdout)
    assert doc["kind"] == "VirtualService" and doc["spec"]["hosts"] == ["details"]

    docs = list(yaml.safe_load_all(ctl("get", "dr", "-o", "yaml", *ctl_cp.flags()).stdout))
    assert "details" in [d["metadata"]["name"] for d in docs]

    listing = json.loads(ctl("get", "se", "-A", "-o", "json", *ctl_cp.flags()).stdout)
    assert listing["kind"] == "List" and listing["items"]

    # what get -o yaml prints applies again as is (from stdin)
    back = ctl("get", "vs", "details", "-o", "yaml", *ctl_cp.flags()).stdout
    r = ctl("apply", "-f", "-", *ctl_cp.flags(), input=back)
    assert r.exit_code == 0 and "VirtualService default/details unchanged" in r.stdout


def test_apply_bad_prints_findings_as_analyze_and_stores_nothing(
    applied: Ctl, ctl: Any, tmp_path: Path
) -> None:
    good = tmp_path / "a-good.yaml"
    good.write_text(MESH.replace("reviews", "ratings-backend"))
    bad = tmp_path / "b-typo.yaml"
    bad.write_text(TYPO)
    before = revision(applied)
    r = ctl("apply", "-f", good, "-f", bad, *applied.flags())
    assert r.exit_code == 1
    # the same line `analyze -f` prints for that file, mapped back to its own file and line
    offline = ctl("analyze", "-f", bad)
    line = next(x for x in offline.stdout.splitlines() if x.startswith("Error"))
    assert line in r.stdout.splitlines()
    assert "b-typo.yaml:9) spec.http[0].retries.attemps" in line
    assert f"✘ 1 error found when analyzing {good}, {bad}." in r.stdout
    assert r.stderr.strip() == "pymeshctl: error: apply refused: nothing was changed"
    assert revision(applied) == before
    missing = ctl("get", "se", "ratings-backend", *applied.flags())
    assert missing.exit_code == 1 and "not found" in missing.stderr

    # a directory is one all-or-nothing apply too
    syntax = tmp_path / "c-broken.yaml"
    syntax.write_text("kind: [unclosed\n")
    r = ctl("apply", "-f", tmp_path, *applied.flags())
    assert r.exit_code == 1 and "Error [PM0001]" in r.stdout
    assert revision(applied) == before


def test_apply_dry_run_changes_nothing(applied: Ctl, ctl: Any, tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(MESH.replace("reviews", "dryrun"))
    before = revision(applied)
    r = ctl("apply", "-f", f, "--dry-run", *applied.flags())
    assert r.exit_code == 0
    assert "VirtualService default/dryrun created (dry run)" in r.stdout
    assert revision(applied) == before


def test_delete_and_refused_delete(applied: Ctl, ctl: Any, tmp_path: Path) -> None:
    f = tmp_path / "gone.yaml"
    f.write_text(MESH.replace("reviews", "gone"))
    assert ctl("apply", "-f", f, *applied.flags()).exit_code == 0
    # the VirtualService routes to the DestinationRule's subsets: deleting the rule is refused
    refused = ctl("delete", "dr", "gone", *applied.flags())
    assert refused.exit_code == 1
    assert "Error [IST0101] (VirtualService default/gone)" in refused.stdout
    assert "delete refused" in refused.stderr
    r = ctl("delete", "vs", "gone", *applied.flags())
    assert r.exit_code == 0 and r.stdout.strip() == "VirtualService default/gone deleted"
    assert ctl("delete", "dr", "gone", *applied.flags()).exit_code == 0
    again = ctl("delete", "vs", "gone", *applied.flags())
    assert again.exit_code == 1
    assert again.stderr.strip() == "pymeshctl: error: VirtualService default/gone not found"


def test_analyze_live(applied: Ctl, ctl: Any) -> None:
    r = ctl("analyze", *applied.flags())
    assert r.exit_code == 0, r.output
    assert "No validation issues found when analyzing the live configuration at" in r.stdout
    js = ctl("analyze", "-o", "json", *applied.flags())
    assert json.loads(js.stdout) == []


# ------------------------------------------------------------------------------ tokens


def _csr_pem() -> str:
    csr = x509.load_der_x509_csr(create_csr(generate_key()))
    return csr.public_bytes(Encoding.PEM).decode()


def test_token_create_works_for_certificates_and_revoke_stops_it(ctl_cp: Ctl, ctl: Any) -> None:
    r = ctl(
        "token", "create", "--namespace", "default", "--service-account", "reviews",
        "--ttl", "1h", *ctl_cp.flags(),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert token.startswith("pmj1.") and len(r.stdout.splitlines()) == 1
    assert "for default/reviews, expires in" in r.stderr
    token_id = token.split(".")[1]

    with ctl_cp.client(token) as c:
        svid = c.post("/v1/certificates", json={"csr": _csr_pem()})
        assert svid.status_code == 200, svid.text
        assert svid.json()["spiffeId"] == "spiffe://cluster.local/ns/default/sa/reviews"

    listed = ctl("token", "list", *ctl_cp.flags())
    row = next(x for x in listed.stdout.splitlines() if x.startswith(token_id))
    assert row.split()[1:3] == ["default", "reviews"] and row.split()[-1] == "valid"
    as_json = json.loads(ctl("token", "list", "-o", "json", *ctl_cp.flags()).stdout)
    assert token_id in [t["id"] for t in as_json]
    assert all("token" not in t for t in as_json)

    assert ctl("token", "revoke", token_id, *ctl_cp.flags()).stdout.strip() == (
        f"join token {token_id} revoked"
    )
    with ctl_cp.client(token) as c:
        assert c.post("/v1/certificates", json={"csr": _csr_pem()}).status_code == 401
    again = ctl("token", "revoke", token_id, *ctl_cp.flags())
    assert again.exit_code == 1 and "no join token" in again.stderr

    never = ctl("token", "create", "--service-account", "x", "--ttl", "0", "-o", "json",
                *ctl_cp.flags())  # fmt: skip
    assert json.loads(never.stdout)["expiresAt"] is None
    bad = ctl("token", "create", "--service-account", "x", "--ttl", "soon", *ctl_cp.flags())
    assert bad.exit_code == 2 and "--ttl" in bad.stderr


# ------------------------------------------------------------------------------ status, top


def test_status_shows_ack_and_nack(applied: Ctl, ctl: Any) -> None:
    with applied.client() as c:
        w1 = register(c, "st-ok", 19081, "v1")
        w2 = register(c, "st-nack", 19082, "v2")
        m1 = first_message(c, "st-ok", w1)
        m2 = first_message(c, "st-nack", w2)
        ack = c.post(
            "/v1/agents/st-ok/ack", json={"revision": m1["revision"], "digest": m1["digest"]}
        )
        assert ack.status_code == 204
        nack = {"revision": m2["revision"], "digest": m2["digest"], "error": "subset v9 unknown"}
        assert c.post("/v1/agents/st-nack/ack", json=nack).status_code == 204
        c.post(f"/v1/workloads/{w1}/heartbeat", json={"agent": "st-ok"})
    r = ctl("status", *applied.flags())
    assert r.exit_code == 0, r.output
    rows: dict[str, list[str]] = {}
    for line in r.stdout.splitlines():  # the table's rows (the NACK errors follow it)
        if line.startswith("st-"):
            rows.setdefault(line.split()[0], line.split())
    ok, bad = rows["st-ok"], rows["st-nack"]
    assert ok[1:3] == ["reviews.default", w1]
    assert ok[4] == ok[5] == str(m1["revision"]) and ok[6] == "SYNCED"
    assert ok[-1] == "ago"  # last heartbeat: "12ms ago"
    assert bad[6] == "NACK" and bad[-1] == "-"  # no heartbeat yet
    assert f"st-nack refused revision {m2['revision']}: subset v9 unknown" in r.stdout
    data = json.loads(ctl("status", "-o", "json", *applied.flags()).stdout)
    by_agent = {a["agent"]: a for a in data["agents"]}
    assert by_agent["st-nack"]["nack"]["error"] == "subset v9 unknown"


def test_top_after_heartbeats_with_stats(applied: Ctl, ctl: Any) -> None:
    with applied.client() as c:
        w = register(c, "top-1", 19181, "v1")
        dest = "ratings.default.svc.cluster.local:9080"
        stats = [{"destination": dest, "requests": 100, "errors": 0, "latencyMsSum": 200.0}]
        c.post(f"/v1/workloads/{w}/heartbeat", json={"agent": "top-1", "stats": stats})
        time.sleep(0.2)
        stats = [
            {"destination": dest, "requests": 300, "errors": 2, "latencyMsSum": 600.0,
             "latencyMsP50": 1.5, "latencyMsP99": 7.0}
        ]  # fmt: skip
        c.post(f"/v1/workloads/{w}/heartbeat", json={"agent": "top-1", "stats": stats})
    r = ctl("top", *applied.flags())
    assert r.exit_code == 0, r.output
    head, *rows = r.stdout.splitlines()
    assert head.split()[:3] == ["SOURCE", "DESTINATION", "RPS"]
    row = next(x.split() for x in rows if dest in x)
    assert row[0] == "reviews.default" and float(row[2]) > 100
    assert row[3] == "1.00%" and row[4] == "2.0ms" and row[5:7] == ["1.5ms", "7.0ms"]
    watched = ctl("top", "--watch", "--count", "2", "--interval", "0.1", *applied.flags())
    assert watched.exit_code == 0 and watched.stdout.count("DESTINATION") == 2
    edges = json.loads(ctl("top", "-o", "json", *applied.flags()).stdout)
    assert any(e["destination"] == dest for e in edges)


# ---------------------------------------------------------------- proxy-config, describe


def test_proxy_config_of_a_registered_workload(applied: Ctl, ctl: Any) -> None:
    with applied.client() as c:
        w = register(c, "pc-1", 19281, "v1")
        register(c, "pc-2", 19282, "v2")
    r = ctl("proxy-config", w, *applied.flags())
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert f"Workload:  {w} (service reviews, namespace default, 127.0.0.1)" in out
    assert "header x-user exact jason" in out
    assert "reviews.default|v1 80%, reviews.default|v2 20%" in out
    assert "outbound|9080|v1|reviews.default.svc.cluster.local" in out
    assert "127.0.0.1:19282" in out and "spiffe://cluster.local/ns/default/sa/reviews" in out
    assert "PeerAuthentication:" in out

    data = json.loads(ctl("proxy-config", "pc-1", "-o", "json", *applied.flags()).stdout)
    v1 = next(c for c in data["clusters"] if c["name"].startswith("outbound|9080|v1|reviews."))
    assert v1["outlierDetection"]["consecutive5xxErrors"] == 3
    ep = [e for e in data["endpoints"] if e["cluster"] == v1["name"]]
    assert [(e["address"], e["port"]) for e in ep if e["port"] in (19281, 19282)] == [
        ("127.0.0.1", 19281)
    ]
    routes = ctl("proxy-config", w, "-s", "routes", *applied.flags()).stdout
    assert "ROUTES" in routes and "CLUSTERS" not in routes
    missing = ctl("proxy-config", "nobody", *applied.flags())
    assert missing.exit_code == 1 and "no registered workload 'nobody'" in missing.stderr


def test_describe_service(applied: Ctl, ctl: Any, tmp_path: Path) -> None:
    f = tmp_path / "authz.yaml"
    f.write_text(AUTHZ)
    assert ctl("apply", "-f", f, *applied.flags()).exit_code == 0
    with applied.client() as c:
        register(c, "ds-1", 19381, "v1")
    r = ctl("describe", "service", "reviews", *applied.flags())
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "Service:     reviews.default.svc.cluster.local" in out
    assert "Defined by:  ServiceEntry default/reviews (MESH_INTERNAL, STATIC)" in out
    row = next(x for x in out.splitlines() if "19381" in x)
    assert "healthy: lease" in row and "version=v1" in row
    assert "VirtualService default/reviews http[1]: 80% → subset v1" in out
    assert "DestinationRule default/reviews: outlierDetection 3 consecutive 5xx" in out
    assert "PeerAuthentication: STRICT — default/strict" in out
    assert "AuthorizationPolicy default/reviews-get: ALLOW (1 rules)" in out
    data = yaml.safe_load(
        ctl("describe", "service", "reviews", "-o", "yaml", *applied.flags()).stdout
    )
    assert data["service"] == "reviews.default.svc.cluster.local"
    missing = ctl("describe", "service", "nothing", *applied.flags())
    assert missing.exit_code == 1 and "service 'nothing' not found" in missing.stderr
    # leave the mesh as other tests expect it
    assert ctl("delete", "pa", "strict", *applied.flags()).exit_code == 0
    assert ctl("delete", "ap", "reviews-get", *applied.flags()).exit_code == 0


# ---------------------------------------------------------------- where settings come from


def test_settings_from_environment_and_config_file(ctl_cp: Ctl, ctl: Any, tmp_path: Path) -> None:
    env = {"PYMESH_CONTROL_PLANE": ctl_cp.url, "PYMESH_ADMIN_TOKEN": ctl_cp.token}
    if ctl_cp.ca_file:
        env["PYMESH_CA_CERT"] = str(ctl_cp.ca_file)
    assert ctl("get", "vs", env=env).exit_code == 0

    # a config file in the XDG location, the token in a file next to it (relative path)
    cfg_dir = tmp_path / "xdg" / "pymesh"
    cfg_dir.mkdir(parents=True)
    (cfg_dir / "admin-token").write_text(ctl_cp.token + "\n")
    lines = [f"controlPlane: {ctl_cp.url}", "tokenFile: admin-token"]
    if ctl_cp.ca_file:
        lines.append(f"caCert: {ctl_cp.ca_file}")
    (cfg_dir / "config.yaml").write_text("\n".join(lines) + "\n")
    assert ctl("get", "vs").exit_code == 0, ctl("get", "vs").output

    # $PYMESH_CONFIG names another file; flags beat the environment, which beats the file
    other = tmp_path / "other.yaml"
    other.write_text("controlPlane: https://127.0.0.1:1\ntoken: wrong\n")
    r = ctl("get", "vs", env={"PYMESH_CONFIG": str(other)})
    assert r.exit_code == 1 and "cannot reach the control plane at https://127.0.0.1:1" in r.stderr
    assert f"from config file {other}" in r.stderr
    r = ctl("get", "vs", env={"PYMESH_CONFIG": str(other), **env})
    assert r.exit_code == 0, r.output
    r = ctl("get", "vs", "--token", "nope", env={**env})
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "pymeshctl: error: the control plane refused the token from --token (401 unauthorized)"
    )


def test_user_errors_are_one_line_without_traceback(
    ctl_cp: Ctl, run_pymeshctl: Any, tmp_path: Path
) -> None:
    flags = ctl_cp.flags()
    cases: list[tuple[list[str], dict[str, str], int, str]] = [
        (["get", "vs", "--control-plane", "http://127.0.0.1:1"], {}, 1, "cannot reach"),
        (["get", "vs", *flags[:2], *flags[4:]], {}, 1, "wants an admin token"),
        (["get", "vs", *flags, "--token", "wrong"], {}, 1, "refused the token"),
        (["get", "vs", "missing", *flags], {}, 1, "VirtualService default/missing not found"),
        (["get", "nokind", *flags], {}, 1, "unknown kind 'nokind'"),
        (["apply", "-f", tmp_path / "nope.yaml", *flags], {}, 2, "no such file"),
        (["status"], {"PYMESH_CONFIG": str(tmp_path / "none.yaml")}, 2, "does not exist"),
        (["status", "--control-plane", "ftp://x"], {}, 2, "must be an http:// or https:// URL"),
        (["token", "revoke", "zzz", *flags], {}, 1, "no join token 'zzz'"),
    ]
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("controlPlane: [unclosed\n")
    cases.append((["status"], {"PYMESH_CONFIG": str(bad_cfg)}, 2, "is not valid YAML"))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("server: x\n")
    cases.append((["status"], {"PYMESH_CONFIG": str(unknown)}, 2, "unknown key 'server'"))
    for args, env, code, text in cases:
        r = run_pymeshctl(*args, env=env)
        no_traceback(r)
        assert r.exit_code == code, (args, r.output)
        assert r.stdout == "" and text in r.stderr, (args, r.output)
        assert r.stderr.startswith("pymeshctl: error: ") and r.stderr.count("\n") == 1, r.stderr


# ------------------------------------------------------------------------------ HTTPS


def test_https_pinned_ca_hash(ctl_cp: Ctl, ctl: Any) -> None:
    assert ctl_cp.ca_file is not None  # the module's control plane serves HTTPS
    with httpx.Client(verify=False) as c:
        ca_hash = c.get(f"{ctl_cp.url}/v1/version").json()["caHash"]
    base = ["--control-plane", ctl_cp.url, "--token", ctl_cp.token]
    assert ctl("get", "vs", *base, "--ca-hash", f"sha256:{ca_hash}").exit_code == 0
    # the token's own pin works as well: a join token carries the same hash
    wrong = ("0" if ca_hash[0] != "0" else "1") + ca_hash[1:]
    r = ctl("get", "vs", *base, "--ca-hash", f"sha256:{wrong}")
    assert r.exit_code == 1 and "does not match the pinned hash" in r.stderr
    r = ctl("get", "vs", *base)
    assert r.exit_code == 1 and "could not be verified" in r.stderr
    r = ctl("get", "vs", *base, "--ca-hash", "sha256:abc")
    assert r.exit_code == 2 and "64 hex digits" in r.stderr


def test_plain_http_control_plane(tmp_path: Path, ctl: Any) -> None:
    cp = start_control_plane(tmp_path / "plain", tls=False)
    try:
        assert cp.url.startswith("http://")
        r = ctl("token", "list", "--control-plane", cp.url, "--token", cp.token)
        assert r.exit_code == 0, r.output
        assert "No join tokens." in r.stderr
    finally:
        cp.proc.stop()
