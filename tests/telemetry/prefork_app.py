"""A meshed ASGI app for the pre-fork metrics tests, served by gunicorn with uvicorn workers
(`gunicorn -k uvicorn.workers.UvicornWorker -w 2 tests.telemetry.prefork_app:app`).

Every request but the metrics paths goes through `MeshMiddleware` (counted as
reporter="destination") and answers with the worker's pid; `/stats/prometheus` and `/metrics`
are `mesh.metrics_app()`, routed before the middleware (a scrape is not a request of the
service, as Istio's 15020 is not) and answered with an `x-worker-pid` header. With
`PYMESH_METRICS_DIR` set, every worker's metrics app serves the sum of all workers.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

import pymesh
from pymesh.asgi import MeshMiddleware
from pymesh.telemetry import TelemetryConfig
from pymesh.telemetry.exposition import PATHS

Scope = MutableMapping[str, Any]

mesh = pymesh.Mesh.from_yaml(
    "",
    service="reviews",
    labels={"app": "reviews", "version": "v1"},
    telemetry=TelemetryConfig(),
)


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    """200 with this worker's pid."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})


meshed = MeshMiddleware(hello, mesh)
metrics = mesh.metrics_app()


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """The service, with the metrics endpoint mounted beside it."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http" and scope["path"] in PATHS:

        async def tagged(msg: MutableMapping[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                pid = str(os.getpid()).encode()
                msg = {**msg, "headers": [*msg.get("headers", []), (b"x-worker-pid", pid)]}
            await send(msg)

        await metrics(scope, receive, tagged)
        return
    await meshed(scope, receive, send)
