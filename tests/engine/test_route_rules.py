"""Route rules in the client stack, against a scripted fake sender and a fake clock: faults
(neither retried nor timed out), mirrors (in the background, bounded), rewrites and header
operations (what the sender is given), redirects and direct responses (no send at all)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pymesh._async import stack as astack
from pymesh._shim import AsyncBackground
from pymesh._sync import stack as sstack
from pymesh.call import Call, Decision, Outcome
from pymesh.config import load_text
from pymesh.errors import EgressDeniedError
from pymesh.policy.local import LocalReply
from pymesh.runtime import Runtime
from pymesh.snapshot import Snapshot, compile_snapshot
from tests.engine.test_stack import SERVICE, Clock, FakeResponse

SHADOW = """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shadow}
spec:
  hosts: [shadow]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.9, ports: {http: 8009}}]
"""


def vs(http: str) -> str:
    return (
        SERVICE
        + SHADOW
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        + "metadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n"
        + http
    )


class Seen:
    """What the sender was given for one attempt."""

    def __init__(self, call: Call) -> None:
        self.endpoint = call.endpoint.label
        self.target = call.send_target
        self.headers = call.send_headers if call.send_headers is not None else call.raw_headers()
        self.authority = call.authority
        self.deadline = call.attempt_deadline


class Sender:
    """Answers `status` to every attempt and records what each was given."""

    def __init__(self, clock: Clock, status: int = 200) -> None:
        self.clock = clock
        self.status = status
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    async def send(self, call: Call) -> FakeResponse:
        with self.lock:
            self.seen.append(Seen(call))
        return FakeResponse(self.status)


def snapshot(yaml: str, namespace: str = "default") -> Snapshot:
    return compile_snapshot(load_text(yaml), namespace, {"app": "frontend"})


def make_call(snap: Snapshot, **kw: Any) -> Call:
    host = snap.resolve("reviews.default.svc.cluster.local")
    assert host is not None
    args: dict[str, Any] = {
        "direction": "outbound",
        "protocol": "http",
        "scheme": "http",
        "host": host,
        "port": 9080,
        "authority": "reviews:9080",
        "method": "GET",
        "target": b"/",
        "headers": {"host": "reviews:9080", "x-trace": "abc"},
        "native": None,
        "replayable": True,
        "decision": Decision(snap.version, host),
    }
    args.update(kw)
    headers = args["headers"]
    args["headers"] = type("H", (dict,), {"raw": property(lambda self: list(_raw(self)))})(headers)
    return Call(**args)


def _raw(headers: dict[str, str]) -> Iterator[tuple[bytes, bytes]]:
    for k, v in headers.items():
        yield k.encode(), v.encode()


def run(
    yaml: str, *, status: int = 200, clock: Clock | None = None, **kw: Any
) -> tuple[Outcome | BaseException, Sender, Call]:
    clock = clock or Clock()
    snap = snapshot(yaml)
    runtime = Runtime(snap, clock=clock, rng=random.Random(1))
    sender = Sender(clock, status)
    background = AsyncBackground()
    top = astack.build_client_stack(snap, runtime, sender, background)
    call = make_call(snap, **kw)

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    async def main() -> Outcome:
        out = await top.handle(call)
        await background.wait()  # let the mirrors run before the loop ends
        return out

    orig = astack.async_sleep
    astack.async_sleep = sleep  # type: ignore[assignment]
    try:
        result: Outcome | BaseException = asyncio.run(main())
    except Exception as exc:
        result = exc
    finally:
        astack.async_sleep = orig
    return result, sender, call


# ------------------------------------------------------------------------------------------
# faults

ABORT = """
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, retryOn: 5xx}
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
"""


def test_abort_answers_without_sending_and_is_not_retried() -> None:
    out, sender, call = run(vs(ABORT))
    assert isinstance(out, Outcome)
    assert out.status == 503 and isinstance(out.native, LocalReply)
    assert out.native.body == b"fault filter abort"
    assert sender.seen == []
    assert call.decision.flags == ["FI"]
    assert call.decision.attempts == []
    assert call.decision.route == "VirtualService default/reviews http[0]"


def test_grpc_abort_is_a_grpc_answer() -> None:
    out, _, _ = run(
        vs("""
  - route: [{destination: {host: reviews}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
""")
    )
    assert isinstance(out, Outcome)
    assert (out.status, out.grpc_status) == (200, 14)


def test_delay_does_not_count_against_the_route_timeout() -> None:
    clock = Clock()
    out, sender, call = run(
        vs("""
  - route: [{destination: {host: reviews}}]
    timeout: 1s
    fault: {delay: {fixedDelay: 5s, percentage: {value: 100}}}
"""),
        clock=clock,
    )
    assert isinstance(out, Outcome) and out.status == 200
    assert call.decision.flags == ["DI"]
    (seen,) = sender.seen
    assert seen.deadline == pytest.approx(100.0 + 5.0 + 1.0)  # timeout starts after the delay


def test_delay_then_abort() -> None:
    clock = Clock()
    out, sender, call = run(
        vs("""
  - route: [{destination: {host: reviews}}]
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 100}}
      abort: {httpStatus: 500, percentage: {value: 100}}
"""),
        clock=clock,
    )
    assert isinstance(out, Outcome) and out.status == 500
    assert call.decision.flags == ["DI", "FI"]
    assert clock.now == pytest.approx(102.0)
    assert sender.seen == []


def test_abort_rate_over_many_calls() -> None:
    snap = snapshot(
        vs("""
  - route: [{destination: {host: reviews}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 20}}}
""")
    )
    runtime = Runtime(snap, clock=Clock(), rng=random.Random(5))
    sender = Sender(Clock())
    top = astack.build_client_stack(snap, runtime, sender)

    async def many() -> list[int | None]:
        return [(await top.handle(make_call(snap))).status for _ in range(2000)]

    statuses = asyncio.run(many())
    aborted = statuses.count(503)
    assert 340 <= aborted <= 460  # 20 % ± 3 points
    assert len(sender.seen) == 2000 - aborted


def test_filters_only_where_rules_need_them() -> None:
    plain = snapshot(vs("  - route: [{destination: {host: reviews}}]\n"))
    runtime = Runtime(plain, clock=Clock())
    top = astack.build_client_stack(plain, runtime, Sender(Clock()))
    assert isinstance(top.next, astack.RouteTimeoutFilter)
    faulty = snapshot(vs(ABORT))
    top = astack.build_client_stack(faulty, Runtime(faulty, clock=Clock()), Sender(Clock()))
    assert isinstance(top.next, astack.FaultFilter)


# ------------------------------------------------------------------------------------------
# redirect and direct response


def test_redirect_is_a_local_reply() -> None:
    out, sender, call = run(
        vs("""
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: ratings, redirectCode: 307}
"""),
        target=b"/old/page?x=1",
    )
    assert isinstance(out, Outcome) and isinstance(out.native, LocalReply)
    assert out.status == 307
    assert (b"location", b"http://ratings/new?x=1") in out.native.headers
    assert sender.seen == []
    assert call.decision.flags == []
    assert call.decision.route == "VirtualService default/reviews http[0]"
    assert call.decision.notes == ["redirect 307 to http://ratings/new?x=1"]


def test_direct_response_with_response_headers() -> None:
    out, sender, call = run(
        vs("""
  - directResponse: {status: 503, body: {string: maintenance}}
    headers: {response: {set: {retry-after: "60"}}}
""")
    )
    assert isinstance(out, Outcome) and isinstance(out.native, LocalReply)
    assert (out.status, out.native.body) == (503, b"maintenance")
    assert sender.seen == []
    assert call.response_ops is not None and len(call.response_ops) == 1


# ------------------------------------------------------------------------------------------
# rewrites and header operations

REWRITE = """
  - match: [{uri: {prefix: /ratings/}}, {uri: {prefix: /stars/}}]
    rewrite: {uri: /v1/, authority: "ratings.prod:9080"}
    route: [{destination: {host: reviews}}]
"""


@pytest.mark.parametrize(
    ("target", "sent"),
    [(b"/ratings/7?full=1", b"/v1/7?full=1"), (b"/stars/7", b"/v1/7")],
)
def test_prefix_rewrite_replaces_the_prefix_of_the_block_that_matched(
    target: bytes, sent: bytes
) -> None:
    out, sender, call = run(vs(REWRITE), target=target)
    assert isinstance(out, Outcome) and out.status == 200
    (seen,) = sender.seen
    assert seen.target == sent
    assert (b"host", b"ratings.prod:9080") in seen.headers
    assert call.target == target and call.path == target.split(b"?")[0].decode()


def test_request_header_operations_destination_first_then_rule() -> None:
    out, sender, _ = run(
        vs("""
  - headers:
      request:
        set: {x-version: rule}
        remove: [x-trace]
    route:
    - destination: {host: reviews}
      headers:
        request: {set: {x-version: dest, x-dest: "1"}, add: {x-trace: dest}}
        response: {add: {x-from: dest}}
"""),
    )
    assert isinstance(out, Outcome)
    (seen,) = sender.seen
    assert seen.headers == [
        (b"host", b"reviews:9080"),
        (b"x-dest", b"1"),
        (b"x-version", b"rule"),
    ]


def test_no_transform_leaves_the_request_alone() -> None:
    _, _, call = run(vs("  - route: [{destination: {host: reviews}}]\n"))
    assert call.send_headers is None and call.send_target == b"/"
    assert call.response_ops is None


def test_source_namespace_is_decided_when_routes_compile() -> None:
    yaml = vs("""
  - match: [{sourceNamespace: prod}]
    directResponse: {status: 418}
  - route: [{destination: {host: reviews}}]
""")
    for ns, status in (("prod", 418), ("default", 200)):
        snap = snapshot(yaml, ns)
        top = astack.build_client_stack(snap, Runtime(snap, clock=Clock()), Sender(Clock()))
        call = make_call(snap)
        out = asyncio.run(top.handle(call))
        assert out.status == status


# ------------------------------------------------------------------------------------------
# mirrors

MIRROR = """
  - route: [{destination: {host: reviews}}]
    rewrite: {uri: /v2/}
    headers: {request: {set: {x-mirrored: "yes"}}}
    mirror: {host: shadow}
"""


def test_mirror_sends_a_shadow_copy_in_the_background() -> None:
    out, sender, call = run(vs(MIRROR), target=b"/api")
    assert isinstance(out, Outcome) and out.status == 200
    by_endpoint = {s.endpoint: s for s in sender.seen}
    assert set(by_endpoint) == {"10.0.0.9:8009", call.decision.attempts[0].endpoint}
    copy = by_endpoint["10.0.0.9:8009"]
    assert copy.target == b"/v2/api"  # rewritten, as the original goes upstream
    assert copy.authority == "reviews-shadow:9080"
    assert (b"host", b"reviews-shadow:9080") in copy.headers
    assert (b"x-mirrored", b"yes") in copy.headers
    assert call.decision.notes == ["mirrored to outbound|9080||shadow.default.svc.cluster.local"]
    assert len(call.decision.attempts) == 1  # the copy has its own record


def test_mirror_skipped_for_a_streamed_body_and_dropped_when_full() -> None:
    _, sender, call = run(vs(MIRROR), replayable=False)
    assert len(sender.seen) == 1
    assert call.decision.notes == [
        "mirror to outbound|9080||shadow.default.svc.cluster.local skipped: request body "
        "not buffered"
    ]
    snap = snapshot(vs(MIRROR))
    runtime = Runtime(snap, clock=Clock())
    sender = Sender(Clock())
    full = threading.BoundedSemaphore(1)
    full.acquire()
    inner = astack.RouteTimeoutFilter(
        runtime.clock,
        astack.RetryFilter(
            runtime,
            astack.PerTryTimeoutFilter(
                runtime.clock,
                astack.BalancerFilter(runtime, astack.EndpointFilter(runtime, sender)),
            ),
        ),
    )
    top = astack.RouterFilter(snap, runtime, astack.MirrorFilter(snap, runtime, inner, inner, full))
    call = make_call(snap)
    asyncio.run(top.handle(call))
    assert len(sender.seen) == 1
    assert "dropped: 64 mirrors already in flight" in call.decision.notes[0]


def test_mirror_percentage() -> None:
    yaml = vs("""
  - route: [{destination: {host: reviews}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 25}
""")
    snap = snapshot(yaml)
    runtime = Runtime(snap, clock=Clock(), rng=random.Random(3))
    sender = Sender(Clock())
    background = AsyncBackground()
    top = astack.build_client_stack(snap, runtime, sender, background)

    async def many() -> None:
        for _ in range(800):
            await top.handle(make_call(snap))
            await background.wait()  # the copy runs while the caller goes on

    asyncio.run(many())
    copies = sum(1 for s in sender.seen if s.endpoint == "10.0.0.9:8009")
    assert 150 <= copies <= 250


def test_sync_mirror_runs_on_the_spawn_threads() -> None:
    snap = snapshot(vs(MIRROR))
    runtime = Runtime(snap, clock=Clock())
    done = threading.Event()
    seen: list[tuple[str, str]] = []

    class SyncResponse:
        status = 200

        def read(self) -> bytes:
            return b""

        def close(self) -> None:
            if threading.current_thread().name.startswith("pymesh-spawn"):
                done.set()

    class SyncSender:
        def send(self, call: Call) -> SyncResponse:
            seen.append((call.endpoint.label, threading.current_thread().name))
            return SyncResponse()

    top = sstack.build_client_stack(snap, runtime, SyncSender())
    out = top.handle(make_call(snap))
    assert out.status == 200
    assert done.wait(5)
    assert (
        seen[0][1] == threading.current_thread().name
        or seen[1][1] == threading.current_thread().name
    )
    assert any(ep == "10.0.0.9:8009" and t.startswith("pymesh-spawn") for ep, t in seen)


# ------------------------------------------------------------------------------------------
# Sidecar egress

SIDECAR = """---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./shadow"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""


def test_egress_visibility_and_refusal() -> None:
    snap = snapshot(SERVICE + SHADOW + SIDECAR)
    egress = snap.egress
    assert egress is not None and egress.registry_only
    reviews = snap.resolve("reviews")
    shadow = snap.resolve("shadow")
    assert reviews is not None and shadow is not None
    assert egress.allows(shadow, 9080)
    assert not egress.allows(reviews, 9080)
    err = astack.egress_denied(snap, "reviews", reviews, 9080)
    assert isinstance(err, EgressDeniedError)
    assert err.flags == "NR"
    assert str(err) == (
        "egress to reviews:9080 refused: Sidecar default/default has outboundTrafficPolicy "
        "REGISTRY_ONLY, which allows only the mesh services it imports, and "
        "reviews.default.svc.cluster.local is a mesh service, but the egress hosts do not "
        "import it (egress hosts: ./shadow)"
    )
    assert snapshot(SERVICE).egress is None
