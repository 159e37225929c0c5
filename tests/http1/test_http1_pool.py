"""The lean HTTP/1.1 pool under adversity, on real servers on 127.0.0.1: servers that close idle
keep-alive connections (uvicorn's keep-alive timeout, a raw server that closes after N
requests), resets mid-response, slow servers, every body framing, HEAD / 1xx / 204 / 304,
large bodies both ways (back-pressure), limits from `connectionPool`, and 10,000 requests at
concurrency 64 with no leaked connection. Both straight on `Http1Pool` and through a meshed
`httpx.AsyncClient` (where the stack classifies the pool's errors)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import httpcore
import httpx
import pytest

import pymesh
from pymesh.http1 import Http1Pool, PoolLimits, ReusedConnectionClosed
from pymesh.http1.protocol import HIGH_WATER, Http1Response
from tests.e2e.meshkit import (
    URL,
    decision,
    endpoint,
    in_flight,
    make_mesh,
    route_to,
    service_entry,
    virtual_service,
)
from tests.http1.rawserver import Conn, RawServer, Request, UvicornThread, hello_app, response

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(60)]

HOST = [(b"Host", b"test")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def fetch(
    pool: Http1Pool, port: int, method: str = "GET", body: Any = b"", **kw: Any
) -> tuple[Http1Response, bytes]:
    """One exchange straight on the pool; the whole body read and the body closed."""
    headers = kw.pop("headers", HOST)
    if isinstance(body, bytes) and body:
        headers = [*headers, (b"Content-Length", str(len(body)).encode())]
    r = await pool.request("127.0.0.1", port, method, b"/", headers, body, **kw)
    try:
        data = b"".join([chunk async for chunk in r.stream])
    finally:
        await r.stream.aclose()
    return r, data


def open_connections(pool: Http1Pool) -> int:
    return sum(s["open"] for s in pool.stats().values())


def mesh_for(port: int, **rule: Any) -> pymesh.Mesh:
    resources = [service_entry([endpoint(port)])]
    if rule:
        resources.append(virtual_service([{"route": [route_to()], **rule}]))
    mesh: pymesh.Mesh = make_mesh(*resources)
    return mesh


# --------------------------------------------------------------------------------------------
# keep-alive, and servers that close connections


async def test_keep_alive_reuses_one_connection() -> None:
    async with RawServer() as server:
        pool = Http1Pool()
        for i in range(10):
            r, data = await fetch(pool, server.port)
            assert (r.status, data) == (200, b"ok")
            assert dict(r.headers)[b"X-N"] == str(i + 1).encode()
        assert server.accepted == 1
        assert pool.stats()[f"127.0.0.1:{server.port}"] == {"open": 1, "idle": 1, "waiting": 0}
        await pool.aclose()
        await server.wait_open(0)


async def test_uvicorn_closing_idle_connections_is_noticed_without_polling() -> None:
    with UvicornThread(hello_app, timeout_keep_alive=0.2) as server:
        pool = Http1Pool()
        r, data = await fetch(pool, server.port)
        assert data == b"hello"
        assert open_connections(pool) == 1
        # uvicorn closes the idle connection after 0.2 s: the pool hears of it (EOF) by itself
        deadline = time.monotonic() + 3
        while open_connections(pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert open_connections(pool) == 0
        for _ in range(3):  # and the next requests go out on a new connection
            r, data = await fetch(pool, server.port)
            assert (r.status, data) == (200, b"hello")
        await pool.aclose()


async def test_meshed_client_over_uvicorn_keep_alive_timeout() -> None:
    with UvicornThread(hello_app, timeout_keep_alive=0.1) as server:
        mesh = mesh_for(server.port)
        async with mesh.async_http_client() as client:
            for i in range(6):
                r = await client.get(URL)
                assert (r.status_code, r.text) == (200, "hello")
                assert len(decision(r).attempts) == 1
                if i % 2:
                    await asyncio.sleep(0.25)  # longer than uvicorn's keep-alive
            assert in_flight(mesh) == 0


async def test_server_closing_after_n_requests() -> None:
    async def close_after_3(req: Request, conn: Conn) -> bool:
        conn.write(response(body=b"ok"))
        return req.number < 3  # no `Connection: close`: the client learns from the EOF

    async with RawServer(close_after_3) as server:
        pool = Http1Pool()
        for _ in range(10):
            _, data = await fetch(pool, server.port)
            assert data == b"ok"
            await asyncio.sleep(0.01)  # the FIN arrives while the connection is idle
        assert server.accepted == 4  # 3 + 3 + 3 + 1
        await pool.aclose()


async def test_keep_alive_race_is_a_reset_before_request() -> None:
    """The server closes a reused connection just as the request arrives (it read it, and
    answers nothing): `ReusedConnectionClosed`, an httpcore.WriteError, which the stack
    counts as reset-before-request — retried by the default policy."""

    async def race(req: Request, conn: Conn) -> bool:
        if req.number == 1:
            conn.write(response(body=b"ok"))
            return True
        return False  # the second request on a connection: closed without an answer

    async with RawServer(race) as server:
        pool = Http1Pool()
        await fetch(pool, server.port)
        with pytest.raises(ReusedConnectionClosed) as ei:
            await fetch(pool, server.port)
        assert isinstance(ei.value, httpcore.WriteError)
        await pool.aclose()

        mesh = mesh_for(server.port)
        async with mesh.async_http_client() as client:
            assert (await client.get(URL)).status_code == 200
            r = await client.get(URL)  # reused connection closed, retried on a new one
            assert r.status_code == 200
            d = decision(r)
            assert [a.failure for a in d.attempts] == ["reset-before-request", None]
            assert in_flight(mesh) == 0


async def test_fresh_connection_closed_without_response_is_a_reset() -> None:
    async def hang_up(req: Request, conn: Conn) -> bool:
        return False

    async with RawServer(hang_up) as server:
        pool = Http1Pool()
        with pytest.raises(httpcore.RemoteProtocolError):
            await fetch(pool, server.port)
        mesh = mesh_for(server.port)
        async with mesh.async_http_client() as client:
            with pytest.raises(pymesh.UpstreamConnectError) as ei:
                await client.get(URL)
            assert [a.failure for a in ei.value.decision.attempts] == ["reset"]  # not retried
        assert open_connections(pool) == 0


# --------------------------------------------------------------------------------------------
# resets and slow servers


async def test_reset_mid_response() -> None:
    async def half_then_rst(req: Request, conn: Conn) -> bool:
        if conn.index == 1:
            conn.write(response(body=b"x" * 1000)[:-900])  # headers + 100 of 1000 bytes
            await conn.drain()
            await asyncio.sleep(0.05)
            conn.reset()
            return False
        conn.write(response(body=b"fine"))
        return True

    async with RawServer(half_then_rst) as server:
        pool = Http1Pool()
        r = await pool.request("127.0.0.1", server.port, "GET", b"/", HOST)
        assert r.status == 200
        with pytest.raises((httpcore.ReadError, httpcore.RemoteProtocolError)):
            async for _ in r.stream:
                pass
        await r.stream.aclose()
        assert open_connections(pool) == 0
        _, data = await fetch(pool, server.port)
        assert data == b"fine"
        await pool.aclose()


async def test_meshed_reset_mid_response_and_close_mid_body() -> None:
    async def broken(req: Request, conn: Conn) -> bool:
        if conn.index == 1:  # RST after part of the body
            conn.write(response(body=b"x" * 1000)[:-900])
            await conn.drain()
            await asyncio.sleep(0.05)
            conn.reset()
            return False
        if conn.index == 2:  # FIN after part of the body
            conn.write(response(body=b"y" * 1000)[:-500])
            return False
        conn.write(response(body=b"fine"))
        return True

    async with RawServer(broken) as server:
        mesh = mesh_for(server.port)
        async with mesh.async_http_client() as client:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await client.get(URL)
            with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
                await client.get(URL)
            r = await client.get(URL)
            assert r.text == "fine"
            assert in_flight(mesh) == 0


async def test_slow_server_deadline_discards_the_connection() -> None:
    async def slow_first(req: Request, conn: Conn) -> bool:
        if (conn.index == 1 or req.header("x-slow")) and await conn.hold(2):
            return False
        conn.write(response(body=b"ok"))
        return True

    async with RawServer(slow_first) as server:
        pool = Http1Pool()
        start = time.monotonic()
        with pytest.raises(httpcore.ReadTimeout):
            await fetch(pool, server.port, deadline=time.monotonic() + 0.2)
        assert 0.2 <= time.monotonic() - start < 0.5
        assert open_connections(pool) == 0  # a timed-out exchange never goes back to the pool
        await server.wait_open(0)  # ... and the server saw it closed
        _, data = await fetch(pool, server.port, deadline=time.monotonic() + 1)
        assert data == b"ok"
        # httpx's own read timeout (request.extensions["timeout"]) is enforced as well
        slow = [*HOST, (b"X-Slow", b"1")]
        with pytest.raises(httpcore.ReadTimeout):
            await fetch(pool, server.port, headers=slow, timeouts={"read": 0.1})
        assert open_connections(pool) == 0
        await pool.aclose()


async def test_meshed_slow_server_route_timeout_then_fine() -> None:
    async def slow_first(req: Request, conn: Conn) -> bool:
        if conn.index == 1 and await conn.hold(2):
            return False
        conn.write(response(body=b"ok"))
        return True

    async with RawServer(slow_first) as server:
        mesh = mesh_for(server.port, timeout="0.3s")
        async with mesh.async_http_client() as client:
            start = time.monotonic()
            with pytest.raises(pymesh.MeshTimeoutError):
                await client.get(URL)
            assert 0.3 <= time.monotonic() - start < 0.33 + 0.1
            r = await client.get(URL)
            assert r.text == "ok"
            assert in_flight(mesh) == 0
        await server.wait_open(0)


async def test_cancelled_request_closes_its_connection() -> None:
    async def slow(req: Request, conn: Conn) -> bool:
        await conn.hold(5)
        return False

    async with RawServer(slow) as server:
        pool = Http1Pool()
        task = asyncio.ensure_future(fetch(pool, server.port))
        await server.wait_open(1)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert open_connections(pool) == 0
        await server.wait_open(0)


async def test_connect_failures() -> None:
    async with RawServer() as server:
        port = server.port
    pool = Http1Pool()  # nothing listens on `port` any more
    with pytest.raises(httpcore.ConnectError):
        await fetch(pool, port)
    with pytest.raises(httpcore.ConnectTimeout):
        await fetch(pool, port, deadline=time.monotonic() - 1)
    assert open_connections(pool) == 0


# --------------------------------------------------------------------------------------------
# bodies


async def test_body_framings() -> None:
    async def framed(req: Request, conn: Conn) -> bool:
        if req.target == "/chunked":
            conn.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"hello", b" ", b"chunked", b" world"):
                conn.write(b"%x\r\n%b\r\n" % (len(part), part))
                await conn.drain()
                await asyncio.sleep(0.01)
            conn.write(b"0\r\nX-Trailer: t\r\n\r\n")
            return True
        if req.target == "/close":
            conn.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ")
            await conn.drain()
            await asyncio.sleep(0.02)
            conn.write(b"the end")
            return False
        if req.target == "/http10":
            conn.write(b"HTTP/1.0 200 OK\r\n\r\nold")
            return False
        conn.write(response(body=b"length-delimited"))
        return True

    async with RawServer(framed) as server:
        pool = Http1Pool()

        async def get(target: bytes) -> tuple[Http1Response, bytes]:
            r = await pool.request("127.0.0.1", server.port, "GET", target, HOST)
            data = b"".join([c async for c in r.stream])
            await r.stream.aclose()
            return r, data

        assert (await get(b"/cl"))[1] == b"length-delimited"
        r, data = await get(b"/chunked")
        assert data == b"hello chunked world"
        assert (await get(b"/cl"))[1] == b"length-delimited"
        assert server.accepted == 1  # all three on one connection
        r, data = await get(b"/close")
        assert data == b"until the end"
        r, data = await get(b"/http10")
        assert (data, r.extensions["http_version"]) == (b"old", b"HTTP/1.0")
        assert (await get(b"/cl"))[1] == b"length-delimited"
        assert server.accepted == 3  # close-delimited bodies cost their connection
        await pool.aclose()


async def test_head_204_304_and_interim_responses() -> None:
    async def no_bodies(req: Request, conn: Conn) -> bool:
        if req.method == "HEAD":  # the length of the body a GET would get; no body
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        elif req.target == "/204":
            conn.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif req.target == "/304":
            conn.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n")
        elif req.target == "/100":
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await conn.drain()
            await asyncio.sleep(0.01)
            conn.write(response(201, b"after interim", reason="Created"))
        else:
            conn.write(response(body=b"body"))
        return True

    async with RawServer(no_bodies) as server:
        pool = Http1Pool()
        for method, target, status, body in [
            ("HEAD", b"/", 200, b""),
            ("GET", b"/", 200, b"body"),
            ("GET", b"/204", 204, b""),
            ("HEAD", b"/", 200, b""),
            ("GET", b"/304", 304, b""),
            ("GET", b"/100", 201, b"after interim"),
            ("GET", b"/", 200, b"body"),
        ]:
            r = await pool.request("127.0.0.1", server.port, method, target, HOST)
            data = b"".join([c async for c in r.stream])
            await r.stream.aclose()
            assert (r.status, data) == (status, body), (method, target)
        assert r.extensions["reason_phrase"] == b"OK"
        assert server.accepted == 1  # no body rule left a connection out of step
        await pool.aclose()

        mesh = mesh_for(server.port)
        async with mesh.async_http_client() as client:
            r = await client.head(URL)
            assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "1000")
            assert (await client.get(URL)).text == "body"
            r = await client.get(URL.rstrip("/") + "/100")
            assert (r.status_code, r.reason_phrase, r.text) == (201, "Created", "after interim")


async def test_large_request_bodies_wait_for_a_slow_reader() -> None:
    async def length(req: Request, conn: Conn) -> bool:
        conn.write(response(body=str(len(req.body)).encode()))
        return True

    big = bytes(range(256)) * (8 * 4096)  # 8 MiB
    async with RawServer(length) as server:
        server.read_delay = 0.0005
        pool = Http1Pool()
        _, data = await fetch(pool, server.port, "POST", big, timeouts={"write": 5.0})
        assert data == str(len(big)).encode()
        assert server.bodies[-1] == big

        async def parts() -> Any:
            for i in range(0, len(big), 1 << 20):
                yield big[i : i + (1 << 20)]

        # streamed without a length: chunked
        chunked = [*HOST, (b"Transfer-Encoding", b"chunked")]
        _, data = await fetch(pool, server.port, "POST", parts(), headers=chunked)
        assert data == str(len(big)).encode() and server.bodies[-1] == big
        # streamed with a length: as is
        sized = [*HOST, (b"Content-Length", str(len(big)).encode())]
        _, data = await fetch(pool, server.port, "POST", parts(), headers=sized)
        assert data == str(len(big)).encode() and server.bodies[-1] == big
        assert server.accepted == 1
        await pool.aclose()

        mesh = mesh_for(server.port)
        async with mesh.async_http_client() as client:
            r = await client.post(URL, content=big)
            assert r.text == str(len(big))
            r = await client.post(URL, content=parts())
            assert r.text == str(len(big))
            assert server.bodies[-1] == big


async def test_large_response_body_pauses_reading_for_a_slow_consumer() -> None:
    size = 32 * 1024 * 1024

    async def flood(req: Request, conn: Conn) -> bool:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"z" * (1 << 20)
        for _ in range(size // len(block)):
            conn.write(block)
            await conn.drain()
        return True

    async with RawServer(flood) as server:
        pool = Http1Pool()
        r = await pool.request("127.0.0.1", server.port, "GET", b"/", HOST)
        (conn,) = next(iter(pool._pools.values())).conns
        received = 0
        paused_seen = False
        async for chunk in r.stream:
            received += len(chunk)
            assert len(chunk) <= HIGH_WATER + 512 * 1024  # never more than ~the high water
            if received < size // 2:
                await asyncio.sleep(0.002)  # a slow consumer, for a while
                paused_seen = paused_seen or conn.reading_paused
        await r.stream.aclose()
        assert received == size
        assert paused_seen
        assert not conn.reading_paused
        _, data = await fetch(pool, server.port)  # the same connection, still in step
        assert len(data) == size and server.accepted == 1
        await pool.aclose()


async def test_header_injection_is_refused() -> None:
    pool = Http1Pool()
    with pytest.raises(httpcore.LocalProtocolError):
        await pool.request("127.0.0.1", 9, "GET", b"/", [(b"X-A", b"1\r\nX-Injected: 1")])
    assert pool.stats() == {}


# --------------------------------------------------------------------------------------------
# limits, leaks, loops


async def test_connection_pool_settings_limit_the_pool() -> None:
    async def slowish(req: Request, conn: Conn) -> bool:
        await asyncio.sleep(0.01)
        conn.write(response(body=b"ok"))
        return True

    settings = SimpleNamespace(
        max_connections=2,
        max_requests_per_connection=3,
        idle_timeout=0.2,
        connect_timeout=1.0,
        max_connection_duration=None,
    )
    async with RawServer(slowish) as server:
        pool = Http1Pool()

        async def one() -> bytes:
            return (await fetch(pool, server.port, settings=settings, timeouts={"pool": 5.0}))[1]

        assert await asyncio.gather(*(one() for _ in range(12))) == [b"ok"] * 12
        assert server.max_open <= 2  # maxConnections, per endpoint
        assert server.accepted >= 4  # 12 requests, at most 3 per connection
        await asyncio.sleep(0.45)  # idleTimeout 0.2 s: evicted by the pool's timer
        assert open_connections(pool) == 0
        await server.wait_open(0)
        # over the limit, a request waits for a connection no longer than the pool timeout
        settings = SimpleNamespace(**{**vars(settings), "max_connections": 1})  # new snapshot
        blocker = asyncio.ensure_future(one())
        await asyncio.sleep(0.001)
        with pytest.raises(httpcore.PoolTimeout):
            await fetch(pool, server.port, settings=settings, timeouts={"pool": 0.001})
        assert await blocker == b"ok"
        await pool.aclose()


async def test_ten_thousand_requests_at_concurrency_64_leak_nothing() -> None:
    async with RawServer() as server:
        mesh = mesh_for(server.port)
        client = mesh.async_http_client(limits=httpx.Limits(max_keepalive_connections=64))
        pool = client._transport._lean  # type: ignore[attr-defined]
        left = 10_000

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await client.get(URL)
                assert r.status_code == 200

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(64)))
        elapsed = time.monotonic() - start
        assert server.requests == 10_000
        stats = pool.stats()[f"127.0.0.1:{server.port}"]
        assert stats["open"] == stats["idle"] == server.open <= 64
        assert stats["waiting"] == 0
        assert in_flight(mesh) == 0
        await client.aclose()
        assert pool.stats() == {}
        await server.wait_open(0)
        assert elapsed < 30, elapsed


def test_pool_follows_the_running_loop() -> None:
    """Used from one `asyncio.run` after another (and under uvloop): connections of a closed
    loop are dropped, never reused."""
    import uvloop

    pool = Http1Pool(PoolLimits(max_idle=4))

    async def once() -> bytes:
        async with RawServer() as server:
            _, data = await fetch(pool, server.port)
            _, data = await fetch(pool, server.port)
            assert server.accepted == 1
            return data

    assert asyncio.run(once()) == b"ok"
    assert asyncio.run(once()) == b"ok"
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(once()) == b"ok"
        runner.run(pool.aclose())


async def test_request_bodies_httpx_did_not_read_and_wrong_lengths() -> None:
    async def echo(req: Request, conn: Conn) -> bool:
        conn.write(response(body=req.body))
        return True

    async with RawServer(echo) as server:
        pool = Http1Pool()
        # httpx builds a redirect's request with `stream=ByteStream(...)`, never read
        unread = httpx.Request(
            "POST", "http://test/", stream=httpx.ByteStream(b"kept"), headers={"Host": "test"}
        )
        headers = [*unread.headers.raw, (b"Content-Length", b"4")]
        r = await pool.request("127.0.0.1", server.port, "POST", b"/", headers, unread)
        assert b"".join([c async for c in r.stream]) == b"kept"

        async def five() -> Any:
            yield b"12345"

        for declared in (b"4", b"10"):  # too much, too little: refused, connection dropped
            sized = [*HOST, (b"Content-Length", declared)]
            with pytest.raises(httpcore.LocalProtocolError):
                await fetch(pool, server.port, "POST", five(), headers=sized)
        with pytest.raises(httpcore.LocalProtocolError):
            await fetch(pool, server.port, "GET / HTTP/1.1\r\nX:")  # not a method
        await pool.aclose()
