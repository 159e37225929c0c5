"""One HTTP/1.1 client connection: an asyncio Protocol that parses responses with httptools.

How this works: an `Http1Connection` carries one exchange at a time (no pipelining). The pool
calls `start()`, writes the request (`write` / `write_body`), then awaits `head()`. Bytes go
straight from `data_received` into the httptools parser; its callbacks collect the status and
the header list, resolve the head future with an `Http1Response` when the headers are
complete, and append body chunks to that response's `ResponseBody`. When the message is
complete (and the request fully written) the connection hands itself back to its pool at once,
from inside the parser callback, so the next request can use it while the caller still reads
the body that is already buffered.

No polling: a connection learns that the server closed it from `eof_received` /
`connection_lost`, which mark it dead and take it out of the pool's idle list right away. A
request that finds its (reused) connection closed before any byte of the response arrived
raises `ReusedConnectionClosed`, which the stack counts as a reset before the request (the
keep-alive race), so the default retry policy replays it.

One lazy timer per connection, not one per wait: waiting for the head, for the next body chunk
or for a full write buffer to drain records the wait's deadline (the sooner of the attempt's
deadline and httpx's read or write timeout) in `_when`; the connection's single `call_at` timer
is only re-armed when it would fire too late. When it fires it compares the clock with `_when`:
nothing waiting, it stops; too early (a later request moved the deadline on), it re-arms;
else the waiter gets `httpcore.ReadTimeout` / `WriteTimeout` and the connection is aborted (a
timed-out or cancelled exchange never returns its connection to the pool). So a request costs
no timer-heap operation in the steady state; a busy connection re-arms about once per timeout.

Back-pressure both ways: a body consumer that falls behind pauses the socket reads
(`pause_reading` above `HIGH_WATER` buffered bytes), and a large request body waits for
`resume_writing` before the next chunk.

Errors are httpcore's classes, so the stack classifies them exactly as it does httpcore's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any

import httpcore
import httptools

if TYPE_CHECKING:
    from pymesh.http1.pool import EndpointPool

__all__ = [
    "HIGH_WATER",
    "Http1Connection",
    "Http1Response",
    "ResponseBody",
    "ReusedConnectionClosed",
]

_INF = float("inf")
_monotonic = time.monotonic
# Buffered, unread response body above which the socket stops being read (per connection).
HIGH_WATER = 256 * 1024

_HTTP11 = b"HTTP/1.1"
_EXTENSIONS: dict[tuple[bytes, bytes], dict[str, Any]] = {}


class ReusedConnectionClosed(httpcore.WriteError):
    """The server closed a reused keep-alive connection before any byte of the response came
    back: the request was (almost certainly) never processed. The stack counts a
    `WriteError` as `reset-before-request`, which the default retry policy retries."""


def _extensions(version: bytes, reason: bytes) -> dict[str, Any]:
    """The (shared, read-only) response extensions httpx reads: version and reason phrase."""
    key = (version, reason)
    ext = _EXTENSIONS.get(key)
    if ext is None:
        ext = {"http_version": version, "reason_phrase": reason}
        if len(_EXTENSIONS) < 256:
            _EXTENSIONS[key] = ext
    return ext


class Http1Response:
    """A response as the engine sees it: `status`, `headers` (a list of (bytes, bytes)),
    `stream` (async-iterable bytes; the mesh wraps it), `extensions`, `aread()`, `aclose()`."""

    __slots__ = ("extensions", "headers", "status", "stream")

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], stream: Any, ext: dict[str, Any]
    ) -> None:
        self.status = status
        self.headers = headers
        self.stream = stream
        self.extensions = ext

    async def aread(self) -> bytes:
        """Read the whole body (through `stream`, whatever wraps it)."""
        return b"".join([chunk async for chunk in self.stream])

    async def aclose(self) -> None:
        """Close the body; an unfinished body costs its connection."""
        await self.stream.aclose()

    def __repr__(self) -> str:
        return f"<Http1Response [{self.status}]>"


class ResponseBody:
    """The body of one response, fed by its connection. Iterate it once; `aclose()` it.

    Chunks that arrived are returned joined; when none are buffered the reader waits (with a
    timer at the sooner of the deadline and the read timeout). Closing a body before its end
    aborts the connection."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_deadline",
        "_done",
        "_error",
        "_read_timeout",
        "_size",
        "_waiter",
    )

    def __init__(self, conn: Http1Connection, read_timeout: float | None, deadline: float) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._conn: Http1Connection | None = conn
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout = read_timeout
        self._deadline = deadline

    # -- fed by the connection ---------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self._size > HIGH_WATER:
            conn = self._conn
            if conn is not None:
                conn.pause_reading()

    def _finish(self, error: BaseException | None = None) -> None:
        self._done = True
        self._error = error
        self._conn = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- read by the caller ------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    def take(self) -> bytes | None:
        """The bytes buffered so far (joined), or None when none are; never waits."""
        chunks = self._chunks
        if not chunks:
            return None
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        conn = self._conn
        if conn is not None and conn.reading_paused:
            conn.resume_reading()
        return data

    @property
    def ended(self) -> bool:
        """Whether the body ended cleanly and every byte has been taken."""
        return self._done and self._error is None and not self._chunks

    async def __anext__(self) -> bytes:
        while True:
            data = self.take()
            if data is not None:
                return data
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            await self._wait()

    async def _wait(self) -> None:
        conn = self._conn
        assert conn is not None
        waiter: asyncio.Future[None] = conn.loop.create_future()
        self._waiter = waiter
        when = self._deadline
        rt = self._read_timeout
        if rt is not None:
            limit = _monotonic() + rt
            if limit < when:
                when = limit
        conn.watch(waiter, when, _BODY_TIMEOUT)
        try:
            await waiter
        except BaseException:
            self._waiter = None
            self._abort()
            raise
        finally:
            conn.unwatch()

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abort()
        if not self._done:
            self._finish(httpcore.ReadError("response body closed before its end"))

    async def aclose(self) -> None:
        """Stop reading: the connection is kept when the body was complete, else aborted."""
        if not self._done or self._conn is not None:
            self._abort()

    def __repr__(self) -> str:
        state = "done" if self._done else "streaming"
        return f"<ResponseBody {state}, {self._size} bytes buffered>"


class Http1Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to one endpoint, owned by an `EndpointPool`."""

    __slots__ = (
        "_body",
        "_deadline",
        "_drain",
        "_got",
        "_got_armed",
        "_head_only",
        "_headers",
        "_informational",
        "_keep",
        "_read_timeout",
        "_reason",
        "_req_done",
        "_resp_done",
        "_resp_headers",
        "_timeout_kind",
        "_timer",
        "_timer_at",
        "_waiter",
        "_watched",
        "_when",
        "_writing_paused",
        "alive",
        "created",
        "idle_since",
        "in_idle",
        "loop",
        "parser",
        "pool",
        "reading_paused",
        "requests",
        "transport",
    )

    def __init__(self, pool: EndpointPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.alive = True
        self.in_idle = False
        self.requests = 0  # exchanges started on this connection
        self.idle_since = 0.0
        self.created = _monotonic()
        self.reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[Http1Response] | None = None
        self._body: ResponseBody | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._resp_headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._got = 0  # response bytes received in the current exchange
        # the lazy timer: what is waited for, until when, and when the timer fires
        self._watched: asyncio.Future[Any] | None = None
        self._when = _INF
        self._timeout_kind = 0
        self._got_armed = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _INF
        self._head_only = False
        self._informational = False
        self._req_done = True
        self._resp_done = True
        self._keep = False
        self._read_timeout: float | None = None
        self._deadline = _INF

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Feed the parser (bytes outside an exchange are a protocol error: close)."""
        if self._resp_done:
            self.abort()
            return
        self._got += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._lost(httpcore.RemoteProtocolError("HTTP upgrades are not supported"))
            self.abort()
        except httptools.HttpParserError as exc:
            self._lost(httpcore.RemoteProtocolError(f"invalid HTTP response: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        """The server closed its side: the connection is done (asyncio then closes it)."""
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is gone: fail or finish whatever was in progress."""
        self._lost(exc)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        """The transport's write buffer is full: request bodies wait."""
        self._writing_paused = True

    def resume_writing(self) -> None:
        """The write buffer drained: let a waiting request body go on."""
        self._writing_paused = False
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        """Collect the reason phrase (may come in pieces)."""
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one header."""
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Resolve the head future with the response (skipping 1xx interim responses)."""
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            self._informational = True
            self._headers = []
            self._reason = b""
            return
        waiter = self._waiter
        if waiter is None:
            raise httpcore.RemoteProtocolError("response without a request")
        self._waiter = None
        version = _HTTP11 if parser.get_http_version() == "1.1" else b"HTTP/1.0"
        body = ResponseBody(self, self._read_timeout, self._deadline)
        response = Http1Response(status, self._headers, body, _extensions(version, self._reason))
        self._headers = []
        self._reason = b""
        if not waiter.done():
            waiter.set_result(response)
        if self._head_only:
            # httptools cannot be told that a HEAD response has no body: end it here and use
            # a fresh parser for the next exchange.
            self._head_only = False
            self.parser = httptools.HttpResponseParser(self)
            self._message_done(body, parser.should_keep_alive())
        else:
            self._body = body
            self._resp_headers = response.headers

    def on_body(self, data: bytes) -> None:
        """Hand a body chunk to the response's reader."""
        body = self._body
        if body is not None:
            body._feed(data)

    def on_message_complete(self) -> None:
        """The response ended: finish the body and give the connection back when it may be
        reused (keep-alive, request fully sent)."""
        if self._informational:
            self._informational = False
            return
        body = self._body
        if body is None:  # a HEAD response, already ended
            return
        self._body = None
        self._message_done(body, self.parser.should_keep_alive())

    # -- used by the pool --------------------------------------------------------------------
    def start(self, head_only: bool, read_timeout: float | None, deadline: float) -> None:
        """Begin an exchange: the next response belongs to it."""
        self.requests += 1
        self._got = 0
        self._req_done = False
        self._resp_done = False
        self._head_only = head_only
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._waiter = self.loop.create_future()

    def request_sent(self) -> None:
        """The whole request is written; if the response already ended, release now."""
        self._req_done = True
        if self._resp_done:
            self._release()

    async def drain(self, timeout: float | None, deadline: float) -> None:
        """Wait until the transport's write buffer drains (large request bodies)."""
        if not self._writing_paused:
            return
        if not self.alive:
            raise self._write_error("the connection closed while the request was being sent")
        drain: asyncio.Future[None] = self.loop.create_future()
        self._drain = drain
        when = deadline
        if timeout is not None:
            limit = _monotonic() + timeout
            if limit < when:
                when = limit
        self.watch(drain, when, _WRITE_TIMEOUT)
        try:
            await drain
        finally:
            self.unwatch()
        if not self.alive and not self._resp_done:
            raise self._write_error("the connection closed while the request was being sent")

    def write(self, data: bytes) -> None:
        """Write bytes of the request (raises when the connection is already closed)."""
        transport = self.transport
        if not self.alive or transport is None or transport.is_closing():
            raise self._write_error("the connection closed before the request was sent")
        transport.write(data)

    async def write_body(
        self,
        stream: AsyncIterable[bytes],
        length: int | None,
        timeout: float | None,
        deadline: float,
    ) -> None:
        """Write a streamed request body: `length` bytes as they come, or chunked when `length`
        is None; pausing while the transport's buffer is full. Stops early (and gives up the
        connection) when the response already ended."""
        write = self.write
        sent = 0
        early = False
        async for chunk in stream:
            if self._resp_done:
                early = True
                break
            if not chunk:
                continue
            sent += len(chunk)
            if length is None:
                write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            elif sent > length:
                raise httpcore.LocalProtocolError("Too much data for declared Content-Length")
            else:
                write(chunk)
            if self._writing_paused:
                await self.drain(timeout, deadline)
        if early or self._resp_done:
            self._keep = False  # the rest of the body is never sent: no reuse
        elif length is None:
            write(b"0\r\n\r\n")
        elif sent < length:
            raise httpcore.LocalProtocolError("Too little data for declared Content-Length")
        if self._writing_paused:
            await self.drain(timeout, deadline)

    async def head(self) -> Http1Response:
        """Wait for the response head (until the sooner of deadline and read timeout)."""
        waiter = self._waiter
        assert waiter is not None
        if waiter.done():
            return waiter.result()
        when = self._deadline
        rt = self._read_timeout
        if rt is not None:
            limit = _monotonic() + rt
            if limit < when:
                when = limit
        self.watch(waiter, when, _HEAD_TIMEOUT)
        try:
            return await waiter
        finally:
            self.unwatch()

    # -- the lazy timer ----------------------------------------------------------------------
    def watch(self, waiter: asyncio.Future[Any], when: float, kind: int) -> None:
        """Fail `waiter` with a timeout at `when` (monotonic), unless `unwatch` comes first."""
        self._watched = waiter
        self._when = when
        self._timeout_kind = kind
        self._got_armed = self._got
        if when < self._timer_at:
            timer = self._timer
            if timer is not None:
                timer.cancel()
            self._timer_at = when
            self._timer = self.loop.call_at(when, self._on_timer)

    def unwatch(self) -> None:
        """The wait ended: the timer, if any, stays armed and stops when it next fires."""
        self._watched = None
        self._when = _INF

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = _INF
        waiter = self._watched
        if waiter is None or waiter.done():
            return
        when = self._when
        now = _monotonic()
        kind = self._timeout_kind
        if (
            now >= when
            and kind == _HEAD_TIMEOUT
            and self._got != self._got_armed
            and self._read_timeout is not None
            and now + self._read_timeout < self._deadline
        ):
            # part of the head arrived since: the read timeout counts from the last bytes
            # (about as httpcore's per-read timeout does)
            when = self._when = now + self._read_timeout
            self._got_armed = self._got
        if now < when:  # a later wait moved the deadline on (or the loop's clock runs ahead)
            self._timer_at = when
            self._timer = self.loop.call_at(self.loop.time() + (when - now), self._on_timer)
            return
        waiter.set_exception(_timeout_error(kind))

    def abort(self) -> None:
        """Drop the connection now (RST): used for anything that went wrong mid-exchange."""
        self._close(abort=True)

    def close(self) -> None:
        """Close the connection gracefully (idle eviction, pool close)."""
        self._close(abort=False)

    def pause_reading(self) -> None:
        """Stop reading from the socket (the body consumer fell behind)."""
        if not self.reading_paused and self.alive and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again."""
        if self.reading_paused:
            self.reading_paused = False
            if self.alive and self.transport is not None:
                self.transport.resume_reading()

    # -- internals ---------------------------------------------------------------------------
    def _message_done(self, body: ResponseBody, keep: bool) -> None:
        self._resp_done = True
        self._keep = keep
        body._finish()
        if self._req_done:
            self._release()

    def _release(self) -> None:
        if self.reading_paused:
            self.resume_reading()
        if self._keep and self.alive:
            self.pool.release(self)
        else:
            self.close()

    def _write_error(self, message: str) -> Exception:
        if self.requests > 1 and self._got == 0:
            return ReusedConnectionClosed(message + " (a reused keep-alive connection)")
        return httpcore.WriteError(message)

    def _close(self, abort: bool) -> None:
        was_alive = self.alive
        self.alive = False
        timer = self._timer
        if timer is not None:
            self._timer = None
            self._timer_at = _INF
            timer.cancel()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()
        if was_alive:
            self.pool.closed(self)
        if not self._resp_done:
            self._lost(httpcore.ReadError("connection closed"))

    def _lost(self, exc: BaseException | None) -> None:
        """Fail (or, for a close-delimited body, end) the exchange in progress; once."""
        timer = self._timer
        if timer is not None:
            self._timer = None
            self._timer_at = _INF
            timer.cancel()
        if self.alive:
            self.alive = False
            self.pool.closed(self)
        if self._resp_done:
            return
        self._resp_done = True
        self._keep = False
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(self._head_error(exc))
                waiter.exception()  # retrieved: nobody awaits it when the write failed first
            return
        body = self._body
        if body is not None:
            self._body = None
            if exc is None and self._close_delimited():
                body._finish()
            elif isinstance(exc, httpcore.ReadError | httpcore.RemoteProtocolError):
                body._finish(exc)
            elif exc is not None:
                body._finish(httpcore.ReadError(str(exc) or type(exc).__name__))
            else:
                body._finish(
                    httpcore.RemoteProtocolError(
                        "peer closed connection without sending complete message body"
                    )
                )

    def _head_error(self, exc: BaseException | None) -> Exception:
        if isinstance(exc, httpcore.ReadError | httpcore.RemoteProtocolError):
            return exc
        if self._got == 0:
            if self.requests > 1:
                return ReusedConnectionClosed(
                    "the server closed a reused keep-alive connection before responding"
                )
            if exc is None:
                return httpcore.RemoteProtocolError(
                    "Server disconnected without sending a response."
                )
            return httpcore.ReadError(str(exc) or type(exc).__name__)
        if exc is None:
            return httpcore.RemoteProtocolError(
                "peer closed connection without sending a complete response head"
            )
        return httpcore.ReadError(str(exc) or type(exc).__name__)

    def _close_delimited(self) -> bool:
        """Whether the current response's body ends when the connection does (no
        Content-Length, not chunked): asked only when the connection ends mid-body."""
        for name, value in self._resp_headers:
            low = name.lower()
            if low == b"content-length" or (
                low == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return True

    def __repr__(self) -> str:
        state = "alive" if self.alive else "closed"
        busy = "idle" if self._resp_done else "busy"
        return f"<Http1Connection {self.pool.label} {state} {busy} requests={self.requests}>"


_HEAD_TIMEOUT, _BODY_TIMEOUT, _WRITE_TIMEOUT = 0, 1, 2


def _timeout_error(kind: int) -> Exception:
    if kind == _HEAD_TIMEOUT:
        return httpcore.ReadTimeout("timed out waiting for the response")
    if kind == _BODY_TIMEOUT:
        return httpcore.ReadTimeout("timed out while reading the response body")
    return httpcore.WriteTimeout("timed out while sending the request body")
