"""The client stack: every filter a meshed call passes through, in order, and why there.

How this works: `build_client_stack` composes filter objects, each `handle(call) -> Outcome`
calling the next. The tiers follow DESIGN.md:

1. route tier (rebuilt whenever a new snapshot arrives):
   RouterFilter → RouteTimeoutFilter → RetryFilter → PerTryTimeoutFilter
2. balancer tier (per cluster; state lives in `pymesh.runtime.ClusterState`):
   BalancerFilter
3. endpoint tier (per address; state in `EndpointState`, kept across snapshots):
   EndpointFilter → the native sender (`AsyncEndpointSender`, httpcore with mTLS later)

Every decision is made by `pymesh.policy`; filters call `next`, sleep, record and raise.
This file is the async source; `pymesh/_sync/stack.py` is generated from it by
`scripts/unasync.py` — edit here, then run `make unasync`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import httpcore

from pymesh._shim import async_sleep
from pymesh.call import Attempt, Call, Outcome
from pymesh.errors import (
    MeshTimeoutError,
    NoHealthyEndpointError,
    NoRouteError,
    RetriesExhaustedError,
    UpstreamConnectError,
)
from pymesh.policy.balancer import choose_weighted
from pymesh.policy.retry import Failure, backoff_delay, retry_condition
from pymesh.policy.routing import first_match
from pymesh.runtime import Runtime
from pymesh.snapshot import Snapshot

# Timeouts close to the deadline count as the deadline's (timer granularity).
_SLACK = 0.002
_TIMEOUTS = (Failure.ROUTE_TIMEOUT, Failure.PER_TRY_TIMEOUT, Failure.TIMEOUT)


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
    retry stays on the destination (subset) the split chose."""

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
        return await self.next.handle(call)


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
        while True:
            outcome = await self.next.handle(call)
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
            attempt.retry_on = cond
            if outcome.native is not None:
                await _discard(outcome.native, call)
            retries += 1
            if delay > 0:
                await async_sleep(delay)
        if outcome.native is None:
            raise _failure_error(call, retries, clock())
        return outcome


async def _discard(response: Any, call: Call) -> None:
    """Read and close a response that a retry replaces, so its connection can be reused."""
    try:
        await response.aread()
    except Exception:  # a broken body only costs the connection, which httpcore drops
        pass
    finally:
        await response.aclose()


def _failure_error(call: Call, retries: int, now: float) -> Exception:
    """The error for a call whose last attempt produced no response."""
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


class BalancerFilter:
    """Balancer tier: pick the endpoint for this attempt from the cluster's healthy endpoints
    (outlier ejections applied), preferring one no earlier attempt of this call used."""

    def __init__(self, runtime: Runtime, next: AsyncHandler) -> None:
        self.runtime = runtime
        self.next = next

    async def handle(self, call: Call) -> Outcome:
        """Pick, record the choice, and pass down; nothing to pick is flag UH."""
        cluster = call.cluster
        ep = cluster.pick(self.runtime.clock(), self.runtime.rng, call.tried)
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
        ep.active += 1
        try:
            response = await self.sender.send(call)
        except httpcore.TimeoutException as exc:
            ep.active -= 1
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
            ep.active -= 1
            return self._failed(call, attempt, Failure.CONNECT, start, clock(), exc)
        except httpcore.WriteError as exc:
            ep.active -= 1
            return self._failed(call, attempt, Failure.RESET_BEFORE_REQUEST, start, clock(), exc)
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            ep.active -= 1
            return self._failed(call, attempt, Failure.RESET, start, clock(), exc)
        except BaseException:
            ep.active -= 1
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
        if failure != Failure.OVERFLOW:
            reason = call.cluster.record(call.endpoint, None, True, now)
            if reason:
                call.decision.endpoint_reason = f"{call.endpoint.label} ejected: {reason}"
        return Outcome(None, None, call.decision, error=exc, endpoint=call.endpoint)


def build_client_stack(snapshot: Snapshot, runtime: Runtime, sender: AsyncSender) -> RouterFilter:
    """Compose the outbound stack for one snapshot (top filter returned)."""
    clock = runtime.clock
    endpoint = EndpointFilter(runtime, sender)
    balancer = BalancerFilter(runtime, endpoint)
    per_try = PerTryTimeoutFilter(clock, balancer)
    retry = RetryFilter(runtime, per_try)
    timeout = RouteTimeoutFilter(clock, retry)
    return RouterFilter(snapshot, runtime, timeout)
