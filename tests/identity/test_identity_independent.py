"""Issued SVIDs accepted by independent code: py-spiffe's X509Svid parser (the SPIFFE
project's Python library) and RFC 5280 path validation by cryptography's verifier, as a
server certificate (by its DNS-SAN name) and as a client certificate."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from pymesh.identity import CertificateAuthority, SpiffeId
from tests.identity.certkit import REVIEWS, LeafSpec, ca_key, der, key_pem, make_leaf

spiffe = pytest.importorskip(
    "spiffe", reason="py-spiffe (the `spiffe` package) is a dev dependency"
)
from spiffe import X509Svid  # noqa: E402
from spiffe.svid.errors import InvalidLeafCertificateError  # noqa: E402

IDENTITY = SpiffeId.parse(REVIEWS)


@pytest.fixture(scope="module", params=["root", "intermediate"])
def ca(request: pytest.FixtureRequest) -> CertificateAuthority:
    root = CertificateAuthority.generate("cluster.local")
    return root if request.param == "root" else root.intermediate()


def test_py_spiffe_parses_issued_svids(ca: CertificateAuthority) -> None:
    """py-spiffe's X509Svid.parse (PEM) and parse_raw (DER) accept the chain and key."""
    key, svid = ca.issue(IDENTITY)
    parsed = X509Svid.parse(svid.chain_pem().encode(), key_pem(key))
    assert str(parsed.spiffe_id) == REVIEWS
    assert len(parsed.cert_chain) == len(svid.chain)
    raw_chain = b"".join(der(c) for c in svid.chain)
    raw_key = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert str(X509Svid.parse_raw(raw_chain, raw_key).spiffe_id) == REVIEWS


@pytest.mark.parametrize(
    "spec",
    [
        replace(LeafSpec(), uris=(REVIEWS, "spiffe://cluster.local/ns/a/sa/b")),
        replace(LeafSpec(), ca=True),
        replace(LeafSpec(), key_cert_sign=True),
        replace(LeafSpec(), uris=("spiffe://cluster.local",)),
    ],
    ids=["two URI SANs", "CA:true", "keyCertSign", "no path"],
)
def test_py_spiffe_agrees_on_bad_leaves(ca: CertificateAuthority, spec: LeafSpec) -> None:
    """Certificates pymesh refuses are refused by py-spiffe too (same rules, other code)."""
    key, cert = make_leaf(ca, ca_key(ca), spec)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidLeafCertificateError):
        X509Svid.parse(pem, key_pem(key))


def _verifier_parts(
    ca: CertificateAuthority,
) -> tuple[Store, x509.Certificate, list[x509.Certificate], dt.datetime]:
    _, svid = ca.issue(IDENTITY)
    store = Store(list(ca.trust_bundle.roots_for("cluster.local")))
    return store, svid.leaf, list(svid.chain[1:]), dt.datetime.now(dt.UTC)


def test_rfc5280_server_verifier(ca: CertificateAuthority) -> None:
    """Path validation with web-PKI defaults as a server certificate for its DNS-SAN name."""
    store, leaf, intermediates, now = _verifier_parts(ca)
    name = IDENTITY.dns_name
    assert name is not None
    verifier = PolicyBuilder().store(store).time(now).build_server_verifier(x509.DNSName(name))
    chain = verifier.verify(leaf, intermediates)
    assert chain[0] == leaf and chain[-1] in ca.trust_bundle.roots_for("cluster.local")
    wrong = PolicyBuilder().store(store).time(now).build_server_verifier(x509.DNSName("reviews"))
    with pytest.raises(VerificationError):
        wrong.verify(leaf, intermediates)


def test_rfc5280_client_verifier(ca: CertificateAuthority) -> None:
    """Path validation with web-PKI defaults as a client certificate; the URI SAN is seen."""
    store, leaf, intermediates, now = _verifier_parts(ca)
    verified = (
        PolicyBuilder().store(store).time(now).build_client_verifier().verify(leaf, intermediates)
    )
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier(REVIEWS) in verified.subjects


def test_rfc5280_refuses_other_root(ca: CertificateAuthority) -> None:
    """An unrelated root does not validate the chain."""
    _, leaf, intermediates, now = _verifier_parts(ca)
    other = CertificateAuthority.generate("cluster.local")
    verifier = PolicyBuilder().store(Store([other.certificate])).time(now).build_client_verifier()
    with pytest.raises(VerificationError):
        verifier.verify(leaf, intermediates)
