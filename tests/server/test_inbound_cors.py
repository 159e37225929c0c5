"""VirtualService `corsPolicy` on the inbound side: preflights answered by the mesh, actual
responses decorated — through a real `Mesh.server` (plain and with telemetry) and httpx, and
through the WSGI middleware."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.config import load_text
from pymesh.inbound import InboundPolicy, InboundRequest
from pymesh.wsgi import MeshMiddleware as WsgiMiddleware

CORS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /plain}}]
    route: [{destination: {host: reviews}}]
  - corsPolicy:
      allowOrigins: [{exact: "https://app.example"}, {prefix: "https://dev."}]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      exposeHeaders: [x-trace]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: reviews}}]
"""
IGNORE = CORS.replace(
    "allowCredentials: true", "allowCredentials: true\n      unmatchedPreflights: IGNORE"
)
OTHER_HOST = CORS.replace("hosts: [reviews]", "hosts: [ratings]")
APP = "https://app.example"


class Recorder:
    """An ASGI app that records the methods it served and sets its own CORS header."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls.append(scope["method"])
        headers = [(b"x-trace", b"t1"), (b"access-control-allow-origin", b"*")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"app"})


def _preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-token",
    }


@pytest.fixture(params=[False, True], ids=["plain", "telemetry"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, Recorder]]:
    app = Recorder()
    mesh = pymesh.Mesh.from_yaml(CORS, service="reviews", telemetry=request.param)
    with mesh.server(app) as srv:
        yield f"http://127.0.0.1:{srv.port}", app
    mesh.close()


@pytest.mark.slow
def test_allowed_preflight_is_answered_by_the_mesh(served: tuple[str, Recorder]) -> None:
    base, app = served
    r = httpx.options(f"{base}/reviews/1", headers=_preflight(APP))
    assert r.status_code == 200 and r.content == b""
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-allow-methods"] == "GET,POST"
    assert r.headers["access-control-allow-headers"] == "x-token"
    assert r.headers["access-control-max-age"] == "86400"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert app.calls == []  # the app never saw the preflight


@pytest.mark.slow
def test_disallowed_origin_is_forwarded_without_cors_headers(
    served: tuple[str, Recorder],
) -> None:
    base, app = served
    r = httpx.options(f"{base}/reviews/1", headers=_preflight("https://evil.example"))
    assert app.calls == ["OPTIONS"]  # unmatchedPreflights FORWARD (Istio's default)
    assert r.headers.get("access-control-allow-methods") is None
    r = httpx.get(f"{base}/reviews/1", headers={"origin": "https://evil.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"  # the app's own answer, untouched


@pytest.mark.slow
def test_actual_request_gets_the_cors_response_headers(served: tuple[str, Recorder]) -> None:
    base, app = served
    r = httpx.get(f"{base}/reviews/1", headers={"origin": "https://dev.web"})
    assert (r.status_code, r.text) == (200, "app")
    # the policy's value replaces the app's `*`, once
    assert r.headers.get_list("access-control-allow-origin") == ["https://dev.web"]
    assert r.headers["access-control-expose-headers"] == "x-trace"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["vary"] == "origin"
    assert r.headers["x-trace"] == "t1"
    # a rule without corsPolicy matched first: no CORS here
    r = httpx.options(f"{base}/plain/x", headers=_preflight(APP))
    assert r.headers["access-control-allow-origin"] == "*"
    assert "vary" not in r.headers
    assert app.calls == ["GET", "OPTIONS"]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["", OTHER_HOST], ids=["no-virtualservice", "other-host"])
def test_without_a_policy_for_this_service_the_app_is_untouched(config: str) -> None:
    app = Recorder()
    mesh = pymesh.Mesh.from_yaml(config, service="reviews")
    assert mesh.inbound_policy()._cors is None  # nothing compiled, nothing per request
    with mesh.server(app) as srv:
        r = httpx.options(f"http://127.0.0.1:{srv.port}/reviews/1", headers=_preflight(APP))
    mesh.close()
    assert app.calls == ["OPTIONS"]
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-methods" not in r.headers and "vary" not in r.headers


@pytest.mark.slow
def test_ignore_answers_unmatched_preflights_itself() -> None:
    app = Recorder()
    mesh = pymesh.Mesh.from_yaml(IGNORE, service="reviews")
    with mesh.server(app) as srv:
        r = httpx.options(
            f"http://127.0.0.1:{srv.port}/reviews/1", headers=_preflight("https://evil.example")
        )
    mesh.close()
    assert r.status_code == 200 and app.calls == []
    assert not any(name.startswith("access-control-") for name in r.headers)


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Access-Control-Allow-Origin", "*")])
    return [environ["REQUEST_METHOD"].encode()]


def _environ(method: str, headers: dict[str, str]) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/reviews/1",
        "QUERY_STRING": "",
        "SERVER_PORT": "8080",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "reviews",
    }
    for k, v in headers.items():
        env["HTTP_" + k.upper().replace("-", "_")] = v
    return env


@pytest.mark.parametrize("telemetry", [False, True], ids=["plain", "telemetry"])
def test_wsgi_middleware_applies_the_policy(telemetry: bool) -> None:
    mesh = pymesh.Mesh.from_yaml(CORS, service="reviews", telemetry=telemetry)
    wsgi = WsgiMiddleware(_wsgi_app, mesh)
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
        started.append((status, headers))

    body = wsgi(_environ("OPTIONS", _preflight(APP)), start_response)
    assert b"".join(body) == b""
    status, headers = started.pop()
    assert status == "200 OK"
    assert ("access-control-allow-origin", APP) in headers
    assert ("access-control-max-age", "86400") in headers

    body = wsgi(_environ("GET", {"origin": APP}), start_response)
    assert b"".join(body) == b"GET"
    getattr(body, "close", lambda: None)()
    status, headers = started.pop()
    names = [n.lower() for n, _ in headers]
    assert names.count("access-control-allow-origin") == 1
    assert ("access-control-allow-origin", APP) in headers
    assert ("vary", "origin") in headers
    mesh.close()


def test_cors_rule_follows_route_matching() -> None:
    config = load_text(
        CORS.replace("- corsPolicy:", "- match: [{method: {exact: GET}}]\n    corsPolicy:")
    )
    policy = InboundPolicy.compile(
        config,
        namespace="default",
        labels={},
        service_host="reviews.default.svc.cluster.local",
    )

    def check(method: str, path: str, headers: dict[str, str]) -> Any:
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        return policy.check(InboundRequest(method, path.encode(), raw, 8080, "plaintext"))

    got = check("GET", "/reviews/1", {"origin": APP})
    assert got.served and ("vary", "origin") in got.response_headers
    # the preflight is an OPTIONS request: the GET-only rule does not match it (as in Istio)
    got = check("OPTIONS", "/reviews/1", _preflight(APP))
    assert got.served and got.response_headers == ()
    # no Origin: nothing added
    assert check("GET", "/reviews/1", {}).response_headers == ()
    # compiled without a service host: no CORS
    assert InboundPolicy.compile(config, namespace="default", labels={})._cors is None
