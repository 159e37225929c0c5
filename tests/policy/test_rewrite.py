"""Rewrite, redirect and local-reply tables, as Istio documents them and Envoy applies them."""

from __future__ import annotations

import re

import pytest

from pymesh.config.model import HTTPMatchRequest, HTTPRedirect, HTTPRewrite, RegexRewrite
from pymesh.config.model import StringMatch as SM
from pymesh.policy.local import (
    FAULT_BODY,
    direct_reply,
    fault_abort_reply,
    redirect_location,
    redirect_reply,
)
from pymesh.policy.rewrite import (
    PrefixRewrite,
    compile_path_rewrite,
    rewrite_target,
    rewrite_template,
)


def match(kind: str | None, value: str = "", ignore_case: bool = False) -> HTTPMatchRequest:
    if kind is None:
        return HTTPMatchRequest(headers={"x": None})  # a block without a URI match
    rx = re.compile(value) if kind == "regex" else None
    return HTTPMatchRequest(uri=SM(kind, value, rx), ignore_uri_case=ignore_case)  # type: ignore[arg-type]


def regex_rewrite(pattern: str, template: str) -> HTTPRewrite:
    return HTTPRewrite(uri_regex_rewrite=RegexRewrite(pattern, template, re.compile(pattern)))


@pytest.mark.parametrize(
    ("rewrite", "block", "target", "expected"),
    [
        # Istio: "If the original URI was matched based on prefix, the value provided in this
        # field will replace the corresponding matched prefix."
        (
            HTTPRewrite(uri="/newcatalog"),
            match("prefix", "/ratings"),
            b"/ratings/2?x=1",
            b"/newcatalog/2?x=1",
        ),
        (HTTPRewrite(uri="/"), match("prefix", "/api/"), b"/api/v1/items", b"/v1/items"),
        (HTTPRewrite(uri="/v2/"), match("prefix", "/API/", True), b"/api/x", b"/v2/x"),
        # exact and regex matches: the whole path (the query stays)
        (HTTPRewrite(uri="/b"), match("exact", "/a"), b"/a?q=1", b"/b?q=1"),
        (HTTPRewrite(uri="/b"), match("regex", "/a.*"), b"/a/c/d", b"/b"),
        # no URI match (or no match blocks): Istio's route matches the prefix "/"
        (HTTPRewrite(uri="/v2/"), match(None), b"/items", b"/v2/items"),
        (HTTPRewrite(uri="/v2/"), None, b"/items", b"/v2/items"),
        # Envoy's regex_rewrite example: ^/service/([^/]+)(/.*)$ with \2/instance/\1
        # turns /service/foo/v1/api into /v1/api/instance/foo
        (
            regex_rewrite(r"^/service/([^/]+)(/.*)$", r"\2/instance/\1"),
            None,
            b"/service/foo/v1/api",
            b"/v1/api/instance/foo",
        ),
        # every match is replaced; the query is not touched
        (regex_rewrite("o", "0"), match("prefix", "/"), b"/foo/bo?o=o", b"/f00/b0?o=o"),
        # authority-only rewrites leave the path alone
        (HTTPRewrite(authority="ratings"), match("prefix", "/x"), b"/x/y", b"/x/y"),
    ],
)
def test_rewrite(
    rewrite: HTTPRewrite, block: HTTPMatchRequest | None, target: bytes, expected: bytes
) -> None:
    plan = compile_path_rewrite(rewrite, block)
    got = rewrite_target(plan, target) if plan is not None else target
    assert got == expected


def test_compiled_prefix_lengths() -> None:
    assert compile_path_rewrite(HTTPRewrite(uri="/n"), match("prefix", "/ab")) == PrefixRewrite(
        "/n", 3
    )
    assert compile_path_rewrite(HTTPRewrite(uri="/n"), match("exact", "/ab")) == PrefixRewrite(
        "/n", None
    )
    assert compile_path_rewrite(None, None) is None


@pytest.mark.parametrize(
    ("pattern", "template", "parts"),
    [
        (r"(a)(b)", r"\2-\1", (2, "-", 1)),
        (r"a", r"x\\y", ("x\\y",)),
        (r"(a)", r"\0!", (0, "!")),
    ],
)
def test_rewrite_template(pattern: str, template: str, parts: tuple[str | int, ...]) -> None:
    assert rewrite_template(re.compile(pattern), template) == parts


@pytest.mark.parametrize(("pattern", "template"), [(r"(a)", r"\2"), (r"a", r"\n"), ("a", "x\\")])
def test_rewrite_template_errors(pattern: str, template: str) -> None:
    with pytest.raises(ValueError):
        rewrite_template(re.compile(pattern), template)


R = HTTPRedirect


@pytest.mark.parametrize(
    ("redirect", "req", "location"),
    [
        # Istio's example: uri + authority
        (
            R(uri="/v1/bookRatings", authority="newratings.default.svc.cluster.local"),
            ("http", "ratings:9080", 9080, "/v1/getProductRatings", ""),
            "http://newratings.default.svc.cluster.local/v1/bookRatings",
        ),
        # the whole path is replaced, whatever matched; the query is kept
        (R(uri="/new"), ("http", "shop", 80, "/old/cart", "id=7"), "http://shop/new?id=7"),
        (R(uri="/new?x=1"), ("http", "shop", 80, "/old", "id=7"), "http://shop/new?x=1"),
        # only the scheme: https drops the old scheme's default port, keeps any other
        (R(scheme="https"), ("http", "shop:80", 80, "/a", ""), "https://shop/a"),
        (R(scheme="https"), ("http", "shop:8080", 8080, "/a", ""), "https://shop:8080/a"),
        # a port replaces the request's
        (R(port=8443, scheme="https"), ("http", "shop:8080", 8080, "/", ""), "https://shop:8443/"),
        (
            R(derive_port="FROM_REQUEST_PORT", authority="b.example"),
            ("http", "a", 9080, "/p", ""),
            "http://b.example:9080/p",
        ),
        (
            R(derive_port="FROM_PROTOCOL_DEFAULT", scheme="https"),
            ("http", "a:80", 80, "/", ""),
            "https://a/",
        ),
        (R(authority="b:1"), ("http", "a:2", 2, "/", "q"), "http://b:1/?q"),
        (R(scheme="http"), ("http", "[::1]:8080", 8080, "/", ""), "http://[::1]:8080/"),
    ],
)
def test_redirect_location(
    redirect: HTTPRedirect, req: tuple[str, str, int, str, str], location: str
) -> None:
    assert redirect_location(redirect, *req) == location


def test_local_replies() -> None:
    r = redirect_reply("http://x/", 308)
    assert (r.status, r.body) == (308, b"")
    assert (b"location", b"http://x/") in r.headers
    d = direct_reply(503, b"down")
    assert (d.status, d.body) == (503, b"down")
    assert (b"content-type", b"text/plain") in d.headers
    assert (b"content-length", b"4") in d.headers
    assert direct_reply(204, None).headers == [(b"content-length", b"0")]
    a = fault_abort_reply(418, None)
    assert (a.status, a.body, a.grpc_status) == (418, FAULT_BODY, None)
    g = fault_abort_reply(None, 14)
    assert (g.status, g.body, g.grpc_status) == (200, b"", 14)
    assert (b"grpc-status", b"14") in g.headers
    assert (b"content-type", b"application/grpc") in g.headers
