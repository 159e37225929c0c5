"""The destination-side traffic policy in the stack, against fake senders: consistent hashing,
locality priorities, connection-pool limits (circuit breaking) and the retry budget."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

import httpcore
import pytest

from pymesh._async import stack as astack
from pymesh._sync import stack as sstack
from pymesh.call import Call, Outcome
from pymesh.config import load_text
from pymesh.errors import (
    CircuitOpenError,
    MeshTimeoutError,
    NoHealthyEndpointError,
    RetriesExhaustedError,
    UpstreamConnectError,
)
from pymesh.runtime import Runtime
from pymesh.snapshot import compile_snapshot
from tests.engine.test_stack import (
    SERVICE,
    Clock,
    FakeResponse,
    Sender,
    dr,
    make_call,
    run,
    vs,
)


def main_cluster(runtime: Runtime) -> Any:
    """The state of the cluster without a subset (`outbound|9080||reviews...`)."""
    return next(c for n, c in runtime.clusters.items() if "||" in n)


def policy(text: str) -> str:
    return SERVICE + dr(text)


HASH_HEADER = policy("    loadBalancer: {consistentHash: {httpHeaderName: x-user}}")


def _runtime(yaml: str, clock: Any = None, locality: str | None = None) -> Runtime:
    snap = compile_snapshot(load_text(yaml), "default", {"app": "frontend"}, locality=locality)
    return Runtime(snap, clock=clock or Clock(), rng=random.Random(5))


def test_a_header_keeps_a_user_on_one_endpoint_and_users_spread() -> None:
    runtime = _runtime(HASH_HEADER)
    where: dict[str, set[str]] = {}
    for i in range(60):
        user = f"user-{i % 20}"
        _, sender, call = run(HASH_HEADER, [200], headers={"x-user": user}, runtime=runtime)
        where.setdefault(user, set()).add(sender.seen[0][0])
        assert call.decision.endpoint_reason == "RING_HASH on header x-user"
    assert all(len(s) == 1 for s in where.values())
    assert len({next(iter(s)) for s in where.values()}) == 3


def test_no_hash_key_is_a_random_pick_and_says_so() -> None:
    runtime = _runtime(HASH_HEADER)
    seen = Counter()
    for _ in range(60):
        _, sender, call = run(HASH_HEADER, [200], runtime=runtime)
        seen[sender.seen[0][0]] += 1
    assert len(seen) == 3
    assert "no header x-user in the request" in call.decision.endpoint_reason


def test_a_retry_with_hashing_goes_to_another_endpoint() -> None:
    runtime = _runtime(HASH_HEADER)
    refuse = httpcore.ConnectError("refused")
    out, sender, _ = run(HASH_HEADER, [refuse, 200], headers={"x-user": "a"}, runtime=runtime)
    assert isinstance(out, Outcome) and out.status == 200
    assert sender.seen[0][0] != sender.seen[1][0]


def test_a_missing_cookie_with_ttl_is_generated_for_the_response() -> None:
    yaml = policy(
        "    loadBalancer: {consistentHash: {maglev: {tableSize: 5003}, "
        "httpCookie: {name: sid, path: /, ttl: 1h}}}"
    )
    runtime = _runtime(yaml)
    _, sender, call = run(yaml, [200], runtime=runtime)
    assert call.set_cookie is not None and call.set_cookie.startswith('sid="')
    assert call.set_cookie.endswith("; Max-Age=3600; Path=/; HttpOnly")
    assert "generated" in call.decision.endpoint_reason
    value = call.set_cookie.split('"')[1]
    first = sender.seen[0][0]
    for _ in range(10):  # the client sends the cookie back: same endpoint, nothing generated
        _, sender, call = run(yaml, [200], headers={"cookie": f"sid={value}"}, runtime=runtime)
        assert sender.seen[0][0] == first and call.set_cookie is None


def test_source_ip_hashes_the_workloads_own_address() -> None:
    yaml = policy("    loadBalancer: {consistentHash: {useSourceIp: true}}")
    runtime = _runtime(yaml)
    seen = {run(yaml, [200], runtime=runtime)[1].seen[0][0] for _ in range(20)}
    assert len(seen) == 1


LOCALITY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, ports: {http: 8001}, locality: r1/z1/s1}
  - {address: 10.0.0.2, ports: {http: 8002}, locality: r1/z2/s1}
  - {address: 10.0.0.3, ports: {http: 8003}, locality: r2/z1/s1}
""" + dr(
    "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, "
    "maxEjectionPercent: 100}"
)


def test_locality_stays_local_fails_over_in_order_and_comes_back() -> None:
    clock = Clock()
    runtime = _runtime(LOCALITY, clock, locality="r1/z1/s1")
    down: set[str] = set()

    def answer(call: Call) -> int:
        return 503 if call.endpoint.label in down else 200

    sender = Sender(clock, [])
    top = astack.build_client_stack(runtime.snapshot, runtime, sender)

    def where(n: int = 20) -> Counter[str]:
        out: Counter[str] = Counter()
        for _ in range(n):
            sender.script = iter([answer])
            asyncio.run(top.handle(make_call(runtime.snapshot, "reviews")))
            out[sender.seen[-1][0]] += 1
        return out

    assert where() == {"10.0.0.1:8001": 20}
    down.add("10.0.0.1:8001")
    where(1)  # one 503 ejects it
    assert where() == {"10.0.0.2:8002": 20}  # same region next
    down.add("10.0.0.2:8002")
    where(1)
    assert where() == {"10.0.0.3:8003": 20}  # then the other region
    down.clear()
    clock.now += 31  # ejections over: traffic comes back home
    assert where() == {"10.0.0.1:8001": 20}


def test_without_outlier_detection_locality_is_not_applied() -> None:
    yaml = LOCALITY.replace("    outlierDetection:", "    x:").split("---")[0]
    runtime = _runtime(yaml, locality="r1/z1/s1")
    seen = {run(yaml, [200], runtime=runtime)[1].seen[0][0] for _ in range(40)}
    assert len(seen) == 3


POOL = policy(
    "    connectionPool:\n"
    "      tcp: {maxConnections: 1, connectTimeout: 50ms}\n"
    "      http: {http1MaxPendingRequests: 1, http2MaxRequests: 5}"
)


class Gate:
    """An async sender whose responses wait for `open`; failures per script."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, call: Call) -> FakeResponse:
        self.sent.append(call.endpoint.label)
        await self.open.wait()
        return FakeResponse(200)


def _top(yaml: str, sender: Any, runtime: Runtime | None = None) -> tuple[Any, Runtime]:
    runtime = runtime or _runtime(yaml, clock=time.monotonic)
    snap = runtime.snapshot
    return astack.build_client_stack(snap, runtime, sender), runtime


def test_circuit_breaker_caps_concurrency_queues_one_and_fails_the_rest_fast() -> None:
    async def main() -> None:
        gate = Gate()
        top, runtime = _top(POOL, gate)
        snap = runtime.snapshot
        first = asyncio.create_task(top.handle(make_call(snap, "reviews")))
        await asyncio.sleep(0)
        second = asyncio.create_task(top.handle(make_call(snap, "reviews")))  # pending
        await asyncio.sleep(0)
        call = make_call(snap, "reviews")
        with pytest.raises(CircuitOpenError) as info:
            await top.handle(call)
        assert str(info.value).startswith(
            "circuit open: reviews http1MaxPendingRequests 1 reached (1 requests active, 1 pending"
        )
        assert call.decision.flags == ["UO"] and not call.decision.attempts
        assert len(gate.sent) == 1  # the pending one has not been sent
        gate.open.set()
        out = await first
        breaker = out.endpoint.breaker
        assert (breaker.active, breaker.pending) == (1, 1)
        out.endpoint.release()  # the body is closed: its slot goes to the pending call
        out2 = await second
        assert isinstance(out2, Outcome) and len(gate.sent) == 2
        assert (breaker.active, breaker.pending) == (1, 0)
        out2.endpoint.release()
        assert breaker.active == 0

    asyncio.run(main())


def test_a_pending_call_waits_at_most_the_connect_timeout() -> None:
    async def main() -> None:
        gate = Gate()
        top, runtime = _top(POOL, gate)
        snap = runtime.snapshot
        first = asyncio.create_task(top.handle(make_call(snap, "reviews")))
        await asyncio.sleep(0)
        call = make_call(snap, "reviews")
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(CircuitOpenError) as info:
            await top.handle(call)
        waited = asyncio.get_running_loop().time() - t0
        assert 0.04 < waited < 1.0
        assert "maxConnections 1 reached and no connection freed within the connect timeout" in (
            str(info.value)
        )
        assert call.decision.flags == ["UO"]
        assert runtime.clusters[call.cluster.name].breaker.pending == 0
        gate.open.set()
        await first

    asyncio.run(main())


def test_a_pending_call_times_out_at_its_deadline() -> None:
    yaml = vs("  - route: [{destination: {host: reviews}}]\n    timeout: 30ms\n")
    yaml += dr("    connectionPool: {tcp: {maxConnections: 1}}")

    async def main() -> None:
        gate = Gate()
        top, runtime = _top(yaml, gate)
        snap = runtime.snapshot
        first = asyncio.create_task(top.handle(make_call(snap, "reviews")))
        await asyncio.sleep(0)
        call = make_call(snap, "reviews")
        with pytest.raises(MeshTimeoutError) as info:
            await top.handle(call)
        assert "waited" in str(info.value) and "maxConnections 1" in str(info.value)
        assert call.decision.flags == ["UT"]
        gate.open.set()
        await first

    asyncio.run(main())


def test_http2_max_requests_overflows_at_once() -> None:
    yaml = policy("    connectionPool: {http: {http2MaxRequests: 2}}")

    async def main() -> None:
        gate = Gate()
        top, runtime = _top(yaml, gate)
        snap = runtime.snapshot
        held = [asyncio.create_task(top.handle(make_call(snap, "reviews"))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(CircuitOpenError, match="http2MaxRequests 2 reached"):
            await top.handle(make_call(snap, "reviews"))
        gate.open.set()
        await asyncio.gather(*held)

    asyncio.run(main())


def test_a_slot_is_freed_when_no_endpoint_takes_the_attempt() -> None:
    yaml = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
""" + dr("    connectionPool: {tcp: {maxConnections: 1}}")
    runtime = _runtime(yaml)
    out, _, call = run(yaml, [], runtime=runtime)
    assert isinstance(out, NoHealthyEndpointError)
    assert runtime.clusters[call.cluster.name].breaker.active == 0


def test_failed_attempts_release_their_slots() -> None:
    yaml = policy("    connectionPool: {tcp: {maxConnections: 1}, http: {maxRetries: 5}}")
    runtime = _runtime(yaml)
    refuse = httpcore.ConnectError("refused")
    out, _, call = run(yaml, [refuse, refuse, refuse], runtime=runtime)
    assert isinstance(out, RetriesExhaustedError)
    breaker = runtime.clusters[call.cluster.name].breaker
    assert (breaker.active, breaker.pending, breaker.retries) == (0, 0, 0)


def test_retry_budget_stops_a_retry_and_says_why() -> None:
    yaml = policy("    retryBudget: {percent: 0, minRetryConcurrency: 1}")
    runtime = _runtime(yaml)
    breaker = main_cluster(runtime).breaker
    breaker.retries = 1  # another call is retrying
    out, sender, call = run(yaml, [httpcore.ConnectError("refused"), 200], runtime=runtime)
    assert isinstance(out, UpstreamConnectError)
    assert set(call.decision.flags) == {"UO", "UF"}
    assert "not retried: retry budget reached (1 retries active" in str(out)
    assert len(sender.seen) == 1
    breaker.retries = 0
    out, sender, _ = run(yaml, [httpcore.ConnectError("refused"), 200], runtime=runtime)
    assert isinstance(out, Outcome) and out.status == 200


def test_max_retries_stops_a_retry_and_the_5xx_stands() -> None:
    yaml = vs(
        "  - route: [{destination: {host: reviews}}]\n    retries: {attempts: 3, retryOn: 5xx}\n"
    )
    yaml += dr("    connectionPool: {http: {maxRetries: 1}}")
    runtime = _runtime(yaml)
    main_cluster(runtime).breaker.retries = 1
    out, _, call = run(yaml, [503, 200], runtime=runtime)
    assert isinstance(out, Outcome) and out.status == 503
    assert "UO" in call.decision.flags
    assert call.decision.reason.endswith("not retried: maxRetries 1 reached")


def test_default_budget_under_total_outage_allows_min_three_concurrent_retries() -> None:
    """20 calls in flight, every attempt failing slowly: never more than max(3, 20 % of active)
    retries at once."""
    yaml = SERVICE

    class Failing:
        def __init__(self) -> None:
            self.peak = 0

        async def send(self, call: Call) -> Any:
            breaker = call.cluster.breaker
            self.peak = max(self.peak, breaker.retries)
            await asyncio.sleep(0.002)
            raise httpcore.ConnectError("refused")

    async def main() -> tuple[int, list[BaseException]]:
        sender = Failing()
        top, runtime = _top(yaml, sender)
        snap = runtime.snapshot
        calls = [top.handle(make_call(snap, "reviews")) for _ in range(20)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        breaker = next(iter(runtime.clusters.values())).breaker
        assert (breaker.active, breaker.retries) == (0, 0)
        return sender.peak, list(results)

    peak, results = asyncio.run(main())
    assert 1 <= peak <= 4  # max(3, 20 % of 20 active)
    assert all(isinstance(r, (UpstreamConnectError, RetriesExhaustedError)) for r in results)
    assert any("UO" in r.decision.flags for r in results)  # type: ignore[attr-defined]


def test_sync_twin_caps_concurrency_across_threads() -> None:
    snap = compile_snapshot(load_text(POOL), "default")
    runtime = Runtime(snap, rng=random.Random(1))
    release = threading.Event()
    entered = threading.Semaphore(0)

    class Held:
        def __init__(self, status: int) -> None:
            self.status = status

        def read(self) -> bytes:
            return b""

        def close(self) -> None:
            pass

    class SyncSender:
        def send(self, call: Call) -> Held:
            entered.release()
            release.wait(5)
            return Held(200)

    top = sstack.build_client_stack(snap, runtime, SyncSender())
    results: list[Any] = []

    def one() -> None:
        call = make_call(snap, "reviews")
        try:
            out = top.handle(call)
            out.endpoint.release()  # body closed
            results.append(out.status)
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    threads[0].start()
    assert entered.acquire(timeout=5)
    threads[1].start()  # waits as pending
    breaker = main_cluster(runtime).breaker
    deadline = time.monotonic() + 5
    while breaker.pending == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(CircuitOpenError, match="http1MaxPendingRequests 1"):
        top.handle(make_call(snap, "reviews"))
    release.set()
    for t in threads:
        t.join(5)
    assert results == [200, 200]
    assert (breaker.active, breaker.pending) == (0, 0)
