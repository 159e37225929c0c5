"""Pre-fork servers' metrics: each worker's counts in a file, every scrape the sum of all.

How this works: gunicorn and `uvicorn --workers` run several worker processes behind one port,
each with its own `Mesh` and registry, and a scrape reaches one of them. With
`PYMESH_METRICS_DIR=<dir>` in the environment (set before the workers start; a directory of
this host or pod only), each `IstioMetrics` gets a `SharedMetrics`:

- a daemon thread wakes every `INTERVAL` (0.5 s) and, when anything changed, writes the
  worker's request series (`IstioMetrics.snapshot()`), its counters (`istio_tcp_*`,
  `pymesh_*_total`) and its health gauges to `<dir>/<pid>.json` (a temporary file, then
  `os.replace`: a reader never sees half a file); again at exit (`atexit`: gunicorn's and
  uvicorn's workers exit through it) and on `close()`. A process that never counted a call
  (gunicorn's master with `--preload`) writes nothing.
- the worker's registry serves the sum: its own series and counters as they are now, plus every
  other file (per label tuple: counts, sums and bucket counts added). Gauges
  (`pymesh_snapshot_info`, certificate expiry, endpoints, ejected endpoints) are the answering
  worker's own: each worker keeps its own outlier state, and the label sets stay the
  single-process ones.
- dead workers' files are kept, so counters never go backwards when a worker is replaced (as in
  prometheus_client's multiprocess mode). A scrape folds them into `archive.json` and deletes
  them (so files do not pile up with gunicorn's `--max-requests`): the archive is written
  first and names the files it absorbed (by name, mtime and size), so a crash in between never
  counts one twice; compaction holds an exclusive `flock` on `<dir>/.lock`, readers a shared
  one. A process that finds a file with its own pid (a dead predecessor's) renames it
  `dead-<pid>-<ns>.json` before writing its own.
- a fork (gunicorn `--preload`: the mesh made in the master) restarts the writer in the child,
  under the child's pid, counting from zero; no fork happens while a thread holds the lock
  file (an at-fork hook waits), so a child never inherits a held `flock`.

`serve_directory(dir, port)` (or `python -m pymesh.telemetry.multiprocess --dir D --port P`)
serves the same sum from a process without a mesh — gunicorn's master (`when_ready` hook) or a
process of its own — with each live worker's gauges labelled `pid`. Delete the directory to
count from zero; otherwise a restarted service continues its counters.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pymesh.telemetry.exposition import MetricsServer
from pymesh.telemetry.metrics import BUCKETS, _RequestCollector

if TYPE_CHECKING:
    from prometheus_client import Counter

    from pymesh.telemetry.metrics import IstioMetrics

__all__ = [
    "ENV",
    "INTERVAL",
    "DirectoryCollector",
    "SharedMetrics",
    "main",
    "read_directory",
    "serve_directory",
]

ENV = "PYMESH_METRICS_DIR"
INTERVAL = 0.5  # seconds between a worker's checks for change (a scrape is ≤ this stale)
GAUGES = (
    "pymesh_snapshot_info",
    "pymesh_certificate_expiry_timestamp_seconds",
    "pymesh_endpoints",
    "pymesh_ejected_endpoints",
)
ARCHIVE = "archive.json"
_LOCKFILE = ".lock"
_FORMAT = 1
_NB = len(BUCKETS) + 1
_CACHE_S = 0.1  # one scrape renders several collectors: read the files once

log = logging.getLogger("pymesh.telemetry")

Row = tuple[tuple[str, ...], int, float, list[int], int, list[int], int, list[int]]

# held around every use of the lock file, and by the at-fork hook across a fork
_PROCESS_LOCK = threading.Lock()
_INDEX: dict[int, int] = {}  # pid → SharedMetrics made in it (the file name of the next one)
_LIVE: weakref.WeakSet[SharedMetrics] = weakref.WeakSet()


# -- sums ------------------------------------------------------------------------------------


def _add(into: list[int], more: Sequence[int]) -> None:
    for i, n in enumerate(more):
        into[i] += n


class Totals:
    """Sums over workers: request rows by label tuple, counters by family and label set."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, ...], list[Any]] = {}
        # family name → (help, {sorted label items → value})
        self.counters: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {}

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Add rows shaped like `IstioMetrics.snapshot()`'s (lists are copied, never kept)."""
        for labels_, count, dur_sum, dur, req_sum, req, resp_sum, resp in rows:
            labels = tuple(str(x) for x in labels_)
            if not len(dur) == len(req) == len(resp) == _NB:
                raise ValueError("a row with other buckets")
            got = self.rows.get(labels)
            if got is None:
                self.rows[labels] = [
                    labels,
                    int(count),
                    float(dur_sum),
                    [int(n) for n in dur],
                    int(req_sum),
                    [int(n) for n in req],
                    int(resp_sum),
                    [int(n) for n in resp],
                ]
                continue
            got[1] += int(count)
            got[2] += float(dur_sum)
            _add(got[3], dur)
            got[4] += int(req_sum)
            _add(got[5], req)
            got[6] += int(resp_sum)
            _add(got[7], resp)

    def add_counters(self, families: Iterable[dict[str, Any]]) -> None:
        """Add counter families as `_families_doc` writes them."""
        for fam in families:
            name = str(fam["name"])
            got = self.counters.get(name)
            if got is None:
                got = self.counters[name] = (str(fam["help"]), {})
            values = got[1]
            for labels, value in fam["samples"]:
                key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
                values[key] = values.get(key, 0.0) + float(value)

    def add_document(self, doc: dict[str, Any]) -> None:
        """Add a worker file's (or the archive's) series and counters."""
        self.add_rows(doc.get("series", ()))
        self.add_counters(doc.get("counters", ()))

    def merge(self, other: Totals) -> None:
        """Add `other`'s sums (which stay unchanged)."""
        self.add_rows(other.rows.values())
        for name, (help_, values) in other.counters.items():
            got = self.counters.get(name)
            if got is None:
                got = self.counters[name] = (help_, {})
            for key, value in values.items():
                got[1][key] = got[1].get(key, 0.0) + value

    def row_tuples(self) -> list[Row]:
        """The rows as `IstioMetrics.snapshot()` returns them."""
        return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in self.rows.values()]

    def document(self) -> dict[str, Any]:
        """The sums as a file document (the archive)."""
        counters = [
            {"name": name, "help": help_, "samples": [[dict(k), v] for k, v in values.items()]}
            for name, (help_, values) in self.counters.items()
        ]
        return {"format": _FORMAT, "series": list(self.rows.values()), "counters": counters}

    def __repr__(self) -> str:
        return f"Totals(series={len(self.rows)}, counters={len(self.counters)})"


def _families_doc(families: Iterable[Metric], suffix: str = "") -> list[dict[str, Any]]:
    """Metric families as JSON-able dicts, keeping only the samples named `name + suffix`."""
    out = []
    for m in families:
        want = m.name + suffix
        samples = [[dict(s.labels), s.value] for s in m.samples if s.name == want]
        out.append({"name": m.name, "help": m.documentation, "samples": samples})
    return out


def _counter_families(counters: Iterable[Counter]) -> list[Metric]:
    return [m for c in counters for m in c.collect()]


# -- the directory ---------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path, exclusive: bool, block: bool = True) -> Iterator[bool]:
    """Hold `<directory>/.lock` (shared or exclusive); yields False when `block` is off and
    another process holds it."""
    with _PROCESS_LOCK:
        fd = os.open(directory / _LOCKFILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, mode if block else mode | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the flock


def _pid_of(name: str) -> int | None:
    """The pid of a worker file (`<pid>.json`, `<pid>-<k>.json`), None for other names."""
    head = name.removesuffix(".json").split("-", 1)[0]
    return int(head) if head.isdigit() and int(head) > 0 else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _is_dead(name: str) -> bool:
    """A file whose process is gone: `dead-*.json`, or a worker file of a dead pid."""
    if not name.endswith(".json") or name.startswith(".") or name == ARCHIVE:
        return False
    if name.startswith("dead-"):
        return True
    pid = _pid_of(name)
    return pid is not None and not _alive(pid)


def _load(path: str | Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == _FORMAT else None


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Write `doc` to `path` atomically (a temporary file beside it, then `os.replace`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, path)


def _checked(doc: dict[str, Any]) -> Totals | None:
    """`doc`'s sums, or None when it is malformed (a foreign file is skipped whole)."""
    totals = Totals()
    try:
        totals.add_document(doc)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return totals


def compact(directory: str | os.PathLike[str]) -> int:
    """Fold dead workers' files into the archive and delete them; returns how many were
    folded (0 when none, or another process is compacting)."""
    path = Path(directory)
    with os.scandir(path) as it:
        if not any(_is_dead(e.name) or _is_stale_tmp(e.name) for e in it):
            return 0
    with _locked(path, exclusive=True, block=False) as got:
        if not got:
            return 0
        archive = _load(path / ARCHIVE) or {"format": _FORMAT}
        before = {tuple(a) for a in archive.get("absorbed", ())}
        totals = _checked(archive) or Totals()
        absorbed: list[tuple[str, int, int]] = []
        with os.scandir(path) as it:
            entries = list(it)
        for entry in entries:
            if _is_stale_tmp(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                continue
            if not _is_dead(entry.name):
                continue
            st = entry.stat()
            key = (entry.name, st.st_mtime_ns, st.st_size)
            absorbed.append(key)
            if key in before:  # counted already (a compaction that stopped half way)
                continue
            doc = _load(entry.path)
            got_totals = _checked(doc) if doc is not None else None
            if got_totals is not None:
                totals.merge(got_totals)
        if not absorbed:
            return 0
        out = totals.document()
        out["absorbed"] = absorbed
        _write(path / ARCHIVE, out)
        for name, _mtime, _size in absorbed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path / name)
        return len(absorbed)


def _is_stale_tmp(name: str) -> bool:
    """A temporary file left by a writer that died mid-write (`.<file>.<pid>.tmp`)."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    pid = name[:-4].rpartition(".")[2]
    return pid.isdigit() and not _alive(int(pid))


def read_directory(
    directory: str | os.PathLike[str], skip: Iterable[str] = ()
) -> tuple[Totals, list[tuple[int, list[dict[str, Any]]]]]:
    """The sum of every file in `directory` but those named in `skip` (dead workers' files
    compacted first), and the gauge families of each live worker as `(pid, families)`."""
    path = Path(directory)
    compact(path)
    skipped = set(skip)
    totals = Totals()
    gauges: list[tuple[int, list[dict[str, Any]]]] = []
    with _locked(path, exclusive=False):
        archive = _load(path / ARCHIVE)
        absorbed: set[tuple[Any, ...]] = set()
        if archive is not None:
            absorbed = {tuple(a) for a in archive.get("absorbed", ())}
            got = _checked(archive)
            if got is not None:
                totals.merge(got)
        with os.scandir(path) as it:
            entries = list(it)
        for entry in entries:
            name = entry.name
            if not name.endswith(".json") or name.startswith(".") or name == ARCHIVE:
                continue
            if name in skipped:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            if (name, st.st_mtime_ns, st.st_size) in absorbed:
                continue
            doc = _load(entry.path)
            got = _checked(doc) if doc is not None else None
            if doc is None or got is None:
                continue
            totals.merge(got)
            pid = _pid_of(name)
            if pid is not None and _alive(pid) and isinstance(doc.get("gauges"), list):
                gauges.append((pid, doc["gauges"]))
    return totals, gauges


# -- a worker --------------------------------------------------------------------------------


class SharedMetrics:
    """One worker's side of multiprocess mode for one `IstioMetrics` (made by it when
    `PYMESH_METRICS_DIR` is set): writes its file, and makes its registry serve the sum."""

    def __init__(
        self,
        metrics: IstioMetrics,
        directory: str | os.PathLike[str],
        interval: float = INTERVAL,
    ) -> None:
        self.metrics = metrics
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        registry = metrics.registry
        for counter in metrics.counters():
            registry.unregister(counter)
        registry.register(_SharedCounters(self))
        self._gauges = registry.restricted_registry(GAUGES)
        self._cache: tuple[float, Totals] | None = None
        self._failed = False
        self._begin()
        _LIVE.add(self)

    def _begin(self) -> None:
        """Take this process' file name and start the writer (at start; in a forked child)."""
        self.pid = os.getpid()
        self._write_lock = threading.Lock()
        self._written = False
        self._last: tuple[Any, ...] | None = None
        with _locked(self.directory, exclusive=True):
            k = _INDEX.get(self.pid, 0)
            _INDEX[self.pid] = k + 1
            self.name = f"{self.pid}.json" if k == 0 else f"{self.pid}-{k}.json"
            self.path = self.directory / self.name
            if self.path.exists():  # a dead process had this pid: keep its counts
                os.replace(self.path, self.directory / f"dead-{self.pid}-{time.time_ns()}.json")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_run,
            args=(weakref.ref(self), self._stop, self.interval),
            name="pymesh-metrics-writer",
            daemon=True,
        )
        self._thread.start()

    def _forked(self) -> None:
        """In a forked child: count from zero under the child's own file."""
        self._cache = None
        self.metrics.reset_after_fork()
        self._begin()

    # -- writing -----------------------------------------------------------------------------
    def _gauge_families(self) -> list[dict[str, Any]]:
        return _families_doc(self._gauges.collect())

    def _state(self) -> tuple[tuple[Any, ...], bool]:
        """(fingerprint, anything counted yet?) — cheap, checked every `interval`."""
        observed = self.metrics.observed()
        totals = tuple(
            sum(s.value for s in m.samples if s.name.endswith("_total"))
            for m in _counter_families(self.metrics.counters())
        )
        gauges = json.dumps(self._gauge_families(), sort_keys=True)
        return (observed, totals, gauges), observed[0] > 0 or any(totals)

    def flush(self) -> bool:
        """Write this worker's file if anything changed since the last write; True if written.
        Never writes for a process that has counted nothing."""
        with self._write_lock:
            state, counted = self._state()
            if state == self._last or not (counted or self._written):
                return False
            doc = {
                "format": _FORMAT,
                "pid": self.pid,
                "time": time.time(),
                "series": self.metrics.snapshot(),
                "counters": _families_doc(_counter_families(self.metrics.counters()), "_total"),
                "gauges": self._gauge_families(),
            }
            _write(self.path, doc)
            self._last = state
            self._written = True
            return True

    def close(self) -> None:
        """Stop the writer and write what changed since its last round."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
        if self.pid == os.getpid():
            self.flush()
        _LIVE.discard(self)

    # -- reading -----------------------------------------------------------------------------
    def others(self) -> Totals:
        """The sum of every file but this worker's own (cached for one scrape)."""
        now = time.monotonic()
        cached = self._cache
        if cached is not None and now - cached[0] < _CACHE_S:
            return cached[1]
        totals, _gauges = read_directory(self.directory, skip=(self.name,))
        self._cache = (now, totals)
        return totals

    def merged_rows(self) -> list[Row]:
        """This worker's request series now, plus every other worker's."""
        totals = Totals()
        totals.add_rows(self.metrics.snapshot())
        totals.merge(self.others())
        return totals.row_tuples()

    def __repr__(self) -> str:
        return f"SharedMetrics({self.path}, interval={self.interval})"


def _run(ref: weakref.ref[SharedMetrics], stop: threading.Event, interval: float) -> None:
    """The writer thread: flush every `interval` until stopped (or the metrics are gone)."""
    while not stop.wait(interval):
        shared = ref()
        if shared is None:
            return
        try:
            shared.flush()
            shared._failed = False
        except OSError as exc:
            if not shared._failed:
                log.warning("cannot write metrics file %s: %s", shared.path, exc)
            shared._failed = True
        del shared


class _SharedCounters:
    """`IstioMetrics`' counters in multiprocess mode: this worker's plus every other's."""

    def __init__(self, shared: SharedMetrics) -> None:
        self._shared = shared

    def describe(self) -> list[Metric]:
        """The families' names (for the registry's duplicate check)."""
        return [
            CounterMetricFamily(m.name, m.documentation)
            for c in self._shared.metrics.counters()
            for m in c.describe()
        ]

    def collect(self) -> list[Metric]:
        """The summed counters."""
        totals = Totals()
        totals.add_counters(
            _families_doc(_counter_families(self._shared.metrics.counters()), "_total")
        )
        totals.merge(self._shared.others())
        return _counter_metrics(totals)

    def __repr__(self) -> str:
        return f"_SharedCounters({self._shared!r})"


def _counter_metrics(totals: Totals) -> list[Metric]:
    out: list[Metric] = []
    for name, (help_, values) in totals.counters.items():
        family = CounterMetricFamily(name, help_)
        for key, value in values.items():
            family.add_sample(f"{name}_total", dict(key), value)
        out.append(family)
    return out


@atexit.register
def _flush_all() -> None:
    """At exit: every live worker file gets its last counts."""
    for shared in list(_LIVE):
        if shared.pid == os.getpid():
            with contextlib.suppress(OSError):
                shared.flush()


def _before_fork() -> None:
    _PROCESS_LOCK.acquire()


def _after_fork_in_parent() -> None:
    _PROCESS_LOCK.release()


def _after_fork_in_child() -> None:
    global _PROCESS_LOCK
    _PROCESS_LOCK = threading.Lock()  # the parent's is held (by `_before_fork`)
    _INDEX.clear()
    for shared in list(_LIVE):
        shared._forked()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


# -- serving from a process without a mesh ---------------------------------------------------


class DirectoryCollector:
    """The sum of a metrics directory's files, for a registry in a process with no mesh;
    gauges per live worker, labelled `pid`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def collect(self) -> Iterator[Metric]:
        """Read and sum the files (on each scrape)."""
        totals, gauges = read_directory(self.directory)
        yield from _RequestCollector._families(totals.row_tuples())
        yield from _counter_metrics(totals)
        families: dict[str, GaugeMetricFamily] = {}
        for pid, docs in sorted(gauges, key=lambda g: g[0]):
            try:
                got = [
                    (
                        str(d["name"]),
                        str(d["help"]),
                        [(dict(lb), float(v)) for lb, v in d["samples"]],
                    )
                    for d in docs
                ]
            except (KeyError, TypeError, ValueError):
                continue  # a malformed file: no gauges from it
            for name, help_, samples in got:
                family = families.get(name)
                if family is None:
                    family = families[name] = GaugeMetricFamily(name, help_)
                for labels, value in samples:
                    family.add_sample(name, {**labels, "pid": str(pid)}, value)
        yield from families.values()

    def __repr__(self) -> str:
        return f"DirectoryCollector({self.directory})"


def serve_directory(
    directory: str | os.PathLike[str], port: int = 15020, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve the sum of `directory`'s worker files at `/stats/prometheus` and `/metrics` on
    a listener thread (`port` 0 picks one); e.g. from gunicorn's `when_ready` hook."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DirectoryCollector(directory))
    return MetricsServer(registry, port, host)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pymesh.telemetry.multiprocess --dir D --port P`: serve until SIGTERM or
    Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m pymesh.telemetry.multiprocess",
        description="Serve the summed metrics of pre-fork workers (PYMESH_METRICS_DIR).",
    )
    parser.add_argument("--dir", default=os.environ.get(ENV), help=f"default: ${ENV}")
    parser.add_argument("--port", type=int, default=15020, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    if not args.dir:
        parser.error(f"--dir (or ${ENV}) is required")
    server = serve_directory(args.dir, args.port, args.host)
    print(f"serving {args.dir} at {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a normal way to stop it
            stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
