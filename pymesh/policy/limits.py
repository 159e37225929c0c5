"""Connection-pool limits (Envoy's cluster circuit breakers) and the retry budget, as decisions.

`admit` decides what happens to a new attempt on a cluster given its counters: go now, wait
for a connection (pending), or overflow (fail fast, flag UO). `retry_allowed` decides whether a
retry may start under `maxRetries` and the retry budget. The counters live in
`pymesh.runtime.CircuitBreaker`; these functions only read numbers.

Envoy's thresholds, as Istio sets them from `connectionPool`:
- `http2MaxRequests` → max_requests: requests in flight to the cluster, any protocol;
- `tcp.maxConnections` → max_connections: pymesh speaks HTTP/1.1 upstream, where every
  request in flight holds its own connection, so it caps requests in flight too; a request
  over it waits as *pending* (for at most its deadline or the connect timeout);
- `http1MaxPendingRequests` → max_pending_requests: how many may wait;
- `maxRetries` → max_retries: retries in progress at once.
Unset (None) means Istio's default, 2^32-1: no limit.

The retry budget (Envoy's `retry_budget`, DESIGN.md's default 20 %, minimum 3): a retry may
start while active retries < max(min_retry_concurrency, percent % of active + pending
requests). Envoy lets a configured budget replace max_retries; pymesh always has a budget, so
both apply and the stricter wins.
"""

from __future__ import annotations

from typing import Literal

Admission = Literal["go", "wait", "overflow-requests", "overflow-pending"]


def admit(
    active: int,
    pending: int,
    max_requests: int | None,
    max_connections: int | None,
    max_pending: int | None,
) -> Admission:
    """What a new attempt does: `go`, `wait` for a connection slot, or overflow because
    `max_requests` or `max_pending` is reached."""
    if max_requests is not None and active >= max_requests:
        return "overflow-requests"
    if max_connections is not None and active >= max_connections:
        if max_pending is not None and pending >= max_pending:
            return "overflow-pending"
        return "wait"
    return "go"


def retry_budget_limit(
    active_requests: int, pending: int, percent: float, min_retry_concurrency: int
) -> int:
    """How many retries may be in progress at once under the budget (Envoy's formula)."""
    return max(min_retry_concurrency, int(percent * (active_requests + pending) / 100.0))


def retry_allowed(
    active_retries: int,
    active_requests: int,
    pending: int,
    percent: float,
    min_retry_concurrency: int,
    max_retries: int | None,
) -> str:
    """The empty string when one more retry may start; else the limit that stops it."""
    if max_retries is not None and active_retries >= max_retries:
        return f"maxRetries {max_retries} reached"
    limit = retry_budget_limit(active_requests, pending, percent, min_retry_concurrency)
    if active_retries >= limit:
        return (
            f"retry budget reached ({active_retries} retries active; budget "
            f"{percent:g}% of {active_requests + pending} active requests, minimum "
            f"{min_retry_concurrency})"
        )
    return ""
