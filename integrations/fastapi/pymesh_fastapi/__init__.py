"""pymesh-fastapi: mesh a FastAPI service with one call.

    mesh = pymesh.Mesh.from_files("mesh.yaml", service="reviews", ca="dev-ca")
    app = FastAPI()
    pymesh_fastapi.add_mesh(app, mesh)

    @app.get("/whoami")
    async def whoami(caller: SpiffeId | None = Depends(pymesh_fastapi.peer)) -> dict[str, str]:
        ...

    mesh.serve(app)  # uvicorn with the mesh's mTLS; or any ASGI server (behind pymesh-proxy)

How this works:

- `add_mesh` installs `pymesh.asgi.MeshMiddleware` (pure ASGI, through `app.add_middleware`):
  PeerAuthentication, header hygiene, path normalization and AuthorizationPolicy, decided by
  `pymesh.inbound.InboundPolicy` like every other pymesh adapter. When an outer
  `MeshMiddleware` already decided the request (`Mesh.server` / `Mesh.serve` wrap the app in
  one), the scope carries `extensions["pymesh"]` and the inner one lets it through: the policy
  runs once per request, however the app is served.
- It wraps the app's lifespan (the one given to `FastAPI(lifespan=...)`, or the
  `on_startup` / `on_shutdown` handlers), without replacing it: on startup the mesh is made
  ready first (`Mesh.start()`: certificate obtained, renewal running; run off the event loop
  and bounded by `ready_timeout`, after which startup fails), then the app's own startup runs,
  so it may already call meshed services. On shutdown the server has drained the requests in
  flight; the app's own shutdown runs, then the mesh closes (`Mesh.aclose()`: client pools,
  certificate renewal).
- A server that runs no lifespan (`lifespan="off"`): the first request starts the mesh and
  waits for it, bounded by `ready_timeout`, then answers 503.
- `Depends(pymesh_fastapi.peer)` gives the caller's verified identity as a
  `pymesh.identity.SpiffeId` (`str()` of it is the `spiffe://` URI), or None when the caller
  did not authenticate (plaintext or TLS without a client certificate under PERMISSIVE, or an
  unauthenticated XFCC). `Depends(pymesh_fastapi.require_peer)` answers 401 instead of None.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException
from starlette.requests import HTTPConnection

from pymesh.asgi import ASGIApp, MeshMiddleware, Receive, Scope, Send
from pymesh.asgi import peer as scope_peer
from pymesh.errors import MeshError
from pymesh.identity import SpiffeId
from pymesh.mesh import Mesh
from pymesh.xfcc import XfccSigner

__all__ = ["DEFAULT_READY_TIMEOUT", "MeshNotReady", "add_mesh", "peer", "require_peer"]

log = logging.getLogger("pymesh.fastapi")

DEFAULT_READY_TIMEOUT = 10.0
_NOT_READY = b"mesh not ready"


class MeshNotReady(MeshError):
    """The mesh did not become ready (certificate, configuration) within the time allowed."""


class _Readiness:
    """Starts a mesh once, on a helper thread (it may block), and lets callers wait for it
    with a bound. A failed start is logged and tried again by the next waiter."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """Whether the mesh has started successfully."""
        return self._done.is_set() and self.error is None

    def begin(self) -> None:
        """Start the mesh in the background unless it is starting or started."""
        with self._lock:
            if self._thread is not None and not (self._done.is_set() and self.error):
                return
            self._done.clear()
            self.error = None
            self._thread = threading.Thread(
                target=self._run, name="pymesh-fastapi-start", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        try:
            self.mesh.start()
        except BaseException as exc:  # reported to every waiter, retried by the next
            self.error = exc
            log.error("starting %r failed: %s", self.mesh, exc)
        finally:
            self._done.set()

    async def wait(self, timeout: float) -> bool:
        """Start the mesh if needed and wait up to `timeout` seconds; whether it is ready."""
        if self.ready:
            return True
        self.begin()
        await anyio.to_thread.run_sync(self._done.wait, timeout, abandon_on_cancel=True)
        return self.ready

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("failed" if self.error else "starting")
        return f"_Readiness({self.mesh!r}, {state})"


class _AppMeshMiddleware(MeshMiddleware):
    """`MeshMiddleware` as `add_mesh` installs it: waits for readiness when no lifespan ran,
    and steps aside when an outer `MeshMiddleware` (from `Mesh.server`) already decided."""

    def __init__(
        self,
        app: ASGIApp,
        mesh: Mesh,
        *,
        readiness: _Readiness,
        ready_timeout: float,
        xfcc_signer: XfccSigner | None = None,
    ) -> None:
        super().__init__(app, mesh, xfcc_signer=xfcc_signer)
        self._readiness = readiness
        self._ready_timeout = ready_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            extensions = scope.get("extensions")
            if extensions is not None and "pymesh" in extensions:
                await self.app(scope, receive, send)  # decided by an outer MeshMiddleware
                return
            if not self._readiness.ready and not await self._readiness.wait(self._ready_timeout):
                await _unavailable(kind, send)
                return
        await super().__call__(scope, receive, send)


async def _unavailable(kind: str, send: Send) -> None:
    if kind == "websocket":
        await send({"type": "websocket.close", "code": 1013})  # try again later
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(_NOT_READY))]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _NOT_READY})


LifespanContext = Callable[[Any], AbstractAsyncContextManager[Any]]


def add_mesh(
    app: FastAPI,
    mesh: Mesh,
    *,
    xfcc_signer: XfccSigner | None = None,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    close_on_shutdown: bool = True,
) -> None:
    """Put `app` behind `mesh`'s inbound policy and tie the mesh's life to the app's.

    Installs `pymesh.asgi.MeshMiddleware` and wraps the app's lifespan: the mesh is ready
    before the app's own startup runs (at most `ready_timeout` seconds, else startup fails
    with `MeshNotReady`), and closes after the app's own shutdown (unless
    `close_on_shutdown=False`, for a mesh shared with other apps). Behind `pymesh-proxy` on
    TCP, pass the `XfccSigner` whose key the proxy signs with, so the caller's identity in
    `X-Forwarded-Client-Cert` is trusted (without it, only on a Unix socket). Call it once,
    before the app starts."""
    if getattr(app.state, "pymesh_mesh", None) is not None:
        raise RuntimeError("add_mesh() was already called for this app")
    readiness = _Readiness(mesh)
    app.state.pymesh_mesh = mesh
    app.add_middleware(
        _AppMeshMiddleware,
        mesh=mesh,
        readiness=readiness,
        ready_timeout=ready_timeout,
        xfcc_signer=xfcc_signer,
    )
    original: LifespanContext = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        try:
            if not await readiness.wait(ready_timeout):
                if readiness.error is not None:
                    raise MeshNotReady(
                        f"{mesh!r} could not start: {readiness.error}"
                    ) from readiness.error
                raise MeshNotReady(f"{mesh!r} was not ready within {ready_timeout:g} s")
            async with original(asgi_app) as state:
                yield state
        finally:
            if close_on_shutdown:
                await mesh.aclose()

    app.router.lifespan_context = lifespan


def peer(connection: HTTPConnection) -> SpiffeId | None:
    """FastAPI dependency: the caller's verified SPIFFE identity, or None when the caller did
    not authenticate. `str(caller)` is the `spiffe://` URI; `caller.namespace` and
    `caller.service_account` its parts."""
    uri = scope_peer(connection.scope)
    return SpiffeId.parse(uri) if uri else None


def require_peer(caller: Annotated[SpiffeId | None, Depends(peer)]) -> SpiffeId:
    """FastAPI dependency: the caller's verified identity; 401 when there is none."""
    if caller is None:
        raise HTTPException(status_code=401, detail="a mesh identity (mutual TLS) is required")
    return caller
