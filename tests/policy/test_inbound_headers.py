"""Header hygiene: one reading of the headers for authorization and the app (CVE-2019-9900,
CVE-2019-18802, CVE-2021-32777, CVE-2023-27487)."""

from __future__ import annotations

import pytest

from pymesh.policy.inbound_headers import (
    UNTRUSTED_HEADERS,
    UNTRUSTED_PREFIXES,
    CleanHeaders,
    HeaderRejection,
    clean_headers,
)

H = list[tuple[bytes, bytes]]


def _clean(headers: H, **kw: object) -> CleanHeaders:
    r = clean_headers(headers, **kw)  # type: ignore[arg-type]
    assert isinstance(r, CleanHeaders), r
    return r


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(b"x-foo", b"abc\x00_special_cluster")], "NUL"),  # CVE-2019-9900
        ([(b"x-foo", b"abc\r\nx-admin: 1")], "control character"),
        ([(b"x-foo", b"abc\nx")], "control character"),
        ([(b"x-foo", b"abc\rx")], "control character"),
        ([(b"x-foo", b"a\x01b")], "control character"),
        ([(b"x-foo", b"a\x7fb")], "control character"),
        ([(b"x foo", b"a")], "invalid header name"),
        ([(b"x:foo", b"a")], "invalid header name"),
        ([(b"", b"a")], "invalid header name"),
        ([(b"host", b"a"), (b"Host", b"b")], "repeated"),
        ([(b"content-length", b"1"), (b"content-length", b"1")], "repeated"),
        ([(b"authorization", b"a"), (b"authorization", b"b")], "repeated"),
    ],
)
def test_rejected_with_400(headers: H, reason: str) -> None:
    r = clean_headers(headers)
    assert isinstance(r, HeaderRejection)
    assert r.status == 400 and reason in r.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"admin ", "admin"),  # CVE-2019-18802
        (b"admin\t", "admin"),
        (b" \tadmin \t ", "admin"),
        (b"a b", "a b"),
        (b"a\tb", "a\tb"),
        (b"", ""),
        (b"caf\xc3\xa9", "caf\xc3\xa9"),  # obs-text kept, read as latin-1
    ],
)
def test_values_trimmed(value: bytes, expected: str) -> None:
    assert _clean([(b"x-user", value)]).get("x-user") == expected


def test_repeated_header_folds_once_for_both_readers() -> None:
    # CVE-2021-32777: the app and authorization must read the same value
    r = _clean([(b"X-User", b"alice"), (b"accept", b"*/*"), (b"x-user", b" admin ")])
    assert r.get("x-user") == "alice, admin"
    assert r.items == [(b"x-user", b"alice, admin"), (b"accept", b"*/*")]
    assert r.values == {"x-user": "alice, admin", "accept": "*/*"}


def test_cookie_folds_with_semicolons() -> None:
    r = _clean([(b"cookie", b"a=1"), (b"cookie", b"b=2")])
    assert r.get("cookie") == "a=1; b=2"


def test_names_lower_cased_and_order_kept() -> None:
    r = _clean([(b"B", b"1"), (b"A", b"2"), (b"b", b"3")])
    assert [n for n, _ in r.items] == [b"b", b"a"]
    assert r.get("B") is None and r.get("b") == "1, 3"


def test_underscores() -> None:
    headers = [(b"x_user", b"admin"), (b"x-user", b"alice")]
    assert _clean(headers).get("x_user") == "admin"
    assert _clean(headers, underscores="drop").values == {"x-user": "alice"}
    r = clean_headers(headers, underscores="reject")
    assert isinstance(r, HeaderRejection) and "'_'" in r.reason


def test_untrusted_identity_headers_dropped() -> None:
    # CVE-2023-27487: a downstream cannot set proxy-internal or identity headers
    headers = [
        (b"x-forwarded-client-cert", b"By=spiffe://x;URI=spiffe://cluster.local/ns/a/sa/b"),
        (b"X-Envoy-Original-Path", b"/public"),
        (b"x-pymesh-peer", b"spiffe://cluster.local/ns/a/sa/admin"),
        (b"x-ssl-client-s-dn", b"CN=admin"),
        (b"x-user", b"bob"),
    ]
    r = _clean(headers, drop=UNTRUSTED_HEADERS, drop_prefixes=UNTRUSTED_PREFIXES)
    assert r.values == {"x-user": "bob"}
