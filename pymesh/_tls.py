"""How an attempt speaks TLS to its endpoint: the one decision every sender shares.

`OutboundTls.plan(cluster, endpoint)` reads the cluster's DestinationRule `tls` (merged for the
subset and port) or, without one, does Istio's auto mTLS: mesh mTLS (ISTIO_MUTUAL) to endpoints
that are mesh workloads (they have a service account, hence an identity to expect) when this
workload has an identity of its own, plaintext otherwise. A plan carries the SSLContext for the
NEW connection (the workload's current one, so rotation needs nothing else), the SNI name, and
the check to run right after the handshake and before the first request byte: for mesh mTLS the
SPIFFE rules and the identities expected for that endpoint — never its host name.

Contexts for SIMPLE / MUTUAL are built once per settings and cached.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pymesh.errors import MeshError

if TYPE_CHECKING:
    from pymesh.config.model import ClientTLSSettings
    from pymesh.identity import WorkloadIdentity
    from pymesh.snapshot import ClusterSpec, EndpointSpec


class TlsConfigError(MeshError):
    """TLS cannot be set up as configured (no identity for ISTIO_MUTUAL, unreadable files)."""


class TlsPlan(NamedTuple):
    """TLS for one new connection: context, SNI name, and the post-handshake check."""

    context: ssl.SSLContext
    server_hostname: str | None
    check: Callable[[ssl.SSLObject], object] | None
    mode: str


class OutboundTls:
    """Plans TLS for outbound attempts of one mesh (see the module docstring)."""

    def __init__(self, identity: WorkloadIdentity | None) -> None:
        self.identity = identity
        self._contexts: dict[ClientTLSSettings, ssl.SSLContext] = {}

    def plan(self, cluster: ClusterSpec, endpoint: EndpointSpec) -> TlsPlan | None:
        """The TLS plan for a new connection to `endpoint` of `cluster`, or None (plaintext)."""
        settings = cluster.tls
        identity = self.identity
        if settings is None:
            if not endpoint.identity or identity is None:
                return None
            mode = "ISTIO_MUTUAL"
        else:
            mode = settings.mode
        if mode == "DISABLE":
            return None
        if mode == "ISTIO_MUTUAL":
            if identity is None:
                raise TlsConfigError(
                    f"{cluster.name}: tls mode ISTIO_MUTUAL, but this workload has no identity "
                    "(give the Mesh a CA: Mesh(..., ca=...))"
                )
            expected = {endpoint.identity, *cluster.subject_alt_names} - {""}
            checker = identity
            host = cluster.host

            def check(conn: ssl.SSLObject) -> object:
                return checker.check_peer(
                    conn, peer_role="server", expected=expected or None, expected_for=host
                )

            return TlsPlan(identity.client_context(), None, check, mode)
        assert settings is not None
        context = self._contexts.get(settings)
        if context is None:
            context = _external_context(settings)
            self._contexts[settings] = context
        names = set(settings.subject_alt_names)
        check_sans = None
        if names and not settings.insecure_skip_verify:

            def check_sans(conn: ssl.SSLObject) -> object:
                cert: dict[str, Any] = dict(conn.getpeercert() or {})
                got = {str(e[1]) for e in cert.get("subjectAltName", ()) if e[0] in ("DNS", "URI")}
                if not got & names:
                    raise MeshError(
                        f"{cluster.name}: server certificate names {sorted(got)} include none of "
                        f"the subjectAltNames {sorted(names)}"
                    )
                return None

        return TlsPlan(context, settings.sni or cluster.host, check_sans, mode)

    def __repr__(self) -> str:
        return f"OutboundTls(identity={self.identity!r})"


def _external_context(settings: ClientTLSSettings) -> ssl.SSLContext:
    """An SSLContext for SIMPLE / MUTUAL TLS to a destination outside the mesh."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_certificates or None)
        if settings.mode == "MUTUAL":
            context.load_cert_chain(settings.client_certificate, settings.private_key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load TLS files for tls mode {settings.mode}: {exc}") from None
    if settings.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif settings.subject_alt_names:
        context.check_hostname = False  # the names are checked after the handshake instead
    context.set_alpn_protocols(["http/1.1"])
    return context
