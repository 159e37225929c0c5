"""Metrics exposition: the metrics port of `Mesh.server` / `Mesh.serve`, and multiprocess mode
for pre-fork servers (`PYMESH_METRICS_DIR`): worker files, their sum, dead workers' counts kept,
and gunicorn with uvicorn workers scraped for real."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import pymesh
from pymesh.telemetry import TelemetryConfig
from pymesh.telemetry import multiprocess as mp
from pymesh.telemetry.metrics import LABELS, TCP_LABELS, IstioMetrics
from tests.e2e.meshkit import URL, endpoint, service_entry, to_yaml
from tests.helpers import ROOT

GUNICORN = Path(sys.executable).with_name("gunicorn")
DEAD_PID = 4_194_305  # above Linux's largest pid_max: never a live process


def families(text: str) -> dict[str, list[Any]]:
    """name → samples of every metric family in Prometheus text."""
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def total(text: str, name: str = "istio_requests_total", **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    base = name.removesuffix("_total").removesuffix("_sum").removesuffix("_count")
    return sum(
        s.value
        for s in families(text).get(base, [])
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 "ok"."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def labels(**given: str) -> tuple[str, ...]:
    """A label tuple of Istio's labels: `given`, else "x"."""
    return tuple(given.get(name, "x") for name in LABELS)


# --------------------------------------------------------------------------------------------
# the metrics port: refusals (no sockets)


def test_metrics_port_needs_telemetry() -> None:
    mesh = pymesh.Mesh.from_yaml("", service="reviews", telemetry=False)
    with pytest.raises(RuntimeError, match="telemetry is off"):
        mesh.server(ok_app, metrics_port=0)
    with pytest.raises(RuntimeError, match="telemetry is off"):
        mesh.serve(ok_app, metrics_port=0)
    mesh.server(ok_app)  # no metrics port: fine
    quiet = pymesh.Mesh.from_yaml(
        "", service="reviews", telemetry=TelemetryConfig(metrics=False, sampling=0.0)
    )
    with pytest.raises(RuntimeError, match="metrics are off"):
        quiet.server(ok_app, metrics_port=0)
    with pytest.raises(RuntimeError, match="metrics are off"):
        quiet.metrics_app()


# --------------------------------------------------------------------------------------------
# the metrics port, served for real


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_metrics_port_serves_both_paths_while_the_server_runs() -> None:
    reviews = pymesh.Mesh.from_yaml(
        "", service="reviews", labels={"app": "reviews", "version": "v1"}, telemetry=True
    )
    srv = reviews.server(ok_app, metrics_port=0)
    assert srv.metrics is None  # nothing listens before start()
    srv.start()
    try:
        assert srv.metrics is not None
        metrics_port = srv.metrics.port
        assert metrics_port != srv.port
        frontend = pymesh.Mesh.from_yaml(
            to_yaml(service_entry([endpoint(srv.port, "v1")])),
            service="frontend",
            labels={"app": "frontend", "version": "v2"},
            telemetry=True,  # its calls carry its workload's name (peer metadata)
        )
        with frontend.http_client(timeout=5) as client:
            for _ in range(5):
                assert client.get(URL + "ok").status_code == 200
        frontend.close()
        base = f"http://127.0.0.1:{metrics_port}"
        texts = [httpx.get(base + path, timeout=5) for path in ("/stats/prometheus", "/metrics")]
        for r in texts:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            got = families(r.text)
            assert {
                "istio_requests",
                "istio_request_duration_milliseconds",
                "istio_request_bytes",
                "istio_response_bytes",
                "pymesh_snapshot_info",
            } <= set(got)
            want = {
                "reporter": "destination",
                "source_workload": "frontend",
                "source_app": "frontend",
                "source_version": "v2",
                "destination_workload": "reviews",
                "destination_app": "reviews",
                "destination_version": "v1",
                "destination_service_name": "reviews",
                "response_code": "200",
                "response_flags": "-",
            }
            assert total(r.text, **want) == 5
            assert total(r.text, "istio_request_duration_milliseconds_count", **want) == 5
            assert total(r.text, "istio_response_bytes_sum", **want) == 5 * len(b"ok")
        assert httpx.get(base + "/other", timeout=5).status_code == 404
        # the admin endpoint (a loopback listener): the last calls' decision records
        explained = httpx.get(base + "/explain?last=2", timeout=5)
        assert explained.status_code == 200
        assert explained.headers["content-type"] == "application/json"
        records = explained.json()
        assert len(records) == 2
        assert [r["direction"] for r in records] == ["inbound", "inbound"]
        assert [r["path"] for r in records] == ["/ok", "/ok"]
        assert records == reviews.explain(2)
        assert len(httpx.get(base + "/explain", timeout=5).json()) == 5  # all there are
        bad = httpx.get(base + "/explain?last=many", timeout=5)
        assert bad.status_code == 400 and "last" in bad.text
    finally:
        srv.stop()
    assert srv.metrics is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_metrics_port_with_run_as_serve_does() -> None:
    mesh = pymesh.Mesh.from_yaml("", service="reviews", telemetry=True)
    srv = mesh.server(ok_app, metrics_port=0)
    runner = threading.Thread(target=srv.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    while not srv.server.started:
        assert time.monotonic() < deadline and runner.is_alive(), "server did not start"
        time.sleep(0.01)
    assert srv.metrics is not None
    metrics_url = srv.metrics.url
    assert httpx.get(f"http://127.0.0.1:{srv.port}/", timeout=5).text == "ok"
    assert total(httpx.get(metrics_url, timeout=5).text, reporter="destination") == 1
    srv.server.should_exit = True
    runner.join(10)
    assert not runner.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(metrics_url, timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_metrics_port_taken_says_so() -> None:
    mesh = pymesh.Mesh.from_yaml("", service="reviews", telemetry=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        srv = mesh.server(ok_app, metrics_port=port)
        with pytest.raises(OSError, match=f"cannot listen for metrics on 127.0.0.1:{port}"):
            srv.start()
        assert srv.metrics is None


# --------------------------------------------------------------------------------------------
# multiprocess mode, in one process (files only)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[tuple[Path, list[IstioMetrics]]]:
    """A metrics directory and the IstioMetrics made on it (their writers closed after)."""
    made: list[IstioMetrics] = []
    yield tmp_path / "metrics", made
    for m in made:
        if m.shared is not None:
            m.shared.close()


def worker(shared_dir: tuple[Path, list[IstioMetrics]], interval: float = 60.0) -> IstioMetrics:
    """IstioMetrics in multiprocess mode on the fixture's directory (a slow writer: the tests
    flush by hand)."""
    directory, made = shared_dir
    m = IstioMetrics(CollectorRegistry(auto_describe=True), metrics_dir="")
    m.shared = mp.SharedMetrics(m, directory, interval=interval)
    made.append(m)
    return m


def test_workers_files_are_summed(shared_dir: tuple[Path, list[IstioMetrics]]) -> None:
    directory, _ = shared_dir
    a, b = worker(shared_dir), worker(shared_dir)
    assert a.shared is not None and b.shared is not None
    assert a.shared.name == f"{os.getpid()}.json" != b.shared.name
    assert not a.shared.flush() and list(directory.glob("*.json")) == []  # nothing counted
    one, two = labels(response_code="200"), labels(response_code="503")
    a.observe(a.series(one), 3.0, 10, 20)
    b.observe(b.series(one), 7.0, 1, 2)
    b.observe(b.series(one), 700.0, 1, 2)
    b.observe(b.series(two), 1.0, 0, 0)
    b.retries.labels("reviews").inc(2)
    a.retries.labels("reviews").inc()
    b.tcp_opened.labels(*("x" for _ in TCP_LABELS)).inc()
    assert b.shared.flush()
    assert not b.shared.flush()  # unchanged: not written again
    assert sorted(p.name for p in directory.iterdir()) == [".lock", b.shared.name]
    # a's registry: a's own series (live, unflushed) plus b's file
    text = generate_latest(a.registry).decode()
    assert total(text, response_code="200") == 3
    assert total(text, response_code="503") == 1
    assert total(text, "istio_request_duration_milliseconds_sum", response_code="200") == 710
    assert total(text, "istio_request_bytes_sum", response_code="200") == 12
    got = families(text)
    buckets = {
        s.labels["le"]: s.value
        for s in got["istio_request_duration_milliseconds"]
        if s.name.endswith("_bucket") and s.labels["response_code"] == "200"
    }
    assert (buckets["5.0"], buckets["10.0"], buckets["1000.0"], buckets["+Inf"]) == (1, 2, 3, 3)
    assert total(text, "pymesh_retries_total", destination_service="reviews") == 3
    assert total(text, "istio_tcp_connections_opened_total") == 1
    assert "istio_tcp_sent_bytes" in got  # defined, no samples
    # b's registry: b live, a has not written yet
    assert total(generate_latest(b.registry).decode(), response_code="200") == 2
    assert a.shared.flush()
    time.sleep(mp._CACHE_S)
    assert total(generate_latest(b.registry).decode(), response_code="200") == 3
    # and a process without a mesh (gunicorn's master, a process of its own) sees the sum
    standalone = CollectorRegistry(auto_describe=False)
    standalone.register(mp.DirectoryCollector(directory))
    text = generate_latest(standalone).decode()
    assert total(text, response_code="200") == 3
    assert total(text, "pymesh_retries_total") == 3
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_the_writer_thread_flushes_when_something_changed(
    shared_dir: tuple[Path, list[IstioMetrics]],
) -> None:
    m = worker(shared_dir, interval=0.05)
    assert m.shared is not None
    time.sleep(0.2)
    assert not m.shared.path.exists()
    m.observe(m.series(labels()), 1.0, 1, 1)
    deadline = time.monotonic() + 5
    while not m.shared.path.exists():
        assert time.monotonic() < deadline, "the writer did not write"
        time.sleep(0.02)
    doc = json.loads(m.shared.path.read_text())
    assert doc["pid"] == os.getpid() and doc["series"][0][1] == 1
    mtime = m.shared.path.stat().st_mtime_ns
    time.sleep(0.3)
    assert m.shared.path.stat().st_mtime_ns == mtime  # nothing changed: not rewritten
    m.observe(m.series(labels()), 1.0, 1, 1)
    m.shared.close()  # the final counts, at once
    assert json.loads(m.shared.path.read_text())["series"][0][1] == 2


def test_dead_workers_counts_are_kept_and_compacted(
    shared_dir: tuple[Path, list[IstioMetrics]],
) -> None:
    directory, _ = shared_dir
    m = worker(shared_dir)
    assert m.shared is not None
    m.observe(m.series(labels()), 1.0, 1, 1)
    m.retries.labels("reviews").inc()
    m.shared.flush()
    doc = json.loads(m.shared.path.read_text())
    # two dead workers with the same counts as this one; a foreign file and a broken one
    (directory / f"{DEAD_PID}.json").write_text(json.dumps(doc))
    (directory / "dead-77-1.json").write_text(json.dumps(doc))
    (directory / "notes.json").write_text('{"format": 1, "series": [["x"]]}')
    (directory / "99.json").write_text("{not json")
    (directory / f".{DEAD_PID}.json.{DEAD_PID}.tmp").write_text("half")

    def standalone() -> str:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(mp.DirectoryCollector(directory))
        return generate_latest(registry).decode()

    text = standalone()
    assert total(text) == 3
    assert total(text, "pymesh_retries_total") == 3
    names = {p.name for p in directory.iterdir()}
    assert f"{DEAD_PID}.json" not in names and "dead-77-1.json" not in names
    assert {"archive.json", m.shared.name, "notes.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    archive = json.loads((directory / "archive.json").read_text())
    absorbed = {a[0] for a in archive["absorbed"]}
    assert {"dead-77-1.json", f"{DEAD_PID}.json"} <= absorbed  # (and 99.json if pid 99 is gone)
    assert total(standalone()) == 3  # stable across scrapes
    # a compaction that stopped before deleting: the file it absorbed is not counted twice
    leftover = directory / "dead-77-1.json"
    leftover.write_text(json.dumps(doc))
    st = leftover.stat()
    archive["absorbed"].append(["dead-77-1.json", st.st_mtime_ns, st.st_size])
    archive["series"][0][1] += 1  # the archive has its counts
    (directory / "archive.json").write_text(json.dumps(archive))
    totals, _ = mp.read_directory(directory)
    assert sum(r[1] for r in totals.rows.values()) == 4
    assert not leftover.exists()  # compacted away, still counted once
    assert total(standalone()) == 4


def test_a_file_left_by_a_dead_process_with_our_pid_is_kept(
    shared_dir: tuple[Path, list[IstioMetrics]],
) -> None:
    directory, _ = shared_dir
    index = mp._INDEX.get(os.getpid(), 0)
    first = worker(shared_dir)
    assert first.shared is not None
    first.observe(first.series(labels()), 1.0, 1, 1)
    first.shared.flush()
    first.shared.close()
    # a later process that got the same pid takes the same file name
    doc = first.shared.path.read_text()
    mp._INDEX[os.getpid()] = index
    second = worker(shared_dir)
    assert second.shared is not None and second.shared.path == first.shared.path
    assert not second.shared.path.exists()
    assert [p.read_text() for p in directory.glob("dead-*.json")] == [doc]
    second.observe(second.series(labels()), 1.0, 1, 1)
    assert total(generate_latest(second.registry).decode()) == 2


def test_reset_after_fork_counts_from_zero() -> None:
    m = IstioMetrics(CollectorRegistry(auto_describe=True), metrics_dir="")
    series = m.series(labels())
    m.observe(series, 3.0, 10, 20)
    m.retries.labels("reviews").inc()
    m.reset_after_fork()
    assert m.snapshot()[0][1:3] == (0, 0.0) and sum(m.snapshot()[0][3]) == 0
    m.observe(series, 3.0, 10, 20)  # the edges' cached series still count
    assert m.observed() == (1, 1)
    assert total(generate_latest(m.registry).decode(), "pymesh_retries_total") == 0


def test_a_mesh_made_with_the_env_var_shares_and_keeps_its_gauges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mp.ENV, str(tmp_path))
    mesh = pymesh.Mesh.from_yaml(
        to_yaml(service_entry([endpoint(9, "v1")])), service="frontend", telemetry=True
    )
    assert mesh.telemetry is not None and mesh.telemetry.metrics is not None
    shared = mesh.telemetry.metrics.shared
    assert shared is not None and shared.directory == tmp_path
    try:
        metrics = mesh.telemetry.metrics
        metrics.observe(metrics.series(labels(reporter="source")), 1.0, 0, 0)
        assert shared.flush()
        doc = json.loads(shared.path.read_text())
        assert {g["name"] for g in doc["gauges"]} >= {"pymesh_snapshot_info", "pymesh_endpoints"}
        # the worker's own endpoint: its gauges as in one process (no pid label)
        got = families(mesh.telemetry.metrics_text().decode())
        assert "pid" not in got["pymesh_snapshot_info"][0].labels
        # a process without a mesh: each live worker's gauges, labelled pid
        registry = CollectorRegistry(auto_describe=False)
        registry.register(mp.DirectoryCollector(tmp_path))
        got = families(generate_latest(registry).decode())
        assert [s.labels["pid"] for s in got["pymesh_snapshot_info"]] == [str(os.getpid())]
        assert got["pymesh_endpoints"][0].labels["cluster"].startswith("outbound|9080||reviews")
    finally:
        shared.close()
        mesh.close()


# --------------------------------------------------------------------------------------------
# gunicorn with uvicorn workers, for real


class Gunicorn:
    """gunicorn serving tests/telemetry/prefork_app.py on a loopback socket bound here, in its
    own process group (always killed)."""

    def __init__(self, metrics_dir: Path, *options: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.set_inheritable(True)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        env = {
            **os.environ,
            mp.ENV: str(metrics_dir),
            "PYTHONWARNINGS": "ignore::DeprecationWarning",  # uvicorn.workers' own notice
        }
        self.proc = subprocess.Popen(
            [
                str(GUNICORN),
                "-k",
                "uvicorn.workers.UvicornWorker",
                "-w",
                "2",
                "--log-level",
                "warning",
                "--graceful-timeout",
                "3",
                "--no-control-socket",
                *options,
                "--bind",
                f"fd://{self.sock.fileno()}",
                "tests.telemetry.prefork_app:app",
            ],
            env=env,
            cwd=ROOT,
            pass_fds=(self.sock.fileno(),),
            start_new_session=True,
        )

    def get(self, path: str) -> httpx.Response:
        """One request on a fresh connection (so either worker may take it)."""
        return httpx.get(self.url + path, headers={"connection": "close"}, timeout=5)

    def stop(self) -> None:
        """SIGTERM the process group (workers flush at exit); SIGKILL if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.sock.close()


def requests_by_pid(g: Gunicorn, at_least: int) -> dict[str, int]:
    """Send requests until both workers answered some and `at_least` were sent."""
    by_pid: dict[str, int] = {}
    sent = 0
    deadline = time.monotonic() + 20
    while len(by_pid) < 2 or sent < at_least:
        assert time.monotonic() < deadline, f"both workers did not answer: {by_pid}"
        assert g.proc.poll() is None, "gunicorn exited"
        try:
            r = g.get("/hello")
        except httpx.TransportError:
            time.sleep(0.05)  # still booting
            continue
        assert r.status_code == 200
        sent += 1
        by_pid[r.text] = by_pid.get(r.text, 0) + 1
    return by_pid


def scrape_until(g: Gunicorn, want: float, pids: set[str], within: float) -> dict[str, float]:
    """Scrape on fresh connections until each of `pids` answered a scrape with `want`
    istio_requests_total{reporter="destination"} (bounded by `within` seconds); returns the
    last total seen per answering pid."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + within
    while not (pids <= seen.keys() and all(seen[p] == want for p in pids)):
        if time.monotonic() > deadline:
            raise AssertionError(f"scrapes by worker: {seen}, want {want} from each of {pids}")
        r = g.get("/stats/prometheus")
        assert r.status_code == 200
        seen[r.headers["x-worker-pid"]] = total(r.text, reporter="destination")
        time.sleep(0.02)
    return seen


def live_workers(g: Gunicorn) -> set[str]:
    """The worker pids gunicorn runs now (its children)."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(g.proc.pid)], capture_output=True, text=True, timeout=5
    )
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-mesh", "preload"])
def test_gunicorn_workers_serve_the_summed_metrics(tmp_path: Path, preload: bool) -> None:
    metrics_dir = tmp_path / "metrics"
    g = Gunicorn(metrics_dir, *(["--preload"] if preload else []))
    try:
        by_pid = requests_by_pid(g, at_least=20)
        n = sum(by_pid.values())
        sent_at = time.monotonic()
        # whichever worker answers the scrape: all of them, within 2 s
        scrape_until(g, n, set(by_pid), within=2.0)
        assert time.monotonic() - sent_at <= 2.5
        assert {p.name for p in metrics_dir.glob("*.json")} == {f"{pid}.json" for pid in by_pid}
        # a process without a mesh serves the same sum, with each live worker's gauges
        server = mp.serve_directory(metrics_dir, 0)
        try:
            text = httpx.get(server.url, timeout=5).text
        finally:
            server.stop()
        assert total(text, reporter="destination", destination_app="reviews") == n
        snapshot_pids = {s.labels["pid"] for s in families(text)["pymesh_snapshot_info"]}
        assert snapshot_pids == set(by_pid)
        # a worker killed outright: its counts stay (counters never go backwards)
        victim = sorted(by_pid)[0]
        os.kill(int(victim), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while victim in live_workers(g) or len(live_workers(g)) < 2:
            assert time.monotonic() < deadline, "gunicorn did not replace the worker"
            time.sleep(0.05)
        survivors = live_workers(g)
        scrape_until(g, n, survivors, within=20.0)
        # more traffic after the replacement adds up
        more = requests_by_pid(g, at_least=10)
        scrape_until(g, n + sum(more.values()), survivors, within=2.0)
        n += sum(more.values())
        assert "archive.json" in {p.name for p in metrics_dir.iterdir()}
    finally:
        g.stop()
    # after a graceful stop the files hold every count; the standalone command serves them
    cli = subprocess.Popen(
        [sys.executable, "-m", "pymesh.telemetry.multiprocess", "--dir", metrics_dir, "--port=0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert cli.stdout is not None
        ready, _, _ = select.select([cli.stdout], [], [], 15)
        assert ready, "the metrics command did not start"
        url = cli.stdout.readline().split(" at ")[-1].strip()
        text = httpx.get(url, timeout=5).text
        assert total(text, reporter="destination") == n
        assert "pymesh_snapshot_info" not in families(text)  # no live worker: no gauges
    finally:
        cli.terminate()
        try:
            cli.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait(timeout=10)
        if cli.stdout is not None:
            cli.stdout.close()


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_explain_is_served_only_where_asked() -> None:
    """`/explain` says which calls were made: a metrics listener serves it on loopback unless
    told not to, and `metrics_app()` only with `explain=True`."""
    mesh = pymesh.Mesh.from_yaml("", service="reviews", telemetry=True)
    quiet = mesh.start_metrics_server(0, explain=False)
    try:
        url = f"http://127.0.0.1:{quiet.port}"
        assert httpx.get(url + "/explain", timeout=5).status_code == 404
        assert httpx.get(url + "/metrics", timeout=5).status_code == 200
    finally:
        quiet.stop()

    async def scope_get(app: Any, path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
            return await c.get(path)

    import anyio

    assert anyio.run(scope_get, mesh.metrics_app(), "/explain").status_code == 404
    admin = anyio.run(scope_get, mesh.metrics_app(explain=True), "/explain?last=3")
    assert admin.status_code == 200 and admin.json() == []
