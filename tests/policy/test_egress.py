"""Sidecar tables: which Sidecar applies to a workload, and which hosts its egress imports."""

from __future__ import annotations

import pytest

from pymesh.config.model import EgressListener, Meta, Sidecar, SidecarPort
from pymesh.policy.egress import compile_egress, select_sidecar, visible_hosts

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
DETAILS = "details.prod.svc.cluster.local"
TELEMETRY = "telemetry.istio-system.svc.cluster.local"
API = "api.example.com"
HOSTS = {
    REVIEWS: "default",
    RATINGS: "default",
    DETAILS: "prod",
    TELEMETRY: "istio-system",
    API: "prod",
}


def sidecar(
    name: str,
    ns: str = "default",
    selector: dict[str, str] | None = None,
    egress: tuple[EgressListener, ...] = (),
    mode: str | None = None,
) -> Sidecar:
    return Sidecar(Meta("Sidecar", "networking.istio.io/v1", name, ns), selector, egress, mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sidecars", "namespace", "labels", "chosen"),
    [
        ([], "default", {"app": "a"}, None),
        ([sidecar("ns-default")], "default", {"app": "a"}, "ns-default"),
        ([sidecar("ns-default")], "prod", {"app": "a"}, None),
        # a matching selector beats the namespace default, wherever it is written
        (
            [sidecar("ns-default"), sidecar("mine", selector={"app": "a"})],
            "default",
            {"app": "a"},
            "mine",
        ),
        (
            [sidecar("ns-default"), sidecar("other", selector={"app": "b"})],
            "default",
            {"app": "a"},
            "ns-default",
        ),
        # the root namespace's default applies where a namespace has none
        ([sidecar("mesh", "istio-system")], "prod", {}, "mesh"),
        ([sidecar("mesh", "istio-system"), sidecar("p", "prod")], "prod", {}, "p"),
        # a selector in the root namespace selects nothing elsewhere
        ([sidecar("sel", "istio-system", selector={"app": "a"})], "prod", {"app": "a"}, None),
        # the first matching one wins
        ([sidecar("one", selector={}), sidecar("two", selector={})], "default", {}, "one"),
    ],
)
def test_select_sidecar(
    sidecars: list[Sidecar], namespace: str, labels: dict[str, str], chosen: str | None
) -> None:
    got = select_sidecar(sidecars, namespace, labels)
    assert (got.meta.name if got else None) == chosen


@pytest.mark.parametrize(
    ("hosts", "visible"),
    [
        (["*/*"], set(HOSTS)),
        (["./*"], {REVIEWS, RATINGS}),  # the Sidecar's own namespace (default)
        (["istio-system/*"], {TELEMETRY}),
        (["~/*"], set()),  # nothing
        ([f"*/{REVIEWS}"], {REVIEWS}),  # Istio's `*/reviews.default.svc.cluster.local`
        (["prod/*.example.com"], {API}),
        (["default/*.example.com"], set()),  # declared in prod, not default
        (["prod/details"], {DETAILS}),  # a short name, read from its namespace
        (["./ratings", "istio-system/*"], {RATINGS, TELEMETRY}),
    ],
)
def test_visible_hosts(hosts: list[str], visible: set[str]) -> None:
    assert visible_hosts(hosts, "default", HOSTS) == visible


def test_ports_and_catch_all() -> None:
    sc = sidecar(
        "s",
        egress=(
            EgressListener(("./reviews",), SidecarPort(9080)),
            EgressListener(("istio-system/*",)),
        ),
        mode="REGISTRY_ONLY",
    )
    policy = compile_egress(sc, HOSTS)
    assert policy.registry_only
    assert policy.allows(REVIEWS, 9080)
    assert not policy.allows(REVIEWS, 80)  # only imported on its listener's port
    assert not policy.allows(TELEMETRY, 9080)  # port 9080 has its own listener
    assert policy.allows(TELEMETRY, 80)
    assert policy.source == "Sidecar default/s"
    assert policy.written == ("./reviews (port 9080)", "istio-system/*")


def test_no_catch_all_sees_nothing_on_other_ports() -> None:
    sc = sidecar("s", egress=(EgressListener(("*/*",), SidecarPort(9080)),))
    policy = compile_egress(sc, HOSTS)
    assert policy.allows(RATINGS, 9080)
    assert not policy.allows(RATINGS, 80)


def test_without_egress_every_service_is_visible_and_mode_defaults_to_allow_any() -> None:
    policy = compile_egress(sidecar("s"), HOSTS)
    assert all(policy.allows(h, 1) for h in HOSTS)
    assert not policy.registry_only
    assert policy.mode == "ALLOW_ANY"
