"""What telemetry costs: the meshed `httpx.Client` with telemetry off vs on, same nginx, one run.

    python bench/telemetry.py [--rounds 20] [--requests 2000] [--quick]

Variants (all on the mesh of bench/http_client.py): `off` (telemetry=False), `on` (1 %
sampling, metrics on, access log off — the issue's goal: ≤ 1.05× p50 of `off`), `sampled`
(100 % sampling into an SDK with a no-op exporter) and `logged` (access log on, to a null
writer). Each round runs every variant back to back in a rotating order, N sequential requests
each; reported: per-round p50 ratios against `off` (median and range) and the µs added per call.
The result goes to bench/results/telemetry.md. The exit code says whether the benchmark ran,
never whether the goal was met.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import BenchError, log, machine_info, median, nginx, pin_client, write_result
from http_client import MESH_YAML, Round, run_batch

NAME = "telemetry"
GOAL_P50 = 1.05


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="5 rounds of 300 requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 5, 300
    pinning = pin_client()
    try:
        results = measure(args)
    except BenchError as exc:
        log(f"benchmark failed: {exc}")
        return 1
    text = report(results, args, pinning)
    path = write_result(NAME, text)
    log(text)
    log(f"written to {path}")
    return 0


def measure(args: argparse.Namespace) -> dict[str, list[Round]]:
    """Rounds of every variant against one nginx."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    import pymesh
    from pymesh.telemetry import TelemetryConfig

    class NullExporter(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NullExporter()))
    variants = {
        "off": False,
        "on": TelemetryConfig(sampling=0.01),
        "sampled": TelemetryConfig(sampling=1.0, tracer_provider=provider),
        "logged": TelemetryConfig(sampling=0.01, access_log=lambda line: None),
    }
    out: dict[str, list[Round]] = {k: [] for k in variants}
    with nginx() as port, tempfile.TemporaryDirectory(prefix="pymesh-bench-") as tmp:
        path = Path(tmp) / "mesh.yaml"
        path.write_text(MESH_YAML.format(port=port))
        clients = {}
        for name, telemetry in variants.items():
            mesh = pymesh.Mesh.from_files(path, service="bench", telemetry=telemetry)
            clients[name] = mesh.http_client()
        try:
            order = list(variants)
            for name in order:  # warm up
                run_batch(lambda c=clients[name]: c.get("http://bench/"), 200)
            for i in range(args.rounds):
                rotated = order[i % len(order) :] + order[: i % len(order)]
                for name in rotated:
                    c = clients[name]
                    out[name].append(run_batch(lambda c=c: c.get("http://bench/"), args.requests))
        finally:
            for c in clients.values():
                c.close()
    return out


def report(results: dict[str, list[Round]], args: argparse.Namespace, pinning: str) -> str:
    """The markdown result."""
    off = results["off"]
    rows = []
    for name, rounds in results.items():
        p50 = median([r.p50 for r in rounds])
        ratios = [r.p50 / o.p50 for r, o in zip(rounds, off, strict=True)]
        added = median([(r.p50 - o.p50) / 1000 for r, o in zip(rounds, off, strict=True)])
        cpu = median([r.cpu_per_request / 1000 for r in rounds])
        rows.append(
            f"| {name} | {p50 / 1000:.1f} µs | {median(ratios):.3f}× "
            f"({min(ratios):.2f}–{max(ratios):.2f}) | {added:+.1f} µs | {cpu:.1f} µs |"
        )
    on = median([r.p50 / o.p50 for r, o in zip(results["on"], off, strict=True)])
    verdict = (
        f"**Result:** telemetry on (1 % sampling, metrics, no access log) p50 {on:.3f}× of off, "
        f"{'meets' if on <= GOAL_P50 else 'misses'} the goal (≤ {GOAL_P50:.2f}×)."
    )
    return "\n".join(
        [
            "# Telemetry cost (bench/telemetry.py)",
            "",
            f"{args.rounds} rounds × {args.requests} sequential requests per variant; {pinning}.",
            *machine_info(),
            "",
            "| variant | p50 | p50 vs off | added per call | CPU per request |",
            "|---|---|---|---|---|",
            *rows,
            "",
            verdict,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
