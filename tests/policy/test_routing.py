"""Route matching tables: Istio's first-match order, AND within a block, OR across blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from pymesh.config.model import HTTPMatchRequest, StringMatch
from pymesh.policy.routing import compile_match, compile_rule_matches, first_match, string_test


@dataclass
class Req:
    method: str = "GET"
    path: str = "/"
    query: str = ""
    authority: str = "reviews:9080"
    scheme: str = "http"
    port: int = 9080
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def exact(v: str) -> StringMatch:
    return StringMatch("exact", v)


def prefix(v: str) -> StringMatch:
    return StringMatch("prefix", v)


def regex(v: str) -> StringMatch:
    return StringMatch("regex", v, re.compile(v))


@pytest.mark.parametrize(
    ("m", "value", "ok"),
    [
        (exact("/a"), "/a", True),
        (exact("/a"), "/a/", False),
        (prefix("/api"), "/api/v1", True),
        (prefix("/api"), "/ap", False),
        (regex("/u/[0-9]+"), "/u/12", True),
        (regex("/u/[0-9]+"), "/u/12/x", False),  # full match, as RE2 in Envoy
        (regex("v[12]"), "xv1", False),
    ],
)
def test_string_match(m: StringMatch, value: str, ok: bool) -> None:
    assert string_test(m)(value) is ok


def test_ignore_uri_case() -> None:
    m = HTTPMatchRequest(uri=prefix("/API"), ignore_uri_case=True)
    pred = compile_match(m, {})
    assert pred is not None
    assert pred(Req(path="/api/x"))
    assert pred(Req(path="/Api/x"))


MATCH_TABLE = [
    (
        HTTPMatchRequest(headers={"end-user": exact("jason")}),
        Req(headers={"end-user": "jason"}),
        True,
    ),
    (
        HTTPMatchRequest(headers={"end-user": exact("jason")}),
        Req(headers={"end-user": "bob"}),
        False,
    ),
    (HTTPMatchRequest(headers={"end-user": exact("jason")}), Req(), False),
    (HTTPMatchRequest(headers={"x-canary": None}), Req(headers={"x-canary": ""}), True),
    (HTTPMatchRequest(headers={"x-canary": None}), Req(), False),
    (HTTPMatchRequest(without_headers={"x-canary": None}), Req(), True),
    (HTTPMatchRequest(without_headers={"x-canary": None}), Req(headers={"x-canary": "1"}), False),
    (HTTPMatchRequest(method=exact("POST")), Req(method="POST"), True),
    (HTTPMatchRequest(method=exact("POST")), Req(method="GET"), False),
    (HTTPMatchRequest(scheme=exact("https")), Req(), False),
    (HTTPMatchRequest(authority=prefix("reviews")), Req(), True),
    (HTTPMatchRequest(port=9080), Req(), True),
    (HTTPMatchRequest(port=9081), Req(), False),
    (HTTPMatchRequest(query_params={"v": exact("2")}), Req(query="a=1&v=2"), True),
    (HTTPMatchRequest(query_params={"v": exact("2")}), Req(query="v=3"), False),
    (HTTPMatchRequest(query_params={"v": regex("[0-9]")}), Req(query="v=7"), True),
    (HTTPMatchRequest(query_params={"debug": None}), Req(query="debug"), True),
    (HTTPMatchRequest(query_params={"debug": None}), Req(query=""), False),
    # AND within one block
    (
        HTTPMatchRequest(uri=prefix("/api"), method=exact("GET")),
        Req(path="/api/x", method="POST"),
        False,
    ),
    (HTTPMatchRequest(uri=prefix("/api"), method=exact("GET")), Req(path="/api/x"), True),
]


@pytest.mark.parametrize(("m", "req", "ok"), MATCH_TABLE)
def test_match_table(m: HTTPMatchRequest, req: Req, ok: bool) -> None:
    pred = compile_match(m, {})
    assert pred is not None
    assert pred(req) is ok


def test_source_labels_resolved_at_compile_time() -> None:
    m = HTTPMatchRequest(source_labels={"app": "productpage"})
    assert compile_match(m, {"app": "reviews"}) is None
    pred = compile_match(m, {"app": "productpage", "version": "v1"})
    assert pred is not None and pred(Req())


def test_blocks_are_or_ed_and_no_blocks_match_all() -> None:
    pred = compile_rule_matches(
        [HTTPMatchRequest(uri=exact("/a")), HTTPMatchRequest(uri=exact("/b"))], {}
    )
    assert pred is not None
    assert pred(Req(path="/a")) and pred(Req(path="/b")) and not pred(Req(path="/c"))
    always = compile_rule_matches([], {})
    assert always is not None and always(Req(path="/anything"))
    assert compile_rule_matches([HTTPMatchRequest(source_labels={"x": "y"})], {}) is None


def test_first_match_wins_in_order() -> None:
    jason = compile_rule_matches([HTTPMatchRequest(headers={"end-user": exact("jason")})], {})
    api = compile_rule_matches([HTTPMatchRequest(uri=prefix("/"))], {})
    assert jason is not None and api is not None
    table = [(jason, "v3"), (api, "v1")]
    assert first_match(table, Req(headers={"end-user": "jason"})) == "v3"
    assert first_match(table, Req()) == "v1"
    assert first_match([(jason, "v3")], Req()) is None
