"""End to end: VirtualService route rules through real uvicorn backends, with the sync and the
async meshed client — fault delays and aborts at their rates (faulted calls neither retried nor
timed out), mirrors that arrive while the caller never waits for them, rewrites, redirects,
direct responses and header operations as Istio documents them."""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest

from tests.e2e.meshkit import (
    URL,
    decision,
    endpoint,
    eventually,
    in_flight,
    make_mesh,
    route_to,
    service_entry,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(60)]


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


# ------------------------------------------------------------------------------------------
# faults


async def test_abort_rate_and_aborted_calls_never_reach_the_backend(
    backends: Any, connect: Any
) -> None:
    (v1,) = backends("v1")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        virtual_service(
            [
                {
                    "route": [route_to()],
                    "retries": {"attempts": 3, "retryOn": "5xx"},  # not applied to aborts
                    "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 30}}},
                }
            ]
        ),
    )
    c = connect(mesh)
    n = 300
    aborted = 0
    for _ in range(n):
        r = await c.get(URL)
        if r.status_code == 503:
            aborted += 1
            assert r.text == "fault filter abort"
            assert decision(r).flags == ["FI"] and decision(r).attempts == []
        else:
            assert r.status_code == 200 and r.text == "v1"
    assert 60 <= aborted <= 120  # 30 % of 300 ± 5 standard deviations
    assert v1.count == n - aborted  # one attempt per call that was not aborted


async def test_delay_rate_and_the_route_timeout_does_not_cover_it(
    backends: Any, connect: Any
) -> None:
    (v1,) = backends("v1")
    delay = 0.05
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        virtual_service(
            [
                {
                    "route": [route_to()],
                    "timeout": "1s",
                    "fault": {"delay": {"fixedDelay": "50ms", "percentage": {"value": 50}}},
                }
            ]
        ),
    )
    c = connect(mesh)
    n = 60
    delayed = 0
    for _ in range(n):
        start = time.monotonic()
        r = await c.get(URL)
        took = time.monotonic() - start
        assert r.status_code == 200
        if "DI" in decision(r).flags:
            delayed += 1
            assert took >= delay
    assert 15 <= delayed <= 45  # 50 % of 60 ± 4 standard deviations
    assert v1.count == n

    # a delay longer than the route timeout: the call still succeeds (Istio: not timed out)
    mesh2 = make_mesh(
        service_entry([endpoint(v1)]),
        virtual_service(
            [
                {
                    "route": [route_to()],
                    "timeout": "50ms",
                    "fault": {"delay": {"fixedDelay": "200ms", "percentage": {"value": 100}}},
                }
            ]
        ),
    )
    r = await connect(mesh2).get(URL)
    assert r.status_code == 200 and decision(r).flags == ["DI"]


async def test_grpc_abort(backends: Any, connect: Any) -> None:
    (v1,) = backends("v1")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        virtual_service(
            [
                {
                    "route": [route_to()],
                    "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
                }
            ]
        ),
    )
    r = await connect(mesh).get(URL, headers={"content-type": "application/grpc"})
    assert r.status_code == 200
    assert r.headers["grpc-status"] == "14" and r.headers["content-type"] == "application/grpc"
    assert v1.count == 0


# ------------------------------------------------------------------------------------------
# mirrors


async def test_mirror_arrives_while_the_caller_never_waits(backends: Any, connect: Any) -> None:
    v1, shadow = backends("v1", "shadow")
    shadow.slow_headers(1.0)  # the mirror answers after a second; nobody waits for it
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        service_entry([endpoint(shadow)], host="shadow"),
        virtual_service([{"route": [route_to()], "mirror": {"host": "shadow"}}]),
    )
    c = connect(mesh)
    n = 5
    for i in range(n):
        start = time.monotonic()
        r = await c.request("POST", URL + f"orders?n={i}", content=b"order %d" % i)
        assert time.monotonic() - start < 0.5  # never the mirror's second
        assert r.status_code == 200 and r.text == "v1"
        d = decision(r)
        assert d.notes == ["mirrored to outbound|9080||shadow.default.svc.cluster.local"]
        assert len(d.attempts) == 1
    await eventually(lambda: shadow.count == n)
    assert sorted(shadow.bodies) == sorted(v1.bodies)
    assert sorted(shadow.targets) == sorted(v1.targets)
    for h in shadow.headers:
        assert header_values(h, "host") == ["reviews-shadow:9080"]
    # a streamed body cannot be copied: not mirrored, and the decision says why
    r = await c.request("POST", URL, content=c.streamed_body([b"a", b"b"]))
    assert r.status_code == 200
    assert "skipped: request body not buffered" in decision(r).notes[0]
    await eventually(lambda: in_flight(mesh) == 0)  # the slow copies finish on their own
    assert shadow.count == n


async def test_closing_the_client_lets_its_mirrors_finish(backends: Any, connect: Any) -> None:
    """A client closed right after its call still delivers the mirror that call started, and
    leaves no connection behind (a leaked socket fails this test: warnings are errors)."""
    v1, shadow = backends("v1", "shadow")
    shadow.slow_headers(0.1)
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        service_entry([endpoint(shadow)], host="shadow"),
        virtual_service([{"route": [route_to()], "mirror": {"host": "shadow"}}]),
    )
    n = 6
    for i in range(n):
        c = connect(mesh)
        r = await c.request("POST", URL, content=b"order %d" % i)
        assert r.status_code == 200 and r.text == "v1"
        await c.aclose()  # the copy is still waiting for the shadow's answer
        assert in_flight(mesh) == 0
    await eventually(lambda: shadow.answered == n)  # each copy waited for its answer
    assert sorted(shadow.bodies) == sorted(v1.bodies)
    gc.collect()


async def test_closing_the_client_cuts_off_a_mirror_after_a_grace(
    backends: Any, connect: Any
) -> None:
    """A mirror that would outlive its client by seconds is cut off after the grace
    (`BACKGROUND_GRACE`, 1 s): the close neither hangs on it nor leaks its connection."""
    v1, shadow = backends("v1", "shadow")
    shadow.slow_headers(10.0)
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        service_entry([endpoint(shadow)], host="shadow"),
        virtual_service([{"route": [route_to()], "mirror": {"host": "shadow"}}]),
    )
    c = connect(mesh)
    assert (await c.get(URL)).text == "v1"
    await eventually(lambda: shadow.count == 1)
    start = time.monotonic()
    await c.aclose()
    assert time.monotonic() - start < 5.0  # the grace, not the shadow's ten seconds
    await eventually(lambda: in_flight(mesh) == 0)
    gc.collect()


async def test_mirror_percentage(backends: Any, connect: Any) -> None:
    v1, shadow = backends("v1", "shadow")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        service_entry([endpoint(shadow)], host="shadow"),
        virtual_service(
            [
                {
                    "route": [route_to()],
                    "mirrors": [{"destination": {"host": "shadow"}, "percentage": {"value": 25}}],
                }
            ]
        ),
    )
    c = connect(mesh)
    n = 200
    mirrored = 0
    for _ in range(n):
        r = await c.get(URL)
        mirrored += bool(decision(r).notes)
    assert 25 <= mirrored <= 75  # 25 % of 200 ± 4 standard deviations
    await eventually(lambda: shadow.count == mirrored)
    await eventually(lambda: in_flight(mesh) == 0)


# ------------------------------------------------------------------------------------------
# rewrites and header operations


async def test_rewrite_and_header_operations(backends: Any, connect: Any) -> None:
    v1, v2 = backends("v1", "v2")
    mesh = make_mesh(
        service_entry([endpoint(v1), endpoint(v2)]),
        virtual_service(
            [
                {
                    "match": [{"uri": {"prefix": "/ratings/"}}, {"uri": {"exact": "/stars"}}],
                    "rewrite": {"uri": "/v1/bookRatings/", "authority": "ratings.prod"},
                    "headers": {
                        "request": {
                            "set": {"x-api-version": "2"},
                            "add": {"x-tag": "rule"},
                            "remove": ["x-debug"],
                        },
                        "response": {
                            "set": {"x-backend": "hidden"},
                            "add": {"x-cache": "MISS"},
                            "remove": ["x-request-number"],
                        },
                    },
                    "route": [
                        {
                            "destination": {"host": "reviews", "subset": "v1"},
                            "headers": {
                                "request": {"set": {"x-api-version": "1", "x-subset": "v1"}},
                                "response": {"add": {"x-cache": "dest"}},
                            },
                        }
                    ],
                },
                {"route": [route_to("v2")]},
            ]
        ),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {
                "host": "reviews",
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        },
    )
    c = connect(mesh)
    r = await c.get(
        "http://reviews:9080/ratings/7?full=1",
        headers={"x-debug": "1", "x-tag": "caller", "x-api-version": "0"},
    )
    assert r.status_code == 200
    assert v1.targets == ["/v1/bookRatings/7?full=1"]  # the matched prefix replaced
    (sent,) = v1.headers
    assert header_values(sent, "host") == ["ratings.prod"]
    assert header_values(sent, "x-debug") == []
    assert header_values(sent, "x-tag") == ["caller", "rule"]
    assert header_values(sent, "x-api-version") == ["2"]  # the rule's set wins over the dest's
    assert header_values(sent, "x-subset") == ["v1"]
    # response: the destination's operations, then the rule's
    assert r.headers["x-backend"] == "hidden"
    assert "x-request-number" not in r.headers
    assert r.headers.get_list("x-cache") == ["dest", "MISS"]
    # an exact match: the whole path is replaced; the query stays
    r = await c.get("http://reviews:9080/stars?x=1")
    assert v1.targets[-1] == "/v1/bookRatings/?x=1"
    # another rule: nothing rewritten
    r = await c.get("http://reviews:9080/other", headers={"x-debug": "1"})
    assert r.headers["x-backend"] == "v2" and "x-request-number" in r.headers
    assert v2.targets == ["/other"]
    assert header_values(v2.headers[0], "x-debug") == ["1"]
    assert header_values(v2.headers[0], "host") == ["reviews:9080"]


async def test_regex_rewrite(backends: Any, connect: Any) -> None:
    (v1,) = backends("v1")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        virtual_service(
            [
                {
                    "rewrite": {
                        "uriRegexRewrite": {
                            "match": "^/service/([^/]+)(/.*)$",
                            "rewrite": "\\2/instance/\\1",
                        }
                    },
                    "route": [route_to()],
                }
            ]
        ),
    )
    r = await connect(mesh).get("http://reviews:9080/service/foo/v1/api?q=1")
    assert r.status_code == 200
    assert v1.targets == ["/v1/api/instance/foo?q=1"]


# ------------------------------------------------------------------------------------------
# redirects and direct responses


async def test_redirect_and_direct_response(backends: Any, connect: Any) -> None:
    (v1,) = backends("v1")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        virtual_service(
            [
                {
                    "match": [{"uri": {"prefix": "/v1/getProductRatings"}}],
                    "redirect": {"uri": "/v1/bookRatings", "authority": "reviews:9080"},
                },
                {
                    "match": [{"uri": {"prefix": "/old/"}}],
                    "redirect": {"uri": "/new", "redirectCode": 308},
                    "headers": {"response": {"set": {"x-moved": "yes"}}},
                },
                {
                    "match": [{"uri": {"exact": "/maintenance"}}],
                    "directResponse": {"status": 503, "body": {"string": "back soon"}},
                },
                {
                    "match": [{"uri": {"exact": "/blob"}}],
                    "directResponse": {"status": 200, "body": {"bytes": "AAEC/w=="}},
                },
                {"route": [route_to()]},
            ]
        ),
    )
    c = connect(mesh)
    r = await c.get("http://reviews:9080/v1/getProductRatings/7?x=1")
    assert r.status_code == 301
    assert r.headers["location"] == "http://reviews:9080/v1/bookRatings?x=1"
    assert decision(r).flags == [] and "http[0]" in decision(r).route
    r = await c.get("http://reviews:9080/old/page")
    assert (r.status_code, r.headers["location"]) == (308, "http://reviews:9080/new")
    assert r.headers["x-moved"] == "yes"
    r = await c.get("http://reviews:9080/maintenance")
    assert (r.status_code, r.text) == (503, "back soon")
    assert r.headers["content-type"] == "text/plain"
    r = await c.get("http://reviews:9080/blob")
    assert r.content == b"\x00\x01\x02\xff"
    assert v1.count == 0  # nothing reached the backend


async def test_following_a_redirect(backends: Any, connect: Any, kind: str) -> None:
    (v1,) = backends("v1")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        virtual_service(
            [
                {
                    "match": [{"uri": {"prefix": "/v1/getProductRatings"}}],
                    "redirect": {"uri": "/v1/bookRatings"},
                },
                {"route": [route_to()]},
            ]
        ),
    )
    # an httpx client that follows redirects ends up at the backend, through the mesh
    r = await connect(mesh).get("http://reviews:9080/v1/getProductRatings", follow_redirects=True)
    assert r.status_code == 200 and r.text == "v1"
    assert [h.status_code for h in r.history] == [301]
    assert v1.targets == ["/v1/bookRatings"]


# ------------------------------------------------------------------------------------------
# the sync client outside a running loop (the twin's own code path)


def test_sync_client_mirror_and_direct_response(backends: Any) -> None:
    v1, shadow = backends("v1", "shadow")
    mesh = make_mesh(
        service_entry([endpoint(v1)]),
        service_entry([endpoint(shadow)], host="shadow"),
        virtual_service(
            [
                {
                    "match": [{"uri": {"exact": "/health"}}],
                    "directResponse": {"status": 200, "body": {"string": "ok"}},
                },
                {"route": [route_to()], "mirror": {"host": "shadow"}},
            ]
        ),
    )
    with mesh.http_client(timeout=5) as client:
        assert client.get("http://reviews:9080/health").text == "ok"
        assert client.get(URL).text == "v1"
        deadline = time.monotonic() + 5
        while shadow.count < 1 or in_flight(mesh):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert v1.count == 1 and shadow.count == 1
    assert header_values(shadow.headers[0], "host") == ["reviews-shadow:9080"]
