"""Who is calling: the admin token, join tokens, or a workload's SVID over mTLS.

How this works: every call but `/healthz`, `/readyz`, `/metrics`, `/openapi.json`,
`/v1/version` and `/v1/trust-bundle` carries `Authorization: Bearer <token>` (or, over HTTPS, a
workload certificate; below). Each `Authenticator` turns a token into a `Principal` or says it
does not know it; the first that knows it wins.

- `AdminTokenAuthenticator`: the admin token, created at the first start (32 random bytes,
  URL-safe base64), written 0600 to `<data-dir>/admin-token`, printed once. Only its SHA-256 is
  kept in memory; tokens compare in constant time.
- `JoinTokenAuthenticator` (`tokens.py`): a join token is a `Principal` bound to one namespace
  and service account. A workload principal may get an SVID, register, heartbeat, watch and
  ACK only for its own namespace and service account.
- Without a bearer token that authenticates, a workload's SVID presented as the TLS client
  certificate (HTTPS) is the same workload principal (`tls.svid_principal`): after bootstrap,
  agents renew, register, heartbeat and watch with it, so a join token only has to live long
  enough for the first certificate.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = [
    "ADMIN_TOKEN_FILE",
    "AdminTokenAuthenticator",
    "Authenticator",
    "Principal",
    "RateLimiter",
    "authenticate",
    "load_or_create_admin_token",
]

ADMIN_TOKEN_FILE = "admin-token"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the admin, or a workload bound to a namespace and service
    account."""

    kind: Literal["admin", "workload"]
    namespace: str = ""
    service_account: str = ""

    @property
    def is_admin(self) -> bool:
        """Whether it may do everything."""
        return self.kind == "admin"

    def may_act_as(self, namespace: str, service_account: str) -> bool:
        """Whether it may register / watch as a workload of `namespace` and `service_account`."""
        return self.is_admin or (
            self.namespace == namespace and self.service_account == service_account
        )


class Authenticator(Protocol):
    """Turns a bearer token into a principal (None: not one of mine)."""

    def authenticate(self, token: str) -> Principal | None:
        """The principal of `token`, or None."""
        ...


class AdminTokenAuthenticator:
    """Knows the admin token (by its hash)."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()

    def __repr__(self) -> str:
        return "AdminTokenAuthenticator(<hidden>)"

    def authenticate(self, token: str) -> Principal | None:
        """The admin principal for the admin token."""
        if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest):
            return Principal("admin")
        return None


def authenticate(authenticators: Sequence[Authenticator], header: str | None) -> Principal | None:
    """The principal of an `Authorization` header value (None: anonymous or unknown)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    for a in authenticators:
        p = a.authenticate(token)
        if p is not None:
            return p
    return None


def load_or_create_admin_token(data_dir: Path) -> tuple[str, bool]:
    """The admin token in `data_dir` (created 0600 if missing); True when it was created now."""
    path = data_dir / ADMIN_TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):  # none yet: made below
        token = path.read_text(encoding="ascii").strip()
        if token:
            return token, False
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token, True


class RateLimiter:
    """A token bucket per key: `rate` per second, bursts of `burst` (CSR signing per identity)."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, burst={self.burst}, keys={len(self._buckets)})"

    def allow(self, key: Hashable) -> bool:
        """Take one token for `key`; False when its bucket is empty."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:  # forget full buckets: they behave as new ones
            full = [k for k, (t, _) in self._buckets.items() if t >= self.burst - 1]
            for k in full:
                del self._buckets[k]
        return True
