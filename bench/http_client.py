"""The foundation benchmark: a meshed `httpx.Client` against a bare one, same nginx, same run.

    python bench/http_client.py [--rounds 30] [--requests 2000] [--quick] [--bare-only]

nginx (`return 200 "ok"`, one worker, keep-alive) runs pinned to CPU 1, this process to CPU 0.
Both clients are warmed up, then measured in R rounds; in each round they run back to back in
alternating order (bare, mesh / mesh, bare), N sequential requests each, every request timed
with `time.perf_counter_ns`. Per round: p50 and p99 of each client and their ratios
(mesh / bare); reported: the median of the per-round ratios (and their range), the medians of
the absolute per-round figures, and CPU time per request (`time.process_time_ns`, user +
system of this process, threads included).

The result goes to bench/results/http_client.md and, for a full run, into docs/performance.md
between the `bench:http_client` markers. The exit code says whether the benchmark ran, never
whether the goal was met.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import (
    BenchError,
    log,
    machine_info,
    median,
    nginx,
    percentile,
    pin_client,
    update_doc,
    write_result,
)

NAME = "http_client"
GOAL_P50 = 1.10
GOAL_P99 = 1.15

MESH_YAML = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: bench
  namespace: default
spec:
  hosts: [bench.default.svc.cluster.local]
  ports:
    - {{number: 80, name: http}}
  resolution: STATIC
  endpoints:
    - address: 127.0.0.1
      ports: {{http: {port}}}
      labels: {{version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bench
  namespace: default
spec:
  host: bench.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {{simple: LEAST_REQUEST}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
    - {{name: v1, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench
  namespace: default
spec:
  hosts: [bench.default.svc.cluster.local]
  http:
    - match:
        - headers:
            x-user: {{exact: test}}
      route:
        - destination: {{host: bench.default.svc.cluster.local, subset: v1}}
    - route:
        - destination: {{host: bench.default.svc.cluster.local, subset: v1}}
      retries: {{attempts: 2, perTryTimeout: 1s, retryOn: "connect-failure,refused-stream,5xx"}}
      timeout: 5s
"""

# The same mesh with the whole traffic policy armed (issue 3): consistent hashing, connection-pool
# limits, a retry budget, locality settings, a fault rule that matches nothing, request header
# operations, and a mirror-free route. Nothing here rejects or delays the benchmark's requests:
# what is measured is the cost of carrying the policy on every call.
FULL_POLICY_YAML = MESH_YAML.replace(
    "    loadBalancer: {{simple: LEAST_REQUEST}}\n",
    "    loadBalancer:\n"
    "      consistentHash: {{httpHeaderName: x-user}}\n"
    "    connectionPool:\n"
    "      tcp: {{maxConnections: 1000, connectTimeout: 2s}}\n"
    "      http: {{http1MaxPendingRequests: 1000, http2MaxRequests: 1000, maxRetries: 100}}\n"
    "    retryBudget: {{percent: 20, minRetryConcurrency: 3}}\n",
).replace(
    "    - route:\n        - destination: {{host: bench.default.svc.cluster.local, subset: v1}}\n"
    "      retries:",
    '    - match:\n        - headers:\n            x-chaos: {{exact: "on"}}\n'
    "      fault: {{abort: {{httpStatus: 503, percentage: {{value: 100}}}}}}\n"
    "      route:\n        - destination: {{host: bench.default.svc.cluster.local, subset: v1}}\n"
    "    - route:\n        - destination: {{host: bench.default.svc.cluster.local, subset: v1}}\n"
    "      headers: {{request: {{set: {{x-mesh: bench}}, remove: [x-debug]}}}}\n"
    "      retries:",
)
assert FULL_POLICY_YAML != MESH_YAML

Get = Callable[[], httpx.Response]


@dataclass
class Round:
    """One client's batch in one round: per-request latencies (ns, sorted) and CPU time (ns)."""

    latencies: list[int]
    cpu_ns: int

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_ns / len(self.latencies)


def run_batch(get: Get, n: int) -> Round:
    """n sequential requests; each timed on its own."""
    latencies = [0] * n
    clock = time.perf_counter_ns
    gc.collect()
    cpu0 = time.process_time_ns()
    for i in range(n):
        t0 = clock()
        response = get()
        latencies[i] = clock() - t0
        if response.status_code != 200:
            raise BenchError(f"got HTTP {response.status_code}: {response.text[:200]!r}")
    cpu = time.process_time_ns() - cpu0
    latencies.sort()
    return Round(latencies, cpu)


def _check(get: Get, who: str) -> None:
    response = get()
    if response.status_code != 200 or response.text != "ok":
        raise BenchError(f"{who}: expected 200 'ok' from nginx, got {response.status_code}")


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f} µs"


def _ratio(values: list[float]) -> str:
    return f"{median(values):.3f}× ({min(values):.2f}–{max(values):.2f})"


def report(
    bare: list[Round], mesh: list[Round], args: argparse.Namespace, pinning: str
) -> tuple[str, str]:
    """(full markdown for bench/results, the section for docs/performance.md)."""
    rows = []
    verdict = ""
    metrics: list[tuple[str, Callable[[Round], float]]] = [
        ("p50 latency", lambda r: r.p50),
        ("p99 latency", lambda r: r.p99),
        ("CPU per request", lambda r: r.cpu_per_request),
    ]
    ratios: dict[str, float] = {}
    for label, get in metrics:
        b = median([get(r) for r in bare])
        if mesh:
            per_round = [get(m) / get(b_) for m, b_ in zip(mesh, bare, strict=True)]
            ratios[label] = median(per_round)
            m = median([get(r) for r in mesh])
            rows.append(f"| {label} | {_us(b)} | {_us(m)} | {_ratio(per_round)} |")
        else:
            rows.append(f"| {label} | {_us(b)} | not measured | — |")
    if mesh:
        p50, p99 = ratios["p50 latency"], ratios["p99 latency"]
        ok50, ok99 = p50 <= GOAL_P50, p99 <= GOAL_P99
        verdict = (
            f"**Result:** p50 {p50:.3f}× {'meets' if ok50 else 'misses'} the goal "
            f"(≤ {GOAL_P50:.2f}×); p99 {p99:.3f}× {'meets' if ok99 else 'misses'} it "
            f"(≤ {GOAL_P99:.2f}×)."
        )
    else:
        verdict = "**Result:** bare client only (`--bare-only`); no ratio measured."

    table = "\n".join(
        [
            "| per request | bare httpx.Client | meshed httpx.Client"
            " | mesh / bare: median (range) |",
            "| --- | --: | --: | --: |",
            *rows,
        ]
    )
    method = (
        f"{args.rounds} rounds × {args.requests} sequential requests per client, the two "
        "clients back to back in alternating order (bare, mesh / mesh, bare), after "
        f"{args.warmup} warm-up requests each. Every request timed with "
        "`time.perf_counter_ns`; p50 and p99 computed per round, and the mesh/bare ratio per "
        "round; the table gives the median of those ratios (and their range over the rounds) "
        "and the median of the absolute per-round figures. CPU: `time.process_time_ns` (user + "
        f'system of the client process, threads included). Server: nginx `return 200 "ok"`, '
        f"1 worker, keep-alive, on loopback; {pinning}. Mesh: a ServiceEntry (STATIC, one "
        "endpoint), a DestinationRule (LEAST_REQUEST, outlier detection, subset v1) and a "
        "VirtualService (a header-match route, then the default route with retries and a "
        "timeout); the meshed client calls `http://bench/`, the bare one nginx's address."
    )
    machine = "\n".join(f"- {line}" for line in machine_info())
    title = "meshed vs bare httpx.Client"
    if args.full_policy:
        title += ", the whole traffic policy armed"
        method += (
            " Full policy: consistent hashing on a header, connection-pool limits, a retry "
            "budget, a fault rule on a header nobody sends, request header operations."
        )
    section = (
        f"### Latest result: {title}\n\n"
        f"Goal: p50 ≤ {GOAL_P50:.2f}×, p99 ≤ {GOAL_P99:.2f}× the bare client.\n\n"
        f"{table}\n\n{verdict}\n\n"
        f"Method: {method} Run with `make bench` (`bench/http_client.py`).\n\n"
        f"Measured on:\n\n{machine}\n"
    )
    full = f"# Benchmark: {_name(args)}\n\n" + section.split("\n", 1)[1].lstrip()
    return full, section


def _name(args: argparse.Namespace) -> str:
    return NAME + "_full_policy" if args.full_policy else NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=2000, help="per client per round")
    parser.add_argument("--warmup", type=int, default=1000, help="requests per client")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 × 200 requests")
    parser.add_argument("--bare-only", action="store_true", help="measure the bare client only")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    parser.add_argument(
        "--full-policy",
        action="store_true",
        help="arm the whole traffic policy (hashing, limits, budget, fault rule, header ops)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.warmup = 3, 200, 100
    if args.rounds < 1 or args.requests < 100:
        parser.error("need --rounds ≥ 1 and --requests ≥ 100")

    pinning = pin_client()  # before any client or thread exists: threads inherit it
    try:
        bare_rounds, mesh_rounds = _measure(args)
    except BenchError as exc:
        log(f"{NAME}: could not run: {exc}")
        return 2

    full, section = report(bare_rounds, mesh_rounds, args, pinning)
    name = _name(args)
    path = write_result(name, full)
    print(full)
    log(f"{name}: wrote {path}")
    if not (args.quick or args.bare_only or args.no_docs):
        update_doc(name, section)
        log(f"{name}: updated docs/performance.md")
    return 0


def _measure(args: argparse.Namespace) -> tuple[list[Round], list[Round]]:
    with nginx() as port, tempfile.TemporaryDirectory(prefix="pymesh-bench-") as tmp:
        bare = httpx.Client()
        opened = [bare]
        bare_url = f"http://127.0.0.1:{port}/"
        clients: dict[str, Get] = {"bare": lambda: bare.get(bare_url)}
        mesh = None
        if not args.bare_only:
            import pymesh

            mesh_yaml = Path(tmp) / "mesh.yaml"
            template = FULL_POLICY_YAML if args.full_policy else MESH_YAML
            mesh_yaml.write_text(template.format(port=port))
            mesh = pymesh.Mesh.from_files(
                str(mesh_yaml),
                service="bench-client",
                namespace="default",
                service_account="bench-client",
            )
            meshed = mesh.http_client()
            opened.append(meshed)
            clients["mesh"] = lambda: meshed.get("http://bench/")
        try:
            for name, get in clients.items():
                _check(get, name)
                run_batch(get, args.warmup)
            results: dict[str, list[Round]] = {name: [] for name in clients}
            names = list(clients)
            for i in range(args.rounds):
                order = names if i % 2 == 0 else names[::-1]
                for name in order:
                    results[name].append(run_batch(clients[name], args.requests))
                b = results["bare"][-1]
                line = f"{NAME}: round {i + 1}/{args.rounds}: bare p50 {_us(b.p50)}"
                if "mesh" in results:
                    m = results["mesh"][-1]
                    line += f", mesh p50 {_us(m.p50)} ({m.p50 / b.p50:.3f}×)"
                log(line)
            return results["bare"], results.get("mesh", [])
        finally:
            for client in opened:
                client.close()
            if mesh is not None:
                mesh.close()


if __name__ == "__main__":
    sys.exit(main())
