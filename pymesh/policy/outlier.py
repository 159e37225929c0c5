"""Outlier detection: consecutive 5xx / gateway errors eject an endpoint, time brings it back.

Envoy's semantics as Istio configures them:
- every 5xx counts toward `consecutive5xxErrors`; 502/503/504 and local-origin failures (connect
  failure, reset, timeout — Envoy maps them to 503) also count toward `consecutiveGatewayErrors`;
  any other response resets both counters;
- an endpoint whose counter reaches its threshold is ejected at once for
  `baseEjectionTime × times ejected`, unless that would leave more than `maxEjectionPercent`
  of the cluster ejected (at least one endpoint may always be ejected);
- an ejection that has run out ends; `times ejected` decays by one per `interval` spent healthy;
- when fewer than `minHealthPercent` of the endpoints are healthy, detection is suspended and
  every endpoint takes traffic (Istio maps this to Envoy's panic threshold).

`OutlierState` is the per-endpoint memory (kept across snapshots by the runtime); functions here
change it only as told and never read a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymesh.config.model import OutlierDetection

# Envoy's max_ejection_time default: the product never exceeds it.
MAX_EJECTION_TIME = 300.0


class OutlierState:
    """What the detector remembers about one endpoint."""

    __slots__ = ("consecutive_5xx", "consecutive_gateway", "ejected_until", "returned_at", "times")

    def __init__(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.ejected_until: float | None = None
        self.returned_at: float | None = None
        self.times = 0

    def __repr__(self) -> str:
        return (
            f"OutlierState(5xx={self.consecutive_5xx}, gateway={self.consecutive_gateway}, "
            f"ejected_until={self.ejected_until}, times={self.times})"
        )


@dataclass(frozen=True, slots=True)
class Ejection:
    """An ejection decided by `record_result`: why and until when."""

    reason: str
    until: float


def is_ejected(state: OutlierState, now: float) -> bool:
    """Whether the endpoint is out at `now`; an ejection whose time is up ends here."""
    until = state.ejected_until
    if until is None:
        return False
    if now < until:
        return True
    state.ejected_until = None
    state.returned_at = until
    return False


def record_result(
    cfg: OutlierDetection,
    state: OutlierState,
    status: int | None,
    local_failure: bool,
    now: float,
    ejected_count: int,
    total: int,
) -> Ejection | None:
    """Count one result (an HTTP `status`, or `local_failure` when no response came) and say
    whether to eject now. `ejected_count` / `total` describe the cluster at this moment."""
    if local_failure:
        status = 503
    if status is None or status < 500:
        state.consecutive_5xx = 0
        state.consecutive_gateway = 0
        return None
    state.consecutive_5xx += 1
    if status in (502, 503, 504):
        state.consecutive_gateway += 1
    else:
        state.consecutive_gateway = 0
    if state.ejected_until is not None:
        return None
    reason = None
    t5 = cfg.consecutive_5xx_errors
    tg = cfg.consecutive_gateway_errors
    if t5 and state.consecutive_5xx >= t5:
        reason = f"{state.consecutive_5xx} consecutive 5xx"
    elif tg and state.consecutive_gateway >= tg:
        reason = f"{state.consecutive_gateway} consecutive gateway errors"
    if reason is None:
        return None
    if ejected_count > 0 and (ejected_count + 1) * 100 > cfg.max_ejection_percent * total:
        return None
    if state.returned_at is not None and cfg.interval > 0:
        healthy_intervals = int((now - state.returned_at) // cfg.interval)
        state.times = max(0, state.times - healthy_intervals)
    state.times += 1
    duration = min(
        cfg.base_ejection_time * state.times, max(MAX_EJECTION_TIME, cfg.base_ejection_time)
    )
    state.ejected_until = now + duration
    state.consecutive_5xx = 0
    state.consecutive_gateway = 0
    return Ejection(reason=reason, until=now + duration)


def detection_suspended(cfg: OutlierDetection, healthy: int, total: int) -> bool:
    """True when fewer than `minHealthPercent` of the endpoints are healthy: use them all."""
    return cfg.min_health_percent > 0 and healthy * 100 < cfg.min_health_percent * total
