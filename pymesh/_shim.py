"""The few primitives that differ between the async stack and its generated sync twin.

`scripts/unasync.py` rewrites `AsyncBackground` to `SyncBackground`, `async_sleep` to
`sync_sleep`, `async_lean_pool` to `sync_lean_pool`, `AsyncSignal` to `SyncSignal` (and
`AnyIOBackend` to `SyncBackend`) when it generates `pymesh/_sync` from `pymesh/_async`.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any

import httpcore

if TYPE_CHECKING:
    from pymesh.http1.pool import Http1Pool

async_sleep = asyncio.sleep
sync_sleep = time.sleep

# Background work the caller never waits for (traffic mirrors), kept per client by
# `AsyncBackground` / `SyncBackground`. Callers bound how much they start (a mirror takes a slot
# of a bounded semaphore first), so neither a task set nor the thread pool's queue grows
# without limit.
SPAWN_THREADS = 4
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
# How long closing a client waits for its mirrors still in flight before it cuts them off.
BACKGROUND_GRACE = 1.0


def _spawn_executor() -> ThreadPoolExecutor:
    """The small thread pool every sync client's background work shares (made on first use)."""
    global _executor
    executor = _executor
    if executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(SPAWN_THREADS, thread_name_prefix="pymesh-spawn")
            executor = _executor
    return executor


class AsyncBackground:
    """One client's background tasks on the running asyncio loop (traffic mirrors): kept
    referenced until done (asyncio holds tasks weakly), and given `grace` seconds to finish
    when the client closes, then cancelled — so none outlives the connections it uses.

    How this works: `spawn` adds each task to a set it leaves when done; `aclose` marks the
    client closed (`closed`, which work not yet started checks), waits for the set, cancels
    what is left and waits for the cancellations to land."""

    def __init__(self) -> None:
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run `fn(*args)` as a task. RuntimeError, before anything starts, when no asyncio
        loop runs (trio) or the client is closed."""
        if self.closed:
            raise RuntimeError("the client is closed")
        task = asyncio.get_running_loop().create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, timeout: float | None = None) -> set[asyncio.Task[None]]:
        """Wait up to `timeout` s (None: no limit) for the work in flight on the running loop;
        what is still running then. (Tasks of another loop — a client used from two loops —
        cannot be awaited here and are left to theirs.)"""
        loop = asyncio.get_running_loop()
        tasks = {t for t in self._tasks if not t.done() and t.get_loop() is loop}
        if not tasks:
            return tasks
        return (await asyncio.wait(tasks, timeout=timeout))[1]

    async def aclose(self, grace: float = BACKGROUND_GRACE) -> None:
        """Stop taking work; wait up to `grace` s for what runs, then cancel the rest."""
        self.closed = True
        late = await self.wait(grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


class SyncBackground:
    """One client's background work on the shared `pymesh-spawn` threads (traffic mirrors),
    given `grace` seconds to finish when the client closes. A thread cannot be cancelled: work
    still running after the grace has its connections closed under it by the client's close
    (it fails, which a mirror only logs), and work not yet started sees `closed` and skips.

    How this works: `spawn` submits to the shared pool and keeps the future until it is done;
    `close` marks the client closed and waits for the futures it holds."""

    def __init__(self) -> None:
        self.closed = False
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()

    def spawn(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on the spawn threads. RuntimeError, before anything starts, when
        the client is closed."""
        if self.closed:
            raise RuntimeError("the client is closed")
        future = _spawn_executor().submit(fn, *args)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def wait(self, timeout: float | None = None) -> set[Future[None]]:
        """Wait up to `timeout` s (None: no limit) for the work in flight; what is still
        running then."""
        with self._lock:
            futures = set(self._futures)
        if not futures:
            return futures
        return wait_futures(futures, timeout=timeout).not_done

    def close(self, grace: float = BACKGROUND_GRACE) -> None:
        """Stop taking work; wait up to `grace` s for what runs."""
        self.closed = True
        self.wait(grace)


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
