"""SpiffeId parsing and validation: a table of the spec's rules (SPIFFE-ID.md §2) and the
identity inputs from the mesh CVE list."""

from __future__ import annotations

import pickle

import pytest

from pymesh.identity import SpiffeId, SpiffeIdError
from pymesh.identity.spiffeid import validate_trust_domain

VALID = [
    ("spiffe://cluster.local/ns/default/sa/reviews", "cluster.local", "/ns/default/sa/reviews"),
    ("spiffe://example.org", "example.org", ""),  # a trust-domain ID
    ("spiffe://127.0.0.1/x", "127.0.0.1", "/x"),  # IPv4-looking names are plain names
    ("spiffe://a_b-c.d/A-z_0.9/..a/.b.", "a_b-c.d", "/A-z_0.9/..a/.b."),
    ("spiffe://td/" + "x" * 2036, "td", "/" + "x" * 2036),  # 2048 bytes exactly
    ("spiffe://" + "a" * 255 + "/x", "a" * 255, "/x"),
]

INVALID = [
    # (input, words the message must contain)
    ("", "must start with 'spiffe://'"),
    ("cluster.local/ns/default/sa/x", "must start with 'spiffe://'"),
    ("https://cluster.local/x", "must be 'spiffe'"),
    ("SPIFFE://cluster.local/x", "lowercase 'spiffe'"),
    ("spiffe:/cluster.local/x", "must start with 'spiffe://'"),
    ("spiffe://", "empty trust domain"),
    ("spiffe:///p", "empty trust domain"),
    ("spiffe://Example.org/x", "must be lowercase"),
    ("spiffe://example.org/", "ends with '/'"),
    ("spiffe://example.org/x/", "ends with '/'"),
    ("spiffe://example.org//x", "empty path segment"),
    ("spiffe://example.org/./x", "'.'"),
    ("spiffe://example.org/../x", "'..'"),
    ("spiffe://example.org/x/..", "'..'"),
    ("spiffe://example.org/x%41", "percent-encoded"),
    ("spiffe://ex%41mple.org/x", "percent-encoded"),
    ("spiffe://user@example.org/x", "userinfo"),
    ("spiffe://example.org:8080/x", "port"),
    ("spiffe://[::1]/x", "IPv6"),
    ("spiffe://example.org/x?q=1", "query"),
    ("spiffe://example.org/x#frag", "fragment"),
    ("spiffe://example.org?q", "query"),
    ("spiffe://example.org/a b", "' '"),
    ("spiffe://example.org/é", "'é'"),
    ("spiffe://exa mple.org/x", "' '"),
    ("spiffe://example.org/x*", "'*'"),
    ("spiffe://*.example.org/x", "'*'"),
    # CVE-2025-66220 (row 12): a NUL inside the ID
    ("spiffe://pymesh.test/ns/default/sa/echo\x00.evil", "'\\x00'"),
    ("spiffe://pymesh.test/ns/default/sa/echo\n", "'\\n'"),
    ("spiffe://td/" + "x" * 2037, "longer than 2048 bytes"),
    ("spiffe://" + "a" * 256 + "/x", "longer than 255 bytes"),
]


@pytest.mark.parametrize(("text", "td", "path"), VALID)
def test_valid(text: str, td: str, path: str) -> None:
    """Valid IDs parse into trust domain and path, and round-trip to the same string."""
    sid = SpiffeId.parse(text)
    assert (sid.trust_domain, sid.path, str(sid), sid.uri) == (td, path, text, text)
    assert SpiffeId(td, path) == sid


@pytest.mark.parametrize(("text", "words"), INVALID, ids=[repr(t)[:60] for t, _ in INVALID])
def test_invalid(text: str, words: str) -> None:
    """Each broken rule is refused with a message that names it."""
    with pytest.raises(SpiffeIdError) as info:
        SpiffeId.parse(text)
    assert words in str(info.value)


def test_not_a_string() -> None:
    """Bytes are not an ID (no silent decoding)."""
    with pytest.raises(SpiffeIdError, match="string"):
        SpiffeId.parse(b"spiffe://a/x")  # type: ignore[arg-type]


def test_error_is_value_error_and_mesh_error() -> None:
    """SpiffeIdError is both a ValueError and in the MeshError tree."""
    from pymesh.errors import MeshError

    with pytest.raises(ValueError):
        SpiffeId.parse("nope")
    with pytest.raises(MeshError):
        SpiffeId.parse("nope")


def test_workload_identity_parts_and_dns_form() -> None:
    """Workload IDs expose namespace / service account and a DNS form not spelled like a URI."""
    sid = SpiffeId.workload("cluster.local", "default", "reviews")
    assert str(sid) == "spiffe://cluster.local/ns/default/sa/reviews"
    assert (sid.namespace, sid.service_account) == ("default", "reviews")
    assert sid.segments == ("ns", "default", "sa", "reviews")
    assert sid.dns_name == "reviews.default.serviceaccount.identity.cluster.local"
    assert sid.member_of("cluster.local") and not sid.member_of("evil.org")


@pytest.mark.parametrize(
    ("text", "dns"),
    [
        (
            "spiffe://cluster.local/ns/prod/sa/api.v1",
            "api.v1.prod.serviceaccount.identity.cluster.local",
        ),
        ("spiffe://cluster.local/ns/default/sa/Reviews", None),  # not a DNS label
        ("spiffe://cluster.local/ns/default/sa/my_sa", None),
        ("spiffe://my_td/ns/default/sa/reviews", None),
        ("spiffe://cluster.local/ns/a.b/sa/x", None),  # a namespace is one label
        ("spiffe://cluster.local/x/y", None),  # not a workload identity
        ("spiffe://cluster.local", None),
    ],
)
def test_dns_form_only_when_unambiguous(text: str, dns: str | None) -> None:
    """The DNS form exists only when every part is a valid DNS label."""
    assert SpiffeId.parse(text).dns_name == dns


def test_workload_rejects_bad_segments() -> None:
    """Namespace and service account are validated as path segments."""
    with pytest.raises(SpiffeIdError):
        SpiffeId.workload("cluster.local", "default", "a/b")
    with pytest.raises(SpiffeIdError):
        SpiffeId.workload("cluster.local", "..", "x")


def test_immutable_hashable_picklable() -> None:
    """Equal IDs are equal and hash alike; they cannot be changed; they pickle."""
    a = SpiffeId.parse("spiffe://td/x")
    b = SpiffeId("td", "/x")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != "spiffe://td/x"  # no implicit string equality
    with pytest.raises(AttributeError):
        a.path = "/y"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(a) == "SpiffeId('spiffe://td/x')"


def test_trust_domain_validation() -> None:
    """Trust domain names alone are validated by the same rules."""
    assert validate_trust_domain("cluster.local") == "cluster.local"
    for bad in ("", "A.b", "a:1", "a@b", "a/b"):
        with pytest.raises(SpiffeIdError):
            validate_trust_domain(bad)
