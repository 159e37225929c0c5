"""Build certificates for identity tests: good SVIDs through the real CA, and bad ones with
exactly one flaw each, made directly with cryptography."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from pymesh.identity import CertificateAuthority

DER = serialization.Encoding.DER
TD = "cluster.local"
REVIEWS = f"spiffe://{TD}/ns/default/sa/reviews"


def der(cert: x509.Certificate) -> bytes:
    """A certificate's DER bytes."""
    return cert.public_bytes(DER)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class LeafSpec:
    """What a hand-made leaf has; the defaults make a valid SVID for `REVIEWS`."""

    uris: Sequence[str] = (REVIEWS,)
    dns: Sequence[str] = ("reviews.default.serviceaccount.identity.cluster.local",)
    emails: Sequence[str] = ()
    basic_constraints: bool = True
    ca: bool = False
    key_usage: bool = True
    key_usage_critical: bool = True
    digital_signature: bool = True
    key_cert_sign: bool = False
    eku: Sequence[x509.ObjectIdentifier] | None = field(
        default_factory=lambda: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    not_before: float | None = None  # default: a day ago
    not_after: float | None = None  # default: a day from now


def make_leaf(
    ca: CertificateAuthority, signing_key: ec.EllipticCurvePrivateKey, spec: LeafSpec
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf per `spec`, signed by `ca`'s certificate with `signing_key`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = time.time()
    nb = spec.not_before if spec.not_before is not None else now - 86400
    na = spec.not_after if spec.not_after is not None else now + 86400
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(nb, dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(na, dt.UTC))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in spec.uris]
    names += [x509.DNSName(d) for d in spec.dns]
    names += [x509.RFC822Name(e) for e in spec.emails]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    if spec.basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=spec.ca, path_length=None), critical=True
        )
    if spec.key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=spec.digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=spec.key_cert_sign,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=spec.key_usage_critical,
        )
    if spec.eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(spec.eku)), critical=False)
    return key, builder.sign(signing_key, hashes.SHA256())


def ca_key(ca: CertificateAuthority) -> ec.EllipticCurvePrivateKey:
    """The CA's private key (tests only)."""
    key = ca._key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key
