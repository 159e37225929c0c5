"""The HTTP/JSON API (FastAPI): resources, registry, watch, status. `docs/control-plane.md`
describes every route; `/openapi.json` is the machine-readable spec.

Errors are JSON objects `{"error": <code>, "message": <text>, ...}` with a fitting status: 400
(malformed request), 401 (no or unknown token), 403 (not allowed for this principal), 404, 409,
412 (If-Match), 413 (body too large), 422 (invalid configuration, with `findings`; or an invalid
request, with `detail`), 503 (not ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException

from pymesh.identity import CsrRejectedError, IdentityError, SpiffeId
from pymesh_controlplane import __version__
from pymesh_controlplane.agents import EdgeSample
from pymesh_controlplane.auth import Principal, authenticate
from pymesh_controlplane.hub import Subscription
from pymesh_controlplane.registry import NotRegisteredError, WorkloadPort, WorkloadSpec
from pymesh_controlplane.resources import (
    InvalidConfigError,
    NotFoundError,
    ResourceError,
    StoredResource,
    resolve_kind,
)
from pymesh_controlplane.store import StoreError
from pymesh_controlplane.tls import svid_principal

if TYPE_CHECKING:
    from pymesh_controlplane.server import ControlPlane

__all__ = ["BodyLimitMiddleware", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AGENT_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_LABELS = re.compile(r"^\s*([^=,\s]+)\s*=\s*([^=,\s]*)\s*$")


class ApiError(Exception):
    """An error with an HTTP status and a JSON body."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class PortIn(_Model):
    """A port the workload listens on."""

    name: str = Field(min_length=1, max_length=63, description="Port name (`http`, `grpc`)")
    port: int = Field(ge=1, le=65535, description="Where the workload listens (target port)")
    service_port: int | None = Field(
        default=None, ge=1, le=65535, description="What callers dial; default: `port`"
    )
    protocol: str = Field(default="HTTP", max_length=32)


class RegisterIn(_Model):
    """A registration."""

    agent: str = Field(pattern=AGENT_ID, description="The agent's own id (one per process)")
    service: str = Field(pattern=DNS_LABEL, max_length=63)
    namespace: str = Field(default="default", pattern=DNS_LABEL, max_length=63)
    service_account: str = Field(default="default", min_length=1, max_length=253)
    address: str = Field(min_length=1, max_length=253)
    ports: list[PortIn] = Field(min_length=1, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    locality: str = Field(default="", max_length=253)
    weight: int = Field(default=1, ge=1, le=1_000_000)
    network: str = Field(default="", max_length=253)
    ttl_seconds: float | None = Field(default=None, gt=0, le=300)


class RegisterOut(_Model):
    """The answer to a registration: heartbeat every `heartbeatSeconds` or lose the lease
    after `ttlSeconds`."""

    workload: str
    agent: str
    ttl_seconds: float
    heartbeat_seconds: float
    revision: int
    created: bool


class EdgeIn(_Model):
    """One destination's counters, cumulative since the agent started."""

    destination: str = Field(min_length=1, max_length=512)
    requests: int = Field(ge=0)
    errors: int = Field(default=0, ge=0)
    latency_ms_sum: float = Field(default=0.0, ge=0)
    latency_ms_p50: float | None = Field(default=None, ge=0)
    latency_ms_p99: float | None = Field(default=None, ge=0)


class HeartbeatIn(_Model):
    """A heartbeat."""

    agent: str = Field(pattern=AGENT_ID)
    stats: list[EdgeIn] = Field(default_factory=list, max_length=1000)
    # the agent's current certificate's notAfter (UNIX time), for `pymeshctl status`
    certificate_not_after: float | None = Field(default=None, ge=0, le=2**40)


class HeartbeatOut(_Model):
    """The lease was renewed."""

    ttl_seconds: float
    heartbeat_seconds: float


class TokenIn(_Model):
    """A join token request: the identity it grants, and how long it is valid."""

    namespace: str = Field(default="default", pattern=DNS_LABEL, max_length=63)
    service_account: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    ttl_seconds: float | None = Field(
        default=3600.0, gt=0, le=366 * 86400, description="null: never expires"
    )


class CsrIn(_Model):
    """A certificate signing request (PEM). The identity comes from the caller's token, never
    from the CSR; only the admin names one (`namespace`, `serviceAccount`)."""

    csr: str = Field(min_length=1, max_length=16384)
    namespace: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    service_account: str | None = Field(default=None, min_length=1, max_length=253)


class AckIn(_Model):
    """An ACK (`error` null) or NACK of the snapshot with `revision` and `digest`."""

    revision: int = Field(ge=0)
    digest: str = Field(default="", max_length=128)
    error: str | None = Field(default=None, max_length=16384)


_YAML_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One or more Istio resources: YAML (multi-document, `---`) or JSON",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


def parse_labels(values: list[str]) -> dict[str, str]:
    """`k=v,k2=v2` (one or several query values) → a dict; ApiError 400 when malformed."""
    out: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            m = _LABELS.match(part)
            if m is None:
                raise ApiError(400, "bad_request", f"labels must be key=value, got {part!r}")
            out[m.group(1)] = m.group(2)
    return out


class BodyLimitMiddleware:
    """Refuses request bodies larger than `limit` bytes with 413 before the app sees them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        # chunked: read it all (up to the limit), then replay it to the app
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        data = b"".join(chunks)
        done = False

        async def replay() -> Message:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = _error(
            413, "payload_too_large", f"the request body is larger than {self.limit} bytes"
        )
        resp.headers["connection"] = "close"
        await resp(scope, receive, send)


class _WatchStream(Response):
    """The NDJSON watch stream: first line at once, then snapshots and pings until the client
    goes away or the server shuts down."""

    media_type = "application/x-ndjson"

    def __init__(
        self, cp: ControlPlane, sub: Subscription, first: bytes, encoding: str = ""
    ) -> None:
        super().__init__(media_type=self.media_type)
        self.cp = cp
        self.sub = sub
        self.first = first
        self.encoding = encoding

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, sub = self.cp.hub, self.sub
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/x-ndjson"),
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )

            async def write() -> None:
                await send({"type": "http.response.body", "body": self.first, "more_body": True})
                while True:
                    try:
                        snap = await sub.next(hub.ping_interval)
                    except hub.Closed:
                        return
                    data = (
                        snap.message_for(self.encoding) if snap is not None else hub.ping_message()
                    )
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    if snap is not None:
                        self.cp.agents.sent(sub.agent, snap.revision, snap.digest)

            async def disconnected() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass

            writer = asyncio.ensure_future(write())
            watcher = asyncio.ensure_future(disconnected())
            try:
                await asyncio.wait([writer, watcher], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (writer, watcher):
                    t.cancel()
                for t in (writer, watcher):
                    with contextlib.suppress(asyncio.CancelledError, OSError):
                        await t
            if writer.done() and not writer.cancelled() and writer.exception() is None:
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            hub.unsubscribe(sub)


_bearer = HTTPBearer(
    auto_error=False,
    description="The admin token (`<data-dir>/admin-token`) or a join token (`pmj1.…`)",
)


def _cp(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


async def _principal(
    request: Request,
    _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    cp = _cp(request)
    p = authenticate(cp.authenticators, request.headers.get("authorization"))
    if p is None:
        # a workload's SVID, presented as the TLS client certificate (HTTPS only)
        p = svid_principal(request.scope, cp.settings.trust_domain)
    if p is None:
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token (the admin token or an unexpired, unrevoked join token) or a "
            "workload certificate is required",
            {"WWW-Authenticate": "Bearer"},
        )
    return p


async def _admin(p: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not p.is_admin:
        raise ApiError(403, "forbidden", "this operation needs the admin token")
    return p


Admin = Annotated[Principal, Depends(_admin)]
Caller = Annotated[Principal, Depends(_principal)]


def create_app(cp: ControlPlane) -> FastAPI:
    """The ASGI app of control plane `cp` (its lifespan starts and stops `cp`)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await cp.start()
        try:
            yield
        finally:
            await cp.stop()

    app = FastAPI(
        title="pymesh control plane",
        version=__version__,
        description="Istio resources, the workload registry and config watch for pymesh "
        "agents. See docs/control-plane.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.cp = cp

    # ------------------------------------------------------------------ errors

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> Response:
        resp = _error(exc.status, exc.code, str(exc))
        resp.headers.update(exc.headers)
        return resp

    @app.exception_handler(ResourceError)
    async def _resource_error(_r: Request, exc: ResourceError) -> Response:
        if isinstance(exc, InvalidConfigError):
            cp.metrics.rejected_applies.inc()
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(StoreError)
    async def _store_error(_r: Request, exc: StoreError) -> Response:
        return _error(503, "unavailable", f"store unavailable: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_r: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        text = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors
        )
        return _error(422, "invalid_request", text, detail=jsonable_encoder(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        resp = _error(exc.status_code, code, str(exc.detail))
        if exc.headers:
            resp.headers.update(exc.headers)
        return resp

    def check_workload(p: Principal, wid: str) -> None:
        if p.is_admin:
            return
        rec = cp.hub.state.workloads.get(wid)
        if rec is None or not p.may_act_as(rec.spec.namespace, rec.spec.service_account):
            raise ApiError(403, "forbidden", f"not allowed to act for workload {wid}")

    def kind_of(kind: str) -> str:
        resolved = resolve_kind(kind)
        if resolved is None:
            raise NotFoundError(f"unknown kind {kind!r}")
        return resolved

    # ------------------------------------------------------------------ health

    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """200 while the process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness", responses={503: {}})
    async def readyz() -> Response:
        """200 once the store is open and the watch hub has loaded it."""
        if not cp.hub.ready:
            return _error(503, "not_ready", "starting or stopping")
        return JSONResponse({"status": "ready", "revision": cp.hub.state.revision})

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics() -> Response:
        """Pushes, push latency, connected agents, rejected applies, registrations, ..."""
        return Response(cp.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/version", tags=["health"], summary="Version and store revision")
    async def version() -> dict[str, Any]:
        """The server version, the store revision and the trust domain."""
        return {
            "version": __version__,
            "revision": cp.hub.state.revision,
            "trustDomain": cp.settings.trust_domain,
            "caHash": cp.ca_hash,
            "tls": cp.settings.tls,
        }

    @app.get("/v1/trust-bundle", tags=["identity"], summary="The CA roots")
    async def trust_bundle() -> dict[str, Any]:
        """The roots workloads verify peers with (PEM) and the hash join tokens pin."""
        return {
            "trustDomain": cp.ca.trust_domain,
            "roots": cp.ca.trust_bundle.pem(),
            "caHash": cp.ca_hash,
        }

    # ------------------------------------------------------------------ identity

    @app.post("/v1/tokens", tags=["identity"], summary="Create a join token")
    async def create_token(body: TokenIn, _p: Admin) -> dict[str, Any]:
        """A token bound to one namespace and service account (shown once; stored hashed).
        It carries the CA root's hash, so the agent can pin its first HTTPS call."""
        rec, token, rev = await cp.tokens.create(
            body.namespace, body.service_account, body.ttl_seconds
        )
        await applied(rev)
        return {**rec.to_dict(time.time()), "token": token, "caHash": cp.ca_hash}

    @app.get("/v1/tokens", tags=["identity"], summary="List join tokens")
    async def list_tokens(_p: Admin) -> dict[str, Any]:
        """Every join token (never its secret)."""
        now = time.time()
        return {"items": [r.to_dict(now) for r in await cp.tokens.records()]}

    @app.delete(
        "/v1/tokens/{token_id}",
        tags=["identity"],
        summary="Revoke a join token",
        responses={404: {}},
    )
    async def revoke_token(
        _p: Admin, token_id: Annotated[str, Path(max_length=64)]
    ) -> dict[str, Any]:
        """Revoke it: it authenticates nothing from now on (SVIDs it got stay valid until
        they expire)."""
        rev = await cp.tokens.revoke(token_id)
        await applied(rev)
        return {"id": token_id, "revoked": True}

    @app.post(
        "/v1/certificates",
        tags=["identity"],
        summary="Sign a CSR (issue an X.509-SVID)",
        responses={400: {}, 403: {}, 429: {}},
    )
    async def sign_csr(body: CsrIn, p: Caller) -> dict[str, Any]:
        """Issue an SVID for the caller's identity (its join token's namespace and service
        account) on the CSR's key. A CSR naming another identity is refused (400)."""
        if p.is_admin:
            if not body.namespace or not body.service_account:
                raise ApiError(400, "bad_request", "the admin names namespace and serviceAccount")
            ns, sa = body.namespace, body.service_account
        else:
            ns, sa = p.namespace, p.service_account
            if (body.namespace or ns) != ns or (body.service_account or sa) != sa:
                raise ApiError(403, "forbidden", "a token gets only its own identity")
        if not cp.csr_limiter.allow((ns, sa)):
            cp.metrics.csrs.labels("limited").inc()
            raise ApiError(
                429, "too_many_requests", f"too many CSRs for {ns}/{sa}", {"Retry-After": "1"}
            )
        try:
            identity = SpiffeId.workload(cp.ca.trust_domain, ns, sa)
            svid = cp.ca.sign(body.csr.encode(), identity=identity)
        except (CsrRejectedError, IdentityError) as exc:
            cp.metrics.csrs.labels("rejected").inc()
            raise ApiError(400, "csr_rejected", str(exc)) from None
        cp.metrics.csrs.labels("signed").inc()
        return {
            "spiffeId": identity.uri,
            "certificateChain": svid.chain_pem(),
            "trustBundle": svid.bundle.pem(),
            "notAfter": svid.not_after,
        }

    # ------------------------------------------------------------------ resources

    async def body_text(request: Request) -> str:
        raw = await request.body()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "the body is not UTF-8 text") from None

    async def applied(result_rev: int) -> None:
        # read-your-writes: the watch hub has the change before the answer leaves
        await cp.hub.wait_revision(result_rev, 2.0)

    @app.post(
        "/v1/apply",
        tags=["resources"],
        summary="Apply resources (all or nothing)",
        openapi_extra=_YAML_BODY,
        responses={400: {}, 401: {}, 409: {}, 412: {}, 413: {}, 422: {}},
    )
    async def apply(
        request: Request,
        _p: Admin,
        filename: Annotated[str, Query(max_length=256)] = "<apply>",
        dry_run: Annotated[bool, Query(alias="dryRun")] = False,
        if_match: Annotated[str | None, Header(max_length=64)] = None,
        if_none_match: Annotated[str | None, Header(max_length=8)] = None,
    ) -> dict[str, Any]:
        """Validate the body as `pymeshctl analyze` would and store every resource in it, or
        none (422 with the findings). Resources whose document is unchanged stay as they are.
        `If-Match` / `If-None-Match: *` apply to a body with exactly one resource."""
        text = await body_text(request)
        result = await cp.resources.apply(
            text, filename, dry_run=dry_run, if_match=if_match, if_none_match=if_none_match
        )
        if not dry_run:
            cp.metrics.applies.inc()
            await applied(result.revision)
        return result.to_dict()

    def _listing(rev: int, items: list[StoredResource]) -> dict[str, Any]:
        return {"revision": rev, "items": [r.to_api() for r in items]}

    @app.get("/v1/resources", tags=["resources"], summary="List resources")
    async def list_resources(
        _p: Admin,
        kind: Annotated[str | None, Query(max_length=64)] = None,
        namespace: Annotated[str | None, Query(max_length=63)] = None,
        name: Annotated[str | None, Query(max_length=253)] = None,
    ) -> dict[str, Any]:
        """Every resource, optionally of one kind, namespace or name."""
        rev, items = await cp.resources.query(kind_of(kind) if kind else None, namespace, name)
        return _listing(rev, items)

    @app.get("/v1/resources/{kind}", tags=["resources"], summary="List one kind")
    async def list_kind(_p: Admin, kind: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
        """Every resource of `kind` (any spelling: `VirtualService`, `virtualservices`, `vs`)."""
        return _listing(*await cp.resources.query(kind_of(kind)))

    @app.get("/v1/resources/{kind}/{namespace}", tags=["resources"], summary="List in a namespace")
    async def list_namespace(
        _p: Admin,
        kind: Annotated[str, Path(max_length=64)],
        namespace: Annotated[str, Path(max_length=63)],
    ) -> dict[str, Any]:
        """Every resource of `kind` in `namespace`."""
        return _listing(*await cp.resources.query(kind_of(kind), namespace))

    @app.get(
        "/v1/resources/{kind}/{namespace}/{name}",
        tags=["resources"],
        summary="Get one resource",
        responses={404: {}},
    )
    async def get_resource(
        _p: Admin,
        kind: Annotated[str, Path(max_length=64)],
        namespace: Annotated[str, Path(max_length=63)],
        name: Annotated[str, Path(max_length=253)],
    ) -> Response:
        """One resource; its `ETag` is its resourceVersion (for `If-Match`)."""
        res = await cp.resources.get(kind_of(kind), namespace, name)
        return JSONResponse(res.to_api(), headers={"ETag": f'"{res.resource_version}"'})

    @app.put(
        "/v1/resources/{kind}/{namespace}/{name}",
        tags=["resources"],
        summary="Create or replace one resource",
        openapi_extra=_YAML_BODY,
        responses={400: {}, 404: {}, 412: {}, 413: {}, 422: {}},
    )
    async def put_resource(
        request: Request,
        _p: Admin,
        kind: Annotated[str, Path(max_length=64)],
        namespace: Annotated[str, Path(max_length=63)],
        name: Annotated[str, Path(max_length=253)],
        if_match: Annotated[str | None, Header(max_length=64)] = None,
        if_none_match: Annotated[str | None, Header(max_length=8)] = None,
    ) -> Response:
        """The body must be exactly this resource. `If-Match: "<resourceVersion>"` replaces
        only that version (412 otherwise); `If-None-Match: *` only creates."""
        k = kind_of(kind)
        text = await body_text(request)
        result = await cp.resources.apply(
            text,
            f"{k}/{namespace}/{name}",
            if_match=if_match,
            if_none_match=if_none_match,
            expect=(k, namespace, name),
        )
        cp.metrics.applies.inc()
        await applied(result.revision)
        entry = result.resources[0]
        status = 201 if entry.action == "created" else 200
        return JSONResponse(
            result.to_dict(), status_code=status, headers={"ETag": f'"{entry.resource_version}"'}
        )

    @app.delete(
        "/v1/resources/{kind}/{namespace}/{name}",
        tags=["resources"],
        summary="Delete one resource",
        responses={404: {}, 412: {}, 422: {}},
    )
    async def delete_resource(
        _p: Admin,
        kind: Annotated[str, Path(max_length=64)],
        namespace: Annotated[str, Path(max_length=63)],
        name: Annotated[str, Path(max_length=253)],
        if_match: Annotated[str | None, Header(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Delete it, unless the rest of the configuration would then be invalid (422)."""
        result = await cp.resources.delete(kind_of(kind), namespace, name, if_match=if_match)
        cp.metrics.applies.inc()
        await applied(result.revision)
        return result.to_dict()

    @app.get("/v1/analyze", tags=["resources"], summary="Analyze the live configuration")
    async def analyze(_p: Admin) -> dict[str, Any]:
        """Every finding about the stored configuration (`pymeshctl analyze` without `-f`)."""
        rev, findings = await cp.resources.analyze()
        return {"revision": rev, "findings": [f.to_dict() for f in findings]}

    # ------------------------------------------------------------------ registry

    @app.post(
        "/v1/workloads",
        tags=["registry"],
        summary="Register a workload",
        responses={403: {}, 422: {}},
    )
    async def register(body: RegisterIn, p: Caller) -> RegisterOut:
        """Register (or join: same namespace, address and ports) a workload for an agent.
        The agent heartbeats every `heartbeatSeconds`; without a heartbeat for `ttlSeconds`
        the workload is removed and the change pushed."""
        if not p.may_act_as(body.namespace, body.service_account):
            raise ApiError(403, "forbidden", "a workload registers only its own identity")
        spec = WorkloadSpec(
            service=body.service,
            namespace=body.namespace,
            address=body.address,
            ports=tuple(
                WorkloadPort(x.name, x.port, x.service_port or 0, x.protocol) for x in body.ports
            ),
            service_account=body.service_account,
            labels=body.labels,
            locality=body.locality,
            weight=body.weight,
            network=body.network,
        )
        reg = await cp.registry.register(spec, body.agent, ttl=body.ttl_seconds)
        cp.metrics.registrations.inc()
        await applied(reg.revision)
        return RegisterOut(
            workload=reg.workload,
            agent=reg.agent,
            ttl_seconds=reg.ttl,
            heartbeat_seconds=reg.heartbeat,
            revision=reg.revision,
            created=reg.created,
        )

    @app.post(
        "/v1/workloads/{workload}/heartbeat",
        tags=["registry"],
        summary="Heartbeat (renew the lease)",
        responses={404: {}},
    )
    async def heartbeat(
        body: HeartbeatIn, p: Caller, workload: Annotated[str, Path(max_length=128)]
    ) -> HeartbeatOut:
        """Renew the workload's lease and report edge counters. 404 `not_registered`: the
        lease expired, register again."""
        check_workload(p, workload)
        now = time.time()
        edges = [
            (
                e.destination,
                EdgeSample(
                    now, e.requests, e.errors, e.latency_ms_sum, e.latency_ms_p50, e.latency_ms_p99
                ),
            )
            for e in body.stats
        ]
        ttl, interval = await cp.registry.heartbeat(workload, body.agent, edges)
        if body.certificate_not_after is not None:
            cp.agents.touch(body.agent).certificate_not_after = body.certificate_not_after
        return HeartbeatOut(ttl_seconds=ttl, heartbeat_seconds=interval)

    @app.delete(
        "/v1/workloads/{workload}/agents/{agent}",
        tags=["registry"],
        summary="Deregister an agent",
        responses={404: {}},
    )
    async def deregister(
        p: Caller,
        workload: Annotated[str, Path(max_length=128)],
        agent: Annotated[str, Path(pattern=AGENT_ID)],
    ) -> dict[str, Any]:
        """Remove the agent from the workload; the workload goes with its last agent."""
        check_workload(p, workload)
        removed = await cp.registry.deregister(workload, agent)
        return {"workload": workload, "agent": agent, "workloadRemoved": removed}

    @app.get("/v1/workloads", tags=["registry"], summary="List registered workloads")
    async def list_workloads(_p: Admin) -> dict[str, Any]:
        """Every registered workload with its agents and lease."""
        rev, rows = await cp.registry.workloads()
        items = []
        for rec, agent_ids in rows:
            info = await cp.store.lease_info(rec.lease)
            items.append(
                {
                    "workload": rec.id,
                    "service": rec.spec.service,
                    "namespace": rec.spec.namespace,
                    "serviceAccount": rec.spec.service_account,
                    "address": rec.spec.address,
                    "ports": [
                        {
                            "name": x.name,
                            "port": x.port,
                            "servicePort": x.number,
                            "protocol": x.protocol,
                        }
                        for x in rec.spec.ports
                    ],
                    "labels": dict(rec.spec.labels),
                    "locality": rec.spec.locality,
                    "weight": rec.spec.weight,
                    "agents": agent_ids,
                    "lease": None
                    if info is None
                    else {
                        "ttlSeconds": info.ttl,
                        "remainingSeconds": round(info.remaining, 3),
                        "confirmed": info.confirmed,
                    },
                }
            )
        return {"revision": rev, "items": items}

    # ------------------------------------------------------------------ watch

    def _who(
        p: Principal, namespace: str | None, labels: list[str], workload: str | None
    ) -> tuple[str, dict[str, str], str]:
        lab = parse_labels(labels)
        service = ""
        if workload:
            rec = cp.hub.state.workloads.get(workload)
            if rec is None:
                raise NotRegisteredError(f"workload {workload} is not registered")
            check_workload(p, workload)
            namespace = namespace or rec.spec.namespace
            lab = {**rec.spec.entry_labels(), **lab}
            service = rec.spec.service
        ns = namespace or "default"
        if not p.is_admin and ns != p.namespace:
            raise ApiError(403, "forbidden", f"not allowed to watch namespace {ns}")
        return ns, lab, service

    @app.get(
        "/v1/watch",
        tags=["watch"],
        summary="Watch snapshots (NDJSON stream)",
        response_class=_WatchStream,
        status_code=200,
        responses={200: {"content": {"application/x-ndjson": {}}}, 404: {}},
    )
    async def watch(
        p: Caller,
        agent: Annotated[str, Query(pattern=AGENT_ID)],
        namespace: Annotated[str | None, Query(max_length=63)] = None,
        labels: Annotated[list[str], Query(max_length=64)] = [],  # noqa: B006
        workload: Annotated[str | None, Query(max_length=128)] = None,
        service: Annotated[str, Query(max_length=63)] = "",
        digest: Annotated[str, Query(max_length=128)] = "",
        encoding: Annotated[str, Query(pattern="^(|zlib)$")] = "",
    ) -> Response:
        """One line of JSON per message: the snapshot of the agent's view at once (or
        `{"type":"current"}` when `digest` is the one it holds), then every new snapshot,
        and `{"type":"ping"}` when idle. The view comes from `workload` (registered) or
        `namespace` + `labels` (`app=reviews,version=v1`). With `encoding=zlib` a snapshot
        carries `"encoding":"zlib","data":<base64 of the zlib-compressed documents>` instead of
        `resources` (compressed once per version, shared by every agent)."""
        ns, lab, svc = _who(p, namespace, labels, workload)
        sub = cp.hub.subscribe(agent, ns, lab, service=service or svc, workload=workload or "")
        snap = cp.hub.snapshot(ns, lab)
        sub.sent = snap
        first = (
            snap.current_message()
            if digest and digest == snap.digest
            else snap.message_for(encoding)
        )
        cp.agents.sent(agent, snap.revision, snap.digest)
        return _WatchStream(cp, sub, first, encoding)

    @app.get("/v1/snapshot", tags=["watch"], summary="One snapshot (no stream)")
    async def snapshot(
        p: Caller,
        namespace: Annotated[str | None, Query(max_length=63)] = None,
        labels: Annotated[list[str], Query(max_length=64)] = [],  # noqa: B006
        workload: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Response:
        """The snapshot a watch would send first, as one JSON object (`pymeshctl
        proxy-config`, debugging)."""
        ns, lab, _ = _who(p, namespace, labels, workload)
        snap = cp.hub.snapshot(ns, lab)
        return Response(snap.message, media_type="application/json")

    @app.post(
        "/v1/agents/{agent}/ack",
        tags=["watch"],
        summary="ACK or NACK a snapshot",
        status_code=204,
        responses={204: {"description": "recorded"}},
    )
    async def ack(
        body: AckIn, p: Caller, agent: Annotated[str, Path(pattern=AGENT_ID)]
    ) -> Response:
        """Record that the agent now holds (`error` null) or refused a snapshot."""
        st = cp.agents.get(agent)
        if st is not None and st.workload and st.workload in cp.hub.state.workloads:
            check_workload(p, st.workload)
        elif st is not None and not p.is_admin and st.namespace and st.namespace != p.namespace:
            # its workload is gone (deregistered, lease expired): the namespace still binds it
            raise ApiError(403, "forbidden", f"not allowed to act for agent {agent}")
        cp.agents.ack(agent, body.revision, body.digest, body.error)
        cp.metrics.acks.labels("ack" if body.error is None else "nack").inc()
        return Response(status_code=204)

    @app.get("/v1/agents", tags=["watch"], summary="Sync status of every agent")
    async def agents(_p: Admin) -> dict[str, Any]:
        """Per agent: the snapshot sent, the one ACKed, the last NACK and its error, whether it
        is connected, and when it last heartbeated (`pymeshctl status`)."""
        now = time.time()
        return {
            "revision": cp.hub.state.revision,
            "items": [a.to_dict(now) for a in cp.agents.all()],
        }

    @app.get("/v1/stats", tags=["watch"], summary="Edge statistics")
    async def stats(_p: Admin) -> dict[str, Any]:
        """Per (source service, destination): requests per second, error rate, mean latency
        over the last heartbeat interval, from the agents' heartbeats (`pymeshctl top`)."""
        return {"edges": [e.to_dict() for e in cp.agents.edges()]}

    return app
