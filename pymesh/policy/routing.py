"""Route matching in Istio's order: the first `http[]` rule with a matching `match` block wins.

Match blocks of one rule are OR-ed; the conditions of one block are AND-ed. `compile_match`
turns a validated `HTTPMatchRequest` into one predicate over a `RouteRequest`, dropping conditions
that are known when the table is built (`sourceLabels` against this workload's own labels,
`sourceNamespace` against its own namespace).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar
from urllib.parse import parse_qsl

from pymesh.config.model import HTTPMatchRequest, StringMatch


class RouteRequest(Protocol):
    """What route matching reads from a request."""

    method: str
    path: str  # the raw path, without the query
    query: str  # the raw query, without "?"
    authority: str  # the Host / :authority value as sent
    scheme: str
    port: int  # the service port dialed

    def header(self, name: str) -> str | None:
        """The value of a (lower-case) header, or None; repeated headers joined by ','."""
        ...


Predicate = Callable[[RouteRequest], bool]
StrTest = Callable[[str], bool]


def string_test(m: StringMatch, ignore_case: bool = False) -> StrTest:
    """A test for one StringMatch: exact, prefix, or regex (full match, as RE2 in Envoy)."""
    if m.kind == "regex":
        assert m.regex is not None
        rx = m.regex
        return lambda s: rx.fullmatch(s) is not None
    value = m.value.lower() if ignore_case else m.value
    if m.kind == "exact":
        if ignore_case:
            return lambda s: s.lower() == value
        return value.__eq__
    if ignore_case:
        return lambda s: s.lower().startswith(value)
    return lambda s: s.startswith(value)


def _header_test(name: str, m: StringMatch | None) -> Predicate:
    if m is None:
        return lambda r: r.header(name) is not None
    test = string_test(m)

    def check(r: RouteRequest) -> bool:
        v = r.header(name)
        return v is not None and test(v)

    return check


def _query_test(name: str, m: StringMatch | None) -> Predicate:
    test = string_test(m) if m is not None else None

    def check(r: RouteRequest) -> bool:
        if not r.query:
            return False
        for k, v in parse_qsl(r.query, keep_blank_values=True):
            if k == name and (test is None or test(v)):
                return True
        return False

    return check


def compile_match(
    m: HTTPMatchRequest, source_labels: Mapping[str, str], source_namespace: str | None = None
) -> Predicate | None:
    """One predicate for a match block, or None when it can never match this workload
    (its `sourceLabels` are not all among `source_labels`, or its `sourceNamespace` is not
    `source_namespace`; None skips that check)."""
    if m.source_namespace and source_namespace not in (None, m.source_namespace):
        return None
    for k, v in m.source_labels.items():
        if source_labels.get(k) != v:
            return None
    tests: list[Predicate] = []
    if m.uri is not None:
        t = string_test(m.uri, m.ignore_uri_case)
        tests.append(lambda r: t(r.path))
    if m.scheme is not None:
        ts = string_test(m.scheme)
        tests.append(lambda r: ts(r.scheme))
    if m.method is not None:
        tm = string_test(m.method)
        tests.append(lambda r: tm(r.method))
    if m.authority is not None:
        ta = string_test(m.authority)
        tests.append(lambda r: ta(r.authority))
    if m.port is not None:
        port = m.port
        tests.append(lambda r: r.port == port)
    for name, hm in m.headers.items():
        tests.append(_header_test(name, hm))
    for name, hm in m.without_headers.items():
        ht = _header_test(name, hm)
        tests.append(lambda r, ht=ht: not ht(r))  # type: ignore[misc]
    for name, qm in m.query_params.items():
        tests.append(_query_test(name, qm))
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)
    return lambda r: all(t(r) for t in frozen)


def _always(r: RouteRequest) -> bool:
    return True


R = TypeVar("R")


def compile_rule_matches(
    matches: Sequence[HTTPMatchRequest],
    source_labels: Mapping[str, str],
    source_namespace: str | None = None,
) -> Predicate | None:
    """The predicate for a whole rule (its match blocks OR-ed; no blocks → always), or None when
    no block can match this workload."""
    if not matches:
        return _always
    preds = [
        p
        for p in (compile_match(m, source_labels, source_namespace) for m in matches)
        if p is not None
    ]
    if not preds:
        return None
    if len(preds) == 1:
        return preds[0]
    frozen = tuple(preds)
    return lambda r: any(p(r) for p in frozen)


def first_match(table: Sequence[tuple[Predicate, R]], request: RouteRequest) -> R | None:
    """The value of the first (predicate, value) entry whose predicate holds, else None."""
    for pred, value in table:
        if pred(request):
            return value
    return None
