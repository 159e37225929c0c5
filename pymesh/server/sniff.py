"""TLS and plaintext on one port, for PeerAuthentication PERMISSIVE (Istio's default).

How this works: the listener is created without TLS. `SniffingProtocol` waits for the first
bytes of a connection: a TLS record (0x16, a ClientHello) gets asyncio's own `SSLProtocol`
(the same TLS implementation `loop.create_server(ssl=...)` uses) slid between the transport and
the HTTP protocol, and the bytes already read are fed to it; anything else is plaintext and goes
straight to the HTTP protocol. The HTTP protocol never knows a sniff happened: it sees an SSL
transport (and so the peer certificate) or a plain one, exactly as with a dedicated port.
`asyncio.sslproto.SSLProtocol` is CPython's; the server runs on the asyncio loop to use it.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

TLS_HANDSHAKE = 0x16
HANDSHAKE_TIMEOUT = 10


class SniffingProtocol(asyncio.Protocol):
    """Decides TLS or plaintext from a connection's first byte, then steps aside."""

    def __init__(
        self,
        make_app_protocol: Callable[[], asyncio.Protocol],
        ssl_context: Callable[[], ssl.SSLContext],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._make = make_app_protocol
        self._ssl_context = ssl_context
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._inner: asyncio.BaseProtocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport; nothing is decided before the first byte."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Hand the connection to TLS or to the HTTP protocol, with these first bytes."""
        transport = self._transport
        assert transport is not None
        if not data:
            return
        app = self._make()
        if data[0] == TLS_HANDSHAKE:
            tls = sslproto.SSLProtocol(
                self._loop,
                app,
                self._ssl_context(),
                None,  # type: ignore[arg-type]  # no waiter: nobody awaits the handshake
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
            self._inner = tls
            transport.set_protocol(tls)
            tls.connection_made(transport)
            view = tls.get_buffer(len(data))
            n = min(len(view), len(data))
            view[:n] = data[:n]
            tls.buffer_updated(n)
            rest = data[n:]
            while rest:
                view = tls.get_buffer(len(rest))
                n = min(len(view), len(rest))
                view[:n] = rest[:n]
                tls.buffer_updated(n)
                rest = rest[n:]
        else:
            self._inner = app
            transport.set_protocol(app)
            app.connection_made(transport)
            app.data_received(data)

    def eof_received(self) -> bool | None:
        """A connection closed before its first byte."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Closed before the handover (afterwards the inner protocol is told instead)."""
        if self._inner is not None:
            self._inner.connection_lost(exc)


def sniffing_protocol_class(
    http_class: type[asyncio.Protocol], ssl_context: Callable[[], ssl.SSLContext]
) -> type[asyncio.Protocol]:
    """A uvicorn-compatible protocol class: built with uvicorn's keyword arguments, it sniffs
    and then runs `http_class` with them."""

    class Sniffing(SniffingProtocol):
        def __init__(self, _loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
            loop = _loop or asyncio.get_event_loop()

            def make() -> asyncio.Protocol:
                return http_class(_loop=loop, **kwargs)  # type: ignore[call-arg]

            super().__init__(make, ssl_context, loop)

    return Sniffing
