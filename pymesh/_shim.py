"""The few primitives that differ between the async stack and its generated sync twin.

`scripts/unasync.py` rewrites `async_spawn` to `sync_spawn`, `async_sleep` to `sync_sleep`,
`async_lean_pool` to `sync_lean_pool`, `AsyncSignal` to `SyncSignal` (and `AnyIOBackend` to
`SyncBackend`) when it generates `pymesh/_sync` from `pymesh/_async`.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpcore

if TYPE_CHECKING:
    from pymesh.http1.pool import Http1Pool

async_sleep = asyncio.sleep
sync_sleep = time.sleep

# Background work nobody waits for (traffic mirrors): `async_spawn` / `sync_spawn`. Callers bound
# how much they start (a mirror takes a slot of a bounded semaphore first), so neither the task
# set nor the thread pool's queue grows without limit.
_TASKS: set[asyncio.Task[None]] = set()
SPAWN_THREADS = 4
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def async_spawn(fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    """Run `fn(*args)` as a task of the running asyncio loop, kept referenced until it is done
    (asyncio holds tasks weakly). RuntimeError, before anything starts, when no asyncio loop
    runs (trio)."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(fn(*args))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


def sync_spawn(fn: Callable[..., None], *args: Any) -> None:
    """Run `fn(*args)` on a small shared pool of `SPAWN_THREADS` threads."""
    global _executor
    executor = _executor
    if executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(SPAWN_THREADS, thread_name_prefix="pymesh-spawn")
            executor = _executor
    executor.submit(fn, *args)


class AsyncSignal:
    """A one-shot wake-up for a task waiting in the async stack (a pending request waiting for
    a connection slot). `set` may be called from any thread, or from another event loop: a
    `Mesh` and its circuit breakers are shared by every client it made."""

    __slots__ = ("_fut", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fut: asyncio.Future[None] = self._loop.create_future()

    def set(self) -> None:
        """Wake the waiter (thread-safe)."""
        self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self._fut.done():
            self._fut.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds; True when woken."""
        if self._fut.done():
            return True
        try:
            await asyncio.wait_for(self._fut, max(0.0, timeout))
        except TimeoutError:
            return False
        return True


class SyncSignal:
    """`AsyncSignal` for the sync stack: a `threading.Event`."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Wake the waiter."""
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block at most `timeout` seconds; True when woken."""
        return self._event.wait(max(0.0, timeout))


# The absolute (monotonic) deadline of the attempt in progress in this context. The network
# backend wrappers clamp every connect/read/write timeout to it, so one mechanism enforces the
# route timeout and perTryTimeout for sync and async alike, while the body is still streaming.
# The check to run on a TLS connection right after its handshake, before the first request
# byte (the SPIFFE rules and the identities expected for the endpoint); None: no TLS check.
PEER_CHECK: contextvars.ContextVar[Callable[[ssl.SSLObject], object] | None] = (
    contextvars.ContextVar("pymesh_peer_check", default=None)
)


class PeerRejectedError(httpcore.ConnectError):
    """The TLS peer failed the post-handshake check: the connection is closed unused."""


DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar(
    "pymesh_deadline", default=float("inf")
)


POOL_KINDS = ("auto", "lean", "httpcore")


def _check_pool_kind(kind: str) -> None:
    if kind not in POOL_KINDS:
        raise ValueError(f"pool={kind!r}: expected one of {', '.join(map(repr, POOL_KINDS))}")


def async_lean_pool(kind: str, limits: Any) -> Http1Pool | None:
    """The async transport's endpoint pool: the lean HTTP/1.1 pool (`pymesh.http1`) for
    `pool="auto"` or `"lean"`, None (httpcore's pool) for `pool="httpcore"`."""
    _check_pool_kind(kind)
    if kind == "httpcore":
        return None
    from pymesh.http1.pool import Http1Pool  # import here: it imports the async transport

    return Http1Pool.from_httpx_limits(limits)


def sync_lean_pool(kind: str, limits: Any) -> Any:
    """Always None: the sync transport uses httpcore's pool (`pool="auto"` or `"httpcore"`);
    the lean pool is async-only. (Typed Any so that the generated sync transport, which
    shares the async one's code, type-checks.)"""
    _check_pool_kind(kind)
    if kind == "lean":
        raise ValueError('pool="lean" is async-only; the sync client uses httpcore')
    return None
