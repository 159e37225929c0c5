"""Local replies: answers the mesh gives without calling a destination, as Envoy builds them.

A `LocalReply` is adapter-neutral (status, raw headers, body); the edge of each adapter turns it
into its native response (the httpx transport: an `httpx.Response`). Three rules make one:

- `redirect` (`redirect_location` computes the `location` header the way Envoy's redirect
  action does: unset parts of the new URL come from the request);
- `directResponse` (`direct_reply`: the status and body as configured, `text/plain` when there
  is a body, as Envoy sends it);
- a fault `abort` (`fault_abort_reply`: Envoy's fault filter answer, body "fault filter abort";
  a gRPC status is a trailers-only gRPC answer: HTTP 200 with `grpc-status`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pymesh.config.model import HTTPRedirect

Header = tuple[bytes, bytes]


class LocalReply:
    """A response the mesh makes itself: `status`, raw `headers`, `body`, and the gRPC status
    when it is a gRPC answer."""

    __slots__ = ("body", "grpc_status", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: Sequence[Header],
        body: bytes = b"",
        grpc_status: int | None = None,
    ) -> None:
        self.status = status
        self.headers: list[Header] = list(headers)
        self.body = body
        self.grpc_status = grpc_status

    def __repr__(self) -> str:
        return f"LocalReply({self.status}, {len(self.body)} bytes)"


def _length(body: bytes) -> Header:
    return (b"content-length", str(len(body)).encode())


def direct_reply(status: int, body: bytes | None) -> LocalReply:
    """The answer of a `directResponse` rule."""
    if not body:
        return LocalReply(status, [_length(b"")])
    return LocalReply(status, [(b"content-type", b"text/plain"), _length(body)], body)


FAULT_BODY = b"fault filter abort"


def fault_abort_reply(http_status: int | None, grpc_status: int | None) -> LocalReply:
    """Envoy's fault filter abort: the HTTP status with a short text body, or (gRPC status set)
    a trailers-only gRPC answer."""
    if grpc_status is not None:
        headers = [
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(grpc_status).encode()),
            (b"grpc-message", FAULT_BODY),
            _length(b""),
        ]
        return LocalReply(200, headers, b"", grpc_status)
    status = http_status if http_status is not None else 503
    return LocalReply(status, [(b"content-type", b"text/plain"), _length(FAULT_BODY)], FAULT_BODY)


def _split_port(authority: str) -> tuple[str, str]:
    """(host, ":port" or "") of an authority, IPv6 literals included."""
    if authority.startswith("["):
        end = authority.rfind("]:")
        if end == -1:
            return authority, ""
        return authority[: end + 1], authority[end + 1 :]
    host, sep, port = authority.rpartition(":")
    if not sep:
        return authority, ""
    return host, ":" + port


def redirect_location(
    redirect: HTTPRedirect, scheme: str, authority: str, port: int, path: str, query: str
) -> str:
    """The `location` of a redirect for a request (`scheme`, Host `authority`, the service
    `port` it dialed, `path` and `query`), as Envoy's redirect action builds it:

    - scheme: `redirect.scheme`, else the request's;
    - host: `redirect.authority` as written, else the request's Host — whose port is dropped
      when a port is set, or when the scheme changes and the port was the old scheme's default;
    - port: `redirect.port`; `derivePort: FROM_REQUEST_PORT` is the port the caller dialed;
      `FROM_PROTOCOL_DEFAULT` (or nothing) adds none;
    - path: `redirect.uri` replaces the whole path; the query is kept unless `uri` has one.
    """
    new_scheme = redirect.scheme or scheme
    new_port = ""
    if redirect.port is not None:
        new_port = f":{redirect.port}"
    elif redirect.derive_port == "FROM_REQUEST_PORT":
        new_port = f":{port}"
    if redirect.authority:
        host = redirect.authority
    else:
        host, request_port = _split_port(authority)
        remove = bool(new_port)
        if new_scheme != scheme:
            remove |= (scheme, request_port) in (("https", ":443"), ("http", ":80"))
        if not remove:
            host = authority
    if redirect.uri:
        target = redirect.uri
        if "?" not in target and query:
            target += "?" + query
    else:
        target = path + ("?" + query if query else "")
    return f"{new_scheme}://{host}{new_port}{target}"


def redirect_reply(location: str, code: int) -> LocalReply:
    """The answer of a `redirect` rule: `code` with a `location` header and no body."""
    return LocalReply(code, [(b"location", location.encode("latin-1")), _length(b"")])
