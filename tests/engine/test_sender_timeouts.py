"""The httpcore sender applies DestinationRule `connectionPool.tcp.connectTimeout` to the
connect timeout it hands httpcore (sync client and TLS attempts), never loosening httpx's."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from pymesh._sync.transport import EndpointSender
from pymesh.call import Call, Decision
from pymesh.config import load_text
from pymesh.runtime import Runtime
from pymesh.snapshot import compile_snapshot

YAML = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 8001}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 250ms}}
"""


class Stop(Exception):
    pass


class CapturingPool:
    def __init__(self) -> None:
        self.extensions: dict[str, Any] = {}

    def handle_request(self, request: Any) -> Any:
        self.extensions = request.extensions
        raise Stop


@pytest.mark.parametrize(("client_connect", "expected"), [(5.0, 0.25), (0.1, 0.1)])
def test_connect_timeout_from_destination_rule(client_connect: float, expected: float) -> None:
    snap = compile_snapshot(load_text(YAML), "default")
    runtime = Runtime(snap, rng=random.Random(1))
    cluster = next(iter(c for c in runtime.clusters.values() if c.spec.subset is None))
    pool = CapturingPool()
    sender = EndpointSender(pool)  # type: ignore[arg-type]
    request = httpx.Request(
        "GET",
        "http://reviews:9080/",
        extensions={"timeout": httpx.Timeout(5.0, connect=client_connect).as_dict()},
    )
    host = snap.resolve("reviews")
    assert host is not None
    call = Call(
        direction="outbound",
        protocol="http",
        scheme="http",
        host=host,
        port=9080,
        authority="reviews:9080",
        method="GET",
        target=b"/",
        headers=request.headers,
        native=request,
        replayable=True,
        decision=Decision(snap.version, host),
    )
    call.cluster = cluster
    call.endpoint = cluster.endpoints[0]
    call.send_target = b"/"
    with pytest.raises(Stop):
        sender.send(call)
    assert pool.extensions["timeout"]["connect"] == pytest.approx(expected)
    assert pool.extensions["timeout"]["read"] == 5.0
