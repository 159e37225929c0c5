"""Retry policy tables: Envoy's retryOn conditions, Istio's defaults, full-jitter back-off."""

from __future__ import annotations

import random

import pytest

from pymesh.policy.retry import (
    DEFAULT_RETRY_ON,
    Failure,
    RetryPolicy,
    backoff_delay,
    retry_condition,
)


def pol(retry_on: str | None, attempts: int | None = 3) -> RetryPolicy:
    tokens = None if retry_on is None else tuple(t.strip() for t in retry_on.split(","))
    return RetryPolicy.from_istio(attempts, tokens, None)


CASES = [
    # retryOn, status, grpc, failure, expected condition
    ("5xx", 503, None, None, "5xx"),
    ("5xx", 500, None, None, "5xx"),
    ("5xx", 404, None, None, None),
    ("5xx", None, None, Failure.CONNECT, "5xx"),
    ("5xx", None, None, Failure.RESET, "5xx"),
    ("5xx", None, None, Failure.PER_TRY_TIMEOUT, "5xx"),
    ("5xx", None, None, Failure.ROUTE_TIMEOUT, None),
    ("gateway-error", 502, None, None, "gateway-error"),
    ("gateway-error", 503, None, None, "gateway-error"),
    ("gateway-error", 504, None, None, "gateway-error"),
    ("gateway-error", 500, None, None, None),
    ("gateway-error", None, None, Failure.CONNECT, "gateway-error"),
    ("connect-failure", None, None, Failure.CONNECT, "connect-failure"),
    ("connect-failure", None, None, Failure.RESET, None),
    ("connect-failure", 503, None, None, None),
    ("reset", None, None, Failure.RESET, "reset"),
    ("reset", None, None, Failure.TIMEOUT, "reset"),
    ("reset", None, None, Failure.RESET_BEFORE_REQUEST, "reset"),
    ("reset", 503, None, None, None),
    ("reset-before-request", None, None, Failure.RESET_BEFORE_REQUEST, "reset-before-request"),
    ("reset-before-request", None, None, Failure.RESET, None),
    ("refused-stream", None, None, Failure.REFUSED_STREAM, "refused-stream"),
    ("retriable-4xx", 409, None, None, "retriable-4xx"),
    ("retriable-4xx", 404, None, None, None),
    ("retriable-status-codes,418", 418, None, None, "retriable-status-codes"),
    ("418", 418, None, None, "retriable-status-codes"),
    ("503", 502, None, None, None),
    ("unavailable", 200, 14, None, "unavailable"),
    ("cancelled", 200, 1, None, "cancelled"),
    ("deadline-exceeded", 200, 4, None, "deadline-exceeded"),
    ("internal,resource-exhausted", 200, 8, None, "resource-exhausted"),
    ("unavailable", 200, 13, None, None),
    ("", None, None, Failure.CONNECT, None),
    ("5xx", None, None, Failure.OVERFLOW, None),
]


@pytest.mark.parametrize(("retry_on", "status", "grpc", "failure", "expected"), CASES)
def test_retry_condition_table(
    retry_on: str, status: int | None, grpc: int | None, failure: str | None, expected: str | None
) -> None:
    assert retry_condition(pol(retry_on), status, grpc, failure) == expected


def test_defaults_never_retry_a_5xx() -> None:
    p = pol(None, None)
    assert p.num_retries == 2
    assert set(DEFAULT_RETRY_ON) >= {"connect-failure", "refused-stream", "reset-before-request"}
    assert retry_condition(p, 503) is None
    assert retry_condition(p, 500) is None
    assert retry_condition(p, None, failure=Failure.CONNECT) == "connect-failure"
    assert retry_condition(p, None, failure=Failure.RESET_BEFORE_REQUEST) == "reset-before-request"
    assert retry_condition(p, None, failure=Failure.RESET) is None
    assert retry_condition(p, 200, 14) == "unavailable"
    assert retry_condition(p, 200, 1) == "cancelled"


def test_attempts_zero_disables() -> None:
    assert pol("5xx", 0).num_retries == 0


@pytest.mark.parametrize(
    ("n", "ceiling"), [(1, 0.025), (2, 0.075), (3, 0.175), (4, 0.25), (9, 0.25)]
)
def test_backoff_full_jitter_within_envoy_bounds(n: int, ceiling: float) -> None:
    rng = random.Random(n)
    delays = [backoff_delay(n, rng) for _ in range(2000)]
    assert all(0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.9  # full jitter spans the interval
    assert min(delays) < ceiling * 0.1


def test_backoff_uses_only_the_given_rng() -> None:
    a = [backoff_delay(2, random.Random(9)) for _ in range(3)]
    b = [backoff_delay(2, random.Random(9)) for _ in range(3)]
    assert a == b


def test_describe_names_conditions() -> None:
    p = RetryPolicy.from_istio(3, ("5xx", "503", "unavailable"), 0.5)
    text = p.describe()
    assert "3 retries" in text and "5xx" in text and "503" in text and "unavailable" in text
    assert "perTryTimeout 0.5s" in text
