"""The store protocol: etcd's data model, so the SQLite store and a later etcd store are one type.

What the control plane keeps lives in one revisioned key space, as in etcd (API v3):

- every write transaction that changes something bumps the store **revision** by one; every key
  remembers the revision that created it (`create_revision`), the one that last changed it
  (`mod_revision`) and how many times it was written since it was created (`version`);
- `range` reads one key or a prefix, now or at an earlier revision;
- `txn` is compare-and-swap: if every compare holds, the success ops run, else the failure ops,
  atomically, under one new revision;
- `watch` streams the changes from a revision on, grouped per revision; a revision that was
  compacted away raises `CompactedError` (the watcher must resync: range, then watch from the
  range's revision + 1);
- leases: keys written with a lease vanish (as DELETE events) when the lease expires or is
  revoked; `lease_keepalive` renews it.

The store revision is the config version the control plane hands to agents. Nothing here is
SQLite's: keys are text, values bytes, revisions and lease ids integers, TTLs seconds.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "CompactedError",
    "Compare",
    "Delete",
    "DeleteResult",
    "Event",
    "EventType",
    "FutureRevisionError",
    "Get",
    "GetResult",
    "KeyValue",
    "LeaseGrant",
    "LeaseInfo",
    "LeaseNotFoundError",
    "Op",
    "OpResult",
    "Put",
    "PutResult",
    "RangeResult",
    "Store",
    "StoreClosedError",
    "StoreError",
    "TxnResult",
    "Watch",
    "WatchResponse",
    "prefix_end",
]


class StoreError(Exception):
    """Base of every store error."""


class CompactedError(StoreError):
    """The revision asked for was compacted away: resync (range now, watch from there)."""

    def __init__(self, revision: int, compact_revision: int) -> None:
        self.revision = revision
        self.compact_revision = compact_revision
        super().__init__(
            f"revision {revision} was compacted (the oldest revision kept is {compact_revision}): "
            "resync with a full range and watch from its revision + 1"
        )


class FutureRevisionError(StoreError):
    """A range asked for a revision the store has not reached yet."""

    def __init__(self, revision: int, current: int) -> None:
        self.revision = revision
        self.current = current
        super().__init__(f"revision {revision} is in the future (the store is at {current})")


class LeaseNotFoundError(StoreError):
    """The lease does not exist (never granted, revoked, or expired)."""

    def __init__(self, lease: int) -> None:
        self.lease = lease
        super().__init__(f"lease {lease} not found (expired or revoked)")


class StoreClosedError(StoreError):
    """The store was closed."""

    def __init__(self) -> None:
        super().__init__("the store is closed")


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as stored: its value and its revisions (etcd's mvccpb.KeyValue).

    For a DELETE event, `value` is empty, `version` 0 and `mod_revision` the deleting revision.
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class EventType(enum.Enum):
    """What happened to a key."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one key."""

    type: EventType
    kv: KeyValue

    @property
    def revision(self) -> int:
        """The revision of the change."""
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """The matching changes of one revision (one transaction), in the order they were made."""

    revision: int
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class RangeResult:
    """A read: the keys found (sorted by key) and the store revision the read saw."""

    revision: int
    kvs: tuple[KeyValue, ...]


CompareTarget = Literal["version", "create", "mod", "value", "lease"]
CompareOp = Literal["=", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction, as etcd's: `target(key) op value`.

    A missing key has version, create and mod revision 0 and lease 0; a compare on the value of
    a missing key is false (as in etcd). Values compare as bytes, the others as integers.
    """

    key: str
    target: CompareTarget
    op: CompareOp
    value: int | bytes

    def holds(self, kv: KeyValue | None) -> bool:
        """Whether the condition holds for `kv` (None: the key is missing)."""
        if self.target == "value":
            if kv is None or not isinstance(self.value, bytes):
                return False
            return _cmp(kv.value, self.op, self.value)
        if isinstance(self.value, bytes):
            return False
        if kv is None:
            actual = 0
        elif self.target == "version":
            actual = kv.version
        elif self.target == "create":
            actual = kv.create_revision
        elif self.target == "mod":
            actual = kv.mod_revision
        else:
            actual = kv.lease
        return _cmp(actual, self.op, self.value)


def _cmp(a: int | bytes, op: CompareOp, b: int | bytes) -> bool:
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b  # type: ignore[operator]
    return a > b  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class Put:
    """Write `value` at `key` (attached to `lease` when not 0)."""

    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete `key` (every key under it when `prefix`)."""

    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    """Read `key` (every key under it when `prefix`) inside a transaction."""

    key: str
    prefix: bool = False


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class PutResult:
    """A put's result: the key as it was before (None if it was new)."""

    prev: KeyValue | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """A delete's result: the keys it removed, as they were."""

    deleted: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class GetResult:
    """A get's result inside a transaction."""

    kvs: tuple[KeyValue, ...]


OpResult = PutResult | DeleteResult | GetResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether the compares held, the store revision after the transaction, and one result per
    op that ran (success ops when `succeeded`, else failure ops)."""

    succeeded: bool
    revision: int
    responses: tuple[OpResult, ...]


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A granted lease."""

    id: int
    ttl: float


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease's state: TTL, seconds left, attached keys; `confirmed` is False for a lease
    re-granted after a restart that has not been kept alive since."""

    id: int
    ttl: float
    remaining: float
    keys: tuple[str, ...]
    confirmed: bool = True


@runtime_checkable
class Watch(Protocol):
    """A running watch: iterate for `WatchResponse`s; `aclose()` stops it."""

    def __aiter__(self) -> AsyncIterator[WatchResponse]: ...

    async def __anext__(self) -> WatchResponse: ...

    async def aclose(self) -> None: ...


class Store(Protocol):
    """The etcd-shaped store the control plane runs on (SQLite now, etcd later)."""

    async def range(
        self, key: str, *, prefix: bool = False, revision: int | None = None
    ) -> RangeResult:
        """The keys equal to `key` (or under it, when `prefix`), now or at `revision`.

        Raises `CompactedError` for a compacted revision, `FutureRevisionError` past the end."""
        ...

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Compare-and-swap: run `success` if every compare holds, else `failure`, atomically.

        A key may be written at most once per transaction. Raises `LeaseNotFoundError` when a
        put names an unknown lease (nothing is written)."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write one key; returns the new revision."""
        ...

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete one key (or a prefix); returns how many keys were deleted."""
        ...

    def watch(self, key: str, *, prefix: bool = False, from_revision: int | None = None) -> Watch:
        """Changes of `key` (or under it) from `from_revision` on (default: from now)."""
        ...

    async def lease_grant(self, ttl: float) -> LeaseGrant:
        """A new lease of `ttl` seconds."""
        ...

    async def lease_keepalive(self, lease: int) -> float:
        """Renew a lease for its TTL; returns the TTL. Raises `LeaseNotFoundError`."""
        ...

    async def lease_revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys. Raises `LeaseNotFoundError`."""
        ...

    async def lease_info(self, lease: int) -> LeaseInfo | None:
        """A lease's state, or None when it does not exist."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget the history before `revision` (reads and watches before it then fail)."""
        ...

    async def current_revision(self) -> int:
        """The store revision now."""
        ...

    async def close(self) -> None:
        """Stop: end the watches and release the storage."""
        ...


def prefix_end(prefix: str) -> str | None:
    """The smallest key greater than every key starting with `prefix` (None: no upper bound).

    Keys order by code point, which is the byte order of their UTF-8 encoding (etcd's order)."""
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None
