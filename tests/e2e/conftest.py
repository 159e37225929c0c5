"""Fixtures for the end-to-end tests: real uvicorn backends on loopback and meshed clients of
both flavours (helpers in `tests/e2e/meshkit.py`).

- `backends(*names)` starts one uvicorn server per name, each in its own thread with its own
  event loop, on 127.0.0.1 port 0; they are stopped (in parallel) when the test ends.
- `refusing_port()` gives a port that refuses connections (bound, never listening, held until
  the test ends so no other process can take it meanwhile).
- `kind` is "sync" or "async"; `connect(mesh)` makes a `Caller` of that kind, closed before the
  backends stop. Async tests run on anyio's pytest plugin (`anyio_backend` is asyncio).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.e2e.meshkit import Backend, Caller, ServerThread


@pytest.fixture
def backends() -> Iterator[Callable[..., list[Backend]]]:
    """Factory: `a, b = backends("v1", "v2")` starts one backend per name."""
    running: list[tuple[Backend, ServerThread]] = []

    def start(*names: str) -> list[Backend]:
        started = [(Backend(n), ServerThread()) for n in names]
        for b, t in started:
            t.start(b)  # all threads start at once, then each is waited for
        for b, t in started:
            b.port = t.wait_started()
            running.append((b, t))
        return [b for b, _ in started]

    yield start
    for _, t in running:
        t.request_stop()
    for _, t in running:
        t.join()


@pytest.fixture
def refusing_port() -> Iterator[Callable[[], int]]:
    """Factory: a loopback port that refuses connections (bound, not listening)."""
    held: list[socket.socket] = []

    def make() -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        held.append(s)
        return int(s.getsockname()[1])

    yield make
    for s in held:
        s.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which meshed client a test uses."""
    return str(request.param)


@pytest.fixture
async def connect(kind: str, backends: Any) -> AsyncIterator[Callable[..., Caller]]:
    """Factory: `c = connect(mesh)` is a `Caller` of the test's kind, closed after the test
    (before the backends stop)."""
    made: list[Caller] = []

    def make(mesh: Any, **kw: Any) -> Caller:
        c = Caller(kind, mesh, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()
