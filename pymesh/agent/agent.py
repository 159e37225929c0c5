"""The control-plane agent inside `pymesh.Mesh`: certificate, registration, watch, ACK / NACK.

How this works:

- **One agent per process, started lazily** (`Mesh.start()`, the first client or server): in a
  pre-fork server every worker starts its own after the fork. It runs on a daemon thread with
  its own asyncio event loop, so sync and async applications are served alike and the app's
  loop never runs agent work. Nothing on the request path waits for it: clients read the
  Mesh's current snapshot, and the agent swaps a new one in with `Mesh.update`.
- **Start** (`_bootstrap`): the key and certificate kept in the data dir when they are valid,
  of this identity and of the CA the join token pins; otherwise discovery (the CA pinned by the
  token's hash) and a CSR with the join token (`client.py`). Then the last good snapshot kept
  on disk, if any. **Ready** = a certificate and a snapshot (from disk or the control plane):
  a workload restarted while the control plane is away is ready at once.
- **Watch**: `GET /v1/watch` (NDJSON) with the digest held, so a reconnect to a control plane
  that has nothing new costs one `current` line. Each snapshot is loaded with the same
  validation as static files (`pymesh.config.load_text`) and applied (`Mesh.update`), kept on
  disk and ACKed; one that fails is NACKed with the error and the previous one keeps serving.
- **Lease**: the ports the workload really listens on (`Mesh.server` reports its bound port,
  `Mesh.register` any other) are registered — idempotent by address and ports, so pre-fork
  workers join one entry — and heartbeated at the interval the control plane asks for; a
  heartbeat answered `not_registered` (the lease expired) registers again. A client-only
  workload registers nothing and watches by namespace and labels. Heartbeats carry the
  workload's edge statistics (`Runtime.edge_stats`: calls, errors, latency per destination).
- **Renewal**: `WorkloadIdentity` renews on its own thread; its signer runs the CSR request on
  the agent's loop, authenticated by the current SVID.
- **Back-off**: the control plane away never fails a request: the mesh keeps serving on the
  snapshot it holds. Bootstrap, registration and reconnects retry with exponential back-off and
  jitter (tenacity, `retry_initial` .. `retry_max`); a failed heartbeat is retried at the next
  interval (the control plane gives every lease one TTL of grace after its own restart).
- **Shutdown** (`close`): deregister (bounded), end the watch, stop renewal, close connections.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from pymesh.agent.client import ControlPlaneClient, JoinToken, ca_hash_of
from pymesh.agent.errors import (
    AgentError,
    ControlPlaneError,
    ControlPlaneUnavailableError,
    JoinTokenError,
)
from pymesh.agent.files import AgentFiles
from pymesh.config import load_text
from pymesh.identity import (
    IdentityError,
    IssuedSvid,
    SpiffeId,
    TrustBundle,
    WorkloadIdentity,
    create_csr,
    generate_key,
)
from pymesh.identity.bundle import load_pem_certificates

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

__all__ = ["Agent", "AgentSettings", "Listener"]

log = logging.getLogger("pymesh.agent")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """How a `Mesh` in control-plane mode talks to its control plane."""

    control_planes: tuple[str, ...]
    token: str | None = None
    data_dir: Path | None = None  # None: nothing on disk (key in memory only)
    address: str | None = None  # the address to register; default: the listener's host
    ready_timeout: float = 30.0
    retry_initial: float = 0.1
    retry_max: float = 10.0
    request_timeout: float = 10.0
    watch_idle_timeout: float = 60.0  # a watch stream silent this long is reconnected
    deregister_timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Listener:
    """A port this workload listens on, to register."""

    port: int
    name: str = "http"
    service_port: int | None = None
    protocol: str = "HTTP"
    host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class _Registration:
    workload: str
    listeners: tuple[Listener, ...]
    heartbeat: float
    ttl: float


class Agent:
    """The control-plane agent of one `Mesh` in one process (see the module docstring)."""

    def __init__(self, mesh: Mesh, settings: AgentSettings) -> None:
        self.mesh = mesh
        self.settings = settings
        self.id = f"{mesh.service}-{secrets.token_hex(4)}"
        self.pid = os.getpid()
        self.token = JoinToken(settings.token) if settings.token else None
        self.cp = ControlPlaneClient(
            settings.control_planes, self.token, timeout=settings.request_timeout
        )
        self.files = AgentFiles(settings.data_dir) if settings.data_dir is not None else None
        self.identity: WorkloadIdentity | None = None
        self.workload: str | None = None
        self.revision: int | None = None  # of the snapshot applied
        self.digest = ""
        self.source = ""  # where the snapshot applied came from: "disk" or "control-plane"
        self.acks = 0
        self.nacks = 0
        self.last_nack: str | None = None
        self.last_error: str | None = None
        self.connected = False
        self._fatal: BaseException | None = None
        self._ready = threading.Event()
        self._done = threading.Event()  # ready, or failed for good
        self._lock = threading.Lock()
        self._listeners: dict[int, Listener] = {}
        self._registration: _Registration | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("failed" if self._fatal else "starting")
        return (
            f"Agent({self.id}, {state}, cp={self.cp.url}, revision={self.revision}, "
            f"workload={self.workload})"
        )

    # -- public API ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether it holds a certificate and a snapshot."""
        return self._ready.is_set()

    def start(self) -> Agent:
        """Start the agent's thread (idempotent; returns at once)."""
        with self._lock:
            if self._thread is not None or self._closing:
                return self
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(
                target=self._run, args=(loop,), name=f"pymesh-agent {self.id}", daemon=True
            )
            self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until ready (True), or `timeout` seconds (False); raise the error that stopped
        it for good (a refused join token, a pinned-CA mismatch, ...)."""
        self._done.wait(self.settings.ready_timeout if timeout is None else timeout)
        if self._fatal is not None:
            raise self._fatal
        return self._ready.is_set()

    def status(self) -> str:
        """One line on where it stands (for errors and logs)."""
        have = "a certificate" if self.identity is not None else "no certificate"
        snap = f"snapshot r{self.revision}" if self.revision is not None else "no snapshot"
        err = f"; last error: {self.last_error}" if self.last_error else ""
        return f"{have}, {snap}, control plane {self.cp.url}{err}"

    def add_listener(self, listener: Listener) -> None:
        """Register `listener`'s port (now, or when the control plane is back)."""
        with self._lock:
            names = {x.name for p, x in self._listeners.items() if p != listener.port}
            if listener.name in names:
                listener = Listener(
                    listener.port,
                    f"{listener.name}-{listener.port}",
                    listener.service_port,
                    listener.protocol,
                    listener.host,
                )
            self._listeners[listener.port] = listener
        self._poke()

    def remove_listener(self, port: int) -> None:
        """Stop registering `port` (the workload goes with its last port)."""
        with self._lock:
            self._listeners.pop(port, None)
        self._poke()

    def close(self, timeout: float = 5.0) -> None:
        """Deregister, stop watching and renewing, close connections (idempotent)."""
        with self._lock:
            self._closing = True
            loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._request_stop)
            thread.join(timeout)
        if self.identity is not None:
            self.identity.stop()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except Exception:  # never die silently
            log.exception("the pymesh agent %s stopped", self.id)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        if self._closing:
            return
        work = asyncio.create_task(self._work())
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
        for t in (work, stop):
            t.cancel()
        await asyncio.gather(work, stop, return_exceptions=True)
        await self._deregister_all()
        await self.cp.aclose()

    async def _work(self) -> None:
        try:
            await self._bootstrap()
        except (AgentError, IdentityError) as exc:
            self._fail(exc)
            return
        except Exception as exc:
            log.exception("pymesh agent %s: starting failed", self.id)
            self._fail(exc)
            return
        await asyncio.gather(self._supervised(self._watch_loop), self._supervised(self._lease_loop))

    def _fail(self, exc: BaseException) -> None:
        log.error("pymesh agent %s: %s", self.id, exc)
        self._fatal = exc
        self.last_error = str(exc)
        self._done.set()

    def _check_ready(self) -> None:
        if self.identity is not None and self.revision is not None and not self._ready.is_set():
            self._ready.set()
            self._done.set()
            log.info("pymesh agent %s ready (%s)", self.id, self.status())

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried with back-off while the control plane is unavailable."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            self.last_error = str(exc)
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "pymesh agent %s: %s failed (retry in %.2f s): %s", self.id, what, wait, exc
            )

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(ControlPlaneUnavailableError),
            wait=tenacity.wait_exponential(
                multiplier=self.settings.retry_initial, max=self.settings.retry_max
            )
            + tenacity.wait_random(0, self.settings.retry_initial),
            before_sleep=before_sleep,
            reraise=True,
        )

        async def attempt() -> T:  # a coroutine function, so tenacity awaits it
            return await call()

        result: T = await retrying(attempt)
        return result

    # -- bootstrap ----------------------------------------------------------------------------

    async def _bootstrap(self) -> None:
        mesh = self.mesh
        stored = None
        if self.files is not None:
            await asyncio.to_thread(self.files.ensure)
            stored = self.files.load_identity(time.time())
        if stored is not None:
            roots = stored.svid.bundle.all_roots()
            expected = SpiffeId.workload(stored.trust_domain, mesh.namespace, mesh.service_account)
            if self.token is not None and all(ca_hash_of(r) != self.token.ca_hash for r in roots):
                log.warning(
                    "the certificate in %s is from another CA than the join token pins: "
                    "getting a new one",
                    self.settings.data_dir,
                )
                stored = None
            elif stored.svid.spiffe_id != expected:
                log.warning(
                    "the certificate in %s is for %s, not %s: getting a new one",
                    self.settings.data_dir,
                    stored.svid.spiffe_id,
                    expected,
                )
                stored = None
        if stored is not None:
            key, svid, trust_domain = stored.key, stored.svid, stored.trust_domain
            log.info("pymesh agent %s: using the certificate kept on disk (%r)", self.id, svid)
        else:
            if self.token is None:
                raise JoinTokenError(
                    "no join token (Mesh(token=...) or PYMESH_TOKEN) and no valid certificate "
                    f"in the data dir ({self.settings.data_dir}): cannot get an identity"
                )
            trust_domain, _roots = await self._retrying("discovery", self.cp.discover)
            mesh._adopt_trust_domain(trust_domain)
            key = generate_key()
            csr = create_csr(key, mesh.spiffe_id)
            svid = await self._retrying("the first certificate", lambda: self._request_svid(csr))
        mesh._adopt_trust_domain(trust_domain)
        identity = WorkloadIdentity(
            mesh.spiffe_id,
            self._sign,
            initial=(key, svid),
            key_file=self.files.svid_path if self.files is not None else None,
            on_install=self._installed,
            retry_initial=self.settings.retry_initial,
            retry_max=self.settings.retry_max,
        )
        identity.start()
        self.identity = identity
        mesh._attach_identity(identity)
        held = self.files.load_snapshot() if self.files is not None else None
        if held is not None:
            await self._apply(held, source="disk")
        self._check_ready()

    def _installed(self, key: ec.EllipticCurvePrivateKey, svid: IssuedSvid) -> None:
        """A new certificate (or bundle) is in place: use it with the control plane, keep it."""
        self.cp.set_svid(key, svid)
        if self.files is not None:
            try:
                self.files.save_identity(svid)
            except OSError as exc:
                log.warning("could not keep the identity in %s: %s", self.files.directory, exc)

    async def _request_svid(self, csr_der: bytes) -> IssuedSvid:
        mesh = self.mesh
        pem = x509.load_der_x509_csr(csr_der).public_bytes(Encoding.PEM).decode()
        body = {"csr": pem, "namespace": mesh.namespace, "serviceAccount": mesh.service_account}
        resp = await self.cp.request("POST", "/v1/certificates", json=body)
        try:
            d = resp.json()
            sid = SpiffeId.parse(d["spiffeId"])
            chain = tuple(load_pem_certificates(d["certificateChain"]))
            bundle = TrustBundle.from_pem(sid.trust_domain, d["trustBundle"])
        except (ValueError, KeyError, TypeError, IdentityError) as exc:
            raise ControlPlaneError(f"{self.cp.url}: unexpected certificate answer: {exc}") from exc
        return IssuedSvid(sid, chain, bundle)

    def _sign(self, csr_der: bytes) -> IssuedSvid:
        """The `Signer` of the workload's identity: renewals, on the identity's thread."""
        loop = self._loop
        if loop is None or loop.is_closed() or threading.current_thread() is self._thread:
            raise AgentError("the pymesh agent is not running")
        fut = asyncio.run_coroutine_threadsafe(self._request_svid(csr_der), loop)
        try:
            return fut.result(self.settings.request_timeout + 5.0)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise ControlPlaneUnavailableError(
                f"{self.cp.url}: no certificate within {self.settings.request_timeout + 5.0} s"
            ) from None

    # -- watch --------------------------------------------------------------------------------

    def _heartbeat_body(self) -> dict[str, object]:
        """Edge statistics and the certificate's expiry, for the dashboard, `top`, `status`."""
        body: dict[str, object] = {"agent": self.id, "stats": self.mesh.runtime.edge_stats.rows()}
        identity = self.mesh.identity
        if identity is not None:
            body["certificateNotAfter"] = identity.svid.not_after
        return body

    async def _watch_loop(self) -> None:
        while True:
            try:
                await self._retrying("watching", self._watch_once)
            except AgentError as exc:  # refused for good: keep serving, try again slowly
                self.last_error = str(exc)
                log.error("pymesh agent %s: watch refused: %s", self.id, exc)
                await asyncio.sleep(self.settings.retry_max)
                continue
            await asyncio.sleep(self.settings.retry_initial)  # a stream ended: reconnect

    def _watch_params(self) -> dict[str, str]:
        mesh = self.mesh
        labels = {"app": mesh.service, **mesh.labels}
        params = {
            "agent": self.id,
            "namespace": mesh.namespace,
            "service": mesh.service,
            "labels": ",".join(f"{k}={v}" for k, v in labels.items()),
            "encoding": "zlib",  # the snapshot compressed once per version by the CP
        }
        if self.workload:
            params["workload"] = self.workload
        if self.digest:
            params["digest"] = self.digest
        return params

    async def _watch_once(self) -> None:
        """One watch stream until it ends. Raises `ControlPlaneUnavailableError` when it
        delivered nothing (to back off); returns after a stream that worked."""
        got = False
        try:
            async with self.cp.stream(
                "/v1/watch",
                self._watch_params(),
                read_timeout=self.settings.watch_idle_timeout,
            ) as resp:
                self.connected = True
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    got = True
                    await self._on_message(json.loads(line))
        except ControlPlaneError as exc:
            if exc.code == "not_registered":  # our workload's lease went: watch by labels
                self.workload = None
                raise ControlPlaneUnavailableError(str(exc)) from exc
            raise
        except (ControlPlaneUnavailableError, ValueError) as exc:
            if not got:
                raise ControlPlaneUnavailableError(str(exc)) from exc
            log.info("pymesh agent %s: watch stream lost: %s", self.id, exc)
        finally:
            self.connected = False
        if not got:
            raise ControlPlaneUnavailableError(f"{self.cp.url}: the watch stream ended at once")

    async def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "snapshot":
            await self._apply(msg, source="control-plane")
        elif kind == "current" and msg.get("digest") == self.digest:
            await self._ack(int(msg.get("revision", 0)), self.digest, None)

    async def _apply(self, msg: dict[str, Any], *, source: str) -> bool:
        """Load and apply one snapshot; ACK it, or NACK it and keep the previous one."""
        rev = int(msg.get("revision", 0))
        digest = str(msg.get("digest", ""))
        try:
            if msg.get("encoding") == "zlib":  # documents compressed once per version by the CP
                resources = json.loads(zlib.decompress(base64.b64decode(msg["data"])))
            else:
                resources = msg["resources"]
            text = "\n---\n".join(json.dumps(doc) for doc in resources)
            config = load_text(text, f"snapshot-r{rev}.json", default_namespace=self.mesh.namespace)
            self.mesh.update(config)
        except Exception as exc:  # whatever is wrong with it, the previous one keeps serving
            self.nacks += 1
            self.last_nack = f"{type(exc).__name__}: {exc}"
            log.error(
                "pymesh agent %s: refused snapshot r%d from %s (keeping r%s): %s",
                self.id,
                rev,
                source,
                self.revision,
                exc,
            )
            if source == "control-plane":
                await self._ack(rev, digest, self.last_nack[:16000])
            return False
        self.revision, self.digest, self.source = rev, digest, source
        if source == "control-plane":
            if self.files is not None:
                try:
                    await asyncio.to_thread(self.files.save_snapshot, msg)
                except OSError as exc:
                    log.warning("could not keep the snapshot in %s: %s", self.files.directory, exc)
            await self._ack(rev, digest, None)
        self._check_ready()
        return True

    async def _ack(self, revision: int, digest: str, error: str | None) -> None:
        body: dict[str, Any] = {"revision": revision, "digest": digest}
        if error is not None:
            body["error"] = error
        try:
            await self.cp.request("POST", f"/v1/agents/{self.id}/ack", json=body)
        except AgentError as exc:  # the next connection reports again
            log.info("pymesh agent %s: could not ACK r%d: %s", self.id, revision, exc)
            return
        if error is None:
            self.acks += 1

    # -- lease --------------------------------------------------------------------------------

    def _listeners_now(self) -> tuple[Listener, ...]:
        with self._lock:
            return tuple(sorted(self._listeners.values(), key=lambda x: x.port))

    def _address(self, listeners: tuple[Listener, ...]) -> str:
        if self.settings.address:
            return self.settings.address
        host = listeners[0].host
        if host in ("", "0.0.0.0", "::"):
            try:
                return socket.gethostbyname(socket.gethostname())
            except OSError:
                return "127.0.0.1"
        return host

    async def _register(self, listeners: tuple[Listener, ...]) -> _Registration:
        mesh = self.mesh
        body = {
            "agent": self.id,
            "service": mesh.service,
            "namespace": mesh.namespace,
            "serviceAccount": mesh.service_account,
            "address": self._address(listeners),
            "ports": [
                {
                    "name": x.name,
                    "port": x.port,
                    "servicePort": x.service_port or x.port,
                    "protocol": x.protocol,
                }
                for x in listeners
            ],
            "labels": dict(mesh.labels),
            "locality": mesh.locality or "",
        }
        d = (await self.cp.request("POST", "/v1/workloads", json=body)).json()
        reg = _Registration(
            str(d["workload"]), listeners, float(d["heartbeatSeconds"]), float(d["ttlSeconds"])
        )
        log.info(
            "pymesh agent %s: registered %s (%s)",
            self.id,
            reg.workload,
            ", ".join(f"{x.name}:{x.port}" for x in listeners),
        )
        return reg

    async def _deregister(self, reg: _Registration) -> None:
        try:
            await self.cp.request(
                "DELETE",
                f"/v1/workloads/{reg.workload}/agents/{self.id}",
                timeout=self.settings.deregister_timeout,
            )
        except AgentError as exc:
            log.info("pymesh agent %s: could not deregister %s: %s", self.id, reg.workload, exc)

    async def _deregister_all(self) -> None:
        reg, self._registration = self._registration, None
        self.workload = None
        if reg is not None:
            await self._deregister(reg)

    async def _wait_wake(self, timeout: float | None) -> bool:
        """Wait for a change of listeners (True) or `timeout` seconds (False)."""
        wake = self._wake
        assert wake is not None
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            return False
        wake.clear()
        return True

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self._lease_step()
            except ControlPlaneError as exc:  # refused for good: say so, try again slowly
                self.last_error = str(exc)
                log.error("pymesh agent %s: registration refused: %s", self.id, exc)
                await self._wait_wake(self.settings.retry_max)

    async def _lease_step(self) -> None:
        """Register what changed, or heartbeat once the interval has passed."""
        listeners = self._listeners_now()
        reg = self._registration
        if reg is None or reg.listeners != listeners:
            self._registration, self.workload = None, None
            new = None
            if listeners:
                new = await self._retrying("registering", lambda: self._register(listeners))
                self._registration, self.workload = new, new.workload
            if reg is not None and (new is None or new.workload != reg.workload):
                await self._deregister(reg)
            if new is None:
                await self._wait_wake(None)
            return
        if await self._wait_wake(reg.heartbeat):
            return
        try:
            await self.cp.request(
                "POST",
                f"/v1/workloads/{reg.workload}/heartbeat",
                json=self._heartbeat_body(),
            )
        except ControlPlaneError as exc:
            if exc.status != 404:
                raise
            log.warning("pymesh agent %s: %s; registering again", self.id, exc)
            self._registration, self.workload = None, None  # the lease expired
        except ControlPlaneUnavailableError as exc:  # the next interval tries again
            self.last_error = str(exc)

    async def _supervised(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the agent's loops; a bug in it is logged and the loop restarted."""
        while True:
            try:
                await loop()
            except Exception:
                log.exception("pymesh agent %s: %s failed; restarting it", self.id, loop.__name__)
                await asyncio.sleep(self.settings.retry_max)
