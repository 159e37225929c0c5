"""The meshed httpx transport: the edge where an `httpx.Request` becomes a `Call`.

How this works: `AsyncMeshTransport` resolves the request's host against the current snapshot.
A host the mesh does not know passes through to a plain httpx transport (ALLOW_ANY). A known
host becomes one `Call`, which goes down the stack of `stack.py`; the endpoint tier's
sender sends the attempt to (endpoint address, port, raw target) — no `httpx.URL` rewriting.
The async client's sender is the lean HTTP/1.1 pool of `pymesh.http1` (asyncio Protocols and
httptools; the shim `async_lean_pool` makes it) unless `pool="httpcore"` is asked for; the sync
client's is `EndpointSender` over an httpcore pool whose network backend clamps every connect,
read and write timeout to the attempt's deadline (`pymesh._shim.DEADLINE`). Either way the body
stream handed back to httpx (`AsyncMeshResponseStream`) keeps the deadline while it is read, so
a route timeout fires while a body is still streaming, and it releases the endpoint's in-flight
count when closed.

The stack is rebuilt when the mesh holds a new snapshot; a call in flight keeps the stack it
started with. Async source; `pymesh/_sync/transport.py` is generated from it.
"""

from __future__ import annotations

import operator
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

from pymesh._async.stack import AsyncSender, RouterFilter, build_client_stack, egress_denied
from pymesh._httpx_errors import HttpxMeshTimeoutError, map_httpcore, to_httpx
from pymesh._shim import (
    DEADLINE,
    PEER_CHECK,
    AsyncBackground,
    PeerRejectedError,
    async_lean_pool,
)
from pymesh._tls import OutboundTls
from pymesh.call import MESH_HEADER_RAW, Call, Decision, Outcome
from pymesh.errors import CallError, MeshError
from pymesh.identity import refusal_from_ssl_error
from pymesh.policy.header_ops import apply_header_ops
from pymesh.policy.local import LocalReply
from pymesh.runtime import EndpointState
from pymesh.telemetry.context import PROPAGATED
from pymesh.telemetry.hub import CallRecord, MeshTelemetry

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

_INF = float("inf")
_LOWER_NAME = operator.itemgetter(1)  # of httpx's (raw name, lower name, value) header triples
# the request headers telemetry writes (`PROPAGATED`) or reads (x-request-id, for the record)
_NOTED = PROPAGATED | {b"x-request-id"}
DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
_monotonic = time.monotonic
_perf = time.perf_counter


def _clamp(timeout: float | None, exc: type[Exception]) -> float | None:
    """`timeout` shortened to what remains before the deadline of this context's attempt."""
    deadline = DEADLINE.get()
    if deadline == _INF:
        return timeout
    remaining = deadline - _monotonic()
    if remaining <= 0:
        raise exc("deadline exceeded")
    return remaining if timeout is None or remaining < timeout else timeout


class AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    """A network stream whose reads and writes never outlive the attempt's deadline."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read, with the timeout clamped to the deadline."""
        return await self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write, with the timeout clamped to the deadline."""
        await self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Upgrade to TLS within the deadline."""
        check = PEER_CHECK.get()
        try:
            tls = await self._stream.start_tls(
                ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout)
            )
        except httpcore.ConnectError as exc:
            cause = exc.__cause__ or exc.__context__
            refusal = (
                refusal_from_ssl_error(cause, peer_role="server")
                if check is not None and isinstance(cause, ssl.SSLError)
                else None
            )
            if refusal is not None:  # OpenSSL refused the peer: say why, as the SPIFFE check does
                raise PeerRejectedError(str(refusal)) from None
            raise
        if check is not None:
            try:
                conn = tls.get_extra_info("ssl_object")
                if not isinstance(conn, ssl.SSLObject | ssl.SSLSocket):
                    conn = tls.get_extra_info("socket")  # httpcore's sync stream: the SSLSocket
                check(conn)
            except MeshError as exc:
                await tls.aclose()
                raise PeerRejectedError(str(exc)) from None
        return AsyncDeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        """Pass through (httpcore asks for `is_readable` to spot dead keep-alive connections)."""
        return self._stream.get_extra_info(info)


class AsyncDeadlineBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, with connects clamped and streams wrapped."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect within the deadline."""
        stream = await self._inner.connect_tcp(
            host,
            port,
            _clamp(timeout, httpcore.ConnectTimeout),
            local_address=local_address,
            socket_options=socket_options,
        )
        return AsyncDeadlineStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to a Unix socket within the deadline."""
        stream = await self._inner.connect_unix_socket(
            path, _clamp(timeout, httpcore.ConnectTimeout), socket_options=socket_options
        )
        return AsyncDeadlineStream(stream)

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore uses it between connect retries)."""
        await self._inner.sleep(seconds)


class AsyncMeshResponseStream(httpx.AsyncByteStream):
    """The body of a meshed response: read under the attempt's deadline, errors mapped to
    httpx's (a deadline is a `pymesh.MeshTimeoutError`), the endpoint released on close. With
    telemetry on, the transport hands the final attempt's body the call's record (`record`, or
    the unsampled `Call` itself, `lean`) and its `telemetry`: the body counts the bytes read
    and has the record finished on close — no second wrapper."""

    def __init__(self, stream: Any, call: Call, endpoint: EndpointState) -> None:
        self._stream = stream
        self._call = call
        self._endpoint: EndpointState | None = endpoint
        self.received = 0  # body bytes read so far
        # telemetry on: the call's record — a `CallRecord`, or for an unsampled call the
        # `Call` itself (`lean`) — which its telemetry finishes on close
        self.record: CallRecord | None = None
        self.lean: Call | None = None
        self.telemetry: MeshTelemetry | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call = self._call
        deadline = call.attempt_deadline
        iterator = self._stream.__aiter__()
        while True:
            token = DEADLINE.set(deadline)
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except httpcore.TimeoutException as exc:
                if _monotonic() >= deadline - 0.002:
                    raise self._timeout(exc) from exc
                raise map_httpcore(exc, call.native) from exc
            except Exception as exc:
                raise map_httpcore(exc, call.native) from exc
            finally:
                DEADLINE.reset(token)
            self.received += len(chunk)
            yield chunk

    def _timeout(self, exc: Exception) -> Exception:
        call = self._call
        d = call.decision
        d.add_flag("UT")
        route = call.route
        limit = (
            f"perTryTimeout {route.retry.per_try_timeout:g}s"
            if route.retry.per_try_timeout and call.attempt_deadline < call.deadline
            else f"timeout {route.timeout:g}s"
        )
        d.reason = (
            f"{d.service}: timed out while reading the response body ({limit}; {route.name}) "
            f"from {call.endpoint.label}"
        )
        out = HttpxMeshTimeoutError(d.reason, decision=d)
        out._request = call.native
        return out

    async def aclose(self) -> None:
        """Close the body, release the endpoint's in-flight count and finish the call's
        record (each once)."""
        ep = self._endpoint
        if ep is not None:
            self._endpoint = None
            ep.release()
        try:
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()
        finally:
            tel = self.telemetry
            if tel is not None:
                self.telemetry = None
                if self.lean is not None:
                    tel.finish_call(self.lean, self.received)
                elif self.record is not None:
                    tel.finish_body(self.record, self.received)


class AsyncRecordedStream(httpx.AsyncByteStream):
    """A meshed response body with telemetry on: counts the bytes read and finishes the
    call's record when closed (once)."""

    def __init__(self, stream: Any, rec: CallRecord, tel: MeshTelemetry) -> None:
        self._stream = stream
        self._rec: CallRecord | None = rec
        self._tel = tel

    async def __aiter__(self) -> AsyncIterator[bytes]:
        rec = self._rec
        async for chunk in self._stream:
            if rec is not None:
                rec.bytes_out += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        """Close the body and finish the record."""
        try:
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()
        finally:
            rec = self._rec
            if rec is not None:
                self._rec = None
                self._tel.finish(rec)


class AsyncEndpointSender:
    """The native send: one httpcore request to the attempt's endpoint, in plaintext or over
    the TLS that `OutboundTls` plans (mesh mTLS: the workload's current context for new
    connections, the peer's SPIFFE ID checked right after the handshake)."""

    def __init__(
        self,
        pool: httpcore.AsyncConnectionPool,
        tls: OutboundTls | None = None,
        make_pool: Callable[[], httpcore.AsyncConnectionPool] | None = None,
    ) -> None:
        self._pool = pool
        self._tls = tls
        self._make_pool = make_pool
        # one pool per TLS mode (httpcore takes its context when it opens a connection, so
        # setting the current one before each request makes rotation reach new connections)
        self._tls_pools: dict[str, httpcore.AsyncConnectionPool] = {}

    async def send(self, call: Call) -> httpcore.Response:
        """Send `call` to `call.endpoint` under the attempt's deadline."""
        ep = call.endpoint
        request: httpx.Request = call.native
        # What goes upstream is `call.send_target` / `call.send_headers` (None: the request's
        # own headers): the route tier puts VirtualService rewrites and header operations there.
        headers = call.upstream_headers(_monotonic())
        plan = self._tls.plan(call.cluster.spec, ep.spec) if self._tls is not None else None
        pool = self._pool
        scheme = b"http"
        extensions = request.extensions
        settings = call.cluster.spec.connection_pool
        if settings is not None and settings.connect_timeout:
            # DestinationRule connectionPool.tcp.connectTimeout bounds httpcore's connect too
            timeouts = dict(extensions.get("timeout") or {})
            current = timeouts.get("connect")
            if current is None or settings.connect_timeout < current:
                timeouts["connect"] = settings.connect_timeout
            extensions = {**extensions, "timeout": timeouts}
        if plan is not None:
            pool = self._pool_for(plan.mode)
            pool._ssl_context = plan.context  # used for the connections it opens from now on
            scheme = b"https"
            if plan.server_hostname:
                extensions = {**extensions, "sni_hostname": plan.server_hostname}
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=scheme, host=ep.address, port=ep.port, target=call.send_target),
            headers=headers,
            content=request.stream,
            extensions=extensions,
        )
        token = DEADLINE.set(call.attempt_deadline)
        check = PEER_CHECK.set(plan.check if plan is not None else None)
        try:
            response = await pool.handle_async_request(core)
        finally:
            PEER_CHECK.reset(check)
            DEADLINE.reset(token)
        response.stream = AsyncMeshResponseStream(response.stream, call, ep)
        return response

    def _pool_for(self, mode: str) -> httpcore.AsyncConnectionPool:
        pool = self._tls_pools.get(mode)
        if pool is None:
            assert self._make_pool is not None
            pool = self._tls_pools[mode] = self._make_pool()
        return pool

    async def aclose(self) -> None:
        """Close the TLS pools (the plaintext pool belongs to the transport)."""
        for pool in self._tls_pools.values():
            await pool.aclose()


class AsyncTlsDispatch:
    """Sends plaintext attempts through `plain` and TLS attempts through `tls`."""

    def __init__(self, plain: AsyncSender, tls: AsyncEndpointSender, plans: OutboundTls) -> None:
        self._plain = plain
        self._tls = tls
        self._plans = plans

    async def send(self, call: Call) -> Any:
        """Send one attempt by the sender its TLS plan needs."""
        if self._plans.plan(call.cluster.spec, call.endpoint.spec) is None:
            return await self._plain.send(call)
        return await self._tls.send(call)


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    """An httpx transport that routes, balances, retries, times out and ejects by the mesh's
    Istio configuration. Use it through `Mesh.async_http_client()` or pass it to
    `httpx.AsyncClient(transport=...)` yourself.

    `pool` picks the connection pool to mesh endpoints: "auto" (the async client's lean
    HTTP/1.1 pool, httpcore's for the sync client), "lean", or "httpcore"; `limits` sizes it
    (per endpoint for the lean pool)."""

    def __init__(
        self,
        mesh: Mesh,
        *,
        limits: httpx.Limits = DEFAULT_LIMITS,
        passthrough: httpx.AsyncBaseTransport | None = None,
        pool: str = "auto",
    ) -> None:
        self._mesh = mesh
        self._lean = async_lean_pool(pool, limits)
        self._pool: httpcore.AsyncConnectionPool | None = None
        self._sender: AsyncSender

        def make_pool() -> httpcore.AsyncConnectionPool:
            return httpcore.AsyncConnectionPool(
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                network_backend=AsyncDeadlineBackend(),
            )

        self._pool = make_pool()
        self._tls_sender = AsyncEndpointSender(self._pool, mesh.outbound_tls, make_pool)
        if self._lean is not None:
            # the lean pool speaks plaintext HTTP/1.1; an attempt that needs TLS (mesh mTLS, a
            # DestinationRule `tls`) goes through httpcore's pool — never in plaintext
            self._sender = AsyncTlsDispatch(self._lean, self._tls_sender, mesh.outbound_tls)
        else:
            self._sender = self._tls_sender
        # made on first use: httpx's transport loads the system CA bundle (~20 ms) even for
        # clients that only ever call mesh services
        self._passthrough = passthrough
        self._limits = limits
        self._snapshot: Any = None
        self._stack: RouterFilter | None = None
        self._background = AsyncBackground()  # this client's mirrors in flight

    def _current_stack(self) -> RouterFilter:
        runtime = self._mesh.runtime
        snapshot = runtime.snapshot
        stack = self._stack
        if stack is None or snapshot is not self._snapshot:
            stack = build_client_stack(snapshot, runtime, self._sender, self._background)
            self._stack = stack
            self._snapshot = snapshot
        return stack

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Serve one request through the mesh (or pass it through when the host is unknown)."""
        stack = self._current_stack()
        snapshot = stack.snapshot
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        host = snapshot.resolve(url.host)
        egress = snapshot.egress
        if host is None or (egress is not None and not egress.allows(host, port)):
            # not a mesh service this workload may call (Sidecar egress): refused under
            # REGISTRY_ONLY, passed through to the network under ALLOW_ANY (the default)
            if egress is not None and egress.registry_only:
                raise to_httpx(egress_denied(snapshot, url.host, host, port), request)
            passthrough = self._passthrough
            if passthrough is None:
                passthrough = self._passthrough = httpx.AsyncHTTPTransport(limits=self._limits)
            tel = self._mesh.telemetry
            if tel is not None:
                return await self._passed_recorded(tel, passthrough, request)
            return await passthrough.handle_async_request(request)
        tel = self._mesh.telemetry
        if tel is not None:
            return await self._recorded(tel, stack, request, host, port)
        call = Call(
            direction="outbound",
            protocol="http",
            scheme=url.scheme,
            host=host,
            port=port,
            authority=request.headers.get("host", ""),
            method=request.method,
            target=url.raw_path,
            headers=request.headers,
            native=request,
            replayable=isinstance(request.stream, httpx.ByteStream),
            decision=Decision(snapshot.version, host),
        )
        stats = stack.runtime.edge_stats
        start = _monotonic()
        try:
            outcome = await stack.handle(call)
        except CallError as exc:
            stats.record(host, True, _monotonic() - start)
            raise to_httpx(exc, request) from exc.__cause__
        stats.record(host, (outcome.status or 0) >= 500, _monotonic() - start)
        return self._response(call, outcome)

    async def _recorded(
        self,
        tel: MeshTelemetry,
        stack: RouterFilter,
        request: httpx.Request,
        host: str,
        port: int,
    ) -> httpx.Response:
        """`handle_async_request` with telemetry on: the trace context, the remaining deadline
        and the peer metadata go out as headers; the record is finished when the call fails,
        or when the response body is closed (bytes counted as it is read). An unsampled call
        takes the lean path (`MeshTelemetry.start_lean`): its `Call` is its record."""
        url = request.url
        headers = request.headers
        decision = Decision(stack.snapshot.version, host)
        call = Call(
            direction="outbound",
            protocol="http",
            scheme=url.scheme,
            host=host,
            port=port,
            authority=headers.get("host", ""),
            method=request.method,
            target=url.raw_path,
            headers=headers,
            native=request,
            replayable=isinstance(request.stream, httpx.ByteStream),
            decision=decision,
        )
        # The trace context goes out with each attempt, after the route's header operations,
        # with the workload metadata and the remaining deadline (`Call.upstream_headers`): raw
        # pairs, never httpx's `Headers.__setitem__`, which costs more than the rest of an
        # unsampled call's telemetry.
        call.mesh_metadata = tel.peer_metadata
        # A request with none of the headers telemetry writes or reads (the usual case;
        # `_list` is httpx's (raw name, lower name, value) list, checked in C) and unsampled
        # takes the lean path: its `Call` carries its trace.
        items = headers._list
        plain = _NOTED.isdisjoint(map(_LOWER_NAME, items))
        rec: CallRecord | None = None
        if not (plain and tel.start_lean(call)):
            rec = tel.outbound(request.method, call.authority, call.path)
            rec.decision = decision
            if not plain:  # (a plain request has no x-request-id)
                rec.request_id = headers.get("x-request-id")
            ctx = rec.trace
            assert ctx is not None
            call.deadline = call.attempt_deadline = ctx.deadline
            pairs = call.trace_headers = tel.outbound_pairs(rec)
            if not plain:  # the caller's own copies of the headers written here are dropped
                names = {name for name, _ in pairs}
                names.add(MESH_HEADER_RAW)
                call.send_headers = [(n, v) for n, low, v in items if low not in names]
        stream = request.stream
        if type(stream) is httpx.ByteStream:
            bytes_in = len(stream._stream)  # the buffered body (httpx's attribute)
        else:
            length = headers.get("content-length")
            bytes_in = int(length) if length is not None and length.isdigit() else 0
        stats = stack.runtime.edge_stats
        start = _monotonic()
        try:
            outcome = await stack.handle(call)
        except CallError as exc:
            stats.record(host, True, _monotonic() - start)
            tel.finish_failed(rec, call, bytes_in, "")
            raise to_httpx(exc, request) from exc.__cause__
        except BaseException:
            tel.finish_failed(rec, call, bytes_in, "cancelled or failed in the client")
            raise
        stats.record(host, (outcome.status or 0) >= 500, _monotonic() - start)
        if outcome.endpoint is not None:
            call.endpoint = outcome.endpoint
        response = self._response(call, outcome)
        body = response.stream
        if rec is None:
            call.status = response.status_code
            call.bytes_in = bytes_in
            if isinstance(body, AsyncMeshResponseStream):  # the sender's: it finishes the call
                body.lean = call
                body.telemetry = tel
                return response
            rec = tel.record_of(call)  # a local reply: no lean record
        else:
            rec.status = response.status_code
            rec.bytes_in = bytes_in
        rec.endpoint = call.endpoint
        if isinstance(body, AsyncMeshResponseStream):
            body.record = rec
            body.telemetry = tel
        elif type(outcome.native) is LocalReply:
            rec.bytes_out = len(outcome.native.body)
            tel.finish(rec)
        else:
            response.stream = AsyncRecordedStream(body, rec, tel)
        return response

    async def _passed_recorded(
        self, tel: MeshTelemetry, passthrough: httpx.AsyncBaseTransport, request: httpx.Request
    ) -> httpx.Response:
        """A call to a host outside the mesh with telemetry on: the trace context goes along
        (as OpenTelemetry's httpx instrumentation would send it; no deadline and no workload
        metadata leave the mesh), and the call is counted as Istio counts PassthroughCluster
        traffic."""
        headers = request.headers
        rec = tel.outbound(request.method, headers.get("host", ""), request.url.path)
        rec.request_id = headers.get("x-request-id")
        tel.outbound_headers(rec, headers.__setitem__)
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            rec.bytes_in = int(length)
        try:
            response = await passthrough.handle_async_request(request)
        except BaseException as exc:
            rec.flags = "UF" if isinstance(exc, httpx.TransportError) else ""
            rec.reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            tel.finish(rec)
            raise
        rec.status = response.status_code
        response.stream = AsyncRecordedStream(response.stream, rec, tel)
        return response

    def _response(self, call: Call, outcome: Outcome) -> httpx.Response:
        """The httpx response for a stack outcome (header operations applied)."""
        response = outcome.native
        ops = call.response_ops  # VirtualService `headers.response`, applied here
        if type(response) is LocalReply:  # redirect, directResponse, fault abort: no upstream
            return httpx.Response(
                status_code=response.status,
                headers=apply_header_ops(response.headers, ops) if ops else response.headers,
                content=response.body,
                extensions={"pymesh.decision": outcome.decision},
            )
        headers = apply_header_ops(response.headers, ops) if ops else response.headers
        if call.set_cookie is not None:  # consistent hashing made the cookie up (as Envoy)
            headers = [*headers, (b"set-cookie", call.set_cookie.encode("latin-1"))]
        return httpx.Response(
            status_code=response.status,
            headers=headers,
            stream=response.stream,
            extensions={**response.extensions, "pymesh.decision": outcome.decision},
        )

    async def aclose(self) -> None:
        """Close pooled connections, once the mirrors in flight are done (or after a grace
        of `pymesh._shim.BACKGROUND_GRACE` s, cut off)."""
        await self._background.aclose()
        if self._lean is not None:
            await self._lean.aclose()
        if self._pool is not None:
            await self._pool.aclose()
        await self._tls_sender.aclose()
        if self._passthrough is not None:
            await self._passthrough.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mesh={self._mesh!r})"
