"""Path normalization: Istio's expectations per mode (the shared tsv), Envoy's escaped-slash
actions, pymesh's stricter rejections, and what the app receives."""

from __future__ import annotations

import csv

import pytest

from pymesh.policy.paths import (
    DEFAULT_PATH_OPTIONS,
    EscapedSlashes,
    NormalizedPath,
    PathMode,
    PathOptions,
    PathRejection,
    normalize_path,
)
from tests.helpers import shared_data

TSV = shared_data("istio-path-normalization.tsv")


def _tsv_cases() -> list[tuple[str, str, str]]:
    with TSV.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0]
    assert header == ["input", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]
    cases = []
    for row in rows[1:]:
        for mode, expected in zip(header[1:], row[1:], strict=True):
            if expected != "-":  # Istio's test does not state this case for this mode
                cases.append((mode, row[0], expected))
    return cases


def _outcome(target: str, options: PathOptions = DEFAULT_PATH_OPTIONS) -> str:
    r = normalize_path(target, options)
    return str(r.status) if isinstance(r, PathRejection) else r.path


@pytest.mark.parametrize(("mode", "target", "expected"), _tsv_cases())
def test_istio_normalization_table(mode: str, target: str, expected: str) -> None:
    assert _outcome(target, PathOptions.for_mode(mode)) == expected


def test_tsv_has_every_mode() -> None:
    assert {m for m, _, _ in _tsv_cases()} == {m.value for m in PathMode}
    assert len(_tsv_cases()) >= 90


def _admin_escape_expected(xx: int) -> str:
    ch = chr(xx)
    if (ch.isascii() and ch.isalnum()) or ch in "-._~":
        return "/admin" + ch
    if xx in (0x2F, 0x5C):
        return "/admin/"
    return f"/admin%{xx:02x}"


@pytest.mark.parametrize("xx", range(1, 256), ids=lambda x: f"%{x:02x}")
def test_admin_escape_sweep(xx: int) -> None:
    # Istio checks /admin%XX under DECODE_AND_MERGE_SLASHES (README of the shared data)
    assert _outcome(f"/admin%{xx:02x}") == _admin_escape_expected(xx)
    assert _outcome(f"/admin%{xx:02X}") == _admin_escape_expected(xx).replace(
        f"%{xx:02x}", f"%{xx:02X}"
    )


# (mode, target, expected path or status) — Envoy's canonicalizer beyond Istio's table
ENVOY_CASES = [
    ("BASE", "/a/./b", "/a/b"),
    ("BASE", "/a/b/.", "/a/b/"),
    ("BASE", "/a/b/..", "/a/"),
    ("BASE", "/..", "/"),
    ("BASE", "/../../a", "/a"),
    ("BASE", "/a/%2e", "/a/"),
    ("BASE", "/a/.%2E/b", "/b"),
    ("BASE", "/a/..b/c", "/a/..b/c"),
    ("BASE", "/a/b..", "/a/b.."),
    ("BASE", "/%41%42%7e%5f", "/AB~_"),
    ("BASE", "/%7B%7d", "/%7B%7d"),  # kept escaped, hex case untouched
    ("BASE", "/a b", "/a%20b"),
    ("BASE", '/"<>^`{|}', "/%22%3C%3E%5E%60%7B%7C%7D"),
    ("BASE", "/é", "/%C3%A9"),
    ("BASE", "/%zz", "/%zz"),  # invalid escape: the % is kept
    ("BASE", "/%%300", "/%2500"),  # nested escapes cannot turn into a valid one
    ("BASE", "/%3%30", "/%2530"),
    ("BASE", "/a%", "/a%"),
    ("BASE", "/!$&'()*+,;=:@[]", "/!$&'()*+,;=:@[]"),
    ("MERGE_SLASHES", "//", "/"),
    ("MERGE_SLASHES", "///a///b///", "/a/b/"),
    ("NONE", "//a/../b", "//a/../b"),
    ("NONE", "/a%2fb", "/a%2fb"),
    ("DECODE_AND_MERGE_SLASHES", "/a%2F%2F%2fb", "/a/b"),
    ("DECODE_AND_MERGE_SLASHES", "/a%252Fb", "/a%252Fb"),
    ("DECODE_AND_MERGE_SLASHES", "/a/%2e%2e%2fb", "/b"),
    ("DECODE_AND_MERGE_SLASHES", "/a/%2e%2e%5cb", "/b"),
]


@pytest.mark.parametrize(("mode", "target", "expected"), ENVOY_CASES)
def test_envoy_canonicalizer(mode: str, target: str, expected: str) -> None:
    assert _outcome(target, PathOptions.for_mode(mode)) == expected


# targets refused in every mode (pymesh is stricter than Envoy here)
REJECTED = [
    ("/admin%00", "NUL"),
    ("/a\x00b", "NUL"),
    ("/a\rb", "control"),
    ("/a\nb", "control"),
    ("/a\tb", "control"),
    ("/a\x7fb", "control"),
    ("admin", "does not start with /"),
    ("*", "does not start with /"),
    ("http://evil/admin", "does not start with /"),
    ("grpc.testing.TestService/UnaryCall", "does not start with /"),  # CVE-2026-33186
    ("", "empty path"),
    ("?x=1", "empty path"),
]


@pytest.mark.parametrize("mode", list(PathMode))
@pytest.mark.parametrize(("target", "reason"), REJECTED)
def test_rejected_in_every_mode(mode: PathMode, target: str, reason: str) -> None:
    r = normalize_path(target, PathOptions.for_mode(mode))
    assert isinstance(r, PathRejection)
    assert r.status == 400 and reason in r.reason


def test_query_is_kept_and_never_normalized() -> None:
    r = normalize_path("/a//b/../c?x=/../..//&y=%2F%00#frag")
    assert r == NormalizedPath("/a/c", "x=/../..//&y=%2F%00")
    assert isinstance(r, NormalizedPath)
    assert r.target == "/a/c?x=/../..//&y=%2F%00"
    assert normalize_path("/secret?") == NormalizedPath("/secret", "")
    assert normalize_path("/secret#") == NormalizedPath("/secret", "")


def test_fragment_removed_or_rejected() -> None:
    assert normalize_path("/user/profile#section1") == NormalizedPath("/user/profile")
    assert normalize_path("/a?q=1#f") == NormalizedPath("/a", "q=1")
    strict = PathOptions.for_mode("DECODE_AND_MERGE_SLASHES", reject_fragment=True)
    r = normalize_path("/user/profile#section1", strict)
    assert isinstance(r, PathRejection) and "fragment" in r.reason


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (EscapedSlashes.KEEP_UNCHANGED, NormalizedPath("/a%2Fb%5cc")),
        (EscapedSlashes.UNESCAPE_AND_FORWARD, NormalizedPath("/a/b/c")),
        (EscapedSlashes.UNESCAPE_AND_REDIRECT, NormalizedPath("/a/b/c", "", True)),
        (
            EscapedSlashes.REJECT_REQUEST,
            PathRejection(400, "escaped slash (%2F or %5C) in the path"),
        ),
    ],
)
def test_escaped_slash_actions(
    action: EscapedSlashes, expected: NormalizedPath | PathRejection
) -> None:
    assert normalize_path("/a%2Fb%5cc", PathOptions(escaped_slashes=action)) == expected


def test_redirect_only_when_slashes_were_escaped() -> None:
    options = PathOptions(escaped_slashes=EscapedSlashes.UNESCAPE_AND_REDIRECT)
    r = normalize_path("/a/../b?q=1", options)
    assert r == NormalizedPath("/b", "q=1", False)
    r = normalize_path("/a%2f..%2fb?q=1", options)
    assert isinstance(r, NormalizedPath) and r.redirect and r.target == "/b?q=1"


def test_what_the_app_receives() -> None:
    r = normalize_path(b"/caf%C3%A9/%2541/x%20y?q=%2F")
    assert isinstance(r, NormalizedPath)
    assert r.path == "/caf%C3%A9/%2541/x%20y"
    assert r.raw_path == b"/caf%C3%A9/%2541/x%20y"
    assert r.asgi_path() == "/café/%41/x y"
    assert r.wsgi_path_info() == "/caf\xc3\xa9/%41/x y"
    assert r.query == "q=%2F"
    bad_utf8 = normalize_path("/%c0%ae")
    assert isinstance(bad_utf8, NormalizedPath)
    assert bad_utf8.asgi_path() == "/\ufffd\ufffd"
    plain = normalize_path("/plain/path")
    assert isinstance(plain, NormalizedPath)
    assert plain.asgi_path() == plain.wsgi_path_info() == "/plain/path"


def test_raw_bytes_and_non_latin_text() -> None:
    assert normalize_path(b"/\xc3\xa9") == NormalizedPath("/%C3%A9")
    assert normalize_path("/é") == NormalizedPath("/%C3%A9")
    none = PathOptions.for_mode("NONE")
    r = normalize_path("/\u20ac", none)
    assert isinstance(r, NormalizedPath) and r.raw_path == "/\u20ac".encode()


def test_fast_path_agrees_with_the_canonicalizer() -> None:
    for target in ["/", "/a/b", "/a.b/c.d", "/a-b_c~d", "/.well-known/x", "/a/./b", "/a//b"]:
        fast = normalize_path(target)
        slow = normalize_path(target.replace("a", "%61"))
        assert fast == slow, target


@pytest.mark.parametrize("mode", list(PathMode))
def test_normalization_is_idempotent_on_the_table(mode: PathMode) -> None:
    options = PathOptions.for_mode(mode)
    for _, target, _ in _tsv_cases():
        first = normalize_path(target, options)
        if isinstance(first, NormalizedPath):
            assert normalize_path(first.path, options) == NormalizedPath(first.path), target
