"""Server inbound: a meshed FastAPI service against the same app on plain uvicorn, same run.

    python bench/server_inbound.py [--quick] [--rounds 10] [--requests 2000] [--seconds 3]

The app is one small FastAPI route returning a short JSON document. Two servers, each in its
own process pinned to CPU 1, uvicorn with httptools and uvloop, access log off:

- **mesh**: `pymesh_fastapi.add_mesh(app, mesh)` served by `mesh.server(app)`: mesh mTLS under
  STRICT PeerAuthentication (the client presents an SVID, checked once per connection) and 10
  AuthorizationPolicy rules (2 DENY, 8 ALLOW; the request matches the last ALLOW rule), header
  hygiene and path normalization on every request;
- **plain**: the same app without pymesh on `uvicorn.Server` with plain TLS (a server
  certificate from the same CA, no client certificate).

The load comes from this process, pinned to CPU 0: an asyncio (uvloop) HTTP/1.1 keep-alive
client with a minimal response parser (h2load and wrk cannot present a client certificate).
Per round, each server in turn (alternating which goes first): (1) latency: N sequential
requests on one connection, each timed with `perf_counter_ns` (the server idle between
requests); (2) throughput: C connections in a closed loop for S seconds, requests per second,
and the server's CPU time per request (user + system of its process, from /proc). Reported: the
median over rounds of the per-round ratios mesh / plain (for throughput plain / mesh, so every
ratio is a cost: lower is better), and the medians of the absolute figures. Goal: ≤ 1.10×.

The result goes to bench/results/server_inbound.md and, for a full run, into
docs/performance.md between the `bench:server_inbound` markers. The exit code says whether the
benchmark ran, never whether the goal was met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    SERVER_CPU,
    BenchError,
    log,
    machine_info,
    median,
    package_version,
    percentile,
    pin_client,
    pinning_available,
    update_doc,
    write_result,
)

NAME = "server_inbound"
GOAL = 1.10
PATH = "/api/items/7"
CLIENT_SA = "productpage"

_PRINCIPALS = "cluster.local/ns/default/sa"
_ALLOW_RULES = "".join(
    f"""
  - from: [{{source: {{principals: ["{_PRINCIPALS}/svc{i}"]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/api/v{i}/*"]}}}}]"""
    for i in range(7)
)
POLICY = f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: default}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/admin/*", "/debug/*"]}}}}]
  - from: [{{source: {{notNamespaces: ["default", "shop"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: reviews-callers, namespace: default}}
spec:
  action: ALLOW
  rules:{_ALLOW_RULES}
  - from: [{{source: {{principals: ["{_PRINCIPALS}/{CLIENT_SA}"]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/api/items/*"]}}}}]
"""

# -- the servers (run as `server_inbound.py --serve mesh|plain DIR` in a child process) ------


def make_app(mesh: Any = None) -> Any:
    """The app under test; meshed by `add_mesh` when `mesh` is given."""
    from fastapi import FastAPI

    app = FastAPI()
    if mesh is not None:
        import pymesh_fastapi

        pymesh_fastapi.add_mesh(app, mesh)

    @app.get("/api/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": "widget", "in_stock": True}

    return app


def serve(kind: str, directory: Path) -> None:
    """Serve one variant until stdin closes; print its port (and pid) as JSON first."""
    import uvicorn

    import pymesh
    from pymesh.identity import CertificateAuthority

    if pinning_available():
        os.sched_setaffinity(0, {SERVER_CPU})
    options: dict[str, Any] = {"access_log": False, "log_level": "warning"}
    if kind == "mesh":
        ca = CertificateAuthority.load_or_create(directory / "ca")
        mesh = pymesh.Mesh.from_yaml(POLICY, service="reviews", ca=ca)
        server = mesh.server(make_app(mesh), **options).start()
        port = server.port

        def stop() -> None:
            server.stop()
            mesh.close()

    else:
        config = uvicorn.Config(
            make_app(),
            host="127.0.0.1",
            port=0,
            ssl_certfile=str(directory / "server-chain.pem"),
            ssl_keyfile=str(directory / "server-key.pem"),
            **options,
        )
        plain = uvicorn.Server(config)
        thread = threading.Thread(target=plain.run, daemon=True)
        thread.start()
        while not plain.started:
            if not thread.is_alive():
                raise BenchError("plain uvicorn did not start")
            time.sleep(0.01)
        port = plain.servers[0].sockets[0].getsockname()[1]

        def stop() -> None:
            plain.should_exit = True
            thread.join(10)

    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    sys.stdin.read()
    stop()


@dataclass
class Server:
    """A running server process."""

    kind: str
    port: int
    pid: int
    context: ssl.SSLContext

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def start_server(kind: str, directory: Path, context: ssl.SSLContext) -> Iterator[Server]:
    """Run `serve(kind)` in a child process; yield it; stop it."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if not line:
            raise BenchError(f"the {kind} server exited with {proc.wait()}")
        info = json.loads(line)
        yield Server(kind, info["port"], info["pid"], context)
        proc.stdin.close()
        proc.wait(timeout=15)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def prepare(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Make the CA, the plain server's certificate files, and the two client contexts
    (mesh: an SVID for `productpage`; plain: trusts the CA, presents nothing)."""
    from cryptography.hazmat.primitives import serialization

    from pymesh.identity import CertificateAuthority, SpiffeId, WorkloadIdentity

    ca = CertificateAuthority.load_or_create(directory / "ca")
    key, svid = ca.issue(SpiffeId.workload("cluster.local", "default", "reviews"))
    (directory / "server-chain.pem").write_text(svid.chain_pem())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(directory / "server-key.pem", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    client = WorkloadIdentity.from_ca(ca, SpiffeId.workload("cluster.local", "default", CLIENT_SA))
    plain = ssl.create_default_context(cadata=svid.bundle.pem())
    plain.check_hostname = False
    plain.set_alpn_protocols(["http/1.1"])
    return client.client_context(), plain


# -- the load generator -----------------------------------------------------------------------

REQUEST = f"GET {PATH} HTTP/1.1\r\nhost: reviews\r\nuser-agent: bench\r\n\r\n".encode()


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: send a request, wait for the whole response."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's SSL transport is no asyncio.Transport subclass
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done() and self._complete():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def _complete(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at) if b"\r\n" in head[at:] else None])
        if len(self.buffer) < end + 4 + length:
            return False
        if self.buffer[9:12] != b"200":
            raise BenchError(f"unexpected response: {bytes(self.buffer[:200])!r}")
        del self.buffer[: end + 4 + length]
        return True

    async def request(self) -> None:
        assert self.transport is not None
        if self.lost is not None:
            raise self.lost
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(REQUEST)
        await self.waiter


async def _connect(server: Server) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        Connection, "127.0.0.1", server.port, ssl=server.context, server_hostname="reviews"
    )
    return conn


async def _latency(server: Server, n: int) -> list[int]:
    conn = await _connect(server)
    await conn.request()  # the handshake is not part of a request's latency
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        await conn.request()
        samples.append(clock() - t0)
    assert conn.transport is not None
    conn.transport.close()
    return samples


async def _throughput(server: Server, connections: int, seconds: float) -> tuple[int, float, float]:
    conns = [await _connect(server) for _ in range(connections)]
    for conn in conns:
        await conn.request()
    done = 0
    stop_at = 0.0

    async def loop(conn: Connection) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            await conn.request()
            done += 1

    cpu0 = server.cpu_seconds()
    t0 = time.monotonic()
    stop_at = t0 + seconds
    await asyncio.gather(*(loop(c) for c in conns))
    elapsed = time.monotonic() - t0
    cpu = server.cpu_seconds() - cpu0
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return done, elapsed, cpu


@dataclass
class Round:
    """One server's figures in one round."""

    latencies: list[int]
    requests: int
    elapsed: float
    cpu: float

    @property
    def p50(self) -> float:
        return percentile(sorted(self.latencies), 0.50)

    @property
    def p99(self) -> float:
        return percentile(sorted(self.latencies), 0.99)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.requests


def measure(server: Server, args: argparse.Namespace) -> Round:
    """One round for one server."""

    async def both() -> Round:
        latencies = await _latency(server, args.requests)
        done, elapsed, cpu = await _throughput(server, args.connections, args.seconds)
        return Round(latencies, done, elapsed, cpu)

    result: Round = _run(both())
    return result


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- report -------------------------------------------------------------------------------------


def _us(seconds_or_ns: float, ns: bool = True) -> str:
    return f"{seconds_or_ns / 1000:.0f} µs" if ns else f"{seconds_or_ns * 1e6:.0f} µs"


def _ratio(values: list[float]) -> str:
    return f"{median(values):.3f}× ({min(values):.2f}–{max(values):.2f})"


def report(
    mesh: list[Round], plain: list[Round], args: argparse.Namespace, load: float
) -> tuple[str, str]:
    """(full markdown for bench/results, the section for docs/performance.md); `load` is the
    1-minute load average before the run (other processes sharing the CPUs)."""
    p50 = [m.p50 / p.p50 for m, p in zip(mesh, plain, strict=True)]
    p99 = [m.p99 / p.p99 for m, p in zip(mesh, plain, strict=True)]
    rps = [p.rps / m.rps for m, p in zip(mesh, plain, strict=True)]
    cpu = [m.cpu_per_request / p.cpu_per_request for m, p in zip(mesh, plain, strict=True)]
    rows = [
        (
            "latency p50",
            _us(median([p.p50 for p in plain])),
            _us(median([m.p50 for m in mesh])),
            p50,
        ),
        (
            "latency p99",
            _us(median([p.p99 for p in plain])),
            _us(median([m.p99 for m in mesh])),
            p99,
        ),
        (
            f"throughput ({args.connections} connections; ratio plain / mesh)",
            f"{median([p.rps for p in plain]):,.0f} rps",
            f"{median([m.rps for m in mesh]):,.0f} rps",
            rps,
        ),
        (
            "server CPU per request",
            _us(median([p.cpu_per_request for p in plain]), ns=False),
            _us(median([m.cpu_per_request for m in mesh]), ns=False),
            cpu,
        ),
    ]
    table = [
        "| per request | plain uvicorn + TLS | pymesh (mTLS + 10 rules) "
        "| cost ratio: median (range) |",
        "| --- | --: | --: | --: |",
        *(f"| {name} | {a} | {b} | {_ratio(r)} |" for name, a, b, r in rows),
    ]
    # the goal is read as the issue's other latency goals are: p50; throughput and server CPU
    # are reported beside it, and called out when they are above the same bound
    verdict = "meets" if median(p50) <= GOAL else "misses"
    above = [
        f"{name} {median(r):.3f}×"
        for name, r in (("throughput", rps), ("server CPU per request", cpu))
        if median(r) > GOAL
    ]
    quick = " (quick run)" if args.quick else ""
    section = "\n".join(
        [
            f"### Latest result{quick}: a meshed FastAPI server vs plain uvicorn with TLS",
            "",
            f"Goal: the meshed server's latency p50 ≤ {GOAL:.2f}× the plain one's.",
            "",
            *table,
            "",
            f"**Result:** p50 {median(p50):.3f}×: {verdict} the goal (≤ {GOAL:.2f}×)."
            + (f" Above the same bound: {', '.join(above)}." if above else ""),
            "",
            f"Method: {args.rounds} rounds, alternating which server goes first; per round and "
            f"server, {args.requests} sequential requests on one keep-alive connection "
            f"(latency), then {args.connections} connections in a closed loop for "
            f"{args.seconds:g} s (throughput; the server's CPU time from /proc). The same "
            "FastAPI app (one route, a short JSON body) on uvicorn with httptools and uvloop, "
            "access log off, one process pinned to CPU 1: meshed with `pymesh_fastapi.add_mesh` "
            "and served by `mesh.server` (mesh mTLS under STRICT, the client's SVID checked once "
            "per connection; 10 AuthorizationPolicy rules, 2 DENY and 8 ALLOW, the request "
            "matching the last; header hygiene and path normalization per request), against "
            "`uvicorn.Server` with plain TLS and a certificate from the same CA. The client is "
            "an asyncio (uvloop) keep-alive HTTP/1.1 client in one process pinned to CPU 0 "
            "(h2load and wrk cannot present a client certificate). Run with `make bench` "
            "(`bench/server_inbound.py`).",
            "",
            f"Load average before the run: {load:.2f}"
            + (
                " — other processes shared the CPUs, so throughput and p99 are noisy; the "
                "server's CPU per request and p50 are the steadiest figures."
                if load > 0.5
                else "."
            ),
            "",
            "Measured on:",
            "",
            *(f"- {line}" for line in machine_info()),
            f"- fastapi {package_version('fastapi')}, uvicorn {package_version('uvicorn')}",
        ]
    )
    return section + "\n", section + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 short rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000, help="latency requests per round")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput time per round")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--no-docs", action="store_true", help="do not update the docs")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], Path(args.serve[1]))
        return 0
    if args.quick:
        args.rounds, args.requests, args.seconds = 3, 300, 1.0

    load = os.getloadavg()[0]
    pin_client()
    where = "client on CPU 0, servers on CPU 1" if pinning_available() else "unpinned"
    log(f"{NAME}: {where}")
    with tempfile.TemporaryDirectory(prefix="pymesh-bench-inbound-") as tmp:
        directory = Path(tmp)
        mesh_ctx, plain_ctx = prepare(directory)
        with (
            start_server("mesh", directory, mesh_ctx) as mesh_server,
            start_server("plain", directory, plain_ctx) as plain_server,
        ):
            servers = {"mesh": mesh_server, "plain": plain_server}
            for server in servers.values():  # warm up: imports, caches, the JIT-free steady state
                warm = argparse.Namespace(**{**vars(args), "requests": 300, "seconds": 0.5})
                measure(server, warm)
            results: dict[str, list[Round]] = {"mesh": [], "plain": []}
            for r in range(args.rounds):
                order = ("mesh", "plain") if r % 2 == 0 else ("plain", "mesh")
                for kind in order:
                    results[kind].append(measure(servers[kind], args))
                m, p = results["mesh"][-1], results["plain"][-1]
                log(
                    f"round {r + 1}/{args.rounds}: p50 {m.p50 / 1000:.0f}/{p.p50 / 1000:.0f} µs, "
                    f"rps {m.rps:.0f}/{p.rps:.0f} (mesh/plain)"
                )
    full, section = report(results["mesh"], results["plain"], args, load)
    path = write_result(NAME, full)
    log(f"wrote {path}")
    if not (args.quick or args.no_docs):
        update_doc(NAME, section)
    print(full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
