"""The parts of `pymeshctl` that need no control plane: where settings come from, joining
several files into one all-or-nothing apply (and mapping findings back), tables, durations,
and what proxy-config / describe compute from API data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.cli.commands import Source, build_body, find_workload, map_findings, parse_ttl
from pymesh.cli.connection import CliError, ConnectionOptions, resolve_target
from pymesh.cli.inspection import describe_service, match_text, proxy_config, render_describe
from pymesh.cli.output import ago, in_time, table
from pymesh.config.findings import Finding
from pymesh.config.model import HTTPMatchRequest, StringMatch

# ------------------------------------------------------------------------------ settings


def test_flags_beat_environment_beat_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    (tmp_path / "tok").write_text("from-file\n")
    cfg.write_text("controlPlane: https://file:1\ntokenFile: tok\ncaHash: sha256:" + "a" * 64)
    env = {"PYMESH_CONFIG": str(cfg)}
    t = resolve_target(ConnectionOptions(), env)
    assert t.urls == ("https://file:1",) and t.token == "from-file" and t.ca_hash == "a" * 64
    assert t.sources["token"] == f"config file {cfg} (tokenFile)"
    env |= {"PYMESH_CONTROL_PLANE": "https://env:2, https://env:3", "PYMESH_ADMIN_TOKEN": "e"}
    t = resolve_target(ConnectionOptions(), env)
    assert t.urls == ("https://env:2", "https://env:3") and t.token == "e"
    assert t.sources == {
        "controlPlane": "PYMESH_CONTROL_PLANE",
        "token": "PYMESH_ADMIN_TOKEN",
        "caHash": f"config file {cfg}",
    }
    t = resolve_target(ConnectionOptions(control_plane="http://flag:4", token="f"), env)
    assert t.urls == ("http://flag:4",) and t.token == "f"


def test_defaults_and_xdg_location(tmp_path: Path) -> None:
    t = resolve_target(ConnectionOptions(), {"XDG_CONFIG_HOME": str(tmp_path)})
    assert t.urls == ("https://127.0.0.1:15012",) and t.token is None
    (tmp_path / "pymesh").mkdir()
    (tmp_path / "pymesh" / "config.yaml").write_text("controlPlane: [https://a:1, https://b:2]\n")
    t = resolve_target(ConnectionOptions(), {"XDG_CONFIG_HOME": str(tmp_path)})
    assert t.urls == ("https://a:1", "https://b:2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("controlPlane: [x\n", "is not valid YAML"),
        ("- a\n", "must hold a mapping"),
        ("contolPlane: x\n", "unknown key 'contolPlane'"),
        ("token: 3\n", "token has the wrong type"),
        ("controlPlane: ftp://x\n", "must be an http:// or https:// URL"),
        ("caHash: abc\n", "64 hex digits"),
        ("tokenFile: missing\n", "cannot read the token file"),
    ],
)
def test_bad_config_file_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(CliError, match=message) as info:
        resolve_target(ConnectionOptions(), {"PYMESH_CONFIG": str(cfg)})
    assert info.value.exit_code == 2


# ------------------------------------------------------------------------------ apply body


def test_one_input_goes_as_it_is() -> None:
    body, name, starts = build_body([Source("a.json", '{"kind": "X"}')])
    assert (body, name, starts) == ('{"kind": "X"}', "a.json", [(1, "a.json")])


def test_several_inputs_are_one_body_and_findings_map_back() -> None:
    a = Source("a.yaml", "kind: A\nx: 1\n")
    b = Source("b.yaml", "kind: B\ny: 2\nz: 3")  # no final newline
    body, name, starts = build_body([a, b])
    assert body == "---\nkind: A\nx: 1\n---\nkind: B\ny: 2\nz: 3\n"
    assert starts == [(2, "a.yaml"), (5, "b.yaml")]
    lines = body.splitlines()
    assert lines[3 - 1] == "x: 1" and lines[7 - 1] == "z: 3"
    found = [
        Finding("PM0002", "error", "m", name, 3, "A default/a", "x"),
        Finding("PM0002", "error", "m", name, 7, "B default/b", "z"),
        Finding("IST0101", "error", "m", "<stored>", None, "C default/c"),
    ]
    mapped = map_findings(found, name, starts)
    assert [(f.file, f.line) for f in mapped] == [("a.yaml", 2), ("b.yaml", 3), ("<stored>", None)]


# ------------------------------------------------------------------------------ small helpers


def test_table_pads_columns_and_marks_empty_cells() -> None:
    assert table(["A", "LONGER"], [["x", None], ["yyyy", "z"]]).splitlines() == [
        "A      LONGER",
        "x      -",
        "yyyy   z",
    ]


def test_times() -> None:
    assert ago(0.012) == "12ms ago" and ago(3.25) == "3.2s ago" and ago(None) == "-"
    assert in_time(7200) == "in 2h" and in_time(-90) == "2m ago" and in_time(None) == "never"


def test_parse_ttl() -> None:
    assert parse_ttl("1h") == 3600 and parse_ttl("90s") == 90 and parse_ttl("0") is None
    with pytest.raises(CliError):
        parse_ttl("later")


def test_match_text() -> None:
    m = HTTPMatchRequest(
        uri=StringMatch("prefix", "/api"),
        headers={"x-user": StringMatch("exact", "jason"), "x-debug": None},
        port=9080,
    )
    assert match_text(m) == (
        "uri prefix /api, header x-debug present, header x-user exact jason, port 9080"
    )
    assert match_text(HTTPMatchRequest()) == "*"


def test_find_workload_by_id_agent_or_service() -> None:
    ws = [
        {"workload": "a-1", "agents": ["x"], "service": "a", "namespace": "default"},
        {"workload": "b-1", "agents": ["y"], "service": "b", "namespace": "default"},
        {"workload": "b-2", "agents": ["z"], "service": "b", "namespace": "prod"},
    ]
    assert find_workload(ws, "a-1", None)["workload"] == "a-1"
    assert find_workload(ws, "y", None)["workload"] == "b-1"
    assert find_workload(ws, "a", None)["workload"] == "a-1"
    assert find_workload(ws, "b", "prod")["workload"] == "b-2"
    with pytest.raises(CliError, match="several workloads"):
        find_workload(ws, "b", None)
    with pytest.raises(CliError, match="no registered workload"):
        find_workload(ws, "c", None)


# ---------------------------------------------------------------- proxy-config, describe

DOCS = yaml.safe_load_all("""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  location: MESH_INTERNAL
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
    - match: [{uri: {prefix: /v1}}]
      route: [{destination: {host: reviews, subset: v1}}]
      timeout: 2s
""")
RESOURCES: list[dict[str, Any]] = list(DOCS)
WORKLOAD = {
    "workload": "reviews-abc",
    "service": "reviews",
    "namespace": "default",
    "address": "127.0.0.1",
    "ports": [{"name": "http", "port": 18081, "servicePort": 9080, "protocol": "HTTP"}],
    "labels": {"version": "v1"},
    "locality": "",
    "agents": ["reviews-1"],
    "lease": {"ttlSeconds": 15.0, "remainingSeconds": 14.2, "confirmed": True},
}
ENTRY = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "WorkloadEntry",
    "metadata": {"name": "reviews-abc", "namespace": "default"},
    "spec": {
        "address": "127.0.0.1",
        "ports": {"http": 18081},
        "labels": {"version": "v1", "app": "reviews", "pymesh.io/service": "reviews"},
        "serviceAccount": "reviews",
    },
}


def test_proxy_config_compiles_the_snapshot_as_the_agent() -> None:
    snap = {"revision": 9, "digest": "sha256:x", "view": {"everything": True}}
    pc = proxy_config({**snap, "resources": [*RESOURCES, ENTRY]}, WORKLOAD)
    route = next(r for r in pc["routes"] if r["match"] == ["uri prefix /v1"])
    assert route["destinations"] == [
        {"host": "reviews.default.svc.cluster.local", "subset": "v1", "port": None, "weight": 100}
    ]
    assert route["timeout"] == "2s"
    names = [c["name"] for c in pc["clusters"]]
    assert "outbound|9080|v1|reviews.default.svc.cluster.local" in names
    assert {(e["address"], e["port"]) for e in pc["endpoints"]} == {("127.0.0.1", 18081)}
    assert pc["policies"]["peerAuthentication"]["mode"] == "PERMISSIVE"


def test_describe_service_joins_resources_and_registry() -> None:
    d = describe_service("reviews", "default", RESOURCES, [WORKLOAD])
    assert d is not None
    assert d["definedBy"] == ["ServiceEntry default/reviews (MESH_INTERNAL, STATIC)"]
    (ep,) = d["endpoints"]
    assert ep["health"] == "healthy: lease 14.2s left of 15s"
    assert d["routesTo"][0]["subset"] == "v1" and d["routesTo"][0]["match"] == "uri prefix /v1"
    text = render_describe(d)
    assert "VirtualService default/reviews http[0]: 100% → subset v1" in text
    # a service only the registry knows
    only = describe_service("reviews", "default", [], [WORKLOAD])
    assert only is not None and only["definedBy"][0].startswith("the registry")
    assert describe_service("ratings", "default", RESOURCES, [WORKLOAD]) is None
