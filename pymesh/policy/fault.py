"""Fault injection: whether to delay a request, and whether to abort it, as Envoy's fault filter.

Istio's semantics: the delay and the abort of one `fault` are decided independently, each for
its own percentage of requests (unset means none, as Istio does); the delay is served first,
then the abort. A faulted request is not retried and its delay does not count against the
route timeout, because Envoy runs the fault filter before the router — pymesh places the fault
filter above the route timeout and retries for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from pymesh.config.model import HTTPFaultInjection
from pymesh.policy.balancer import RandomSource
from pymesh.policy.sampling import millionths, sampled

# gRPC status code names (https://grpc.github.io/grpc/core/md_doc_statuscodes.html)
GRPC_STATUS_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """A compiled `fault`: delay seconds and its share (millionths), abort status and its share."""

    delay: float = 0.0
    delay_share: int = 0
    abort_status: int | None = None
    abort_grpc: int | None = None
    abort_share: int = 0

    @classmethod
    def from_istio(cls, fault: HTTPFaultInjection) -> FaultPolicy:
        """Compile a validated `HTTPFaultInjection`."""
        delay = fault.delay
        abort = fault.abort
        return cls(
            delay=delay.fixed_delay if delay is not None else 0.0,
            delay_share=millionths(delay.percentage) if delay is not None else 0,
            abort_status=abort.http_status if abort is not None else None,
            abort_grpc=(
                GRPC_STATUS_CODES[abort.grpc_status]
                if abort is not None and abort.grpc_status is not None
                else None
            ),
            abort_share=millionths(abort.percentage) if abort is not None else 0,
        )

    def describe(self) -> str:
        """`delay 5s for 10%, abort 503 for 1%` — for notes and explain."""
        parts = []
        if self.delay:
            parts.append(f"delay {self.delay:g}s for {self.delay_share / 10_000:g}%")
        if self.abort_status is not None or self.abort_grpc is not None:
            what = (
                f"gRPC status {self.abort_grpc}"
                if self.abort_grpc is not None
                else str(self.abort_status)
            )
            parts.append(f"abort {what} for {self.abort_share / 10_000:g}%")
        return ", ".join(parts) or "no fault"


class FaultDecision(NamedTuple):
    """What to do to one request: wait `delay` seconds (0: no delay), then abort or not."""

    delay: float
    abort: bool


NO_FAULT = FaultDecision(0.0, False)


def decide_fault(policy: FaultPolicy, rng: RandomSource) -> FaultDecision:
    """Draw the delay, then the abort, each with its own share of requests."""
    delay = policy.delay if policy.delay and sampled(rng, policy.delay_share) else 0.0
    has_abort = policy.abort_status is not None or policy.abort_grpc is not None
    abort = has_abort and sampled(rng, policy.abort_share)
    if not delay and not abort:
        return NO_FAULT
    return FaultDecision(delay, abort)
