"""`ssl.SSLContext`s for mesh mTLS, with the private key kept out of the file system.

Python's `ssl` loads a certificate chain and key only from a path. On Linux, pymesh writes the
PEM key and chain into an anonymous memory file (`os.memfd_create`, close-on-exec) and hands
`ssl` its `/proc/self/fd/N` path; the descriptor is closed right after loading, so the key exists
only in this process's memory (and OpenSSL's copy). Where memfd does not exist, or when the user
asks for it (`key_file=`), the key goes to a file with mode 0600 (the memfd-less fallback
unlinks it right after loading).

Every context: TLS 1.2 or later, CERT_REQUIRED (CERT_OPTIONAL for a server that accepts
certificate-less clients), `check_hostname=False` (identity is the URI SAN, checked after the
handshake by `pymesh.identity.verify`), the trust bundle's roots, X509 strict verification, ALPN
`http/1.1` (and `h2` when asked). Rotation never mutates a context: it builds new ones.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pymesh.identity.bundle import TrustBundle, certificates_pem
from pymesh.identity.errors import PeerIdentityError, PeerRefusal

DEFAULT_ALPN: tuple[str, ...] = ("http/1.1",)

SniCallback = Callable[[ssl.SSLObject | ssl.SSLSocket, str | None, ssl.SSLContext], int | None]


def memfd_available() -> bool:
    """Whether keys can be loaded through `os.memfd_create` on this platform."""
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def key_and_chain_pem(key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate]) -> bytes:
    """The chain (leaf first) followed by the PKCS#8 key, as PEM: what `load_cert_chain` reads."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificates_pem(chain).encode() + key_pem


def load_key_and_chain(
    ctx: ssl.SSLContext,
    key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
    *,
    key_file: str | os.PathLike[str] | None = None,
) -> str:
    """Load `key` and `chain` into `ctx`; return how ("memfd", "file" or "tempfile").

    With `key_file`, the PEM is written there (mode 0600) and loaded from it; the file stays.
    Otherwise through a memfd, or on a platform without one through a 0600 file in a private
    temporary directory that is removed right after loading.
    """
    data = key_and_chain_pem(key, chain)
    if key_file is not None:
        path = Path(key_file)
        _write_0600(path, data)
        ctx.load_cert_chain(str(path))
        return "file"
    if memfd_available():
        fd = os.memfd_create("pymesh-svid", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return "memfd"
    with tempfile.TemporaryDirectory(prefix="pymesh-svid-") as tmp:  # 0700
        path = Path(tmp) / "svid.pem"
        _write_0600(path, data)
        try:
            ctx.load_cert_chain(str(path))
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    return "tempfile"


def _write_0600(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _base(ctx: ssl.SSLContext, bundle: TrustBundle, alpn: Sequence[str]) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=bundle.pem())
    if alpn:
        ctx.set_alpn_protocols(list(alpn))


def build_client_context(
    key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
    bundle: TrustBundle,
    *,
    alpn: Sequence[str] = DEFAULT_ALPN,
    key_file: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A client context presenting `chain` and verifying servers against `bundle`
    (CERT_REQUIRED, no host name check: check the peer with `verify_peer` after the handshake)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    _base(ctx, bundle, alpn)
    load_key_and_chain(ctx, key, chain, key_file=key_file)
    return ctx


def build_server_context(
    key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
    bundle: TrustBundle,
    *,
    require_client_cert: bool = True,
    alpn: Sequence[str] = DEFAULT_ALPN,
    sni_callback: SniCallback | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A server context presenting `chain` and verifying client certificates against `bundle`:
    required (mTLS, STRICT) or optional (PERMISSIVE: a client without one still connects)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    _base(ctx, bundle, alpn)
    load_key_and_chain(ctx, key, chain, key_file=key_file)
    if sni_callback is not None:
        ctx.sni_callback = sni_callback
    return ctx


# OpenSSL's X509_V_ERR_* codes for the verification failures that have a SPIFFE-rule twin.
_OPENSSL_REFUSALS = {
    2: PeerRefusal.UNTRUSTED_CHAIN,  # unable to get issuer certificate
    7: PeerRefusal.UNTRUSTED_CHAIN,  # certificate signature failure
    9: PeerRefusal.NOT_YET_VALID,
    10: PeerRefusal.EXPIRED,
    18: PeerRefusal.UNTRUSTED_CHAIN,  # self-signed certificate
    19: PeerRefusal.UNTRUSTED_CHAIN,  # self-signed certificate in chain
    20: PeerRefusal.UNTRUSTED_CHAIN,  # unable to get local issuer certificate
    21: PeerRefusal.UNTRUSTED_CHAIN,  # unable to verify the first certificate
    24: PeerRefusal.CA_CERTIFICATE,  # invalid CA certificate
    26: PeerRefusal.EXTENDED_KEY_USAGE,  # unsupported certificate purpose
    28: PeerRefusal.UNTRUSTED_CHAIN,  # certificate rejected
    79: PeerRefusal.CA_CERTIFICATE,  # invalid or inconsistent certificate extension
}


def refusal_from_ssl_error(
    exc: ssl.SSLError, *, peer_role: str | None = None
) -> PeerIdentityError | None:
    """The `PeerIdentityError` for a handshake that OpenSSL refused while verifying the peer's
    certificate (`ssl.SSLCertVerificationError`), or None for other TLS errors. Adapters use it
    to report an expired or untrusted peer the same way whether OpenSSL or pymesh caught it."""
    if not isinstance(exc, ssl.SSLCertVerificationError):
        return None
    code = int(getattr(exc, "verify_code", 0) or 0)
    message = str(getattr(exc, "verify_message", "") or exc)
    reason = _OPENSSL_REFUSALS.get(code, PeerRefusal.UNTRUSTED_CHAIN)
    err = PeerIdentityError(
        reason, f"peer certificate refused during the TLS handshake: {message}", role=peer_role
    )
    err.__cause__ = exc
    return err
