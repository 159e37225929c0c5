"""Prometheus text for a mesh at `/stats/prometheus` (Istio's path) and `/metrics`: an ASGI
app to mount in any app, or a listener of its own on a thread (`Mesh.start_metrics_server`,
and `Mesh.server(..., metrics_port=...)`, which starts and stops one with the server).

With `explain` (a mesh's `explain(last)`), both also answer GET `/explain?last=N` with the
decision records of the mesh's last calls as JSON — the admin endpoint. It says which calls
were made, to and from whom: the listener serves it only on a loopback address unless told
otherwise, as Envoy keeps its admin port on localhost.

Both render the registry they are given at scrape time; in multiprocess mode
(`PYMESH_METRICS_DIR`, `pymesh.telemetry.multiprocess`) a mesh's registry renders the sum of
every worker, so these need nothing special for pre-fork servers.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

PATHS = ("/stats/prometheus", "/metrics")
EXPLAIN_PATH = "/explain"
Explain = Callable[[int], list[dict[str, Any]]]
_JSON = b"application/json"


def explain_response(explain: Explain, query: str) -> tuple[int, bytes, bytes]:
    """(status, content type, body) of GET `/explain?last=N` (default 10)."""
    last = 10
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "last":
            if not value.isdigit():
                return 400, b"text/plain", b"last: a number of calls, like /explain?last=20\n"
            last = int(value)
    body = json.dumps(explain(last), indent=1).encode() + b"\n"
    return 200, _JSON, body


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No per-scrape line on stderr."""


class _Server4(ThreadingWSGIServer):
    address_family = socket.AF_INET


class _Server6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


Scope = MutableMapping[str, Any]


class MetricsApp:
    """An ASGI app answering GET `/stats/prometheus` and `/metrics` with `registry`'s metrics
    (when mounted under a prefix, the path below it), and `/explain` when given `explain`;
    anything else is 404."""

    def __init__(self, registry: CollectorRegistry, explain: Explain | None = None) -> None:
        self.registry = registry
        self.explain = explain

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """Serve one request."""
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path in PATHS or path in ("", "/"):
            # rendered on a worker thread: with many series, or in multiprocess mode (other
            # workers' files read), a scrape takes milliseconds the app's event loop keeps
            text = await anyio.to_thread.run_sync(generate_latest, self.registry)
            status, ctype, body = 200, CONTENT_TYPE_LATEST.encode(), text
        elif path == EXPLAIN_PATH and self.explain is not None:
            query = scope.get("query_string", b"").decode("latin-1")
            status, ctype, body = explain_response(self.explain, query)
        else:
            status, ctype, body = 404, b"text/plain", b"not found: try /stats/prometheus\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def __repr__(self) -> str:
        return "MetricsApp()"


class MetricsServer:
    """A metrics listener on its own thread (`port` 0 picks a free one); `stop()` ends it.
    A port already taken raises `OSError` saying which listener it was for. With `explain`, it
    also serves `/explain` (see the module docstring)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int = 15020,
        host: str = "127.0.0.1",
        explain: Explain | None = None,
    ):
        app = make_wsgi_app(registry)

        def routed(environ: dict[str, Any], start_response: Any) -> Any:
            path = environ.get("PATH_INFO")
            if path == EXPLAIN_PATH and explain is not None:
                status, ctype, body = explain_response(explain, environ.get("QUERY_STRING", ""))
                reason = "200 OK" if status == 200 else "400 Bad Request"
                start_response(reason, [("Content-Type", ctype.decode())])
                return [body]
            if path not in PATHS:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found: try /stats/prometheus\n"]
            return app(environ, start_response)

        server_class = _Server6 if ":" in host else _Server4
        try:
            self._server = make_server(host, port, routed, server_class, handler_class=_Quiet)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen for metrics on {host}:{port}: {exc.strerror}"
            ) from exc
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pymesh-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """`http://host:port/stats/prometheus`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/stats/prometheus"

    def stop(self) -> None:
        """Stop listening and wait for the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __repr__(self) -> str:
        return f"MetricsServer({self.url})"
