"""End to end: connection-pool circuit breaking and the retry budget against a real uvicorn
backend that measures how many requests it serves at once. Sync and async clients alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

import pymesh
from tests.e2e.meshkit import (
    URL,
    ServerThread,
    decision,
    destination_rule,
    endpoint,
    in_flight,
    make_mesh,
    route_to,
    service_entry,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(60)]


class Gauge:
    """An ASGI backend that answers `status` after `delay` and records its peak concurrency."""

    def __init__(self, delay: float, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.count = 0
        self.port = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with self.lock:
            self.now += 1
            self.count += 1
            self.peak = max(self.peak, self.now)
        try:
            await anyio.sleep(self.delay)
            await send({"type": "http.response.start", "status": self.status, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def gauge() -> Iterator[Any]:
    started: list[ServerThread] = []

    def start(delay: float, status: int = 200) -> Gauge:
        g = Gauge(delay, status)
        t = ServerThread()
        t.start(g)
        g.port = t.wait_started()
        started.append(t)
        return g

    yield start
    for t in started:
        t.request_stop()
    for t in started:
        t.join()


def pool_rule(**pool: Any) -> dict[str, Any]:
    dr = destination_rule()
    dr["spec"]["trafficPolicy"] = {"connectionPool": pool}
    return dr


async def fire(c: Any, n: int) -> list[tuple[float, httpx.Response | BaseException]]:
    """`n` concurrent GETs; each result with the seconds it took."""
    out: list[tuple[float, httpx.Response | BaseException]] = []

    async def one() -> None:
        start = time.monotonic()
        try:
            r: httpx.Response | BaseException = await c.background_get(URL)
        except Exception as exc:
            r = exc
        out.append((time.monotonic() - start, r))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return out


async def test_circuit_breaker_caps_concurrency_exactly_and_fails_fast(
    gauge: Any, connect: Any
) -> None:
    g = gauge(0.4)
    rule = pool_rule(tcp={"maxConnections": 3}, http={"http1MaxPendingRequests": 2})
    mesh = make_mesh(service_entry([endpoint(g.port, "v1")]), rule)
    c = connect(mesh)
    results = await fire(c, 10)
    ok = [(t, r) for t, r in results if isinstance(r, httpx.Response)]
    refused = [(t, r) for t, r in results if isinstance(r, pymesh.CircuitOpenError)]
    assert len(ok) == 5 and len(refused) == 5  # 3 at once + 2 pending; the rest refused
    assert all(r.status_code == 200 for _, r in ok)  # type: ignore[union-attr]
    assert g.peak == 3  # exactly maxConnections at the server
    assert all(t < 0.3 for t, _ in refused)  # failed fast, not queued
    err = refused[0][1]
    assert isinstance(err, httpx.TransportError)  # what httpx code catches
    assert str(err).startswith("circuit open: reviews http1MaxPendingRequests 2 reached")
    assert err.decision.flags == ["UO"]  # type: ignore[attr-defined]
    assert in_flight(mesh) == 0
    breaker = next(iter(mesh.runtime.clusters.values())).breaker
    assert (breaker.active, breaker.pending, breaker.retries) == (0, 0, 0)
    r = await c.get(URL)  # the circuit closes again once load drops
    assert r.status_code == 200


async def test_pending_requests_wait_no_longer_than_the_connect_timeout(
    gauge: Any, connect: Any
) -> None:
    g = gauge(0.6)
    rule = pool_rule(tcp={"maxConnections": 1, "connectTimeout": "150ms"})
    c = connect(make_mesh(service_entry([endpoint(g.port, "v1")]), rule))
    results = await fire(c, 3)
    refused = [(t, r) for t, r in results if isinstance(r, pymesh.CircuitOpenError)]
    assert len(refused) == 2
    assert all(0.1 < t < 0.5 for t, _ in refused)
    assert "no connection freed within the connect timeout" in str(refused[0][1])
    assert g.peak == 1


async def test_http2_max_requests_limits_all_requests(gauge: Any, connect: Any) -> None:
    g = gauge(0.3)
    c = connect(
        make_mesh(service_entry([endpoint(g.port, "v1")]), pool_rule(http={"http2MaxRequests": 2}))
    )
    results = await fire(c, 6)
    refused = [r for _, r in results if isinstance(r, pymesh.CircuitOpenError)]
    assert len(refused) == 4 and g.peak == 2
    assert "http2MaxRequests 2 reached" in str(refused[0])


async def test_retry_budget_holds_under_total_outage(gauge: Any, connect: Any) -> None:
    """Every answer is a slow 503 and the route retries 5xx up to 5 times: without a budget,
    30 concurrent calls would send 180 requests. The default budget (20 %, minimum 3) keeps the
    retries in progress at once within max(3, 20 % of the requests active)."""
    g = gauge(0.05, status=503)
    vs = virtual_service([{"route": [route_to()], "retries": {"attempts": 5, "retryOn": "5xx"}}])
    mesh = make_mesh(service_entry([endpoint(g.port, "v1")]), vs)
    c = connect(mesh)
    breaker_peak = 0
    done = False

    async def watch() -> None:
        nonlocal breaker_peak
        while not done:
            for cl in mesh.runtime.clusters.values():
                breaker_peak = max(breaker_peak, cl.breaker.retries)
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        results = await fire(c, 30)
        done = True
    responses = [r for _, r in results if isinstance(r, httpx.Response)]
    assert len(responses) == 30 and all(r.status_code == 503 for r in responses)
    stopped = [r for r in responses if "UO" in decision(r).flags]
    assert len(stopped) >= 20  # most calls were refused a retry
    assert "not retried: retry budget reached" in decision(stopped[0]).reason
    assert breaker_peak <= 6  # max(3, 20 % of 30)
    assert g.count <= 30 + 6 * 5 < 180
    assert in_flight(mesh) == 0


async def test_max_retries_caps_concurrent_retries(gauge: Any, connect: Any) -> None:
    g = gauge(0.05, status=503)
    vs = virtual_service([{"route": [route_to()], "retries": {"attempts": 3, "retryOn": "5xx"}}])
    rule = pool_rule(http={"maxRetries": 1})
    rule["spec"]["trafficPolicy"]["retryBudget"] = {"percent": 100, "minRetryConcurrency": 100}
    c = connect(make_mesh(service_entry([endpoint(g.port, "v1")]), vs, rule))
    results = await fire(c, 10)
    responses = [r for _, r in results if isinstance(r, httpx.Response)]
    assert len(responses) == 10
    assert any("maxRetries 1 reached" in decision(r).reason for r in responses)
    assert g.count <= 10 + 3  # one retry at a time: at most one call retries all the way
