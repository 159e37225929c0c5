"""uvicorn's httptools protocol, with the verified TLS peer in `scope["extensions"]["tls"]`.

How this works: asyncio calls `connection_made` after the TLS handshake, so the peer
certificate is read there, once per connection, and checked by the server's `verify_peer`
(the SPIFFE rules) before a single request byte is parsed; a refused peer's connection is
closed. Each request's scope then carries the ASGI TLS extension's shape
(`client_cert_chain`, `client_cert_name`, `tls_version`, `cipher_suite`, ...) plus
`pymesh.peer`, the verified SPIFFE ID — shared by every request of the connection, never
computed per request and never passed through a contextvar. uvicorn 0.54 sets no TLS extension
itself; the day it does, this class can go.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pymesh.errors import MeshError

log = logging.getLogger("pymesh.server")

# TLS versions as the ASGI TLS extension spells them (the TLS wire codes).
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

PeerVerifier = Callable[[ssl.SSLObject], str]


def tls_extension(ssl_object: ssl.SSLObject, peer: str | None) -> dict[str, Any]:
    """The ASGI TLS extension dict for one connection (plus `pymesh.peer`)."""
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    name = None
    cert = ssl_object.getpeercert() if der else None
    if cert:
        subject = cert.get("subject", ())
        name = ",".join(f"{k}={v}" for rdn in reversed(subject) for k, v in rdn) or None
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "pymesh.peer": peer,
        "pymesh.cipher": cipher[0] if cipher else None,
    }


class MeshHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that checks the TLS peer once per connection and exposes
    it to the app. Subclass per server with `verify_peer` set (see `protocol_class`)."""

    verify_peer: ClassVar[PeerVerifier | None] = None

    _tls: dict[str, Any] | None = None
    _over_tls = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            self._tls = None
            return
        self._over_tls = True
        peer: str | None = None
        verify = type(self).verify_peer
        if verify is not None and ssl_object.getpeercert(binary_form=True):
            try:
                peer = verify(ssl_object)
            except MeshError as exc:
                log.warning("refused TLS peer %s: %s", self.client, exc)
                transport.close()
                return
        self._tls = tls_extension(ssl_object, peer)

    def shutdown(self) -> None:
        """The server is stopping: an idle TLS connection is dropped at once. Closing it
        politely sends close_notify and waits for the client's (up to asyncio's 30 s), which
        an idle pooled client never sends, so `stop()` would wait that long; uvicorn's own
        graceful handling stays for connections with a request in flight."""
        if self._over_tls and (self.cycle is None or self.cycle.response_complete):
            self.transport.abort()
            return
        super().shutdown()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]


def protocol_class(verify_peer: PeerVerifier | None) -> type[MeshHttpToolsProtocol]:
    """A protocol class for one server, checking peers with `verify_peer`."""
    return type(
        "MeshHttpToolsProtocol",
        (MeshHttpToolsProtocol,),
        {"verify_peer": staticmethod(verify_peer) if verify_peer else None},
    )
