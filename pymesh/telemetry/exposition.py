"""Prometheus text for a mesh at `/stats/prometheus` (Istio's path) and `/metrics`: an ASGI
app to mount in any app, or a listener of its own on a thread (`Mesh.start_metrics_server`,
and `Mesh.server(..., metrics_port=...)`, which starts and stops one with the server).

Both render the registry they are given at scrape time; in multiprocess mode
(`PYMESH_METRICS_DIR`, `pymesh.telemetry.multiprocess`) a mesh's registry renders the sum of
every worker, so these need nothing special for pre-fork servers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

PATHS = ("/stats/prometheus", "/metrics")


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
    (when mounted under a prefix, the path below it); anything else is 404."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

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
            status, ctype, body = 200, CONTENT_TYPE_LATEST.encode(), generate_latest(self.registry)
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
    A port already taken raises `OSError` saying which listener it was for."""

    def __init__(self, registry: CollectorRegistry, port: int = 15020, host: str = "127.0.0.1"):
        app = make_wsgi_app(registry)

        def routed(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") not in PATHS:
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
