"""The client stack: every filter a meshed call passes through, in order, and why there.

How this works: `build_client_stack` composes filter objects, each `handle(call) -> Outcome`
calling the next. The tiers follow DESIGN.md:

1. route tier (rebuilt whenever a new snapshot arrives):
   RouterFilter → [FaultFilter] → [MirrorFilter] → RouteTimeoutFilter → RetryFilter →
   PerTryTimeoutFilter (fault and mirror filters only in stacks whose snapshot has such rules)
2. balancer tier (per cluster; state lives in `pymesh.runtime.ClusterState`):
   CircuitBreakerFilter → BalancerFilter
3. endpoint tier (per address; state in `EndpointState`, kept across snapshots):
   EndpointFilter → the native sender (`AsyncEndpointSender`, httpcore with mTLS later)

Every decision is made by `pymesh.policy`; filters call `next`, sleep, record and raise.
This file is the async source; `pymesh/_sync/stack.py` is generated from it by
`scripts/unasync.py` — edit here, then run `make unasync`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import httpcore

from pymesh._shim import AsyncBackground, AsyncSignal, PeerRejectedError, async_sleep
from pymesh.call import Attempt, Call, Decision, Outcome
from pymesh.config.model import ConnectionPoolSettings
from pymesh.errors import (
    CircuitOpenError,
    EgressDeniedError,
    MeshTimeoutError,
    NoHealthyEndpointError,
    NoRouteError,
    RetriesExhaustedError,
    UpstreamConnectError,
)
from pymesh.policy.balancer import choose_weighted
from pymesh.policy.fault import decide_fault
from pymesh.policy.hashing import request_hash
from pymesh.policy.header_ops import apply_header_ops, shadow_authority, with_authority
from pymesh.policy.local import fault_abort_reply, redirect_location, redirect_reply
from pymesh.policy.retry import Failure, backoff_delay, retry_condition
from pymesh.policy.rewrite import rewrite_target
from pymesh.policy.routing import first_match
from pymesh.policy.sampling import sampled
from pymesh.runtime import Runtime
from pymesh.snapshot import DestinationChoice, MirrorTarget, RouteEntry, Snapshot

# Timeouts close to the deadline count as the deadline's (timer granularity).
_SLACK = 0.002
_TIMEOUTS = (Failure.ROUTE_TIMEOUT, Failure.PER_TRY_TIMEOUT, Failure.TIMEOUT)

log = logging.getLogger("pymesh.client")


class AsyncHandler(Protocol):
    """Anything that turns a call into an outcome: a filter, or the native sender."""

    async def handle(self, call: Call) -> Outcome:
        """Serve the call."""
        ...


class AsyncSender(Protocol):
    """The native send of one attempt to `call.endpoint` (the endpoint tier's last step)."""

    async def send(self, call: Call) -> Any:
        """Send and return the native response; raise the native library's errors."""
        ...


class RouterFilter:
    """Route tier, first: match the request against the snapshot's routes (first match wins,
    Istio's order) and choose a weighted destination — once per call, as Envoy does, so every
    retry stays on the destination (subset) the split chose. A `redirect` or `directResponse`
    rule is answered here, without a call (a `LocalReply` as the outcome's native response).
    Rewrites and request header operations are computed here, once, into `call.send_target` /
    `call.send_headers` for the sender; response header operations into `call.response_ops`
    for the edge."""

    def __init__(self, snapshot: Snapshot, runtime: Runtime, next: AsyncHandler) -> None:
        self.snapshot = snapshot
        self.runtime = runtime
        self.next = next

    async def handle(self, call: Call) -> Outcome:
        """Match, choose, and pass down; no match is NoRouteError (flag NR)."""
        vhost = self.snapshot.vhosts[call.host]
        entry = first_match(vhost.table, call)
        decision = call.decision
        if entry is None:
            decision.add_flag("NR")
            decision.reason = (
                f"no route for {call.host}:{call.port} {call.method} {call.path}: "
                f"no http rule of {vhost.source} matches"
            )
            raise NoRouteError(decision.reason, decision)
        decision.route = entry.name
        dests = entry.destinations
        if not dests:
            return _local_reply(call, entry)
        i = (
            choose_weighted(entry.cumulative, entry.total, self.runtime.rng)
            if len(dests) > 1
            else 0
        )
        choice = dests[i]
        spec = self.snapshot.cluster_for(choice, call.port)
        cluster = self.runtime.clusters.get(spec.name) if spec is not None else None
        if cluster is None:
            decision.add_flag("NR")
            port = choice.port or call.port
            decision.reason = (
                f"no route for {call.host}:{call.port}: {entry.name} sends to "
                f"{choice.host}:{port}"
                + (f" subset {choice.subset}" if choice.subset else "")
                + ", which no ServiceEntry/DestinationRule defines"
            )
            raise NoRouteError(decision.reason, decision)
        decision.destination = cluster.name
        decision.subset = choice.subset
        call.route = entry
        call.cluster = cluster
        if entry.transforms:
            _transform_request(call, entry, choice)
        if entry.response_transforms:
            call.response_ops = tuple(
                ops for ops in (choice.response_ops, entry.response_ops) if ops is not None
            )
        return await self.next.handle(call)


def _local_reply(call: Call, entry: RouteEntry) -> Outcome:
    """The outcome of a rule that answers without a call: a redirect or a direct response."""
    call.route = entry
    d = call.decision
    if entry.redirect is not None:
        r = entry.redirect
        location = redirect_location(
            r, call.scheme, call.authority, call.port, call.path, call.query
        )
        reply = redirect_reply(location, r.redirect_code)
        d.note(f"redirect {r.redirect_code} to {location}")
    else:
        assert entry.direct is not None
        reply = entry.direct
        d.note(f"direct response {reply.status}")
    if entry.response_ops is not None:
        call.response_ops = (entry.response_ops,)
    return Outcome(reply.status, reply, d)


def _transform_request(call: Call, entry: RouteEntry, choice: DestinationChoice) -> None:
    """What goes upstream: the path rewritten, then header operations (the destination's, then
    the rule's — Envoy's order), then the authority (the rule's rewrite wins)."""
    if entry.path_rewrite is not None:
        call.send_target = rewrite_target(entry.path_rewrite, call.target)
    levels = [ops for ops in (choice.request_ops, entry.request_ops) if ops is not None]
    authority = entry.authority or choice.authority
    if levels or authority:
        # from what the edge already put together (the caller's headers less the trace
        # headers telemetry writes itself), if anything
        base = call.send_headers if call.send_headers is not None else call.raw_headers()
        headers = apply_header_ops(base, levels)
        if authority:
            headers = with_authority(headers, authority)
        call.send_headers = headers


class FaultFilter:
    """Route tier, below the router (it acts on the matched route) and above the mirror, the
    route timeout and retries: Envoy runs its fault filter before the router, so a faulted
    request is never retried, its delay does not count against the route timeout, and an
    aborted request is never sent nor mirrored (Istio's semantics). Flags: DI (delay injected),
    FI (fault injected: aborted)."""

    def __init__(self, runtime: Runtime, next: AsyncHandler) -> None:
        self.runtime = runtime
        self.next = next

    async def handle(self, call: Call) -> Outcome:
        """Maybe wait, maybe answer the abort, else pass down."""
        policy = call.route.fault
        if policy is None:
            return await self.next.handle(call)
        fault = decide_fault(policy, self.runtime.rng)
        d = call.decision
        if fault.delay:
            d.add_flag("DI")
            d.note(f"fault: delayed {fault.delay:g}s")
            await async_sleep(fault.delay)
        if fault.abort:
            d.add_flag("FI")
            reply = fault_abort_reply(policy.abort_status, policy.abort_grpc)
            d.note(f"fault: aborted with {reply.status}")
            return Outcome(reply.status, reply, d, grpc_status=reply.grpc_status)
        return await self.next.handle(call)


# Mirrors in flight per process (per stack flavour); beyond it a mirror is dropped, not queued.
MIRRORS_IN_FLIGHT = 64
# A mirror lives at most its route's timeout, or this long when the route has none.
MIRROR_TIMEOUT = 15.0
_MIRROR_SLOTS = threading.BoundedSemaphore(MIRRORS_IN_FLIGHT)


class MirrorFilter:
    """Route tier, below fault injection (a delayed request is mirrored after its delay, an
    aborted one never — Envoy's router shadows what reaches it) and above the route timeout
    and retries (one copy per request, not per attempt). A copy (authority `-shadow`, as
    Envoy's) goes to each mirror destination's cluster through the balancer tier (circuit
    breakers included), in the background: the caller never waits for it and its answer is
    read and dropped. A body that was not buffered cannot be copied: that mirror is skipped.
    At most `MIRRORS_IN_FLIGHT` copies run at once; more are dropped. Each mirror is noted in
    the decision. The copies run as the client's `background` work: closing the client gives
    them a moment to finish, then cuts them off."""

    def __init__(
        self,
        snapshot: Snapshot,
        runtime: Runtime,
        mirror_next: AsyncHandler,
        next: AsyncHandler,
        slots: threading.BoundedSemaphore | None = None,
        background: AsyncBackground | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.runtime = runtime
        self.mirror_next = mirror_next
        self.next = next
        self.slots = slots if slots is not None else _MIRROR_SLOTS
        self.background = background if background is not None else AsyncBackground()

    async def handle(self, call: Call) -> Outcome:
        """Start the mirrors the route asks for, then pass the call down."""
        for target in call.route.mirrors:
            if sampled(self.runtime.rng, target.share):
                self._start(call, target)
        return await self.next.handle(call)

    def _start(self, call: Call, target: MirrorTarget) -> None:
        d = call.decision
        spec = self.snapshot.cluster_for(target.choice, call.port)
        cluster = self.runtime.clusters.get(spec.name) if spec is not None else None
        if cluster is None:
            d.note(f"mirror to {target.choice.host} skipped: no such cluster")
            return
        name = cluster.name
        if not call.replayable:
            d.note(f"mirror to {name} skipped: request body not buffered")
            return
        if not self.slots.acquire(blocking=False):
            d.note(f"mirror to {name} dropped: {MIRRORS_IN_FLIGHT} mirrors already in flight")
            return
        copy = _mirror_call(call, cluster, self.runtime.clock(), call.route)
        try:
            self.background.spawn(self._send, copy)
        except RuntimeError as exc:  # no asyncio loop (trio), or the client is closed
            self.slots.release()
            d.note(f"mirror to {name} skipped: cannot start it ({exc})")
            return
        d.note(f"mirrored to {name}")

    async def _send(self, call: Call) -> None:
        """Send one copy and drop its answer; its failures are its own."""
        try:
            if self.background.closed:  # the client closed before this copy started
                return
            outcome = await self.mirror_next.handle(call)
            if outcome.native is not None:
                await _discard(outcome.native, call)
        except Exception as exc:  # a mirror never fails anything but itself: it is only logged
            log.debug("mirror %s %s%s failed: %s", call.method, call.authority, call.path, exc)
        finally:
            self.slots.release()


def _mirror_call(call: Call, cluster: Any, now: float, route: RouteEntry) -> Call:
    """The copy of `call` a mirror sends: what the call sends upstream (rewrites and header
    operations applied), with `-shadow` added to the authority, and its own decision record."""
    headers = call.send_headers if call.send_headers is not None else call.raw_headers()
    sent = next((v.decode("latin-1") for k, v in headers if k.lower() == b"host"), call.authority)
    host = cluster.spec.host
    copy = Call(
        direction=call.direction,
        protocol=call.protocol,
        scheme=call.scheme,
        host=host,
        port=call.port,
        authority=shadow_authority(sent),
        method=call.method,
        target=call.send_target,
        headers=call._headers,
        native=call.native,
        replayable=True,
        decision=Decision(call.decision.snapshot_version, host),
        deadline=now + (route.timeout or MIRROR_TIMEOUT),
    )
    copy.send_headers = with_authority(headers, copy.authority)
    copy.mesh_metadata = call.mesh_metadata  # telemetry on: the same trace context goes along
    copy.trace_headers = call.trace_headers
    copy.route = route
    copy.cluster = cluster
    copy.decision.route = f"mirror of {route.name}"
    copy.decision.destination = cluster.name
    return copy


def egress_denied(snapshot: Snapshot, name: str, host: str | None, port: int) -> EgressDeniedError:
    """The error for a call the Sidecar's REGISTRY_ONLY mode refuses (flag NR, as Envoy's
    BlackHoleCluster): `name` as the caller wrote it, `host` the mesh service it resolved to
    (None: none)."""
    egress = snapshot.egress
    assert egress is not None
    d = Decision(snapshot.version, host or name)
    d.add_flag("NR")
    hosts = ", ".join(egress.written) or "none"
    if host is None:
        why = f"{name} is not a mesh service (no ServiceEntry or VirtualService declares it)"
    else:
        where = f" on port {port}" if port not in egress.by_port and egress.default is None else ""
        why = f"{host} is a mesh service, but the egress hosts do not import it{where}"
    d.reason = (
        f"egress to {name}:{port} refused: {egress.source} has outboundTrafficPolicy "
        f"REGISTRY_ONLY, which allows only the mesh services it imports, and {why} "
        f"(egress hosts: {hosts})"
    )
    return EgressDeniedError(d.reason, d)


class RouteTimeoutFilter:
    """Route tier, above retries: the route `timeout` is one absolute deadline over every
    attempt and the back-off between them, including reading the response body."""

    def __init__(self, clock: Callable[[], float], next: AsyncHandler) -> None:
        self.clock = clock
        self.next = next

    async def handle(self, call: Call) -> Outcome:
        """Set the call's deadline from the route timeout and pass down."""
        timeout = call.route.timeout
        if timeout:
            deadline = self.clock() + timeout
            if deadline < call.deadline:
                call.deadline = deadline
        return await self.next.handle(call)


class RetryFilter:
    """Route tier, below the route timeout and above the per-try timeout: decides, by the
    route's retry policy, whether an attempt's result is retried, waits Envoy's jittered
    back-off, reads and closes a response it discards, and turns a final failure into the
    error that says what was tried. A body that was not buffered is never replayed."""

    def __init__(self, runtime: Runtime, next: AsyncHandler) -> None:
        self.runtime = runtime
        self.next = next

    async def handle(self, call: Call) -> Outcome:
        """Try, and retry while the policy allows and time remains."""
        policy = call.route.retry
        allowed = policy.num_retries if call.replayable else 0
        clock = self.runtime.clock
        retries = 0
        # A retry counts in the cluster's circuit breaker (maxRetries, the retry budget) from
        # the decision to retry until its attempt ends, back-off included (Envoy's accounting).
        breaker = call.cluster.breaker
        retrying = False
        overflow = ""
        try:
            while True:
                try:
                    outcome = await self.next.handle(call)
                finally:
                    if retrying:
                        retrying = False
                        breaker.end_retry()
                if allowed == 0:
                    break
                attempt = call.decision.attempts[-1]
                cond = retry_condition(policy, outcome.status, outcome.grpc_status, attempt.failure)
                if cond is None:
                    break
                if retries >= allowed:
                    call.decision.add_flag("URX")
                    break
                delay = backoff_delay(
                    retries + 1, self.runtime.rng, policy.backoff_base, policy.backoff_cap
                )
                if clock() + delay >= call.deadline:
                    break
                # Envoy checks the retry circuit breaker last: over it, the result stands (UO)
                spec = call.cluster.spec
                budget = spec.retry_budget
                pool = spec.connection_pool
                overflow = breaker.begin_retry(
                    budget.percent,
                    budget.min_retry_concurrency,
                    pool.max_retries if pool is not None else None,
                )
                if overflow:
                    call.decision.add_flag("UO")
                    call.decision.reason = f"{call.decision.service}: not retried: {overflow}"
                    break
                retrying = True
                attempt.retry_on = cond
                if outcome.native is not None:
                    await _discard(outcome.native, call)
                retries += 1
                if delay > 0:
                    await async_sleep(delay)
        finally:
            if retrying:
                breaker.end_retry()
        if outcome.native is None:
            raise _failure_error(call, retries, clock(), overflow)
        return outcome


async def _discard(response: Any, call: Call) -> None:
    """Read and close a response that a retry replaces, so its connection can be reused."""
    try:
        await response.aread()
    except Exception:  # a broken body only costs the connection, which httpcore drops
        pass
    finally:
        await response.aclose()


def _failure_error(call: Call, retries: int, now: float, overflow: str = "") -> Exception:
    """The error for a call whose last attempt produced no response (`overflow`: the limit
    that stopped a retry, if one did)."""
    d = call.decision
    attempts = d.attempts
    last = attempts[-1]
    tried = "; ".join(a.describe() for a in attempts)
    n = len(attempts)
    what = f"{n} attempt" + ("s" if n != 1 else "")
    route = call.route
    if last.failure in _TIMEOUTS or now >= call.deadline:
        d.add_flag("UT")
        limits = []
        if last.failure == Failure.TIMEOUT:
            limits.append("the client's own httpx timeout")
        if route.timeout:
            limits.append(f"timeout {route.timeout:g}s")
        if route.retry.per_try_timeout:
            limits.append(f"perTryTimeout {route.retry.per_try_timeout:g}s")
        d.reason = (
            f"{d.service}: timed out after {what} ({', '.join(limits) or 'transport timeout'}; "
            f"{route.name}): {tried}"
        )
        return MeshTimeoutError(d.reason, d)
    flag = "UF" if last.failure == Failure.CONNECT else "UC"
    d.add_flag(flag)
    if overflow:  # a retry was due, but the circuit breaker (UO) said no
        d.reason = (
            f"{d.service}: upstream {last.failure} on {what}, not retried: {overflow} "
            f"({route.name}): {tried}"
        )
        cls = RetriesExhaustedError if retries > 0 else UpstreamConnectError
        return cls(d.reason, d)
    if retries > 0 or "URX" in d.flags:
        d.add_flag("URX")
        d.reason = (
            f"{d.service}: retries exhausted after {what} ({route.retry.describe()}; "
            f"{route.name}): {tried}"
        )
        return RetriesExhaustedError(d.reason, d)
    why = "" if call.replayable else " (request body not buffered, so not retried)"
    d.reason = f"{d.service}: upstream {last.failure} on {what}{why} ({route.name}): {tried}"
    return UpstreamConnectError(d.reason, d)


class PerTryTimeoutFilter:
    """Route tier, last (below retries, so each attempt gets its own): the attempt deadline is
    the sooner of the route deadline and now + perTryTimeout."""

    def __init__(self, clock: Callable[[], float], next: AsyncHandler) -> None:
        self.clock = clock
        self.next = next

    async def handle(self, call: Call) -> Outcome:
        """Set this attempt's deadline and pass down."""
        ptt = call.route.retry.per_try_timeout
        if ptt:
            d = self.clock() + ptt
            call.attempt_deadline = d if d < call.deadline else call.deadline
        else:
            call.attempt_deadline = call.deadline
        return await self.next.handle(call)


class CircuitBreakerFilter:
    """Balancer tier, first: the cluster's connection-pool limits (Envoy's circuit breakers:
    http2MaxRequests, maxConnections, http1MaxPendingRequests), per attempt. It sits where
    Envoy checks them — at the cluster, once the route tier has decided to send an attempt —
    below the per-try timeout (a pending attempt waits within its own deadline) and above the
    balancer (an attempt that overflows never takes an endpoint, and one that waited picks
    among the endpoints healthy when its slot frees). Over a limit the attempt fails at once
    (CircuitOpenError, flag UO); a pending one waits at most until its deadline or the connect
    timeout. The slot is released when the attempt's endpoint in-flight count drops (its body
    closed or its failure), see `pymesh.runtime.EndpointState`."""

    def __init__(self, runtime: Runtime, next: AsyncHandler) -> None:
        self.runtime = runtime
        self.next = next

    async def handle(self, call: Call) -> Outcome:
        """Admit the attempt (or make it wait, or refuse it) and pass down."""
        cluster = call.cluster
        breaker = cluster.breaker
        admission, waiter = breaker.admit(cluster.spec.connection_pool, AsyncSignal)
        if admission != "go":
            if waiter is None:
                raise _overflow(call, admission)
            start = self.runtime.clock()
            pool = cluster.spec.connection_pool
            connect = pool.connect_timeout or ConnectionPoolSettings.DEFAULT_CONNECT_TIMEOUT
            until = min(call.attempt_deadline, start + connect)
            try:
                granted = await waiter.signal.wait(until - start)
            except BaseException:
                if breaker.give_up(waiter):
                    breaker.release()
                raise
            if not granted and not breaker.give_up(waiter):
                raise _pending_expired(call, self.runtime.clock(), start)
        tried = len(call.tried)
        try:
            return await self.next.handle(call)
        except BaseException:
            if len(call.tried) == tried:  # no endpoint took the attempt: free its slot
                breaker.unadmit()
            raise


def _who(call: Call) -> str:
    """`reviews v1` — the destination as a circuit-breaker message names it."""
    spec = call.cluster.spec
    host = spec.host
    if host.endswith(".svc.cluster.local"):
        host = host.split(".", 1)[0]
    return f"{host} {spec.subset}" if spec.subset else host


def _overflow(call: Call, admission: str) -> CircuitOpenError:
    """The error for an attempt a connection-pool limit refused."""
    cluster = call.cluster
    pool = cluster.spec.connection_pool
    breaker = cluster.breaker
    if admission == "overflow-requests":
        limit = f"http2MaxRequests {pool.http2_max_requests}"
    else:
        limit = f"http1MaxPendingRequests {pool.http1_max_pending_requests}"
    d = call.decision
    d.add_flag("UO")
    d.reason = (
        f"circuit open: {_who(call)} {limit} reached ({breaker.active} requests active, "
        f"{breaker.pending} pending; connectionPool of {cluster.name})"
    )
    if d.attempts:
        d.reason += "; tried: " + "; ".join(a.describe() for a in d.attempts)
    return CircuitOpenError(d.reason, d)


def _pending_expired(call: Call, now: float, start: float) -> Exception:
    """The error for an attempt that waited for a connection slot until its deadline or the
    connect timeout."""
    cluster = call.cluster
    pool = cluster.spec.connection_pool
    d = call.decision
    waited = f"waited {now - start:.3g}s for a connection: maxConnections {pool.max_connections}"
    if now >= call.attempt_deadline - _SLACK:
        d.add_flag("UT")
        d.reason = f"{d.service}: timed out: {waited} reached ({call.route.name})"
        return MeshTimeoutError(d.reason, d)
    d.add_flag("UO")
    d.reason = (
        f"circuit open: {_who(call)} maxConnections {pool.max_connections} reached and no "
        f"connection freed within the connect timeout ({now - start:.3g}s pending; "
        f"connectionPool of {cluster.name})"
    )
    return CircuitOpenError(d.reason, d)


class BalancerFilter:
    """Balancer tier: pick the endpoint for this attempt from the cluster's healthy endpoints
    (outlier ejections applied), preferring one no earlier attempt of this call used. With
    consistent hashing, the call's hash key is computed once, on its first attempt (every
    retry hashes alike), from the request as the caller sent it."""

    def __init__(self, runtime: Runtime, next: AsyncHandler) -> None:
        self.runtime = runtime
        self.next = next

    async def handle(self, call: Call) -> Outcome:
        """Pick, record the choice, and pass down; nothing to pick is flag UH."""
        cluster = call.cluster
        spec = cluster.spec.hash
        if spec is not None and not call.tried:
            call.hash_key, call.set_cookie = request_hash(
                spec,
                call.header,
                call.query,
                self.runtime.snapshot.source_address,
                self.runtime.rng,
            )
            call.decision.endpoint_reason = _hash_reason(spec.key, spec.name, call)
        ep = cluster.pick(self.runtime.clock(), self.runtime.rng, call.tried, call.hash_key)
        if ep is None:
            d = call.decision
            d.add_flag("UH")
            total = len(cluster.endpoints)
            if total:
                ejected = cluster.ejected_count(self.runtime.clock())
                why = f"{ejected} of {total} ejected by outlier detection"
            else:
                why = "no endpoints defined"
            d.reason = f"{d.service}: no healthy endpoint in {cluster.name} ({why})"
            if d.attempts:
                d.reason += "; tried: " + "; ".join(a.describe() for a in d.attempts)
            raise NoHealthyEndpointError(d.reason, d)
        call.endpoint = ep
        call.tried.append(ep)
        if not call.decision.endpoint_reason:
            call.decision.endpoint_reason = cluster.balancer.name
        return await self.next.handle(call)


def _hash_reason(kind: str, name: str, call: Call) -> str:
    """`RING_HASH on header x-user`, for the decision record."""
    what = "the source address" if kind == "source_ip" else f"{kind} {name}"
    if call.hash_key is None:
        return f"{call.cluster.balancer.name}: no {what} in the request, a random endpoint"
    made = " (generated, set on the response)" if call.set_cookie else ""
    return f"{call.cluster.balancer.name} on {what}{made}"


class EndpointFilter:
    """Endpoint tier: count the request in flight (least request reads it), send, classify a
    failure the way Envoy names upstream resets, and feed the result to outlier detection.
    The in-flight count drops when the response body is closed."""

    def __init__(self, runtime: Runtime, sender: AsyncSender) -> None:
        self.runtime = runtime
        self.sender = sender

    async def handle(self, call: Call) -> Outcome:
        """Send one attempt to `call.endpoint`."""
        ep = call.endpoint
        clock = self.runtime.clock
        attempt = Attempt(ep.label)
        call.decision.attempts.append(attempt)
        start = clock()
        ep.acquire()
        try:
            response = await self.sender.send(call)
        except httpcore.TimeoutException as exc:
            ep.release()
            now = clock()
            if isinstance(exc, httpcore.PoolTimeout):
                failure = Failure.OVERFLOW
            elif isinstance(exc, httpcore.ConnectTimeout) and now < call.attempt_deadline - _SLACK:
                failure = Failure.CONNECT
            elif now >= call.deadline - _SLACK:
                failure = Failure.ROUTE_TIMEOUT
            elif now >= call.attempt_deadline - _SLACK:
                failure = Failure.PER_TRY_TIMEOUT
            else:
                failure = Failure.TIMEOUT
            return self._failed(call, attempt, failure, start, now, exc)
        except httpcore.ConnectError as exc:
            ep.release()
            return self._failed(call, attempt, Failure.CONNECT, start, clock(), exc)
        except httpcore.WriteError as exc:
            ep.release()
            return self._failed(call, attempt, Failure.RESET_BEFORE_REQUEST, start, clock(), exc)
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            ep.release()
            return self._failed(call, attempt, Failure.RESET, start, clock(), exc)
        except BaseException:
            ep.release()
            raise
        now = clock()
        attempt.duration = now - start
        status = response.status
        attempt.status = status
        if status >= 500:
            reason = call.cluster.record(ep, status, False, now)
            if reason:
                call.decision.endpoint_reason = f"{ep.label} ejected: {reason}"
        elif ep.outlier.consecutive_5xx:
            call.cluster.record(ep, status, False, now)
        return Outcome(status, response, call.decision, endpoint=ep)

    def _failed(
        self, call: Call, attempt: Attempt, failure: str, start: float, now: float, exc: Exception
    ) -> Outcome:
        attempt.failure = failure
        attempt.duration = now - start
        if isinstance(exc, PeerRejectedError):
            attempt.detail = str(exc)  # the TLS peer failed the SPIFFE checks: say which
        if failure != Failure.OVERFLOW:
            reason = call.cluster.record(call.endpoint, None, True, now)
            if reason:
                call.decision.endpoint_reason = f"{call.endpoint.label} ejected: {reason}"
        return Outcome(None, None, call.decision, error=exc, endpoint=call.endpoint)


def build_client_stack(
    snapshot: Snapshot,
    runtime: Runtime,
    sender: AsyncSender,
    background: AsyncBackground | None = None,
) -> RouterFilter:
    """Compose the outbound stack for one snapshot (top filter returned); mirrors run as
    `background` work (the client's, which its close waits for)."""
    clock = runtime.clock
    endpoint = EndpointFilter(runtime, sender)
    balancer = BalancerFilter(runtime, endpoint)
    breaker = CircuitBreakerFilter(runtime, balancer)
    per_try = PerTryTimeoutFilter(clock, breaker)
    retry = RetryFilter(runtime, per_try)
    timeout = RouteTimeoutFilter(clock, retry)
    top: AsyncHandler = timeout
    if snapshot.has_mirrors:  # copies go straight to the balancer tier: no timeout, no retries
        top = MirrorFilter(snapshot, runtime, breaker, top, background=background)
    if snapshot.has_faults:
        top = FaultFilter(runtime, top)
    return RouterFilter(snapshot, runtime, top)
