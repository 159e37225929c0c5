"""Load balancer and weighted-choice tables (seeded RNG)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from pymesh.policy.balancer import (
    LeastRequestPolicy,
    RandomPolicy,
    RoundRobinPolicy,
    balancer_for,
    choose_weighted,
)


@dataclass(eq=False)
class Ep:
    name: str
    active: int = 0


def eps(*actives: int) -> list[Ep]:
    return [Ep(f"e{i}", a) for i, a in enumerate(actives)]


def test_round_robin_cycles_in_order() -> None:
    pool = eps(0, 0, 0)
    rr = RoundRobinPolicy()
    picked = [rr.pick(pool, random.Random(1)).name for _ in range(7)]
    assert picked == ["e0", "e1", "e2", "e0", "e1", "e2", "e0"]


def test_round_robin_skips_avoided_but_falls_back() -> None:
    pool = eps(0, 0)
    rr = RoundRobinPolicy()
    assert rr.pick(pool, random.Random(1), avoid=[pool[0]]) is pool[1]
    assert rr.pick(pool, random.Random(1), avoid=pool) in pool


def test_random_is_uniform() -> None:
    pool = eps(0, 0, 0, 0)
    rng = random.Random(7)
    counts = Counter(RandomPolicy().pick(pool, rng).name for _ in range(8000))
    assert all(1800 < c < 2200 for c in counts.values()), counts


@pytest.mark.parametrize(
    ("actives", "never"),
    [
        ((5, 0), "e0"),  # with two endpoints P2C always compares both
        ((0, 9), "e1"),
    ],
)
def test_least_request_two_endpoints_always_takes_idler(
    actives: tuple[int, ...], never: str
) -> None:
    pool = eps(*actives)
    rng = random.Random(3)
    assert all(LeastRequestPolicy().pick(pool, rng).name != never for _ in range(200))


def test_least_request_p2c_prefers_idle_endpoints() -> None:
    pool = eps(10, 0, 10, 10)
    rng = random.Random(11)
    counts = Counter(LeastRequestPolicy().pick(pool, rng).name for _ in range(4000))
    # e1 wins every pair it is in: P(e1 sampled in a pair of 4) = 1/2
    assert 1800 < counts["e1"] < 2200, counts
    assert sum(counts.values()) == 4000


def test_least_request_avoids_previous_attempt() -> None:
    pool = eps(0, 5)
    rng = random.Random(5)
    assert all(LeastRequestPolicy().pick(pool, rng, avoid=[pool[0]]) is pool[1] for _ in range(50))


def test_balancer_for_names() -> None:
    assert isinstance(balancer_for("ROUND_ROBIN"), RoundRobinPolicy)
    assert isinstance(balancer_for("RANDOM"), RandomPolicy)
    assert isinstance(balancer_for("LEAST_REQUEST"), LeastRequestPolicy)
    assert isinstance(balancer_for(None), LeastRequestPolicy)
    assert isinstance(balancer_for("UNSPECIFIED"), LeastRequestPolicy)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((80, 20), (0.80, 0.20)),
        ((50, 50), (0.5, 0.5)),
        ((0, 100), (0.0, 1.0)),
        ((10, 30, 60), (0.1, 0.3, 0.6)),
    ],
)
def test_choose_weighted_follows_weights(
    weights: tuple[int, ...], expected: tuple[float, ...]
) -> None:
    cum = []
    run = 0
    for w in weights:
        run += w
        cum.append(run)
    rng = random.Random(42)
    n = 20000
    counts = Counter(choose_weighted(cum, run, rng) for _ in range(n))
    for i, share in enumerate(expected):
        assert abs(counts[i] / n - share) < 0.015
    if 0 in weights:
        assert counts[weights.index(0)] == 0


def test_choose_weighted_single_destination_uses_no_randomness() -> None:
    class Boom(random.Random):
        def random(self) -> float:
            raise AssertionError("no RNG for one destination")

    assert choose_weighted([100], 100, Boom()) == 0
