"""The process's one `Mesh`, built lazily from `settings.PYMESH`, and its readiness.

How this works: the first `process_mesh()` (the middleware calls it when Django loads it, at
server start) reads and checks the settings — a mistake raises `ImproperlyConfigured` at once.
The first request (or `get_mesh()`) starts building the mesh on a helper thread: load the Istio
YAML, get the certificate, start renewal (`Mesh.start()`); that may block (later: on the
control plane), so nothing waits for it unbounded. Requests wait for it at most
`ready_timeout` seconds, then get 503; a build that failed is logged and retried by a later
request (at most once a second). One lock guards it all, so concurrent first requests start
one build.

Pre-fork servers (gunicorn `--preload`): nothing is built when the app is loaded, so the
master starts no thread; if code in the master built the mesh anyway, a fork first waits for a
build in progress (a thread forked halfway through OpenSSL work leaves its locks held in the
child), and every child forgets the parent's mesh (its threads do not exist there) and builds
its own — the agent starts after fork, as DESIGN.md asks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from pymesh.errors import MeshError
from pymesh.identity import CertificateAuthority
from pymesh.mesh import Mesh
from pymesh.telemetry import TelemetryConfig
from pymesh.xfcc import XfccSigner

log = logging.getLogger("pymesh.django")

DEFAULT_READY_TIMEOUT = 10.0
RETRY_INTERVAL = 1.0

_KEYS = frozenset(
    {
        "service",
        "namespace",
        "service_account",
        "labels",
        "config",
        "ca",
        "trust_domain",
        "xfcc_key_file",
        "trust_unix_socket",
        "ready_timeout",
        "telemetry",
        "mesh",
    }
)


class MeshNotReady(MeshError):
    """The mesh did not become ready (configuration, certificate) within the time allowed."""


def _fail(message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"settings.PYMESH: {message}")


@dataclass(frozen=True)
class Options:
    """`settings.PYMESH`, checked. See `docs/integrations.md` for every key."""

    service: str | None = None
    namespace: str = "default"
    service_account: str | None = None
    labels: Mapping[str, str] | None = None
    config: tuple[str, ...] = ()
    ca: CertificateAuthority | str | None = None
    trust_domain: str = "cluster.local"
    xfcc_key_file: str | None = None
    trust_unix_socket: bool = False
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    telemetry: bool | TelemetryConfig | None = None
    mesh: Callable[[], Mesh] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls) -> Options:
        """Read `settings.PYMESH` (raise `ImproperlyConfigured` naming what is wrong)."""
        raw = getattr(settings, "PYMESH", None)
        if not isinstance(raw, Mapping):
            raise _fail("missing; set PYMESH = {'service': ..., 'config': [...], ...}")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise _fail(f"unknown key(s) {', '.join(map(repr, unknown))}")
        factory = raw.get("mesh")
        if isinstance(factory, str):
            factory = import_string(factory)
        if factory is not None and not callable(factory):
            raise _fail("'mesh' must be a callable returning a pymesh.Mesh, or its dotted path")
        service = raw.get("service")
        if factory is None and not (isinstance(service, str) and service):
            raise _fail("'service' (the workload's service name) is required")
        if factory is not None and {"service", "config", "ca", "telemetry"} & set(raw):
            raise _fail("give either 'mesh' or 'service'/'config'/'ca'/'telemetry', not both")
        config = raw.get("config", ())
        if isinstance(config, str | os.PathLike):
            config = (config,)
        if not isinstance(config, Sequence) or not all(
            isinstance(p, str | os.PathLike) for p in config
        ):
            raise _fail("'config' must be a list of YAML files or directories")
        ca = raw.get("ca")
        if isinstance(ca, os.PathLike):
            ca = os.fspath(ca)
        if ca is not None and not isinstance(ca, str | CertificateAuthority):
            raise _fail("'ca' must be a CA directory or a pymesh.identity.CertificateAuthority")
        key_file = raw.get("xfcc_key_file")
        if key_file is not None and not isinstance(key_file, str | os.PathLike):
            raise _fail("'xfcc_key_file' must be a path")
        timeout = raw.get("ready_timeout", DEFAULT_READY_TIMEOUT)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise _fail("'ready_timeout' must be a positive number of seconds")
        telemetry = raw.get("telemetry")
        if isinstance(telemetry, Mapping):
            try:
                telemetry = TelemetryConfig(**telemetry)
            except TypeError as exc:
                raise _fail(f"'telemetry': {exc}") from None
        elif telemetry is not None and not isinstance(telemetry, bool | TelemetryConfig):
            raise _fail(
                "'telemetry' must be True, False, a dict of pymesh.telemetry.TelemetryConfig "
                "fields, or a TelemetryConfig"
            )
        return cls(
            service=service,
            namespace=str(raw.get("namespace", "default")),
            service_account=raw.get("service_account"),
            labels=raw.get("labels"),
            config=tuple(os.fspath(p) for p in config),
            ca=ca,
            trust_domain=str(raw.get("trust_domain", "cluster.local")),
            xfcc_key_file=os.fspath(key_file) if key_file is not None else None,
            trust_unix_socket=bool(raw.get("trust_unix_socket", False)),
            ready_timeout=float(timeout),
            telemetry=telemetry,
            mesh=factory,
        )

    def build(self) -> Mesh:
        """A new `Mesh` from these options (may block; not started)."""
        if self.mesh is not None:
            made = self.mesh()
            if not isinstance(made, Mesh):
                raise MeshError(f"PYMESH['mesh'] returned {made!r}, not a pymesh.Mesh")
            return made
        assert self.service is not None
        return Mesh.from_files(
            *self.config,
            service=self.service,
            namespace=self.namespace,
            service_account=self.service_account,
            labels=self.labels,
            ca=self.ca,
            trust_domain=self.trust_domain,
            telemetry=self.telemetry,
        )

    def xfcc_signer(self) -> XfccSigner | None:
        """The signer whose HMAC authenticates XFCC from the proxy, if a key file is set."""
        if self.xfcc_key_file is None:
            return None
        return XfccSigner.from_file(Path(self.xfcc_key_file))


class ProcessMesh:
    """The process's mesh and its readiness (one per process; see `process_mesh()`)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.signer = options.xfcc_signer()  # a bad key file is a startup error
        self.mesh: Mesh | None = None
        self.error: BaseException | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """Start building the mesh in the background, unless it is being built, is built, or
        failed less than `RETRY_INTERVAL` ago."""
        with self._lock:
            if self._thread is not None:
                if not self._done.is_set() or self.error is None:
                    return
                if time.monotonic() - self._failed_at < RETRY_INTERVAL:
                    return
            self._done.clear()
            self.error = None
            self._thread = threading.Thread(target=self._build, name="pymesh-django", daemon=True)
            self._thread.start()

    def _build(self) -> None:
        try:
            mesh = self.options.build()
            mesh.start()
            self.mesh = mesh
        except BaseException as exc:  # logged here, answered 503, retried later
            self.error = exc
            self._failed_at = time.monotonic()
            log.error("building the mesh from settings.PYMESH failed: %s", exc)
        finally:
            self._done.set()

    def ready(self) -> Mesh | None:
        """The mesh if it is ready, else None (never waits)."""
        return self.mesh if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> Mesh | None:
        """The mesh, waiting up to `timeout` (default: `ready_timeout`) seconds; None if it is
        not ready by then."""
        mesh = self.ready()
        if mesh is not None:
            return mesh
        self.begin()
        self._done.wait(self.options.ready_timeout if timeout is None else timeout)
        return self.mesh if self._done.is_set() else None

    async def await_ready(self, timeout: float | None = None) -> Mesh | None:
        """`wait()` for async code: polls, so no thread is held while waiting."""
        mesh = self.ready()
        if mesh is not None:
            return mesh
        self.begin()
        deadline = time.monotonic() + (self.options.ready_timeout if timeout is None else timeout)
        while not self._done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.mesh if self._done.is_set() else None

    def quiesce(self) -> None:
        """Wait (bounded) for a build in progress to finish: called before `fork()`."""
        if self._thread is not None and self._thread.is_alive():
            self._done.wait(self.options.ready_timeout)

    def close(self) -> None:
        """Close the mesh (if it was built)."""
        if self._thread is not None:
            self._done.wait(self.options.ready_timeout)
        if self.mesh is not None:
            self.mesh.close()

    def __repr__(self) -> str:
        if self.mesh is not None and self._done.is_set():
            state = f"ready {self.mesh!r}"
        else:
            state = f"failed: {self.error}" if self.error else "starting"
        return f"ProcessMesh({state})"


_lock = threading.Lock()
_process: ProcessMesh | None = None


def process_mesh() -> ProcessMesh:
    """The process's `ProcessMesh`, created from settings on first use (not built yet: the
    first `wait()` / `await_ready()` starts the build)."""
    global _process
    current = _process
    if current is None:
        with _lock:
            current = _process
            if current is None:
                current = _process = ProcessMesh(Options.from_settings())
    return current


def get_mesh(timeout: float | None = None) -> Mesh:
    """The process's `pymesh.Mesh` (built from `settings.PYMESH` on first use), once ready:
    waits up to `timeout` seconds (default: `ready_timeout`), then raises `MeshNotReady`. Use
    it for outbound clients (`get_mesh().http_client()`) and to serve the ASGI application
    with mesh mTLS (`get_mesh().serve(application)`)."""
    state = process_mesh()
    mesh = state.wait(timeout)
    if mesh is None:
        if state.error is not None:
            raise MeshNotReady(f"the mesh could not be built: {state.error}") from state.error
        wait = state.options.ready_timeout if timeout is None else timeout
        raise MeshNotReady(f"the mesh was not ready within {wait:g} s")
    return mesh


def close() -> None:
    """Close the process's mesh and forget it (the next use builds a new one from settings)."""
    global _process
    with _lock:
        current, _process = _process, None
    if current is not None:
        current.close()


_orphans: list[ProcessMesh] = []


def _before_fork() -> None:
    current = _process
    if current is not None:
        current.quiesce()


def _forget_after_fork() -> None:
    global _lock, _process
    if _process is not None:
        # the parent's mesh: its threads do not exist here; kept referenced, never closed, so
        # collecting it cannot close connections (file descriptors) the parent still uses
        _orphans.append(_process)
    _lock = threading.Lock()
    _process = None


os.register_at_fork(before=_before_fork, after_in_child=_forget_after_fork)
