"""Locality load balancing as tables: Istio's priorities and weights seen from a client, and
Envoy's priority load with the 1.4 overprovisioning factor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from pymesh.config.model import LocalityDistribute, LocalityLbSetting
from pymesh.policy.locality import (
    Layers,
    choose_index,
    label_priority,
    lb_priority,
    locality_matches,
    parse_locality,
    plan_localities,
    priority_load,
)


@dataclass(frozen=True)
class Ep:
    locality: str
    labels: Mapping[str, str] = field(default_factory=dict)
    weight: int = 1
    priority: int = 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("us-east/a/1", ("us-east", "a", "1")),
        ("us-east/a", ("us-east", "a", "")),
        ("us-east", ("us-east", "", "")),
        ("", ("", "", "")),
    ],
)
def test_parse_locality(text: str, expected: tuple[str, str, str]) -> None:
    assert parse_locality(text) == expected


@pytest.mark.parametrize(
    ("loc", "pattern", "ok"),
    [
        ("us-east/a/1", "*", True),
        ("us-east/a/1", "us-east/*", True),
        ("us-east/a/1", "us-east", True),
        ("us-east/a/1", "us-east/a/*", True),
        ("us-east/a/1", "us-east/a/1", True),
        ("us-east/a/1", "us-east/b/*", False),
        ("us-east/a/1", "us-west/*", False),
        ("us-east/a/1", "us-east/a/2", False),
    ],
)
def test_locality_matches(loc: str, pattern: str, ok: bool) -> None:
    assert locality_matches(parse_locality(loc), pattern) is ok


@pytest.mark.parametrize(
    ("endpoint", "priority"),
    [
        ("r1/z1/s1", 0),
        ("r1/z1/s2", 1),
        ("r1/z2/s1", 2),
        ("r2/z1/s1", 3),
    ],
)
def test_lb_priority(endpoint: str, priority: int) -> None:
    assert lb_priority(parse_locality("r1/z1/s1"), parse_locality(endpoint)) == priority


ENDPOINTS = [
    Ep("r1/z1/s1"),
    Ep("r1/z1/s2"),
    Ep("r1/z2/s1"),
    Ep("r2/z1/s1"),
    Ep("r3/z1/s1"),
]


@pytest.mark.parametrize(
    ("client", "setting", "outlier", "priorities"),
    [
        # Istio's default (mesh-wide locality LB on): subzone, zone, region, other
        ("r1/z1/s1", None, True, [0, 1, 2, 3, 3]),
        ("r1/z1/s1", LocalityLbSetting(), True, [0, 1, 2, 3, 3]),
        # without outlier detection nothing would ever fail over: Istio sets no priorities
        ("r1/z1/s1", None, False, [0, 0, 0, 0, 0]),
        ("r1/z1/s1", LocalityLbSetting(enabled=False), True, [0, 0, 0, 0, 0]),
        # no client locality: nothing to be near
        ("", None, True, [0, 0, 0, 0, 0]),
        # failover r1 -> r3: r3 comes before other regions
        ("r1/z1/s1", LocalityLbSetting(failover=(("r1", "r3"),)), True, [0, 1, 2, 4, 3]),
        # a failover rule for another region changes nothing for this client
        ("r1/z1/s1", LocalityLbSetting(failover=(("r2", "r3"),)), True, [0, 1, 2, 3, 3]),
        # gaps are closed: the region-level level is renumbered
        ("r2/z9/s9", None, True, [1, 1, 1, 0, 1]),
    ],
)
def test_failover_priorities(
    client: str, setting: LocalityLbSetting | None, outlier: bool, priorities: list[int]
) -> None:
    got, weights = plan_localities(client, {}, ENDPOINTS, setting, outlier)
    assert got == [sorted(set(priorities)).index(p) for p in priorities]
    assert weights is None


@pytest.mark.parametrize(
    ("order", "client", "endpoint", "priority"),
    [
        (("version", "zone"), {"version": "v1", "zone": "a"}, {"version": "v1", "zone": "a"}, 0),
        (("version", "zone"), {"version": "v1", "zone": "a"}, {"version": "v1", "zone": "b"}, 1),
        (("version", "zone"), {"version": "v1", "zone": "a"}, {"version": "v2", "zone": "a"}, 2),
        (("version=v2",), {"version": "v1"}, {"version": "v2"}, 0),
        (("version=v2",), {"version": "v2"}, {"version": "v1"}, 1),
    ],
)
def test_label_priority(
    order: tuple[str, ...], client: dict[str, str], endpoint: dict[str, str], priority: int
) -> None:
    assert label_priority(order, client, endpoint) == priority


def test_failover_priority_by_labels_and_topology() -> None:
    eps = [
        Ep("r1/z1/s1", {"net": "n1"}),
        Ep("r1/z2/s1", {"net": "n1"}),
        Ep("r1/z1/s1", {"net": "n2"}),
    ]
    setting = LocalityLbSetting(failover_priority=("net", "topology.kubernetes.io/zone"))
    prios, _ = plan_localities("r1/z1/s1", {"net": "n1"}, eps, setting, True)
    assert prios == [0, 1, 2]


def test_failover_priority_with_failover_combines_labels_then_region() -> None:
    eps = [Ep("r1/z1/s1", {"v": "1"}), Ep("r3/z1/s1", {"v": "1"}), Ep("r2/z1/s1", {"v": "1"})]
    setting = LocalityLbSetting(failover_priority=("v",), failover=(("r1", "r2"),))
    prios, _ = plan_localities("r1/z1/s1", {"v": "1"}, eps, setting, True)
    assert prios == [0, 2, 1]  # r2 is the failover region; r3 after it


def test_distribute_weights_localities_and_drops_the_rest() -> None:
    eps = [Ep("r1/z1/s1"), Ep("r1/z1/s1"), Ep("r1/z2/s1"), Ep("r2/z1/s1"), Ep("r3/z1/s1")]
    setting = LocalityLbSetting(
        distribute=(LocalityDistribute("r1/z1/*", (("r1/*", 80), ("r2/z1/*", 20))),)
    )
    prios, weights = plan_localities("r1/z1/s1", {}, eps, setting, False)
    assert prios == [0] * 5
    # r1's 80 shared by endpoint count (2 in z1, 1 in z2), ceil as Istio; r3 unnamed: 0
    assert weights == {"r1/z1/s1": 54, "r1/z2/s1": 27, "r2/z1/s1": 20, "r3/z1/s1": 0}


def test_distribute_for_another_client_locality_does_nothing() -> None:
    setting = LocalityLbSetting(distribute=(LocalityDistribute("r9/*", (("r1/*", 100),)),))
    prios, weights = plan_localities("r1/z1/s1", {}, ENDPOINTS, setting, True)
    assert prios == [0] * 5 and weights is None


@pytest.mark.parametrize(
    ("healthy", "total", "loads"),
    [
        ([2, 2], [2, 2], [1.0, 0.0]),
        ([1, 2], [2, 2], [0.7, 0.3]),  # 1.4 x 50 %: 70 % stays, the rest spills over
        ([3, 4], [4, 4], [1.0, 0.0]),  # 75 % healthy x 1.4 > 100 %: all stays
        ([0, 2], [2, 2], [0.0, 1.0]),
        ([0, 0], [2, 2], [1.0, 0.0]),  # everything is terrible: level 0
        ([1, 1], [4, 4], [0.5, 0.5]),  # 35 % + 35 %: normalized
        ([0, 1, 4], [2, 4, 4], [0.0, 0.35, 0.65]),
        ([5], [5], [1.0]),
    ],
)
def test_priority_load(healthy: list[int], total: list[int], loads: list[float]) -> None:
    assert priority_load(healthy, total) == pytest.approx(loads)


@pytest.mark.parametrize(
    ("weights", "x", "index"),
    [
        ([1.0, 0.0], 0.99, 0),
        ([0.7, 0.3], 0.69, 0),
        ([0.7, 0.3], 0.71, 1),
        ([0.0, 1.0], 0.0, 1),
        ([0.0, 0.0], 0.5, 0),
    ],
)
def test_choose_index(weights: list[float], x: float, index: int) -> None:
    assert choose_index(weights, x) == index


def test_layers_keep_traffic_local_spill_by_health_and_weight_localities() -> None:
    local = [Ep("a/a/a", priority=0), Ep("a/a/a", priority=0)]
    remote = [Ep("b/b/b", priority=1), Ep("b/b/b", priority=1)]
    everyone = local + remote
    layers = Layers(everyone, everyone)
    assert all(layers.choose(x / 100, 0.5, False)[0].locality == "a/a/a" for x in range(100))
    half = Layers(everyone, [local[0], *remote])
    chosen = Counter(half.choose(x / 100, 0.5, False)[0].locality for x in range(100))
    assert chosen == {"a/a/a": 70, "b/b/b": 30}
    gone = Layers(everyone, remote)
    assert gone.choose(0.0, 0.5, False) == remote

    a, b = Ep("a/a/a"), Ep("b/b/b")
    weighted = Layers([a, b], [a, b], {"a/a/a": 75, "b/b/b": 25})
    picks = Counter(weighted.choose(0.5, y / 100, False)[0].locality for y in range(100))
    assert picks == {"a/a/a": 75, "b/b/b": 25}
    # consistent hashing ignores locality weights (Envoy's hash balancers do)
    assert weighted.choose(0.5, 0.9, True) == [a, b]
