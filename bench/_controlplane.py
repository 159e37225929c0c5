"""Helpers for the control-plane benchmarks: run `pymesh-controlplane serve` as a real process
on a loopback port, talk to it, read its memory, and generate N services of Istio config.

    with control_plane(tmp, "--lease-ttl", "600") as cp:
        cp.client().post("/v1/apply", ...)
        cp.rss_kib()
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import BenchError

BIN = Path(sys.executable).parent / "pymesh-controlplane"


@dataclass
class ControlPlane:
    """A running control plane process."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca.pem"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context that verifies this control plane (None for plain HTTP)."""
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else None

    def client(self, timeout: float = 60.0) -> httpx.Client:
        """An admin API client."""
        return httpx.Client(
            base_url=self.url,
            verify=self.ssl_context() or True,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def status(self, field: str) -> int:
        """A `/proc/<pid>/status` figure in KiB (VmRSS, VmHWM, ...)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise BenchError(f"no {field} in /proc/{self.proc.pid}/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        import os

        return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def control_plane(*extra: str, tls: bool = True, cpu: int | None = None) -> Iterator[ControlPlane]:
    """Run a control plane in a temporary data dir (optionally pinned to `cpu`); stop it
    (SIGTERM) on exit."""
    if not BIN.exists():
        raise BenchError(f"{BIN} not found: install the control plane (make venv)")
    with tempfile.TemporaryDirectory(prefix="pymesh-bench-cp-") as tmp:
        data = Path(tmp) / "data"
        port_file = Path(tmp) / "port"
        cmd = [
            str(BIN),
            "serve",
            "--data-dir",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
            *(() if tls else ("--insecure-http",)),
            *extra,
        ]
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        log = (Path(tmp) / "cp.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.poll() is not None:
                    raise BenchError(
                        f"control plane exited {proc.returncode}: "
                        + (Path(tmp) / "cp.log").read_text()
                    )
                if time.monotonic() > deadline:
                    raise BenchError("control plane did not start within 30 s")
                time.sleep(0.02)
            yield ControlPlane(proc, data, int(port_file.read_text()), tls)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()


def service_docs(i: int, namespace: str = "default", timeout: str = "5s") -> str:
    """One service's config: a ServiceEntry (selecting registered workloads), a
    DestinationRule with two subsets and outlier detection, a VirtualService with a header
    match and an 80/20 split."""
    name = f"svc-{i:04d}"
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{name}]
  ports: [{{number: 9080, name: http}}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {name}
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
    - {{name: v1, labels: {{version: v1}}}}
    - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{name}]
  http:
    - match: [{{headers: {{x-canary: {{exact: "1"}}}}}}]
      route: [{{destination: {{host: {name}, subset: v2}}}}]
    - route:
        - {{destination: {{host: {name}, subset: v1}}, weight: 80}}
        - {{destination: {{host: {name}, subset: v2}}, weight: 20}}
      retries: {{attempts: 2, perTryTimeout: 1s}}
      timeout: {timeout}
"""


def apply_services(client: httpx.Client, count: int, batch: int = 100) -> int:
    """Apply `count` services in batches; returns the last revision."""
    rev = 0
    for start in range(0, count, batch):
        body = "---\n".join(service_docs(i) for i in range(start, min(count, start + batch)))
        r = client.post(
            "/v1/apply", content=body.encode(), headers={"Content-Type": "application/yaml"}
        )
        if r.status_code != 200:
            raise BenchError(f"apply failed ({r.status_code}): {r.text[:500]}")
        rev = int(r.json()["revision"])
    return rev
