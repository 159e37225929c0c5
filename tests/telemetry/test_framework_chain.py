"""Zero-code tracing across the framework integrations, served for real on 127.0.0.1:
FastAPI (`add_mesh`) → meshed httpx → Django (`pymesh_django.MeshMiddleware` deciding itself,
under a WSGI server thread) → meshed httpx, also from a wrapped thread pool → FastAPI. One
trace, each span's parent where it belongs, Istio's metrics on the Django side, the deadline
travelling along; unsampled chains still propagate one trace id; Django under ASGI (sync and
async views), refusals and streamed bodies recorded; a request decided by an outer pymesh
middleware is recorded once.

Django is configured in this process for the duration of each test (`django_project`), and
whatever settings were there before are put back: docs/integrations.md configures Django in
this process too. The apps hold no tracing code: they call meshed clients, and read
`current_trace()` / the received `traceparent` only to report what they saw to the test.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

import pymesh
import pymesh_django
import pymesh_fastapi
from pymesh.telemetry import TelemetryConfig, current_trace, wrap_executor
from pymesh.wsgi import MeshMiddleware as WsgiMeshMiddleware
from tests.e2e.meshkit import (
    ServerThread,
    WsgiThread,
    endpoint,
    route_to,
    service_entry,
    to_yaml,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

DENY_PRIVATE = {
    "apiVersion": "security.istio.io/v1",
    "kind": "AuthorizationPolicy",
    "metadata": {"name": "deny-private", "namespace": "default"},
    "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/private/*"]}}]}]},
}


# -- harness --------------------------------------------------------------------------------


def entry(host: str, port: int) -> dict[str, Any]:
    """A ServiceEntry for `host` (service port 9080) with one endpoint on 127.0.0.1:`port`."""
    se = service_entry([endpoint(port, "v1")], host=host)
    se["spec"]["endpoints"][0]["labels"] = {"app": host, "version": "v1"}
    return se


def deadline_left() -> float | None:
    """Seconds left before the served request's deadline (None: no deadline, or no request)."""
    ctx = current_trace()
    if ctx is None or ctx.deadline == float("inf"):
        return None
    return ctx.deadline - time.monotonic()


class Urls:
    """A URLconf for `ROOT_URLCONF` (Django takes any hashable object with `urlpatterns`)."""

    def __init__(self, *patterns: Any) -> None:
        self.urlpatterns = list(patterns)


@contextlib.contextmanager
def django_project(urls: Urls, mesh: pymesh.Mesh, outer: tuple[str, ...] = ()) -> Iterator[None]:
    """Django configured in this process with `pymesh_django.MeshMiddleware` first (after
    the `outer` middleware, when given) and `PYMESH = {"mesh": <factory returning mesh>}`;
    the previous settings restored after."""
    import django
    from django.conf import settings
    from django.urls import clear_url_caches
    from django.utils.functional import empty

    saved = settings._wrapped
    settings._wrapped = empty
    settings.configure(
        ROOT_URLCONF=urls,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="pymesh-tests-only",
        MIDDLEWARE=[*outer, "pymesh_django.MeshMiddleware"],
        PYMESH={"mesh": lambda: mesh, "ready_timeout": 5},
        USE_TZ=True,
    )
    django.setup()
    pymesh_django.close()  # a process mesh from other settings, if any
    try:
        yield
    finally:
        pymesh_django.close()  # closes `mesh`
        clear_url_caches()
        settings._wrapped = saved


@contextlib.contextmanager
def uvicorn_thread(app: Any) -> Iterator[int]:
    """`app` on plain uvicorn (no mesh around it: `add_mesh` or Django decides); the port."""
    t = ServerThread()
    t.start(app)
    try:
        yield t.wait_started()
    finally:
        t.request_stop()
        t.join()


def make_c(mesh: pymesh.Mesh, seen: list[tuple[str, ...]]) -> FastAPI:
    """Service C: FastAPI behind `add_mesh`; reports the traceparent it received."""
    app = FastAPI()
    pymesh_fastapi.add_mesh(app, mesh, close_on_shutdown=False)

    @app.get("/c/{name}")
    async def c(name: str, request: Request) -> dict[str, str]:
        seen.append(("c", name, request.headers.get("traceparent", "")))
        return {"c": name}

    return app


def istio_requests(mesh: pymesh.Mesh) -> list[dict[str, Any]]:
    """The `istio_requests_total` samples of `mesh` (labels plus `value`), from its
    Prometheus text parsed by prometheus_client's parser."""
    assert mesh.telemetry is not None
    text = mesh.telemetry.metrics_text().decode()
    out = []
    for family in text_string_to_metric_families(text):
        if family.name == "istio_requests":
            for sample in family.samples:
                if sample.name == "istio_requests_total":
                    out.append({**sample.labels, "value": sample.value})
    return out


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans whose parent is `parent`."""
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


# -- the chain ------------------------------------------------------------------------------


class Chain:
    """A → B → C served for real: A FastAPI on `Mesh.server` (uvicorn), B Django on a WSGI
    server thread (only pymesh_django decides), C FastAPI behind `add_mesh` on plain uvicorn.
    B's view calls C twice with the meshed sync client: directly, and from a wrapped pool."""

    def __init__(self, config: TelemetryConfig, a_route: dict[str, Any]) -> None:
        self.config = config
        self.a_route = a_route
        self.seen: list[tuple[str, ...]] = []
        self.b_left: list[float | None] = []

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Start C, B and A; yield A's base URL."""
        from django.core.handlers.wsgi import WSGIHandler
        from django.http import JsonResponse
        from django.urls import path

        seen = self.seen
        self.c_mesh = pymesh.Mesh.from_yaml("", service="cservice", telemetry=self.config)
        with contextlib.ExitStack() as stack:
            stack.callback(self.c_mesh.close)
            c_port = stack.enter_context(uvicorn_thread(make_c(self.c_mesh, seen)))

            self.b_mesh = pymesh.Mesh.from_yaml(
                to_yaml(entry("cservice", c_port)), service="bservice", telemetry=self.config
            )

            def b_view(request: Any) -> Any:
                seen.append(("b", "", request.headers.get("traceparent", "")))
                self.b_left.append(deadline_left())
                with pymesh_django.get_mesh().http_client(timeout=5) as client:
                    direct = client.get("http://cservice:9080/c/direct").json()
                    with wrap_executor(ThreadPoolExecutor(1)) as pool:
                        pooled = pool.submit(client.get, "http://cservice:9080/c/pool")
                        in_pool = pooled.result().json()
                return JsonResponse({"b": [direct, in_pool]})

            stack.enter_context(django_project(Urls(path("b", b_view)), self.b_mesh))
            b_srv = WsgiThread(WSGIHandler())
            stack.callback(b_srv.stop)

            self.a_mesh = pymesh.Mesh.from_yaml(
                to_yaml(entry("bservice", b_srv.port), self.a_route),
                service="aservice",
                telemetry=self.config,
            )
            a_mesh = self.a_mesh
            app = FastAPI()
            pymesh_fastapi.add_mesh(app, a_mesh)

            @app.get("/a")
            async def a(request: Request) -> dict[str, Any]:
                ctx = current_trace()
                seen.append(("a", "", ctx.traceparent() if ctx else ""))
                async with a_mesh.async_http_client(timeout=5) as client:
                    r = await client.get("http://bservice:9080/b")
                return {"a": r.json()}

            a_srv = stack.enter_context(a_mesh.server(app))
            yield f"http://127.0.0.1:{a_srv.port}"


def b_route(timeout: str | None) -> dict[str, Any]:
    """A's VirtualService for bservice: one named route, with `timeout`."""
    rule: dict[str, Any] = {"name": "to-b", "route": [route_to(host="bservice")]}
    if timeout:
        rule["timeout"] = timeout
    return virtual_service([rule], host="bservice")


def test_fastapi_django_fastapi_chain_is_one_connected_trace(exporter: Any) -> None:
    exp, provider = exporter
    chain = Chain(TelemetryConfig(sampling=1.0, tracer_provider=provider), b_route("3s"))
    with chain.serve() as a_url:
        r = httpx.get(
            f"{a_url}/a",
            headers={"x-pymesh-peer": "tester;default;tester;unknown;5000"},
            timeout=10,
        )
        assert r.status_code == 200
        assert r.json() == {"a": {"b": [{"c": "direct"}, {"c": "pool"}]}}
        b_metrics = istio_requests(chain.b_mesh)

    spans = list(exp.get_finished_spans())
    assert len({s.context.trace_id for s in spans}) == 1, "one connected trace"
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    # A server → A client → B server → 2 B clients → 2 C servers, nothing else
    assert (len(servers), len(clients), len(spans)) == (4, 3, 7)
    assert all(s.name == "GET" for s in spans)
    (a_server,) = [s for s in servers if s.parent is None]
    assert a_server.attributes is not None and a_server.attributes["url.path"] == "/a"
    (a_client,) = children(spans, a_server)
    assert a_client.kind == SpanKind.CLIENT
    (b_server,) = children(spans, a_client)
    assert b_server.kind == SpanKind.SERVER
    b_clients = children(spans, b_server)
    assert len(b_clients) == 2 and all(s.kind == SpanKind.CLIENT for s in b_clients)
    c_servers = [s for bc in b_clients for s in children(spans, bc)]
    assert len(c_servers) == 2 and all(s.kind == SpanKind.SERVER for s in c_servers)
    assert sorted(str((s.attributes or {})["url.path"]) for s in c_servers) == [
        "/c/direct",
        "/c/pool",
    ]
    for s in (a_server, b_server, *c_servers):
        assert (s.attributes or {})["http.response.status_code"] == 200
    # the Django server span: recorded by pymesh_django itself
    b_attrs = b_server.attributes or {}
    assert (b_attrs["http.request.method"], b_attrs["url.path"]) == ("GET", "/b")
    assert b_attrs["server.address"] == "bservice"
    # mesh attributes on the client spans
    a_attrs = a_client.attributes or {}
    assert "(to-b)" in str(a_attrs["pymesh.route"])  # the rule's name
    assert a_attrs["pymesh.destination.service"] == "bservice.default.svc.cluster.local"
    assert a_attrs["pymesh.attempts"] == 1
    assert a_attrs["pymesh.response_flags"] == "-"
    assert str(a_attrs["pymesh.endpoint"]).startswith("127.0.0.1:")
    assert "pymesh.snapshot_version" in a_attrs
    for bc in b_clients:
        attrs = bc.attributes or {}
        assert attrs["pymesh.destination.service"] == "cservice.default.svc.cluster.local"
        assert attrs["http.response.status_code"] == 200

    # Istio's metrics on B: the inbound request from A (reporter=destination), the calls to C
    inbound = [m for m in b_metrics if m["reporter"] == "destination"]
    assert len(inbound) == 1 and inbound[0]["value"] == 1
    assert inbound[0]["destination_service_name"] == "bservice"
    assert inbound[0]["source_workload"] == "aservice"
    assert inbound[0]["response_code"] == "200"
    outbound = [m for m in b_metrics if m["reporter"] == "source"]
    assert sum(m["value"] for m in outbound) == 2
    assert {m["destination_service_name"] for m in outbound} == {"cservice"}

    # the deadline came along: 5 s at A, less when B served it
    (left,) = chain.b_left
    assert left is not None and 0 < left <= 5


def test_a_route_timeout_is_the_deadline_downstream(exporter: Any) -> None:
    """A's route to B has a 3 s timeout and A was given no deadline: B still learns it has
    at most 3 s (written per attempt, after the route's timeouts apply)."""
    _, provider = exporter
    chain = Chain(TelemetryConfig(sampling=0.0, tracer_provider=provider), b_route("3s"))
    with chain.serve() as a_url:
        assert httpx.get(f"{a_url}/a", timeout=10).status_code == 200  # no deadline given
    (left,) = chain.b_left
    assert left is not None and 0 < left <= 3


def test_unsampled_chain_propagates_one_trace_id_and_makes_no_spans(exporter: Any) -> None:
    exp, provider = exporter
    chain = Chain(TelemetryConfig(sampling=0.0, tracer_provider=provider), b_route(None))
    with chain.serve() as a_url:
        assert httpx.get(f"{a_url}/a", timeout=10).status_code == 200
    got = {(hop, name): tp for hop, name, tp in chain.seen}
    assert set(got) == {("a", ""), ("b", ""), ("c", "direct"), ("c", "pool")}
    parsed = {key: tp.split("-") for key, tp in got.items()}
    assert all(len(p) == 4 for p in parsed.values()), got
    assert len({p[1] for p in parsed.values()}) == 1, "one trace id at every hop"
    assert {p[3] for p in parsed.values()} == {"00"}, "not sampled, at every hop"
    assert len({p[2] for p in parsed.values()}) == 4, "a new span id at every hop"
    assert exp.get_finished_spans() == ()
    # B (Django) recorded the unsampled request with A's trace id, as the access log shows
    assert chain.b_mesh.telemetry is not None
    inbound = [r for r in chain.b_mesh.explain(10) if r["direction"] == "inbound"]
    assert [r["trace_id"] for r in inbound] == [parsed[("a", "")][1]]


# -- pymesh_django's own recording ----------------------------------------------------------


def test_django_under_asgi_sync_and_async_views_continue_the_trace(exporter: Any) -> None:
    """Django's ASGI handler on plain uvicorn (the middleware decides): an async view and a
    sync view (run by `sync_to_async`, which copies the context to its thread) call C; an
    async streamed body is counted and finishes the record when sent."""
    from django.core.handlers.asgi import ASGIHandler
    from django.http import JsonResponse, StreamingHttpResponse
    from django.urls import path

    exp, provider = exporter
    config = TelemetryConfig(sampling=1.0, tracer_provider=provider)
    seen: list[tuple[str, ...]] = []
    c_mesh = pymesh.Mesh.from_yaml("", service="cservice", telemetry=config)
    with contextlib.ExitStack() as stack:
        stack.callback(c_mesh.close)
        c_port = stack.enter_context(uvicorn_thread(make_c(c_mesh, seen)))
        d_mesh = pymesh.Mesh.from_yaml(
            to_yaml(entry("cservice", c_port)), service="dservice", telemetry=config
        )

        async def async_view(request: Any) -> Any:
            async with pymesh_django.get_mesh().async_http_client(timeout=5) as client:
                r = await client.get("http://cservice:9080/c/from-async")
            return JsonResponse(r.json())

        def sync_view(request: Any) -> Any:
            with pymesh_django.get_mesh().http_client(timeout=5) as client:
                return JsonResponse(client.get("http://cservice:9080/c/from-sync").json())

        async def stream_view(request: Any) -> Any:
            async def body() -> AsyncIterator[bytes]:
                for part in (b"ab", b"cde"):
                    yield part

            return StreamingHttpResponse(body())

        urls = Urls(path("async", async_view), path("sync", sync_view), path("stream", stream_view))
        stack.enter_context(django_project(urls, d_mesh))
        d_port = stack.enter_context(uvicorn_thread(ASGIHandler()))

        caller = pymesh.Mesh.from_yaml(
            to_yaml(entry("dservice", d_port)), service="caller", telemetry=config
        )
        stack.callback(caller.close)
        with caller.http_client(timeout=10) as client:
            assert client.get("http://dservice:9080/async").json() == {"c": "from-async"}
            assert client.get("http://dservice:9080/sync").json() == {"c": "from-sync"}
            assert client.get("http://dservice:9080/stream").content == b"abcde"
        records = [r for r in d_mesh.explain(10) if r["direction"] == "inbound"]

    spans = list(exp.get_finished_spans())
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 3 and all(s.kind == SpanKind.CLIENT for s in roots)
    assert len({s.context.trace_id for s in spans}) == 3, "a trace per call, nothing loose"
    for root in roots:
        (d_server,) = children(spans, root)
        assert d_server.kind == SpanKind.SERVER
        path_ = (d_server.attributes or {})["url.path"]
        if path_ == "/stream":
            assert children(spans, d_server) == []
            continue
        (d_client,) = children(spans, d_server)
        assert d_client.kind == SpanKind.CLIENT
        (c_server,) = children(spans, d_client)
        assert c_server.kind == SpanKind.SERVER
        assert (c_server.attributes or {})["url.path"] == "/c/from" + str(path_).replace("/", "-")
    stream = [r for r in records if r["path"] == "/stream"]
    assert len(stream) == 1
    assert (stream[0]["response_code"], stream[0]["bytes_sent"]) == (200, 5)


def test_django_refusals_streams_and_outer_middleware_are_recorded_once(exporter: Any) -> None:
    """Under WSGI: a refusal is recorded with its flag and reason; a streamed body's bytes are
    counted; behind pymesh.wsgi.MeshMiddleware the outer middleware records the request and
    pymesh_django does not record it again."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpResponse, StreamingHttpResponse
    from django.urls import path, re_path

    exp, provider = exporter
    config = TelemetryConfig(sampling=1.0, tracer_provider=provider)
    mesh = pymesh.Mesh.from_yaml(to_yaml(DENY_PRIVATE), service="bservice", telemetry=config)

    def hello(request: Any) -> Any:
        return HttpResponse(b"hello")

    def stream(request: Any) -> Any:
        return StreamingHttpResponse(iter([b"ab", b"cde"]))

    urls = Urls(path("hello", hello), path("stream", stream), re_path(r"^private/", hello))
    with django_project(urls, mesh):
        handler = WSGIHandler()
        alone = WsgiThread(handler)
        outer = WsgiThread(WsgiMeshMiddleware(handler, mesh))
        try:
            base = f"http://127.0.0.1:{alone.port}"
            r = httpx.get(f"{base}/private/x", timeout=10)
            assert (r.status_code, r.text) == (403, "RBAC: access denied")
            assert httpx.get(f"{base}/stream", timeout=10).content == b"abcde"
            before = len(exp.get_finished_spans())
            r = httpx.get(f"http://127.0.0.1:{outer.port}/hello", timeout=10)
            assert (r.status_code, r.content) == (200, b"hello")
        finally:
            alone.stop()
            outer.stop()
        records = mesh.explain(10)
        metrics = istio_requests(mesh)

    refused, streamed, once = records
    assert (refused["response_code"], refused["response_flags"]) == (403, "RBAC")
    assert refused["reason"] and refused["bytes_sent"] == len(b"RBAC: access denied")
    assert (streamed["response_code"], streamed["bytes_sent"]) == (200, 5)
    assert (once["path"], once["response_code"]) == ("/hello", 200)
    spans = list(exp.get_finished_spans())
    assert len(spans) == before + 1, "the outer middleware's span only"
    (denied,) = [s for s in spans if (s.attributes or {}).get("url.path") == "/private/x"]
    assert (denied.attributes or {})["pymesh.response_flags"] == "RBAC"
    by_code = {(m["response_code"], m["response_flags"]): m["value"] for m in metrics}
    assert by_code == {("403", "RBAC"): 1, ("200", "-"): 2}
    assert {m["reporter"] for m in metrics} == {"destination"}


class ReplaceStreams:
    """A Django middleware that answers every streamed response with a response of its own
    (as an error page or a cache might): the streamed body below it is never sent."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        from django.http import HttpResponse

        response = self.get_response(request)
        if response.streaming:
            return HttpResponse(b"replaced", status=502)
        return response


def test_django_stream_replaced_above_the_middleware_is_still_recorded() -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import StreamingHttpResponse
    from django.urls import path

    mesh = pymesh.Mesh.from_yaml("", service="bservice", telemetry=TelemetryConfig())

    def stream(request: Any) -> Any:
        return StreamingHttpResponse(iter([b"ab", b"cde"]))

    outer = (f"{__name__}.ReplaceStreams",)
    with django_project(Urls(path("stream", stream)), mesh, outer):
        server = WsgiThread(WSGIHandler())
        try:
            r = httpx.get(f"http://127.0.0.1:{server.port}/stream", timeout=10)
            assert (r.status_code, r.content) == (502, b"replaced")
        finally:
            server.stop()
        gc.collect()
        (record,) = mesh.explain(10)
        metrics = istio_requests(mesh)
    assert record["path"] == "/stream" and record["direction"] == "inbound"
    assert "replaced before it was sent" in record["reason"]
    assert sum(m["value"] for m in metrics) == 1
