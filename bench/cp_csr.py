"""How fast the control plane's CA signs CSRs: in process, and through the API.

1. In process: `CertificateAuthority.sign` on distinct DER CSRs (parse, check the CSR's
   signature, issue an ECDSA P-256 X.509-SVID), on one core: signatures per CPU-second.
   Goal: ≥ 4,000/s per core.
2. Through the API: a real `pymesh-controlplane serve` process (HTTPS) and a concurrent
   client (aiohttp, keep-alive connections over TLS) posting `POST /v1/certificates` with join
   tokens, each CSR a distinct key's. The control plane limits CSRs per identity (5/s, bursts
   of 20) so one workload cannot flood its CA; the client spreads its load over many join
   tokens, one identity each, so the limit never triggers (429s are counted and reported).
   Goal: ≥ 1,000/s.

    python bench/cp_csr.py [--quick] [--concurrency 32] [--identities 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from _common import (
    CLIENT_CPU,
    SERVER_CPU,
    log,
    machine_info,
    pin_client,
    pinning_available,
    update_doc,
    write_result,
)
from _controlplane import control_plane
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pymesh.identity import CertificateAuthority, SpiffeId, create_csr, generate_key

NAME = "cp_csr"
GOAL_INPROC = 4000.0
GOAL_API = 1000.0


def signing_rate(seconds: float, distinct: int = 200) -> tuple[float, int]:
    """Signatures per CPU-second over distinct CSRs on this (pinned) core, and how many."""
    ca = CertificateAuthority.generate("cluster.local")
    identity = SpiffeId.workload("cluster.local", "default", "reviews")
    csrs = [create_csr(generate_key(), identity) for _ in range(distinct)]
    for csr in csrs[:20]:
        ca.sign(csr, identity=identity)
    done = 0
    start = time.perf_counter()
    cpu0 = time.process_time()
    while time.perf_counter() - start < seconds:
        for csr in csrs:
            ca.sign(csr, identity=identity)
        done += len(csrs)
    return done / (time.process_time() - cpu0), done


async def _api_run(
    url: str,
    ssl_ctx: Any,
    tokens: list[str],
    csrs: list[str],
    concurrency: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    import aiohttp

    counts = {"ok": 0, "limited": 0, "failed": 0}
    latencies: list[float] = []
    measuring = False
    stop_at = 0.0
    nxt = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal nxt
        while time.perf_counter() < stop_at:
            i = nxt
            nxt += 1
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            t0 = time.perf_counter()
            async with session.post(
                f"{url}/v1/certificates", json={"csr": csrs[i % len(csrs)]}, headers=headers
            ) as resp:
                body = await resp.read()
                status = resp.status
            if not measuring:
                continue
            latencies.append(time.perf_counter() - t0)
            if status == 200 and b"certificateChain" in body:
                counts["ok"] += 1
            elif status == 429:
                counts["limited"] += 1
            else:
                counts["failed"] += 1

    connector = aiohttp.TCPConnector(limit=concurrency, ssl=ssl_ctx if ssl_ctx else False)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.perf_counter() + warmup
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        measuring = True
        t0 = time.perf_counter()
        stop_at = t0 + seconds
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        **counts,
        "elapsed": elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
    }


def api_rate(
    seconds: float, concurrency: int, identities: int, plain: bool
) -> tuple[dict[str, Any], float]:
    """CSRs per second through `POST /v1/certificates`, and the control plane's CPU per CSR."""
    cpu = SERVER_CPU if pinning_available() else None
    with control_plane(tls=not plain, cpu=cpu) as cp, cp.client() as admin:
        tokens = []
        for i in range(identities):
            r = admin.post(
                "/v1/tokens",
                json={
                    "namespace": "default",
                    "serviceAccount": f"bench-{i:04d}",
                    "ttlSeconds": 3600,
                },
            )
            r.raise_for_status()
            tokens.append(str(r.json()["token"]))
        log(f"{NAME}: {identities} join tokens created")
        csrs = [
            x509.load_der_x509_csr(create_csr(generate_key())).public_bytes(Encoding.PEM).decode()
            for _ in range(500)
        ]
        cpu0 = cp.cpu_seconds()
        result = asyncio.run(
            _api_run(cp.url, cp.ssl_context(), tokens, csrs, concurrency, seconds, 1.0)
        )
        cp_cpu = cp.cpu_seconds() - cpu0
    total = result["ok"] + result["limited"] + result["failed"]
    # the CPU figure includes the warm-up second: spread it over every request answered
    return result, cp_cpu / max(1, total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--identities", type=int, default=500)
    parser.add_argument("--plain", action="store_true", help="plain HTTP (--insecure-http)")
    args = parser.parse_args(argv)
    load0 = os.getloadavg()[0]
    pin_client()
    sign_s, api_s = (1.0, 3.0) if args.quick else (5.0, 10.0)

    rate, signed = signing_rate(sign_s)
    log(f"{NAME}: in process {rate:.0f} signatures/s per core")
    res, cpu_per = api_rate(api_s, args.concurrency, args.identities, args.plain)
    api = res["ok"] / res["elapsed"]
    log(f"{NAME}: API {api:.0f} CSRs/s ({res})")
    inproc_ok = "meets" if rate >= GOAL_INPROC else "misses"
    api_ok = "meets" if api >= GOAL_API else "misses"
    scheme = "plain HTTP" if args.plain else "HTTPS"
    lines = [
        "### Latest result: CSR signing",
        "",
        f"Goals: ≥ {GOAL_INPROC:,.0f} signatures/s per core in process, ≥ {GOAL_API:,.0f} "
        "CSRs/s through the API.",
        "",
        "| | signed per second | detail |",
        "| --- | --: | --- |",
        f"| in process (`CertificateAuthority.sign`, one core) | {rate:,.0f} | "
        f"{signed:,} distinct CSRs signed |",
        f"| through the API (`POST /v1/certificates`, {scheme}) | {api:,.0f} | "
        f"{res['ok']:,} signed in {res['elapsed']:.1f} s, {args.concurrency} concurrent "
        f"requests; latency p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms; "
        f"control plane CPU {cpu_per * 1e6:,.0f} µs per CSR; {res['limited']} rate-limited, "
        f"{res['failed']} failed |",
        "",
        f"**Result:** in process {rate:,.0f}/s {inproc_ok} the goal; through the API "
        f"{api:,.0f}/s {api_ok} it.",
        "",
        f"Method: in process, {signed:,} signatures of 200 distinct DER CSRs (ECDSA P-256 keys) "
        "on one pinned core, divided by the CPU time they took. Through the API: a real "
        f"`pymesh-controlplane serve` process ({scheme}, its own CA) "
        + (
            f"pinned to CPU {SERVER_CPU}, the client on CPU {CLIENT_CPU}"
            if pinning_available()
            else "unpinned"
        )
        + f"; {args.identities} join tokens, one identity each, used round robin so the "
        "per-identity CSR limit (5/s, bursts of 20) never applies; 500 distinct CSRs (PEM); "
        f"aiohttp with {args.concurrency} keep-alive connections; 1 s of warm-up, then "
        f"{api_s:.0f} s measured. Control plane CPU from `/proc/<pid>/stat`"
        + (" — quick mode." if args.quick else ".")
        + " Run with `make bench` (`bench/cp_csr.py`).",
        "",
        "Measured on:",
        "",
        *[f"- {m}" for m in machine_info()],
        f"- load average before the run: {load0:.2f}",
    ]
    md = "\n".join(lines) + "\n"
    write_result(NAME, md)
    if not args.quick:
        update_doc(NAME, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
