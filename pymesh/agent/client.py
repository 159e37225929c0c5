"""The agent's HTTP client for the control plane: addresses, TLS, credentials, errors.

How this works:

- **TLS in three stages** (kubeadm's discovery-token-ca-cert-hash):
  1. *discovery* — `GET /v1/trust-bundle` over TLS without verification; of the roots it lists,
     only the one whose SHA-256 (of its DER) is the hash the join token carries is kept, else
     `PinnedCaMismatchError` and nothing more is sent;
  2. *bootstrap* — the CSR goes over TLS verified against that root alone (host name checked),
     with the join token as the bearer credential;
  3. *then* every call presents the workload's current SVID as its client certificate (the
     control plane maps it to the workload's identity, so the join token may expire) and
     verifies the server against the SVID's trust bundle, host name checked — a workload
     certificate, signed by the same CA, can never pass for the control plane. When the SVID
     has expired (the control plane was away for its whole lifetime), the join token is used
     again.
  Plain `http://` (a control plane run with `--insecure-http`, loopback only) sends the join
  token on every call; the CA hash is still compared, which catches a wrong address.
- **Several addresses**: a call that cannot reach one moves on to the next for later calls.
- **Errors**: 401 / 403 become `JoinTokenError` (during bootstrap) or `ControlPlaneError`; other
  4xx `ControlPlaneError`; connection failures, timeouts, 429 and 5xx
  `ControlPlaneUnavailableError` (the caller retries with back-off).
- Credentials change on another thread (certificate renewal): `set_svid` builds the new SSL
  context there; the event loop's next call makes a new `httpx.AsyncClient` with it. Clients
  with older credentials stay open for the requests and streams that use them, and are closed
  a while later (or by `aclose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from pymesh.agent.errors import (
    ControlPlaneError,
    ControlPlaneUnavailableError,
    JoinTokenError,
    PinnedCaMismatchError,
)
from pymesh.identity import IdentityError, IssuedSvid, load_key_and_chain
from pymesh.identity.bundle import certificates_pem, load_pem_certificates

__all__ = ["ControlPlaneClient", "JoinToken", "ca_hash_of"]

_RETIRE_AFTER = 120.0  # seconds an outdated client stays open for streams that use it


def ca_hash_of(cert: x509.Certificate) -> str:
    """The hash join tokens pin: SHA-256 of the certificate's DER, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


class JoinToken:
    """A join token's text (`pmj1.<id>.<secret>.<ca-hash>`), parsed; the secret never shows."""

    __slots__ = ("ca_hash", "id", "text")

    def __init__(self, text: str) -> None:
        parts = text.strip().split(".")
        if len(parts) != 4 or parts[0] != "pmj1" or not all(parts[1:3]):
            raise JoinTokenError(
                "the join token is malformed: expected pmj1.<id>.<secret>.<ca-hash> "
                "(from `pymeshctl token create` or POST /v1/tokens)"
            )
        pin = parts[3].lower().removeprefix("sha256:")
        if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
            raise JoinTokenError("the join token's CA hash is not a SHA-256 hex digest")
        self.text = text.strip()
        self.id = parts[1]
        self.ca_hash = pin

    def __repr__(self) -> str:
        return f"JoinToken(id={self.id}, ca_hash={self.ca_hash[:12]}...)"


def _message(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        return "", resp.text[:200]
    if isinstance(body, dict):
        return str(body.get("error", "")), str(body.get("message", ""))
    return "", str(body)[:200]


class ControlPlaneClient:
    """Calls one of `urls` with the credentials of the current stage (module docstring)."""

    def __init__(
        self, urls: Sequence[str], token: JoinToken | None, *, timeout: float = 10.0
    ) -> None:
        if not urls:
            raise ValueError("no control plane address")
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.token = token
        self.timeout = timeout
        self._index = 0
        self._lock = threading.Lock()
        self._roots: ssl.SSLContext | None = None  # bootstrap: the pinned root only
        self._svid: ssl.SSLContext | None = None  # then: the SVID and its bundle
        self._svid_not_after = 0.0
        self._generation = 0
        self._client: httpx.AsyncClient | None = None
        self._client_key: tuple[int, bool] | None = None
        self._retired: list[httpx.AsyncClient] = []

    def __repr__(self) -> str:
        stage = "svid" if self._svid is not None else "bootstrap"
        return f"ControlPlaneClient({self.url}, {stage})"

    @property
    def url(self) -> str:
        """The address calls go to now."""
        return self.urls[self._index % len(self.urls)]

    @property
    def tls(self) -> bool:
        """Whether the current address speaks HTTPS."""
        return self.url.startswith("https://")

    def _next_url(self) -> None:
        self._index = (self._index + 1) % len(self.urls)

    # -- credentials ------------------------------------------------------------------------

    def set_svid(self, key: ec.EllipticCurvePrivateKey, svid: IssuedSvid) -> None:
        """Use this SVID (and trust its bundle) from the next call on. Any thread."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=svid.bundle.pem())
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        load_key_and_chain(ctx, key, svid.chain)
        with self._lock:
            self._svid = ctx
            self._svid_not_after = svid.not_after
            self._generation += 1

    def _use_svid(self) -> bool:
        return self._svid is not None and self.tls and time.time() < self._svid_not_after

    def _http(self) -> tuple[httpx.AsyncClient, bool]:
        """The client for the current credentials, and whether it authenticates by SVID."""
        with self._lock:
            svid = self._use_svid()
            key = (self._generation, svid)
            if self._client is None or self._client_key != key:
                if self._client is not None:
                    self._retire(self._client)
                verify: ssl.SSLContext | bool = True
                if svid and self._svid is not None:
                    verify = self._svid
                elif self._roots is not None:
                    verify = self._roots
                self._client = httpx.AsyncClient(
                    verify=verify, timeout=self.timeout, trust_env=False
                )
                self._client_key = key
            return self._client, svid

    def _retire(self, client: httpx.AsyncClient) -> None:
        self._retired.append(client)
        with contextlib.suppress(RuntimeError):  # no running loop: closed by aclose()
            loop = asyncio.get_running_loop()
            loop.call_later(_RETIRE_AFTER, lambda: loop.create_task(self._close(client)))

    async def _close(self, client: httpx.AsyncClient) -> None:
        if client in self._retired:
            self._retired.remove(client)
        await client.aclose()

    def _headers(self, svid: bool) -> dict[str, str]:
        if svid or self.token is None:
            return {}
        return {"Authorization": f"Bearer {self.token.text}"}

    # -- discovery --------------------------------------------------------------------------

    async def discover(self) -> tuple[str, list[x509.Certificate]]:
        """Fetch the CA roots without verifying the server, keep the root the join token pins
        (trusted for the bootstrap from now on); return (trust domain, trust bundle roots)."""
        if self.token is None:
            raise JoinTokenError("no join token to pin the control plane's CA with")
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        url = self.url
        try:
            async with httpx.AsyncClient(
                verify=insecure, timeout=self.timeout, trust_env=False
            ) as c:
                resp = await c.get(f"{url}/v1/trust-bundle")
        except httpx.HTTPError as exc:
            self._next_url()
            raise ControlPlaneUnavailableError(f"{url}: {exc or type(exc).__name__}") from exc
        self._check(resp, url, svid=False)
        try:
            body = resp.json()
            roots = load_pem_certificates(body["roots"])
            trust_domain = str(body["trustDomain"])
        except (ValueError, KeyError, TypeError, IdentityError) as exc:
            raise ControlPlaneError(f"{url}/v1/trust-bundle: unexpected answer: {exc}") from exc
        pinned = [r for r in roots if ca_hash_of(r) == self.token.ca_hash]
        if not pinned:
            got = ", ".join(ca_hash_of(r)[:16] + "..." for r in roots) or "none"
            raise PinnedCaMismatchError(
                f"the control plane at {url} does not have the CA the join token pins "
                f"(sha256 {self.token.ca_hash[:16]}...; it offered {got}): refusing to send it "
                "anything. Check the address, or create a token on this control plane."
            )
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cadata=certificates_pem(pinned[:1])
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with self._lock:
            self._roots = ctx
            self._generation += 1
        return trust_domain, roots

    # -- calls ------------------------------------------------------------------------------

    def _check(self, resp: httpx.Response, url: str, *, svid: bool) -> None:
        status = resp.status_code
        if status < 400:
            return
        code, message = _message(resp)
        where = f"{url} answered {status} {code or ''}".rstrip()
        if status == 429 or status >= 500:
            if status >= 500:
                self._next_url()
            raise ControlPlaneUnavailableError(f"{where}: {message}")
        if status in (401, 403) and not svid:
            why = (
                "the join token is unknown, expired or revoked"
                if status == 401
                else "the join token is bound to another namespace or service account"
            )
            raise JoinTokenError(f"{why} ({where}: {message})", status=status, code=code)
        if status in (401, 403):
            raise ControlPlaneError(
                f"the control plane refused this workload's certificate ({where}: {message})",
                status=status,
                code=code,
            )
        raise ControlPlaneError(f"{where}: {message}", status=status, code=code)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One call; raises the errors of the module docstring."""
        client, svid = self._http()
        url = self.url
        try:
            resp = await client.request(
                method,
                f"{url}{path}",
                json=json,
                params=params,
                headers=self._headers(svid),
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.HTTPError as exc:
            self._next_url()
            raise ControlPlaneUnavailableError(f"{url}: {exc or type(exc).__name__}") from exc
        self._check(resp, url, svid=svid)
        return resp

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, params: dict[str, str], *, read_timeout: float
    ) -> AsyncIterator[httpx.Response]:
        """A streaming GET (the watch); errors as `request`'s."""
        client, svid = self._http()
        url = self.url
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        try:
            async with client.stream(
                "GET", f"{url}{path}", params=params, headers=self._headers(svid), timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    self._check(resp, url, svid=svid)
                yield resp
        except httpx.HTTPError as exc:
            self._next_url()
            raise ControlPlaneUnavailableError(f"{url}: {exc or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close every client this made."""
        clients = [*self._retired, *([self._client] if self._client is not None else [])]
        self._retired.clear()
        self._client = None
        for c in clients:
            await c.aclose()
