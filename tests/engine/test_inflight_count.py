"""An endpoint's in-flight count stays exact when many threads (sync clients) send at once: it
is the length of a deque (atomic append / pop), not an int read and written back."""

from __future__ import annotations

import sys
import threading

from pymesh.runtime import CircuitBreaker, EndpointState
from pymesh.snapshot import EndpointSpec


def test_acquire_and_release_from_many_threads_leave_nothing_in_flight() -> None:
    breaker = CircuitBreaker()
    ep = EndpointState(EndpointSpec(address="127.0.0.1", port=9080), breaker)
    rounds = 20_000
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(rounds):
            breaker.admit(None, threading.Event)
            ep.acquire()
            assert ep.active >= 1
            ep.release()

    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(saved)
    assert ep.active == 0
    assert breaker.active == 0  # every release handed its breaker slot back, once


def test_release_never_goes_below_zero() -> None:
    breaker = CircuitBreaker()
    ep = EndpointState(EndpointSpec(address="127.0.0.1", port=9080), breaker)
    ep.release()
    assert ep.active == 0 and breaker.active == 0
