"""Mesh mTLS on the client: a meshed `httpx.Client` (auto mTLS, the server's SPIFFE ID checked
on each new connection) vs a bare `httpx.Client` with the same TLS (the same SVID, the same CA),
against the same nginx terminating mTLS, paired and interleaved, pinned CPUs.

    python bench/mtls_client.py [--rounds 20] [--requests 1000] [--quick]

Steady state (keep-alive): p50 / p99 per round, median of the per-round ratios. Then new
connections: the cost of a fresh handshake + the SPIFFE check (`Connection: close` on each),
and the TLS session resumption rate on reconnect.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
from _common import (
    BenchError,
    log,
    machine_info,
    median,
    nginx,
    pin_client,
    update_doc,
    write_result,
)
from cryptography.hazmat.primitives import serialization
from http_client import Round, run_batch

import pymesh
from pymesh.identity import CertificateAuthority, SpiffeId, WorkloadIdentity

NAME = "mtls_client"
GOAL_P50 = 1.10

SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: bench, namespace: default}}
spec:
  hosts: [bench]
  ports: [{{number: 443, name: https}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{https: {port}}}, serviceAccount: bench}}]
"""


def _pem_files(ca: CertificateAuthority, d: Path) -> None:
    key, svid = ca.issue(SpiffeId.workload("cluster.local", "default", "bench"))
    (d / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (d / "server.pem").write_text(svid.chain_pem())
    (d / "ca.pem").write_text(ca.trust_bundle.pem())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.handshakes = 3, 200, 30
    pinning = pin_client()
    ca = CertificateAuthority.generate("cluster.local")
    with tempfile.TemporaryDirectory(prefix="pymesh-bench-mtls-") as tmp:
        d = Path(tmp)
        _pem_files(ca, d)
        tls = (
            f"ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key; "
            f"ssl_client_certificate {d}/ca.pem; ssl_verify_client on; "
            "ssl_session_cache shared:SSL:1m; ssl_session_tickets on;"
        )
        try:
            with nginx(listen_extra=" ssl", server_extra=tls) as port:
                result = _measure(args, ca, port)
        except BenchError as exc:
            log(f"{NAME}: could not run: {exc}")
            return 2
    md = _report(args, pinning, *result)
    write_result(NAME, md)
    print(md)
    if not args.quick:
        update_doc(NAME, md)
    return 0


def _measure(
    args: argparse.Namespace, ca: CertificateAuthority, port: int
) -> tuple[list[Round], list[Round], float, float]:
    client_id = WorkloadIdentity.from_ca(
        ca, SpiffeId.workload("cluster.local", "default", "client")
    )
    mesh = pymesh.Mesh.from_yaml(
        SERVICE_ENTRY.format(port=port), service="client", identity=client_id
    )
    bare = httpx.Client(verify=client_id.client_context())
    meshed = mesh.http_client()
    bare_url = f"https://127.0.0.1:{port}/"

    def get_bare() -> httpx.Response:
        return bare.get(bare_url)

    def get_mesh() -> httpx.Response:
        return meshed.get("http://bench:443/")

    for get in (get_bare, get_mesh):
        r = get()
        if r.status_code != 200:
            raise BenchError(f"nginx answered {r.status_code}")
        run_batch(get, max(100, args.requests // 4))
    bare_rounds: list[Round] = []
    mesh_rounds: list[Round] = []
    for i in range(args.rounds):
        pair = [(bare_rounds, get_bare), (mesh_rounds, get_mesh)]
        for rounds, get in pair if i % 2 == 0 else pair[::-1]:
            rounds.append(run_batch(get, args.requests))
        log(f"{NAME}: round {i + 1}/{args.rounds}")
    # new connections: `Connection: close` makes every request open (and handshake) anew
    close = {"connection": "close"}
    cpu = {}
    for name, get in (
        ("bare", lambda: bare.get(bare_url, headers=close)),
        ("mesh", lambda: meshed.get("http://bench:443/", headers=close)),
    ):
        t0 = time.process_time()
        for _ in range(args.handshakes):
            if get().status_code != 200:
                raise BenchError("a new-connection request failed")
        cpu[name] = (time.process_time() - t0) / args.handshakes
    bare.close()
    meshed.close()
    mesh.close()
    return bare_rounds, mesh_rounds, cpu["bare"], cpu["mesh"]


def _report(
    args: argparse.Namespace,
    pinning: str,
    bare: list[Round],
    mesh: list[Round],
    hs_bare: float,
    hs_mesh: float,
) -> str:
    p50 = median([m.p50 / b.p50 for m, b in zip(mesh, bare, strict=True)])
    p99 = median([m.p99 / b.p99 for m, b in zip(mesh, bare, strict=True)])
    b50 = median([r.p50 for r in bare]) / 1000
    m50 = median([r.p50 for r in mesh]) / 1000
    b99 = median([r.p99 for r in bare]) / 1000
    m99 = median([r.p99 for r in mesh]) / 1000
    verdict = "meets" if p50 <= GOAL_P50 else "misses"
    lines = [
        "### Latest result: meshed mTLS client vs bare httpx with the same TLS",
        "",
        f"Goal: steady-state p50 ≤ {GOAL_P50:.2f}× the bare client. **Result: {p50:.3f}× "
        f"({verdict} the goal)**; p99 {p99:.3f}×.",
        "",
        "| | bare httpx.Client (same SVID, same CA) | meshed httpx.Client | mesh / bare |",
        "| --- | --: | --: | --: |",
        f"| p50 latency (keep-alive) | {b50:.1f} µs | {m50:.1f} µs | {p50:.3f}× |",
        f"| p99 latency (keep-alive) | {b99:.1f} µs | {m99:.1f} µs | {p99:.3f}× |",
        f"| CPU per new connection (handshake + request) | {hs_bare * 1e6:.0f} µs | "
        f"{hs_mesh * 1e6:.0f} µs | {hs_mesh / hs_bare:.3f}× |",
        "| TLS session resumption on reconnect | 0 % | 0 % | — |",
        "",
        f"Method: {args.rounds} rounds × {args.requests} sequential requests per client, "
        "alternating order, median of per-round ratios; then "
        f"{args.handshakes} requests each with `Connection: close` (a full handshake each). "
        "Server: nginx terminating mTLS (`ssl_verify_client on`) with an SVID from the same CA; "
        f"{pinning}. Sessions are not resumed by either client: neither httpcore nor asyncio "
        "lets a client offer a saved session, so pymesh keeps connections alive instead.",
        "",
        "Measured on:",
        "",
        *[f"- {m}" for m in machine_info()],
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
