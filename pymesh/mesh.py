"""`Mesh`: what a service holds — its identity, its configuration and the clients it makes.

How this works: a `Mesh` compiles the Istio resources it is given into a `Snapshot` for its own
namespace and labels, and keeps one `Runtime` (cluster and endpoint state) that every client it
makes shares. `update()` swaps in a new snapshot: clients rebuild their route tier on their next
call, endpoint state (requests in flight, ejections) carries over, and calls in flight finish on
the snapshot they started with. In static mode the configuration comes from files or text.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

import httpx

from pymesh._async.transport import AsyncMeshTransport
from pymesh._httpx_client import MeshAsyncClient, MeshClient
from pymesh._sync.transport import MeshTransport
from pymesh._tls import OutboundTls
from pymesh.asgi import MeshMiddleware
from pymesh.config import load_files, load_text
from pymesh.config.model import ConfigSet
from pymesh.identity import CertificateAuthority, SpiffeId, WorkloadIdentity
from pymesh.inbound import InboundPolicy
from pymesh.policy.peerauthn import listener_tls
from pymesh.runtime import Runtime
from pymesh.server.runner import MeshServer
from pymesh.snapshot import Snapshot, compile_snapshot


class Mesh:
    """A workload's view of the mesh, and the factory for its meshed clients.

    `Mesh.from_files("mesh.yaml", service="frontend", namespace="default")` reads Istio YAML;
    `mesh.http_client()` and `mesh.async_http_client()` return httpx clients whose requests to
    mesh services are routed, balanced, retried, timed out and ejected by that configuration.
    `locality="region/zone/subzone"` places the workload for locality load balancing.
    """

    def __init__(
        self,
        config: ConfigSet,
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
    ) -> None:
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
        """An async meshed transport, for `httpx.AsyncClient(transport=...)`."""
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
        """The PeerAuthentication / AuthorizationPolicy decisions for this workload, compiled
        once per configuration (servers and middleware call this per request)."""
        cached = self._inbound
        config = self._config
        if cached is None or cached[0] is not config:
            policy = InboundPolicy.compile(
                config,
                namespace=self.namespace,
                labels=self.labels,
                trust_domain=self.trust_domain,
            )
            cached = (config, policy)
            self._inbound = cached
        return cached[1]

    def _start_identity(self) -> WorkloadIdentity | None:
        identity = self.identity
        if identity is not None and not self._identity_started:
            identity.start()
            self._identity_started = True
        return identity

    def start(self) -> Mesh:
        """Make the mesh ready to take traffic: the workload's certificate is obtained and
        renewed in the background from now on. Idempotent; it may block (later: until the
        control plane answers), so frameworks call it off their event loop, with a bound
        (`pymesh_fastapi`'s lifespan, `pymesh_django`'s first request). `close()` undoes it."""
        self._start_identity()
        return self

    def server(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any
    ) -> MeshServer:
        """A uvicorn server for `app` behind the mesh's inbound policy, with mTLS when the mesh
        has an identity (the peer's SPIFFE ID checked once per connection). Call `start()`
        (background thread; `port` 0 picks a free port) or `run()` (blocks)."""
        identity = self._start_identity()
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

    def serve(self, app: Any, *, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
        """Serve `app` with the mesh until interrupted (as `uvicorn.run`)."""
        self.server(app, host=host, port=port, **options).run()

    def close(self) -> None:
        """Close the connection pools of the sync clients this mesh made (async clients are
        closed by `aclose()` or their own `aclose()`), and stop certificate renewal."""
        for transport in list(self._sync_transports):
            transport.close()
        if self.identity is not None and self._identity_started:
            self.identity.stop()
            self._identity_started = False

    async def aclose(self) -> None:
        """Close the connection pools of every client this mesh made."""
        for transport in list(self._async_transports):
            await transport.aclose()
        self.close()

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


def _pool_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the mesh transport's options (`limits`, `pool`) out of httpx client kwargs."""
    return {k: kwargs.pop(k) for k in ("limits", "pool") if kwargs.get(k) is not None}
