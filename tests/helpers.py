"""Small helpers shared by tests (import as `from tests.helpers import free_port`)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago. Prefer binding port 0 and passing the
    bound socket on; use this only where a port number must be known before the bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def shared_data(name: str) -> Path:
    """A file of the team's shared test data (`../shared/data/` beside the repository, as CI
    lays it out; `/work/shared/data` on a developer machine). Missing data is an error, never
    a skip: these tables are what the tests prove."""
    for base in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if (base / name).is_file():
            return base / name
    raise FileNotFoundError(f"shared test data {name} not found beside the repository")


def curl() -> str:
    """The path of curl, the non-Python TLS client some tests use. `make test` installs it
    (scripts/install-test-deps.sh); without it those tests fail rather than skip, so a run
    that lacks it cannot pass for one that tested it."""
    path = shutil.which("curl")
    if path is None:
        pytest.fail("curl is needed: run `make test` (it installs curl) or apt-get install curl")
    return path
