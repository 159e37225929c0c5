"""Connection-pool limits and the retry budget as tables (Envoy's circuit-breaker arithmetic)."""

from __future__ import annotations

import pytest

from pymesh.policy.limits import admit, retry_allowed, retry_budget_limit


@pytest.mark.parametrize(
    ("active", "pending", "max_requests", "max_connections", "max_pending", "expected"),
    [
        (0, 0, None, None, None, "go"),
        (10**6, 0, None, None, None, "go"),  # unset: Istio's 2^32-1
        (4, 0, 5, None, None, "go"),
        (5, 0, 5, None, None, "overflow-requests"),
        (1, 0, None, 2, None, "go"),
        (2, 0, None, 2, None, "wait"),
        (2, 7, None, 2, None, "wait"),  # pending unset: unlimited
        (2, 0, None, 2, 1, "wait"),
        (2, 1, None, 2, 1, "overflow-pending"),
        (3, 0, 3, 5, 1, "overflow-requests"),  # max_requests is checked first
    ],
)
def test_admit(
    active: int,
    pending: int,
    max_requests: int | None,
    max_connections: int | None,
    max_pending: int | None,
    expected: str,
) -> None:
    assert admit(active, pending, max_requests, max_connections, max_pending) == expected


@pytest.mark.parametrize(
    ("active", "pending", "percent", "minimum", "limit"),
    [
        (25, 0, 20.0, 3, 5),  # Istio's example: 20 % of 25
        (2, 0, 20.0, 3, 3),  # Istio's example: the minimum
        (0, 0, 20.0, 3, 3),
        (20, 5, 20.0, 3, 5),  # pending requests count
        (100, 0, 50.0, 3, 50),
        (100, 0, 0.0, 1, 1),
        (9, 0, 20.0, 0, 1),  # 1.8 rounds down
    ],
)
def test_retry_budget_limit(
    active: int, pending: int, percent: float, minimum: int, limit: int
) -> None:
    assert retry_budget_limit(active, pending, percent, minimum) == limit


@pytest.mark.parametrize(
    ("retries", "active", "max_retries", "why"),
    [
        (0, 10, None, ""),
        (2, 10, None, ""),
        (
            3,
            10,
            None,
            "retry budget reached (3 retries active; budget 20% of 10 active requests, minimum 3)",
        ),
        (4, 25, None, ""),
        (5, 25, None, "retry budget"),
        (1, 100, 1, "maxRetries 1 reached"),
        (0, 100, 1, ""),
    ],
)
def test_retry_allowed(retries: int, active: int, max_retries: int | None, why: str) -> None:
    got = retry_allowed(retries, active, 0, 20.0, 3, max_retries)
    assert got.startswith(why) if why else got == ""
