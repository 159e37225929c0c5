"""Telemetry end to end: Istio's metrics scraped over HTTP from running meshed services (both
reporters), and an access-log line with the right Envoy flag and a human reason for every
failure cause (NR, UH, UT, URX/UF, UC, UO, FI, DI, DC, RBAC 403)."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pymesh
from pymesh.telemetry import TelemetryConfig
from tests.e2e.meshkit import (
    URL,
    ServerThread,
    destination_rule,
    endpoint,
    route_to,
    service_entry,
    to_yaml,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def reviews_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 "reviews!" except 404 on /missing."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"reviews!"})


class Lines:
    """An access-log sink: JSON lines, parsed."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def __call__(self, line: str) -> None:
        self.lines.append(json.loads(line))


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    running: list[Any] = []
    yield running
    for s in running:
        s.stop()


def scrape(url: str) -> dict[str, list[Any]]:
    """name → samples of every metric family at `url`."""
    text = httpx.get(url, timeout=5).text
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def requests_total(metrics: dict[str, list[Any]], **labels: str) -> float:
    return sum(
        s.value
        for s in metrics["istio_requests"]
        if s.name == "istio_requests_total" and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_on_both_reporters_match_the_traffic(servers: list[Any]) -> None:
    server_log = Lines()
    reviews = pymesh.Mesh.from_yaml(
        "",
        service="reviews",
        labels={"app": "reviews", "version": "v1"},
        telemetry=TelemetryConfig(access_log=server_log),
    )
    srv = reviews.server(reviews_app).start()
    servers.append(srv)
    client_log = Lines()
    frontend = pymesh.Mesh.from_yaml(
        to_yaml(service_entry([endpoint(srv.port, "v1")])),
        service="frontend",
        labels={"app": "frontend", "version": "v2"},
        telemetry=TelemetryConfig(access_log=client_log),
    )
    assert frontend.telemetry is not None
    metrics_srv = frontend.start_metrics_server(0)
    try:
        async with frontend.async_http_client(timeout=5) as c:
            for _ in range(3):
                r = await c.get(URL + "ok", headers={"x-request-id": "req-1"})
                assert r.status_code == 200
            r = await c.post(URL + "missing", content=b"12345")
            assert r.status_code == 404
        client = scrape(metrics_srv.url)
        # the reviews side, through its ASGI metrics app mounted on another server
        t = ServerThread()
        t.start(reviews.metrics_app())
        port = t.wait_started()
        try:
            server = scrape(f"http://127.0.0.1:{port}/stats/prometheus")
            assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        finally:
            t.request_stop()
            t.join()
    finally:
        metrics_srv.stop()
        await frontend.aclose()

    common = {
        "source_workload": "frontend",
        "source_workload_namespace": "default",
        "source_app": "frontend",
        "source_version": "v2",
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "request_protocol": "http",
        "grpc_response_status": "",
        "response_flags": "-",
    }
    assert requests_total(client, reporter="source", response_code="200", **common) == 3
    assert requests_total(client, reporter="source", response_code="404", **common) == 1
    src = next(s for s in client["istio_requests"] if s.labels["response_code"] == "200")
    assert src.labels["destination_app"] == "reviews"
    assert src.labels["destination_version"] == "v1"
    assert src.labels["connection_security_policy"] == "none"
    assert set(src.labels) == {
        "reporter",
        "source_workload",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "destination_workload",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
        "request_protocol",
        "response_code",
        "grpc_response_status",
        "response_flags",
        "connection_security_policy",
    }
    # the destination reporter sees the same calls, and who made them (peer metadata)
    assert requests_total(server, reporter="destination", response_code="200", **common) == 3
    assert requests_total(server, reporter="destination", response_code="404", **common) == 1
    # histograms: Istio's buckets, counts and bytes
    les = {
        s.labels["le"]
        for s in client["istio_request_duration_milliseconds"]
        if s.name.endswith("_bucket")
    }
    assert {"0.5", "1.0", "25.0", "3.6e+06", "+Inf"} <= les
    req_bytes = [
        s
        for s in client["istio_request_bytes"]
        if s.name == "istio_request_bytes_sum" and s.labels["response_code"] == "404"
    ]
    assert req_bytes[0].value == 5
    resp_bytes = [
        s
        for s in server["istio_response_bytes"]
        if s.name == "istio_response_bytes_sum" and s.labels["response_code"] == "200"
    ]
    assert resp_bytes[0].value == 3 * len(b"reviews!")
    # TCP metrics are defined (the proxy feeds them); mesh health is there
    assert "istio_tcp_sent_bytes" in client
    assert "istio_tcp_connections_opened" in client
    assert client["pymesh_endpoints"][0].value == 1
    assert "pymesh_snapshot_info" in client
    # access log lines on both sides, with the request id
    assert [line["response_code"] for line in client_log.lines] == [200, 200, 200, 404]
    assert client_log.lines[0]["x_request_id"] == "req-1"
    assert client_log.lines[0]["upstream_host"] == f"127.0.0.1:{srv.port}"
    assert client_log.lines[0]["upstream_cluster"].startswith("outbound|9080||reviews")
    assert server_log.lines[0]["x_request_id"] == "req-1"
    assert server_log.lines[0]["direction"] == "inbound"
    assert client_log.lines[0]["trace_id"] == server_log.lines[0]["trace_id"]
    assert [x["response_code"] for x in frontend.explain(2)] == [200, 404]


# --------------------------------------------------------------------------------------------
# failure causes


@pytest.fixture
def sink() -> Lines:
    return Lines()


def meshed(sink: Lines, *resources: dict[str, Any]) -> pymesh.Mesh:
    return pymesh.Mesh.from_yaml(
        to_yaml(*resources),
        service="frontend",
        rng=random.Random(3),
        telemetry=TelemetryConfig(access_log=sink, metrics=True),
    )


async def call(mesh: pymesh.Mesh, url: str = URL) -> httpx.Response | Exception:
    async with mesh.async_http_client(timeout=5) as c:
        try:
            return await c.get(url)
        except Exception as exc:
            return exc


async def test_no_route_logs_nr(sink: Lines) -> None:
    mesh = meshed(
        sink,
        service_entry([endpoint(1, "v1")]),
        virtual_service([{"match": [{"uri": {"prefix": "/only"}}], "route": [route_to()]}]),
    )
    await call(mesh, URL + "x")
    (line,) = sink.lines
    assert line["response_flags"] == "NR"
    assert line["response_code"] == 0
    assert "no route for" in line["reason"] and "/x" in line["reason"]


async def test_retries_exhausted_logs_urx_uf(sink: Lines, refusing_port: Any) -> None:
    mesh = meshed(sink, service_entry([endpoint(refusing_port(), "v1")]))
    await call(mesh)
    (line,) = sink.lines
    assert set(line["response_flags"].split(",")) == {"URX", "UF"}
    assert "retries exhausted after 3 attempts" in line["reason"]
    assert len(line["decision"]["attempts"]) == 3
    assert mesh.telemetry is not None and mesh.telemetry.metrics is not None
    text = mesh.telemetry.metrics_text().decode()
    assert 'pymesh_retries_exhausted_total{destination_service="reviews' in text


async def test_no_healthy_endpoint_logs_uh(sink: Lines, backends: Any) -> None:
    (b,) = backends("v1")
    b.always(503)
    outlier = {"consecutive5xxErrors": 1, "interval": "10s", "baseEjectionTime": "30s"}
    outlier["maxEjectionPercent"] = 100  # type: ignore[assignment]
    mesh = meshed(sink, service_entry([endpoint(b)]), destination_rule(outlier=outlier))
    await call(mesh)
    await call(mesh)
    line = sink.lines[-1]
    assert line["response_flags"] == "UH"
    assert "no healthy endpoint" in line["reason"] and "1 of 1 ejected" in line["reason"]
    assert mesh.telemetry is not None
    assert "pymesh_ejected_endpoints" in mesh.telemetry.metrics_text().decode()


async def test_timeout_logs_ut(sink: Lines, backends: Any) -> None:
    (b,) = backends("v1")
    b.slow_headers(2)
    mesh = meshed(
        sink,
        service_entry([endpoint(b)]),
        virtual_service([{"route": [route_to()], "timeout": "0.2s"}]),
    )
    await call(mesh)
    (line,) = sink.lines
    assert line["response_flags"] == "UT"
    assert "timed out after 1 attempt (timeout 0.2s" in line["reason"]


async def test_fault_abort_logs_fi(sink: Lines, backends: Any) -> None:
    (b,) = backends("v1")
    fault = {"abort": {"httpStatus": 503, "percentage": {"value": 100}}}
    mesh = meshed(
        sink,
        service_entry([endpoint(b)]),
        virtual_service([{"route": [route_to()], "fault": fault}]),
    )
    r = await call(mesh)
    assert isinstance(r, httpx.Response) and r.status_code == 503
    (line,) = sink.lines
    assert line["response_flags"] == "FI"
    assert line["response_code"] == 503


async def test_circuit_open_logs_uo(sink: Lines, backends: Any) -> None:
    (b,) = backends("v1")
    b.slow_headers(0.5)
    dr = destination_rule()
    dr["spec"]["trafficPolicy"] = {"connectionPool": {"http": {"http2MaxRequests": 1}}}
    mesh = meshed(sink, service_entry([endpoint(b)]), dr)
    async with mesh.async_http_client(timeout=5) as c:
        results: list[Any] = []

        async def one() -> None:
            try:
                results.append(await c.get(URL))
            except Exception as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            await anyio.sleep(0.1)
            tg.start_soon(one)
    refused = [line for line in sink.lines if line["response_flags"] == "UO"]
    assert len(refused) == 1
    assert refused[0]["reason"].startswith("circuit open: reviews http2MaxRequests 1 reached")
    assert mesh.telemetry is not None
    assert "pymesh_circuit_breaker_overflow_total{" in mesh.telemetry.metrics_text().decode()


DENY_ADMIN = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
"""


async def test_rbac_denial_logs_the_policy(sink: Lines, servers: list[Any]) -> None:
    reviews = pymesh.Mesh.from_yaml(
        DENY_ADMIN, service="reviews", telemetry=TelemetryConfig(access_log=sink)
    )
    srv = reviews.server(reviews_app).start()
    servers.append(srv)
    r = httpx.get(f"http://127.0.0.1:{srv.port}/admin")
    assert r.status_code == 403
    (line,) = sink.lines
    assert line["response_code"] == 403
    assert line["response_flags"] == "RBAC"
    assert "default/deny-admin" in line["reason"]
    assert reviews.explain(1)[0]["reason"] == line["reason"]


def test_telemetry_off_by_default_does_nothing() -> None:
    mesh = pymesh.Mesh.from_yaml("", service="x")
    assert mesh.telemetry is None
    assert mesh.explain() == []
    with pytest.raises(RuntimeError, match="telemetry is off"):
        mesh.metrics_app()


async def test_fault_delay_logs_di(sink: Lines, backends: Any) -> None:
    (b,) = backends("v1")
    fault = {"delay": {"fixedDelay": "0.05s", "percentage": {"value": 100}}}
    mesh = meshed(
        sink,
        service_entry([endpoint(b)]),
        virtual_service([{"route": [route_to()], "fault": fault}]),
    )
    r = await call(mesh)
    assert isinstance(r, httpx.Response) and r.status_code == 200
    (line,) = sink.lines
    assert line["response_flags"] == "DI"
    assert line["response_code"] == 200
    assert line["duration"] >= 50


@pytest.fixture
def hanging_up() -> Iterator[int]:
    """A loopback server that reads a request and closes the connection without answering."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    listener.close()


async def test_upstream_hang_up_logs_uc(sink: Lines, hanging_up: int) -> None:
    mesh = meshed(sink, service_entry([endpoint(hanging_up, "v1")]))
    r = await call(mesh)
    assert isinstance(r, Exception)
    line = sink.lines[-1]
    assert line["response_flags"] == "UC"  # a reset is not retried by default (Istio's retryOn)
    assert line["response_code"] == 0
    assert "upstream reset on 1 attempt" in line["reason"]
    assert f"127.0.0.1:{hanging_up} → reset" in line["reason"]


async def test_client_going_away_logs_dc(sink: Lines, servers: list[Any]) -> None:
    async def waits_for_the_client(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive())["type"] != "http.disconnect":
            pass  # the request body, then nothing until the client goes away

    reviews = pymesh.Mesh.from_yaml(
        "", service="reviews", telemetry=TelemetryConfig(access_log=sink)
    )
    srv = reviews.server(waits_for_the_client).start()
    servers.append(srv)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nhost: reviews\r\n\r\n")
        time.sleep(0.2)
    for _ in range(100):
        if sink.lines:
            break
        await anyio.sleep(0.05)
    (line,) = sink.lines
    assert line["response_flags"] == "DC"
    assert line["response_code"] == 0
    assert line["reason"] == "the client disconnected before the response was complete"
