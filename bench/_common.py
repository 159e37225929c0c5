"""Shared parts of the benchmarks: an nginx to measure against, CPU pinning, statistics,
machine information and the writers for bench/results/ and docs/performance.md.

Modules whose name starts with `_` are helpers; bench/run.py runs only the others.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PERF_DOC = ROOT / "docs" / "performance.md"

CLIENT_CPU = 0
SERVER_CPU = 1

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port}{listen_extra};
        {server_extra}
        location / {{ return 200 "ok"; }}
    }}
}}
"""


class BenchError(RuntimeError):
    """The benchmark could not run (as opposed to: it ran and the result is poor)."""


def find_nginx() -> str:
    """Path of the nginx binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BenchError("nginx not found: run `make bench` (scripts/install-bench-deps.sh)")
    return found


# The CPUs this process could use before pin_client() narrowed them.
_ALLOWED_CPUS = frozenset(os.sched_getaffinity(0))


def pinning_available() -> bool:
    """Whether this process was allowed both CLIENT_CPU and SERVER_CPU."""
    return {CLIENT_CPU, SERVER_CPU} <= _ALLOWED_CPUS


def pin_client() -> str:
    """Pin this process (and threads it starts later) to CLIENT_CPU; say what was done."""
    if not pinning_available():
        return "unpinned (fewer than 2 CPUs available)"
    os.sched_setaffinity(0, {CLIENT_CPU})
    return f"client on CPU {CLIENT_CPU}, nginx on CPU {SERVER_CPU}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = log.read_text() if log.exists() else ""
            raise BenchError(f"nginx exited with {proc.returncode}:\n{err}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise BenchError(f"nginx did not listen on 127.0.0.1:{port} within 10 s")


@contextlib.contextmanager
def nginx(listen_extra: str = "", server_extra: str = "") -> Iterator[int]:
    """Run nginx (`return 200 "ok"`, one worker, keep-alive) on a free loopback port, pinned to
    SERVER_CPU; yield the port; stop it (and its worker) on exit. `listen_extra` / `server_extra`
    add to the `listen` line and the `server` block (TLS: " ssl" and the ssl_* directives)."""
    binary = find_nginx()
    with tempfile.TemporaryDirectory(prefix="pymesh-bench-nginx-") as tmp:
        port = _free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                dir=tmp, port=port, listen_extra=listen_extra, server_extra=server_extra
            )
        )
        log = Path(tmp) / "error.log"
        cmd = [binary, "-p", tmp, "-e", str(log), "-c", str(conf)]
        if pinning_available():
            if not shutil.which("taskset"):
                raise BenchError("taskset not found: run scripts/install-bench-deps.sh")
            cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _wait_listening(port, proc, log)
            yield port
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)  # graceful: master stops its worker
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()


def percentile(sorted_values: Sequence[int], q: float) -> float:
    """The q-quantile (0..1) of sorted values, by linear interpolation between ranks."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    """The median of some numbers."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    """An installed distribution's version, or 'not installed'."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def nginx_version() -> str:
    """`nginx -v`, e.g. 'nginx/1.22.1'."""
    try:
        out = subprocess.run([find_nginx(), "-v"], capture_output=True, text=True, check=False)
    except (BenchError, OSError):
        return "unknown"
    return out.stderr.strip().removeprefix("nginx version: ")


def machine_info() -> list[str]:
    """Lines describing where a result was measured."""
    return [
        f"CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"Kernel: {platform.system()} {platform.release()}",
        f"Python: {platform.python_implementation()} {platform.python_version()}",
        f"httpx {package_version('httpx')}, httpcore {package_version('httpcore')}, "
        f"pymesh {package_version('pymesh')}, {nginx_version()}",
        f"Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def write_result(name: str, markdown: str) -> Path:
    """Write bench/results/<name>.md (overwritten each run)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(markdown)
    return path


def update_doc(name: str, markdown: str, doc: Path = PERF_DOC) -> None:
    """Replace the section between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`
    in docs/performance.md (appending the markers if the doc lacks them)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    section = f"{start}\n{markdown.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


def log(message: str) -> None:
    """Progress output (stderr, so stdout carries only the result)."""
    print(message, file=sys.stderr, flush=True)
