"""`Mesh`: what a service holds — its identity, its configuration and the clients it makes.

How this works: a `Mesh` compiles the Istio resources it is given into a `Snapshot` for its own
namespace and labels, and keeps one `Runtime` (cluster and endpoint state) that every client it
makes shares. `update()` swaps in a new snapshot: clients rebuild their route tier on their next
call, endpoint state (requests in flight, ejections) carries over, and calls in flight finish on
the snapshot they started with. In static mode the configuration comes from files or text.

In control-plane mode (`Mesh(service=..., control_plane=URL, token=...)` or `Mesh.from_env()`)
the mesh starts empty and its agent (`pymesh.agent`, one per process, started lazily by
`start()`, the first client or the first server) gets the certificate, registers the ports
`server()` really listens on, and feeds every snapshot of the control plane to `update()`.
`start()`, `http_client()` and `server()` wait (bounded by `ready_timeout`) until the agent
holds a certificate and a first snapshot; `async_http_client()` does not block.
"""

from __future__ import annotations

import asyncio
import os
import random
import weakref
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from pymesh._async.transport import AsyncMeshTransport
from pymesh._httpx_client import MeshAsyncClient, MeshClient
from pymesh._sync.transport import MeshTransport
from pymesh._tls import OutboundTls
from pymesh.agent import Agent, AgentSettings, Listener, MeshNotReadyError
from pymesh.asgi import MeshMiddleware
from pymesh.config import load_files, load_text
from pymesh.config.hosts import canonical_host
from pymesh.config.model import ConfigSet
from pymesh.identity import CertificateAuthority, SpiffeId, WorkloadIdentity
from pymesh.inbound import InboundPolicy
from pymesh.policy.peerauthn import listener_tls
from pymesh.runtime import Runtime
from pymesh.server.runner import MeshServer
from pymesh.snapshot import Snapshot, compile_snapshot
from pymesh.telemetry import MeshTelemetry, telemetry_for
from pymesh.telemetry.exposition import MetricsApp, MetricsServer, is_loopback


class Mesh:
    """A workload's view of the mesh, and the factory for its meshed clients.

    `Mesh.from_files("mesh.yaml", service="frontend", namespace="default")` reads Istio YAML;
    `mesh.http_client()` and `mesh.async_http_client()` return httpx clients whose requests to
    mesh services are routed, balanced, retried, timed out and ejected by that configuration.
    `locality="region/zone/subzone"` places the workload for locality load balancing.
    """

    def __init__(
        self,
        config: ConfigSet | None = None,
        *,
        service: str,
        namespace: str = "default",
        service_account: str | None = None,
        labels: Mapping[str, str] | None = None,
        locality: str | None = None,
        ca: CertificateAuthority | str | PathLike[str] | None = None,
        identity: WorkloadIdentity | None = None,
        trust_domain: str = "cluster.local",
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        telemetry: Any = None,
        control_plane: str | Sequence[str] | None = None,
        token: str | None = None,
        data_dir: str | PathLike[str] | None = None,
        persist: bool = True,
        address: str | None = None,
        ready_timeout: float = 30.0,
        agent_settings: Mapping[str, Any] | None = None,
    ) -> None:
        # control-plane mode: configuration and identity come from the control plane's agent
        self._agent_settings: AgentSettings | None = None
        self._agent: Agent | None = None
        if control_plane is not None:
            if config is not None or ca is not None or identity is not None:
                raise TypeError(
                    "a Mesh gets its configuration and identity from the control plane "
                    "(control_plane=) or from config and ca / identity (static mode), not both"
                )
            urls = (control_plane,) if isinstance(control_plane, str) else tuple(control_plane)
            store = None
            if persist:
                store = (
                    Path(data_dir)
                    if data_dir is not None
                    else _default_data_dir(namespace, service)
                )
            self._agent_settings = AgentSettings(
                control_planes=urls,
                token=token,
                data_dir=store,
                address=address,
                ready_timeout=ready_timeout,
                **dict(agent_settings or {}),
            )
            config = ConfigSet()
        elif config is None:
            raise TypeError("a Mesh needs config (static mode) or control_plane= (see from_env)")
        self.ready_timeout = ready_timeout
        self.service = service
        self.namespace = namespace
        self.service_account = service_account or service
        self.labels = dict(labels or {"app": service})
        # `region/zone/subzone` for locality load balancing; None: from this workload's own
        # WorkloadEntry (same namespace, labels including `labels`), if there is one
        self.locality = locality
        self._config = config
        self.trust_domain = trust_domain
        self.spiffe_id = SpiffeId.workload(trust_domain, namespace, self.service_account)
        if identity is None and ca is not None:
            authority = (
                ca
                if isinstance(ca, CertificateAuthority)
                else CertificateAuthority.load_or_create(ca, trust_domain=trust_domain)
            )
            identity = WorkloadIdentity.from_ca(authority, self.spiffe_id)
        # the workload's SVID and mTLS contexts (None: plaintext, no identity)
        self.identity = identity
        self._identity_started = False
        # how outbound attempts speak TLS (DestinationRule tls, or auto mesh mTLS)
        self.outbound_tls = OutboundTls(identity)
        self._inbound: tuple[ConfigSet, InboundPolicy] | None = None
        self._sync_transports: weakref.WeakSet[MeshTransport] = weakref.WeakSet()
        self._async_transports: weakref.WeakSet[AsyncMeshTransport] = weakref.WeakSet()
        snapshot = compile_snapshot(
            config, namespace, self.labels, locality=locality, trust_domain=trust_domain
        )
        if clock is None:
            self.runtime = Runtime(snapshot, rng=rng)
        else:
            self.runtime = Runtime(snapshot, clock=clock, rng=rng)
        # metrics, access log, traces (`pymesh.telemetry`): a TelemetryConfig, True (defaults),
        # False (off), or None (what `pymesh.telemetry.configure` set; off if never called)
        self.telemetry: MeshTelemetry | None = telemetry_for(self, telemetry)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Mesh:
        """A mesh in control-plane mode configured by the environment (`overrides` win):
        `PYMESH_SERVICE` (required), `PYMESH_NAMESPACE`, `PYMESH_SERVICE_ACCOUNT`,
        `PYMESH_CONTROL_PLANE` (required; several URLs comma-separated), `PYMESH_TOKEN` (or
        `PYMESH_TOKEN_FILE`), `PYMESH_DATA_DIR`, `PYMESH_PERSIST` (`0` keeps the key in
        memory only), `PYMESH_LABELS` (`k=v,k2=v2`), `PYMESH_LOCALITY`, `PYMESH_ADDRESS`
        (the address to register), `PYMESH_READY_TIMEOUT` (seconds)."""
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}

        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value and name.removeprefix("PYMESH_").lower() not in overrides:
                raise ValueError(f"Mesh.from_env: {name} is not set")
            return value

        kw["service"] = need("PYMESH_SERVICE")
        cps = [u.strip() for u in need("PYMESH_CONTROL_PLANE").split(",") if u.strip()]
        kw["control_plane"] = cps
        kw["namespace"] = env.get("PYMESH_NAMESPACE", "").strip() or "default"
        if env.get("PYMESH_SERVICE_ACCOUNT", "").strip():
            kw["service_account"] = env["PYMESH_SERVICE_ACCOUNT"].strip()
        token = env.get("PYMESH_TOKEN", "").strip()
        if not token and env.get("PYMESH_TOKEN_FILE", "").strip():
            token = Path(env["PYMESH_TOKEN_FILE"].strip()).read_text(encoding="utf-8").strip()
        kw["token"] = token or None
        if env.get("PYMESH_DATA_DIR", "").strip():
            kw["data_dir"] = env["PYMESH_DATA_DIR"].strip()
        kw["persist"] = env.get("PYMESH_PERSIST", "1").strip().lower() not in ("0", "false", "no")
        labels = env.get("PYMESH_LABELS", "").strip()
        if labels:
            pairs = [p.partition("=") for p in labels.split(",") if p.strip()]
            if any(not sep or not k.strip() for k, sep, _ in pairs):
                raise ValueError(f"Mesh.from_env: PYMESH_LABELS wants k=v,k2=v2, got {labels!r}")
            kw["labels"] = {k.strip(): v.strip() for k, _, v in pairs}
        for name, key in (("PYMESH_LOCALITY", "locality"), ("PYMESH_ADDRESS", "address")):
            if env.get(name, "").strip():
                kw[key] = env[name].strip()
        if env.get("PYMESH_READY_TIMEOUT", "").strip():
            kw["ready_timeout"] = float(env["PYMESH_READY_TIMEOUT"])
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_files(
        cls, *paths: str | PathLike[str], service: str, namespace: str = "default", **kw: Any
    ) -> Mesh:
        """A mesh configured by Istio YAML files or directories (static mode).

        Raises `pymesh.ConfigError` naming every problem (file, resource, field, line)."""
        return cls(
            load_files([str(p) for p in paths], default_namespace=namespace),
            service=service,
            namespace=namespace,
            **kw,
        )

    @classmethod
    def from_yaml(cls, text: str, *, service: str, namespace: str = "default", **kw: Any) -> Mesh:
        """A mesh configured by Istio YAML given as a string (static mode)."""
        return cls(
            load_text(text, filename="<string>", default_namespace=namespace),
            service=service,
            namespace=namespace,
            **kw,
        )

    @property
    def snapshot(self) -> Snapshot:
        """The configuration snapshot new calls use."""
        return self.runtime.snapshot

    @property
    def config(self) -> ConfigSet:
        """The resources the current snapshot was built from."""
        return self._config

    def update(self, config: ConfigSet) -> None:
        """Switch to new configuration: new calls use it, calls in flight finish on the old."""
        snapshot = compile_snapshot(
            config,
            self.namespace,
            self.labels,
            locality=self.locality,
            trust_domain=self.trust_domain,
        )
        self._config = config
        self.runtime.apply(snapshot)

    def transport(self, **kw: Any) -> MeshTransport:
        """A sync meshed transport, for `httpx.Client(transport=...)`."""
        self._start_identity()
        transport = MeshTransport(self, **kw)
        self._sync_transports.add(transport)
        return transport

    def async_transport(self, **kw: Any) -> AsyncMeshTransport:
        """An async meshed transport, for `httpx.AsyncClient(transport=...)`. In control-plane
        mode it does not wait for readiness (await `asyncio.to_thread(mesh.start)` first)."""
        if self._agent_settings is not None:
            self.agent.start()
        else:
            self._start_identity()
        transport = AsyncMeshTransport(self, **kw)
        self._async_transports.add(transport)
        return transport

    def http_client(self, **kwargs: Any) -> httpx.Client:
        """An `httpx.Client` whose requests go through the mesh (other keyword arguments go to
        httpx; `limits` sizes the mesh's connection pool, which is httpcore's)."""
        return MeshClient(transport=self.transport(**_pool_options(kwargs)), **kwargs)

    def async_http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An `httpx.AsyncClient` whose requests go through the mesh (other keyword arguments
        go to httpx). `limits` sizes the mesh's connection pool (per endpoint); `pool="httpcore"`
        uses httpcore's pool instead of pymesh's lean HTTP/1.1 pool (`pool="auto"`). Both
        clients are httpx's own classes minus two per-request costs (`pymesh._httpx_client`)."""
        transport = self.async_transport(**_pool_options(kwargs))
        return MeshAsyncClient(transport=transport, **kwargs)

    def inbound_policy(self) -> InboundPolicy:
        """The PeerAuthentication / AuthorizationPolicy / CORS decisions for this workload,
        compiled once per configuration (servers and middleware call this per request)."""
        cached = self._inbound
        config = self._config
        if cached is None or cached[0] is not config:
            policy = InboundPolicy.compile(
                config,
                namespace=self.namespace,
                labels=self.labels,
                trust_domain=self.trust_domain,
                service_host=canonical_host(self.service, self.namespace),
            )
            cached = (config, policy)
            self._inbound = cached
        return cached[1]

    # -- control-plane mode ----------------------------------------------------------------------

    @property
    def control_plane_mode(self) -> bool:
        """Whether configuration and identity come from a control plane."""
        return self._agent_settings is not None

    @property
    def agent(self) -> Agent:
        """This process's control-plane agent (made anew in a forked child; not started)."""
        settings = self._agent_settings
        if settings is None:
            raise RuntimeError("this Mesh is in static mode: it has no control-plane agent")
        agent = self._agent
        if agent is None or agent.pid != os.getpid():
            agent = self._agent = Agent(self, settings)
        return agent

    def ready(self) -> bool:
        """Whether it can take traffic: always in static mode; in control-plane mode once the
        agent holds a certificate and a first snapshot (from the control plane or the disk)."""
        return self._agent_settings is None or (self._agent is not None and self.agent.ready)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Start the agent if needed and wait up to `timeout` seconds (default
        `ready_timeout`) until ready; False on timeout. Raises the agent's error when it cannot
        become ready at all (a refused join token, a pinned-CA mismatch)."""
        if self._agent_settings is None:
            return True
        return self.agent.start().wait_ready(timeout)

    def register(
        self,
        port: int,
        *,
        name: str = "http",
        service_port: int | None = None,
        protocol: str = "HTTP",
        host: str = "127.0.0.1",
    ) -> None:
        """Register a port this workload listens on with the control plane (`server()` does it
        for its own port): `name` matches the ServiceEntry port name, `service_port` is what
        callers dial (default: `port`). Idempotent by address and ports (pre-fork workers)."""
        self.agent.start().add_listener(Listener(port, name, service_port, protocol, host))

    def deregister(self, port: int) -> None:
        """Stop registering `port` (the workload's endpoint goes with its last port)."""
        if self._agent is not None:
            self._agent.remove_listener(port)

    def _attach_identity(self, identity: WorkloadIdentity) -> None:
        """The agent's identity becomes the mesh's (clients and servers made from now on)."""
        self.identity = identity
        self.outbound_tls.identity = identity
        self._identity_started = True  # the agent renews and stops it

    def _adopt_trust_domain(self, trust_domain: str) -> None:
        """In control-plane mode the trust domain is the control plane's."""
        if trust_domain != self.trust_domain:
            self.trust_domain = trust_domain
            self.spiffe_id = SpiffeId.workload(trust_domain, self.namespace, self.service_account)
            self._inbound = None

    def _start_identity(self) -> WorkloadIdentity | None:
        if self._agent_settings is not None:
            self.start()
            return self.identity
        identity = self.identity
        if identity is not None and not self._identity_started:
            identity.start()
            self._identity_started = True
        return identity

    def start(self) -> Mesh:
        """Make the mesh ready to take traffic: the workload's certificate is obtained and
        renewed in the background from now on. Idempotent; it may block (later: until the
        control plane answers), so frameworks call it off their event loop, with a bound
        (`pymesh_fastapi`'s lifespan, `pymesh_django`'s first request). `close()` undoes it.

        In control-plane mode: starts the agent and waits until it holds a certificate and a
        first snapshot, at most `ready_timeout` seconds (`MeshNotReadyError`); a refused join
        token or a pinned-CA mismatch raises at once (`pymesh.agent.JoinTokenError`, ...)."""
        if self._agent_settings is None:
            self._start_identity()
            return self
        agent = self.agent.start()
        if not agent.wait_ready(self.ready_timeout):
            raise MeshNotReadyError(
                f"{self.spiffe_id} not ready after {self.ready_timeout:g} s: {agent.status()}"
            )
        return self

    def server(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        port_name: str = "http",
        service_port: int | None = None,
        metrics_port: int | None = None,
        **uvicorn_options: Any,
    ) -> MeshServer:
        """A uvicorn server for `app` behind the mesh's inbound policy, with mTLS when the mesh
        has an identity (the peer's SPIFFE ID checked once per connection). Call `start()`
        (background thread; `port` 0 picks a free port) or `run()` (blocks).

        `metrics_port` (Istio's is 15020; 0 picks one; default None: none) also serves the
        mesh's metrics, plaintext, at `/stats/prometheus` and `/metrics` on `host`, from when
        the server starts until it stops (`server.metrics.port`); it needs telemetry with
        metrics on (else `RuntimeError` here).

        In control-plane mode the mesh is made ready first (bounded), and once the server
        listens its real port is registered as `port_name` (the ServiceEntry port it serves;
        `service_port`: what callers dial, default the real port); stopping deregisters it."""
        if metrics_port is not None:
            registry = self._metrics_registry()
            metrics_at = int(metrics_port)
            explain = self.explain if is_loopback(host) else None  # the admin endpoint
            uvicorn_options["metrics"] = lambda: MetricsServer(registry, metrics_at, host, explain)
        identity = self._start_identity()
        if self._agent_settings is not None:

            def started(server: MeshServer) -> None:
                self.register(server.port, name=port_name, service_port=service_port, host=host)

            def stopped(server: MeshServer) -> None:
                if server.bound_port is not None:
                    self.deregister(server.bound_port)

            uvicorn_options.update(on_started=started, on_stopped=stopped)
        wrapped = MeshMiddleware(app, self)
        if identity is None:
            return MeshServer(wrapped, host=host, port=port, **uvicorn_options)
        mode = self.inbound_policy().peer_authn.mode_for(port)
        tls = listener_tls(mode)
        if not tls.offer:
            return MeshServer(wrapped, host=host, port=port, **uvicorn_options)
        checked = identity

        def verify(ssl_object: Any) -> str:
            return checked.check_peer(ssl_object, peer_role="client").uri

        return MeshServer(
            wrapped,
            host=host,
            port=port,
            ssl_context=lambda: checked.server_context(
                require_client_cert=tls.client_cert == "required"
            ),
            verify_peer=verify,
            plaintext_too=not tls.require,
            **uvicorn_options,
        )

    def serve(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        metrics_port: int | None = None,
        **options: Any,
    ) -> None:
        """Serve `app` with the mesh until interrupted (as `uvicorn.run`); with
        `metrics_port=15020` (Istio's merged-metrics port) also the mesh's metrics there."""
        self.server(app, host=host, port=port, metrics_port=metrics_port, **options).run()

    def explain(self, last: int = 10) -> list[dict[str, Any]]:
        """The decision records of the last `last` meshed calls (client and server), oldest
        first, as the access log writes them (telemetry on; [] when off)."""
        return self.telemetry.explain(last) if self.telemetry is not None else []

    def metrics_app(self, *, explain: bool = False) -> Any:
        """An ASGI app serving this mesh's metrics at `/stats/prometheus` and `/metrics`
        (in multiprocess mode, `PYMESH_METRICS_DIR`: the sum of every worker's); with
        `explain=True` also the admin endpoint `/explain?last=N` (the last calls' decision
        records, as JSON — mount it where only operators reach it)."""
        return MetricsApp(self._metrics_registry(), self.explain if explain else None)

    def start_metrics_server(
        self, port: int = 15020, host: str = "127.0.0.1", *, explain: bool | None = None
    ) -> MetricsServer:
        """Serve this mesh's metrics on their own listener (a thread; `port` 0 picks one), and
        the admin endpoint `/explain?last=N` — by default only when `host` is a loopback
        address (as Envoy's admin port)."""
        on = is_loopback(host) if explain is None else explain
        return MetricsServer(self._metrics_registry(), port, host, self.explain if on else None)

    def _metrics_registry(self) -> CollectorRegistry:
        telemetry = self._telemetry_on()
        if telemetry.metrics is None:
            raise RuntimeError(
                "metrics are off in this mesh's telemetry: TelemetryConfig(metrics=True)"
            )
        return telemetry.registry

    def _telemetry_on(self) -> MeshTelemetry:
        if self.telemetry is None:
            raise RuntimeError(
                "telemetry is off for this mesh: Mesh(..., telemetry=True) or "
                "pymesh.telemetry.configure() before making it"
            )
        return self.telemetry

    def close(self) -> None:
        """Close the connection pools of the sync clients this mesh made (async clients are
        closed by `aclose()` or their own `aclose()`), stop certificate renewal and, in metrics
        multiprocess mode, the metrics writer. In control-plane mode first the agent:
        deregister, stop watching and renewing."""
        self._close_agent()
        for transport in list(self._sync_transports):
            transport.close()
        if self.identity is not None and self._identity_started:
            self.identity.stop()
            self._identity_started = False
        metrics = self.telemetry.metrics if self.telemetry is not None else None
        if metrics is not None and metrics.shared is not None:
            metrics.shared.close()  # multiprocess mode: the last counts written, writer stopped

    async def aclose(self) -> None:
        """Close the connection pools of every client this mesh made."""
        for transport in list(self._async_transports):
            await transport.aclose()
        await asyncio.to_thread(self._close_agent)
        self.close()

    def _close_agent(self) -> None:
        agent, self._agent = self._agent, None
        if agent is not None and agent.pid == os.getpid():
            agent.close()
            self._identity_started = False

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Mesh(service={self.service!r}, namespace={self.namespace!r}, "
            f"snapshot={self.runtime.snapshot.version!r})"
        )


def _default_data_dir(namespace: str, service: str) -> Path:
    """`$XDG_STATE_HOME/pymesh/<namespace>/<service>` (default `~/.local/state/...`)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return Path(base) / "pymesh" / namespace / service


def _pool_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the mesh transport's options (`limits`, `pool`) out of httpx client kwargs."""
    return {k: kwargs.pop(k) for k in ("limits", "pool") if kwargs.get(k) is not None}
