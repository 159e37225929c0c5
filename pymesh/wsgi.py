"""`MeshMiddleware` for WSGI apps: the same inbound policy as `pymesh.asgi`, for Flask, Django
under WSGI, and any PEP 3333 app.

The decision is `pymesh.inbound.InboundPolicy.check`, shared with the ASGI side. The raw
request target comes from `RAW_URI` (gunicorn) or `REQUEST_URI` (uWSGI, mod_wsgi); servers that
give neither (wsgiref) only hand over the decoded `PATH_INFO`, which is re-encoded — a server
that keeps the raw target is safer, and `docs/authorization.md` says so. The caller's identity
comes from `X-Forwarded-Client-Cert` set by `pymesh-proxy`, trusted only with a valid HMAC
(`XfccSigner`) or on a Unix socket; the app finds it in `environ["pymesh.peer"]`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pymesh._sync.transport import SyncRecordedStream
from pymesh.asgi import peer_from_xfcc
from pymesh.inbound import InboundPolicy, InboundRequest, InboundVerdict, Transport
from pymesh.telemetry.context import CURRENT, collect
from pymesh.telemetry.hub import attach_span, detach_span, refusal_flag
from pymesh.xfcc import XfccSigner

if TYPE_CHECKING:
    from pymesh.mesh import Mesh
    from pymesh.telemetry.hub import CallRecord, MeshTelemetry

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

log = logging.getLogger("pymesh.inbound")

_SPECIAL = {"CONTENT_TYPE": b"content-type", "CONTENT_LENGTH": b"content-length"}


def _headers(environ: Environ) -> list[tuple[bytes, bytes]]:
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].lower().replace("_", "-").encode("latin-1")
        elif key in _SPECIAL:
            if not value:
                continue
            name = _SPECIAL[key]
        else:
            continue
        out.append((name, str(value).encode("latin-1")))
    return out


def _target(environ: Environ) -> bytes:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw).encode("latin-1")
    path = quote(
        environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/;=,@:!$&'()*+~"
    )
    query = environ.get("QUERY_STRING", "")
    return (path + ("?" + query if query else "")).encode("latin-1")


def inbound_request(
    environ: Environ, xfcc_signer: XfccSigner | None = None, unix_socket: bool = False
) -> InboundRequest:
    """The `InboundRequest` for a WSGI environ (or a Django `request.META`): the raw target,
    the headers, and the caller's identity from XFCC when the hop is authenticated (a valid
    HMAC from `xfcc_signer`, or `unix_socket`). Shared by `MeshMiddleware` and the framework
    integrations."""
    headers = _headers(environ)
    peer = peer_from_xfcc(headers, xfcc_signer, unix_socket)
    transport: Transport
    if peer is not None:
        transport = "mtls"
    else:
        transport = "tls" if environ.get("wsgi.url_scheme") == "https" else "plaintext"
    try:
        port = int(environ.get("SERVER_PORT") or 0)
    except ValueError:
        port = 0
    return InboundRequest(
        method=environ.get("REQUEST_METHOD", "GET"),
        target=_target(environ),
        headers=headers,
        port=port,
        transport=transport,
        peer=peer,
        source_ip=environ.get("REMOTE_ADDR", ""),
    )


def served_environ(environ: Environ, verdict: InboundVerdict) -> Environ:
    """The environ the app receives for a served `verdict`: the cleaned headers, the normalized
    path (`PATH_INFO`, with `SCRIPT_NAME` emptied: the whole path was normalized), the raw
    target as `RAW_URI`, and the caller's identity as `pymesh.peer`."""
    assert verdict.path is not None and verdict.headers is not None
    inner = {k: v for k, v in environ.items() if not (k.startswith("HTTP_") or k in _SPECIAL)}
    for name, value in verdict.headers.items:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in _SPECIAL:
            inner[key] = value.decode("latin-1")
        else:
            inner["HTTP_" + key] = value.decode("latin-1")
    inner["PATH_INFO"] = verdict.path.wsgi_path_info()
    inner["SCRIPT_NAME"] = ""
    inner["QUERY_STRING"] = verdict.path.query
    inner["RAW_URI"] = verdict.path.target
    inner["pymesh.peer"] = verdict.peer
    return inner


def adding_headers(
    start_response: StartResponse, extra: tuple[tuple[str, str], ...]
) -> StartResponse:
    """`start_response` with `extra` response headers (an `InboundVerdict.response_headers`,
    CORS): they replace the app's own values of those names, except `vary`, which is added."""
    owned = {n for n, _ in extra if n != "vary"}

    def start(status: str, headers: Any, *exc_info: Any) -> Any:
        kept = [(n, v) for n, v in headers if n.lower() not in owned]
        return start_response(status, kept + list(extra), *exc_info)

    return start


def start_record(
    tel: MeshTelemetry, request: InboundRequest, environ: Mapping[str, Any]
) -> CallRecord:
    """The telemetry record of a served request, started from its converted form and its
    WSGI-style environ (`HTTP_HOST`, `CONTENT_LENGTH`; Django's `request.META` too): trace
    context from the propagation headers, transport, request id, body size."""
    got = collect(request.headers)
    rec = tel.inbound(
        request.method,
        str(environ.get("HTTP_HOST", "")),
        request.target.partition(b"?")[0].decode("latin-1"),
        got,
    )
    rec.mtls = request.transport == "mtls"
    if got is not None:
        rec.request_id = got.get("x-request-id")
    length = environ.get("CONTENT_LENGTH")
    if length and str(length).isdigit():
        rec.bytes_in = int(length)
    return rec


class MeshMiddleware:
    """Apply the mesh's inbound policy to a WSGI app."""

    def __init__(
        self,
        app: WSGIApp,
        mesh: Mesh | None = None,
        *,
        policy: InboundPolicy | None = None,
        xfcc_signer: XfccSigner | None = None,
        unix_socket: bool = False,
    ) -> None:
        if mesh is None and policy is None:
            raise TypeError("MeshMiddleware needs a mesh or a policy")
        self.app = app
        self.mesh = mesh
        self._policy = policy
        self.xfcc_signer = xfcc_signer
        self.unix_socket = unix_socket

    def policy(self) -> InboundPolicy:
        """The inbound policy for the mesh's current snapshot."""
        if self.mesh is not None:
            return self.mesh.inbound_policy()
        assert self._policy is not None
        return self._policy

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one WSGI request."""
        tel = self.mesh.telemetry if self.mesh is not None else None
        if tel is not None:
            return self._recorded(tel, environ, start_response)
        request = inbound_request(environ, self.xfcc_signer, self.unix_socket)
        verdict = self.policy().check(request)
        if not verdict.served:
            return self._refuse(environ, start_response, request, verdict)
        if verdict.response_headers:
            start_response = adding_headers(start_response, verdict.response_headers)
        return self.app(served_environ(environ, verdict), start_response)

    def _recorded(
        self, tel: MeshTelemetry, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        """`__call__` with telemetry on: the trace context and deadline are current while the
        app runs (meshed clients called from the app, in this thread, continue them; hand work
        to other threads through `pymesh.telemetry.wrap_executor`); the record is finished when
        the server closes the response iterable."""
        request = inbound_request(environ, self.xfcc_signer, self.unix_socket)
        rec = start_record(tel, request, environ)
        verdict = self.policy().check(request)
        rec.peer = verdict.peer if verdict.served else request.peer
        if not verdict.served:
            rec.flags = refusal_flag(verdict)
            rec.reason = verdict.reason
            rec.bytes_out = len(verdict.body)
            try:
                body = self._refuse(environ, start_response, request, verdict)
            finally:
                rec.status = verdict.status
                tel.finish(rec)
            return body

        if verdict.response_headers:
            start_response = adding_headers(start_response, verdict.response_headers)

        def recording_start_response(status: str, headers: Any, *exc_info: Any) -> Any:
            rec.status = int(status[:3])
            return start_response(status, headers, *exc_info)

        ctx = rec.trace
        token = CURRENT.set(ctx)
        attached = attach_span(ctx)
        try:
            result = self.app(served_environ(environ, verdict), recording_start_response)
        except BaseException as exc:
            if rec.status is None:
                rec.status = 500
                rec.reason = f"the app raised {type(exc).__name__}: {exc}"
            tel.finish(rec)
            raise
        finally:
            detach_span(attached)
            CURRENT.reset(token)
        # the same byte counting and record finishing as a meshed sync response body
        return SyncRecordedStream(result, rec, tel)

    def _refuse(
        self,
        environ: Environ,
        start_response: StartResponse,
        request: InboundRequest,
        verdict: InboundVerdict,
    ) -> list[bytes]:
        if verdict.refused:
            log.info(
                "refused %s %s from %s: %s (%d)",
                environ.get("REQUEST_METHOD", ""),
                environ.get("PATH_INFO", ""),
                request.peer or request.source_ip,
                verdict.reason,
                verdict.status,
            )
        reply = [("Content-Type", "text/plain"), ("Content-Length", str(len(verdict.body)))]
        if verdict.location:
            reply.append(("Location", verdict.location))
        reply += verdict.response_headers
        start_response(f"{verdict.status} {_REASONS.get(verdict.status or 0, '')}", reply)
        return [verdict.body]

    def __repr__(self) -> str:
        return f"MeshMiddleware({self.app!r})"


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 307: "Temporary Redirect"}
