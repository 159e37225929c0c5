"""Join tokens: how a workload proves, once, which identity it may ask the CA for.

How this works:

- An admin creates a token bound to one (namespace, service account), with a TTL. The token
  text is `pmj1.<id>.<secret>.<ca-hash>`: `<id>` names the record, `<secret>` (32 random
  bytes) proves possession, `<ca-hash>` is the SHA-256 of the CA root certificate (DER, hex) —
  the agent pins the control plane's certificate to it on its first HTTPS call, as kubeadm's
  discovery-token-ca-cert-hash does.
- Only the SHA-256 of the secret is stored, at `/tokens/<id>` (with namespace, service
  account, creation and expiry times). Revoking deletes the key. The authenticator reads the
  hub's in-memory copy of these keys (which follows the store), so checking a token costs a dict
  lookup and a constant-time compare.
- A token's principal is a workload of its namespace and service account: the CA signs SVIDs
  for that identity only, whatever the CSR asks for, and the registry and watch accept only
  that namespace and service account from it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pymesh_controlplane.auth import Principal
from pymesh_controlplane.resources import NotFoundError
from pymesh_controlplane.store import Compare, KeyValue, Put, Store

__all__ = [
    "TOKEN_PREFIX",
    "JoinTokenAuthenticator",
    "JoinTokens",
    "TokenRecord",
    "parse_token",
]

TOKEN_PREFIX = "/tokens/"
_SCHEME = "pmj1"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored join token (its secret only as a hash)."""

    id: str
    namespace: str
    service_account: str
    secret_sha256: str
    created_at: float
    expires_at: float | None

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(
            {
                "id": self.id,
                "namespace": self.namespace,
                "serviceAccount": self.service_account,
                "secretSha256": self.secret_sha256,
                "createdAt": self.created_at,
                "expiresAt": self.expires_at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_kv(cls, kv: KeyValue) -> TokenRecord | None:
        """Decode a store key-value (None for other keys)."""
        if not kv.key.startswith(TOKEN_PREFIX):
            return None
        d = json.loads(kv.value)
        return cls(
            d["id"],
            d["namespace"],
            d["serviceAccount"],
            d["secretSha256"],
            d["createdAt"],
            d.get("expiresAt"),
        )

    def to_dict(self, now: float) -> dict[str, Any]:
        """The API shape (no secret, no hash)."""
        return {
            "id": self.id,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "expired": self.expires_at is not None and now >= self.expires_at,
        }


def parse_token(token: str) -> tuple[str, str, str] | None:
    """(id, secret, ca-hash) of a join token's text, or None if it is not one."""
    parts = token.strip().split(".")
    if len(parts) != 4 or parts[0] != _SCHEME or not all(parts[1:3]):
        return None
    return parts[1], parts[2], parts[3]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class JoinTokens:
    """Create, list and revoke join tokens on a `Store`."""

    def __init__(
        self, store: Store, ca_hash: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.ca_hash = ca_hash
        self._clock = clock

    def __repr__(self) -> str:
        return f"JoinTokens(ca_hash={self.ca_hash[:12]}...)"

    async def create(
        self, namespace: str, service_account: str, ttl: float | None
    ) -> tuple[TokenRecord, str, int]:
        """A new token: (record, token text — shown once, store revision)."""
        token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        rec = TokenRecord(
            token_id,
            namespace,
            service_account,
            _sha256(secret),
            now,
            None if ttl is None else now + ttl,
        )
        key = TOKEN_PREFIX + token_id
        res = await self.store.txn([Compare(key, "create", "=", 0)], [Put(key, rec.to_json())])
        if not res.succeeded:  # pragma: no cover - 32 random bits collided
            return await self.create(namespace, service_account, ttl)
        return rec, f"{_SCHEME}.{token_id}.{secret}.{self.ca_hash}", res.revision

    async def records(self) -> list[TokenRecord]:
        """Every token record, by id."""
        rr = await self.store.range(TOKEN_PREFIX, prefix=True)
        return [r for kv in rr.kvs if (r := TokenRecord.from_kv(kv)) is not None]

    async def revoke(self, token_id: str) -> int:
        """Delete a token (NotFoundError if there is none); returns the store revision."""
        if await self.store.delete(TOKEN_PREFIX + token_id) == 0:
            raise NotFoundError(f"no join token {token_id}")
        return await self.store.current_revision()


class JoinTokenAuthenticator:
    """Turns a valid, unexpired, unrevoked join token into its workload principal."""

    def __init__(
        self,
        records: Callable[[], Mapping[str, TokenRecord]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._records = records
        self._clock = clock

    def __repr__(self) -> str:
        return "JoinTokenAuthenticator()"

    def authenticate(self, token: str) -> Principal | None:
        """The workload principal of `token`, or None."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret, _pin = parsed
        rec = self._records().get(token_id)
        if rec is None or not hmac.compare_digest(_sha256(secret), rec.secret_sha256):
            return None
        if rec.expires_at is not None and self._clock() >= rec.expires_at:
            return None
        return Principal("workload", rec.namespace, rec.service_account)
