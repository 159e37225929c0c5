"""How long a configuration change takes to reach every agent.

A real `pymesh-controlplane serve` process (HTTPS) holds 100 services of Istio config (per
service: ServiceEntry, DestinationRule with two subsets, VirtualService: 300 resources).
1,000 simulated agents watch it: 4 worker processes × 250 watch streams each, every stream a
raw TLS connection speaking the watch protocol by hand (HTTP/1.1, chunked NDJSON). Then one
VirtualService changes (`POST /v1/apply`) and each worker notes when each of its streams holds
the complete new snapshot line; the driver takes, per apply, the time from sending the apply to
the last agent holding the change. Several applies, spaced so that each is a leading-edge
push; p50 / p99 over them. Goal: p99 ≤ 100 ms.

    python bench/cp_propagation.py [--quick] [--agents 1000] [--workers 4] [--applies 20]

Internally `--worker` runs one worker process (stdin/stdout line protocol: the driver sends
`wait R`, the worker answers with every stream's first time at revision ≥ R).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from _common import BenchError, log, machine_info, percentile, update_doc, write_result
from _controlplane import apply_services, control_plane, service_docs

NAME = "cp_propagation"
GOAL_MS = 100.0
HEAD = re.compile(rb'"type":"(snapshot|current|ping)","revision":(\d+)')


# ------------------------------------------------------------------------------ worker process


class Stream:
    """One simulated agent's watch stream: the revisions it held and when."""

    __slots__ = ("events", "rev")

    def __init__(self) -> None:
        self.rev = -1
        self.events: list[tuple[int, int]] = []  # (revision, monotonic ns)


async def _watch(
    stream: Stream, host: str, port: int, ctx: ssl.SSLContext | None, path: str, token: str
) -> None:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ctx, server_hostname=host if ctx else None, limit=1 << 24
    )
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/x-ndjson\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise BenchError(f"watch refused: {head[:200]!r}")
    chunked = b"transfer-encoding: chunked" in head.lower()
    buf = b""
    while True:
        if chunked:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return
            data = (await reader.readexactly(size + 2))[:-2]
        else:
            data = await reader.read(1 << 20)
            if not data:
                return
        buf = buf + data if buf else data
        while (nl := buf.find(b"\n")) >= 0:
            line, buf = buf[:nl], buf[nl + 1 :]
            now = time.monotonic_ns()
            m = HEAD.search(line, 0, 200)
            if m is not None and m.group(1) != b"ping":
                rev = int(m.group(2))
                stream.rev = max(stream.rev, rev)
                stream.events.append((rev, now))


async def _worker(args: argparse.Namespace) -> None:
    ctx = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    token = Path(args.token_file).read_text().strip()
    streams = [Stream() for _ in range(args.agents)]
    gate = asyncio.Semaphore(64)  # handshakes in flight
    tasks: list[asyncio.Task[None]] = []

    async def start(i: int) -> None:
        async with gate:
            agent = f"bench-{args.index}-{i:04d}"
            path = (
                f"/v1/watch?agent={agent}&namespace=default&labels=app=bench-{i % 50}&encoding=zlib"
            )
            tasks.append(
                asyncio.create_task(_watch(streams[i], args.host, args.port, ctx, path, token))
            )
            while streams[i].rev < 0:
                if tasks[-1].done():
                    tasks[-1].result()
                await asyncio.sleep(0.005)

    await asyncio.gather(*(start(i) for i in range(args.agents)))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        _, rev_s = line.split()
        want = int(rev_s)
        deadline = time.monotonic() + 30
        while min(s.rev for s in streams) < want and time.monotonic() < deadline:
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            await asyncio.sleep(0.002)
        times = []
        for s in streams:
            t = next((at for r, at in s.events if r >= want), None)
            if t is not None:
                times.append(t)
            s.events = [(r, at) for r, at in s.events if r >= want]
        print(json.dumps({"rev": want, "times": times, "missing": args.agents - len(times)}),
              flush=True)  # fmt: skip
    for t in tasks:
        t.cancel()


# ------------------------------------------------------------------------------ driver


class Worker:
    """A worker process and its answers."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()
        with self.cond:
            self.lines.append("")
            self.cond.notify_all()

    def next_line(self, timeout: float) -> str:
        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.lines), timeout):
                raise BenchError("a worker did not answer in time")
            line = self.lines.pop(0)
        if not line:
            raise BenchError(f"a worker exited ({self.proc.wait()})")
        return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def run(
    agents: int, workers: int, applies: int, services: int, plain: bool, gap: float
) -> dict[str, Any]:
    """Set up, apply `applies` changes, return the measurements."""
    per = agents // workers
    with control_plane("--ping-interval", "60", tls=not plain) as cp:
        with cp.client() as c:
            apply_services(c, services)
            snap_bytes = len(c.get("/v1/snapshot", params={"namespace": "default"}).content)
            # what each agent receives: the agents ask for the zlib encoding (as pymesh's agent
            # does), the documents compressed once per version by the control plane
            docs = json.loads(c.get("/v1/snapshot", params={"namespace": "default"}).content)
            body = json.dumps(docs["resources"], separators=(",", ":"), ensure_ascii=False)
            wire_bytes = len(base64.b64encode(zlib.compress(body.encode(), 1)))
        log(f"{NAME}: {services} services applied; snapshot {snap_bytes / 1024:.0f} KiB")
        cmd = [
            sys.executable, __file__, "--worker", "--host", "127.0.0.1", "--port", str(cp.port),
            "--token-file", str(cp.data_dir / "admin-token"), "--agents", str(per),
        ]  # fmt: skip
        if not plain:
            cmd += ["--cafile", str(cp.ca_file)]
        pool = [Worker([*cmd, "--index", str(i)]) for i in range(workers)]
        try:
            t0 = time.monotonic()
            for w in pool:
                if w.next_line(180) != "ready":
                    raise BenchError("a worker did not get ready")
            log(f"{NAME}: {per * workers} agents watching ({time.monotonic() - t0:.1f} s)")
            with cp.client() as c:
                connected = c.get("/metrics").text
            last_ms: list[float] = []
            apply_ms: list[float] = []
            median_ms: list[float] = []
            missing = 0
            cpu0 = cp.cpu_seconds()
            with cp.client() as c:
                for k in range(applies):
                    time.sleep(gap)
                    body = service_docs(k % services, timeout=f"{10 + k}s")
                    start = time.monotonic_ns()
                    r = c.post(
                        "/v1/apply",
                        content=body.encode(),
                        headers={"Content-Type": "application/yaml"},
                    )
                    answered = time.monotonic_ns()
                    if r.status_code != 200:
                        raise BenchError(f"apply failed: {r.text[:300]}")
                    rev = int(r.json()["revision"])
                    for w in pool:
                        w.send(f"wait {rev}")
                    times: list[int] = []
                    for w in pool:
                        ans = json.loads(w.next_line(60))
                        times += ans["times"]
                        missing += ans["missing"]
                    if not times:
                        raise BenchError("no agent received the change")
                    times.sort()
                    last_ms.append((times[-1] - start) / 1e6)
                    median_ms.append((percentile(times, 0.5) - start) / 1e6)
                    apply_ms.append((answered - start) / 1e6)
                    log(f"{NAME}: apply {k + 1}/{applies}: last agent {last_ms[-1]:.1f} ms")
            cpu_per_change = (cp.cpu_seconds() - cpu0) / applies
        finally:
            for w in pool:
                w.stop()
        m = re.search(r"^pymesh_cp_connected_agents (\S+)", connected, re.M)
    return {
        "agents": per * workers,
        "snap_bytes": snap_bytes,
        "wire_bytes": wire_bytes,
        "last_ms": last_ms,
        "median_ms": median_ms,
        "apply_ms": apply_ms,
        "missing": missing,
        "connected": float(m.group(1)) if m else float("nan"),
        "cpu_ms": cpu_per_change * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--agents", type=int, default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--applies", type=int, default=None)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between applies")
    parser.add_argument("--plain", action="store_true", help="plain HTTP (--insecure-http)")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--token-file", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cafile", default="", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(_worker(args))
        return 0

    load0 = os.getloadavg()[0]
    agents = args.agents or (200 if args.quick else 1000)
    applies = args.applies or (5 if args.quick else 20)
    res = run(agents, args.workers, applies, args.services, args.plain, args.gap)
    last = sorted(res["last_ms"])
    p50, p99 = percentile(last, 0.5), percentile(last, 0.99)
    verdict = "meets" if p99 <= GOAL_MS else "misses"
    scheme = "plain HTTP" if args.plain else "HTTPS"
    lines = [
        "### Latest result: config propagation to every agent",
        "",
        f"Goal: p99 ≤ {GOAL_MS:.0f} ms from an apply to the last of 1,000 agents holding it.",
        "",
        "| from sending the apply to ... | p50 | p99 | max |",
        "| --- | --: | --: | --: |",
        f"| the apply's answer | {percentile(sorted(res['apply_ms']), 0.5):.1f} ms "
        f"| {percentile(sorted(res['apply_ms']), 0.99):.1f} ms | {max(res['apply_ms']):.1f} ms |",
        f"| the median agent holding it | {percentile(sorted(res['median_ms']), 0.5):.1f} ms "
        f"| {percentile(sorted(res['median_ms']), 0.99):.1f} ms | {max(res['median_ms']):.1f} ms |",
        f"| **the last agent holding it** | **{p50:.1f} ms** | **{p99:.1f} ms** | "
        f"{max(last):.1f} ms |",
        "",
        f"**Result:** p99 {p99:.1f} ms to the last of {res['agents']:,} agents — {verdict} the "
        f"goal (≤ {GOAL_MS:.0f} ms). Every push carries the whole snapshot, "
        f"{res['snap_bytes'] / 1024:.0f} KiB of JSON sent zlib-compressed as "
        f"{res['wire_bytes'] / 1024:.1f} KiB (compressed once per version, shared by every "
        f"agent), so one change sends {res['agents'] * res['wire_bytes'] / 2**20:.1f} MiB; "
        f"{res['missing']} stream-applies missed a change.",
        "",
        f"Where the time goes: the control plane spends {res['cpu_ms']:.0f} ms of CPU per "
        "change (its own process, from `/proc`). Validating and storing the apply takes "
        "15–40 ms before anything is pushed, and the apply's own answer waits behind the "
        "fan-out on the same event loop. Before the compressed encoding every change sent "
        "the 107 KiB line to each agent (p99 377 ms); before the control plane froze its "
        "start-up objects out of the garbage collector, a full collection stalled the loop "
        "70–100 ms once in ten applies (p99 ~160 ms).",
        "",
        f"Method: a real `pymesh-controlplane serve` process ({scheme}, debounce 50 ms) with "
        f"{args.services} services (300 resources); {res['agents']:,} watch streams "
        f"({args.workers} processes × {res['agents'] // args.workers} asyncio streams, raw "
        f"TLS sockets, the control plane counted {res['connected']:.0f} connected agents), "
        "all with the same view; "
        f"{applies} applies of one changed VirtualService, {args.gap:g} s apart (so every "
        "change is a leading-edge push); an agent holds a change when the complete snapshot "
        "line has arrived (`time.monotonic_ns`, one clock for all processes). The agents do "
        "not validate or ACK, and the control plane, the workers and the driver share the "
        f"machine's {os.cpu_count()} cores (unpinned), so agent-side work competes with the "
        "control plane here"
        + (" — quick mode: fewer agents and applies" if args.quick else "")
        + ". Run with `make bench` (`bench/cp_propagation.py`).",
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
