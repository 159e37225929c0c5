"""Fixtures for the `pymeshctl` tests.

- `ctl_cp`: one real `pymesh-controlplane serve` process per module (the tests/controlplane
  helper) over HTTPS (its CA in `<data-dir>/ca.pem`); `Ctl` knows its URL, CA file and admin
  token, and gives an httpx client for raw calls.
- `ctl`: runs `pymeshctl` in-process (typer's CliRunner) with an isolated environment (no
  PYMESH_* variables, an empty XDG config home) plus what the test passes.
- `run_pymeshctl`: the real console script in a subprocess (for "no traceback" checks).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pymesh.cli.main import app
from tests.controlplane.conftest import ControlPlaneProcess

PYMESHCTL = Path(sys.executable).parent / "pymeshctl"
ENV_NAMES = (
    "PYMESH_CONTROL_PLANE",
    "PYMESH_ADMIN_TOKEN",
    "PYMESH_CA_CERT",
    "PYMESH_CA_HASH",
    "PYMESH_CONFIG",
)


@dataclass
class Ctl:
    """A running control plane and how pymeshctl reaches it."""

    proc: ControlPlaneProcess
    url: str
    ca_file: Path | None

    @property
    def token(self) -> str:
        return self.proc.token

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    def flags(self) -> list[str]:
        """The connection flags for this control plane."""
        out = ["--control-plane", self.url, "--token", self.token]
        if self.ca_file is not None:
            out += ["--ca-cert", str(self.ca_file)]
        return out

    def client(self, token: str | None = None) -> httpx.Client:
        """A raw API client (admin token unless `token`)."""
        return httpx.Client(
            base_url=self.url,
            verify=self.verify,
            timeout=5.0,
            headers={"Authorization": f"Bearer {token or self.token}"},
        )


def start_control_plane(data_dir: Path, *extra: str, tls: bool = True) -> Ctl:
    """Start one control plane: HTTPS (its CA in `<data-dir>/ca.pem`), or plain HTTP."""
    proc = ControlPlaneProcess(data_dir, *extra, tls=tls)
    proc.start()
    return Ctl(proc, proc.url, proc.ca_file if tls else None)


@pytest.fixture(scope="module")
def ctl_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctl]:
    """One control plane for the module's tests."""
    cp = start_control_plane(tmp_path_factory.mktemp("cp") / "data")
    try:
        yield cp
    finally:
        cp.proc.stop()


@dataclass
class Result:
    """What a pymeshctl run printed and returned."""

    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def clean_env(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """An environment without the user's pymeshctl settings."""
    env: dict[str, str | None] = dict.fromkeys(ENV_NAMES)
    env["XDG_CONFIG_HOME"] = str(tmp / "xdg")
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


@pytest.fixture
def ctl(tmp_path: Path) -> Any:
    """`ctl(*args, env={}, input=None)` runs pymeshctl in-process."""
    runner = CliRunner()

    def run(
        *args: str | Path, env: Mapping[str, str] | None = None, input: str | None = None
    ) -> Result:
        r = runner.invoke(
            app,
            [str(a) for a in args],
            env=clean_env(tmp_path, env),
            input=input,
            catch_exceptions=True,
        )
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return Result(r.exit_code, r.stdout, r.stderr, r.exception)

    return run


@pytest.fixture
def run_pymeshctl(tmp_path: Path) -> Any:
    """`run_pymeshctl(*args, env={})` runs the console script in a subprocess."""

    def run(*args: str | Path, env: Mapping[str, str] | None = None) -> Result:
        full = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
        full.update({k: v for k, v in clean_env(tmp_path, env).items() if v is not None})
        full["PYTHONIOENCODING"] = "utf-8"
        p = subprocess.run(
            [str(PYMESHCTL), *map(str, args)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
            check=False,
            env=full,
        )
        return Result(p.returncode, p.stdout, p.stderr)

    return run


def no_traceback(r: Result) -> None:
    """Nothing in the output looks like a Python traceback."""
    assert "Traceback" not in r.output, r.output
    assert 'File "' not in r.output, r.output
