"""The lean HTTP/1.1 keep-alive pool of the async meshed client (the endpoint tier's pool).

How this works: `Http1Pool` keeps one `EndpointPool` per (address, port). An `EndpointPool` has
a LIFO list of idle connections (`Http1Connection`, asyncio Protocols on the running loop, so
uvloop's when the application runs uvloop), a count of open and opening connections, and a
queue of requests waiting for one when the endpoint's connection limit is reached. A request
takes the most recently used idle connection (no liveness polling: a connection the server
closed has already left the idle list, from `eof_received` / `connection_lost`), or opens one,
or waits. Connections come back to the idle list the moment their response ends; one
`call_at` timer per endpoint evicts connections idle for longer than the idle timeout.

Limits per endpoint: the connection cap, idle connections kept, requests per connection, idle
timeout and connect timeout come from the cluster's `connectionPool` (DestinationRule) when
the call's cluster spec has one (`tcp.maxConnections`, `tcp.connectTimeout`,
`http.maxRequestsPerConnection`, `http.idleTimeout`, `tcp.maxConnectionDuration`), else from
the transport's `httpx.Limits` (`max_connections`, `max_keepalive_connections`,
`keepalive_expiry`). (The cluster-wide circuit breakers on the same fields are the stack's.)

Deadlines: the attempt's absolute deadline (`call.attempt_deadline`) and httpx's per-operation
timeouts (`request.extensions["timeout"]`: connect, read, write, pool) bound every wait; a
timed-out or cancelled exchange aborts its connection. Errors are httpcore's exception classes,
so `EndpointFilter` classifies them as it does httpcore's (connect-failure, reset, timeouts).

`send(call)` is the mesh's sender: it builds the request head from the endpoint address, the
raw target and httpx's header list, writes a buffered body in the same `write` as the head (a
streamed one chunk by chunk, chunked when httpx framed it so), and wraps the response body in
`MeshBody`, the transport's `AsyncMeshResponseStream` as a plain async iterator (deadline error
mapping, the endpoint's in-flight count released on close).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, NamedTuple

import httpcore
import httpx

from pymesh._async.transport import AsyncMeshResponseStream
from pymesh._httpx_errors import map_httpcore
from pymesh.call import Call
from pymesh.http1.protocol import Http1Connection, Http1Response, ResponseBody

__all__ = ["EndpointPool", "Http1Pool", "MeshBody", "PoolLimits"]

_INF = float("inf")
_monotonic = time.monotonic
_running_loop = asyncio.get_running_loop
_METHODS = {m: m.encode() for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")}
_EMPTY_TIMEOUTS: dict[str, float | None] = {}


class PoolLimits(NamedTuple):
    """The limits one endpoint's connections obey (0 or None: no limit)."""

    max_connections: int = 1000
    max_idle: int = 100
    max_requests_per_connection: int = 0
    idle_timeout: float = 5.0
    connect_timeout: float | None = None
    max_connection_duration: float = 0.0


def limits_from_settings(settings: Any, defaults: PoolLimits) -> PoolLimits:
    """`defaults` overridden by the fields a DestinationRule `connectionPool` sets (the typed
    `ConnectionPoolSettings`: `max_connections`, `connect_timeout`,
    `max_requests_per_connection`, `idle_timeout` (else `tcp_idle_timeout`),
    `max_connection_duration`; None or 0 means unset)."""
    get = getattr
    max_conn = get(settings, "max_connections", None)
    connect = get(settings, "connect_timeout", None)
    per_conn = get(settings, "max_requests_per_connection", None)
    idle = get(settings, "idle_timeout", None) or get(settings, "tcp_idle_timeout", None)
    duration = get(settings, "max_connection_duration", None)
    return PoolLimits(
        max_connections=int(max_conn) if max_conn else defaults.max_connections,
        max_idle=defaults.max_idle,
        max_requests_per_connection=(
            int(per_conn) if per_conn else defaults.max_requests_per_connection
        ),
        idle_timeout=float(idle) if idle else defaults.idle_timeout,
        connect_timeout=float(connect) if connect else defaults.connect_timeout,
        max_connection_duration=(float(duration) if duration else defaults.max_connection_duration),
    )


class EndpointPool:
    """The connections to one (address, port): idle (LIFO), open count, waiting requests."""

    __slots__ = (
        "_opening",
        "_sweeper",
        "address",
        "conns",
        "idle",
        "label",
        "limits",
        "loop",
        "port",
        "settings",
        "waiters",
    )

    def __init__(
        self, address: str, port: int, limits: PoolLimits, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.address = address
        self.port = port
        self.label = f"{address}:{port}"
        self.limits = limits
        self.settings: Any = None  # the connectionPool object `limits` was computed from
        self.loop = loop
        self.idle: list[Http1Connection] = []
        self.conns: set[Http1Connection] = set()  # open (plus `_opening` being opened)
        self.waiters: deque[asyncio.Future[Http1Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._opening = 0

    @property
    def total(self) -> int:
        """Connections open or being opened."""
        return len(self.conns) + self._opening

    def take(self, now: float) -> Http1Connection | None:
        """The most recently used idle connection that is alive and fresh, or None."""
        idle = self.idle
        limits = self.limits
        timeout = limits.idle_timeout
        while idle:
            conn = idle.pop()
            conn.in_idle = False
            if (
                conn.alive
                and now - conn.idle_since < timeout
                and (
                    not limits.max_connection_duration
                    or now - conn.created < limits.max_connection_duration
                )
            ):
                return conn
            conn.close()
        return None

    async def acquire(
        self, connect_timeout: float | None, pool_timeout: float | None, deadline: float
    ) -> Http1Connection:
        """An idle connection, a new one, or (at the connection limit) the next one released."""
        while True:
            conn = self.take(_monotonic())
            if conn is not None:
                return conn
            if self.total < self.limits.max_connections:
                return await self._connect(connect_timeout, deadline)
            got = await self._wait(pool_timeout, deadline)
            if got is not None and got.alive:
                return got

    async def _wait(self, pool_timeout: float | None, deadline: float) -> Http1Connection | None:
        loop = self.loop
        waiter: asyncio.Future[Http1Connection | None] = loop.create_future()
        self.waiters.append(waiter)
        when = deadline
        if pool_timeout is not None:
            when = min(when, _monotonic() + pool_timeout)
        timer = None if when == _INF else loop.call_at(when, _expire_pool, waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # handed a connection (or a free slot) just as we gave up: pass it on
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._wake()
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _connect(self, timeout: float | None, deadline: float) -> Http1Connection:
        limit = self.limits.connect_timeout
        if timeout is None or (limit is not None and limit < timeout):
            timeout = limit
        if deadline != _INF:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise httpcore.ConnectTimeout("deadline exceeded before connecting")
            if timeout is None or remaining < timeout:
                timeout = remaining
        loop = self.loop
        self._opening += 1
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Http1Connection(self, loop), self.address, self.port
                )
        except TimeoutError as exc:
            self._opening -= 1
            self._wake()
            raise httpcore.ConnectTimeout(f"timed out connecting to {self.label}") from exc
        except OSError as exc:
            self._opening -= 1
            self._wake()
            raise httpcore.ConnectError(f"{self.label}: {exc.strerror or exc}") from exc
        except BaseException:
            self._opening -= 1
            self._wake()
            raise
        self._opening -= 1
        if conn.alive:
            self.conns.add(conn)
        return conn

    def release(self, conn: Http1Connection) -> None:
        """A connection whose exchange ended cleanly: hand it to a waiter, keep it, or close."""
        limits = self.limits
        if (
            limits.max_requests_per_connection
            and conn.requests >= limits.max_requests_per_connection
        ) or (
            limits.max_connection_duration
            and _monotonic() - conn.created >= limits.max_connection_duration
        ):
            conn.close()
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        idle = self.idle
        if len(idle) >= limits.max_idle:
            conn.close()
            return
        conn.idle_since = _monotonic()
        conn.in_idle = True
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(conn.idle_since + limits.idle_timeout, self._sweep)

    def closed(self, conn: Http1Connection) -> None:
        """A connection is gone (closed by either side): forget it, let a waiter connect."""
        self.conns.discard(conn)
        if conn.in_idle:
            conn.in_idle = False
            with contextlib.suppress(ValueError):
                self.idle.remove(conn)
        self._wake()

    def _wake(self) -> None:
        """A connection slot freed up: the first waiter may open a connection."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        idle = self.idle
        timeout = self.limits.idle_timeout
        now = _monotonic()
        while idle and now - idle[0].idle_since >= timeout:
            conn = idle.pop(0)
            conn.in_idle = False
            conn.close()
        if idle:
            self._sweeper = self.loop.call_at(idle[0].idle_since + timeout, self._sweep)

    def close(self) -> None:
        """Close every connection (in-flight exchanges fail) and stop the idle timer."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.conns):
            conn.abort()
        self.idle.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(httpcore.PoolTimeout("the connection pool was closed"))

    def __repr__(self) -> str:
        return (
            f"<EndpointPool {self.label} open={len(self.conns)} idle={len(self.idle)} "
            f"waiting={len(self.waiters)}>"
        )


def _expire_pool(waiter: asyncio.Future[Http1Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpcore.PoolTimeout("timed out waiting for a connection"))


class Http1Pool:
    """HTTP/1.1 keep-alive connections to many endpoints, for one event loop at a time.

    `send(call)` is the mesh's endpoint sender; `request(...)` is the same exchange without a
    `Call`. Limits come from the call's DestinationRule `connectionPool`, else `defaults`.
    """

    def __init__(self, defaults: PoolLimits | None = None) -> None:
        self.defaults = defaults or PoolLimits()
        self._pools: dict[tuple[str, int], EndpointPool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_httpx_limits(cls, limits: httpx.Limits) -> Http1Pool:
        """A pool sized like httpx's `Limits` (per endpoint)."""
        d = PoolLimits()
        return cls(
            PoolLimits(
                max_connections=limits.max_connections or d.max_connections,
                max_idle=(
                    limits.max_keepalive_connections
                    if limits.max_keepalive_connections is not None
                    else d.max_idle
                ),
                idle_timeout=(
                    limits.keepalive_expiry
                    if limits.keepalive_expiry is not None
                    else d.idle_timeout
                ),
            )
        )

    def endpoint(self, address: str, port: int, settings: Any = None) -> EndpointPool:
        """The pool of one endpoint on the running loop (made on first use); `settings` is the
        cluster's connectionPool model, or None for the defaults."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        key = (address, port)
        pool = self._pools.get(key)
        if pool is None:
            limits = (
                self.defaults if settings is None else limits_from_settings(settings, self.defaults)
            )
            pool = self._pools[key] = EndpointPool(address, port, limits, loop)
            pool.settings = settings
        elif settings is not pool.settings:
            pool.settings = settings
            pool.limits = (
                self.defaults if settings is None else limits_from_settings(settings, self.defaults)
            )
        return pool

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or a new event loop: connections of another loop cannot be used here."""
        old = self._pools
        self._pools = {}
        self._loop = loop
        for pool in old.values():
            # RuntimeError: that loop is closed, and its sockets went with it
            with contextlib.suppress(RuntimeError):
                pool.close()

    async def send(self, call: Call) -> Http1Response:
        """The mesh's endpoint sender: one exchange with `call.endpoint` under the attempt's
        deadline; the body stream is wrapped for the mesh."""
        ep = call.endpoint
        request: httpx.Request = call.native
        response = await self.request(
            ep.address,
            ep.port,
            request.method,
            call.send_target,
            call.upstream_headers(_monotonic()),
            request,
            timeouts=request.extensions.get("timeout"),
            deadline=call.attempt_deadline,
            settings=call.cluster.spec.connection_pool,
        )
        response.stream = MeshBody(response.stream, call, ep)
        return response

    async def request(
        self,
        address: str,
        port: int,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | httpx.Request = b"",
        *,
        timeouts: dict[str, float | None] | None = None,
        deadline: float = _INF,
        settings: Any = None,
    ) -> Http1Response:
        """One exchange: `method target` with `headers` (including Host) to address:port.

        `body` is bytes, an async iterable of bytes, or an `httpx.Request` whose body is used
        (buffered bytes in one write; a stream chunk by chunk). Raises httpcore's errors."""
        m = _METHODS.get(method) or _method(method)
        stream: AsyncIterable[bytes] | None = None
        if isinstance(body, httpx.Request):
            rs = body.stream
            if isinstance(rs, httpx.ByteStream):
                try:
                    content = body.content
                except httpx.RequestNotRead:  # a redirect's request: httpx passed the stream
                    content = b"".join(rs)
            else:
                content = b""
                stream = rs  # type: ignore[assignment]
        elif isinstance(body, bytes):
            content = body
        else:
            content = b""
            stream = body
        lines = [b"%b: %b\r\n" % kv for kv in headers]
        length: int | None = None
        if stream is not None:
            length, lines = _framing(headers, lines)
        head = b"%b %b HTTP/1.1\r\n%b\r\n" % (m, target, b"".join(lines))
        expected = len(lines) + 2
        if (
            head.count(b"\n") != expected
            or head.count(b"\r") != expected
            or b"\0" in head
            or b" " in target
        ):
            raise httpcore.LocalProtocolError("invalid character in the request line or headers")
        if timeouts is None:
            timeouts = _EMPTY_TIMEOUTS
        pool = self._pools.get((address, port))
        if pool is None or pool.settings is not settings or _running_loop() is not self._loop:
            pool = self.endpoint(address, port, settings)
        conn = pool.take(_monotonic())
        if conn is None:
            conn = await pool.acquire(timeouts.get("connect"), timeouts.get("pool"), deadline)
        try:
            conn.start(m == b"HEAD", timeouts.get("read"), deadline)
            conn.write(head + content if content else head)
            if stream is not None:
                await conn.write_body(stream, length, timeouts.get("write"), deadline)
            elif conn._writing_paused:
                await conn.drain(timeouts.get("write"), deadline)
            conn.request_sent()
            return await conn.head()
        except BaseException:
            conn.abort()
            raise

    def stats(self) -> dict[str, dict[str, int]]:
        """Per endpoint: connections open and idle, requests waiting for a connection."""
        return {
            p.label: {"open": p.total, "idle": len(p.idle), "waiting": len(p.waiters)}
            for p in self._pools.values()
        }

    async def aclose(self) -> None:
        """Close every connection; the pool may be used again afterwards."""
        pools = list(self._pools.values())
        self._pools = {}
        for pool in pools:
            pool.close()
        if pools:
            await asyncio.sleep(0)  # let the transports run connection_lost

    def __repr__(self) -> str:
        open_ = sum(p.total for p in self._pools.values())
        idle = sum(len(p.idle) for p in self._pools.values())
        return f"<Http1Pool endpoints={len(self._pools)} open={open_} idle={idle}>"


class MeshBody(AsyncMeshResponseStream):
    """`AsyncMeshResponseStream` over a lean-pool body: the same error mapping (a deadline is a
    `pymesh.MeshTimeoutError`, the rest httpx's errors) and the same release on close, as a plain
    async iterator — no async generator, and no `DEADLINE` context variable, since the lean
    pool reads the attempt's deadline itself."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        body: ResponseBody = self._stream
        chunk = body.take()  # the usual case: the body is already here
        if chunk is not None:
            self.received += len(chunk)
            return chunk
        if body.ended:
            raise StopAsyncIteration
        try:
            chunk = await body.__anext__()
        except StopAsyncIteration:
            raise
        except httpcore.TimeoutException as exc:
            call = self._call
            if _monotonic() >= call.attempt_deadline - 0.002:
                raise self._timeout(exc) from exc
            raise map_httpcore(exc, call.native) from exc
        except Exception as exc:
            raise map_httpcore(exc, self._call.native) from exc
        self.received += len(chunk)
        return chunk


def _method(method: str) -> bytes:
    """A method name as bytes, refused unless it is an HTTP token."""
    if not method.isascii() or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in method):
        raise httpcore.LocalProtocolError(f"invalid HTTP method {method!r}")
    return method.encode("ascii")


def _framing(
    headers: list[tuple[bytes, bytes]], lines: list[bytes]
) -> tuple[int | None, list[bytes]]:
    """How a streamed body is framed: the declared Content-Length, or None for chunked (when
    httpx said so, or when nothing did: then the header is added)."""
    for name, value in headers:
        low = name.lower()
        if low == b"content-length":
            try:
                return int(value), lines
            except ValueError:
                raise httpcore.LocalProtocolError(f"bad Content-Length {value!r}") from None
        if low == b"transfer-encoding" and b"chunked" in value.lower():
            return None, lines
    return None, [*lines, b"Transfer-Encoding: chunked\r\n"]
