"""Outlier detection tables with a fake clock."""

from __future__ import annotations

from pymesh.config.model import OutlierDetection
from pymesh.policy.outlier import (
    OutlierState,
    detection_suspended,
    is_ejected,
    record_result,
)

CFG = OutlierDetection(
    consecutive_5xx_errors=3,
    consecutive_gateway_errors=None,
    interval=1.0,
    base_ejection_time=10.0,
    max_ejection_percent=100,
    min_health_percent=0,
)


def feed(
    state: OutlierState, statuses: list[int | None], now: float = 0.0, cfg: OutlierDetection = CFG
):
    result = None
    for s in statuses:
        result = record_result(cfg, state, s, s is None, now, 0, 3)
        if result:
            return result
    return result


def test_consecutive_5xx_ejects_at_threshold() -> None:
    st = OutlierState()
    assert feed(st, [500, 503]) is None
    ej = feed(st, [502])
    assert ej is not None and ej.until == 10.0
    assert "3 consecutive 5xx" in ej.reason
    assert is_ejected(st, 9.99)
    assert not is_ejected(st, 10.0)  # returns when its time is up


def test_success_resets_the_count() -> None:
    st = OutlierState()
    assert feed(st, [500, 500, 200, 500, 500]) is None
    assert st.consecutive_5xx == 2


def test_local_failures_count_as_gateway_errors() -> None:
    cfg = OutlierDetection(consecutive_5xx_errors=None, consecutive_gateway_errors=2)
    st = OutlierState()
    assert record_result(cfg, st, None, True, 0.0, 0, 2) is None
    ej = record_result(cfg, st, None, True, 0.0, 0, 2)
    assert ej is not None and "gateway" in ej.reason


def test_500_is_not_a_gateway_error() -> None:
    cfg = OutlierDetection(consecutive_5xx_errors=None, consecutive_gateway_errors=2)
    st = OutlierState()
    for _ in range(5):
        assert record_result(cfg, st, 500, False, 0.0, 0, 2) is None


def test_ejection_time_grows_with_times_ejected() -> None:
    st = OutlierState()
    assert feed(st, [500, 500, 500], now=0.0).until == 10.0  # type: ignore[union-attr]
    assert not is_ejected(st, 10.0)
    ej = feed(st, [500, 500, 500], now=10.0)  # right back: no healthy interval passed
    assert ej is not None and ej.until == 30.0  # 2 × base


def test_times_decay_while_healthy() -> None:
    st = OutlierState()
    feed(st, [500, 500, 500], now=0.0)
    assert not is_ejected(st, 10.0)
    ej = feed(st, [500, 500, 500], now=15.0)  # 5 healthy intervals: count decays to 0
    assert ej is not None and ej.until == 25.0


def test_max_ejection_percent_caps_but_one_may_always_go() -> None:
    cfg = OutlierDetection(consecutive_5xx_errors=1, max_ejection_percent=10)
    st = OutlierState()
    # nobody ejected yet: one may always be ejected
    assert record_result(cfg, st, 500, False, 0.0, 0, 3) is not None
    st2 = OutlierState()
    # one of three out already: 2/3 > 10 %
    assert record_result(cfg, st2, 500, False, 0.0, 1, 3) is None
    cfg50 = OutlierDetection(consecutive_5xx_errors=1, max_ejection_percent=50)
    st3 = OutlierState()
    assert record_result(cfg50, st3, 500, False, 0.0, 1, 4) is not None  # 2/4 = 50 %


def test_min_health_percent_suspends_detection() -> None:
    cfg = OutlierDetection(min_health_percent=50)
    assert detection_suspended(cfg, 1, 3)
    assert not detection_suspended(cfg, 2, 3)
    assert not detection_suspended(OutlierDetection(min_health_percent=0), 0, 3)


def test_ejected_endpoint_is_not_ejected_again() -> None:
    st = OutlierState()
    feed(st, [500, 500, 500])
    assert feed(st, [500, 500, 500], now=1.0) is None
