"""Errors of the identity layer, all in the one `MeshError` tree.

`PeerIdentityError.reason` is a stable code (a `PeerRefusal`) that tests, logs and metrics can
key on; the message is for people and says what was wrong with the peer's certificate.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from pymesh.errors import MeshError

if TYPE_CHECKING:
    from pymesh.identity.spiffeid import SpiffeId


class IdentityError(MeshError):
    """Base of the identity layer's errors."""


class SpiffeIdError(IdentityError, ValueError):
    """A string is not a valid SPIFFE ID (or trust domain); the message says which rule broke."""


class CertificateAuthorityError(IdentityError):
    """The CA could not be created or loaded (bad `cacerts`, unreadable dev CA directory...)."""


class CsrRejectedError(IdentityError):
    """The CA refused to sign a CSR: bad signature, unsupported key, or SANs that ask for an
    identity other than the caller's."""


class RenewalError(IdentityError):
    """A workload could not get a certificate (first issue or renewal)."""


class PeerRefusal(enum.StrEnum):
    """Why a peer's certificate was refused. Each value is one rule of `verify_peer`."""

    NO_CERTIFICATE = "no_certificate"
    MALFORMED = "malformed"
    NO_URI_SAN = "no_uri_san"
    SPIFFE_ID_NOT_URI = "spiffe_id_not_uri"
    MULTIPLE_URI_SANS = "multiple_uri_sans"
    NUL_IN_SAN = "nul_in_san"
    WILDCARD = "wildcard"
    INVALID_SPIFFE_ID = "invalid_spiffe_id"
    NO_PATH = "no_path"
    UNTRUSTED_DOMAIN = "untrusted_domain"
    CA_CERTIFICATE = "ca_certificate"
    KEY_USAGE = "key_usage"
    EXTENDED_KEY_USAGE = "extended_key_usage"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    UNTRUSTED_CHAIN = "untrusted_chain"
    UNEXPECTED_IDENTITY = "unexpected_identity"


class PeerIdentityError(IdentityError):
    """The peer of a TLS connection was refused by the SPIFFE checks.

    `reason` says which rule refused it; `peer` is the peer's SPIFFE ID when one could be read
    (None for certificates refused before that); `role` is what the peer acted as ("server"
    or "client").
    """

    def __init__(
        self,
        reason: PeerRefusal,
        message: str,
        *,
        peer: SpiffeId | None = None,
        role: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.peer = peer
        self.role = role

    def __repr__(self) -> str:
        return f"PeerIdentityError({self.reason.value!r}, {str(self)!r})"
