"""The certificate authority: signs CSRs into SPIFFE X.509-SVIDs.

How this works: a `CertificateAuthority` holds a signing certificate and key, the chain from
that certificate up to (not including) a root, and the `TrustBundle` peers verify against. It
is either a self-signed root (`generate`, or a local dev CA directory via `load_or_create`) or an
intermediate under someone else's root, loaded from Istio's plug-in `cacerts` layout
(`from_cacerts`: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); then every issued
chain carries the intermediates, so peers that trust only the root can verify it.

`sign(csr, identity=...)` takes the identity from the caller's credentials (in static mode the
code that holds the CA object; behind the control plane, the join token), never from the CSR:
the CSR only contributes its public key (its signature is verified). A CSR whose SANs ask for
another identity is refused. The leaf follows the X.509-SVID rules:

- subject empty; subjectAltName critical with exactly one URI (the SPIFFE ID) and, for workload
  identities, one DNS name `<sa>.<ns>.serviceaccount.identity.<td>`;
- basicConstraints CA:false (critical); keyUsage digitalSignature (critical; + keyEncipherment
  for an RSA key); extendedKeyUsage serverAuth + clientAuth;
- a random positive serial of 159 bits; subject and authority key identifiers;
- notBefore back-dated (5 minutes by default) for clock skew; notAfter = now + TTL (24 h by
  default), never past the signing certificate's own notAfter.

The CA is in-process and synchronous; the control plane puts the same object behind the network.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import math
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pymesh.identity.bundle import TrustBundle, certificates_pem, load_pem_certificates
from pymesh.identity.errors import (
    CertificateAuthorityError,
    CsrRejectedError,
    IdentityError,
)
from pymesh.identity.spiffeid import DEFAULT_TRUST_DOMAIN, SpiffeId, validate_trust_domain

CAPrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
DEFAULT_LEAF_TTL = 24 * 3600.0
DEFAULT_ROOT_TTL = 10 * 365 * 24 * 3600.0
DEFAULT_BACKDATE = 300.0

# Istio's plug-in CA layout (istio/samples/certs, `cacerts` secret); the dev CA dir uses it too.
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"

_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 private key (what workloads and generated CAs use)."""
    return ec.generate_private_key(ec.SECP256R1())


def create_csr(key: ec.EllipticCurvePrivateKey, identity: SpiffeId | None = None) -> bytes:
    """A DER certificate signing request for `key`. With `identity`, it names it as a URI SAN
    (informational: the CA takes the identity from the caller, and refuses a mismatch)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if identity is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=True,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _hash_for(key: CAPrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600, atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    """What a signer returns: the SVID chain (leaf first, then intermediates; never the root)
    and the trust bundle to verify peers with (it may hold several roots during a rotation)."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]
    bundle: TrustBundle

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf certificate."""
        return self.chain[0]

    @property
    def not_before(self) -> float:
        """The leaf's notBefore as a UNIX timestamp."""
        return self.leaf.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        """The leaf's notAfter as a UNIX timestamp."""
        return self.leaf.not_valid_after_utc.timestamp()

    def chain_pem(self) -> str:
        """The chain as PEM text, leaf first (what a TLS server or client presents)."""
        return certificates_pem(self.chain)

    def __repr__(self) -> str:
        return (
            f"IssuedSvid({self.spiffe_id.uri}, serial={self.leaf.serial_number:x}, "
            f"not_after={self.leaf.not_valid_after_utc.isoformat()}, chain={len(self.chain)})"
        )


Signer: TypeAlias = Callable[[bytes], IssuedSvid]
"""Signs one DER CSR for an identity fixed by whoever made the signer (`CertificateAuthority.
signer(identity)` in static mode; a network client of the control plane later)."""


class CertificateAuthority:
    """Issues SPIFFE X.509-SVIDs for one trust domain.

    `CertificateAuthority.generate("cluster.local")` makes a root in memory;
    `load_or_create(dir)` keeps a dev CA in a directory; `from_cacerts(dir)` runs as an
    intermediate under an existing root (Istio's plug-in CA files). `sign(csr, identity=...)`
    issues; `signer(identity)` binds an identity for a workload's renewals.
    """

    def __init__(
        self,
        *,
        trust_domain: str,
        certificate: x509.Certificate,
        key: CAPrivateKey,
        chain: Sequence[x509.Certificate] = (),
        bundle: TrustBundle | None = None,
        leaf_ttl: float = DEFAULT_LEAF_TTL,
        backdate: float = DEFAULT_BACKDATE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        validate_trust_domain(trust_domain)
        if leaf_ttl <= 0:
            raise CertificateAuthorityError(f"leaf TTL must be positive, not {leaf_ttl}")
        self.trust_domain = trust_domain
        self.certificate = certificate
        self._key = key
        self.leaf_ttl = float(leaf_ttl)
        self.backdate = float(backdate)
        self._clock = clock
        _check_signing_cert(certificate, key)
        # Intermediates to send with every leaf: the signing cert unless it is a root, then the
        # rest of the chain minus roots (a root is in the peer's bundle, never sent).
        chain_all = [certificate, *(c for c in chain if c != certificate)]
        self.intermediates: tuple[x509.Certificate, ...] = tuple(
            c for c in chain_all if not _self_signed(c)
        )
        roots_in_chain = [c for c in chain_all if _self_signed(c)]
        if bundle is None:
            if not roots_in_chain:
                raise CertificateAuthorityError(
                    "no root: give a trust bundle or a chain that ends in a self-signed root"
                )
            bundle = TrustBundle.of(trust_domain, *roots_in_chain)
        if not bundle.roots_for(trust_domain):
            raise CertificateAuthorityError(f"the trust bundle has no root for {trust_domain}")
        self.trust_bundle = bundle
        _check_chains_to_bundle(certificate, self.intermediates, bundle.roots_for(trust_domain))
        self._ski = _ski(certificate)
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski)
        self._hash = _hash_for(key)

    # -- construction --------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        *,
        ttl: float = DEFAULT_ROOT_TTL,
        leaf_ttl: float = DEFAULT_LEAF_TTL,
        path_length: int | None = 1,
        clock: Callable[[], float] = time.time,
    ) -> CertificateAuthority:
        """A new self-signed root CA (ECDSA P-256, 10 years by default) in memory.

        `path_length=1` lets it sign one level of intermediate CAs (`intermediate()`, Istio's
        plug-in layout) and no deeper.
        """
        validate_trust_domain(trust_domain)
        key = generate_key()
        now = clock()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pymesh"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"pymesh root CA {trust_domain}"),
            ]
        )
        cert = _ca_builder(name, name, key.public_key(), trust_domain, now, ttl, path_length)
        cert_signed = cert.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        ).sign(key, hashes.SHA256())
        return cls(
            trust_domain=trust_domain,
            certificate=cert_signed,
            key=key,
            leaf_ttl=leaf_ttl,
            clock=clock,
        )

    def intermediate(
        self, *, ttl: float = 365 * 24 * 3600.0, leaf_ttl: float | None = None
    ) -> CertificateAuthority:
        """A new intermediate CA signed by this one (pathLen 0), for the same trust domain and
        the same bundle; `write_cacerts()` stores it in Istio's plug-in layout."""
        key = generate_key()
        now = self._clock()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pymesh"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"pymesh intermediate CA {self.trust_domain}"
                ),
            ]
        )
        not_after = min(now + ttl, self.certificate.not_valid_after_utc.timestamp())
        builder = _ca_builder(
            name,
            self.certificate.subject,
            key.public_key(),
            self.trust_domain,
            now,
            not_after - now,
            0,
            backdate=self.backdate,
        ).add_extension(self._aki, critical=False)
        cert = builder.sign(self._key, self._hash)  # type: ignore[arg-type]
        return CertificateAuthority(
            trust_domain=self.trust_domain,
            certificate=cert,
            key=key,
            chain=(*self.intermediates, *self.trust_bundle.roots_for(self.trust_domain)[:1]),
            bundle=self.trust_bundle,
            leaf_ttl=self.leaf_ttl if leaf_ttl is None else leaf_ttl,
            backdate=self.backdate,
            clock=self._clock,
        )

    def rotated(self, *, ttl: float = DEFAULT_ROOT_TTL) -> CertificateAuthority:
        """A new self-signed root CA whose bundle also trusts this CA's roots: during a root
        rotation peers holding either root's leaves verify each other."""
        fresh = CertificateAuthority.generate(
            self.trust_domain, ttl=ttl, leaf_ttl=self.leaf_ttl, clock=self._clock
        )
        bundle = fresh.trust_bundle.with_roots(
            self.trust_domain, *self.trust_bundle.roots_for(self.trust_domain)
        )
        return CertificateAuthority(
            trust_domain=self.trust_domain,
            certificate=fresh.certificate,
            key=fresh._key,
            bundle=bundle,
            leaf_ttl=self.leaf_ttl,
            backdate=self.backdate,
            clock=self._clock,
        )

    @classmethod
    def from_cacerts(
        cls,
        directory: str | os.PathLike[str],
        *,
        trust_domain: str | None = None,
        leaf_ttl: float = DEFAULT_LEAF_TTL,
        clock: Callable[[], float] = time.time,
    ) -> CertificateAuthority:
        """Load Istio's plug-in CA files: ca-cert.pem (the signing cert), ca-key.pem (its key),
        root-cert.pem (the root(s) peers trust), cert-chain.pem (signing cert up to the root).

        The trust domain comes from `trust_domain`, else from a `spiffe://<td>` URI SAN on the
        signing cert, else `cluster.local`. The key file must not be readable by others.
        """
        d = Path(directory)
        missing = [n for n in (CA_CERT, CA_KEY, ROOT_CERT) if not (d / n).is_file()]
        if missing:
            raise CertificateAuthorityError(f"{d}: missing {', '.join(missing)} (cacerts layout)")
        key = _load_key(d / CA_KEY)
        certs = _load_certs(d / CA_CERT)
        roots = _load_certs(d / ROOT_CERT)
        chain = _load_certs(d / CERT_CHAIN) if (d / CERT_CHAIN).is_file() else []
        td = trust_domain or _trust_domain_of(certs[0]) or DEFAULT_TRUST_DOMAIN
        try:
            bundle = TrustBundle.of(td, *roots)
        except IdentityError as exc:
            raise CertificateAuthorityError(f"{d / ROOT_CERT}: {exc}") from exc
        return cls(
            trust_domain=td,
            certificate=certs[0],
            key=key,
            chain=[*certs[1:], *chain],
            bundle=bundle,
            leaf_ttl=leaf_ttl,
            clock=clock,
        )

    @classmethod
    def load_or_create(
        cls,
        directory: str | os.PathLike[str],
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        leaf_ttl: float = DEFAULT_LEAF_TTL,
        clock: Callable[[], float] = time.time,
    ) -> CertificateAuthority:
        """A local dev CA kept in `directory` (created 0700 if needed): loaded when its files
        exist, else generated and written there in the cacerts layout (key 0600). The same
        directory therefore also works with `from_cacerts` and with Istio."""
        d = Path(directory)
        if (d / CA_KEY).exists():
            ca = cls.from_cacerts(d, trust_domain=None, leaf_ttl=leaf_ttl, clock=clock)
            if ca.trust_domain != trust_domain:
                raise CertificateAuthorityError(
                    f"{d} holds a CA for trust domain {ca.trust_domain}, not {trust_domain}"
                )
            return ca
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca = cls.generate(trust_domain, leaf_ttl=leaf_ttl, clock=clock)
        ca.write_cacerts(d)
        return ca

    def write_cacerts(self, directory: str | os.PathLike[str]) -> None:
        """Write this CA in Istio's plug-in layout (ca-key.pem 0600)."""
        d = Path(directory)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        roots = self.trust_bundle.roots_for(self.trust_domain)
        _write_private(d / CA_KEY, key_pem)
        _write_public(d / CA_CERT, certificates_pem([self.certificate]).encode())
        _write_public(d / ROOT_CERT, certificates_pem(roots).encode())
        chain = [*self.intermediates] if self.intermediates else [self.certificate]
        _write_public(d / CERT_CHAIN, certificates_pem([*chain, roots[0]]).encode())

    # -- issuing -------------------------------------------------------------------------

    def sign(
        self,
        csr: bytes | x509.CertificateSigningRequest,
        *,
        identity: SpiffeId,
        ttl: float | None = None,
    ) -> IssuedSvid:
        """Issue an X.509-SVID for `identity` (from the caller's credentials) on the CSR's key.

        Raises `CsrRejectedError` for a CSR that does not parse, whose signature does not
        verify, whose key is not ECDSA P-256/P-384 or RSA ≥ 2048, or whose SANs name anything
        but `identity`; and for an identity outside this CA's trust domain or without a path.
        """
        request = _parse_csr(csr)
        if not request.is_signature_valid:
            raise CsrRejectedError("CSR signature does not verify")
        public_key = request.public_key()
        _check_leaf_key(public_key)
        if identity.trust_domain != self.trust_domain:
            raise CsrRejectedError(
                f"identity {identity} is not in this CA's trust domain {self.trust_domain}"
            )
        if not identity.path:
            raise CsrRejectedError(f"{identity} has no path: a leaf SVID needs one")
        _check_csr_sans(request, identity)
        lifetime = self.leaf_ttl if ttl is None else float(ttl)
        if lifetime <= 0:
            raise CsrRejectedError(f"TTL must be positive, not {lifetime}")
        now = self._clock()
        # X.509 times have whole seconds: round up so the leaf lives at least `ttl`.
        not_after = min(
            float(math.ceil(now + lifetime)), self.certificate.not_valid_after_utc.timestamp()
        )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        dns = identity.dns_name
        if dns is not None:
            names.append(x509.DNSName(dns))
        rsa_key = isinstance(public_key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - self.backdate))
            .not_valid_after(_utc(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=rsa_key,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key),
                critical=False,
            )
            .add_extension(self._aki, critical=False)
        )
        leaf = builder.sign(self._key, self._hash)  # type: ignore[arg-type]
        return IssuedSvid(identity, (leaf, *self.intermediates), self.trust_bundle)

    def signer(self, identity: SpiffeId, *, ttl: float | None = None) -> Signer:
        """A `Signer` bound to `identity`: what a workload calls to renew (static mode)."""

        def sign(csr: bytes) -> IssuedSvid:
            return self.sign(csr, identity=identity, ttl=ttl)

        return sign

    def issue_server_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        ttl: float = 365 * 24 * 3600.0,
    ) -> tuple[x509.Certificate, ...]:
        """A plain TLS server certificate (not an SVID: no SPIFFE ID) for the mesh's own
        infrastructure — the control plane's HTTPS listener — with DNS and IP SANs, so stock
        clients verify it by host name against this CA. Returns the chain (leaf first, then the
        intermediates; never the root)."""
        if not dns_names and not ip_addresses:
            raise CertificateAuthorityError("a server certificate needs a DNS name or an IP")
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        now = self._clock()
        not_after = min(now + ttl, self.certificate.not_valid_after_utc.timestamp())
        common = dns_names[0] if dns_names else ip_addresses[0]
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - self.backdate))
            .not_valid_after(_utc(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._aki, critical=False)
            .sign(self._key, self._hash)  # type: ignore[arg-type]
        )
        return (leaf, *self.intermediates)

    def issue(
        self, identity: SpiffeId, *, ttl: float | None = None
    ) -> tuple[ec.EllipticCurvePrivateKey, IssuedSvid]:
        """A new key and an SVID for it (tests, tools; workloads make their own key)."""
        key = generate_key()
        return key, self.sign(create_csr(key), identity=identity, ttl=ttl)

    def __repr__(self) -> str:
        kind = "intermediate" if self.intermediates else "root"
        return (
            f"CertificateAuthority({self.trust_domain}, {kind}, "
            f"subject={self.certificate.subject.rfc4514_string()!r}, leaf_ttl={self.leaf_ttl:g}s)"
        )


# -- helpers -----------------------------------------------------------------------------


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    trust_domain: str,
    now: float,
    ttl: float,
    path_length: int | None,
    *,
    backdate: float = DEFAULT_BACKDATE,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - backdate))
        .not_valid_after(_utc(now + ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(SpiffeId(trust_domain).uri)]
            ),
            critical=False,
        )
    )


def _parse_csr(csr: bytes | x509.CertificateSigningRequest) -> x509.CertificateSigningRequest:
    if isinstance(csr, x509.CertificateSigningRequest):
        return csr
    try:
        if csr.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(csr)
        return x509.load_der_x509_csr(csr)
    except ValueError as exc:
        raise CsrRejectedError(f"not a certificate signing request: {exc}") from exc


def _check_leaf_key(public_key: object) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, _ACCEPTED_CURVES):
            return
        raise CsrRejectedError(f"ECDSA curve {public_key.curve.name} not accepted (P-256, P-384)")
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size >= 2048:
            return
        raise CsrRejectedError(f"RSA key of {public_key.key_size} bits is too small (≥ 2048)")
    raise CsrRejectedError(
        f"key type {type(public_key).__name__} not accepted (ECDSA P-256/P-384, RSA ≥ 2048)"
    )


def _check_csr_sans(request: x509.CertificateSigningRequest, identity: SpiffeId) -> None:
    try:
        ext = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return
    except ValueError as exc:
        raise CsrRejectedError(f"CSR extensions do not parse: {exc}") from exc
    for name in ext.value:
        if isinstance(name, x509.UniformResourceIdentifier) and name.value == identity.uri:
            continue
        if isinstance(name, x509.DNSName) and name.value == identity.dns_name:
            continue
        raise CsrRejectedError(
            f"CSR asks for {type(name).__name__} {name.value!r}, but the caller is {identity}; "
            "a workload can only get its own identity"
        )


def _check_signing_cert(cert: x509.Certificate, key: CAPrivateKey) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CertificateAuthorityError(
            f"{cert.subject.rfc4514_string()!r} is not a CA certificate (basicConstraints CA:true)"
        )
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise CertificateAuthorityError("the CA certificate's keyUsage lacks keyCertSign")
    if isinstance(key, ed448.Ed448PrivateKey):
        raise CertificateAuthorityError("Ed448 CA keys are not supported")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != cert.public_key().public_bytes(der, pub):
        raise CertificateAuthorityError("the CA key does not match the CA certificate")


def _check_chains_to_bundle(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> None:
    """The signing cert must chain, through the intermediates, to one of the roots."""
    current = cert
    pool = list(intermediates)
    for _ in range(len(pool) + 1):
        for root in roots:
            if current == root:
                return
            with contextlib.suppress(ValueError, TypeError, InvalidSignature):  # not this root
                current.verify_directly_issued_by(root)
                return
        parent = None
        for candidate in pool:
            if candidate == current:
                continue
            try:
                current.verify_directly_issued_by(candidate)
                parent = candidate
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
        if parent is None:
            break
        pool.remove(parent)
        current = parent
    raise CertificateAuthorityError(
        f"the CA certificate {cert.subject.rfc4514_string()!r} does not chain to a root in "
        "the trust bundle (check root-cert.pem and cert-chain.pem)"
    )


def _trust_domain_of(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            return SpiffeId.parse(uri).trust_domain
        except IdentityError:
            continue
    return None


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        return load_pem_certificates(path.read_bytes())
    except (OSError, IdentityError) as exc:
        raise CertificateAuthorityError(f"{path}: {exc}") from exc


def _load_key(path: Path) -> CAPrivateKey:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateAuthorityError(f"{path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CertificateAuthorityError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateAuthorityError(
            f"{path}: not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CertificateAuthorityError(f"{path}: unsupported CA key type {type(key).__name__}")
    return key
