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
from pymesh._sync.transport import MeshTransport
from pymesh.config import load_files, load_text
from pymesh.config.model import ConfigSet
from pymesh.runtime import Runtime
from pymesh.snapshot import Snapshot, compile_snapshot


class Mesh:
    """A workload's view of the mesh, and the factory for its meshed clients.

    `Mesh.from_files("mesh.yaml", service="frontend", namespace="default")` reads Istio YAML;
    `mesh.http_client()` and `mesh.async_http_client()` return httpx clients whose requests to
    mesh services are routed, balanced, retried, timed out and ejected by that configuration.
    """

    def __init__(
        self,
        config: ConfigSet,
        *,
        service: str,
        namespace: str = "default",
        service_account: str | None = None,
        labels: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.service_account = service_account or service
        self.labels = dict(labels or {"app": service})
        self._config = config
        self._sync_transports: weakref.WeakSet[MeshTransport] = weakref.WeakSet()
        self._async_transports: weakref.WeakSet[AsyncMeshTransport] = weakref.WeakSet()
        snapshot = compile_snapshot(config, namespace, self.labels)
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
        snapshot = compile_snapshot(config, self.namespace, self.labels)
        self._config = config
        self.runtime.apply(snapshot)

    def transport(self, **kw: Any) -> MeshTransport:
        """A sync meshed transport, for `httpx.Client(transport=...)`."""
        transport = MeshTransport(self, **kw)
        self._sync_transports.add(transport)
        return transport

    def async_transport(self, **kw: Any) -> AsyncMeshTransport:
        """An async meshed transport, for `httpx.AsyncClient(transport=...)`."""
        transport = AsyncMeshTransport(self, **kw)
        self._async_transports.add(transport)
        return transport

    def http_client(self, **kwargs: Any) -> httpx.Client:
        """An `httpx.Client` whose requests go through the mesh (other keyword arguments go to
        httpx; `limits` sizes the mesh's connection pool)."""
        limits = kwargs.pop("limits", None)
        transport = self.transport(limits=limits) if limits else self.transport()
        return httpx.Client(transport=transport, **kwargs)

    def async_http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An `httpx.AsyncClient` whose requests go through the mesh."""
        limits = kwargs.pop("limits", None)
        transport = self.async_transport(limits=limits) if limits else self.async_transport()
        return httpx.AsyncClient(transport=transport, **kwargs)

    def close(self) -> None:
        """Close the connection pools of the sync clients this mesh made (async clients are
        closed by `aclose()` or their own `aclose()`)."""
        for transport in list(self._sync_transports):
            transport.close()

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
