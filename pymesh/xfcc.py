"""X-Forwarded-Client-Cert: how `pymesh-proxy` tells the app behind it who called.

Envoy's format: one element per proxy hop, comma-separated; each element is `key=value` pairs
separated by `;`, values with `,;="` in double quotes (a `"` inside escaped as `\\"`). Keys: By,
Hash, Cert, Chain, Subject, URI, DNS. pymesh reads `URI` (the caller's SPIFFE ID) of the last
element (the hop nearest the app).

The header is trusted only over an authenticated proxy→app hop: a Unix socket, or an HMAC over
the header value keyed by a 0600 file the proxy and the app share (`XfccSigner`). Otherwise the
inbound side strips it (and any identity header) and ignores it: a client on the network must
never be able to claim an identity by sending a header.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from pymesh.errors import MeshError

MAC_HEADER = "x-pymesh-xfcc-mac"
XFCC_HEADER = "x-forwarded-client-cert"


class XfccError(MeshError):
    """A malformed X-Forwarded-Client-Cert header or an unusable key file."""


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes (backslash escapes inside quotes)."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise XfccError("unterminated quote in X-Forwarded-Client-Cert")
    parts.append("".join(cur))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        it = iter(inner)
        for ch in it:
            out.append(next(it, "") if ch == "\\" else ch)
        return "".join(out)
    return value


def parse_xfcc(header: str) -> list[dict[str, list[str]]]:
    """The elements of an XFCC header, each a mapping of key (as written) to its values."""
    elements: list[dict[str, list[str]]] = []
    for element in _split(header, ","):
        if not element.strip():
            continue
        fields: dict[str, list[str]] = {}
        for pair in _split(element, ";"):
            if not pair.strip():
                continue
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise XfccError(f"malformed X-Forwarded-Client-Cert pair {pair.strip()!r}")
            fields.setdefault(key.strip(), []).append(_unquote(value))
        elements.append(fields)
    return elements


def peer_uri(header: str) -> str | None:
    """The caller's SPIFFE ID: the single URI of the last element, or None."""
    elements = parse_xfcc(header)
    if not elements:
        return None
    uris = elements[-1].get("URI", [])
    if len(uris) != 1:
        return None
    return uris[0]


def format_xfcc(by: str | None, uri: str, cert_hash: str | None = None) -> str:
    """One XFCC element as `pymesh-proxy` writes it."""
    parts = []
    if by:
        parts.append(f"By={by}")
    if cert_hash:
        parts.append(f"Hash={cert_hash}")
    parts.append(f"URI={uri}")
    return ";".join(parts)


class XfccSigner:
    """Signs and checks the XFCC header with an HMAC keyed by a shared 0600 file."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise XfccError("XFCC key must be at least 32 bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> XfccSigner:
        """Load the key, refusing a file others can read or write."""
        p = Path(path)
        try:
            mode = p.stat().st_mode
        except OSError as exc:
            raise XfccError(f"cannot read XFCC key file {p}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise XfccError(f"XFCC key file {p} must be readable by its owner only (chmod 600)")
        return cls(p.read_bytes())

    @classmethod
    def create_file(cls, path: str | os.PathLike[str]) -> XfccSigner:
        """Make a new random key file (0600) and return its signer."""
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return cls(key)

    def sign(self, header: str) -> str:
        """The MAC to send in `x-pymesh-xfcc-mac` beside `header`."""
        return hmac.new(self._key, header.encode("latin-1"), hashlib.sha256).hexdigest()

    def verify(self, header: str, mac: str | None) -> bool:
        """Whether `mac` authenticates `header` (constant-time)."""
        if not mac:
            return False
        return hmac.compare_digest(self.sign(header), mac.strip())

    def __repr__(self) -> str:
        return "XfccSigner(<key>)"
