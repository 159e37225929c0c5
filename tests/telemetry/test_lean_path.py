"""The lean path of client calls (access log off): no record object while the call runs, a
small entry in the explain ring when it ends, counted without a lock; a sampled call's span
started and ended on the same path. What a user sees must not change: `explain`, the metrics,
the spans and the headers on the wire are the same as on the full path (access-logged calls),
for successes, failures and local replies, on the sync and the async client."""

from __future__ import annotations

import random
import re
import time
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.telemetry import TelemetryConfig
from pymesh.telemetry.hub import CallRecord
from tests.e2e.meshkit import (
    URL,
    Reply,
    endpoint,
    in_flight,
    route_to,
    service_entry,
    to_yaml,
    virtual_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(60)]
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-00$")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def mesh_for(*resources: dict[str, Any], **telemetry: Any) -> pymesh.Mesh:
    return pymesh.Mesh.from_yaml(
        to_yaml(*resources),
        service="frontend",
        rng=random.Random(5),
        telemetry=TelemetryConfig(sampling=0.0, **telemetry),
    )


def sent(backend: Any, n: int, name: str) -> list[str]:
    """The values of header `name` in the backend's n-th request (0-based)."""
    return [v for k, v in backend.headers[n] if k == name]


def lean_entries(mesh: pymesh.Mesh) -> int:
    """How many explain-ring entries came from the lean path (not a `CallRecord`)."""
    assert mesh.telemetry is not None
    return sum(not isinstance(r, CallRecord) for r in mesh.telemetry.recent)


def test_sync_unsampled_calls_are_explained_from_the_lean_path(backends: Any) -> None:
    (b,) = backends("v1")
    mesh = mesh_for(service_entry([endpoint(b)]))
    with mesh.http_client(timeout=5) as c:
        assert c.get(URL + "one").status_code == 200
        assert c.post(URL + "two?x=1", content=b"12345").status_code == 200
    assert lean_entries(mesh) == 2
    first, second = mesh.explain(2)
    # the trace the server saw is the trace explain names; a fresh span id per call
    tp = [TRACEPARENT.match(sent(b, i, "traceparent")[0]) for i in range(2)]
    assert all(tp)
    assert first["trace_id"] == tp[0].group(1)  # type: ignore[union-attr]
    assert second["trace_id"] == tp[1].group(1)  # type: ignore[union-attr]
    assert first["trace_id"] != second["trace_id"]
    assert sent(b, 0, "x-pymesh-peer") == ["frontend;default;frontend;unknown"]
    assert (first["method"], first["path"], first["response_code"]) == ("GET", "/one", 200)
    assert (second["method"], second["path"]) == ("POST", "/two")
    assert second["bytes_received"] == 5 and second["bytes_sent"] == len(b"v1")
    assert first["response_flags"] == "-" and first["reason"] is None
    assert first["upstream_host"] == b.label
    assert first["upstream_cluster"].startswith("outbound|9080||reviews")
    assert first["route_name"] == "default"
    assert first["direction"] == "outbound" and first["authority"] == "reviews:9080"
    assert 0 < first["duration"] < 5000
    assert first["decision"]["attempts"][0]["status"] == 200
    assert first["start_time"] <= second["start_time"]


async def test_async_calls_count_the_same_on_either_path(backends: Any, exporter: Any) -> None:
    """The same traffic on the lean path (unsampled, or sampled into an SDK) and on the full
    path (access-logged: full records): equal metrics, and one span per sampled call."""
    exp, provider = exporter
    (b,) = backends("v1")
    b.script = lambda n: Reply(404 if n % 3 == 0 else 200)
    texts = []
    configs = {
        "unsampled": TelemetryConfig(sampling=0.0),
        "sampled": TelemetryConfig(sampling=1.0, tracer_provider=provider),
        "logged": TelemetryConfig(sampling=0.0, access_log=lambda line: None),
    }
    for name, config in configs.items():
        mesh = pymesh.Mesh.from_yaml(
            to_yaml(service_entry([endpoint(b)])), service="frontend", telemetry=config
        )
        async with mesh.async_http_client(timeout=5) as c:
            for i in range(9):
                r = await c.post(URL + "x", content=b"abc" * i)
                assert r.status_code in (200, 404)
        assert lean_entries(mesh) == (0 if name == "logged" else 9)
        assert mesh.telemetry is not None
        text = mesh.telemetry.metrics_text().decode()
        # durations differ run to run: keep the counts, the bytes and the bucket structure
        kept = [
            line
            for line in text.splitlines()
            if line.startswith(("istio_requests_total", "istio_request_bytes", "istio_response"))
        ]
        texts.append(kept)
        b._count = 0
    lean, sampled, full = texts
    assert lean == sampled == full
    assert any('response_code="404"' in line and line.endswith(" 3.0") for line in lean)
    spans = exp.get_finished_spans()
    assert len(spans) == 9 and all(s.kind.name == "CLIENT" for s in spans)
    codes = sorted((s.attributes or {})["http.response.status_code"] for s in spans)
    assert codes == [200] * 6 + [404] * 3
    assert {(s.attributes or {})["pymesh.destination.service"] for s in spans} == {
        "reviews.default.svc.cluster.local"
    }
    assert any(line.startswith("istio_request_bytes_sum") and "200" in line for line in lean)


async def test_a_failed_unsampled_call_is_explained_with_its_reason(refusing_port: Any) -> None:
    mesh = mesh_for(service_entry([endpoint(refusing_port(), "v1")]))
    async with mesh.async_http_client(timeout=5) as c:
        with pytest.raises(httpx.TransportError):
            await c.get(URL + "x")
    (entry,) = mesh.explain(1)
    assert set(entry["response_flags"].split(",")) == {"URX", "UF"}
    assert "retries exhausted after 3 attempts" in entry["reason"]
    assert entry["response_code"] == 0 and len(entry["trace_id"]) == 32
    assert mesh.telemetry is not None
    text = mesh.telemetry.metrics_text().decode()
    assert re.search(r'istio_requests_total\{[^}]*response_code="0"[^}]*\} 1\.0', text)


def test_a_local_reply_is_explained_and_counted(backends: Any) -> None:
    (b,) = backends("v1")
    fault = {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}
    mesh = mesh_for(
        service_entry([endpoint(b)]),
        virtual_service([{"route": [route_to()], "fault": fault}]),
    )
    with mesh.http_client(timeout=5) as c:
        r = c.get(URL)
        assert r.status_code == 418
    (entry,) = mesh.explain(1)
    assert (entry["response_code"], entry["response_flags"]) == (418, "FI")
    assert entry["bytes_sent"] == len(r.content)
    assert mesh.telemetry is not None
    assert 'response_flags="FI"' in mesh.telemetry.metrics_text().decode()
    assert b.count == 0


def test_a_request_id_or_trace_header_of_the_callers_own_takes_the_full_path(
    backends: Any,
) -> None:
    """The app's x-request-id shows in `explain`; its own traceparent and mesh header are
    replaced by the mesh's (one of each on the wire)."""
    (b,) = backends("v1")
    mesh = mesh_for(service_entry([endpoint(b)]))
    theirs = "00-11111111111111111111111111111111-2222222222222222-01"
    with mesh.http_client(timeout=5) as c:
        c.get(URL, headers={"x-request-id": "abc-1"})
        c.get(URL, headers={"traceparent": theirs, "x-pymesh-peer": "forged;x;y;z;1"})
    first, second = mesh.explain(2)
    assert first["x_request_id"] == "abc-1"
    assert lean_entries(mesh) == 0
    (tp,) = sent(b, 1, "traceparent")
    assert tp != theirs and TRACEPARENT.match(tp)
    assert sent(b, 1, "x-pymesh-peer") == ["frontend;default;frontend;unknown"]
    assert second["trace_id"] == tp[3:35]


def test_a_mirror_carries_the_callers_trace(backends: Any) -> None:
    main, shadow = backends("v1", "shadow")
    mesh = mesh_for(
        service_entry([endpoint(main)]),
        service_entry([endpoint(shadow)], host="shadow"),
        virtual_service([{"route": [route_to()], "mirror": {"host": "shadow"}}]),
    )
    with mesh.http_client(timeout=5) as c:
        assert c.get(URL).status_code == 200
        # the mirror is sent in the background: the client stays open until it is done
        deadline = time.monotonic() + 5
        while (not shadow.count or in_flight(mesh)) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert shadow.count == 1
    assert sent(main, 0, "traceparent") == sent(shadow, 0, "traceparent")
    assert sent(shadow, 0, "x-pymesh-peer")[0].startswith("frontend;default;frontend;unknown")


def test_series_caches_start_over_when_full_and_counts_stay_right(
    backends: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Endpoints come and go: a full series cache starts over rather than stop caching, and
    every call is still counted under its own endpoint's labels."""
    from pymesh.telemetry import hub

    monkeypatch.setattr(hub, "_MAX_CACHED", 1)
    v1, v2 = backends("v1", "v2")
    mesh = mesh_for(service_entry([endpoint(v1), endpoint(v2)]))
    with mesh.http_client(timeout=5) as c:
        for _ in range(10):
            assert c.get(URL).status_code == 200
    assert mesh.telemetry is not None
    tel = mesh.telemetry
    assert len(tel._out_series) <= 1
    text = tel.metrics_text().decode()
    counts = {
        version: sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("istio_requests_total")
            and f'destination_version="{version}"' in line
        )
        for version in ("v1", "v2")
    }
    assert counts["v1"] + counts["v2"] == 10
    assert counts == {"v1": v1.count, "v2": v2.count}


async def test_a_sampled_call_that_fails_ends_its_span_with_the_reason(
    refusing_port: Any, exporter: Any
) -> None:
    exp, provider = exporter
    mesh = pymesh.Mesh.from_yaml(
        to_yaml(service_entry([endpoint(refusing_port(), "v1")])),
        service="frontend",
        telemetry=TelemetryConfig(sampling=1.0, tracer_provider=provider),
    )
    async with mesh.async_http_client(timeout=5) as c:
        with pytest.raises(httpx.TransportError):
            await c.get(URL + "x")
    (span,) = exp.get_finished_spans()
    attrs = span.attributes or {}
    assert span.kind.name == "CLIENT" and span.status.status_code.name == "ERROR"
    assert "retries exhausted" in (span.status.description or "")
    assert set(str(attrs["pymesh.response_flags"]).split(",")) == {"URX", "UF"}
    (entry,) = mesh.explain(1)
    assert entry["trace_id"] == f"{span.context.trace_id:032x}"
