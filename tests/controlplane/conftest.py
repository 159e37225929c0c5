"""Fixtures for the control-plane tests.

- `anyio_backend`: asyncio (async tests run on anyio's pytest plugin).
- `FakeClock`: a monotonic clock the test moves by hand (lease expiry without sleeping).
- `ControlPlaneProcess` / `cp_process`: the real `pymesh-controlplane serve` as a subprocess on
  127.0.0.1 port 0 (it writes the port it bound to `--port-file`), with its admin token read
  from the data dir; `restart()` stops it (SIGTERM) and starts it again on the same data dir;
  `kill()` is SIGKILL; `start(same_port=True)` binds the port it had before. Plain HTTP
  (`--insecure-http`) unless made with `tls=True`: then `url` is https and `client()`
  verifies the server with the CA the control plane wrote to `<data-dir>/ca.pem`.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent / "pymesh-controlplane"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """A monotonic clock for tests: `clock()` is the time, `advance(s)` moves it."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class ControlPlaneProcess:
    """`pymesh-controlplane serve` in a subprocess on a loopback port it picks itself."""

    def __init__(self, data_dir: Path, *extra: str, tls: bool = False) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.tls = tls
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.stdout = ""

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca.pem"

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else True

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 15.0, *, same_port: bool = False) -> None:
        port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        port = self.port if same_port else 0
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                str(BIN),
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{port}",
                "--port-file",
                str(port_file),
                *(() if self.tls else ("--insecure-http",)),
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                raise RuntimeError(f"control plane exited {self.proc.returncode}:\n{out}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("control plane did not start in time")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        if proc.stdout:
            self.stdout += proc.stdout.read()
            proc.stdout.close()
        return rc

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, streams cut."""
        if self.proc is not None:
            self.proc.kill()
            self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=5.0, verify=self.verify(), **kw)


@pytest.fixture
def cp_factory(tmp_path: Path) -> Iterator[Any]:
    """Factory: `cp = cp_factory("--lease-ttl", "0.5")` starts one control plane."""
    started: list[ControlPlaneProcess] = []

    def make(*extra: str, name: str = "cp", tls: bool = False) -> ControlPlaneProcess:
        cp = ControlPlaneProcess(tmp_path / name, *extra, tls=tls)
        cp.start()
        started.append(cp)
        return cp

    yield make
    for cp in started:
        cp.stop()


def read_messages(lines: Iterator[str], count: int, timeout: float) -> list[dict[str, Any]]:
    """The next `count` non-ping messages of an NDJSON stream (httpx `iter_lines`)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for line in lines:
        if line.strip():
            msg = json.loads(line)
            if msg["type"] != "ping":
                out.append(msg)
        if len(out) >= count or time.monotonic() > deadline:
            break
    return out
