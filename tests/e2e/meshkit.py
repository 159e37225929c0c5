"""What the end-to-end tests share besides fixtures: the scripted uvicorn backend, the Istio
YAML builders, and `Caller`, one coroutine API over the sync and the async meshed client.

Import as `from tests.e2e.meshkit import ...` (the root conftest puts the repository root on
sys.path); the fixtures that use these live in `tests/e2e/conftest.py`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio
import httpx
import uvicorn
import yaml

# --------------------------------------------------------------------------------------------
# backends


@dataclass
class Reply:
    """How a backend answers one request."""

    status: int = 200
    delay: float = 0.0  # seconds before the response headers
    chunk_every: float | None = None  # stream the body: one chunk per interval...
    stream_for: float = 0.0  # ...for this long (the first chunk goes with the headers)


class Backend:
    """A scripted ASGI backend: answers `name` (body and `x-backend` header), counts requests.

    `script(n)` gives the `Reply` for the n-th request (1-based); the default is 200 at once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._lock = threading.Lock()
        self._count = 0
        self.answered = 0  # requests answered in full (the client did not leave first)
        self.bodies: list[bytes] = []
        self.targets: list[str] = []  # path?query of each request, as received
        self.headers: list[list[tuple[str, str]]] = []  # each request's headers, in order
        self.script: Callable[[int], Reply] = lambda n: Reply()

    # -- scripting ---------------------------------------------------------------------------
    def healthy(self) -> Backend:
        """Answer 200 at once (the default)."""
        self.script = lambda n: Reply()
        return self

    def fail_first(self, k: int, status: int = 503) -> Backend:
        """Answer `status` to the first `k` requests, then 200."""
        self.script = lambda n: Reply(status if n <= k else 200)
        return self

    def always(self, status: int) -> Backend:
        """Answer `status` to every request."""
        self.script = lambda n: Reply(status)
        return self

    def slow_stream(self, every: float = 0.1, total: float = 3.0) -> Backend:
        """Headers and a first chunk at once, then a chunk every `every` s for `total` s."""
        self.script = lambda n: Reply(200, chunk_every=every, stream_for=total)
        return self

    def slow_headers(self, delay: float) -> Backend:
        """Wait `delay` s before answering."""
        self.script = lambda n: Reply(200, delay=delay)
        return self

    # -- observing ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Requests received so far."""
        with self._lock:
            return self._count

    @property
    def url(self) -> str:
        """The backend's own address (for passthrough)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        """How pymesh names this endpoint: `127.0.0.1:port`."""
        return f"127.0.0.1:{self.port}"

    # -- the ASGI app ------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        with self._lock:
            self._count += 1
            n = self._count
            self.bodies.append(bytes(body))
            query = scope.get("query_string", b"").decode("latin-1")
            self.targets.append(scope["path"] + (f"?{query}" if query else ""))
            self.headers.append(
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            )
        reply = self.script(n)
        if reply.delay and await _disconnected_within(receive, reply.delay):
            return
        headers = [
            (b"x-backend", self.name.encode()),
            (b"x-request-number", str(n).encode()),
            (b"x-body-length", str(len(body)).encode()),
            (b"content-type", b"text/plain"),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if reply.chunk_every is None:
            await send({"type": "http.response.body", "body": self.name.encode()})
            with self._lock:
                self.answered += 1
            return
        await send({"type": "http.response.body", "body": self.name.encode(), "more_body": True})
        end = time.monotonic() + reply.stream_for
        while time.monotonic() < end:
            if await _disconnected_within(receive, reply.chunk_every):
                return
            await send({"type": "http.response.body", "body": b".", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        with self._lock:
            self.answered += 1

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, port={self.port}, count={self.count})"


async def _disconnected_within(receive: Any, seconds: float) -> bool:
    """Wait `seconds`; True as soon as the client disconnects (the request body is read)."""
    with anyio.move_on_after(seconds):
        msg = await receive()
        return bool(msg["type"] == "http.disconnect")
    return False


class ServerThread:
    """One uvicorn server on 127.0.0.1:0 in its own thread with its own event loop."""

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def start(self, app: Any) -> None:
        """Start serving `app` in a new thread (wait with `wait_started`)."""
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            loop="asyncio",
            ws="none",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="e2e-uvicorn", daemon=True)
        self.thread.start()

    def wait_started(self, timeout: float = 10.0) -> int:
        """Wait until the server listens; return its port."""
        assert self.server is not None and self.thread is not None
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn backend thread died while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn backend did not start in time")
            time.sleep(0.005)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        return self.port

    def request_stop(self) -> None:
        """Ask the server to exit (it notices within ~0.1 s)."""
        if self.server is not None:
            self.server.should_exit = True

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the thread to end."""
        if self.thread is None:
            return
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("uvicorn backend did not stop in time")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line on stderr per request."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class WsgiThread:
    """A wsgiref server (a thread per request) for a WSGI app on 127.0.0.1:0."""

    def __init__(self, app: Any) -> None:
        self.server = make_server(
            "127.0.0.1", 0, app, _ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --------------------------------------------------------------------------------------------
# Istio YAML


def resource(
    kind: str, name: str, spec: dict[str, Any], namespace: str = "default"
) -> dict[str, Any]:
    """One Istio resource as a dict."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def endpoint(
    target: Backend | int, version: str | None = None, port_name: str = "http"
) -> dict[str, Any]:
    """A ServiceEntry endpoint on 127.0.0.1: a backend (labelled `version: <its name>`) or a
    bare port (a refusing one, say), labelled `version` when given."""
    port = target.port if isinstance(target, Backend) else target
    label = version or (target.name if isinstance(target, Backend) else None)
    ep: dict[str, Any] = {"address": "127.0.0.1", "ports": {port_name: port}}
    if label:
        ep["labels"] = {"app": "reviews", "version": label}
    return ep


def service_entry(
    endpoints: list[dict[str, Any]],
    host: str = "reviews",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A STATIC ServiceEntry for `host` (service port 9080 named `http` unless `ports`)."""
    return resource(
        "ServiceEntry",
        host,
        {
            "hosts": [f"{host}.default.svc.cluster.local"],
            "ports": ports or [{"number": 9080, "name": "http", "protocol": "HTTP"}],
            "resolution": "STATIC",
            "endpoints": endpoints,
        },
    )


def destination_rule(
    host: str = "reviews",
    subsets: list[str] | None = None,
    lb: str | None = None,
    outlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A DestinationRule with subsets named by `version` label, an LB and outlier detection."""
    spec: dict[str, Any] = {"host": host}
    policy: dict[str, Any] = {}
    if lb:
        policy["loadBalancer"] = {"simple": lb}
    if outlier:
        policy["outlierDetection"] = outlier
    if policy:
        spec["trafficPolicy"] = policy
    if subsets:
        spec["subsets"] = [{"name": s, "labels": {"version": s}} for s in subsets]
    return resource("DestinationRule", host, spec)


def virtual_service(http: list[dict[str, Any]], host: str = "reviews") -> dict[str, Any]:
    """A VirtualService for `host` with these `http` rules."""
    return resource("VirtualService", host, {"hosts": [host], "http": http})


def route_to(
    subset: str | None = None, host: str = "reviews", weight: int | None = None
) -> dict[str, Any]:
    """One `route[]` entry."""
    dest: dict[str, Any] = {"host": host}
    if subset:
        dest["subset"] = subset
    out: dict[str, Any] = {"destination": dest}
    if weight is not None:
        out["weight"] = weight
    return out


def to_yaml(*resources: dict[str, Any]) -> str:
    """Multi-document Istio YAML."""
    return yaml.safe_dump_all(list(resources), sort_keys=False)


def make_mesh(*resources: dict[str, Any], seed: int = 7) -> Any:
    """A `pymesh.Mesh` for service `frontend` in `default`, with a seeded random source."""
    import pymesh

    return pymesh.Mesh.from_yaml(
        to_yaml(*resources), service="frontend", namespace="default", rng=random.Random(seed)
    )


def load_config(*resources: dict[str, Any]) -> Any:
    """A `ConfigSet` for `Mesh.update`."""
    from pymesh.config import load_text

    return load_text(to_yaml(*resources), default_namespace="default")


# --------------------------------------------------------------------------------------------
# clients: one adapter, two flavours


class Caller:
    """A meshed client of either flavour behind one coroutine API."""

    def __init__(self, kind: str, mesh: Any, **kw: Any) -> None:
        self.kind = kind
        self.mesh = mesh
        kw.setdefault("timeout", 5)
        self.client: Any = (
            mesh.http_client(**kw) if kind == "sync" else mesh.async_http_client(**kw)
        )

    @property
    def is_async(self) -> bool:
        return self.kind == "async"

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """Send and read the whole response."""
        if self.is_async:
            return await self.client.request(method, url, **kw)  # type: ignore[no-any-return]
        return self.client.request(method, url, **kw)  # type: ignore[no-any-return]

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", url, **kw)

    async def stream_get(self, url: str, seen: dict[str, Any], **kw: Any) -> httpx.Response:
        """GET as a stream, reading the body chunk by chunk; `seen["response"]` is set once the
        headers arrive and `seen["chunks"]` grows as the body does (so a test can tell an error
        raised while the body streams from one raised before the headers)."""
        seen["chunks"] = chunks = []
        if self.is_async:
            async with self.client.stream("GET", url, **kw) as r:
                seen["response"] = r
                async for c in r.aiter_raw():
                    chunks.append(c)
                return r  # type: ignore[no-any-return]
        with self.client.stream("GET", url, **kw) as r:
            seen["response"] = r
            for c in r.iter_raw():
                chunks.append(c)
            return r  # type: ignore[no-any-return]

    def streamed_body(self, parts: list[bytes]) -> Any:
        """A request body that is a generator (not replayable) of this client's flavour."""
        if self.is_async:

            async def agen() -> AsyncIterator[bytes]:
                for p in parts:
                    yield p

            return agen()

        def gen() -> Iterator[bytes]:
            yield from parts

        return gen()

    async def background_get(self, url: str, **kw: Any) -> httpx.Response:
        """A GET that may run concurrently with the test body: the async client directly, the
        sync one in a worker thread (so the test's event loop stays free meanwhile)."""
        if self.is_async:
            return await self.client.get(url, **kw)  # type: ignore[no-any-return]
        return await anyio.to_thread.run_sync(lambda: self.client.get(url, **kw))  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if self.is_async:
            await self.client.aclose()
        else:
            self.client.close()


def decision(response: httpx.Response) -> Any:
    """The pymesh decision record of a meshed response."""
    return response.extensions["pymesh.decision"]


URL = "http://reviews:9080/"


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (without blocking the event loop) until `check()` holds."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.005)


def in_flight(mesh: Any) -> int:
    """Requests the mesh counts as in flight over every endpoint (least request reads these
    counts, so anything but 0 after the calls are done is a leak)."""
    return sum(ep.active for cl in mesh.runtime.clusters.values() for ep in cl.endpoints)
