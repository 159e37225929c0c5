"""Fixtures for the agent tests: a real control plane (HTTPS, sub-second leases) and meshes in
control-plane mode against it.

- `kit`: a `Kit` bound to one `pymesh-controlplane serve --lease-ttl 0.9 --heartbeat 0.2`
  process (`tests.controlplane.conftest.ControlPlaneProcess`, HTTPS); `kit.mesh(...)` makes a
  `pymesh.Mesh` in control-plane mode with fast back-off, `kit.serve(mesh, Backend(...))` runs
  a meshed server that registers its port; everything is closed at teardown.
- `run_workload(...)`: `tests/agent/workload.py` as a subprocess (a meshed server that can be
  SIGKILLed without deregistering).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.server.runner import MeshServer
from tests.controlplane.conftest import ControlPlaneProcess
from tests.e2e.meshkit import Backend, resource, to_yaml

FAST = {"retry_initial": 0.05, "retry_max": 0.3, "request_timeout": 3.0}
SE = resource(
    "ServiceEntry",
    "reviews",
    {
        "hosts": ["reviews"],
        "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
        "resolution": "STATIC",
        "location": "MESH_INTERNAL",
        "workloadSelector": {"labels": {"app": "reviews"}},
    },
)
WORKLOAD = Path(__file__).with_name("workload.py")


def eventually(check: Callable[[], bool], timeout: float = 5.0, every: float = 0.02) -> float:
    """Wait until `check()` is true; the seconds it took (AssertionError on timeout)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(every)
    return time.monotonic() - t0


class Kit:
    """One control plane, and the meshes and servers a test makes against it."""

    def __init__(self, cp: ControlPlaneProcess, tmp_path: Path) -> None:
        self.cp = cp
        self.tmp = tmp_path
        self.meshes: list[pymesh.Mesh] = []
        self.servers: list[MeshServer] = []
        self.procs: list[subprocess.Popen[str]] = []
        self._tokens: dict[str, str] = {}

    def admin(self) -> httpx.Client:
        return self.cp.client(headers=self.cp.auth)

    def token(self, service_account: str, ttl: float | None = 3600.0) -> str:
        if ttl == 3600.0 and service_account in self._tokens:
            return self._tokens[service_account]
        with self.admin() as c:
            r = c.post("/v1/tokens", json={"serviceAccount": service_account, "ttlSeconds": ttl})
            r.raise_for_status()
        tok = str(r.json()["token"])
        if ttl == 3600.0:
            self._tokens[service_account] = tok
        return tok

    def apply(self, *docs: dict[str, Any]) -> int:
        with self.admin() as c:
            r = c.post(
                "/v1/apply", content=to_yaml(*docs), headers={"content-type": "application/yaml"}
            )
            r.raise_for_status()
        return int(r.json()["revision"])

    def agents(self) -> dict[str, dict[str, Any]]:
        with self.admin() as c:
            return {a["agent"]: a for a in c.get("/v1/agents").json()["items"]}

    def mesh(
        self,
        service: str,
        *,
        labels: dict[str, str] | None = None,
        token: str | None = None,
        data_dir: Path | None = None,
        **kw: Any,
    ) -> pymesh.Mesh:
        kw.setdefault("ready_timeout", 10.0)
        mesh = pymesh.Mesh(
            service=service,
            labels=labels,
            control_plane=self.cp.url,
            token=token if token is not None else self.token(service),
            data_dir=data_dir or self.tmp / f"agent-{service}-{len(self.meshes)}",
            agent_settings=FAST,
            **kw,
        )
        self.meshes.append(mesh)
        return mesh

    def serve(self, mesh: pymesh.Mesh, backend: Backend) -> MeshServer:
        server = mesh.server(backend).start()
        backend.port = server.port
        self.servers.append(server)
        return server

    def workload_env(self, service: str, version: str, data_dir: Path) -> dict[str, str]:
        return {
            **os.environ,
            "PYMESH_SERVICE": service,
            "PYMESH_CONTROL_PLANE": self.cp.url,
            "PYMESH_TOKEN": self.token(service),
            "PYMESH_DATA_DIR": str(data_dir),
            "PYMESH_LABELS": f"app={service},version={version}",
            "PYMESH_READY_TIMEOUT": "10",
        }

    def run_workload(self, service: str, version: str) -> tuple[subprocess.Popen[str], int]:
        """A meshed server in a subprocess answering `version`; (process, its port)."""
        env = self.workload_env(service, version, self.tmp / f"proc-{service}-{version}")
        proc = subprocess.Popen(
            [sys.executable, str(WORKLOAD), version],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            proc.kill()
            raise RuntimeError(f"workload did not start: {line}{proc.stdout.read()}")
        return proc, int(line.split()[1])

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for server in self.servers:
            server.stop()
        for mesh in self.meshes:
            mesh.close()


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    cp = ControlPlaneProcess(
        tmp_path / "cp",
        *("--lease-ttl", "0.9", "--heartbeat", "0.2", "--debounce", "0.01"),
        tls=True,
    )
    cp.start()
    k = Kit(cp, tmp_path)
    try:
        yield k
    finally:
        k.close()
        cp.stop()
