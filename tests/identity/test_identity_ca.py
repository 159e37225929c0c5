"""The certificate authority: the SVIDs it issues, the CSRs it refuses, and the ways it is
created or loaded (generated root, dev CA directory, Istio cacerts as an intermediate)."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pymesh.identity import (
    CertificateAuthority,
    CertificateAuthorityError,
    CsrRejectedError,
    SpiffeId,
    create_csr,
    generate_key,
)
from pymesh.identity.bundle import certificates_pem
from tests.identity.certkit import REVIEWS

T0 = 1_800_000_000.0
REVIEWS_ID = SpiffeId.parse(REVIEWS)


def fixed_clock() -> float:
    return T0


def ext(
    cert: x509.Certificate, cls: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate("cluster.local", clock=fixed_clock)


def test_leaf_is_an_x509_svid(ca: CertificateAuthority) -> None:
    """Every X.509-SVID rule, read back from the issued certificate."""
    key, svid = ca.issue(REVIEWS_ID)
    leaf = svid.leaf
    assert svid.chain == (leaf,) and svid.bundle == ca.trust_bundle
    san = ext(leaf, x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty
    assert leaf.subject == x509.Name([])
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [REVIEWS]
    assert san.value.get_values_for_type(x509.DNSName) == [
        "reviews.default.serviceaccount.identity.cluster.local"
    ]
    assert len(list(san.value)) == 2
    bc = ext(leaf, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False  # type: ignore[attr-defined]
    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical
    kuv = ku.value
    assert isinstance(kuv, x509.KeyUsage)
    assert kuv.digital_signature and not (kuv.key_cert_sign or kuv.crl_sign)
    assert not (kuv.key_encipherment or kuv.key_agreement or kuv.content_commitment)
    eku = ext(leaf, x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}  # type: ignore[call-overload]
    assert leaf.serial_number > 0 and leaf.serial_number.bit_length() > 64
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    ski = ext(ca.certificate, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest  # type: ignore[attr-defined]
    assert ext(leaf, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        key.public_key()
    )
    leaf.verify_directly_issued_by(ca.certificate)
    pub = leaf.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"


def test_validity_window(ca: CertificateAuthority) -> None:
    """notBefore back-dated 5 minutes; notAfter 24 h by default, or the TTL asked for."""
    _, svid = ca.issue(REVIEWS_ID)
    assert svid.not_before == T0 - 300
    assert svid.not_after == T0 + 24 * 3600
    _, short = ca.issue(REVIEWS_ID, ttl=2)
    assert short.not_after == T0 + 2


def test_ttl_never_outlives_the_ca() -> None:
    """A leaf TTL longer than the CA's remaining life is cut to the CA's notAfter."""
    ca = CertificateAuthority.generate("cluster.local", ttl=3600, clock=fixed_clock)
    _, svid = ca.issue(REVIEWS_ID, ttl=7200)
    assert svid.leaf.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_serials_are_random(ca: CertificateAuthority) -> None:
    """No two leaves share a serial."""
    serials = {ca.issue(REVIEWS_ID)[1].leaf.serial_number for _ in range(20)}
    assert len(serials) == 20


def test_root_certificate(ca: CertificateAuthority) -> None:
    """The generated root: ECDSA P-256, 10 years, CA:true pathLen 1, keyCertSign + cRLSign
    critical, self-signed, named spiffe://<td> (no path)."""
    root = ca.certificate
    assert root.not_valid_after_utc - root.not_valid_before_utc == dt.timedelta(
        days=3650, minutes=5
    )
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1  # type: ignore[attr-defined]
    ku = ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign  # type: ignore[attr-defined]
    uris = ext(root, x509.SubjectAlternativeName).value.get_values_for_type(  # type: ignore[attr-defined]
        x509.UniformResourceIdentifier
    )
    assert uris == ["spiffe://cluster.local"]
    root.verify_directly_issued_by(root)
    assert ca.intermediates == ()
    assert "root" in repr(ca) and "cluster.local" in repr(ca)


def test_identity_comes_from_the_caller_not_the_csr(ca: CertificateAuthority) -> None:
    """The CSR's SANs never reach the certificate; asking for another identity is refused."""
    key = generate_key()
    # a CSR naming the caller's own identity is fine
    svid = ca.sign(create_csr(key, REVIEWS_ID), identity=REVIEWS_ID)
    assert svid.spiffe_id == REVIEWS_ID
    # a CSR asking for someone else is refused, whoever signs it
    other = SpiffeId.parse("spiffe://cluster.local/ns/kube-system/sa/admin")
    with pytest.raises(CsrRejectedError, match=r"a workload can only get its own identity"):
        ca.sign(create_csr(key, other), identity=REVIEWS_ID)
    extra = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(REVIEWS), x509.DNSName("evil.example.com")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CsrRejectedError, match=r"evil.example.com"):
        ca.sign(extra, identity=REVIEWS_ID)
    # the CSR's subject is ignored
    plain = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .sign(key, hashes.SHA256())
    )
    assert ca.sign(plain, identity=REVIEWS_ID).leaf.subject == x509.Name([])


def test_csr_signature_is_verified(ca: CertificateAuthority) -> None:
    """A CSR whose signature does not verify (tampered) or that does not parse is refused."""
    csr = bytearray(create_csr(generate_key()))
    csr[-3] ^= 0x01  # inside the signature
    with pytest.raises(CsrRejectedError):
        ca.sign(bytes(csr), identity=REVIEWS_ID)
    with pytest.raises(CsrRejectedError, match=r"not a certificate signing request"):
        ca.sign(b"hello", identity=REVIEWS_ID)
    pem = x509.load_der_x509_csr(create_csr(generate_key())).public_bytes(
        serialization.Encoding.PEM
    )
    assert ca.sign(pem, identity=REVIEWS_ID).spiffe_id == REVIEWS_ID


@pytest.mark.parametrize(
    ("make_key", "accepted"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), True),
        (lambda: ec.generate_private_key(ec.SECP384R1()), True),
        (lambda: ec.generate_private_key(ec.SECP521R1()), False),
        (lambda: rsa.generate_private_key(65537, 2048), True),
        (lambda: rsa.generate_private_key(65537, 1024), False),
    ],
    ids=["P-256", "P-384", "P-521", "RSA-2048", "RSA-1024"],
)
def test_key_types(ca: CertificateAuthority, make_key: object, accepted: bool) -> None:
    """ECDSA P-256/P-384 and RSA ≥ 2048 are signed; other keys are refused."""
    key = make_key()  # type: ignore[operator]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    if accepted:
        leaf = ca.sign(csr, identity=REVIEWS_ID).leaf
        ku = ext(leaf, x509.KeyUsage).value
        assert ku.key_encipherment == isinstance(key, rsa.RSAPrivateKey)  # type: ignore[attr-defined]
    else:
        with pytest.raises(CsrRejectedError, match=r"not accepted|too small"):
            ca.sign(csr, identity=REVIEWS_ID)


def test_identity_must_be_in_the_trust_domain_and_have_a_path(ca: CertificateAuthority) -> None:
    """A CA signs only leaf identities of its own trust domain."""
    csr = create_csr(generate_key())
    with pytest.raises(CsrRejectedError, match=r"not in this CA's trust domain"):
        ca.sign(csr, identity=SpiffeId.parse("spiffe://evil.org/ns/default/sa/reviews"))
    with pytest.raises(CsrRejectedError, match=r"no path"):
        ca.sign(csr, identity=SpiffeId.parse("spiffe://cluster.local"))


def test_identity_without_dns_form_gets_uri_only(ca: CertificateAuthority) -> None:
    """An identity with no DNS form (not /ns/x/sa/y) gets exactly the URI SAN."""
    _, svid = ca.issue(SpiffeId.parse("spiffe://cluster.local/custom/Path_1"))
    san = ext(svid.leaf, x509.SubjectAlternativeName).value
    assert [n.value for n in san] == ["spiffe://cluster.local/custom/Path_1"]  # type: ignore[attr-defined]


def test_signer_is_bound_to_one_identity(ca: CertificateAuthority) -> None:
    """`signer(identity)` signs any CSR for that identity only."""
    sign = ca.signer(REVIEWS_ID, ttl=60)
    svid = sign(create_csr(generate_key()))
    assert svid.spiffe_id == REVIEWS_ID and svid.not_after == T0 + 60


def test_intermediate_and_cacerts(tmp_path: Path) -> None:
    """An intermediate written in Istio's cacerts layout loads back and issues leaves whose
    chain carries the intermediate; the key file is 0600."""
    root = CertificateAuthority.generate("cluster.local")
    mid = root.intermediate()
    bc = ext(mid.certificate, x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0  # type: ignore[attr-defined]
    mid.write_cacerts(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    assert stat.S_IMODE((tmp_path / "ca-key.pem").stat().st_mode) == 0o600
    loaded = CertificateAuthority.from_cacerts(tmp_path)
    assert loaded.trust_domain == "cluster.local"  # read from the CA's spiffe:// SAN
    assert loaded.intermediates == (mid.certificate,)
    assert loaded.trust_bundle.roots_for("cluster.local") == (root.certificate,)
    _, svid = loaded.issue(REVIEWS_ID)
    assert svid.chain[1:] == (mid.certificate,)
    assert "intermediate" in repr(loaded)


def test_cacerts_from_another_tool(tmp_path: Path) -> None:
    """Plug-in certs made elsewhere (no SPIFFE SAN on the CA, RSA keys are common): the trust
    domain comes from the argument, or defaults to cluster.local."""
    root_key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Istio")])
    now = dt.datetime.now(dt.UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    (tmp_path / "ca-cert.pem").write_text(certificates_pem([root]))
    (tmp_path / "root-cert.pem").write_text(certificates_pem([root]))
    (tmp_path / "cert-chain.pem").write_text(certificates_pem([root]))
    key_path = tmp_path / "ca-key.pem"
    key_path.write_bytes(
        root_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o644)
    with pytest.raises(CertificateAuthorityError, match=r"chmod 600"):
        CertificateAuthority.from_cacerts(tmp_path)
    key_path.chmod(0o600)
    assert CertificateAuthority.from_cacerts(tmp_path).trust_domain == "cluster.local"
    ca = CertificateAuthority.from_cacerts(tmp_path, trust_domain="example.org")
    _, svid = ca.issue(SpiffeId.parse("spiffe://example.org/ns/a/sa/b"))
    svid.leaf.verify_directly_issued_by(root)


def test_cacerts_errors(tmp_path: Path) -> None:
    """Missing files, a key that does not match, a chain that does not reach the root."""
    with pytest.raises(CertificateAuthorityError, match=r"missing ca-cert.pem, ca-key.pem"):
        CertificateAuthority.from_cacerts(tmp_path)
    a = CertificateAuthority.generate("cluster.local")
    b = CertificateAuthority.generate("cluster.local")
    a.write_cacerts(tmp_path)
    # root-cert.pem of another CA: the signing cert does not chain to it
    (tmp_path / "root-cert.pem").write_text(b.trust_bundle.pem())
    (tmp_path / "cert-chain.pem").write_text(b.trust_bundle.pem())
    with pytest.raises(CertificateAuthorityError, match=r"does not chain to a root"):
        CertificateAuthority.from_cacerts(tmp_path)
    with pytest.raises(CertificateAuthorityError, match=r"does not match"):
        CertificateAuthority(
            trust_domain="cluster.local", certificate=a.certificate, key=generate_key()
        )
    (tmp_path / "root-cert.pem").write_text("not pem")
    with pytest.raises(CertificateAuthorityError, match=r"root-cert.pem"):
        CertificateAuthority.from_cacerts(tmp_path)


def test_dev_ca_directory(tmp_path: Path) -> None:
    """load_or_create makes the directory (0700) and key (0600) once, then loads the same CA."""
    d = tmp_path / "dev-ca"
    first = CertificateAuthority.load_or_create(d, trust_domain="pymesh.test", leaf_ttl=60)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "ca-key.pem").stat().st_mode) == 0o600
    again = CertificateAuthority.load_or_create(d, trust_domain="pymesh.test")
    assert again.certificate == first.certificate
    assert again.trust_bundle == first.trust_bundle
    with pytest.raises(CertificateAuthorityError, match=r"trust domain pymesh.test, not cluster"):
        CertificateAuthority.load_or_create(d)
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temp files left
    assert os.access(d / "ca-key.pem", os.R_OK)


def test_rotated_root_trusts_both(ca: CertificateAuthority) -> None:
    """`rotated()` is a new root whose bundle still trusts the old one."""
    new = ca.rotated()
    assert new.certificate != ca.certificate
    assert set(new.trust_bundle.roots_for("cluster.local")) == {ca.certificate, new.certificate}


def test_bad_construction() -> None:
    """Non-positive TTLs and a leaf used as a CA are refused."""
    ca = CertificateAuthority.generate("cluster.local")
    with pytest.raises(CertificateAuthorityError, match=r"TTL"):
        CertificateAuthority(
            trust_domain="cluster.local", certificate=ca.certificate, key=ca._key, leaf_ttl=0
        )
    key, svid = ca.issue(REVIEWS_ID)
    with pytest.raises(CertificateAuthorityError, match=r"not a CA certificate"):
        CertificateAuthority(trust_domain="cluster.local", certificate=svid.leaf, key=key)
    with pytest.raises(CsrRejectedError, match=r"TTL"):
        ca.issue(REVIEWS_ID, ttl=-1)
