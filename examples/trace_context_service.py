"""The W3C Trace Context test service: pymesh carries `traceparent` / `tracestate` by itself.

The W3C's conformance harness (github.com/w3c/trace-context, `test/`) POSTs a JSON array of
`{"url": ..., "arguments": ...}` to a service's `/test` endpoint, with trace headers of its
choosing, and expects the service to POST each element's `arguments` (as JSON) to its `url`,
in order. The harness listens on those URLs and checks the trace context that arrives: the trace
continued (same trace id, a new parent id) or restarted, and `tracestate` kept or dropped, as
the spec says.

The app below has no tracing code: it never reads or writes a trace header. The meshed server
(`mesh.server`, pymesh's `MeshMiddleware` in front of the app) parses the caller's headers into
the request's trace context, and the mesh's httpx client continues it on every call made while
the request is served. The harness's URLs are not mesh services, so those calls take pymesh's
passthrough path, which sends the trace context as well (no deadline, no workload metadata).

Serve it for the harness (until Ctrl-C), then run the harness from a checkout of w3c/trace-context:

    .venv/bin/python examples/trace_context_service.py --port 5000
    cd trace-context/test && python test.py http://127.0.0.1:5000/test

Run without `--port`, it shows the same thing in a few lines (its own callback receiver stands in
for the harness) and ends. `--otel-sdk` gives the mesh an OpenTelemetry SDK tracer provider, as a
traced deployment has (spans are recorded, not exported); by default only OpenTelemetry's API is
there, as with a bare `pip install pymesh`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

import pymesh
from pymesh.telemetry import TelemetryConfig

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CALL_TIMEOUT = 5.0  # per outbound call: the harness waits 5 s for a whole test case


class TraceContextService:
    """The harness's test service as an ASGI app: `POST /test` with a JSON array of
    `{"url", "arguments"}` POSTs each `arguments` to its `url`, one after the other, with the
    mesh's async httpx client, and answers with what each call returned."""

    def __init__(self, mesh: pymesh.Mesh) -> None:
        self.mesh = mesh
        self.client: httpx.AsyncClient | None = None  # made in the server's event loop

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/test":
            await _reply(send, 404, {"error": "not found: POST /test"})
            return
        if scope["method"] != "POST":
            await _reply(send, 405, {"error": "POST only"}, [(b"allow", b"POST")])
            return
        try:
            actions = _actions(await _body(receive))
        except ValueError as exc:
            await _reply(send, 400, {"error": str(exc)})
            return
        if self.client is None:  # a server run without lifespan events
            self.client = self.mesh.async_http_client(timeout=CALL_TIMEOUT)
        results: list[dict[str, Any]] = []
        for url, arguments in actions:
            try:
                response = await self.client.post(url, json=arguments)
            except httpx.HTTPError as exc:
                results.append({"url": url, "error": f"{type(exc).__name__}: {exc}"})
            else:
                results.append({"url": url, "status": response.status_code})
        failed = any("error" in r for r in results)
        await _reply(send, 502 if failed else 200, results)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = self.mesh.async_http_client(timeout=CALL_TIMEOUT)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                    self.client = None
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _actions(body: bytes) -> list[tuple[str, Any]]:
    """(url, arguments) pairs from the harness's JSON array, or ValueError saying what's wrong."""
    try:
        items = json.loads(body or b"[]")
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise ValueError('expected a JSON array of {"url", "arguments"} objects')
    actions = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ValueError(f"not an object with a string url: {item!r}")
        actions.append((item["url"], item.get("arguments", [])))
    return actions


async def _reply(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def make_mesh(sampling: float, otel_sdk: bool = False, tracer_provider: Any = None) -> pymesh.Mesh:
    """The service's mesh: no mesh services to call (every call here is a passthrough), and
    telemetry on with `sampling` of root traces sampled (a caller's decision is followed)."""
    if otel_sdk and tracer_provider is None:
        from opentelemetry.sdk.trace import TracerProvider

        tracer_provider = TracerProvider()
    return pymesh.Mesh.from_yaml(
        "",
        service="trace-context-service",
        telemetry=TelemetryConfig(sampling=sampling, tracer_provider=tracer_provider),
    )


class CallbackReceiver:
    """A plain HTTP server on 127.0.0.1 (a thread) that answers every POST with 200 and keeps
    the headers each request path received, as sent (names, order and repeats)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[str, str]]] = {}
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the harness's server does
            disable_nagle_algorithm = True  # headers and body go in two writes

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                seen[self.path] = list(self.headers.items())
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "4")
                self.end_headers()
                self.wfile.write(b"null")

            def log_message(self, format: str, *args: Any) -> None:
                """No line on stderr per callback."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def headers(self, path: str, name: str) -> list[str]:
        """The values of header `name` (any case) that `path` received, in order."""
        return [v for k, v in self.seen.get(path, []) if k.lower() == name]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# the W3C spec's own example values
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def demo(sampling: float, otel_sdk: bool) -> int:
    """Serve on a free port, ask for two callbacks with a valid trace context and one with an
    invalid `traceparent`, print what the callbacks received and whether it is what the spec
    says. Returns the exit status (1 when a check fails)."""
    receiver = CallbackReceiver()
    mesh = make_mesh(sampling, otel_sdk)
    server = mesh.server(TraceContextService(mesh)).start()
    failures = 0

    def check(what: str, ok: bool) -> None:
        nonlocal failures
        failures += not ok
        print(f"  {what}: {'yes' if ok else 'NO'}")

    def call(headers: dict[str, str], paths: list[str]) -> list[tuple[str, str]]:
        actions = [{"url": receiver.url + path, "arguments": []} for path in paths]
        response = httpx.post(f"{server.url}/test", json=actions, headers=headers, timeout=10)
        response.raise_for_status()
        return [
            (receiver.headers(p, "traceparent")[0], ",".join(receiver.headers(p, "tracestate")))
            for p in paths
        ]

    try:
        print(f"trace-context service on {server.url}/test (telemetry on, sampling {sampling})")
        print(f"\nsent      traceparent: {TRACEPARENT}\n          tracestate:  {TRACESTATE}")
        got = call({"traceparent": TRACEPARENT, "tracestate": TRACESTATE}, ["/cb/0", "/cb/1"])
        for i, (tp, ts) in enumerate(got):
            print(f"callback {i} traceparent: {tp}\n           tracestate:  {ts}")
        trace_id, parent_id = TRACEPARENT.split("-")[1:3]
        parents = {tp.split("-")[2] for tp, _ in got}
        check("same trace id", all(tp.split("-")[1] == trace_id for tp, _ in got))
        check("a new parent id per call", len(parents) == 2 and parent_id not in parents)
        check("sampled flag carried", all(tp.endswith("-01") for tp, _ in got))
        check("tracestate carried", all(ts == TRACESTATE for _, ts in got))

        bad = "ff" + TRACEPARENT[2:]
        print(f"\nsent      traceparent: {bad}  (version ff is invalid)")
        ((tp, ts),) = call({"traceparent": bad, "tracestate": TRACESTATE}, ["/cb/2"])
        print(f"callback  traceparent: {tp}\n          tracestate:  {ts or '(none)'}")
        check("trace restarted", tp.split("-")[1] != trace_id)
        check("tracestate dropped", ts == "")
    finally:
        server.stop()
        mesh.close()
        receiver.stop()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, help="serve on this port until interrupted")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--sampling", type=float, default=1.0, help="share of root traces sampled (0..1)"
    )
    parser.add_argument(
        "--otel-sdk", action="store_true", help="record spans with the OpenTelemetry SDK"
    )
    args = parser.parse_args(argv)
    if args.port is None:
        return demo(args.sampling, args.otel_sdk)
    mesh = make_mesh(args.sampling, args.otel_sdk)
    server = mesh.server(TraceContextService(mesh), host=args.host, port=args.port)
    print(f"trace-context service on http://{args.host}:{args.port}/test (Ctrl-C stops it)")
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn finished in-flight requests, then re-raised the signal
        print("stopped")
    finally:
        mesh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
