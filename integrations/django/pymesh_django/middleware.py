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

4. Telemetry, when the mesh has it on and this middleware decided the request (step 3; an
   outer pymesh middleware records the requests it decided itself): the same record as
   `pymesh.asgi` / `pymesh.wsgi` make — a server span, Istio's metrics with
   reporter="destination", the access-log line, a refusal's flag and reason. While the view
   runs, the request's trace context and deadline are current (`pymesh.telemetry.CURRENT`,
   and the server span is OpenTelemetry's current span), so the meshed clients it calls
   continue the trace: a sync view under ASGI too, as Django's `sync_to_async` copies the
   context to the thread. The record is finished with the response, or, for a streamed body,
   when the server has sent it and closed the response — or, when a middleware above this one
   answered with a response of its own, when Django drops the streamed one (at once, or at
   the next garbage collection). One implementation (`decide`, `_Recording`) serves the sync
   and the async path.

Put it FIRST in `MIDDLEWARE`: the middleware above it see the request before the policy does,
and their cached reads of the path, headers or cookies are dropped when the request changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.handlers.wsgi import get_path_info  # type: ignore[import-untyped]
from django.http import HttpResponse  # type: ignore[import-untyped]

from pymesh.asgi import inbound_request as asgi_inbound_request
from pymesh.identity import SpiffeId
from pymesh.inbound import InboundRequest, InboundVerdict
from pymesh.mesh import Mesh
from pymesh.telemetry.context import CURRENT
from pymesh.telemetry.hub import CallRecord, MeshTelemetry, attach_span, detach_span, refusal_flag
from pymesh.wsgi import inbound_request as wsgi_inbound_request
from pymesh.wsgi import served_environ, start_record
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
        refusal, recording = self.decide(request, mesh, state)
        if refusal is not None:
            return refusal
        if recording is None:
            return _with_headers(self.get_response(request), request)
        with recording:
            response = self.get_response(request)
        return recording.respond(_with_headers(response, request))

    async def __acall__(self, request: Any) -> Any:
        """Serve one request under ASGI."""
        state = process_mesh()
        mesh = state.ready() or await state.await_ready()
        if mesh is None:
            return _text(503, _NOT_READY)
        refusal, recording = self.decide(request, mesh, state)
        if refusal is not None:
            return refusal
        pending: Awaitable[Any] = self.get_response(request)
        if recording is None:
            return _with_headers(await pending, request)
        with recording:
            response = await pending
        return recording.respond(_with_headers(response, request))

    def decide(self, request: Any, mesh: Mesh, state: ProcessMesh) -> tuple[Any, _Recording | None]:
        """Decide `request`: `(response, None)` when it is refused (recorded, with telemetry
        on), else `(None, recording)` after preparing it for the app (`request.mesh_peer`,
        cleaned headers, normalized path). `recording` is None when telemetry is off or an
        outer pymesh middleware decided (and records) the request; otherwise enter it around
        the app and hand it the response (`_Recording.respond`)."""
        scope = getattr(request, "scope", None)
        if scope is not None:  # ASGI
            decided = (scope.get("extensions") or {}).get("pymesh")
            if decided is not None:  # by pymesh.asgi.MeshMiddleware (Mesh.server)
                request.mesh_peer = _peer(decided.get("peer"))
                return None, None
            inbound = asgi_inbound_request(scope, state.signer)
        else:  # WSGI
            meta = request.META
            if "pymesh.peer" in meta:  # by pymesh.wsgi.MeshMiddleware
                request.mesh_peer = _peer(meta["pymesh.peer"])
                return None, None
            inbound = wsgi_inbound_request(meta, state.signer, state.options.trust_unix_socket)
        tel = mesh.telemetry
        recording = _Recording.start(tel, inbound, request.META) if tel is not None else None
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
            if recording is not None:
                recording.refused(response, inbound.peer, refusal_flag(verdict), verdict.reason)
            return response, None
        if not _prepare(request, verdict, asgi=scope is not None):
            response = _text(404, b"not found")
            if recording is not None:
                reason = "the normalized path left the mount point"
                recording.refused(response, verdict.peer, "", reason)
            return response, None
        request.mesh_peer = _peer(verdict.peer)
        request.mesh_response_headers = verdict.response_headers  # CORS, added to the response
        if recording is not None:
            recording.rec.peer = verdict.peer
        return None, recording

    def __repr__(self) -> str:
        return f"pymesh_django.MeshMiddleware({process_mesh()!r})"


def _content_length(response: Any) -> int:
    value = response.get("Content-Length", "")
    return int(value) if value.isdigit() else 0


class _Recording:
    """The telemetry of one request this middleware decided and serves: entered around the
    app (the trace context and deadline current, the server span OpenTelemetry's current
    span), then given the response, which finishes the record — at once for a body in memory
    or a file (its Content-Length), else when the streamed body has been sent (exhausted or
    closed by the server, which Django's `response.close()` does)."""

    __slots__ = ("_attached", "_token", "rec", "tel")

    def __init__(self, tel: MeshTelemetry, rec: CallRecord) -> None:
        self.tel = tel
        self.rec = rec
        self._token: Any = None
        self._attached: object | None = None

    @classmethod
    def start(cls, tel: MeshTelemetry, inbound: InboundRequest, meta: Any) -> _Recording:
        """Start the record of a request this middleware decides (before the policy runs, so
        its span and duration cover the decision), from the propagation headers it carries
        (`meta`: `request.META`, for the Host and Content-Length)."""
        return cls(tel, start_record(tel, inbound, meta))

    def refused(self, response: Any, peer: str | None, flags: str, reason: str) -> None:
        """The middleware answered `response` itself: finish the record with it."""
        rec = self.rec
        rec.peer = peer
        rec.status = response.status_code
        rec.flags = flags
        rec.reason = reason
        rec.bytes_out = len(response.content)
        self.tel.finish(rec)

    def __enter__(self) -> _Recording:
        ctx = self.rec.trace
        self._token = CURRENT.set(ctx)
        self._attached = attach_span(ctx)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        detach_span(self._attached)
        CURRENT.reset(self._token)
        if exc is None:
            return
        rec = self.rec  # Django answers a view's exception itself: this is rarer than that
        if isinstance(exc, asyncio.CancelledError):
            rec.flags = "DC"  # the client went away (Django's ASGI handler cancels the view)
            rec.reason = "the client disconnected before the response"
        elif rec.status is None:
            rec.status = 500
            rec.reason = f"the app raised {type(exc).__name__}: {exc}"
        self.tel.finish(rec)

    def respond(self, response: Any) -> Any:
        """Record `response` (status, bytes) and finish the record, now or once it is sent."""
        rec = self.rec
        rec.status = response.status_code
        if not response.streaming:
            rec.bytes_out = len(response.content)
        elif getattr(response, "file_to_stream", None) is not None:
            # a FileResponse: left alone so the server may send the file itself (sendfile)
            rec.bytes_out = _content_length(response)
        else:
            counted = _AsyncCounted if response.is_async else _Counted
            # the setter registers the wrapper's close() with response.close()
            response.streaming_content = counted(response.streaming_content, rec, self.tel)
            return response
        self.tel.finish(rec)
        return response


class _Counting:
    """What the two streamed-body wrappers share: the record, finished once."""

    def __init__(self, rec: CallRecord, tel: MeshTelemetry) -> None:
        self._rec: CallRecord | None = rec
        self._tel = tel

    def _count(self, chunk: bytes) -> bytes:
        if self._rec is not None:
            self._rec.bytes_out += len(chunk)
        return chunk

    def close(self) -> None:
        """Finish the record (once): the body was sent, or the server gave up on it."""
        rec, self._rec = self._rec, None
        if rec is not None:
            self._tel.finish(rec)

    def __del__(self) -> None:
        # Dropped unclosed: a middleware above this one answered with another response, so
        # Django never closed this body. The request is still counted and explained.
        rec = self._rec
        if rec is not None:
            rec.reason = rec.reason or "the streamed response was replaced before it was sent"
            self.close()


class _Counted(_Counting):
    """A streamed response body (sync iterator): counts its bytes, finishes the record when
    exhausted or closed."""

    def __init__(self, inner: Any, rec: CallRecord, tel: MeshTelemetry) -> None:
        super().__init__(rec, tel)
        self._inner: Iterator[bytes] = iter(inner)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return self._count(next(self._inner))
        except StopIteration:
            self.close()
            raise


class _AsyncCounted(_Counting):
    """A streamed response body (async iterator): as `_Counted`. It has no `__iter__`, so
    Django serves it as the async body it is."""

    def __init__(self, inner: Any, rec: CallRecord, tel: MeshTelemetry) -> None:
        super().__init__(rec, tel)
        self._inner: AsyncIterator[bytes] = aiter(inner)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            return self._count(await anext(self._inner))
        except StopAsyncIteration:
            self.close()
            raise


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
