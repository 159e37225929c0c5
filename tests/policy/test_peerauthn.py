"""PeerAuthentication: Istio's precedence (workload > namespace > mesh, UNSET inherits,
portLevelMtls) and what each mode admits."""

from __future__ import annotations

import pytest

from pymesh.config import load_text
from pymesh.config.model import PeerAuthentication
from pymesh.policy.peerauthn import (
    Admission,
    ListenerTls,
    Mode,
    PeerAuthnPolicy,
    Transport,
    admit,
    listener_tls,
)

WORKLOAD = {"app": "reviews", "version": "v1"}


def pa(name: str, ns: str, mode: str | None, selector: str = "", ports: str = "") -> str:
    spec = []
    if selector:
        spec.append(f"  selector: {{matchLabels: {{{selector}}}}}")
    if mode:
        spec.append(f"  mtls: {{mode: {mode}}}")
    if ports:
        spec.append(f"  portLevelMtls: {{{ports}}}")
    body = "\n".join(spec) if spec else "  {}"
    return (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n"
    )


def compile_(*docs: str, ns: str = "default", labels: dict[str, str] = WORKLOAD) -> PeerAuthnPolicy:
    cs = load_text("---\n".join(docs))
    ps = [r for r in cs.resources if isinstance(r, PeerAuthentication)]
    return PeerAuthnPolicy.compile(ps, namespace=ns, labels=labels)


MESH_STRICT = pa("mesh", "istio-system", "STRICT")
MESH_UNSET = pa("mesh", "istio-system", "UNSET")
NS_PERMISSIVE = pa("ns", "default", "PERMISSIVE")
NS_DISABLE = pa("ns", "default", "DISABLE")
NS_UNSET = pa("ns", "default", None)
WL_STRICT = pa("wl", "default", "STRICT", "app: reviews")
WL_UNSET = pa("wl", "default", "UNSET", "app: reviews")
WL_OTHER = pa("other", "default", "DISABLE", "app: ratings")

PRECEDENCE = [
    ("nothing: PERMISSIVE", [], "PERMISSIVE", ()),
    ("mesh", [MESH_STRICT], "STRICT", ("istio-system/mesh",)),
    ("mesh UNSET", [MESH_UNSET], "PERMISSIVE", ()),
    (
        "namespace over mesh",
        [MESH_STRICT, NS_PERMISSIVE],
        "PERMISSIVE",
        ("default/ns", "istio-system/mesh"),
    ),
    ("namespace UNSET inherits", [MESH_STRICT, NS_UNSET], "STRICT", ("istio-system/mesh",)),
    ("workload over namespace", [NS_DISABLE, WL_STRICT], "STRICT", ("default/wl", "default/ns")),
    ("workload UNSET inherits", [NS_DISABLE, WL_UNSET], "DISABLE", ("default/ns",)),
    ("workload UNSET to mesh", [MESH_STRICT, NS_UNSET, WL_UNSET], "STRICT", ("istio-system/mesh",)),
    ("other workload's policy", [NS_PERMISSIVE, WL_OTHER], "PERMISSIVE", ("default/ns",)),
    ("other namespace", [pa("ns", "prod", "STRICT")], "PERMISSIVE", ()),
    (
        "root-namespace selector ignored",
        [pa("sel", "istio-system", "STRICT", "app: reviews")],
        "PERMISSIVE",
        (),
    ),
    (
        "first of a level wins",
        [pa("a", "default", "DISABLE"), pa("b", "default", "STRICT")],
        "DISABLE",
        ("default/a",),
    ),
]


@pytest.mark.parametrize(
    ("docs", "mode", "decided_by"),
    [c[1:] for c in PRECEDENCE],
    ids=[c[0] for c in PRECEDENCE],
)
def test_precedence(docs: list[str], mode: Mode, decided_by: tuple[str, ...]) -> None:
    policy = (
        compile_(*docs) if docs else PeerAuthnPolicy.compile([], namespace="default", labels={})
    )
    assert policy.mode == mode
    assert policy.decided_by == decided_by
    assert policy.mode_for(9080) == mode


def test_workload_in_the_root_namespace_uses_the_mesh_policy() -> None:
    policy = compile_(MESH_STRICT, ns="istio-system")
    assert policy.mode == "STRICT"


def test_port_level_mtls() -> None:
    docs = [
        MESH_STRICT,
        pa("wl", "default", "UNSET", "app: reviews", "8080: {mode: DISABLE}, 9090: {mode: UNSET}"),
    ]
    policy = compile_(*docs)
    assert policy.mode == "STRICT"
    assert policy.mode_for(8080) == "DISABLE"
    assert policy.mode_for(9090) == "STRICT"  # UNSET: the workload's effective mode
    assert policy.mode_for(9080) == "STRICT"


def test_port_level_mtls_of_an_unselected_workload_is_ignored() -> None:
    doc = pa("wl", "default", "STRICT", "app: ratings", "8080: {mode: DISABLE}")
    assert compile_(doc).mode_for(8080) == "PERMISSIVE"


ADMISSION: list[tuple[Mode, Transport, bool, bool]] = [
    ("STRICT", "plaintext", False, False),
    ("STRICT", "tls", False, False),
    ("STRICT", "mtls", True, True),
    ("PERMISSIVE", "plaintext", True, False),
    ("PERMISSIVE", "tls", True, False),
    ("PERMISSIVE", "mtls", True, True),
    ("DISABLE", "plaintext", True, False),
    ("DISABLE", "tls", True, False),
    ("DISABLE", "mtls", True, False),
]


@pytest.mark.parametrize(("mode", "transport", "allowed", "identity"), ADMISSION)
def test_admission(mode: Mode, transport: Transport, allowed: bool, identity: bool) -> None:
    decision = admit(mode, transport)
    assert isinstance(decision, Admission)
    assert (decision.allowed, decision.use_identity) == (allowed, identity)
    assert decision.reason


def test_strict_refusals_say_why() -> None:
    assert admit("STRICT", "plaintext").reason == "plaintext refused: mTLS is STRICT"
    assert "without a client certificate" in admit("STRICT", "tls").reason


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("STRICT", ListenerTls(True, True, "required")),
        ("PERMISSIVE", ListenerTls(True, False, "optional")),
        ("DISABLE", ListenerTls(False, False, "none")),
    ],
)
def test_listener_tls(mode: Mode, expected: ListenerTls) -> None:
    assert listener_tls(mode) == expected
