"""`MeshMiddleware`: the mesh's inbound policy for a Django project, under WSGI and ASGI.

How this works: Django builds the middleware once per process (at server start); it reads
and checks `settings.PYMESH` (`pymesh_django.runtime`). Per request:

1. Readiness: the first request starts building the process's mesh; until it is ready, a
   request waits for it at most `ready_timeout` seconds, then gets 503 `mesh not ready`.
2. Already decided? When the project is served by `Mesh.server` (ASGI: the scope carries
   `extensions["pymesh"]`) or wrapped in `pymesh.wsgi.MeshMiddleware` (the environ carries
   `pymesh.peer`), the policy already ran on this request: only `request.mesh_peer` is set.
3. Otherwise the request is converted once into a `pymesh.inbound.InboundRequest` by the same
   helpers the ASGI and WSGI middleware use (`pymesh.asgi.inbound_request` from the ASGI scope:
   the TLS extension or XFCC; `pymesh.wsgi.inbound_request` from `request.META`: XFCC trusted
   only with a valid HMAC or, with `trust_unix_socket`, on a Unix socket), and decided by
   `InboundPolicy.check` — the one implementation every adapter shares. A refusal is answered
   here (400, 403 `RBAC: access denied`, 307). A served request continues with the cleaned
   headers in `request.META` and the normalized path in `request.path_info` / `request.path`
   (what authorization saw is what Django's URL resolver routes).

Put it FIRST in `MIDDLEWARE`: the middleware above it see the request before the policy does,
and their cached reads of the path, headers or cookies are dropped when the request changes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.handlers.wsgi import get_path_info  # type: ignore[import-untyped]
from django.http import HttpResponse  # type: ignore[import-untyped]

from pymesh.asgi import inbound_request as asgi_inbound_request
from pymesh.identity import SpiffeId
from pymesh.inbound import InboundVerdict
from pymesh.mesh import Mesh
from pymesh.wsgi import inbound_request as wsgi_inbound_request
from pymesh.wsgi import served_environ
from pymesh_django.runtime import ProcessMesh, process_mesh

log = logging.getLogger("pymesh.inbound")

_NOT_READY = b"mesh not ready"
_CACHED = ("GET", "COOKIES", "headers")  # HttpRequest values computed from META on first read


def _peer(uri: str | None) -> SpiffeId | None:
    return SpiffeId.parse(uri) if uri else None


def _text(status: int, body: bytes) -> Any:
    return HttpResponse(body, status=status, content_type="text/plain")


class MeshMiddleware:
    """Apply the mesh's PeerAuthentication, header hygiene, path normalization and
    AuthorizationPolicy to every request, and set `request.mesh_peer`: the caller's verified
    identity (`pymesh.identity.SpiffeId`; `str()` is the `spiffe://` URI) or None."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        process_mesh()  # check the settings now; the first request starts the build

    def __call__(self, request: Any) -> Any:
        """Serve one request (sync; under ASGI, `__acall__`)."""
        if self.is_async:
            return self.__acall__(request)
        state = process_mesh()
        mesh = state.ready() or state.wait()
        if mesh is None:
            return _text(503, _NOT_READY)
        refusal = self.check(request, mesh, state)
        if refusal is not None:
            return refusal
        return _with_headers(self.get_response(request), request)

    async def __acall__(self, request: Any) -> Any:
        """Serve one request under ASGI."""
        state = process_mesh()
        mesh = state.ready() or await state.await_ready()
        if mesh is None:
            return _text(503, _NOT_READY)
        refusal = self.check(request, mesh, state)
        if refusal is not None:
            return refusal
        response: Awaitable[Any] = self.get_response(request)
        return _with_headers(await response, request)

    def check(self, request: Any, mesh: Mesh, state: ProcessMesh) -> Any:
        """Decide `request`: the response refusing it, or None after preparing it for the
        app (`request.mesh_peer`, cleaned headers, normalized path)."""
        scope = getattr(request, "scope", None)
        if scope is not None:  # ASGI
            decided = (scope.get("extensions") or {}).get("pymesh")
            if decided is not None:  # by pymesh.asgi.MeshMiddleware (Mesh.server)
                request.mesh_peer = _peer(decided.get("peer"))
                return None
            inbound = asgi_inbound_request(scope, state.signer)
        else:  # WSGI
            meta = request.META
            if "pymesh.peer" in meta:  # by pymesh.wsgi.MeshMiddleware
                request.mesh_peer = _peer(meta["pymesh.peer"])
                return None
            inbound = wsgi_inbound_request(meta, state.signer, state.options.trust_unix_socket)
        verdict = mesh.inbound_policy().check(inbound)
        if not verdict.served:
            log.info(
                "refused %s %s from %s: %s (%d)",
                inbound.method,
                inbound.target.partition(b"?")[0].decode("latin-1"),
                inbound.peer or inbound.source_ip,
                verdict.reason,
                verdict.status,
            )
            response = _text(verdict.status or 403, verdict.body)
            if verdict.location:
                response["Location"] = verdict.location
            for name, value in verdict.response_headers:  # a CORS preflight answer
                response[name] = value
            return response
        if not _prepare(request, verdict, asgi=scope is not None):
            return _text(404, b"not found")
        request.mesh_peer = _peer(verdict.peer)
        request.mesh_response_headers = verdict.response_headers  # CORS, added to the response
        return None

    def __repr__(self) -> str:
        return f"pymesh_django.MeshMiddleware({process_mesh()!r})"


def _with_headers(response: Any, request: Any) -> Any:
    """Add the headers the inbound policy asked for (CORS) to the app's response; `vary` is
    added to, the others replace what the app set."""
    for name, value in getattr(request, "mesh_response_headers", ()):
        if name.lower() == "vary" and response.has_header("Vary"):
            response["Vary"] = f"{response['Vary']}, {value}"
        else:
            response[name] = value
    return response


def _prepare(request: Any, verdict: InboundVerdict, *, asgi: bool) -> bool:
    """Give `request` the cleaned headers and the normalized path; False when the normalized
    path left the WSGI mount point (SCRIPT_NAME) this app is served under."""
    assert verdict.path is not None
    meta = request.META
    mount = "" if asgi else meta.get("SCRIPT_NAME", "").rstrip("/")
    inner = served_environ(meta, verdict)
    full = verdict.path.asgi_path() if asgi else get_path_info(inner)
    path_info = full
    if mount:
        mount_text = mount.encode("latin-1").decode("utf-8", "replace")
        if full != mount_text and not full.startswith(mount_text + "/"):
            return False
        path_info = full[len(mount_text) :] or "/"
        inner["SCRIPT_NAME"] = meta["SCRIPT_NAME"]
        inner["PATH_INFO"] = inner["PATH_INFO"][len(mount) :] or "/"
    # Django's script prefix as it computed it (FORCE_SCRIPT_NAME, root_path, SCRIPT_NAME)
    prefix = request.path[: len(request.path) - len(request.path_info)]
    meta.clear()
    meta.update(inner)  # in place: under WSGI, request.environ is the same dict
    request.path_info = path_info
    request.path = prefix + path_info
    for name in _CACHED:
        request.__dict__.pop(name, None)
    return True
