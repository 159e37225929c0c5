"""Workload identity for the mesh: SPIFFE IDs, the CA, X.509-SVIDs, mTLS contexts, peer checks.

What is here, and how adapters wire it:

- `SpiffeId` — a validated `spiffe://<td>/<path>`; `SpiffeId.workload(td, ns, sa)`.
- `CertificateAuthority` — issues X.509-SVIDs from CSRs: `generate(td)`, `load_or_create(dir)`
  (a dev CA directory), `from_cacerts(dir)` (Istio's plug-in CA files, run as an intermediate);
  `sign(csr, identity=...)`, `signer(identity)` → a `Signer` (DER CSR → `IssuedSvid`).
- `TrustBundle` — roots per trust domain (several during a root rotation).
- `WorkloadIdentity` — the workload's key + current SVID + bundle; `client_context()` for each
  new outbound connection, `server_context()` given once to a server (it follows rotations per
  handshake through `sni_callback`), `check_peer(ssl_object, peer_role=, expected=,
  expected_for=)` right after every handshake and before the first request byte, `start()` /
  `stop()` for background renewal at half-life.
- `verify_peer(chain, bundle, now=, peer_role=, expected=)` — the same checks as a pure
  function over DER bytes; `refusal_from_ssl_error(exc)` turns OpenSSL's own verification
  failures (expired, unknown CA, wrong purpose) into the same `PeerIdentityError`.

Outbound (httpx transports): on a new connection, TLS with `identity.client_context()` and
`server_hostname=None` (or the destination's DNS-SAN name for SNI), then
`identity.check_peer(ssl_object, peer_role="server", expected=<the destination's identities>,
expected_for=<host>)`; a `PeerIdentityError` fails the attempt (it is not the server's fault
that can be retried elsewhere only if another endpoint has an expected identity). Inbound: pass
`identity.server_context()` to the server, then per connection
`peer = identity.check_peer(ssl_object, peer_role="client")` and hand `peer` to authorization.
"""

from pymesh.identity.bundle import TrustBundle
from pymesh.identity.ca import (
    CertificateAuthority,
    IssuedSvid,
    Signer,
    create_csr,
    generate_key,
)
from pymesh.identity.errors import (
    CertificateAuthorityError,
    CsrRejectedError,
    IdentityError,
    PeerIdentityError,
    PeerRefusal,
    RenewalError,
    SpiffeIdError,
)
from pymesh.identity.spiffeid import DEFAULT_TRUST_DOMAIN, SpiffeId
from pymesh.identity.tls import (
    build_client_context,
    build_server_context,
    load_key_and_chain,
    refusal_from_ssl_error,
)
from pymesh.identity.verify import Expected, PeerRole, verify_peer
from pymesh.identity.workload import WorkloadIdentity, renewal_delay

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "CertificateAuthority",
    "CertificateAuthorityError",
    "CsrRejectedError",
    "Expected",
    "IdentityError",
    "IssuedSvid",
    "PeerIdentityError",
    "PeerRefusal",
    "PeerRole",
    "RenewalError",
    "Signer",
    "SpiffeId",
    "SpiffeIdError",
    "TrustBundle",
    "WorkloadIdentity",
    "build_client_context",
    "build_server_context",
    "create_csr",
    "generate_key",
    "load_key_and_chain",
    "refusal_from_ssl_error",
    "renewal_delay",
    "verify_peer",
]
