"""Fault injection and percentage tables: Istio's translation to millionths, independent
delay/abort draws with a seeded RNG, and the rates they produce."""

from __future__ import annotations

import random

import pytest

from pymesh.config.model import FaultAbort, FaultDelay, HTTPFaultInjection
from pymesh.policy.fault import GRPC_STATUS_CODES, NO_FAULT, FaultPolicy, decide_fault
from pymesh.policy.sampling import MILLION, millionths, sampled


@pytest.mark.parametrize(
    ("percentage", "expected"),
    [
        (None, 0),  # unset: none (Istio's behaviour)
        (0.0, 0),
        (0.0001, 1),
        (0.5, 5_000),
        (10.0, 100_000),
        (33.33335, 333_333),  # truncated, as uint32(value * 10000)
        (100.0, MILLION),
    ],
)
def test_millionths(percentage: float | None, expected: int) -> None:
    assert millionths(percentage) == expected


class Fixed:
    """A random source that always returns `value`."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.value

    def randrange(self, stop: int, /) -> int:
        return 0


@pytest.mark.parametrize(
    ("share", "draw", "hit", "draws"),
    [
        (0, 0.0, False, 0),  # 0 %: never, no draw
        (MILLION, 0.999, True, 0),  # 100 %: always, no draw
        (100_000, 0.0999, True, 1),
        (100_000, 0.1, False, 1),  # the boundary is excluded
    ],
)
def test_sampled(share: int, draw: float, hit: bool, draws: int) -> None:
    rng = Fixed(draw)
    assert sampled(rng, share) is hit
    assert rng.draws == draws


def policy(
    delay: float | None = None,
    abort: int | None = None,
    grpc: str | None = None,
    dpct: float | None = 100.0,
    apct: float | None = 100.0,
) -> FaultPolicy:
    return FaultPolicy.from_istio(
        HTTPFaultInjection(
            delay=FaultDelay(delay, dpct) if delay is not None else None,
            abort=FaultAbort(abort, grpc, apct) if abort is not None or grpc else None,
        )
    )


def test_from_istio() -> None:
    p = policy(delay=1.5, abort=503, dpct=10, apct=0.5)
    assert (p.delay, p.delay_share, p.abort_status, p.abort_grpc, p.abort_share) == (
        1.5,
        100_000,
        503,
        None,
        5_000,
    )
    assert policy(grpc="UNAVAILABLE").abort_grpc == 14
    assert GRPC_STATUS_CODES["NOT_FOUND"] == 5
    assert p.describe() == "delay 1.5s for 10%, abort 503 for 0.5%"


@pytest.mark.parametrize(
    ("p", "draw", "expected"),
    [
        (policy(delay=2.0), 0.5, (2.0, False)),
        (policy(abort=500), 0.5, (0.0, True)),
        (policy(delay=2.0, abort=500), 0.5, (2.0, True)),  # both, independently
        (policy(delay=2.0, abort=500, dpct=40, apct=60), 0.5, (0.0, True)),
        (policy(delay=2.0, abort=500, dpct=60, apct=40), 0.5, (2.0, False)),
        (policy(delay=2.0, dpct=None), 0.0, (0.0, False)),  # unset percentage: never
        (policy(abort=500, apct=None), 0.0, (0.0, False)),
        (policy(grpc="UNAVAILABLE", apct=100), 0.5, (0.0, True)),
    ],
)
def test_decide_fault(p: FaultPolicy, draw: float, expected: tuple[float, bool]) -> None:
    assert tuple(decide_fault(p, Fixed(draw))) == expected


def test_no_fault_is_shared() -> None:
    assert decide_fault(policy(delay=1.0, dpct=0), Fixed(0.0)) is NO_FAULT


def test_rates_with_a_seeded_rng() -> None:
    rng = random.Random(42)
    p = policy(delay=1.0, abort=503, dpct=25, apct=10)
    n = 20_000
    decisions = [decide_fault(p, rng) for _ in range(n)]
    delayed = sum(1 for d in decisions if d.delay)
    aborted = sum(1 for d in decisions if d.abort)
    both = sum(1 for d in decisions if d.delay and d.abort)
    assert abs(delayed / n - 0.25) < 0.015
    assert abs(aborted / n - 0.10) < 0.01
    assert abs(both / n - 0.025) < 0.006  # independent draws
