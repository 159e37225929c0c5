"""Load balancers: round robin, random, least request (power of two choices), and the
consistent-hash balancers of `pymesh.policy.hashing` (ring hash, Maglev).

A balancer picks one endpoint from the candidates the cluster hands it (already filtered for
ejection). `avoid` holds endpoints an earlier attempt of the same call used: a retry prefers
another endpoint (Envoy's previous-hosts predicate) but falls back to them when nothing else is
left. Endpoints only need an `active` attribute (requests in flight) for least request.
Every balancer takes the call's hash `key` (None when there is none); only hashing reads it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

from pymesh.policy.hashing import HashPolicy


class RandomSource(Protocol):
    """The part of `random.Random` the policies use; tests pass a seeded instance."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def randrange(self, stop: int, /) -> int:
        """An int in [0, stop)."""
        ...


class HasActive(Protocol):
    """An endpoint as the least-request balancer sees it."""

    @property
    def active(self) -> int:
        """Requests in flight to this endpoint."""
        ...


E = TypeVar("E", bound=HasActive)


def _without(candidates: Sequence[E], avoid: Collection[E]) -> Sequence[E]:
    if not avoid:
        return candidates
    rest = [e for e in candidates if e not in avoid]
    return rest or candidates


class RoundRobinPolicy:
    """Cycle through candidates in order. Holds only the cursor."""

    name = "ROUND_ROBIN"
    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def pick(
        self,
        candidates: Sequence[E],
        rng: RandomSource,
        avoid: Collection[E] = (),
        key: int | None = None,
    ) -> E:
        """The next candidate in turn (skipping `avoid` when something else is left)."""
        pool = _without(candidates, avoid)
        i = self._next % len(pool)
        self._next = i + 1
        return pool[i]

    def __repr__(self) -> str:
        return f"RoundRobinPolicy(next={self._next})"


class RandomPolicy:
    """Uniform random choice."""

    name = "RANDOM"
    __slots__ = ()

    def pick(
        self,
        candidates: Sequence[E],
        rng: RandomSource,
        avoid: Collection[E] = (),
        key: int | None = None,
    ) -> E:
        """A uniformly random candidate (skipping `avoid` when something else is left)."""
        pool = _without(candidates, avoid)
        return pool[rng.randrange(len(pool))] if len(pool) > 1 else pool[0]

    def __repr__(self) -> str:
        return "RandomPolicy()"


class LeastRequestPolicy:
    """Power of two choices: sample two distinct candidates, take the one with fewer requests
    in flight (the first on a tie). Istio's and Finagle's default."""

    name = "LEAST_REQUEST"
    __slots__ = ()

    def pick(
        self,
        candidates: Sequence[E],
        rng: RandomSource,
        avoid: Collection[E] = (),
        key: int | None = None,
    ) -> E:
        """The less loaded of two random candidates."""
        pool = _without(candidates, avoid)
        n = len(pool)
        if n == 1:
            return pool[0]
        i = rng.randrange(n)
        j = rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = pool[i], pool[j]
        return b if b.active < a.active else a

    def __repr__(self) -> str:
        return "LeastRequestPolicy()"


Balancer = RoundRobinPolicy | RandomPolicy | LeastRequestPolicy | HashPolicy


def balancer_for(name: str | None, size: int = 0) -> Balancer:
    """The balancer for a cluster's policy name: a `loadBalancer.simple` value (None →
    LEAST_REQUEST), or RING_HASH / MAGLEV with `size` (minimum ring size / table size).

    PASSTHROUGH has no meaning without an original destination to pass to; pymesh sends to the
    declared endpoints and balances them as LEAST_REQUEST, and `analyze` says so.
    """
    if name == "RING_HASH":
        return HashPolicy("RING_HASH", size or 1024)
    if name == "MAGLEV":
        return HashPolicy("MAGLEV", size or 65537)
    if name == "ROUND_ROBIN":
        return RoundRobinPolicy()
    if name == "RANDOM":
        return RandomPolicy()
    return LeastRequestPolicy()


def choose_weighted(cumulative: Sequence[int], total: int, rng: RandomSource) -> int:
    """Index of the weighted choice. `cumulative` holds running sums of the weights
    (e.g. weights 80, 20 → [80, 100]); zero-weight entries are never chosen."""
    if len(cumulative) == 1:
        return 0
    x = rng.random() * total
    for i, c in enumerate(cumulative):
        if x < c:
            return i
    return len(cumulative) - 1
