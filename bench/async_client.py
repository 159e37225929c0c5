"""The async client benchmark: a meshed `httpx.AsyncClient` (on pymesh's lean HTTP/1.1 pool)
against a bare `httpx.AsyncClient` and aiohttp, same nginx, same run, at concurrency 1 and 32.

    python bench/async_client.py [--rounds 10] [--requests 2000] [--quick] [--loop uvloop]

nginx (`return 200 "ok"`, one worker, keep-alive) runs pinned to CPU 1, this process to CPU 0,
one event loop for every client. After a warm-up, R rounds; in each round, for each concurrency,
the three clients run back to back in rotating order, N requests each: C tasks share the N
requests, every request timed with `time.perf_counter_ns`. Per round and concurrency: requests
per second, p50 and p99 of each client, and the ratios meshed / aiohttp and meshed / bare httpx
(rps); reported: the median of the per-round ratios (and their range) and the medians of the
absolute figures.

Goals (issue 3): at concurrency 32 the meshed client does ≥ 0.5× aiohttp's requests per second
(and so ≥ 10× bare httpx's); at concurrency 1, ≥ 1.0× bare httpx.

The result goes to bench/results/async_client.md and, for a full run, into docs/performance.md
between the `bench:async_client` markers. The exit code says whether the benchmark ran, never
whether the goals were met.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import http_client
import httpx
from _common import (
    BenchError,
    log,
    machine_info,
    median,
    nginx,
    package_version,
    percentile,
    pin_client,
    update_doc,
    write_result,
)

NAME = "async_client"
CONCURRENCY = (1, 32)
GOAL_VS_AIOHTTP_32 = 0.5
GOAL_VS_HTTPX_32 = 10.0
GOAL_VS_HTTPX_1 = 1.0

# The same mesh as the sync client's benchmark (one definition): a header-match route, then
# the default route with retries and a timeout; LEAST_REQUEST with outlier detection; subset v1.
MESH_YAML = http_client.MESH_YAML

Get = Callable[[], Awaitable[int]]
CLIENTS = ("mesh", "httpx", "aiohttp")
LABELS = {
    "mesh": "meshed httpx.AsyncClient",
    "httpx": "bare httpx.AsyncClient",
    "aiohttp": "aiohttp",
}


@dataclass
class Batch:
    """One client's batch at one concurrency in one round."""

    latencies: list[int]  # ns, sorted
    wall_ns: int
    cpu_ns: int

    @property
    def rps(self) -> float:
        return len(self.latencies) / (self.wall_ns / 1e9)

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_ns / len(self.latencies)


async def run_batch(get: Get, n: int, concurrency: int) -> Batch:
    """n requests shared by `concurrency` tasks; each request timed on its own."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    left = n

    async def worker() -> None:
        nonlocal left
        record = latencies.append
        while left > 0:
            left -= 1
            t0 = clock()
            status = await get()
            record(clock() - t0)
            if status != 200:
                raise BenchError(f"got HTTP {status}")

    gc.collect()
    cpu0 = time.process_time_ns()
    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = clock() - t0
    cpu = time.process_time_ns() - cpu0
    latencies.sort()
    return Batch(latencies, wall, cpu)


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f} µs"


def _ratio(values: list[float], digits: int = 2) -> str:
    return f"{median(values):.{digits}f}× ({min(values):.{digits}f}–{max(values):.{digits}f})"


Results = dict[int, dict[str, list[Batch]]]


def report(results: Results, args: argparse.Namespace, pinning: str) -> tuple[str, str]:
    """(full markdown for bench/results, the section for docs/performance.md)."""
    names = [n for n in CLIENTS if results[CONCURRENCY[0]].get(n)]
    rows = []
    for c in CONCURRENCY:
        for name in names:
            batches = results[c][name]
            rows.append(
                f"| {c} | {LABELS[name]} | {median([b.rps for b in batches]):,.0f} "
                f"| {_us(median([b.p50 for b in batches]))} "
                f"| {_us(median([b.p99 for b in batches]))} "
                f"| {_us(median([b.cpu_per_request for b in batches]))} |"
            )
    table = "\n".join(
        [
            "| concurrency | client | requests/s | p50 | p99 | CPU per request |",
            "| --: | --- | --: | --: | --: | --: |",
            *rows,
        ]
    )

    def per_round(c: int, other: str) -> list[float]:
        return [m.rps / o.rps for m, o in zip(results[c]["mesh"], results[c][other], strict=True)]

    goals: list[tuple[str, int, str, float]] = [
        ("meshed / aiohttp, requests/s", 32, "aiohttp", GOAL_VS_AIOHTTP_32),
        ("meshed / bare httpx, requests/s", 32, "httpx", GOAL_VS_HTTPX_32),
        ("meshed / bare httpx, requests/s", 1, "httpx", GOAL_VS_HTTPX_1),
        ("meshed / aiohttp, requests/s", 1, "aiohttp", 0.0),
    ]
    ratio_rows = []
    verdicts = []
    for label, c, other, goal in goals:
        if other not in names:
            continue
        values = per_round(c, other)
        med = median(values)
        goal_text = f"≥ {goal:g}×" if goal else "—"
        met = "" if not goal else ("met" if med >= goal else "**missed**")
        ratio_rows.append(f"| {label} | {c} | {_ratio(values)} | {goal_text} | {met} |")
        if goal:
            verdicts.append(
                f"{label.split(',')[0]} at concurrency {c}: {med:.2f}× "
                f"({'meets' if med >= goal else 'misses'} ≥ {goal:g}×)"
            )
    ratios = "\n".join(
        [
            "| ratio | concurrency | median of per-round ratios (range) | goal | |",
            "| --- | --: | --: | --: | --- |",
            *ratio_rows,
        ]
    )
    verdict = "**Result:** " + "; ".join(verdicts) + "."
    note = "" if "aiohttp" in names else " aiohttp was not installed: its column is missing."
    method = (
        f"{args.rounds} rounds; in each, for each concurrency, the clients back to back in "
        f"rotating order, {args.requests} requests each, after {args.warmup} warm-up requests "
        "per client and concurrency. C asyncio tasks share the N requests; every request timed "
        "with `time.perf_counter_ns` (at concurrency 32 that includes waiting behind the other "
        "31); requests/s = N / the batch's wall time; p50/p99 per batch; the ratios are taken "
        "per round and the table gives their median and range, and the medians of the absolute "
        "figures. CPU: `time.process_time_ns` of the client process. Server: nginx "
        f'`return 200 "ok"`, 1 worker, keep-alive, on loopback; {pinning}. Event loop: '
        f"{args.loop} (the same for every client). Clients: `mesh.async_http_client()` (the "
        "lean pool, `pymesh.http1`) calling `http://bench/` — a ServiceEntry (STATIC, one "
        "endpoint), a DestinationRule (LEAST_REQUEST, outlier detection, subset v1) and a "
        "VirtualService (a header-match route, then the default route with retries, "
        "perTryTimeout and a timeout); `httpx.AsyncClient()` and `aiohttp.ClientSession()` "
        f"calling nginx's address.{note}"
    )
    machine = "\n".join(
        f"- {line}"
        for line in [
            *machine_info(),
            f"aiohttp {package_version('aiohttp')}, httptools {package_version('httptools')}, "
            f"uvloop {package_version('uvloop')}",
        ]
    )
    section = (
        "### Latest result: meshed httpx.AsyncClient vs bare httpx.AsyncClient vs aiohttp\n\n"
        f"Goals: at concurrency 32, ≥ {GOAL_VS_AIOHTTP_32:g}× aiohttp's requests/s "
        f"(≥ {GOAL_VS_HTTPX_32:g}× bare httpx); at concurrency 1, ≥ {GOAL_VS_HTTPX_1:g}× bare "
        "httpx.\n\n"
        f"{table}\n\n{ratios}\n\n{verdict}\n\n"
        f"Method: {method} Run with `make bench` (`bench/async_client.py`).\n\n"
        f"Measured on:\n\n{machine}\n"
    )
    full = f"# Benchmark: {NAME}\n\n" + section.split("\n", 1)[1].lstrip()
    return full, section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000, help="per client, round, level")
    parser.add_argument("--warmup", type=int, default=500, help="per client and concurrency")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 × 400 requests")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.rounds, args.requests, args.warmup = 3, 400, 100
    if args.rounds < 1 or args.requests < 100:
        parser.error("need --rounds ≥ 1 and --requests ≥ 100")

    pinning = pin_client()  # before any client or thread exists: threads inherit it
    try:
        if args.loop == "uvloop":
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results = runner.run(_measure(args))
        else:
            results = asyncio.run(_measure(args))
    except BenchError as exc:
        log(f"{NAME}: could not run: {exc}")
        return 2

    full, section = report(results, args, pinning)
    path = write_result(NAME, full)
    print(full)
    log(f"{NAME}: wrote {path}")
    if not (args.quick or args.no_docs):
        update_doc(NAME, section)
        log(f"{NAME}: updated docs/performance.md")
    return 0


async def _measure(args: argparse.Namespace) -> Results:
    with nginx() as port, tempfile.TemporaryDirectory(prefix="pymesh-bench-") as tmp:
        import pymesh

        mesh_yaml = Path(tmp) / "mesh.yaml"
        mesh_yaml.write_text(MESH_YAML.format(port=port))
        mesh = pymesh.Mesh.from_files(str(mesh_yaml), service="bench-client")
        meshed = mesh.async_http_client()
        bare = httpx.AsyncClient()
        url = f"http://127.0.0.1:{port}/"
        closers: list[Callable[[], Awaitable[Any]]] = [meshed.aclose, bare.aclose]

        async def mesh_get() -> int:
            r = await meshed.get("http://bench/")
            return r.status_code

        async def bare_get() -> int:
            r = await bare.get(url)
            return r.status_code

        clients: dict[str, Get] = {"mesh": mesh_get, "httpx": bare_get}
        try:
            import aiohttp
        except ImportError:
            log(f"{NAME}: aiohttp is not installed; measuring without it")
        else:
            session = aiohttp.ClientSession()
            closers.append(session.close)

            async def aiohttp_get() -> int:
                async with session.get(url) as r:
                    await r.read()
                    return r.status

            clients["aiohttp"] = aiohttp_get
        try:
            for name, get in clients.items():
                if await get() != 200:
                    raise BenchError(f"{name}: expected 200 from nginx")
                for c in CONCURRENCY:
                    await run_batch(get, args.warmup, c)
            results: Results = {c: {name: [] for name in clients} for c in CONCURRENCY}
            names = list(clients)
            for i in range(args.rounds):
                order = names[i % len(names) :] + names[: i % len(names)]
                line = []
                for c in CONCURRENCY:
                    for name in order:
                        results[c][name].append(await run_batch(clients[name], args.requests, c))
                    m = results[c]["mesh"][-1].rps
                    line.append(
                        f"c={c}: "
                        + ", ".join(f"{n} {results[c][n][-1].rps:,.0f}" for n in names)
                        + f" rps (mesh/httpx {m / results[c]['httpx'][-1].rps:.2f}×"
                        + (
                            f", mesh/aiohttp {m / results[c]['aiohttp'][-1].rps:.2f}×)"
                            if "aiohttp" in results[c]
                            else ")"
                        )
                    )
                log(f"{NAME}: round {i + 1}/{args.rounds}: " + "; ".join(line))
            return results
        finally:
            for close in closers:
                await close()
            await mesh.aclose()


if __name__ == "__main__":
    sys.exit(main())
