"""End to end: retries, connect failures, outlier ejection and unbuffered request bodies, against
real uvicorn backends and a port that refuses connections. Sync and async clients alike."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

import pymesh
from tests.e2e.meshkit import (
    URL,
    decision,
    destination_rule,
    endpoint,
    in_flight,
    make_mesh,
    route_to,
    service_entry,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_retry_on_5xx_hides_two_503s(backends: Any, connect: Any) -> None:
    (b,) = backends("v1")
    b.fail_first(2)
    vs = virtual_service([{"route": [route_to()], "retries": {"attempts": 2, "retryOn": "5xx"}}])
    c = connect(make_mesh(service_entry([endpoint(b)]), vs))
    r = await c.get(URL)
    assert r.status_code == 200
    d = decision(r)
    assert [a.status for a in d.attempts] == [503, 503, 200]
    assert [a.retry_on for a in d.attempts] == ["5xx", "5xx", None]
    assert [a.endpoint for a in d.attempts] == [b.label] * 3
    assert b.count == 3


@pytest.mark.parametrize(
    "retries",
    [None, {"attempts": 3, "retryOn": "connect-failure,refused-stream"}],
    ids=["default-policy", "retryOn-without-5xx"],
)
async def test_5xx_not_retried_unless_retry_on_says_so(
    backends: Any, connect: Any, retries: dict[str, Any] | None
) -> None:
    (b,) = backends("v1")
    b.fail_first(2)
    rule: dict[str, Any] = {"route": [route_to()]}
    if retries:
        rule["retries"] = retries
    c = connect(make_mesh(service_entry([endpoint(b)]), virtual_service([rule])))
    r = await c.get(URL)
    assert r.status_code == 503
    assert [a.status for a in decision(r).attempts] == [503]
    assert b.count == 1


async def test_refusing_endpoint_is_retried_invisibly(
    backends: Any, connect: Any, refusing_port: Any
) -> None:
    a, b = backends("a", "b")
    dead = refusing_port()
    dead_label = f"127.0.0.1:{dead}"
    c = connect(make_mesh(service_entry([endpoint(a), endpoint(dead, "dead"), endpoint(b)])))
    retried = 0
    for _ in range(300):
        r = await c.get(URL)  # no client-visible error, ever
        assert r.status_code == 200
        d = decision(r)
        last = d.attempts[-1]
        assert (last.status, last.failure) == (200, None)
        assert last.endpoint in (a.label, b.label)
        if len(d.attempts) > 1:
            retried += 1
            first = d.attempts[0]
            assert (first.endpoint, first.failure, first.status) == (
                dead_label,
                "connect-failure",
                None,
            )
            assert first.retry_on == "connect-failure"
            assert len(d.attempts) == 2  # the retry avoids the endpoint that failed
    assert a.count + b.count == 300
    assert retried >= 50, retried  # ~1/3 of the picks land on the dead endpoint
    assert in_flight(c.mesh) == 0


async def test_connect_failures_count_toward_ejection(
    backends: Any, connect: Any, refusing_port: Any
) -> None:
    """Local-origin failures (connect refused) count as 5xx for outlier detection (Envoy's
    default): after 3 the dead endpoint is ejected and calls stop paying for a retry."""
    a, b = backends("a", "b")
    dead = refusing_port()
    dr = destination_rule(
        outlier={"consecutive5xxErrors": 3, "baseEjectionTime": "30s", "maxEjectionPercent": 50}
    )
    c = connect(make_mesh(service_entry([endpoint(a), endpoint(dead, "dead"), endpoint(b)]), dr))
    failures = 0
    for _ in range(200):
        r = await c.get(URL)
        assert r.status_code == 200
        failures += sum(1 for x in decision(r).attempts if x.failure)
        if failures == 3:
            break
    assert failures == 3
    assert "ejected" in decision(r).endpoint_reason
    for _ in range(60):
        r = await c.get(URL)
        assert [x.endpoint for x in decision(r).attempts] in ([a.label], [b.label])


async def test_least_request_prefers_the_endpoint_with_fewer_in_flight(
    backends: Any, connect: Any
) -> None:
    fast, slow = backends("fast", "slow")
    slow.slow_headers(0.2)
    c = connect(make_mesh(service_entry([endpoint(fast), endpoint(slow)])))

    async def worker() -> None:
        for _ in range(20):
            assert (await c.background_get(URL)).status_code == 200

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(worker)
    assert fast.count + slow.count == 200
    assert slow.count <= 40, (fast.count, slow.count)  # random or round robin would give ~100
    assert in_flight(c.mesh) == 0


async def test_consecutive_5xx_eject_then_endpoint_returns(backends: Any, connect: Any) -> None:
    good, bad = backends("good", "bad")
    bad.always(503)
    dr = destination_rule(
        outlier={
            "consecutive5xxErrors": 3,
            "interval": "1s",
            "baseEjectionTime": "1s",
            "maxEjectionPercent": 100,
        }
    )
    vs = virtual_service([{"route": [route_to()], "retries": {"attempts": 2, "retryOn": "5xx"}}])
    c = connect(make_mesh(service_entry([endpoint(good), endpoint(bad)]), dr, vs))

    for _ in range(200):
        r = await c.get(URL)
        assert r.status_code == 200  # 503s are retried on the good endpoint
        if bad.count == 3:
            break
    ejected_at = time.monotonic()
    assert bad.count == 3
    assert "ejected" in decision(r).endpoint_reason

    # while ejected: nothing reaches it
    sent = 0
    while time.monotonic() - ejected_at < 0.6 and sent < 100:
        r = await c.get(URL)
        assert r.status_code == 200
        assert [x.endpoint for x in decision(r).attempts] == [good.label]
        sent += 1
    assert bad.count == 3
    assert sent >= 10

    # after baseEjectionTime it is back in the set
    await anyio.sleep(max(0.0, 1.1 - (time.monotonic() - ejected_at)))
    for _ in range(30):
        assert (await c.get(URL)).status_code == 200
    assert bad.count > 3


async def test_streamed_body_is_never_replayed_after_connect_failure(
    connect: Any, refusing_port: Any
) -> None:
    dead = refusing_port()
    c = connect(make_mesh(service_entry([endpoint(dead, "dead")])))

    # buffered: the default policy retries the connect failure (then gives up: all refuse)
    with pytest.raises(pymesh.RetriesExhaustedError) as buffered:
        await c.request("POST", URL, content=b"hello")
    assert len(buffered.value.decision.attempts) == 3

    # streamed: one attempt only, and the error says why
    with pytest.raises(pymesh.UpstreamConnectError) as streamed:
        await c.request("POST", URL, content=c.streamed_body([b"hel", b"lo"]))
    err = streamed.value
    assert isinstance(err, httpx.TransportError)
    assert not isinstance(err, pymesh.RetriesExhaustedError)
    assert [(a.endpoint, a.failure) for a in err.decision.attempts] == [
        (f"127.0.0.1:{dead}", "connect-failure")
    ]
    assert "not buffered" in str(err)
    assert "UF" in err.decision.flags


async def test_streamed_body_mixed_endpoints(
    backends: Any, connect: Any, refusing_port: Any
) -> None:
    (b,) = backends("v1")
    dead = refusing_port()
    c = connect(make_mesh(service_entry([endpoint(b), endpoint(dead, "dead")])))
    ok = failed = 0
    for _ in range(40):
        try:
            r = await c.request("POST", URL, content=c.streamed_body([b"abc", b"defg"]))
        except pymesh.UpstreamConnectError as exc:
            failed += 1
            assert len(exc.decision.attempts) == 1
            assert exc.decision.attempts[0].endpoint == f"127.0.0.1:{dead}"
        else:
            ok += 1
            assert r.status_code == 200
            assert r.headers["x-body-length"] == "7"
    assert ok and failed, (ok, failed)
    assert b.bodies == [b"abcdefg"] * ok
    # the same requests with a buffered body: retried, so nobody sees the dead endpoint
    for _ in range(40):
        assert (await c.request("POST", URL, content=b"abcdefg")).status_code == 200


async def test_streamed_body_not_retried_on_5xx(backends: Any, connect: Any) -> None:
    (b,) = backends("v1")
    b.fail_first(1)
    vs = virtual_service([{"route": [route_to()], "retries": {"attempts": 2, "retryOn": "5xx"}}])
    c = connect(make_mesh(service_entry([endpoint(b)]), vs))
    r = await c.request("POST", URL, content=c.streamed_body([b"pay ", b"once"]))
    assert r.status_code == 503
    assert len(decision(r).attempts) == 1
    assert b.bodies == [b"pay once"]
