"""Peer verification: may this certificate authenticate this peer? A pure function.

Python's `ssl` has no verify callback, so pymesh lets OpenSSL verify the chain against the trust
bundle (CERT_REQUIRED, `check_hostname=False`) and then, right after the handshake and before
the first request byte, applies the SPIFFE rules here to the peer's leaf
(`ssl_object.getpeercert(binary_form=True)`). `verify_peer` takes the DER chain, the bundle and
the clock (`now`, UNIX seconds) as arguments and does no I/O; it can also do RFC 5280 path
validation itself (`check_chain=True`, with cryptography's verifier) where no TLS library did.

The rules, in the order they are checked (each refusal is a `PeerIdentityError` whose `reason`
names the rule):

1. the certificate parses (`malformed`);
2. no subjectAltName may contain NUL or another control character (`nul_in_san`);
3. exactly one URI SAN (`no_uri_san`, `multiple_uri_sans`); a DNS or email SAN spelled like a
   SPIFFE ID does not count and is named in the refusal (`spiffe_id_not_uri`);
4. no wildcard (`wildcard`), a valid SPIFFE ID (`invalid_spiffe_id`) with a path (`no_path`);
5. its trust domain is in the bundle (`untrusted_domain`);
6. basicConstraints present with CA:false (`ca_certificate`); keyUsage present, critical, with
   digitalSignature and without keyCertSign / cRLSign (`key_usage`);
7. extendedKeyUsage, when present, has the peer's purpose (serverAuth for a server, clientAuth
   for a client) and, as SPIFFE requires, both (`extended_key_usage`);
8. valid at `now`: not before notBefore (`not_yet_valid`), not after notAfter (`expired`);
9. with `check_chain`: RFC 5280 path validation to a root of that trust domain
   (`untrusted_chain`);
10. the identity is one of those expected for the destination (`unexpected_identity`).

The facts read from a certificate (steps 1–4, 6 and its validity window and EKU) are cached by
the DER bytes (bounded LRU), so a certificate seen again costs a dict lookup plus the checks
that depend on the clock, the bundle and the expected set.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Collection, Sequence
from typing import Literal, NamedTuple, TypeAlias

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from pymesh.identity.bundle import TrustBundle
from pymesh.identity.errors import PeerIdentityError, PeerRefusal, SpiffeIdError
from pymesh.identity.spiffeid import SpiffeId

PeerRole: TypeAlias = Literal["server", "client"]
"""What the peer acted as in the handshake: a client checks a "server", a server a "client"."""

Expected: TypeAlias = (
    str | SpiffeId | Collection[str | SpiffeId] | Callable[[SpiffeId], bool] | None
)
"""The identities acceptable for a destination: one SPIFFE ID or a collection of them (strings
or `SpiffeId`), a predicate, or None for any identity of a trusted trust domain."""

_SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
_EKU_NAMES = {
    _SERVER_AUTH.dotted_string: "serverAuth",
    _CLIENT_AUTH.dotted_string: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING.dotted_string: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION.dotted_string: "emailProtection",
}
_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F))


class LeafFacts(NamedTuple):
    """What verification needs from one leaf certificate, read once per DER (cached)."""

    certificate: x509.Certificate | None
    id_refusal: tuple[PeerRefusal, str] | None
    spiffe_id: SpiffeId | None
    shape_refusal: tuple[PeerRefusal, str] | None
    not_before: float
    not_after: float
    eku: frozenset[str] | None  # dotted OIDs; None when the extension is absent


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _refused(reason: PeerRefusal, message: str) -> LeafFacts:
    return LeafFacts(None, (reason, message), None, None, 0.0, 0.0, None)


def _san_text(name: x509.GeneralName) -> str | None:
    value = getattr(name, "value", None)
    return value if isinstance(value, str) else None


@functools.lru_cache(maxsize=2048)
def leaf_facts(der: bytes) -> LeafFacts:
    """Read the verification facts of a DER leaf certificate (cached by its bytes)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        extensions = cert.extensions
    except ValueError as exc:
        return _refused(PeerRefusal.MALFORMED, f"peer certificate does not parse: {exc}")
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = list(san)
    except x509.ExtensionNotFound:
        names = []
    for name in names:
        text = _san_text(name)
        if text is not None and any(c in _CONTROL for c in text):
            kind = type(name).__name__
            return _refused(
                PeerRefusal.NUL_IN_SAN,
                f"peer certificate has a {kind} SAN with a NUL or control character: {text!r}",
            )
    uris = [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]
    if not uris:
        lookalikes = [
            f"{type(n).__name__} {t!r}"
            for n in names
            if (t := _san_text(n)) is not None and "spiffe:" in t.lower()
        ]
        if lookalikes:
            return _refused(
                PeerRefusal.SPIFFE_ID_NOT_URI,
                f"peer certificate has no URI SAN; its {', '.join(lookalikes)} is spelled like "
                "a SPIFFE ID, but only a URI SAN carries one",
            )
        return _refused(PeerRefusal.NO_URI_SAN, "peer certificate has no URI SAN, so no SPIFFE ID")
    if len(uris) > 1:
        return _refused(
            PeerRefusal.MULTIPLE_URI_SANS,
            f"peer certificate has {len(uris)} URI SANs ({', '.join(uris)}); "
            "an SVID has exactly one",
        )
    uri = uris[0]
    if "*" in uri:
        return _refused(
            PeerRefusal.WILDCARD, f"peer SPIFFE ID {uri!r} has a wildcard; identities are exact"
        )
    try:
        spiffe_id = SpiffeId.parse(uri)
    except SpiffeIdError as exc:
        return _refused(
            PeerRefusal.INVALID_SPIFFE_ID, f"peer URI SAN {uri!r} is not a valid SPIFFE ID: {exc}"
        )
    if not spiffe_id.path:
        return _refused(
            PeerRefusal.NO_PATH,
            f"peer SPIFFE ID {uri} has no path: it names a trust domain, not a workload",
        )
    not_before = cert.not_valid_before_utc.timestamp()
    not_after = cert.not_valid_after_utc.timestamp()
    try:
        eku_ext = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        eku: frozenset[str] | None = frozenset(o.dotted_string for o in eku_ext)
    except x509.ExtensionNotFound:
        eku = None
    shape = _shape_refusal(extensions)
    return LeafFacts(cert, None, spiffe_id, shape, not_before, not_after, eku)


def _shape_refusal(extensions: x509.Extensions) -> tuple[PeerRefusal, str] | None:
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return (
            PeerRefusal.CA_CERTIFICATE,
            "peer certificate has no basicConstraints; an SVID must say CA:false",
        )
    if bc.ca:
        return (
            PeerRefusal.CA_CERTIFICATE,
            "peer certificate is a CA certificate (CA:true); a CA cannot authenticate a workload",
        )
    try:
        ku_ext = extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return (PeerRefusal.KEY_USAGE, "peer certificate has no keyUsage extension")
    ku = ku_ext.value
    if not ku_ext.critical:
        return (PeerRefusal.KEY_USAGE, "peer certificate's keyUsage is not critical")
    if not ku.digital_signature:
        return (PeerRefusal.KEY_USAGE, "peer certificate's keyUsage lacks digitalSignature")
    if ku.key_cert_sign or ku.crl_sign:
        return (
            PeerRefusal.KEY_USAGE,
            "peer certificate's keyUsage has keyCertSign or cRLSign: it is a signing certificate",
        )
    return None


def _eku_text(eku: frozenset[str]) -> str:
    return ", ".join(sorted(_EKU_NAMES.get(o, o) for o in eku)) or "empty"


@functools.lru_cache(maxsize=64)
def _store(bundle: TrustBundle, trust_domain: str) -> Store:
    return Store(list(bundle.roots_for(trust_domain)))


def _check_path(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    bundle: TrustBundle,
    spiffe_id: SpiffeId,
    now: float,
) -> None:
    """RFC 5280 path validation of `cert` to a root of its trust domain (cryptography's
    verifier; the SPIFFE leaf rules were checked already, so its leaf policy permits all)."""
    verifier = (
        PolicyBuilder()
        .store(_store(bundle, spiffe_id.trust_domain))
        .time(dt.datetime.fromtimestamp(now, dt.UTC))
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, list(intermediates))
    except VerificationError as exc:
        raise PeerIdentityError(
            PeerRefusal.UNTRUSTED_CHAIN,
            f"peer certificate for {spiffe_id} does not chain to a root trusted for "
            f"{spiffe_id.trust_domain}: {exc}",
            peer=spiffe_id,
        ) from None


def check_expected(
    spiffe_id: SpiffeId, expected: Expected, expected_for: str | None = None
) -> None:
    """Raise `PeerIdentityError(unexpected_identity)` unless `spiffe_id` is acceptable."""
    if expected is None:
        return
    target = f" for {expected_for}" if expected_for else ""
    if callable(expected):
        if expected(spiffe_id):
            return
        raise PeerIdentityError(
            PeerRefusal.UNEXPECTED_IDENTITY,
            f"identity {spiffe_id} is not accepted{target}",
            peer=spiffe_id,
        )
    if isinstance(expected, str | SpiffeId):  # one identity (a str is not a set of them)
        expected = (expected,)
    if spiffe_id.uri in expected or spiffe_id in expected:
        return
    listed = ", ".join(sorted(str(e) for e in expected)) or "none"
    raise PeerIdentityError(
        PeerRefusal.UNEXPECTED_IDENTITY,
        f"identity {spiffe_id} is not one of the identities expected{target}: {listed}",
        peer=spiffe_id,
    )


def verify_peer(
    chain: Sequence[bytes] | bytes | None,
    bundle: TrustBundle,
    *,
    now: float,
    peer_role: PeerRole,
    expected: Expected = None,
    expected_for: str | None = None,
    check_chain: bool = True,
) -> SpiffeId:
    """Check a peer's certificate by the SPIFFE rules; return its SPIFFE ID.

    `chain` is the peer's DER chain, leaf first (or just the leaf's DER; None when the peer
    sent no certificate). `now` is the wall clock in UNIX seconds. `peer_role` is what the peer
    acted as ("server" when we are the client). `expected` limits the identities accepted and
    `expected_for` names the destination in the refusal. `check_chain=False` skips RFC 5280
    path validation: use it only when the TLS library verified this chain against this bundle
    in this handshake. Raises `PeerIdentityError` (its `reason` says which rule refused).
    """
    if chain is None or (not isinstance(chain, bytes) and len(chain) == 0):
        raise PeerIdentityError(
            PeerRefusal.NO_CERTIFICATE, "peer presented no certificate", role=peer_role
        )
    leaf_der = chain if isinstance(chain, bytes) else chain[0]
    facts = leaf_facts(bytes(leaf_der))
    if facts.id_refusal is not None:
        reason, message = facts.id_refusal
        raise PeerIdentityError(reason, message, role=peer_role)
    spiffe_id = facts.spiffe_id
    assert spiffe_id is not None and facts.certificate is not None
    if not bundle.roots_for(spiffe_id.trust_domain):
        trusted = ", ".join(sorted(bundle.trust_domains)) or "none"
        raise PeerIdentityError(
            PeerRefusal.UNTRUSTED_DOMAIN,
            f"trust domain {spiffe_id.trust_domain} not trusted (trusted: {trusted}); "
            f"peer is {spiffe_id}",
            peer=spiffe_id,
            role=peer_role,
        )
    if facts.shape_refusal is not None:
        reason, message = facts.shape_refusal
        raise PeerIdentityError(reason, f"{message} ({spiffe_id})", peer=spiffe_id, role=peer_role)
    if facts.eku is not None:
        needed = _SERVER_AUTH if peer_role == "server" else _CLIENT_AUTH
        if needed.dotted_string not in facts.eku:
            raise PeerIdentityError(
                PeerRefusal.EXTENDED_KEY_USAGE,
                f"peer certificate for {spiffe_id} cannot act as a TLS {peer_role}: its "
                f"extended key usage is {_eku_text(facts.eku)} (an SVID has serverAuth and "
                "clientAuth)",
                peer=spiffe_id,
                role=peer_role,
            )
        other = _CLIENT_AUTH if peer_role == "server" else _SERVER_AUTH
        if other.dotted_string not in facts.eku:
            raise PeerIdentityError(
                PeerRefusal.EXTENDED_KEY_USAGE,
                f"peer certificate for {spiffe_id} has extended key usage "
                f"{_eku_text(facts.eku)}; an SVID has both serverAuth and clientAuth",
                peer=spiffe_id,
                role=peer_role,
            )
    if now < facts.not_before:
        raise PeerIdentityError(
            PeerRefusal.NOT_YET_VALID,
            f"peer certificate for {spiffe_id} is not valid before {_iso(facts.not_before)} "
            f"(in {_duration(facts.not_before - now)}; check the clocks)",
            peer=spiffe_id,
            role=peer_role,
        )
    if now > facts.not_after:
        raise PeerIdentityError(
            PeerRefusal.EXPIRED,
            f"peer certificate for {spiffe_id} expired at {_iso(facts.not_after)} "
            f"({_duration(now - facts.not_after)} ago)",
            peer=spiffe_id,
            role=peer_role,
        )
    if check_chain:
        intermediates = (
            []
            if isinstance(chain, bytes)
            else [x509.load_der_x509_certificate(c) for c in chain[1:]]
        )
        try:
            _check_path(facts.certificate, intermediates, bundle, spiffe_id, now)
        except PeerIdentityError as exc:
            exc.role = peer_role
            raise
    if expected is not None:
        try:
            check_expected(spiffe_id, expected, expected_for)
        except PeerIdentityError as exc:
            exc.role = peer_role
            raise
    return spiffe_id
