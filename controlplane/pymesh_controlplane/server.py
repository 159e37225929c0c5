"""The control plane process: its parts wired together, and the HTTP server around them.

How this works: `ControlPlane` owns the store (SQLite in the data dir), the resource service,
the registry, the agent table, the watch hub and the metrics; `start()` opens the store and
loads the hub, `stop()` ends the streams and closes the store. `serve()` runs it under uvicorn
on a socket it binds itself (so `--listen 127.0.0.1:0` works and `--port-file` can say which
port it got), and on SIGTERM / SIGINT ends the watch streams first so the graceful shutdown does
not wait for them.

The CA (`pymesh.identity.CertificateAuthority`) is loaded from `--cacerts` (Istio's plug-in
layout) or kept in `<data-dir>/ca` (generated at the first start, key 0600); it signs workload
CSRs for the identity of their join token, and the control plane's own HTTPS certificate
(`tls.py`: a new key and certificate at every start; workloads may present their SVID as a
client certificate). Its roots are written to `<data-dir>/ca.pem` for clients. Plain HTTP
(`Settings.tls=False`, `--insecure-http`) is allowed on loopback addresses only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import FastAPI

from pymesh.identity import CertificateAuthority
from pymesh.server.protocol import MeshHttpToolsProtocol, PeerVerifier, protocol_class
from pymesh_controlplane.agents import AgentTable
from pymesh_controlplane.app import BodyLimitMiddleware, create_app
from pymesh_controlplane.auth import (
    ADMIN_TOKEN_FILE,
    AdminTokenAuthenticator,
    Authenticator,
    RateLimiter,
    load_or_create_admin_token,
)
from pymesh_controlplane.hub import Hub
from pymesh_controlplane.metrics import Metrics
from pymesh_controlplane.registry import Registry
from pymesh_controlplane.resources import ResourceService
from pymesh_controlplane.store import SqliteStore, Store
from pymesh_controlplane.tls import root_pem, server_context, svid_verifier
from pymesh_controlplane.tokens import JoinTokenAuthenticator, JoinTokens, TokenRecord

__all__ = ["ControlPlane", "ListenError", "Settings", "parse_listen", "serve"]

STORE_FILE = "store.db"
CA_DIR = "ca"
CA_FILE = "ca.pem"  # the CA roots, for clients (curl --cacert, pymeshctl --ca-cert)


class ListenError(ValueError):
    """The listen address is malformed or not allowed."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `pymesh-controlplane serve` can be told."""

    data_dir: Path = Path(".pymesh")
    host: str = "127.0.0.1"
    port: int = 15012
    trust_domain: str = "cluster.local"
    lease_ttl: float = 15.0
    heartbeat: float = 5.0
    debounce: float = 0.05
    ping_interval: float = 15.0
    max_body: int = 1 << 20
    history_revisions: int = 10_000
    durable: bool = True
    default_namespace: str = "default"
    cacerts: Path | None = None
    csr_rate: float = 5.0
    csr_burst: int = 20
    tls: bool = True
    tls_names: tuple[str, ...] = ()
    extra_authenticators: Sequence[Authenticator] = field(default_factory=tuple)


def parse_listen(value: str, *, tls: bool = True) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:PORT` for IPv6) → (host, port); plain HTTP (`tls=False`) needs a
    loopback host."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit() or not host:
        raise ListenError(f"--listen wants HOST:PORT, got {value!r}")
    host = host.strip("[]")
    port = int(port_s)
    if port > 65535:
        raise ListenError(f"port {port} is out of range")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            raise ListenError(f"--listen wants an IP address or localhost, got {host!r}") from None
        if not loopback and not tls:
            raise ListenError(
                f"{host} is not a loopback address: with --insecure-http the control plane "
                "listens on loopback only (127.0.0.1, ::1); drop --insecure-http to serve HTTPS"
            )
    return host, port


class ControlPlane:
    """One control plane: store, resources, registry, agents, watch hub, metrics, API."""

    def __init__(
        self,
        settings: Settings,
        *,
        admin_token: str | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.agents = AgentTable()
        token = admin_token
        if token is None:
            token, self.admin_token_created = load_or_create_admin_token(settings.data_dir)
        else:
            self.admin_token_created = False
        self.admin_token = token
        self.authenticators: list[Authenticator] = [
            AdminTokenAuthenticator(token),
            JoinTokenAuthenticator(self._token_records),
            *settings.extra_authenticators,
        ]
        self.csr_limiter = RateLimiter(settings.csr_rate, settings.csr_burst)
        self._ca: CertificateAuthority | None = None
        self._tokens: JoinTokens | None = None
        self._store = store
        self._hub: Hub | None = None
        self._resources: ResourceService | None = None
        self._registry: Registry | None = None
        self._started = False
        self.app: FastAPI = create_app(self)
        self.app.add_middleware(BodyLimitMiddleware, limit=settings.max_body)

    def __repr__(self) -> str:
        return f"ControlPlane(data_dir={str(self.settings.data_dir)!r}, started={self._started})"

    @property
    def store(self) -> Store:
        """The store (after `start`)."""
        if self._store is None:
            raise RuntimeError("the control plane is not started")
        return self._store

    def _token_records(self) -> dict[str, TokenRecord]:
        return self._hub.state.tokens if self._hub is not None else {}

    @property
    def ca(self) -> CertificateAuthority:
        """The CA (after `start`)."""
        if self._ca is None:
            raise RuntimeError("the control plane is not started")
        return self._ca

    @property
    def ca_hash(self) -> str:
        """SHA-256 (hex) of the CA root certificate's DER: what join tokens pin."""
        root = self.ca.trust_bundle.roots_for(self.ca.trust_domain)[0]
        return hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest()

    @property
    def tokens(self) -> JoinTokens:
        """The join tokens (after `start`)."""
        if self._tokens is None:
            raise RuntimeError("the control plane is not started")
        return self._tokens

    @property
    def hub(self) -> Hub:
        """The watch hub (after `start`)."""
        if self._hub is None:
            raise RuntimeError("the control plane is not started")
        return self._hub

    @property
    def resources(self) -> ResourceService:
        """The resource service (after `start`)."""
        if self._resources is None:
            raise RuntimeError("the control plane is not started")
        return self._resources

    @property
    def registry(self) -> Registry:
        """The registry (after `start`)."""
        if self._registry is None:
            raise RuntimeError("the control plane is not started")
        return self._registry

    async def start(self) -> None:
        """Open the store and load the hub (idempotent)."""
        if self._started:
            return
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if s.cacerts is not None:
            self._ca = CertificateAuthority.from_cacerts(s.cacerts, trust_domain=s.trust_domain)
        else:
            self._ca = CertificateAuthority.load_or_create(
                s.data_dir / CA_DIR, trust_domain=s.trust_domain
            )
        if self._store is None:
            self._store = await SqliteStore.open(
                s.data_dir / STORE_FILE,
                history_revisions=s.history_revisions,
                durable=s.durable,
            )
        _write_atomically(s.data_dir / CA_FILE, root_pem(self._ca))
        self._tokens = JoinTokens(self._store, self.ca_hash)
        self._resources = ResourceService(self._store, default_namespace=s.default_namespace)
        self._registry = Registry(self._store, self.agents, ttl=s.lease_ttl, heartbeat=s.heartbeat)
        self._hub = Hub(
            self._store,
            self.agents,
            self.metrics,
            debounce=s.debounce,
            ping_interval=s.ping_interval,
        )
        await self._hub.start()
        self._started = True

    async def stop(self) -> None:
        """End the streams, stop the hub, close the store."""
        if not self._started:
            return
        self._started = False
        if self._hub is not None:
            await self._hub.stop()
        if self._store is not None:
            await self._store.close()

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _Server(uvicorn.Server):
    """uvicorn, ending the watch streams as soon as a stop signal arrives, and exiting 0."""

    def __init__(self, config: uvicorn.Config, cp: ControlPlane) -> None:
        super().__init__(config)
        self.cp = cp
        self.loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.loop is not None and self.cp._hub is not None:
            self.loop.call_soon_threadsafe(self.cp._hub.close_streams)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # like uvicorn's, without re-raising the signal afterwards: a stop is a clean exit
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _tls_protocol(verify: PeerVerifier) -> type[MeshHttpToolsProtocol]:
    """pymesh's uvicorn protocol (the client's SVID in the scope), whose graceful shutdown
    drops an idle TLS connection at once: closing it would wait for the peer's close_notify,
    which an idle pooled client never sends, and hold the stop for the whole grace period."""
    base = protocol_class(verify)

    class Protocol(base):  # type: ignore[misc,valid-type]
        def shutdown(self) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.transport.abort()
            else:
                super().shutdown()

    return Protocol


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0): accepted sockets inherit it, and asyncio sets TCP_NODELAY only
    # on sockets whose proto says TCP — without it every keep-alive request waits ~40 ms for
    # a delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


async def serve(
    settings: Settings,
    *,
    port_file: Path | None = None,
    log_level: str = "warning",
    out: Callable[[str], Any] = print,
) -> None:
    """Run the control plane until SIGTERM / SIGINT."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cp = ControlPlane(settings)
    sock = _bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    tls: dict[str, Any] = {}
    if settings.tls:
        # the CA is needed before the lifespan runs: load it (idempotent) to make the certificate
        await cp.start()
        ctx = server_context(cp.ca, settings.host, settings.tls_names)
        tls = {
            "ssl_context_factory": lambda _config, _default: ctx,
            "http": _tls_protocol(svid_verifier(cp.ca)),
        }
    config = uvicorn.Config(
        cp.app,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        server_header=False,
        **tls,
    )
    server = _Server(config, cp)
    server.loop = asyncio.get_running_loop()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        if cp.admin_token_created:
            token_file = settings.data_dir / ADMIN_TOKEN_FILE
            out(f"admin token (shown once; kept 0600 in {token_file}): {cp.admin_token}")
        if settings.tls:
            out(
                f"pymesh-controlplane listening on https://{host}:{port} "
                f"(CA: {settings.data_dir / CA_FILE}, sha256 {cp.ca_hash})"
            )
        else:
            out(
                f"pymesh-controlplane listening on http://{host}:{port} (plain HTTP, loopback only)"
            )
        sys.stdout.flush()
        if port_file is not None:
            _write_atomically(port_file, f"{port}\n")
    try:
        await task
    finally:
        sock.close()
        await cp.stop()  # idempotent: the lifespan normally did it
