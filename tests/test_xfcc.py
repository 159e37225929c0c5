"""XFCC parsing (Envoy's format) and the HMAC that makes it trustworthy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pymesh.xfcc import XfccError, XfccSigner, format_xfcc, parse_xfcc, peer_uri

ENVOY_EXAMPLES = [
    (
        "By=spiffe://cluster.local/ns/default/sa/app;Hash=468ed33be74eee6556d90c0149c1309e;"
        'Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";'
        "URI=spiffe://cluster.local/ns/default/sa/client",
        "spiffe://cluster.local/ns/default/sa/client",
    ),
    (
        "By=http://frontend.lyft.com;Hash=468ed;URI=http://testclient.lyft.com,"
        "By=http://backend.lyft.com;Hash=9ba61;URI=spiffe://cluster.local/ns/b/sa/last",
        "spiffe://cluster.local/ns/b/sa/last",
    ),
    ('Subject="CN=a, O=b; c";URI=spiffe://td/ns/x/sa/y', "spiffe://td/ns/x/sa/y"),
    ("Hash=abc;URI=spiffe://td/ns/x/sa/y;URI=spiffe://td/ns/x/sa/z", None),  # two URIs: none
    ("Hash=abc", None),
    ("", None),
]


@pytest.mark.parametrize(("header", "uri"), ENVOY_EXAMPLES)
def test_peer_uri(header: str, uri: str | None) -> None:
    assert peer_uri(header) == uri


def test_quoted_values_keep_separators() -> None:
    (el,) = parse_xfcc('Subject="CN=a, O=b; c \\"q\\"";URI=u')
    assert el["Subject"] == ['CN=a, O=b; c "q"']


@pytest.mark.parametrize("bad", ['Subject="unterminated;URI=x', "novalue;URI=x", "=x"])
def test_malformed_is_an_error(bad: str) -> None:
    with pytest.raises(XfccError):
        parse_xfcc(bad)


def test_format_round_trips() -> None:
    h = format_xfcc("spiffe://td/ns/a/sa/proxy", "spiffe://td/ns/a/sa/caller", "abcd")
    assert peer_uri(h) == "spiffe://td/ns/a/sa/caller"


def test_hmac_authenticates_exactly_the_header(tmp_path: Path) -> None:
    signer = XfccSigner.create_file(tmp_path / "key")
    h = format_xfcc(None, "spiffe://td/ns/a/sa/caller")
    mac = signer.sign(h)
    assert signer.verify(h, mac)
    assert not signer.verify(h + "x", mac)
    assert not signer.verify(h, None)
    assert not XfccSigner(os.urandom(32)).verify(h, mac)
    assert XfccSigner.from_file(tmp_path / "key").verify(h, mac)


def test_key_file_must_be_private(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    with pytest.raises(XfccError, match="chmod 600"):
        XfccSigner.from_file(key)
    with pytest.raises(XfccError, match="cannot read"):
        XfccSigner.from_file(tmp_path / "missing")
