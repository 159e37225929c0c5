"""Percentages as Envoy applies them: a share of requests, decided per request by a random draw.

Istio turns `percentage.value` (a double, 0..100) into Envoy's `FractionalPercent` with
denominator one million (`numerator = uint32(value * 10000)`, truncated), and an integer
`percent` into the same scale. `sampled` draws once from the injected random source.
"""

from __future__ import annotations

from pymesh.policy.balancer import RandomSource

MILLION = 1_000_000


def millionths(percentage: float | None) -> int:
    """Istio's translation of a percentage (0..100) to millionths; None (unset) is 0."""
    if percentage is None or percentage <= 0:
        return 0
    return min(MILLION, int(percentage * 10_000))


def sampled(rng: RandomSource, share: int) -> bool:
    """Whether this request falls in `share` millionths of requests (no draw at 0 or 100 %)."""
    if share >= MILLION:
        return True
    if share <= 0:
        return False
    return rng.random() * MILLION < share
