"""Scripted HTTP/1.1 servers for the lean pool's tests, on 127.0.0.1 port 0.

`RawServer` runs in the test's own event loop (asyncio streams): each request is parsed (request
line, headers, a Content-Length or chunked body) and handed to a script, `handler(req, conn)`,
which writes whatever bytes it likes — a well-formed response, half a body, nothing — and says
whether the connection goes on. The server counts connections accepted, open and at most open
at once, and requests. `UvicornThread` is a real uvicorn in its own thread, for behaviour that
must come from a real server (its keep-alive timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass
class Request:
    """One request as the raw server read it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    number: int  # 1-based, on this connection

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


@dataclass
class Conn:
    """The server side of one connection, as a handler sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    index: int  # 1-based connection number on the server

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def hold(self, seconds: float) -> bool:
        """Say nothing for `seconds`; True (at once) if the client hangs up meanwhile."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return False
        return not data

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), dropping whatever is unsent."""
        sock = self.writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def response(
    status: int = 200,
    body: bytes = b"ok",
    headers: list[tuple[str, str]] | None = None,
    *,
    length: bool = True,
    reason: str = "OK",
) -> bytes:
    """A response's bytes: status line, headers (Content-Length unless `length` is False)."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    for k, v in headers or []:
        lines.append(f"{k}: {v}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


Handler = Callable[[Request, Conn], Awaitable[bool]]


async def ok(req: Request, conn: Conn) -> bool:
    """Answer 200 "ok" and keep the connection."""
    conn.write(response(body=b"ok", headers=[("X-N", str(req.number))]))
    return True


@dataclass
class RawServer:
    """A scripted HTTP/1.1 server in the running loop (use `async with RawServer(handler)`)."""

    handler: Handler = ok
    port: int = 0
    accepted: int = 0
    open: int = 0
    max_open: int = 0
    requests: int = 0
    bodies: list[bytes] = field(default_factory=list)
    read_delay: float = 0.0  # pause between body reads of 64 KiB (a slow reader)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_open(self, n: int, timeout: float = 5.0) -> None:
        """Wait until exactly `n` connections are open on the server side."""
        deadline = time.monotonic() + timeout
        while self.open != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"server has {self.open} connections open, wanted {n}")
            await asyncio.sleep(0.005)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        conn = Conn(reader, writer, self.accepted)
        number = 0
        try:
            while True:
                req = await self._read_request(reader, number + 1)
                if req is None:
                    break
                number += 1
                self.requests += 1
                self.bodies.append(req.body)
                if not await self.handler(req, conn):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader, number: int) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [(k, v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)]
        req = Request(method, target, headers, b"", number)
        length = req.header("content-length")
        if length is not None:
            req.body = await self._read_exactly(reader, int(length))
        elif (req.header("transfer-encoding") or "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await self._read_exactly(reader, size))
                await reader.readexactly(2)
            req.body = b"".join(parts)
        return req

    async def _read_exactly(self, reader: asyncio.StreamReader, n: int) -> bytes:
        if not self.read_delay:
            return await reader.readexactly(n)
        parts = []
        while n:
            chunk = await reader.readexactly(min(n, 65536))
            parts.append(chunk)
            n -= len(chunk)
            await asyncio.sleep(self.read_delay)
        return b"".join(parts)


class UvicornThread:
    """A uvicorn server (any ASGI app, any Config options) on 127.0.0.1:0 in its own thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        cfg = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            loop="asyncio",
            ws="none",
            lifespan="off",
            log_level="warning",
            access_log=False,
            **config,
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, name="http1-uvicorn", daemon=True)
        self.port = 0

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal ASGI app: 200 "hello"."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
