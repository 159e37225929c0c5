"""Peer verification: one row per SPIFFE rule, each a certificate with exactly one flaw, and
the refusal it must get (reason and the words a user reads)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from pymesh.errors import MeshError
from pymesh.identity import (
    CertificateAuthority,
    PeerIdentityError,
    PeerRefusal,
    SpiffeId,
    TrustBundle,
    verify_peer,
)
from pymesh.identity.verify import leaf_facts
from tests.identity.certkit import REVIEWS, LeafSpec, ca_key, der, make_leaf

NOW = time.time()  # the table's anchor; tests past the table read the clock themselves
GOOD = LeafSpec()

# (id, spec, peer role, reason, words in the message)
ROWS = [
    ("expired", replace(GOOD, not_before=NOW - 7200, not_after=NOW - 60), "server",
     PeerRefusal.EXPIRED, "expired at"),
    ("not yet valid", replace(GOOD, not_before=NOW + 600), "server",
     PeerRefusal.NOT_YET_VALID, "not valid before"),
    ("CA:true", replace(GOOD, ca=True), "server", PeerRefusal.CA_CERTIFICATE, "CA:true"),
    ("no basicConstraints", replace(GOOD, basic_constraints=False), "client",
     PeerRefusal.CA_CERTIFICATE, "no basicConstraints"),
    ("two URI SANs", replace(GOOD, uris=(REVIEWS, "spiffe://cluster.local/ns/default/sa/x")),
     "server", PeerRefusal.MULTIPLE_URI_SANS, "peer certificate has 2 URI SANs"),
    ("DNS SAN spelled like a SPIFFE ID, no URI SAN", replace(GOOD, uris=(), dns=(REVIEWS,)),
     "server", PeerRefusal.SPIFFE_ID_NOT_URI, "only a URI SAN"),
    ("email SAN spelled like a SPIFFE ID", replace(GOOD, uris=(), dns=(), emails=(REVIEWS,)),
     "server", PeerRefusal.SPIFFE_ID_NOT_URI, "RFC822Name"),
    ("no SAN at all", replace(GOOD, uris=(), dns=()), "server", PeerRefusal.NO_URI_SAN,
     "no URI SAN"),
    ("DNS SAN only", replace(GOOD, uris=()), "server", PeerRefusal.NO_URI_SAN, "no URI SAN"),
    ("NUL in the URI SAN (CVE-2025-66220)",
     replace(GOOD, uris=("spiffe://cluster.local/ns/default/sa/reviews\x00.evil",)), "server",
     PeerRefusal.NUL_IN_SAN, "NUL"),
    ("NUL in a DNS SAN", replace(GOOD, dns=("reviews\x00.evil.org",)), "server",
     PeerRefusal.NUL_IN_SAN, "DNSName"),
    ("EKU clientAuth only, as a server", replace(GOOD, eku=[EKU.CLIENT_AUTH]), "server",
     PeerRefusal.EXTENDED_KEY_USAGE, "cannot act as a TLS server"),
    ("EKU serverAuth only, as a client", replace(GOOD, eku=[EKU.SERVER_AUTH]), "client",
     PeerRefusal.EXTENDED_KEY_USAGE, "cannot act as a TLS client"),
    ("EKU serverAuth only, as a server (SPIFFE wants both)", replace(GOOD, eku=[EKU.SERVER_AUTH]),
     "server", PeerRefusal.EXTENDED_KEY_USAGE, "both serverAuth and clientAuth"),
    ("EKU codeSigning only (CVE-2022-21657)", replace(GOOD, eku=[EKU.CODE_SIGNING]), "client",
     PeerRefusal.EXTENDED_KEY_USAGE, "codeSigning"),
    ("wrong trust domain", replace(GOOD, uris=("spiffe://evil.org/ns/default/sa/reviews",)),
     "server", PeerRefusal.UNTRUSTED_DOMAIN, "trust domain evil.org not trusted"),
    ("wildcard (CVE-2020-15104)", replace(GOOD, uris=("spiffe://cluster.local/ns/*/sa/*",)),
     "server", PeerRefusal.WILDCARD, "wildcard"),
    ("not a SPIFFE ID", replace(GOOD, uris=("https://cluster.local/ns/default/sa/reviews",)),
     "server", PeerRefusal.INVALID_SPIFFE_ID, "not a valid SPIFFE ID"),
    ("upper-case trust domain", replace(GOOD, uris=("spiffe://Cluster.local/ns/a/sa/b",)),
     "server", PeerRefusal.INVALID_SPIFFE_ID, "lowercase"),
    ("trust-domain ID, no path", replace(GOOD, uris=("spiffe://cluster.local",)), "server",
     PeerRefusal.NO_PATH, "no path"),
    ("no keyUsage", replace(GOOD, key_usage=False), "server", PeerRefusal.KEY_USAGE,
     "no keyUsage"),
    ("keyUsage not critical", replace(GOOD, key_usage_critical=False), "server",
     PeerRefusal.KEY_USAGE, "not critical"),
    ("keyUsage without digitalSignature", replace(GOOD, digital_signature=False), "server",
     PeerRefusal.KEY_USAGE, "digitalSignature"),
    ("keyUsage keyCertSign", replace(GOOD, key_cert_sign=True), "server",
     PeerRefusal.KEY_USAGE, "keyCertSign"),
]  # fmt: skip


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate("cluster.local")


@pytest.mark.parametrize(
    ("spec", "role", "reason", "words"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_refusals(
    ca: CertificateAuthority, spec: LeafSpec, role: str, reason: PeerRefusal, words: str
) -> None:
    """Each flawed certificate is refused by its rule, with a message a user understands."""
    _, cert = make_leaf(ca, ca_key(ca), spec)
    with pytest.raises(PeerIdentityError) as info:
        verify_peer([der(cert)], ca.trust_bundle, now=NOW, peer_role=role)  # type: ignore[arg-type]
    assert info.value.reason is reason, str(info.value)
    assert words in str(info.value)
    assert info.value.role == role
    assert isinstance(info.value, MeshError)


def test_good_leaf_accepted(ca: CertificateAuthority) -> None:
    """The same builder with no flaw passes every rule, chain included, for both roles."""
    _, cert = make_leaf(ca, ca_key(ca), GOOD)
    for role in ("server", "client"):
        sid = verify_peer([der(cert)], ca.trust_bundle, now=time.time(), peer_role=role)  # type: ignore[arg-type]
        assert sid == SpiffeId.parse(REVIEWS)


def test_no_eku_is_accepted(ca: CertificateAuthority) -> None:
    """EKU is a SHOULD in SPIFFE: a leaf without it is accepted in either role."""
    _, cert = make_leaf(ca, ca_key(ca), replace(GOOD, eku=None))
    assert verify_peer(der(cert), ca.trust_bundle, now=time.time(), peer_role="server")


def test_other_ca(ca: CertificateAuthority) -> None:
    """A leaf from another CA of the same trust domain does not chain to the bundle."""
    other = CertificateAuthority.generate("cluster.local")
    _, svid = other.issue(SpiffeId.parse(REVIEWS))
    with pytest.raises(PeerIdentityError) as info:
        verify_peer([der(svid.leaf)], ca.trust_bundle, now=time.time(), peer_role="server")
    assert info.value.reason is PeerRefusal.UNTRUSTED_CHAIN
    assert "does not chain to a root trusted for cluster.local" in str(info.value)
    # ... and passes the leaf rules when chain checking is off (OpenSSL would have refused).
    verify_peer(
        [der(svid.leaf)], ca.trust_bundle, now=time.time(), peer_role="server", check_chain=False
    )


def test_expiry_uses_the_given_clock(ca: CertificateAuthority) -> None:
    """The clock is an argument: the same leaf is valid now and expired a day later."""
    _, svid = ca.issue(SpiffeId.parse(REVIEWS), ttl=3600)
    chain = [der(c) for c in svid.chain]
    verify_peer(chain, ca.trust_bundle, now=time.time(), peer_role="server")
    with pytest.raises(PeerIdentityError, match=r"expired at .* ago") as info:
        verify_peer(chain, ca.trust_bundle, now=time.time() + 86400, peer_role="server")
    assert info.value.peer == svid.spiffe_id


def test_expected_identities(ca: CertificateAuthority) -> None:
    """Only expected identities pass; the refusal names the destination and the list."""
    _, svid = ca.issue(SpiffeId.parse("spiffe://cluster.local/ns/default/sa/x"))
    chain = [der(svid.leaf)]
    with pytest.raises(PeerIdentityError) as info:
        verify_peer(
            chain,
            ca.trust_bundle,
            now=time.time(),
            peer_role="server",
            expected={REVIEWS},
            expected_for="reviews",
        )
    assert info.value.reason is PeerRefusal.UNEXPECTED_IDENTITY
    assert str(info.value) == (
        "identity spiffe://cluster.local/ns/default/sa/x is not one of the identities expected "
        f"for reviews: {REVIEWS}"
    )
    ok = {"spiffe://cluster.local/ns/default/sa/x", REVIEWS}
    assert verify_peer(chain, ca.trust_bundle, now=time.time(), peer_role="server", expected=ok)
    # one identity as a plain string is one identity, never a substring match
    one = "spiffe://cluster.local/ns/default/sa/x"
    assert verify_peer(chain, ca.trust_bundle, now=time.time(), peer_role="server", expected=one)
    with pytest.raises(PeerIdentityError):
        verify_peer(chain, ca.trust_bundle, now=time.time(), peer_role="server", expected=one + "y")
    _, short = ca.issue(SpiffeId.parse("spiffe://cluster.local/ns/default/sa/re"))
    with pytest.raises(PeerIdentityError):
        verify_peer(
            [der(short.leaf)],
            ca.trust_bundle,
            now=time.time(),
            peer_role="server",
            expected=REVIEWS,
        )
    as_ids = [SpiffeId.parse("spiffe://cluster.local/ns/default/sa/x")]
    assert verify_peer(chain, ca.trust_bundle, now=time.time(), peer_role="server", expected=as_ids)
    assert verify_peer(
        chain,
        ca.trust_bundle,
        now=time.time(),
        peer_role="server",
        expected=lambda s: s.namespace == "default",
    )
    with pytest.raises(PeerIdentityError, match="is not accepted for reviews"):
        verify_peer(
            chain,
            ca.trust_bundle,
            now=time.time(),
            peer_role="server",
            expected=lambda s: False,
            expected_for="reviews",
        )


def test_no_certificate_and_malformed(ca: CertificateAuthority) -> None:
    """No certificate at all, or bytes that are not one, are refused by name."""
    for chain in (None, [], ()):
        with pytest.raises(PeerIdentityError) as info:
            verify_peer(chain, ca.trust_bundle, now=time.time(), peer_role="client")
        assert info.value.reason is PeerRefusal.NO_CERTIFICATE
    with pytest.raises(PeerIdentityError) as info:
        verify_peer(b"\x30\x03\x02\x01\x00", ca.trust_bundle, now=time.time(), peer_role="client")
    assert info.value.reason is PeerRefusal.MALFORMED


def test_intermediate_chain_and_multiple_roots() -> None:
    """Leaves of an intermediate verify with the chain they carry; a bundle with two roots
    (a rotation) accepts leaves of either; a root removed from the bundle refuses its leaves."""
    old = CertificateAuthority.generate("cluster.local")
    mid = old.intermediate()
    new = old.rotated()
    _, via_mid = mid.issue(SpiffeId.parse(REVIEWS))
    _, via_new = new.issue(SpiffeId.parse(REVIEWS))
    both = new.trust_bundle
    assert len(both.roots_for("cluster.local")) == 2
    verify_peer([der(c) for c in via_mid.chain], both, now=time.time(), peer_role="server")
    verify_peer([der(c) for c in via_new.chain], both, now=time.time(), peer_role="server")
    with pytest.raises(PeerIdentityError) as info:  # leaf alone: the intermediate is missing
        verify_peer([der(via_mid.leaf)], both, now=time.time(), peer_role="server")
    assert info.value.reason is PeerRefusal.UNTRUSTED_CHAIN
    only_new = both.without_root("cluster.local", old.certificate)
    with pytest.raises(PeerIdentityError) as info:
        verify_peer([der(c) for c in via_mid.chain], only_new, now=time.time(), peer_role="server")
    assert info.value.reason is PeerRefusal.UNTRUSTED_CHAIN


def test_federated_bundle_checks_each_domain_against_its_own_roots() -> None:
    """With two trust domains, a CA of one cannot vouch for identities of the other."""
    local = CertificateAuthority.generate("cluster.local")
    partner = CertificateAuthority.generate("partner.org")
    bundle = local.trust_bundle.merged(partner.trust_bundle)
    assert bundle.trust_domains == {"cluster.local", "partner.org"}
    _, cert = make_leaf(
        local, ca_key(local), replace(GOOD, uris=("spiffe://partner.org/ns/a/sa/b",), dns=())
    )
    with pytest.raises(PeerIdentityError) as info:
        verify_peer([der(cert)], bundle, now=time.time(), peer_role="server")
    assert info.value.reason is PeerRefusal.UNTRUSTED_CHAIN
    _, svid = partner.issue(SpiffeId.parse("spiffe://partner.org/ns/a/sa/b"))
    assert verify_peer(
        [der(svid.leaf)], bundle, now=time.time(), peer_role="server"
    ).trust_domain == ("partner.org")


def test_empty_trust_domain_revokes() -> None:
    """A trust domain whose roots are all removed is not trusted at all."""
    ca = CertificateAuthority.generate("cluster.local")
    empty = ca.trust_bundle.without_root("cluster.local", ca.certificate)
    assert empty.trust_domains == frozenset()
    _, svid = ca.issue(SpiffeId.parse(REVIEWS))
    with pytest.raises(PeerIdentityError, match=r"trust domain cluster\.local not trusted"):
        verify_peer([der(svid.leaf)], empty, now=time.time(), peer_role="server")


def test_facts_are_cached_by_der(ca: CertificateAuthority) -> None:
    """A certificate is parsed once; later checks reuse the facts."""
    _, svid = ca.issue(SpiffeId.parse(REVIEWS))
    blob = der(svid.leaf)
    assert leaf_facts(blob) is leaf_facts(bytes(blob))


def test_bundle_refuses_leaves_and_compares_by_content(ca: CertificateAuthority) -> None:
    """A trust bundle holds CA certificates only; equal content, equal bundles."""
    _, svid = ca.issue(SpiffeId.parse(REVIEWS))
    with pytest.raises(MeshError, match="not a CA"):
        TrustBundle.of("cluster.local", svid.leaf)
    same = TrustBundle.from_pem("cluster.local", ca.trust_bundle.pem())
    assert same == ca.trust_bundle and hash(same) == hash(ca.trust_bundle)
    assert "cluster.local: 1 root(s)" in repr(same)
