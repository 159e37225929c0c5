"""Header operation tables: Envoy's order (remove, set, add per level; destination level first,
then the rule's), authority rewrites and the mirror's `-shadow` authority."""

from __future__ import annotations

import pytest

from pymesh.config.model import HeaderOperations
from pymesh.policy.header_ops import (
    HeaderOps,
    apply_header_ops,
    authority_of,
    compile_header_ops,
    shadow_authority,
    with_authority,
)

REQ = [(b"Host", b"reviews:9080"), (b"X-Trace", b"a"), (b"x-trace", b"b"), (b"Accept", b"*/*")]


def ops(
    set: dict[str, str] | None = None,
    add: dict[str, str] | None = None,
    remove: tuple[str, ...] = (),
) -> HeaderOps:
    compiled = compile_header_ops(HeaderOperations(set or {}, add or {}, remove))
    assert compiled is not None
    return compiled


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([], REQ),
        ([ops(remove=("x-trace",))], [(b"Host", b"reviews:9080"), (b"Accept", b"*/*")]),
        (
            [ops(set={"x-trace": "c"})],  # set replaces every value of the name
            [(b"Host", b"reviews:9080"), (b"Accept", b"*/*"), (b"x-trace", b"c")],
        ),
        ([ops(add={"x-trace": "c"})], [*REQ, (b"x-trace", b"c")]),  # add appends
        (
            [ops(set={"x-new": "1"}, add={"x-new": "2"})],  # set, then add: both values
            [*REQ, (b"x-new", b"1"), (b"x-new", b"2")],
        ),
        (
            [ops(remove=("accept",), set={"accept": "text/plain"})],  # remove before set
            [
                (b"Host", b"reviews:9080"),
                (b"X-Trace", b"a"),
                (b"x-trace", b"b"),
                (b"accept", b"text/plain"),
            ],
        ),
        (
            # destination level first, then the rule's: the rule's `set` wins
            [ops(set={"x-version": "dest"}), ops(set={"x-version": "rule"})],
            [*REQ, (b"x-version", b"rule")],
        ),
        (
            # ... and the rule's `remove` drops what the destination level added
            [ops(add={"x-debug": "1"}), ops(remove=("x-debug",))],
            REQ,
        ),
    ],
)
def test_apply_header_ops(levels: list[HeaderOps], expected: list[tuple[bytes, bytes]]) -> None:
    assert apply_header_ops(REQ, levels) == expected


def test_compile_keeps_authority_out_and_empty_is_none() -> None:
    assert compile_header_ops(None) is None
    assert compile_header_ops(HeaderOperations()) is None
    only_host = HeaderOperations(set={"host": "other"})
    assert compile_header_ops(only_host) is None
    assert authority_of(only_host) == "other"
    assert authority_of(HeaderOperations(add={":authority": "x:1"})) == "x:1"
    assert authority_of(HeaderOperations(set={"x": "y"})) is None


@pytest.mark.parametrize(
    ("headers", "authority", "expected"),
    [
        (REQ, "ratings:80", [(b"Host", b"ratings:80"), *REQ[1:]]),
        ([(b"a", b"1")], "ratings", [(b"host", b"ratings"), (b"a", b"1")]),
        ([(b"host", b"x"), (b"host", b"y")], "z", [(b"host", b"z")]),
    ],
)
def test_with_authority(
    headers: list[tuple[bytes, bytes]], authority: str, expected: list[tuple[bytes, bytes]]
) -> None:
    assert with_authority(headers, authority) == expected


@pytest.mark.parametrize(
    ("authority", "shadow"),
    [
        ("reviews:9080", "reviews-shadow:9080"),
        ("reviews", "reviews-shadow"),
        ("reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local-shadow"),
        ("[::1]:80", "[::1]-shadow:80"),
    ],
)
def test_shadow_authority(authority: str, shadow: str) -> None:
    assert shadow_authority(authority) == shadow
