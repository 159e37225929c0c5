"""PeerAuthentication: which mTLS mode a workload's server requires, and what it admits.

Istio's precedence, for a workload in `namespace` with `labels`:

1. the **workload** policy: in the workload's namespace (not the root), with a `selector`
   whose matchLabels the workload has;
2. else/below it the **namespace** policy: in the workload's namespace, no selector;
3. else/below it the **mesh** policy: in the root namespace (`istio-system` by default), no
   selector. A root-namespace policy *with* a selector is ignored (as Istio does).

Each level's `UNSET` inherits the level above it; with nothing set the mode is PERMISSIVE.
When a level has several policies, the first one in configuration order wins (Istio takes the
oldest). `portLevelMtls` (workload policies only) overrides the mode for a port the workload
listens on; a port-level `UNSET` inherits the workload's mode.

What each mode admits (`admit`):

| mode | plaintext | TLS, no client certificate | mTLS (verified client certificate) |
| --- | --- | --- | --- |
| STRICT | refused | refused | admitted, identity used |
| PERMISSIVE | admitted, no identity | admitted, no identity | admitted, identity used |
| DISABLE | admitted, no identity | admitted, no identity | admitted, identity **not** used |

Under DISABLE the server should not terminate mTLS at all (`listener_tls`); the identity of a
peer that presents a certificate anyway is not used, as Istio's sidecar would not see it.

    from pymesh.policy.peerauthn import PeerAuthnPolicy, admit

    pa = PeerAuthnPolicy.compile(cs.of(PeerAuthentication), namespace="default",
                                 labels={"app": "reviews"})       # once per snapshot
    decision = admit(pa.mode_for(port), "plaintext")             # per connection
    if not decision.allowed: close the connection (log decision.reason)

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from pymesh.config.model import PeerAuthentication

__all__ = [
    "DEFAULT_ROOT_NAMESPACE",
    "Admission",
    "ListenerTls",
    "Mode",
    "PeerAuthnPolicy",
    "Transport",
    "admit",
    "listener_tls",
    "selector_matches",
]

DEFAULT_ROOT_NAMESPACE = "istio-system"

Mode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
Transport = Literal["plaintext", "tls", "mtls"]


def selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Whether workload `labels` carry every label of `selector` (None or empty: all)."""
    if not selector:
        return True
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class PeerAuthnPolicy:
    """The effective PeerAuthentication of one workload: its mode and per-port overrides.

    `decided_by` names the policies that set the mode, most specific first (`ns/name`), for
    logs and `explain`.
    """

    mode: Mode = "PERMISSIVE"
    port_modes: Mapping[int, Mode] = field(default_factory=dict)
    decided_by: tuple[str, ...] = ()

    def mode_for(self, port: int) -> Mode:
        """The mode for connections to `port` (a port this workload listens on)."""
        return self.port_modes.get(port, self.mode)

    @classmethod
    def compile(
        cls,
        policies: Iterable[PeerAuthentication],
        *,
        namespace: str,
        labels: Mapping[str, str],
        root_namespace: str = DEFAULT_ROOT_NAMESPACE,
    ) -> PeerAuthnPolicy:
        """Compose the policies that apply to a workload (namespace, labels) by Istio's
        precedence. Policies of other kinds or namespaces are skipped, so a whole ConfigSet's
        PeerAuthentications can be passed."""
        mesh: PeerAuthentication | None = None
        ns_level: PeerAuthentication | None = None
        workload: PeerAuthentication | None = None
        for p in policies:
            pns = p.meta.namespace
            if p.selector is None:
                if pns == root_namespace:
                    mesh = mesh or p
                elif pns == namespace:
                    ns_level = ns_level or p
            elif (
                pns == namespace and pns != root_namespace and selector_matches(p.selector, labels)
            ):
                workload = workload or p
        mode: Mode = "PERMISSIVE"
        decided: list[str] = []
        for level in (mesh, ns_level, workload):
            if level is not None and level.mode != "UNSET":
                mode = level.mode
                decided.insert(0, f"{level.meta.namespace}/{level.meta.name}")
        ports: dict[int, Mode] = {}
        if workload is not None:
            for port, port_mode in workload.port_level_mtls.items():
                ports[port] = mode if port_mode == "UNSET" else port_mode
        return cls(mode, ports, tuple(decided))


class Admission(NamedTuple):
    """Whether a connection is admitted, and whether its peer identity may be used (for
    authorization, and for the app) — False means treat the peer as unauthenticated."""

    allowed: bool
    use_identity: bool
    reason: str


def admit(mode: Mode, transport: Transport) -> Admission:
    """Decide a connection by `mode`. `transport`: "plaintext", "tls" (TLS without a client
    certificate), or "mtls" (a client certificate that passed the SPIFFE checks)."""
    if mode == "STRICT":
        if transport == "mtls":
            return Admission(True, True, "mTLS (STRICT)")
        what = "plaintext" if transport == "plaintext" else "TLS without a client certificate"
        return Admission(False, False, f"{what} refused: mTLS is STRICT")
    if mode == "PERMISSIVE":
        if transport == "mtls":
            return Admission(True, True, "mTLS (PERMISSIVE)")
        return Admission(True, False, f"{transport} admitted without identity (PERMISSIVE)")
    return Admission(True, False, f"{transport} admitted without identity (mTLS DISABLE)")


class ListenerTls(NamedTuple):
    """What a listener on a port with this mode must do with TLS.

    `offer`: accept TLS handshakes; `require`: refuse plaintext; `client_cert`: "required",
    "optional" (ask, do not insist) or "none" (do not ask)."""

    offer: bool
    require: bool
    client_cert: Literal["required", "optional", "none"]


def listener_tls(mode: Mode) -> ListenerTls:
    """The TLS set-up of a listener for `mode` (PERMISSIVE: TLS and plaintext on one port)."""
    if mode == "STRICT":
        return ListenerTls(True, True, "required")
    if mode == "PERMISSIVE":
        return ListenerTls(True, False, "optional")
    return ListenerTls(False, False, "none")
