"""pymesh in one screen: Istio routing for an httpx client, from a static YAML file.

Two versions of a `reviews` service run here (tiny ASGI apps under uvicorn, each answering its
version name). `mesh.yaml`, beside this file, is plain Istio config: a ServiceEntry says where
they listen, a DestinationRule names the versions, a VirtualService sends `x-user: jason` to v2
and splits everyone else 80/20 between v1 and v2. The client is an ordinary `httpx.Client`
that pymesh hands out; the code that calls `reviews` knows nothing of the mesh.

Run it with `make demo` (or `.venv/bin/python examples/static/demo.py`).
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import pymesh

HERE = Path(__file__).resolve().parent
PORTS = {"v1": 18081, "v2": 18082}  # the ports mesh.yaml names for each version
URL = "http://reviews:9080/"


def version_app(version: str) -> Any:
    """An ASGI app that answers every request with its version name."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": version.encode()})

    return app


class Backend:
    """One version of `reviews`: uvicorn in a thread, on a socket bound here (no port race)."""

    def __init__(self, version: str, port: int) -> None:
        self.version = version
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("127.0.0.1", port))
        except OSError:  # taken: let the kernel pick one, and patch the YAML to match
            self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(version_app(version), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                sys.exit(f"reviews {self.version} failed to start")
            threading.Event().wait(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def mesh_file(backends: dict[str, Backend], workdir: Path) -> Path:
    """mesh.yaml, or a copy with the real ports if a default port was taken."""
    path = HERE / "mesh.yaml"
    if all(b.port == PORTS[v] for v, b in backends.items()):
        return path
    text = path.read_text()
    for version, backend in backends.items():
        text = text.replace(f"http: {PORTS[version]}", f"http: {backend.port}")
    patched = workdir / "mesh.yaml"
    patched.write_text(text)
    return patched


def main() -> None:
    backends = {version: Backend(version, port) for version, port in PORTS.items()}
    for backend in backends.values():
        backend.start()
    where = ", ".join(f"{v} on 127.0.0.1:{b.port}" for v, b in backends.items())
    print(f"reviews is running: {where}")

    with tempfile.TemporaryDirectory() as workdir:
        mesh = pymesh.Mesh.from_files(
            str(mesh_file(backends, Path(workdir))),
            service="productpage",
            namespace="default",
            service_account="productpage",
        )
        try:
            with mesh.http_client() as client:  # an httpx.Client; close it like any other
                counts = Counter(client.get(URL).text for _ in range(100))
                print(f"\n100 requests to {URL}")
                print(
                    f"  v1: {counts['v1']}  v2: {counts['v2']}"
                    "  (VirtualService default/reviews splits 80/20)"
                )

                answer = client.get(URL, headers={"x-user": "jason"}).text
                print(f"  x-user: jason -> {answer}  (the first route matches this header)")

                backends["v2"].stop()
                print("\nreviews v2 stopped; jason's route has no other endpoint to try:")
                try:
                    response = client.get(URL, headers={"x-user": "jason"})
                    print(f"  x-user: jason -> HTTP {response.status_code}: {response.text}")
                except httpx.HTTPError as exc:
                    print(f"  x-user: jason -> {type(exc).__name__}: {exc}")
        finally:
            mesh.close()
            for backend in backends.values():
                backend.stop()
    print("\nTry it: edit the weights in examples/static/mesh.yaml and run `make demo` again.")


if __name__ == "__main__":
    main()
