"""`MeshMiddleware`: the mesh's inbound policy for any ASGI app, on any server.

Pure ASGI (not Starlette's BaseHTTPMiddleware): it reads the request once, asks
`pymesh.inbound.InboundPolicy`, and either answers (400, 403 `RBAC: access denied`, 307) or
calls the app with the normalized `path` / `raw_path`, the cleaned headers, and the caller's
identity in `scope["extensions"]["pymesh"]["peer"]` (a `spiffe://` URI, or None).

Where the identity comes from: the ASGI TLS extension (`scope["extensions"]["tls"]`, which
`Mesh.serve` fills once per connection with the SPIFFE-checked peer as `pymesh.peer`); or,
behind `pymesh-proxy`, the `X-Forwarded-Client-Cert` header — trusted only over an
authenticated hop (a Unix socket, or a valid HMAC from `XfccSigner`), otherwise dropped.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from pymesh.errors import MeshError
from pymesh.identity import verify_peer
from pymesh.inbound import InboundPolicy, InboundRequest, InboundVerdict, Transport
from pymesh.telemetry.context import CURRENT, collect
from pymesh.telemetry.hub import attach_span, detach_span, refusal_flag
from pymesh.xfcc import MAC_HEADER, XFCC_HEADER, XfccError, XfccSigner, peer_uri

if TYPE_CHECKING:
    from pymesh.identity import WorkloadIdentity
    from pymesh.mesh import Mesh
    from pymesh.telemetry.hub import MeshTelemetry

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("pymesh.inbound")

_XFCC = XFCC_HEADER.encode()
_MAC = MAC_HEADER.encode()


def peer_from_xfcc(
    headers: list[tuple[bytes, bytes]], signer: XfccSigner | None, unix_socket: bool
) -> str | None:
    """The caller's identity from XFCC when the hop is authenticated, else None."""
    xfcc = mac = None
    for name, value in headers:
        if name == _XFCC:
            xfcc = value.decode("latin-1")
        elif name == _MAC:
            mac = value.decode("latin-1")
    if xfcc is None:
        return None
    if not unix_socket and (signer is None or not signer.verify(xfcc, mac)):
        return None
    try:
        return peer_uri(xfcc)
    except XfccError:
        return None


ChainVerifier = Callable[[tuple[str, ...]], "str | None"]
_UNSEEN = object()


class SpiffeChainVerifier:
    """The SPIFFE checks on a client certificate chain that another ASGI server put in the TLS
    extension (`client_cert_chain`, PEM, leaf first): the mesh's trust bundle, now. Results are
    kept per chain (bounded), so a connection's requests pay for it once."""

    def __init__(self, identity: WorkloadIdentity) -> None:
        self.identity = identity
        self._seen: dict[tuple[str, ...], str | None] = {}

    def __call__(self, chain: tuple[str, ...]) -> str | None:
        """The verified SPIFFE ID, or None when the chain fails the checks."""
        seen = self._seen.get(chain, _UNSEEN)  # None is a result too: a refused chain
        if seen is not _UNSEEN:
            return seen  # type: ignore[return-value]
        try:
            der = [ssl.PEM_cert_to_DER_cert(pem) for pem in chain]
            got: str | None = verify_peer(
                der, self.identity.bundle, now=time.time(), peer_role="client"
            ).uri
        except (MeshError, ValueError) as exc:
            log.warning("client certificate refused: %s", exc)
            got = None
        if len(self._seen) >= 1024:
            self._seen.clear()
        self._seen[chain] = got
        return got


def _transport_and_peer(
    scope: Scope, signer: XfccSigner | None, verify_chain: ChainVerifier | None = None
) -> tuple[Transport, str | None]:
    tls = scope.get("extensions", {}).get("tls")
    if tls is not None:
        peer = tls.get("pymesh.peer")
        chain = tls.get("client_cert_chain")
        if peer is None and chain:
            # another server's TLS extension: its TLS verified the chain (if it asked); the
            # SPIFFE rules are checked here, against the mesh's trust bundle
            peer = verify_chain(tuple(chain)) if verify_chain is not None else None
        return ("mtls", peer) if peer else ("tls", None)
    server = scope.get("server")
    # uvicorn reports a Unix socket as (path, None); a TCP server that omits its port (some
    # test transports do) must not pass for one, so the path must look like a path
    unix_socket = server is not None and server[1] is None and str(server[0] or "").startswith("/")
    peer = peer_from_xfcc(scope.get("headers", []), signer, unix_socket)
    if peer is not None:
        return "mtls", peer  # the proxy terminated mTLS and vouches for the caller
    return ("tls" if scope.get("scheme") in ("https", "wss") else "plaintext"), None


def inbound_request(
    scope: Scope,
    xfcc_signer: XfccSigner | None = None,
    verify_chain: ChainVerifier | None = None,
) -> InboundRequest:
    """The `InboundRequest` for an ASGI http/websocket scope: the raw target, the headers as
    received, and the transport and identity (ASGI TLS extension, or XFCC over an
    authenticated hop). Shared by `MeshMiddleware` and the framework integrations."""
    transport, peer = _transport_and_peer(scope, xfcc_signer, verify_chain)
    server = scope.get("server") or ("", None)
    client = scope.get("client") or ("", 0)
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope.get("query_string") or b""
    return InboundRequest(
        method=scope.get("method", "GET"),
        target=raw_path + b"?" + query if query else raw_path,
        headers=scope.get("headers", []),
        port=server[1] or 0,
        transport=transport,
        peer=peer,
        source_ip=client[0] or "",
        destination_ip=server[0] or "",
    )


def _encoded(extra: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in extra]


def adding_headers(send: Send, extra: tuple[tuple[str, str], ...]) -> Send:
    """`send` with `extra` response headers (an `InboundVerdict.response_headers`, CORS) put on
    the response start: they replace the app's own values of those names, except `vary`,
    which is added."""
    add = _encoded(extra)
    owned = {n for n, _ in add if n != b"vary"}

    async def adding_send(msg: MutableMapping[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            msg = dict(msg)
            kept = [h for h in msg.get("headers") or () if bytes(h[0]).lower() not in owned]
            msg["headers"] = kept + add
        await send(msg)

    return adding_send


async def _reply(send: Send, verdict: InboundVerdict) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(verdict.body))]
    if verdict.location:
        headers.append((b"location", verdict.location.encode("latin-1")))
    if verdict.response_headers:
        headers += _encoded(verdict.response_headers)
    await send({"type": "http.response.start", "status": verdict.status, "headers": headers})
    await send({"type": "http.response.body", "body": verdict.body})


class MeshMiddleware:
    """Apply the mesh's PeerAuthentication, header hygiene, path normalization and
    AuthorizationPolicy to an ASGI app. `Mesh.serve` adds it for you."""

    def __init__(
        self,
        app: ASGIApp,
        mesh: Mesh | None = None,
        *,
        policy: InboundPolicy | None = None,
        xfcc_signer: XfccSigner | None = None,
    ) -> None:
        if mesh is None and policy is None:
            raise TypeError("MeshMiddleware needs a mesh or a policy")
        self.app = app
        self.mesh = mesh
        self._policy = policy
        self.xfcc_signer = xfcc_signer
        identity = mesh.identity if mesh is not None else None
        # for servers other than Mesh.server that fill the TLS extension with the client chain
        self._verify_chain = SpiffeChainVerifier(identity) if identity is not None else None

    def policy(self) -> InboundPolicy:
        """The inbound policy for the mesh's current snapshot."""
        if self.mesh is not None:
            return self.mesh.inbound_policy()
        assert self._policy is not None
        return self._policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        tel = self.mesh.telemetry if self.mesh is not None else None
        if tel is not None and kind == "http":
            await self._recorded(tel, scope, receive, send)
            return
        request = inbound_request(scope, self.xfcc_signer, self._verify_chain)
        verdict = self.policy().check(request)
        if not verdict.served:
            if verdict.refused:
                log.info(
                    "refused %s %s from %s: %s (%d)",
                    request.method,
                    request.target.partition(b"?")[0].decode("latin-1"),
                    request.peer or request.source_ip,
                    verdict.reason,
                    verdict.status,
                )
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _reply(send, verdict)
            return
        assert verdict.path is not None and verdict.headers is not None
        inner = dict(scope)
        inner["path"] = verdict.path.asgi_path()
        inner["raw_path"] = verdict.path.raw_path
        inner["headers"] = verdict.headers.items
        extensions = dict(scope.get("extensions") or {})
        extensions["pymesh"] = {"peer": verdict.peer}
        inner["extensions"] = extensions
        if verdict.response_headers and kind == "http":
            send = adding_headers(send, verdict.response_headers)
        await self.app(inner, receive, send)

    async def _recorded(
        self, tel: MeshTelemetry, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """`__call__` with telemetry on: the request's trace context and deadline are current
        while the app runs (outbound meshed calls continue them), status and body bytes are
        read off `send`, and a refusal is recorded with its flag and reason."""
        request = inbound_request(scope, self.xfcc_signer, self._verify_chain)
        got = collect(request.headers)
        target = request.target.partition(b"?")[0].decode("latin-1")
        authority = ""
        for name, value in request.headers:
            if name == b"host":
                authority = value.decode("latin-1")
                break
        rec = tel.inbound(request.method, authority, target, got)
        rec.mtls = request.transport == "mtls"
        if got is not None:
            rec.request_id = got.get("x-request-id")
        verdict = self.policy().check(request)
        rec.peer = verdict.peer if verdict.served else request.peer
        if not verdict.served:
            if verdict.refused:
                log.info(
                    "refused %s %s from %s: %s (%d)",
                    request.method,
                    target,
                    request.peer or request.source_ip,
                    verdict.reason,
                    verdict.status,
                )
            rec.status = verdict.status
            rec.flags = refusal_flag(verdict)
            rec.reason = verdict.reason
            rec.bytes_out = len(verdict.body)
            try:
                await _reply(send, verdict)
            finally:
                tel.finish(rec)
            return
        assert verdict.path is not None and verdict.headers is not None
        inner = dict(scope)
        inner["path"] = verdict.path.asgi_path()
        inner["raw_path"] = verdict.path.raw_path
        inner["headers"] = verdict.headers.items
        extensions = dict(scope.get("extensions") or {})
        extensions["pymesh"] = {"peer": verdict.peer}
        inner["extensions"] = extensions
        if verdict.response_headers:
            send = adding_headers(send, verdict.response_headers)

        done = False  # the last body message was sent

        async def counting_receive() -> MutableMapping[str, Any]:
            msg = await receive()
            body = msg.get("body")
            if body:
                rec.bytes_in += len(body)
            elif msg["type"] == "http.disconnect" and not done:
                rec.flags = "DC"  # Envoy's downstream connection termination
                rec.reason = "the client disconnected before the response was complete"
            return msg

        async def recording_send(msg: MutableMapping[str, Any]) -> None:
            nonlocal done
            kind = msg["type"]
            if kind == "http.response.start":
                rec.status = msg["status"]
            elif kind == "http.response.body":
                rec.bytes_out += len(msg.get("body", b""))
                done = not msg.get("more_body", False)
            await send(msg)

        ctx = rec.trace
        token = CURRENT.set(ctx)
        attached = attach_span(ctx)
        try:
            await self.app(inner, counting_receive, recording_send)
        except BaseException as exc:
            if rec.status is None:
                rec.status = 500
                rec.reason = f"the app raised {type(exc).__name__}: {exc}"
            raise
        finally:
            detach_span(attached)
            CURRENT.reset(token)
            tel.finish(rec)

    def __repr__(self) -> str:
        return f"MeshMiddleware({self.app!r})"


def peer(scope: Scope) -> str | None:
    """The caller's verified identity (`spiffe://...`) as `MeshMiddleware` saw it, or None."""
    ext = scope.get("extensions") or {}
    got: str | None = (ext.get("pymesh") or {}).get("peer")
    return got
