"""Memory of the control plane holding 1,000 services and 2,000 registered workloads.

A real `pymesh-controlplane serve` process (HTTPS, SQLite store in a temporary data dir) gets
1,000 services of Istio config through `POST /v1/apply` (per service: a ServiceEntry selecting
its registered workloads, a DestinationRule with two subsets and outlier detection, a
VirtualService with a header match, an 80/20 split, retries and a timeout — 3,000 resources),
then 2,000 workloads register through `POST /v1/workloads` (two per service, v1 and v2), then
one snapshot of the whole mesh is computed (`GET /v1/snapshot`, what the first agent's watch
triggers). Resident set size (`VmRSS`, and the peak `VmHWM`) from /proc after each step.
Goal: ≤ 150 MB.

    python bench/cp_memory.py [--quick] [--services N] [--workloads N]
"""

from __future__ import annotations

import argparse
import time

from _common import log, machine_info, update_doc, write_result
from _controlplane import apply_services, control_plane

NAME = "cp_memory"
GOAL_MB = 150.0


def register_workloads(client: object, count: int, services: int) -> float:
    """Register `count` workloads spread over the services; returns seconds taken."""
    import httpx

    assert isinstance(client, httpx.Client)
    t0 = time.perf_counter()
    for i in range(count):
        svc = i % services
        version = "v1" if (i // services) % 2 == 0 else "v2"
        body = {
            "agent": f"agent-{i:05d}",
            "service": f"svc-{svc:04d}",
            "address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            "serviceAccount": f"svc-{svc:04d}",
            "ports": [{"name": "http", "port": 8080, "servicePort": 9080}],
            "labels": {"version": version},
            "locality": f"region-{i % 3}/zone-{i % 2}",
        }
        r = client.post("/v1/workloads", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"register failed ({r.status_code}): {r.text[:300]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size (smoke run)")
    parser.add_argument("--services", type=int, default=None)
    parser.add_argument("--workloads", type=int, default=None)
    args = parser.parse_args(argv)
    services = args.services or (100 if args.quick else 1000)
    workloads = args.workloads or (200 if args.quick else 2000)

    mb = 1024.0
    rows: list[tuple[str, float]] = []
    with control_plane("--lease-ttl", "3600", "--max-body", str(16 << 20)) as cp:
        time.sleep(0.5)
        rows.append(("started, empty", cp.status("VmRSS") / mb))
        with cp.client() as c:
            t0 = time.perf_counter()
            apply_services(c, services)
            apply_s = time.perf_counter() - t0
            rows.append((f"{services:,} services applied ({3 * services:,} resources)",
                         cp.status("VmRSS") / mb))  # fmt: skip
            log(f"{NAME}: applied {services} services in {apply_s:.1f} s")
            reg_s = register_workloads(c, workloads, services)
            rows.append((f"+ {workloads:,} workloads registered", cp.status("VmRSS") / mb))
            log(f"{NAME}: registered {workloads} workloads in {reg_s:.1f} s")
            snap = c.get("/v1/snapshot", params={"namespace": "default"})
            snap.raise_for_status()
            size = len(snap.content)
            rows.append(("+ the mesh's snapshot computed and encoded", cp.status("VmRSS") / mb))
            resources = len(c.get("/v1/resources").json()["items"])
            registered = len(c.get("/v1/workloads").json()["items"])
        final = rows[-1][1]
        peak = cp.status("VmHWM") / mb
    verdict = "meets" if final <= GOAL_MB else "misses"
    lines = [
        "### Latest result: control plane memory",
        "",
        f"Goal: ≤ {GOAL_MB:.0f} MB resident holding 1,000 services and 2,000 workloads "
        "(istiod's published sizing: about 1.5 GB for a mesh of that order).",
        "",
        "| step | RSS |",
        "| --- | --: |",
        *[f"| {what} | {v:.1f} MB |" for what, v in rows],
        f"| peak (VmHWM) | {peak:.1f} MB |",
        "",
        f"**Result:** {final:.1f} MB with {resources:,} resources and {registered:,} registered "
        f"workloads — {verdict} the goal (≤ {GOAL_MB:.0f} MB). The snapshot of the whole mesh "
        f"is {size / 1024:.0f} KiB of JSON.",
        "",
        f"Method: a real `pymesh-controlplane serve` process (HTTPS, SQLite store, lease TTL "
        f"1 h so no registration expires during the run); {services:,} services applied in "
        f"batches of 100 through `POST /v1/apply` ({apply_s:.1f} s), then {workloads:,} "
        f"workloads registered one by one through `POST /v1/workloads` ({reg_s:.1f} s; every "
        "registration is a store transaction committed to disk), then `GET /v1/snapshot` once. "
        "RSS is `VmRSS` from `/proc/<pid>/status`"
        + (" — quick mode: a tenth of the size" if args.quick else "")
        + ". Run with `make bench` (`bench/cp_memory.py`).",
        "",
        "Measured on:",
        "",
        *[f"- {m}" for m in machine_info()],
    ]
    md = "\n".join(lines) + "\n"
    write_result(NAME, md)
    if not args.quick:
        update_doc(NAME, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
