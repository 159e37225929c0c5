"""Retry decisions with Envoy's `retryOn` semantics and its full-jitter back-off.

`RetryPolicy.from_istio` turns a VirtualService `retries` block (or its absence) into a policy;
`retry_condition` says which condition, if any, makes an attempt's result retriable;
`backoff_delay` is Envoy's exponential back-off with full jitter (25 ms base, 250 ms cap).
Failures that never produced a response are named by `Failure` constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymesh.policy.balancer import RandomSource


class Failure:
    """Why an attempt produced no response (Envoy's upstream reset reasons)."""

    CONNECT = "connect-failure"  # the TCP/TLS connection could not be made
    RESET_BEFORE_REQUEST = "reset-before-request"  # connection dropped before the request went out
    RESET = "reset"  # connection dropped after the request went out, before a response
    REFUSED_STREAM = "refused-stream"  # HTTP/2 REFUSED_STREAM
    PER_TRY_TIMEOUT = "per-try-timeout"  # perTryTimeout elapsed
    TIMEOUT = "timeout"  # a transport read/write timeout (not pymesh's deadline)
    ROUTE_TIMEOUT = "route-timeout"  # the route's timeout: over for every attempt, never retried
    OVERFLOW = "overflow"  # a connection-pool limit refused the attempt


GRPC_CODES = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}

# What Istio's users get when a VirtualService says nothing about retries (DESIGN.md): never a
# 5xx, because a replayed non-idempotent request can pay twice.
DEFAULT_RETRY_ON = (
    "connect-failure",
    "refused-stream",
    "reset-before-request",
    "unavailable",
    "cancelled",
)
DEFAULT_ATTEMPTS = 2
BACKOFF_BASE = 0.025
BACKOFF_CAP = 0.25

_RESETS = frozenset({Failure.RESET, Failure.PER_TRY_TIMEOUT, Failure.TIMEOUT})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry, on what, and how long each try may take."""

    num_retries: int
    retry_on: frozenset[str]
    retriable_status_codes: frozenset[int] = frozenset()
    grpc_codes: frozenset[int] = frozenset()
    per_try_timeout: float | None = None
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP

    @classmethod
    def from_istio(
        cls,
        attempts: int | None,
        retry_on: tuple[str, ...] | None,
        per_try_timeout: float | None,
    ) -> RetryPolicy:
        """Build from `retries.attempts / retryOn / perTryTimeout` (None → Istio's defaults)."""
        tokens = DEFAULT_RETRY_ON if retry_on is None else retry_on
        conditions: set[str] = set()
        codes: set[int] = set()
        grpc: set[int] = set()
        for tok in tokens:
            tok = tok.strip()
            if tok.isdigit():
                codes.add(int(tok))
                conditions.add("retriable-status-codes")
            elif tok in GRPC_CODES:
                grpc.add(GRPC_CODES[tok])
            elif tok:
                conditions.add(tok)
        return cls(
            num_retries=DEFAULT_ATTEMPTS if attempts is None else attempts,
            retry_on=frozenset(conditions),
            retriable_status_codes=frozenset(codes),
            grpc_codes=frozenset(grpc),
            per_try_timeout=per_try_timeout,
        )

    def describe(self) -> str:
        """A short human summary for error messages."""
        on = sorted(self.retry_on | {str(c) for c in self.retriable_status_codes})
        on += sorted(k for k, v in GRPC_CODES.items() if v in self.grpc_codes)
        ptt = f", perTryTimeout {self.per_try_timeout:g}s" if self.per_try_timeout else ""
        return f"{self.num_retries} retries on {','.join(on) or 'nothing'}{ptt}"


NO_RETRY = RetryPolicy(num_retries=0, retry_on=frozenset())


def retry_condition(
    policy: RetryPolicy,
    status: int | None,
    grpc_status: int | None = None,
    failure: str | None = None,
) -> str | None:
    """The retryOn condition that makes this result retriable, or None.

    Give `failure` (a `Failure` constant) when the attempt produced no response, else the
    response `status` and, for gRPC, the `grpc_status` from headers/trailers-only responses.
    """
    on = policy.retry_on
    if failure is not None:
        if failure == Failure.CONNECT:
            for c in ("connect-failure", "5xx", "gateway-error", "reset"):
                if c in on:
                    return c
            return None
        if failure == Failure.REFUSED_STREAM:
            for c in ("refused-stream", "5xx", "gateway-error", "reset"):
                if c in on:
                    return c
            return None
        if failure == Failure.RESET_BEFORE_REQUEST:
            for c in ("reset-before-request", "reset", "5xx", "gateway-error"):
                if c in on:
                    return c
            return None
        if failure in _RESETS:
            for c in ("reset", "5xx", "gateway-error"):
                if c in on:
                    return c
            return None
        return None
    if status is not None:
        if status >= 500:
            if "5xx" in on:
                return "5xx"
            if "gateway-error" in on and status in (502, 503, 504):
                return "gateway-error"
        elif status == 409 and "retriable-4xx" in on:
            return "retriable-4xx"
        if "retriable-status-codes" in on and status in policy.retriable_status_codes:
            return "retriable-status-codes"
    if grpc_status is not None and grpc_status in policy.grpc_codes:
        for name, code in GRPC_CODES.items():
            if code == grpc_status:
                return name
    return None


def backoff_delay(
    retry_number: int,
    rng: RandomSource,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
) -> float:
    """Envoy's back-off before retry number `retry_number` (1 for the first retry):
    full jitter, uniform in [0, min(cap, base * (2**n - 1))]."""
    ceiling = min(cap, base * ((1 << retry_number) - 1))
    return rng.random() * ceiling
