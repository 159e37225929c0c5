"""The client stack's filters against a scripted fake sender and a fake clock — no sockets.

Each script entry is what one attempt gets: an int (a response with that status) or an
httpcore exception instance (raised by the send). The sender records every attempt's endpoint
and deadline; `sleep` advances the fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import httpcore
import pytest

from pymesh._async import stack as astack
from pymesh._sync import stack as sstack
from pymesh.call import Call, Decision, Outcome
from pymesh.config import load_text
from pymesh.errors import (
    MeshTimeoutError,
    NoHealthyEndpointError,
    NoRouteError,
    RetriesExhaustedError,
    UpstreamConnectError,
)
from pymesh.runtime import Runtime
from pymesh.snapshot import Snapshot, compile_snapshot

SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, ports: {http: 8001}, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {http: 8002}, labels: {version: v1}}
  - {address: 10.0.0.3, ports: {http: 8003}, labels: {version: v2}}
"""


def vs(http: str) -> str:
    return (
        SERVICE
        + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
"""
        + http
    )


def dr(policy: str) -> str:
    return f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy:
{policy}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeResponse:
    def __init__(self, status: int) -> None:
        self.status = status
        self.read = False
        self.closed = False

    async def aread(self) -> bytes:
        self.read = True
        return b""

    async def aclose(self) -> None:
        self.closed = True


class Sender:
    """Plays a script; each entry is a status, an exception, or a callable(call) -> either."""

    def __init__(self, clock: Clock, script: list[Any], cost: float = 0.01) -> None:
        self.clock = clock
        self.script: Iterator[Any] = iter(script)
        self.cost = cost
        self.seen: list[tuple[str, float]] = []
        self.responses: list[FakeResponse] = []

    async def send(self, call: Call) -> FakeResponse:
        self.seen.append((call.endpoint.label, call.attempt_deadline))
        step = next(self.script)
        if callable(step):
            step = step(call)
        self.clock.now += self.cost
        if isinstance(step, BaseException):
            raise step
        resp = FakeResponse(step)
        self.responses.append(resp)
        return resp


def make_call(
    snap: Snapshot, name: str, headers: dict[str, str] | None = None, replayable: bool = True
) -> Call:
    host = snap.resolve(name)
    assert host is not None
    return Call(
        direction="outbound",
        protocol="http",
        scheme="http",
        host=host,
        port=9080,
        authority="reviews:9080",
        method="GET",
        target=b"/",
        headers=dict(headers or {}),
        native=None,
        replayable=replayable,
        decision=Decision(snap.version, host),
    )


def run(
    yaml: str,
    script: list[Any],
    *,
    headers: dict[str, str] | None = None,
    replayable: bool = True,
    clock: Clock | None = None,
    runtime: Runtime | None = None,
    cost: float = 0.01,
) -> tuple[Outcome | BaseException, Sender, Call]:
    clock = clock or Clock()
    snap = compile_snapshot(load_text(yaml), "default", {"app": "frontend"})
    if runtime is None:
        runtime = Runtime(snap, clock=clock, rng=random.Random(1))
    else:
        runtime.apply(snap)
    sender = Sender(clock, script, cost)
    top = astack.build_client_stack(snap, runtime, sender)
    call = make_call(snap, "reviews", headers, replayable)

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    orig = astack.async_sleep
    astack.async_sleep = sleep  # type: ignore[assignment]
    try:
        result: Outcome | BaseException = asyncio.run(top.handle(call))
    except Exception as exc:  # the test inspects it
        result = exc
    finally:
        astack.async_sleep = orig
    return result, sender, call


RETRY_5XX = """
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, retryOn: 5xx}
"""


def test_5xx_retried_when_retry_on_says_so_and_discarded_responses_are_read_and_closed() -> None:
    out, sender, call = run(vs(RETRY_5XX), [503, 503, 200])
    assert isinstance(out, Outcome) and out.status == 200
    assert [a.status for a in call.decision.attempts] == [503, 503, 200]
    assert [a.retry_on for a in call.decision.attempts] == ["5xx", "5xx", None]
    assert all(r.read and r.closed for r in sender.responses[:2])
    assert not sender.responses[2].closed


def test_default_policy_never_retries_a_5xx() -> None:
    out, sender, _ = run(SERVICE, [503])
    assert isinstance(out, Outcome) and out.status == 503
    assert len(sender.seen) == 1


def test_connect_failure_retried_on_another_endpoint_by_default() -> None:
    out, sender, call = run(SERVICE, [httpcore.ConnectError("refused"), 200])
    assert isinstance(out, Outcome) and out.status == 200
    first, second = (s[0] for s in sender.seen)
    assert first != second
    assert call.decision.attempts[0].failure == "connect-failure"


def test_retries_exhausted_names_every_attempt() -> None:
    refuse = [httpcore.ConnectError("refused")] * 3
    out, _, call = run(SERVICE, refuse)
    assert isinstance(out, RetriesExhaustedError)
    assert set(call.decision.flags) == {"UF", "URX"}
    msg = str(out)
    assert "retries exhausted after 3 attempts" in msg
    assert msg.count("connect-failure") >= 3
    assert "reviews.default.svc.cluster.local" in msg


def test_5xx_after_retries_exhausted_is_returned_with_urx() -> None:
    out, _, call = run(vs(RETRY_5XX), [503, 503, 503, 503])
    assert isinstance(out, Outcome) and out.status == 503
    assert "URX" in call.decision.flags
    assert len(call.decision.attempts) == 4


def test_unbuffered_body_is_never_replayed() -> None:
    out, sender, _ = run(SERVICE, [httpcore.ConnectError("refused"), 200], replayable=False)
    assert isinstance(out, UpstreamConnectError)
    assert "not buffered" in str(out)
    assert len(sender.seen) == 1


def test_per_try_timeout_sets_attempt_deadline_and_is_retried_under_5xx() -> None:
    yaml = vs(
        """
  - route: [{destination: {host: reviews}}]
    timeout: 10s
    retries: {attempts: 2, perTryTimeout: 1s, retryOn: 5xx}
"""
    )
    clock = Clock()

    def slow(call: Call) -> Exception:
        clock.now = call.attempt_deadline
        return httpcore.ReadTimeout("deadline exceeded")

    out, sender, call = run(yaml, [slow, slow, slow], clock=clock, cost=0)
    assert isinstance(out, MeshTimeoutError)
    assert [a.failure for a in call.decision.attempts] == ["per-try-timeout"] * 3
    start = 100.0
    assert sender.seen[0][1] == pytest.approx(start + 1.0)
    assert "UT" in call.decision.flags
    assert "perTryTimeout 1s" in str(out) and "timeout 10s" in str(out)


def test_route_timeout_bounds_all_attempts_and_is_not_retried() -> None:
    yaml = vs(
        """
  - route: [{destination: {host: reviews}}]
    timeout: 2s
    retries: {attempts: 5, retryOn: 5xx}
"""
    )
    clock = Clock()

    def slow(call: Call) -> Exception:
        clock.now = call.attempt_deadline
        return httpcore.ReadTimeout("deadline exceeded")

    out, sender, call = run(yaml, [slow, 200], clock=clock, cost=0)
    assert isinstance(out, MeshTimeoutError)
    assert len(sender.seen) == 1
    assert sender.seen[0][1] == pytest.approx(102.0)
    assert call.decision.attempts[0].failure == "route-timeout"
    assert "timed out after 1 attempt (timeout 2s" in str(out)


def test_no_retry_when_backoff_would_cross_the_deadline() -> None:
    yaml = vs(
        """
  - route: [{destination: {host: reviews}}]
    timeout: 1s
    retries: {attempts: 5, retryOn: 5xx}
"""
    )
    out, sender, _ = run(yaml, [503, 503, 503], cost=0.999)
    assert isinstance(out, Outcome) and out.status == 503
    assert len(sender.seen) == 1


def test_no_route_names_host_and_virtual_service() -> None:
    yaml = vs(
        """
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
"""
    )
    out, _, call = run(yaml, [])
    assert isinstance(out, NoRouteError)
    assert "reviews.default.svc.cluster.local:9080" in str(out)
    assert "VirtualService default/reviews" in str(out)
    assert call.decision.flags == ["NR"]


def test_header_match_and_subset() -> None:
    yaml = vs(
        """
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""
    ) + dr("    loadBalancer: {simple: ROUND_ROBIN}")
    out, sender, call = run(yaml, [200], headers={"end-user": "jason"})
    assert isinstance(out, Outcome)
    assert sender.seen[0][0] == "10.0.0.3:8003"
    assert call.decision.subset == "v2"
    assert call.decision.route == "VirtualService default/reviews http[0]"
    out, sender, call = run(yaml, [200])
    assert sender.seen[0][0] in ("10.0.0.1:8001", "10.0.0.2:8002")


OUTLIER = dr(
    "    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, "
    "maxEjectionPercent: 100}\n    loadBalancer: {simple: ROUND_ROBIN}"
)


def test_ejected_endpoint_takes_no_traffic_until_its_time_is_up() -> None:
    yaml = SERVICE + OUTLIER
    clock = Clock()
    snap = compile_snapshot(load_text(yaml), "default")
    runtime = Runtime(snap, clock=clock, rng=random.Random(3))
    bad = "10.0.0.1:8001"

    def by_endpoint(call: Call) -> int:
        return 503 if call.endpoint.label == bad else 200

    seen: list[str] = []
    for _ in range(12):
        _, sender, _ = run(yaml, [by_endpoint], clock=clock, runtime=runtime)
        seen.append(sender.seen[0][0])
    assert seen.count(bad) == 2  # two 5xx, then ejected
    clock.now += 31
    _, sender, _ = run(yaml, [by_endpoint] * 3, clock=clock, runtime=runtime)
    later = []
    for _ in range(3):
        _, sender, _ = run(yaml, [by_endpoint], clock=clock, runtime=runtime)
        later.append(sender.seen[0][0])
    assert bad in later  # back after baseEjectionTime


def test_all_ejected_is_no_healthy_endpoint_with_counts() -> None:
    yaml = SERVICE + OUTLIER
    clock = Clock()
    snap = compile_snapshot(load_text(yaml), "default")
    runtime = Runtime(snap, clock=clock, rng=random.Random(3))
    for _ in range(6):
        run(yaml, [503], clock=clock, runtime=runtime)
    out, _, call = run(yaml, [200], clock=clock, runtime=runtime)
    assert isinstance(out, NoHealthyEndpointError)
    assert "3 of 3 ejected" in str(out)
    assert call.decision.flags == ["UH"]


def test_snapshot_update_keeps_endpoint_state() -> None:
    yaml = SERVICE + OUTLIER
    clock = Clock()
    snap = compile_snapshot(load_text(yaml), "default")
    runtime = Runtime(snap, clock=clock, rng=random.Random(3))
    for _ in range(6):
        run(yaml, [503], clock=clock, runtime=runtime)
    # the same endpoints pushed again (a new snapshot object) must not reset ejections
    runtime.apply(compile_snapshot(load_text(yaml), "default", version="v2"))
    out, _, _ = run(yaml, [200], clock=clock, runtime=runtime)
    assert isinstance(out, NoHealthyEndpointError)


def test_sync_twin_behaves_the_same() -> None:
    clock = Clock()
    snap = compile_snapshot(load_text(vs(RETRY_5XX)), "default")
    runtime = Runtime(snap, clock=clock, rng=random.Random(1))
    statuses = iter([503, 200])

    class SyncResponse:
        def __init__(self, status: int) -> None:
            self.status = status
            self.closed = False

        def read(self) -> bytes:
            return b""

        def close(self) -> None:
            self.closed = True

    class SyncSender:
        def send(self, call: Call) -> SyncResponse:
            return SyncResponse(next(statuses))

    top = sstack.build_client_stack(snap, runtime, SyncSender())
    call = make_call(snap, "reviews.default")
    orig = sstack.sync_sleep
    sstack.sync_sleep = lambda s: None  # type: ignore[assignment]
    try:
        out = top.handle(call)
    finally:
        sstack.sync_sleep = orig
    assert out.status == 200
    assert [a.status for a in call.decision.attempts] == [503, 200]
