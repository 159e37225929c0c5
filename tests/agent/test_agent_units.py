"""The agent's parts without a control plane: join-token parsing, `Mesh.from_env`, what is kept
on disk, how a Mesh in control-plane mode is made, and a new agent after a fork."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import pymesh
from pymesh.agent import AgentFiles, JoinToken, JoinTokenError, ca_hash_of
from pymesh.identity import CertificateAuthority, SpiffeId
from pymesh.identity.tls import key_and_chain_pem

HASH = "ab" * 32


def test_join_token_parsing() -> None:
    tok = JoinToken(f" pmj1.9f2c.s3cr3t.{HASH.upper()} ")
    assert (tok.id, tok.ca_hash) == ("9f2c", HASH)
    assert "s3cr3t" not in repr(tok)
    for bad in ("", "pmj1.a.b", f"pmj2.a.b.{HASH}", f"pmj1..b.{HASH}", "pmj1.a.b.cafe"):
        with pytest.raises(JoinTokenError):
            JoinToken(bad)


def test_from_env() -> None:
    env = {
        "PYMESH_SERVICE": "reviews",
        "PYMESH_NAMESPACE": "shop",
        "PYMESH_SERVICE_ACCOUNT": "reviews-sa",
        "PYMESH_CONTROL_PLANE": "https://cp-a:15012, https://cp-b:15012",
        "PYMESH_TOKEN": f"pmj1.a.b.{HASH}",
        "PYMESH_DATA_DIR": "/var/lib/reviews",
        "PYMESH_LABELS": "app=reviews, version=v2",
        "PYMESH_LOCALITY": "eu/a",
        "PYMESH_ADDRESS": "10.0.0.7",
        "PYMESH_READY_TIMEOUT": "5",
    }
    mesh = pymesh.Mesh.from_env(env)
    assert mesh.control_plane_mode and not mesh.ready()
    assert (mesh.service, mesh.namespace, mesh.service_account) == ("reviews", "shop", "reviews-sa")
    assert mesh.labels == {"app": "reviews", "version": "v2"} and mesh.locality == "eu/a"
    s = mesh.agent.settings
    assert s.control_planes == ("https://cp-a:15012", "https://cp-b:15012")
    assert (s.data_dir, s.address, s.ready_timeout) == (Path("/var/lib/reviews"), "10.0.0.7", 5.0)
    assert pymesh.Mesh.from_env({**env, "PYMESH_PERSIST": "0"}).agent.settings.data_dir is None
    with pytest.raises(ValueError, match="PYMESH_SERVICE is not set"):
        pymesh.Mesh.from_env({"PYMESH_CONTROL_PLANE": "https://cp:15012"})
    with pytest.raises(ValueError, match="PYMESH_LABELS"):
        pymesh.Mesh.from_env({**env, "PYMESH_LABELS": "novalue"})


def test_token_file_and_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text(f"pmj1.a.b.{HASH}\n")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    env = {
        "PYMESH_SERVICE": "reviews",
        "PYMESH_CONTROL_PLANE": "https://cp:15012",
        "PYMESH_TOKEN_FILE": str(tmp_path / "token"),
    }
    s = pymesh.Mesh.from_env(env).agent.settings
    assert s.token == f"pmj1.a.b.{HASH}"
    assert s.data_dir == tmp_path / "state" / "pymesh" / "default" / "reviews"


def test_mesh_modes_are_exclusive() -> None:
    with pytest.raises(TypeError, match="not both"):
        pymesh.Mesh(
            pymesh.Mesh.from_yaml("", service="a").config,
            service="a",
            control_plane="https://cp:15012",
        )
    with pytest.raises(TypeError, match="needs config"):
        pymesh.Mesh(service="a")
    static = pymesh.Mesh.from_yaml("", service="a")
    assert static.ready() and static.wait_ready(0) and not static.control_plane_mode
    with pytest.raises(RuntimeError, match="static mode"):
        static.agent  # noqa: B018


def test_a_forked_child_gets_its_own_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    mesh = pymesh.Mesh(service="a", control_plane="https://cp:15012", persist=False)
    parent = mesh.agent
    assert mesh.agent is parent
    monkeypatch.setattr(os, "getpid", lambda: parent.pid + 1)  # as in a pre-fork worker
    child = mesh.agent
    assert child is not parent and child.id != parent.id and child.pid == parent.pid + 1


def test_files_keep_a_valid_identity_only(tmp_path: Path) -> None:
    ca = CertificateAuthority.generate()
    sid = SpiffeId.workload("cluster.local", "default", "reviews")
    key, svid = ca.issue(sid, ttl=60)
    files = AgentFiles(tmp_path / "agent")
    files.ensure()
    assert files.load_identity(0.0) is None  # nothing yet
    files.svid_path.write_bytes(key_and_chain_pem(key, svid.chain))
    files.save_identity(svid)
    assert stat.S_IMODE((files.directory / "identity.json").stat().st_mode) == 0o600
    now = svid.not_after - 30
    got = files.load_identity(now)
    assert got is not None and got.svid.spiffe_id == sid and got.trust_domain == "cluster.local"
    assert got.svid.bundle == svid.bundle
    assert ca_hash_of(got.svid.bundle.all_roots()[0]) == ca_hash_of(ca.certificate)
    assert files.load_identity(svid.not_after + 1) is None  # expired
    files.svid_path.write_bytes(b"garbage")
    assert files.load_identity(now) is None
    files.save_snapshot({"type": "snapshot", "revision": 3, "resources": []})
    assert files.load_snapshot() == {"type": "snapshot", "revision": 3, "resources": []}
    (files.directory / "snapshot.json").write_text("{")
    assert files.load_snapshot() is None
