"""Run an ASGI app on uvicorn with the mesh: `Mesh.serve(...)` and `Mesh.server(...)`.

How this works: `MeshServer` builds a uvicorn `Config` whose protocol class is
`MeshHttpToolsProtocol` (the TLS peer in scope) and whose SSL context comes from the mesh's
identity through `ssl_context_factory` (servers pick the current context per handshake, so
certificate rotation needs no restart). `start()` runs uvicorn on its own thread and event
loop and returns once the socket listens (port 0 picks a free port, read back from `port`);
`stop()` asks uvicorn to finish in-flight requests and waits. `run()` blocks in the calling
thread, as `uvicorn.run` does. `on_started(server)` runs once the socket listens (the mesh's
agent registers the real port there) and `on_stopped(server)` when it stops (deregisters).
`metrics` (a factory, given by `Mesh.server(..., metrics_port=...)`) starts the metrics
listener before the app's socket and stops it after the server stopped, in both modes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from pymesh.server.protocol import PeerVerifier, protocol_class
from pymesh.server.sniff import sniffing_protocol_class
from pymesh.telemetry import ContextThreadPoolExecutor
from pymesh.telemetry.exposition import MetricsServer


class _Server(uvicorn.Server):
    """uvicorn's server, its event loop's default executor one that runs work in the
    submitter's context: `loop.run_in_executor(None, fn)` in a handler then continues the
    request's trace and deadline, as `asyncio.to_thread` does (a plain thread pool does not
    copy context variables)."""

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Install the executor, then serve as uvicorn does."""
        loop = asyncio.get_running_loop()
        executor = ContextThreadPoolExecutor(thread_name_prefix="pymesh-executor")
        loop.set_default_executor(executor)
        await super().serve(sockets)


class MeshServer:
    """One uvicorn server for one ASGI app, with the mesh's TLS and peer checks."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        verify_peer: PeerVerifier | None = None,
        plaintext_too: bool = False,
        log_level: str = "warning",
        on_started: Callable[[MeshServer], None] | None = None,
        on_stopped: Callable[[MeshServer], None] | None = None,
        metrics: Callable[[], MetricsServer] | None = None,
        **uvicorn_options: Any,
    ) -> None:
        self.on_started = on_started
        self.on_stopped = on_stopped
        self._metrics_factory = metrics
        # the metrics listener while the server runs (`metrics.port`, `metrics.url`)
        self.metrics: MetricsServer | None = None
        factory = None
        http: type[Any] = protocol_class(verify_peer)
        if ssl_context is not None and plaintext_too:
            # PERMISSIVE: TLS and plaintext on one port; the sniffer does TLS itself
            http = sniffing_protocol_class(http, ssl_context)
            uvicorn_options.setdefault("loop", "asyncio")
        elif ssl_context is not None:
            make = ssl_context

            def factory(
                _config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]
            ) -> ssl.SSLContext:
                return make()

        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=http,
            ssl_context_factory=factory,
            log_level=log_level,
            lifespan=uvicorn_options.pop("lifespan", "auto"),
            **uvicorn_options,
        )
        self.server = _Server(self.config)
        self._thread: threading.Thread | None = None
        self.scheme = "https" if ssl_context is not None else "http"
        self._announced_port: int | None = None
        self.plaintext_too = plaintext_too

    @property
    def port(self) -> int:
        """The port the server listens on (after `start()`)."""
        servers = self.server.servers
        if not servers:
            raise RuntimeError("server not started")
        port: int = servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """`http(s)://host:port` of the running server."""
        return f"{self.scheme}://{self.config.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> MeshServer:
        """Serve on a background thread; return once listening (or raise)."""
        self._start_metrics()
        self._thread = threading.Thread(target=self.server.run, name="pymesh-server", daemon=True)
        self._thread.start()
        waited = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if self.server.started or not self._thread.is_alive():
                break
            waited.wait(0.01)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"server did not start on {self.config.host}:{self.config.port}")
        self._announce()
        return self

    def _announce(self) -> None:
        self._announced_port = self.port
        if self.on_started is not None:
            self.on_started(self)

    def _retract(self) -> None:
        if self._announced_port is not None and self.on_stopped is not None:
            self.on_stopped(self)
        self._announced_port = None

    @property
    def bound_port(self) -> int | None:
        """The port it listened on (also while stopping), or None before it listened."""
        return self._announced_port

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking new traffic (`on_stopped`), finish in-flight requests and stop (the
        metrics listener last, so the last requests are scraped)."""
        self._retract()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._stop_metrics()

    def _start_metrics(self) -> None:
        if self._metrics_factory is not None and self.metrics is None:
            self.metrics = self._metrics_factory()

    def _stop_metrics(self) -> None:
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            metrics.stop()

    def run(self) -> None:
        """Serve in the calling thread until interrupted (as `uvicorn.run`)."""
        self._start_metrics()
        try:
            if self.on_started is None:
                self.server.run()
                return
            watcher = threading.Thread(target=self._announce_when_started, daemon=True)
            watcher.start()
            try:
                self.server.run()
            finally:
                self._retract()
        finally:
            self._stop_metrics()

    def _announce_when_started(self) -> None:
        waited = threading.Event()
        while not self.server.started and not self.server.should_exit:
            waited.wait(0.01)
        if self.server.started and not self.server.should_exit:
            self._announce()

    def __enter__(self) -> MeshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.server.started else f"{self.config.host}:{self.config.port}"
        return f"MeshServer({where})"
