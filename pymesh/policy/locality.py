"""Locality load balancing: Istio's priorities and weights, and Envoy's priority load.

Istio turns `localityLbSetting` into Envoy priorities and locality weights per client; Envoy
then spreads load over the priorities by their health. Both halves are here, pure:

- `plan_localities` (at snapshot compile): each endpoint's priority seen from the client —
  same region/zone/subzone 0, same zone 1, same region 2, other regions 3, and 4 for regions a
  `failover` rule of the client's region does not name; with `failoverPriority`, by matching
  labels first (and the locality order under it when `failover` is also set) — or, with
  `distribute`, a weight per endpoint locality (localities it leaves out get no traffic).
  As in Istio, failover priorities need outlierDetection (without it nothing ever fails over,
  so Istio does not set them), and `enabled: false` turns all of this off.
- `priority_load` (per pick, cached by the cluster): Envoy's overprovisioning factor 1.4 — a
  priority level with at least 1/1.4 ≈ 71 % of its endpoints healthy takes all the traffic it
  is given; below that it keeps `1.4 × healthy share` and the rest spills to the next level.
  When every level is unhealthy, all traffic goes to level 0 (Envoy's "everything is terrible").
- `locality_availability` does the same per locality for `distribute` weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

OVERPROVISIONING = 1.4

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
NETWORK_LABEL = "topology.istio.io/network"

Locality = tuple[str, str, str]


def parse_locality(text: str) -> Locality:
    """`region/zone/subzone` (missing parts empty)."""
    parts = text.split("/", 2) if text else []
    parts += [""] * (3 - len(parts))
    return (parts[0], parts[1], parts[2])


def locality_matches(locality: Locality, pattern: str) -> bool:
    """Istio's LocalityMatch: `*` or an empty zone/subzone in the pattern matches anything."""
    region, zone, subzone = parse_locality(pattern)
    return (
        (region == "*" or region == locality[0])
        and (zone in ("*", "") or zone == locality[1])
        and (subzone in ("*", "") or subzone == locality[2])
    )


def lb_priority(client: Locality, endpoint: Locality) -> int:
    """Istio's LbPriority: 0 same subzone, 1 same zone, 2 same region, 3 elsewhere."""
    if client[0] == endpoint[0]:
        if client[1] == endpoint[1]:
            return 0 if client[2] == endpoint[2] else 1
        return 2
    return 3


def topology_labels(labels: Mapping[str, str], locality: str, network: str = "") -> dict[str, str]:
    """`labels` plus the topology labels Istio derives from a locality and network (explicit
    labels win), so `failoverPriority` can name them."""
    region, zone, subzone = parse_locality(locality)
    out = {REGION_LABEL: region, ZONE_LABEL: zone, SUBZONE_LABEL: subzone}
    if network:
        out[NETWORK_LABEL] = network
    out.update(labels)
    return out


def label_priority(
    order: Sequence[str], client: Mapping[str, str], endpoint: Mapping[str, str]
) -> int:
    """Istio's failoverPriority: N labels; matching all is 0, matching the first k (but not the
    k+1-th) is N-k. A `key=value` item compares the endpoint with that value, not the client's."""
    n = len(order)
    for j, item in enumerate(order):
        key, eq, value = item.partition("=")
        want = value if eq else client.get(key, "")
        if endpoint.get(key, "") != want:
            return n - j
    return 0


class LocalitySetting(Protocol):
    """The part of `pymesh.config.model.LocalityLbSetting` planning reads."""

    @property
    def distribute(self) -> Sequence[DistributeRule]:
        """`distribute[]` rules."""
        ...

    @property
    def failover(self) -> Sequence[tuple[str, str]]:
        """`failover[]` (from region, to region)."""
        ...

    @property
    def failover_priority(self) -> Sequence[str]:
        """`failoverPriority[]` label keys or key=value."""
        ...

    @property
    def enabled(self) -> bool | None:
        """`enabled` (None = unset: enabled)."""
        ...


class DistributeRule(Protocol):
    """One `distribute[]` rule."""

    @property
    def from_(self) -> str:
        """The client locality pattern."""
        ...

    @property
    def to(self) -> Sequence[tuple[str, int]]:
        """(endpoint locality pattern, weight) pairs."""
        ...


class PlanEndpoint(Protocol):
    """An endpoint as locality planning sees it."""

    @property
    def locality(self) -> str:
        """`region/zone/subzone` or ""."""
        ...

    @property
    def labels(self) -> Mapping[str, str]:
        """Its labels."""
        ...

    @property
    def weight(self) -> int:
        """Its load-balancing weight."""
        ...


def _specificity(pattern: str) -> tuple[int, int]:
    parts = [p for p in pattern.split("/") if p]
    return (-sum(1 for p in parts if p != "*"), -len(parts))


def _distribute(
    client: Locality, endpoints: Sequence[PlanEndpoint], rules: Sequence[DistributeRule]
) -> dict[str, int] | None:
    """Istio's applyLocalityWeights: the first rule whose `from` matches the client gives each
    endpoint locality a weight (the pattern's weight shared in proportion to the endpoints'
    summed weights); localities no pattern names get 0. Most specific pattern first (Istio's
    order is Go's map order)."""
    for rule in rules:
        if not locality_matches(client, rule.from_):
            continue
        groups: dict[str, int] = {}
        for e in endpoints:
            groups[e.locality] = groups.get(e.locality, 0) + max(1, e.weight)
        out = dict.fromkeys(groups, 0)
        unclaimed = set(groups)
        for pattern, weight in sorted(rule.to, key=lambda pw: _specificity(pw[0])):
            claimed = [loc for loc in groups if loc in unclaimed]
            claimed = [loc for loc in claimed if locality_matches(parse_locality(loc), pattern)]
            total = sum(groups[loc] for loc in claimed)
            for loc in claimed:
                unclaimed.discard(loc)
                out[loc] = math.ceil(groups[loc] * weight / total)
        return out
    return None


def _normalize(priorities: list[int]) -> list[int]:
    """Renumber priorities 0..k without gaps, keeping their order."""
    rank = {p: i for i, p in enumerate(sorted(set(priorities)))}
    return [rank[p] for p in priorities]


def plan_localities(
    client_locality: str,
    client_labels: Mapping[str, str],
    endpoints: Sequence[PlanEndpoint],
    setting: LocalitySetting | None,
    outlier_detection: bool,
) -> tuple[list[int], dict[str, int] | None]:
    """Each endpoint's priority (0 = first choice) and, for `distribute`, the weight of each
    endpoint locality (None when traffic is not locality-weighted).

    `setting` None is Istio's mesh-wide default (locality LB enabled, no rules). Without a
    client locality, the locality order does not apply (every endpoint is priority 0);
    `failoverPriority` on labels still does.
    """
    n = len(endpoints)
    flat = [0] * n
    if setting is not None and setting.enabled is False:
        return flat, None
    client = parse_locality(client_locality)
    if setting is not None and setting.distribute:
        if not client_locality:
            return flat, None
        return flat, _distribute(client, endpoints, setting.distribute)
    if not outlier_detection:
        return flat, None
    failover = setting.failover if setting is not None else ()
    order = setting.failover_priority if setting is not None else ()

    def by_locality(e: PlanEndpoint) -> int:
        if not client_locality:
            return 0
        loc = parse_locality(e.locality)
        p = lb_priority(client, loc)
        if p == 3:
            for src, dst in failover:
                if src == client[0]:
                    if loc[0] != dst:
                        p = 4
                    break
        return p

    if order:
        me = topology_labels(client_labels, client_locality)
        prios = [
            label_priority(order, me, topology_labels(e.labels, e.locality)) for e in endpoints
        ]
        if failover:
            prios = [p * 5 + by_locality(e) for p, e in zip(prios, endpoints, strict=True)]
        return _normalize(prios), None
    return _normalize([by_locality(e) for e in endpoints]), None


def _health(healthy: int, total: int) -> float:
    return min(1.0, OVERPROVISIONING * healthy / total) if total else 0.0


def priority_load(healthy: Sequence[int], total: Sequence[int]) -> list[float]:
    """Envoy's priority load: the share of traffic (summing to 1) each priority level takes,
    given its healthy and total endpoint counts, with the 1.4 overprovisioning factor.
    Normalized when the levels together are less than fully available; all to level 0 when
    nothing is healthy."""
    health = [_health(h, t) for h, t in zip(healthy, total, strict=True)]
    available = min(1.0, sum(health))
    if available <= 0.0:
        return [1.0] + [0.0] * (len(health) - 1)
    loads = []
    left = 1.0
    for h in health:
        share = min(left, h / available)
        loads.append(share)
        left -= share
    if left > 1e-12:  # rounding: the first level with health takes the remainder
        for i, h in enumerate(health):
            if h > 0:
                loads[i] += left
                break
    return loads


def locality_availability(healthy: int, total: int) -> float:
    """A locality's availability for locality-weighted balancing (Envoy: weight × this)."""
    return _health(healthy, total)


def choose_index(weights: Sequence[float], x: float) -> int:
    """The index whose cumulative share of `weights` contains `x` in [0, 1)."""
    total = sum(weights)
    if total <= 0:
        return 0
    target = x * total
    run = 0.0
    last = 0
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        run += w
        last = i
        if target < run:
            return i
    return last


class LocalityEndpoint(Protocol):
    """An endpoint as `Layers` sees it: its priority and locality."""

    @property
    def priority(self) -> int:
        """0 = first choice."""
        ...

    @property
    def locality(self) -> str:
        """`region/zone/subzone`."""
        ...


class Layers:
    """The healthy endpoints of a cluster split by priority (and by locality when weighted),
    with each level's share of traffic: built when the healthy set changes, read per pick.

    `everyone` is every endpoint of the cluster, `healthy` the ones that may take traffic,
    `weights` the `distribute` weight of each locality (None: not locality-weighted).
    """

    __slots__ = ("loads", "localities", "pools")

    def __init__(
        self,
        everyone: Sequence[LocalityEndpoint],
        healthy: Sequence[LocalityEndpoint],
        weights: Mapping[str, int] | None = None,
    ) -> None:
        levels = 1 + max((e.priority for e in everyone), default=0)
        totals = [0] * levels
        for e in everyone:
            totals[e.priority] += 1
        pools: list[list[LocalityEndpoint]] = [[] for _ in range(levels)]
        for e in healthy:
            pools[e.priority].append(e)
        self.pools = pools
        self.loads = priority_load([len(p) for p in pools], totals)
        # per level: (locality pools, their effective weights) when locality-weighted
        self.localities: list[tuple[list[list[LocalityEndpoint]], list[float]]] = []
        if weights is not None:
            loc_totals: dict[tuple[int, str], int] = {}
            for e in everyone:
                k = (e.priority, e.locality)
                loc_totals[k] = loc_totals.get(k, 0) + 1
            for level, pool in enumerate(pools):
                by_loc: dict[str, list[LocalityEndpoint]] = {}
                for e in pool:
                    by_loc.setdefault(e.locality, []).append(e)
                groups = list(by_loc.values())
                eff = [
                    weights.get(loc, 0) * locality_availability(len(g), loc_totals[(level, loc)])
                    for loc, g in by_loc.items()
                ]
                self.localities.append((groups, eff))

    def choose(self, x: float, y: float, hashed: bool) -> Sequence[LocalityEndpoint]:
        """The endpoints to balance over: the priority level `x` in [0, 1) falls in, then (when
        locality-weighted and not `hashed`) the locality `y` falls in. Consistent hashing
        balances over the whole level, as Envoy's hash balancers ignore locality weights."""
        level = choose_index(self.loads, x)
        if self.localities and not hashed:
            groups, eff = self.localities[level]
            if groups and sum(eff) > 0:
                return groups[choose_index(eff, y)]
        pool = self.pools[level]
        if pool:
            return pool
        return next(p for p in self.pools if p)  # defensive: a level with load has endpoints

    def __repr__(self) -> str:
        loads = ", ".join(f"{x:.2f}" for x in self.loads)
        return f"Layers(levels={len(self.pools)}, loads=[{loads}])"
