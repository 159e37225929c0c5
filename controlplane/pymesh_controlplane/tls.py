"""HTTPS for the control plane: its server certificate, and workload SVIDs as client credentials.

How this works:

- At every start the control plane makes a new key (in memory only) and has its own CA issue a
  server certificate for it (`CertificateAuthority.issue_server_certificate`): DNS and IP SANs
  for the listen address, `localhost` / `127.0.0.1` / `::1` when it listens on loopback or on
  every address, the host's name, `pymesh-controlplane`, and any `--tls-san`. Stock clients
  verify it with the CA root (`<data-dir>/ca.pem`, written at start); agents pin that root by
  the hash their join token carries.
- The listener asks for a client certificate but does not require one (CERT_OPTIONAL): the
  admin and a bootstrapping workload authenticate with a bearer token, a workload that holds an
  SVID presents it. A presented certificate is verified by OpenSSL against the CA's trust
  bundle during the handshake, then by the SPIFFE rules (`pymesh.identity.verify_peer`) once
  per connection, through pymesh's uvicorn protocol (`pymesh.server.protocol`), which puts the
  peer's SPIFFE ID in the request scope. `svid_principal` turns it into the workload principal
  of its namespace and service account.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from pymesh.identity import (
    CertificateAuthority,
    SpiffeId,
    SpiffeIdError,
    build_server_context,
    generate_key,
    verify_peer,
)
from pymesh.server.protocol import PeerVerifier
from pymesh_controlplane.auth import Principal

__all__ = [
    "SERVER_NAME",
    "root_pem",
    "server_context",
    "server_names",
    "svid_principal",
    "svid_verifier",
]

SERVER_NAME = "pymesh-controlplane"
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def server_names(host: str, extra: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the server certificate of a control plane on `host`."""
    wanted = [host, SERVER_NAME, *extra]
    unspecified = False
    try:
        addr = ipaddress.ip_address(host)
        unspecified = addr.is_unspecified
        loopback = addr.is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback or unspecified:
        wanted += _LOOPBACK
    if unspecified:
        wanted.append(socket.gethostname())
    dns: list[str] = []
    ips: list[str] = []
    for name in wanted:
        try:
            ip = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            if name and name not in dns:
                dns.append(name)
            continue
        if not ip.is_unspecified and str(ip) not in ips:
            ips.append(str(ip))
    return dns, ips


def server_context(
    ca: CertificateAuthority, host: str, extra: Sequence[str] = ()
) -> ssl.SSLContext:
    """A TLS server context with a fresh certificate from `ca` for `host` (client certificates
    optional, verified against the CA's trust bundle when presented)."""
    key = generate_key()
    dns, ips = server_names(host, extra)
    chain = ca.issue_server_certificate(key.public_key(), dns_names=dns, ip_addresses=ips)
    return build_server_context(
        key, chain, ca.trust_bundle, require_client_cert=False, alpn=("http/1.1",)
    )


def svid_verifier(ca: CertificateAuthority) -> PeerVerifier:
    """The per-connection check of a client certificate: the SPIFFE rules against the CA's
    trust bundle (path validated again: cheap, and right for resumed sessions too)."""

    def verify(ssl_object: ssl.SSLObject) -> str:
        der = ssl_object.getpeercert(binary_form=True)
        return verify_peer(der, ca.trust_bundle, now=time.time(), peer_role="client").uri

    return verify


def svid_principal(scope: Mapping[str, Any], trust_domain: str) -> Principal | None:
    """The workload principal of the SVID the caller presented on this connection, or None."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    peer = tls.get("pymesh.peer")
    if not peer:
        return None
    try:
        sid = SpiffeId.parse(peer)
    except SpiffeIdError:
        return None
    ns, sa = sid.namespace, sid.service_account
    if sid.trust_domain != trust_domain or not ns or not sa:
        return None
    return Principal("workload", ns, sa)


def root_pem(ca: CertificateAuthority) -> str:
    """The CA roots as PEM (what clients verify the control plane with)."""
    return "".join(
        r.public_bytes(Encoding.PEM).decode() for r in ca.trust_bundle.roots_for(ca.trust_domain)
    )
