"""How `IstioMetrics` counts: calls are appended raw and folded into buckets in batches (when
read, or when a series' raw values pile up). Folding must give exactly what counting each call
into its bucket at once would, whatever the values, and lose nothing while other threads keep
observing."""

from __future__ import annotations

import random
import sys
import threading
from bisect import bisect_left

from prometheus_client import CollectorRegistry

from pymesh.telemetry import metrics as metrics_module
from pymesh.telemetry.metrics import BUCKETS, LABELS, IstioMetrics


def fresh() -> IstioMetrics:
    return IstioMetrics(CollectorRegistry(auto_describe=True), metrics_dir="")


def one_by_one(values: list[float]) -> list[int]:
    """Per-bucket counts the plain way: the first bucket whose bound is not below the value."""
    counts = [0] * (len(BUCKETS) + 1)
    for v in values:
        counts[bisect_left(BUCKETS, v)] += 1
    return counts


def test_buckets_match_counting_each_call_at_its_bound_and_between() -> None:
    rng = random.Random(11)
    values = [0.0, *BUCKETS, *(b + 1e-9 for b in BUCKETS), *(b - 1e-9 for b in BUCKETS)]
    values += [rng.uniform(0, 5000) for _ in range(500)] + [1e12, 7200000.0]
    m = fresh()
    series = m.series(tuple("x" for _ in LABELS))
    for i, v in enumerate(values):
        m.observe(series, v, i, int(v))
    ((_, count, dur_sum, dur, req_sum, req, resp_sum, resp),) = m.snapshot()
    assert count == len(values)
    assert dur == one_by_one(values)
    assert req == one_by_one([float(i) for i in range(len(values))])
    assert resp == one_by_one([float(int(v)) for v in values])
    assert dur_sum == sum(values)
    assert req_sum == sum(range(len(values)))
    assert resp_sum == sum(int(v) for v in values)
    assert isinstance(req_sum, int) and isinstance(resp_sum, int)


def test_a_busy_series_folds_without_being_read() -> None:
    m = fresh()
    series = m.series(tuple("x" for _ in LABELS))
    for _ in range(5000):
        m.observe(series, 1.0, 1, 1)
    assert len(series.raw) < metrics_module.FOLD_AT  # bounded memory without scrapes
    assert series.count + len(series.raw) // 3 == 5000


def test_nothing_is_lost_while_threads_observe_and_scrape() -> None:
    m = fresh()
    series = [m.series(tuple(str(i) for _ in LABELS)) for i in range(2)]
    per_thread, threads_n = 20_000, 4
    stop = threading.Event()
    seen: list[int] = []

    def observe(k: int) -> None:
        s = series[k % 2]
        for i in range(per_thread):
            m.observe(s, float(i % 7), 1, 2)

    def scrape() -> None:
        while not stop.is_set():
            seen.append(sum(row[1] for row in m.snapshot()))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns between almost any two bytecodes
    try:
        scraper = threading.Thread(target=scrape)
        scraper.start()
        workers = [threading.Thread(target=observe, args=(k,)) for k in range(threads_n)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        scraper.join()
    finally:
        sys.setswitchinterval(interval)
    rows = m.snapshot()
    assert sum(row[1] for row in rows) == per_thread * threads_n
    assert seen == sorted(seen)  # counts only grow
    one_thread_sum = sum(float(i % 7) for i in range(per_thread))
    for _, count, dur_sum, dur, req_sum, req, resp_sum, resp in rows:
        assert count == per_thread * threads_n // 2
        assert sum(dur) == sum(req) == sum(resp) == count
        assert dur_sum == one_thread_sum * threads_n // 2
        assert (req_sum, resp_sum) == (count, 2 * count)
