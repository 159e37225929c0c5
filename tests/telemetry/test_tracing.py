"""Tracing end to end: connected span trees across real meshed services (ASGI → meshed httpx →
WSGI → meshed httpx → ASGI) with no tracing code in the apps, across asyncio tasks and
threads (`wrap_executor`); the deadline travels along; B3 interop with plain OpenTelemetry."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import pymesh
import pymesh.telemetry
from pymesh.telemetry import TelemetryConfig, current_trace, wrap_executor
from pymesh.wsgi import MeshMiddleware as WsgiMiddleware
from tests.e2e.meshkit import WsgiThread, endpoint, service_entry, to_yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def entry(host: str, port: int) -> dict[str, Any]:
    se = service_entry([endpoint(port, "v1")], host=host)
    se["spec"]["endpoints"][0]["labels"] = {"app": host}
    return se


def test_connected_trace_across_asgi_wsgi_asgi_tasks_and_threads(exporter: Any) -> None:
    exp, provider = exporter
    config = TelemetryConfig(sampling=1.0, tracer_provider=provider)
    seen: dict[str, Any] = {}

    # C: a plain ASGI app behind mesh.server
    async def c_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        ctx = current_trace()
        seen["c_deadline_left"] = ctx.deadline - __import__("time").monotonic() if ctx else None
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"c"})

    c_mesh = pymesh.Mesh.from_yaml("", service="cservice", telemetry=config)
    c_srv = c_mesh.server(c_app).start()

    # B: a WSGI (Django-like, sync) app calling C with the sync meshed client
    b_mesh = pymesh.Mesh.from_yaml(
        to_yaml(entry("cservice", c_srv.port)), service="bservice", telemetry=config
    )
    b_client = b_mesh.http_client(timeout=5)

    def b_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        r = b_client.get("http://cservice:9080/c")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"b+" + r.content]

    b_srv = WsgiThread(WsgiMiddleware(b_app, b_mesh))

    # A: an ASGI app calling B in the request, in a task, and in a wrapped thread pool
    a_mesh = pymesh.Mesh.from_yaml(
        to_yaml(entry("bservice", b_srv.port)), service="aservice", telemetry=config
    )
    pool = wrap_executor(ThreadPoolExecutor(2))
    sync_a = a_mesh.http_client(timeout=5)

    async def a_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        async with a_mesh.async_http_client(timeout=5) as client:
            direct = await client.get("http://bservice:9080/direct")
            in_task = await asyncio.create_task(client.get("http://bservice:9080/task"))
        loop = asyncio.get_running_loop()
        in_thread = await loop.run_in_executor(
            pool, lambda: sync_a.get("http://bservice:9080/thread")
        )
        body = b"|".join(r.content for r in (direct, in_task, in_thread))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    a_srv = a_mesh.server(a_app).start()
    try:
        r = httpx.get(
            f"http://127.0.0.1:{a_srv.port}/start",
            headers={"x-pymesh-peer": "tester;default;tester;unknown;5000"},
            timeout=10,
        )
        assert r.status_code == 200
        assert r.content == b"b+c|b+c|b+c"
    finally:
        a_srv.stop()
        b_srv.stop()
        c_srv.stop()
        b_client.close()
        sync_a.close()
        pool.shutdown()

    spans = exp.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1, "one connected trace"
    by_id = {s.context.span_id: s for s in spans}
    root = [s for s in spans if s.parent is None]
    assert len(root) == 1 and root[0].kind == SpanKind.SERVER
    assert root[0].attributes["url.path"] == "/start"  # type: ignore[index]
    for s in spans:
        if s.parent is not None:
            assert s.parent.span_id in by_id, f"{s.name} has a dangling parent"
    # shape: A server → 3 A clients → 3 B servers → 3 B clients → 3 C servers
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(servers) == 7 and len(clients) == 6
    a_clients = [s for s in clients if s.parent and s.parent.span_id == root[0].context.span_id]
    assert len(a_clients) == 3
    for ac in a_clients:
        (b_server,) = [s for s in servers if s.parent and s.parent.span_id == ac.context.span_id]
        (b_client_span,) = [
            s for s in clients if s.parent and s.parent.span_id == b_server.context.span_id
        ]
        (c_server,) = [
            s for s in servers if s.parent and s.parent.span_id == b_client_span.context.span_id
        ]
        assert c_server.attributes["http.response.status_code"] == 200  # type: ignore[index]
    attrs = a_clients[0].attributes or {}
    assert attrs["pymesh.destination.service"] == "bservice.default.svc.cluster.local"
    assert attrs["pymesh.attempts"] == 1
    assert attrs["pymesh.response_flags"] == "-"
    assert str(attrs["pymesh.endpoint"]).startswith("127.0.0.1:")
    # OpenTelemetry's HTTP client attributes, as the caller addressed the service
    assert attrs["http.request.method"] == a_clients[0].name == "GET"
    assert attrs["server.address"] == "bservice" and attrs["server.port"] == 9080
    assert str(attrs["url.full"]).startswith("http://bservice:9080/")
    assert attrs["network.protocol.version"] == "1.1"
    # the deadline came along: 5 s at A, less by the time it reached C
    assert seen["c_deadline_left"] is not None and 0 < seen["c_deadline_left"] < 5


def test_unsampled_calls_make_no_spans_but_propagate(exporter: Any) -> None:
    exp, provider = exporter
    config = TelemetryConfig(sampling=0.0, tracer_provider=provider)
    got: dict[str, str] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        ctx = current_trace()
        assert ctx is not None
        got["trace"] = ctx.trace_id_hex
        got["sampled"] = str(ctx.sampled)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server_mesh = pymesh.Mesh.from_yaml("", service="s", telemetry=config)
    srv = server_mesh.server(app).start()
    try:
        client_mesh = pymesh.Mesh.from_yaml(
            to_yaml(entry("s", srv.port)), service="c", telemetry=config
        )
        with client_mesh.http_client() as c:
            c.get("http://s:9080/")
        assert client_mesh.explain(1)[0]["trace_id"] == got["trace"]
        assert got["sampled"] == "False"
        # a caller's sampled flag is followed (parent-based)
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        httpx.get(f"http://127.0.0.1:{srv.port}/", headers={"traceparent": tp})
        assert got == {"trace": "0af7651916cd43dd8448eb211c80319c", "sampled": "True"}
    finally:
        srv.stop()
    spans = exp.get_finished_spans()
    assert len(spans) == 1 and spans[0].parent is not None
    assert spans[0].parent.span_id == 0xB7AD6B7169203331


def test_b3_interop_with_plain_opentelemetry(exporter: Any) -> None:
    """A meshed client speaking B3 (multi) calls a service instrumented by plain OTel
    (opentelemetry-instrumentation-asgi with the B3 propagator): one trace; and a plain httpx
    client instrumented by opentelemetry-instrumentation-httpx (B3 single propagator) calls a
    meshed server reading B3 single: its span continues the caller's. OTel's global
    propagator is set for each half and restored after it."""
    from opentelemetry import propagate
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat

    from tests.e2e.meshkit import ServerThread

    exp, provider = exporter

    async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(B3MultiFormat())
    t = ServerThread()
    t.start(OpenTelemetryMiddleware(plain, tracer_provider=provider))
    port = t.wait_started()
    try:
        mesh = pymesh.Mesh.from_yaml(
            to_yaml(entry("plain", port)),
            service="c",
            telemetry=TelemetryConfig(
                sampling=1.0, tracer_provider=provider, propagation=("b3multi",)
            ),
        )
        with mesh.http_client() as c:
            assert c.get("http://plain:9080/x").text == "plain"
    finally:
        propagate.set_global_textmap(saved)
        t.request_stop()
        t.join()
    spans = exp.get_finished_spans()
    (client,) = [s for s in spans if s.kind == SpanKind.CLIENT and s.name == "GET"]
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server and server[0].context.trace_id == client.context.trace_id
    assert server[0].parent is not None
    assert server[0].parent.span_id == client.context.span_id
    exp.clear()

    # the other way: a plain httpx client instrumented by opentelemetry-instrumentation-httpx,
    # with the B3 single propagator, calls a meshed server that reads B3 single
    server_mesh = pymesh.Mesh.from_yaml(
        "",
        service="s",
        telemetry=TelemetryConfig(sampling=0.0, tracer_provider=provider, propagation=("b3",)),
    )
    srv = server_mesh.server(plain).start()
    propagate.set_global_textmap(B3SingleFormat())
    plain_client = httpx.Client(timeout=10)
    HTTPXClientInstrumentor().instrument_client(
        plain_client, tracer_provider=provider, meter_provider=NoOpMeterProvider()
    )
    try:
        r = plain_client.get(f"http://127.0.0.1:{srv.port}/b3")
        assert r.text == "plain"
        sent = r.request.headers.get("b3")
    finally:
        HTTPXClientInstrumentor().uninstrument_client(plain_client)
        plain_client.close()
        propagate.set_global_textmap(saved)
        srv.stop()
        server_mesh.close()
    assert sent is not None and "traceparent" not in r.request.headers  # B3 single only
    spans = exp.get_finished_spans()
    (caller,) = [s for s in spans if s.kind == SpanKind.CLIENT]  # the instrumentation's span
    (meshed,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert meshed.context.trace_id == caller.context.trace_id
    assert meshed.parent is not None
    assert meshed.parent.span_id == caller.context.span_id
    assert (meshed.attributes or {})["url.path"] == "/b3"


def test_configure_sets_the_default_for_new_meshes() -> None:
    exp = InMemorySpanExporter()
    try:
        config = pymesh.telemetry.configure(
            exporter=exp, sampling=1.0, batch=False, set_global=False
        )
        mesh = pymesh.Mesh.from_yaml("", service="x")
        assert mesh.telemetry is not None and mesh.telemetry.config is config
        assert pymesh.Mesh.from_yaml("", service="y", telemetry=False).telemetry is None
    finally:
        pymesh.telemetry.reset()
    assert pymesh.Mesh.from_yaml("", service="z").telemetry is None


def test_run_in_executor_with_the_default_executor_continues_the_trace() -> None:
    """`Mesh.server`'s event loop has a context-copying default executor: work a handler
    hands to `loop.run_in_executor(None, ...)` sees the request's trace, no wrapping needed."""
    import asyncio

    from pymesh.telemetry import current_trace

    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        loop = asyncio.get_running_loop()
        seen.append(await loop.run_in_executor(None, current_trace))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mesh = pymesh.Mesh.from_yaml("", service="s", telemetry=TelemetryConfig(sampling=0.0))
    srv = mesh.server(app).start()
    try:
        caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        r = httpx.get(f"http://127.0.0.1:{srv.port}/", headers={"traceparent": caller})
        assert r.status_code == 200
    finally:
        srv.stop()
    (ctx,) = seen
    assert ctx is not None and ctx.trace_id_hex == "0af7651916cd43dd8448eb211c80319c"
    assert ctx.parent_id == 0xB7AD6B7169203331
