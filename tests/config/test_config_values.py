"""Value helpers: Go-style durations and Kubernetes-style host names (tables)."""

from __future__ import annotations

import pytest

from pymesh.config.durations import DurationError, format_duration, parse_duration
from pymesh.config.hosts import canonical_host, host_matches


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("0.5s", 0.5),
        (".5s", 0.5),
        ("100ms", 0.1),
        ("3m", 180.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2h45m30.5s", 9930.5),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),
        ("250\u03bcs", 0.00025),
        ("1500ns", 0.0000015),
        ("+2s", 2.0),
        (" 10s ", 10.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("-1s", "negative"),
        ("-0.5s", "negative"),
        ("5", "missing unit"),
        ("1.5", "missing unit"),
        ("5sec", 'unknown unit "sec"'),
        ("5 s", 'unknown unit " s"'),
        ("1d", 'unknown unit "d"'),
        ("s", "invalid duration"),
        ("1s2", "missing unit"),
        ("abc", "invalid duration"),
        ("99999999999999h", "too large"),
    ],
)
def test_parse_duration_errors(text: str, fragment: str) -> None:
    with pytest.raises(DurationError, match=None) as info:
        parse_duration(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.0005, "500us"), (0.1, "100ms"), (1.5, "1.5s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("name", "namespace", "expected"),
    [
        ("reviews", "default", "reviews.default.svc.cluster.local"),
        ("reviews", "prod", "reviews.prod.svc.cluster.local"),
        ("reviews.default", "prod", "reviews.default.svc.cluster.local"),
        ("reviews.default.svc", "prod", "reviews.default.svc.cluster.local"),
        ("reviews.default.svc.cluster.local", "prod", "reviews.default.svc.cluster.local"),
        ("Reviews.Default.SVC.cluster.local.", "x", "reviews.default.svc.cluster.local"),
        ("api.example.com", "default", "api.example.com"),
        ("a.b.c.d", "default", "a.b.c.d"),
        ("*", "default", "*"),
        ("*.example.com", "default", "*.example.com"),
        ("*.prod", "default", "*.prod.svc.cluster.local"),
        ("10.0.0.1", "default", "10.0.0.1"),
        ("::1", "default", "::1"),
        ("", "default", ""),
    ],
)
def test_canonical_host(name: str, namespace: str, expected: str) -> None:
    assert canonical_host(name, namespace) == expected


def test_canonical_host_custom_domain() -> None:
    assert canonical_host("reviews", "default", "corp.local") == "reviews.default.svc.corp.local"
    assert canonical_host("r.ns.svc.corp.local", "x", "corp.local") == "r.ns.svc.corp.local"


def test_three_spellings_are_one_service() -> None:
    names = ["reviews", "reviews.default", "reviews.default.svc.cluster.local"]
    assert len({canonical_host(n, "default") for n in names}) == 1


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("a.example.com", "a.example.com", True),
        ("*", "anything.at.all", True),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("a.example.com", "b.example.com", False),
    ],
)
def test_host_matches(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host) is expected
