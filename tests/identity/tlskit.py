"""A tiny TLS server on loopback for identity tests: it speaks just enough HTTP/1.1
(keep-alive, `Content-Length`) for curl and for the tests' own clients, and answers every
request with the caller's SPIFFE ID as checked by `WorkloadIdentity.check_peer`."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

from pymesh.identity import PeerIdentityError, WorkloadIdentity


class TLSServer:
    """Serves on 127.0.0.1:`port` with one `ssl.SSLContext` given once (`context`)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        identity: WorkloadIdentity | None,
        *,
        body: Callable[[str], bytes] | None = None,
    ) -> None:
        self.context = context
        self.identity = identity
        self.body = body or (lambda peer: peer.encode())
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.refusals: list[PeerIdentityError] = []
        self.handshakes = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TLSServer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)
        self.listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                self.handshakes += 1
                peer = "-"
                if self.identity is not None:
                    try:
                        peer = str(self.identity.check_peer(conn, peer_role="client"))
                    except PeerIdentityError as exc:
                        self.refusals.append(exc)
                        return
                while not self._stop.is_set():
                    if not read_request(conn):
                        return
                    body = self.body(peer)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(exc)
        finally:
            raw.close()


def read_request(conn: ssl.SSLSocket) -> bool:
    """Read one request head (no body); False at end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


def get(conn: ssl.SSLSocket) -> bytes:
    """Send one GET on an open connection and return the response body."""
    conn.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return body


@contextlib.contextmanager
def connect(
    ctx: ssl.SSLContext, port: int, *, session: ssl.SSLSession | None = None
) -> Iterator[ssl.SSLSocket]:
    """A client TLS connection to 127.0.0.1:`port` (no SNI, no host name check), resuming
    `session` if given."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, session=session) as conn:
        yield conn
