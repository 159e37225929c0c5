"""CORS decisions as Envoy's cors filter makes them (tables over `pymesh.policy.cors`)."""

from __future__ import annotations

import re

import pytest

from pymesh.config.model import CorsPolicy, StringMatch
from pymesh.policy.cors import CorsDecision, compile_cors, decide, origin_allowed

POLICY = CorsPolicy(
    allow_origins=(
        StringMatch("exact", "https://app.example"),
        StringMatch("prefix", "https://dev."),
        StringMatch(
            "regex", r"https://.*\.corp\.example", re.compile(r"https://.*\.corp\.example")
        ),
    ),
    allow_methods=("GET", "POST"),
    allow_headers=("x-token", "content-type"),
    expose_headers=("x-trace",),
    max_age=86400.0,
    allow_credentials=True,
)
RULES = compile_cors(POLICY)
APP = "https://app.example"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example", True),
        ("https://app.example.evil", False),  # exact is exact
        ("https://dev.anything", True),
        ("https://a.corp.example", True),
        ("https://a.corp.example.evil", False),  # regex is a full match
        ("http://app.example", False),
    ],
)
def test_origin_matching(origin: str, allowed: bool) -> None:
    assert origin_allowed(RULES, origin) is allowed


def test_an_origin_entry_that_matches_star_allows_every_origin() -> None:
    rules = compile_cors(CorsPolicy(allow_origins=(StringMatch("exact", "*"),)))
    assert origin_allowed(rules, "https://anyone.example")
    assert not origin_allowed(compile_cors(CorsPolicy()), "https://anyone.example")


def test_allowed_preflight_is_answered_with_the_policy() -> None:
    got = decide(RULES, "OPTIONS", APP, "PUT", "x-token")
    assert got == CorsDecision(
        True,
        (
            ("access-control-allow-origin", APP),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET,POST"),  # the browser checks PUT, not Envoy
            ("access-control-allow-headers", "x-token,content-type"),
            ("access-control-max-age", "86400"),
        ),
    )


def test_actual_request_gets_origin_expose_credentials_and_vary() -> None:
    got = decide(RULES, "GET", APP, None, None)
    assert got == CorsDecision(
        False,
        (
            ("access-control-allow-origin", APP),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-trace"),
            ("vary", "origin"),
        ),
    )


@pytest.mark.parametrize(
    ("method", "origin", "request_method"),
    [
        ("GET", None, None),  # no Origin: not a CORS request
        ("OPTIONS", None, "GET"),
        ("OPTIONS", "", "GET"),
        ("GET", "https://evil.example", None),  # not allowed, actual request: served untouched
        ("OPTIONS", "https://evil.example", "GET"),  # not allowed preflight, FORWARD (default)
    ],
)
def test_nothing_to_do(method: str, origin: str | None, request_method: str | None) -> None:
    assert decide(RULES, method, origin, request_method, None) is None


def test_options_without_request_method_is_an_actual_request() -> None:
    got = decide(RULES, "OPTIONS", APP, None, None)
    assert got is not None and not got.preflight
    assert ("access-control-allow-origin", APP) in got.headers


def test_ignore_answers_unmatched_preflights_without_cors_headers() -> None:
    rules = compile_cors(
        CorsPolicy(
            allow_origins=(StringMatch("exact", APP),),
            unmatched_preflights="IGNORE",
        )
    )
    assert decide(rules, "OPTIONS", "https://evil.example", "GET", None) == CorsDecision(True, ())
    # an actual request from that origin is still served, without CORS headers
    assert decide(rules, "GET", "https://evil.example", None, None) is None
    explicit = compile_cors(
        CorsPolicy(allow_origins=(StringMatch("exact", APP),), unmatched_preflights="FORWARD")
    )
    assert decide(explicit, "OPTIONS", "https://evil.example", "GET", None) is None


@pytest.mark.parametrize(
    ("asked_headers", "expected"),
    [
        ("x-a,x-b", ("access-control-allow-headers", "x-a,x-b")),
        (None, None),
    ],
)
def test_star_methods_and_headers_echo_the_request(
    asked_headers: str | None, expected: tuple[str, str] | None
) -> None:
    rules = compile_cors(
        CorsPolicy(
            allow_origins=(StringMatch("exact", APP),),
            allow_methods=("*",),
            allow_headers=("*",),
        )
    )
    got = decide(rules, "OPTIONS", APP, "DELETE", asked_headers)
    assert got is not None and got.preflight
    assert ("access-control-allow-methods", "DELETE") in got.headers
    names = [n for n, _ in got.headers]
    assert "access-control-allow-credentials" not in names
    assert "access-control-max-age" not in names
    if expected is None:
        assert "access-control-allow-headers" not in names
    else:
        assert expected in got.headers


def test_minimal_policy_sets_only_the_origin() -> None:
    rules = compile_cors(CorsPolicy(allow_origins=(StringMatch("exact", APP),)))
    assert decide(rules, "OPTIONS", APP, "GET", "x-a") == CorsDecision(
        True, (("access-control-allow-origin", APP),)
    )
    assert decide(rules, "POST", APP, None, None) == CorsDecision(
        False, (("access-control-allow-origin", APP), ("vary", "origin"))
    )
    # allowCredentials: false is not sent (Envoy sends the header only for true)
    no_creds = compile_cors(
        CorsPolicy(allow_origins=(StringMatch("exact", APP),), allow_credentials=False)
    )
    got = decide(no_creds, "GET", APP, None, None)
    assert got is not None
    assert "access-control-allow-credentials" not in [n for n, _ in got.headers]
