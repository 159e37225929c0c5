"""`AsyncBackground` / `SyncBackground`: a client's background work (its traffic mirrors),
waited for when the client closes, for a grace period at most."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pymesh._shim import AsyncBackground, SyncBackground


def test_async_close_waits_for_short_work_and_cancels_long_work() -> None:
    done: list[str] = []
    cancelled: list[str] = []

    async def work(name: str, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
            done.append(name)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def main() -> float:
        bg = AsyncBackground()
        bg.spawn(work, "short", 0.05)
        bg.spawn(work, "long", 30)
        start = time.monotonic()
        await bg.aclose(grace=0.3)
        took = time.monotonic() - start
        with pytest.raises(RuntimeError, match="closed"):
            bg.spawn(work, "late", 0)
        return took

    took = asyncio.run(main())
    assert done == ["short"] and cancelled == ["long"]
    assert took < 5


def test_async_close_leaves_another_loops_tasks_to_it() -> None:
    bg = AsyncBackground()
    other = asyncio.new_event_loop()
    started = threading.Event()

    async def long() -> None:
        started.set()
        await asyncio.sleep(30)

    async def spawn_there() -> None:
        bg.spawn(long)

    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(spawn_there(), other).result(5)
        assert started.wait(5)
        asyncio.run(bg.aclose(grace=0.1))  # neither waits on nor fails over the other loop
    finally:

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), other).result(5)
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()


def test_sync_close_waits_for_short_work_up_to_the_grace() -> None:
    bg = SyncBackground()
    finished = threading.Event()
    release = threading.Event()
    bg.spawn(lambda: (time.sleep(0.05), finished.set()))
    bg.spawn(release.wait, 30)
    start = time.monotonic()
    bg.close(grace=0.3)
    took = time.monotonic() - start
    release.set()
    assert finished.is_set()
    assert 0.2 < took < 5  # waited for the long one, but only the grace
    with pytest.raises(RuntimeError, match="closed"):
        bg.spawn(lambda: None)
