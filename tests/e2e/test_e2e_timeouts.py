"""End to end: the route timeout bounds the whole call — before the headers and while the body is
still streaming — and fires within 10 % of its value. Sync and async clients alike."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

import pymesh
from tests.e2e.meshkit import (
    URL,
    Reply,
    decision,
    endpoint,
    in_flight,
    make_mesh,
    route_to,
    service_entry,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(30)]

TIMEOUT = 0.5
LATE = TIMEOUT * 1.1  # "within 10 %"


def timed_mesh(backend: Any, **rule: Any) -> Any:
    return make_mesh(
        service_entry([endpoint(backend)]),
        virtual_service([{"route": [route_to()], "timeout": f"{TIMEOUT}s", **rule}]),
    )


async def test_route_timeout_fires_while_body_streams(backends: Any, connect: Any) -> None:
    (b,) = backends("slow")
    b.slow_stream(every=0.1, total=3.0)
    c = connect(timed_mesh(b))
    seen: dict[str, Any] = {}
    start = time.monotonic()
    with pytest.raises(pymesh.MeshTimeoutError) as ei:
        await c.stream_get(URL, seen)
    elapsed = time.monotonic() - start
    # raised while the body streamed: the headers and several chunks had arrived
    assert seen["response"].status_code == 200
    assert len(seen["chunks"]) >= 2, seen["chunks"]
    assert TIMEOUT <= elapsed <= LATE, elapsed
    err = ei.value
    assert isinstance(err, httpx.TimeoutException)
    assert "UT" in err.decision.flags
    assert "timeout 0.5s" in str(err)
    assert "reading the response body" in str(err)
    # the broken connection is not reused and the endpoint is released
    b.healthy()
    r = await c.get(URL)
    assert (r.status_code, r.text) == (200, "slow")
    assert in_flight(c.mesh) == 0


async def test_route_timeout_fires_while_body_streams_nonstreaming_api(
    backends: Any, connect: Any
) -> None:
    (b,) = backends("slow")
    b.slow_stream(every=0.1, total=3.0)
    c = connect(timed_mesh(b))
    start = time.monotonic()
    with pytest.raises(pymesh.MeshTimeoutError):
        await c.get(URL)  # httpx reads the body inside .get()
    elapsed = time.monotonic() - start
    assert TIMEOUT <= elapsed <= LATE, elapsed


async def test_route_timeout_fires_before_headers(backends: Any, connect: Any) -> None:
    (b,) = backends("sleepy")
    b.slow_headers(2.0)
    c = connect(timed_mesh(b))
    start = time.monotonic()
    with pytest.raises(pymesh.MeshTimeoutError) as ei:
        await c.get(URL)
    elapsed = time.monotonic() - start
    assert TIMEOUT <= elapsed <= LATE, elapsed
    err = ei.value
    assert isinstance(err, httpx.TimeoutException)
    assert isinstance(err, httpx.TransportError)
    assert "timeout 0.5s" in str(err)
    assert "reviews" in str(err)
    assert "UT" in err.decision.flags
    assert len(err.decision.attempts) == 1  # a route timeout is never retried
    assert b.count == 1
    assert in_flight(c.mesh) == 0


async def test_body_streaming_within_the_timeout_completes(backends: Any, connect: Any) -> None:
    (b,) = backends("slow")
    b.slow_stream(every=0.05, total=0.3)
    c = connect(timed_mesh(b))
    for _ in range(2):  # the second call reuses the connection
        r = await c.get(URL)
        assert r.status_code == 200
        assert r.text.startswith("slow.") and set(r.text[4:]) == {"."}
    assert in_flight(c.mesh) == 0


async def test_client_read_timeout_is_an_httpx_timeout(backends: Any, connect: Any) -> None:
    """No route timeout: the httpx client's own `timeout=` fires. Code written for httpx
    catches `httpx.TimeoutException` for that; pymesh must keep it so, before the headers as
    it already does while the body streams."""
    (b,) = backends("sleepy")
    b.slow_headers(2.0)
    c = connect(make_mesh(service_entry([endpoint(b)])), timeout=0.3)
    with pytest.raises(httpx.HTTPError) as ei:
        await c.get(URL)
    assert isinstance(ei.value, httpx.TimeoutException), repr(ei.value)
    assert not isinstance(ei.value, httpx.ConnectError), repr(ei.value)
    assert "timeout" in str(ei.value)

    b.slow_stream(every=0.5, total=2.0)  # same client timeout, hit while the body streams
    with pytest.raises(httpx.TimeoutException):
        await c.get(URL)


async def test_per_try_timeout_retries_within_route_timeout(backends: Any, connect: Any) -> None:
    (b,) = backends("sleepy")
    b.script = lambda n: Reply(delay=2.0 if n == 1 else 0.0)  # only the first try hangs
    retries = {"attempts": 2, "perTryTimeout": "0.2s", "retryOn": "reset,5xx"}
    c = connect(timed_mesh(b, retries=retries))
    start = time.monotonic()
    r = await c.get(URL)
    elapsed = time.monotonic() - start
    assert r.status_code == 200
    d = decision(r)
    assert [a.failure for a in d.attempts] == ["per-try-timeout", None]
    assert d.attempts[0].retry_on == "reset"
    assert 0.2 <= elapsed < TIMEOUT, elapsed


async def test_every_try_timing_out_is_a_timeout_error(backends: Any, connect: Any) -> None:
    (b,) = backends("sleepy")
    b.slow_headers(2.0)
    retries = {"attempts": 2, "perTryTimeout": "0.1s", "retryOn": "reset"}
    c = connect(
        make_mesh(
            service_entry([endpoint(b)]),
            virtual_service([{"route": [route_to()], "timeout": "2s", "retries": retries}]),
        )
    )
    start = time.monotonic()
    with pytest.raises(pymesh.MeshTimeoutError) as ei:
        await c.get(URL)
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 0.3 + 0.25 * 2 + 0.1, elapsed  # 3 tries + at most the back-offs
    err = ei.value
    assert isinstance(err, httpx.TimeoutException)
    assert [a.failure for a in err.decision.attempts] == ["per-try-timeout"] * 3
    assert "perTryTimeout 0.1s" in str(err) and "3 attempts" in str(err)
    assert "UT" in err.decision.flags
    assert b.count == 3
    assert in_flight(c.mesh) == 0


async def test_cancelled_async_calls_release_their_endpoint(
    backends: Any, anyio_backend: str
) -> None:
    """Async only: a call cancelled before the headers, or while its body streams, does not
    stay counted in flight (least request would shun the endpoint forever)."""
    (b,) = backends("sleepy")
    b.slow_headers(2.0)
    mesh = make_mesh(service_entry([endpoint(b)]))
    async with mesh.async_http_client() as c:
        with anyio.move_on_after(0.2):
            await c.get(URL)
        assert in_flight(mesh) == 0
        b.slow_stream(every=0.1, total=2.0)
        with anyio.move_on_after(0.3):
            async with c.stream("GET", URL) as r:
                async for _ in r.aiter_raw():
                    pass
        assert in_flight(mesh) == 0
