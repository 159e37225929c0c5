"""The store on one SQLite file: etcd's model for one machine.

How this works:

- **One writer.** Every operation (reads too) runs on one dedicated thread that owns the only
  connection, so transactions are serialized without locks and the event loop never blocks on
  disk. The file is in WAL mode; `durable=True` (the default) fsyncs every commit.
- **Tables.** `kv` holds every live key with its create/mod revision, version and lease;
  `history` holds one row per change (PUT or DELETE), keyed by (revision, position in the
  transaction); `meta` holds the store revision and the compact revision; `lease` holds each
  lease's id and TTL. A transaction that changes anything bumps the revision by one and writes
  its rows to `kv` and `history` in the same SQLite transaction.
- **Reads at a revision** take, per key, the newest history row at or below it.
- **Compaction** deletes history below a revision, keeping the newest PUT of each key below it
  (so reads at the compact revision stay exact). It runs by itself every `history_revisions`
  revisions, keeping the last `history_revisions`.
- **Watches.** After each commit the writer thread schedules the revision's events onto the
  event loop (`call_soon_threadsafe`, so in commit order); each watch filters them into its own
  queue. A watch that starts in the past, or falls more than `MAX_PENDING` revisions behind,
  reads the history table until it has caught up, then follows live events again (duplicates
  are dropped by revision). A watch below the compact revision raises `CompactedError`.
- **Leases** live in memory (deadlines on the injected monotonic `clock`); only their id and TTL
  are written down. An expiry task revokes leases past their deadline, deleting their keys as
  DELETE events. After a restart every lease gets one TTL of grace (`LeaseInfo.confirmed` is
  False until its first keepalive): a workload that is still alive renews it, a dead one expires.
- A lock file (`<path>.lock`, `flock`) keeps a second process off the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pymesh_controlplane.store.base import (
    CompactedError,
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventType,
    FutureRevisionError,
    Get,
    GetResult,
    KeyValue,
    LeaseGrant,
    LeaseInfo,
    LeaseNotFoundError,
    Op,
    OpResult,
    Put,
    PutResult,
    RangeResult,
    StoreClosedError,
    StoreError,
    TxnResult,
    WatchResponse,
    prefix_end,
)

__all__ = ["SqliteStore", "StoreLockedError"]

T = TypeVar("T")

_PUT, _DELETE = 0, 1
MAX_PENDING = 1024  # live revisions a watch may hold unread before it falls back to the table
_HISTORY_BATCH = 512  # revisions read per catch-up query
_MIN_TTL = 0.01

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS history (
    revision INTEGER NOT NULL, sub INTEGER NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL,
    value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
    lease INTEGER NOT NULL, PRIMARY KEY (revision, sub)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_key ON history(key, revision);
CREATE TABLE IF NOT EXISTS lease (id INTEGER PRIMARY KEY, ttl REAL NOT NULL);
"""


class StoreLockedError(StoreError):
    """Another process has the store file open."""


@dataclass(slots=True)
class _Lease:
    ttl: float
    deadline: float
    confirmed: bool


def _key_clause(key: str, prefix: bool, column: str = "key") -> tuple[str, list[Any]]:
    if not prefix:
        return f"{column} = ?", [key]
    end = prefix_end(key)
    if end is None:
        return f"{column} >= ?", [key]
    return f"{column} >= ? AND {column} < ?", [key, end]


def _check_key(key: str) -> None:
    if not isinstance(key, str) or "\x00" in key:
        raise ValueError(f"invalid key {key!r}")


class SqliteStore:
    """The `Store` protocol on one SQLite file. Make one with `await SqliteStore.open(path)`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        history_revisions: int = 10_000,
        durable: bool = True,
        expiry_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._history_revisions = max(1, history_revisions)
        self._durable = durable
        self._expiry_interval = expiry_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pymesh-store")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        # owned by the writer thread
        self._rev = 1
        self._compact_rev = 0
        self._leases: dict[int, _Lease] = {}
        # owned by the event loop
        self._published_rev = 1
        self._watches: set[_SqliteWatch] = set()
        self._expiry_task: asyncio.Task[None] | None = None
        self._lease_wake: asyncio.Event | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"SqliteStore({str(self.path)!r}, revision={self._published_rev}, "
            f"leases={len(self._leases)}, watches={len(self._watches)})"
        )

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        history_revisions: int = 10_000,
        durable: bool = True,
        expiry_interval: float = 1.0,
        expire_automatically: bool = True,
    ) -> SqliteStore:
        """Open (or create) the store at `path` and start its lease expiry task.

        `expire_automatically=False` leaves expiry to `expire_due()` (tests with a fake clock).
        Raises `StoreLockedError` when another process has it open."""
        store = cls(
            path,
            clock=clock,
            history_revisions=history_revisions,
            durable=durable,
            expiry_interval=expiry_interval,
        )
        store._loop = asyncio.get_running_loop()
        store._lease_wake = asyncio.Event()
        try:
            await store._run(store._open_sync)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        store._published_rev = store._rev
        if expire_automatically:
            store._expiry_task = asyncio.create_task(store._expiry_loop(), name="store-expiry")
        return store

    async def close(self) -> None:
        """Stop the expiry task, end every watch (`StoreClosedError`) and close the file."""
        if self._closed:
            return
        self._closed = True
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        for w in list(self._watches):
            w._close(StoreClosedError())
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreLockedError(f"{self.path} is in use by another process") from exc
        self._lock_fd = fd
        new = not self.path.exists()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if new:
            os.chmod(self.path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")
        conn.executescript(_SCHEMA)
        self._conn = conn
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if "revision" not in meta:
            conn.execute("INSERT INTO meta VALUES ('revision', 1), ('compact_revision', 0)")
            meta = {"revision": 1, "compact_revision": 0}
        self._rev = int(meta["revision"])
        self._compact_rev = int(meta["compact_revision"])
        now = self._clock()
        # one TTL of grace for every lease: unknown until its workload heartbeats again
        for lease_id, ttl in conn.execute("SELECT id, ttl FROM lease").fetchall():
            self._leases[int(lease_id)] = _Lease(float(ttl), now + float(ttl), False)
        # keys whose lease row is gone cannot be renewed by anyone: drop them now
        orphans = [
            str(k)
            for (k,) in conn.execute(
                "SELECT key FROM kv WHERE lease != 0 AND lease NOT IN (SELECT id FROM lease)"
            )
        ]
        if orphans:
            self._write_sync([], [Delete(k) for k in orphans], [])

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreClosedError()
        loop = self._loop or asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (writer thread only)."""
        if self._conn is None:
            raise StoreClosedError()
        return self._conn

    # ------------------------------------------------------------------ reads

    async def current_revision(self) -> int:
        """The store revision now."""
        return await self._run(lambda: self._rev)

    async def range(
        self, key: str, *, prefix: bool = False, revision: int | None = None
    ) -> RangeResult:
        """The keys equal to `key` (or under it), now or at `revision` (0 or None: now)."""
        _check_key(key)
        return await self._run(self._range_sync, key, prefix, revision)

    def _range_sync(self, key: str, prefix: bool, revision: int | None) -> RangeResult:
        if revision is None or revision <= 0 or revision == self._rev:
            return RangeResult(self._rev, self._range_now(key, prefix))
        if revision > self._rev:
            raise FutureRevisionError(revision, self._rev)
        if revision < self._compact_rev:
            raise CompactedError(revision, self._compact_rev)
        where, args = _key_clause(key, prefix, "h.key")
        rows = self.conn.execute(
            "SELECT h.key, h.type, h.value, h.create_rev, h.revision, h.version, h.lease "
            "FROM history h JOIN (SELECT key, MAX(revision) AS r FROM history h "
            f"WHERE {where} AND revision <= ? GROUP BY key) m "
            "ON h.key = m.key AND h.revision = m.r ORDER BY h.key",
            [*args, revision],
        ).fetchall()
        kvs = tuple(
            KeyValue(str(k), bytes(v), int(c), int(m), int(ver), int(ls))
            for k, t, v, c, m, ver, ls in rows
            if t == _PUT
        )
        return RangeResult(revision, kvs)

    def _range_now(self, key: str, prefix: bool) -> tuple[KeyValue, ...]:
        where, args = _key_clause(key, prefix)
        rows = self.conn.execute(
            "SELECT key, value, create_rev, mod_rev, version, lease FROM kv "
            f"WHERE {where} ORDER BY key",
            args,
        ).fetchall()
        return tuple(
            KeyValue(str(k), bytes(v), int(c), int(m), int(ver), int(ls))
            for k, v, c, m, ver, ls in rows
        )

    def _get_one(self, key: str) -> KeyValue | None:
        found = self._range_now(key, False)
        return found[0] if found else None

    # ------------------------------------------------------------------ writes

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Compare-and-swap: `success` ops if every compare holds, else `failure` ops."""
        for c in compares:
            _check_key(c.key)
        for op in (*success, *failure):
            _check_key(op.key)
        return await self._run(self._txn_sync, tuple(compares), tuple(success), tuple(failure))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write one key; returns the new revision."""
        return (await self.txn([], [Put(key, value, lease)])).revision

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete one key (or a prefix); returns how many keys were deleted."""
        result = await self.txn([], [Delete(key, prefix)])
        first = result.responses[0]
        assert isinstance(first, DeleteResult)
        return len(first.deleted)

    def _txn_sync(
        self, compares: tuple[Compare, ...], success: tuple[Op, ...], failure: tuple[Op, ...]
    ) -> TxnResult:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            ok = all(c.holds(self._get_one(c.key)) for c in compares)
            ops = success if ok else failure
            results, events = self._apply_ops(ops)
            rev = self._commit_events(events)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._after_commit(rev, events)
        return TxnResult(ok, self._rev, tuple(results))

    def _write_sync(self, compares: list[Compare], ops: list[Op], failure: list[Op]) -> TxnResult:
        return self._txn_sync(tuple(compares), tuple(ops), tuple(failure))

    def _apply_ops(self, ops: tuple[Op, ...]) -> tuple[list[OpResult], list[Event]]:
        puts = [op.key for op in ops if isinstance(op, Put)]
        singles = [op.key for op in ops if isinstance(op, Delete) and not op.prefix]
        if len(set(puts + singles)) != len(puts + singles):
            raise ValueError("a key may be written at most once per transaction")
        for op in ops:
            if isinstance(op, Delete) and op.prefix and any(k.startswith(op.key) for k in puts):
                raise ValueError("a put overlaps a prefix delete in the same transaction")
            if isinstance(op, Put):
                if not isinstance(op.value, bytes):
                    raise TypeError("values are bytes")
                if op.lease and op.lease not in self._leases:
                    raise LeaseNotFoundError(op.lease)
        rev = self._rev + 1
        conn = self.conn
        results: list[OpResult] = []
        events: list[Event] = []
        for op in ops:
            if isinstance(op, Get):
                results.append(GetResult(self._range_now(op.key, op.prefix)))
            elif isinstance(op, Put):
                prev = self._get_one(op.key)
                kv = KeyValue(
                    op.key,
                    op.value,
                    prev.create_revision if prev else rev,
                    rev,
                    prev.version + 1 if prev else 1,
                    op.lease,
                )
                conn.execute(
                    "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?, ?)",
                    (kv.key, kv.value, kv.create_revision, rev, kv.version, kv.lease),
                )
                results.append(PutResult(prev))
                events.append(Event(EventType.PUT, kv))
            else:
                gone = self._range_now(op.key, op.prefix)
                if gone:
                    where, args = _key_clause(op.key, op.prefix)
                    conn.execute(f"DELETE FROM kv WHERE {where}", args)
                for old in gone:
                    events.append(Event(EventType.DELETE, KeyValue(old.key, b"", 0, rev, 0, 0)))
                results.append(DeleteResult(gone))
        return results, events

    def _commit_events(self, events: list[Event]) -> int:
        if not events:
            return self._rev
        rev = self._rev + 1
        self.conn.executemany(
            "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    rev,
                    i,
                    e.kv.key,
                    _PUT if e.type is EventType.PUT else _DELETE,
                    e.kv.value,
                    e.kv.create_revision,
                    e.kv.version,
                    e.kv.lease,
                )
                for i, e in enumerate(events)
            ],
        )
        self.conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (rev,))
        return rev

    def _after_commit(self, rev: int, events: list[Event]) -> None:
        if not events:
            return
        self._rev = rev
        resp = WatchResponse(rev, tuple(events))
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._publish, resp)
        if rev - self._compact_rev > 2 * self._history_revisions:
            self._compact_sync(rev - self._history_revisions)

    # ------------------------------------------------------------------ compaction

    async def compact(self, revision: int) -> None:
        """Forget history below `revision` (keeping each key's newest PUT below it)."""
        await self._run(self._compact_sync, revision)

    def _compact_sync(self, revision: int) -> None:
        if revision > self._rev:
            raise FutureRevisionError(revision, self._rev)
        if revision <= self._compact_rev:
            return
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "DELETE FROM history WHERE revision < ?1 AND NOT (type = ?2 AND (key, revision) "
                "IN (SELECT key, MAX(revision) FROM history WHERE revision < ?1 GROUP BY key))",
                (revision, _PUT),
            )
            conn.execute("UPDATE meta SET value = ? WHERE name = 'compact_revision'", (revision,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._compact_rev = revision

    # ------------------------------------------------------------------ leases

    async def lease_grant(self, ttl: float) -> LeaseGrant:
        """A new lease of `ttl` seconds (at least 10 ms)."""
        grant = await self._run(self._grant_sync, max(float(ttl), _MIN_TTL))
        if self._lease_wake is not None:
            self._lease_wake.set()
        return grant

    def _grant_sync(self, ttl: float) -> LeaseGrant:
        lease_id = secrets.randbits(62) or 1
        while lease_id in self._leases:
            lease_id = secrets.randbits(62) or 1
        self.conn.execute("INSERT INTO lease VALUES (?, ?)", (lease_id, ttl))
        self._leases[lease_id] = _Lease(ttl, self._clock() + ttl, True)
        return LeaseGrant(lease_id, ttl)

    async def lease_keepalive(self, lease: int) -> float:
        """Renew `lease` for its TTL; returns the TTL. A lease already past its deadline is
        expired now (its keys deleted) and `LeaseNotFoundError` raised."""
        return await self._run(self._keepalive_sync, lease)

    def _keepalive_sync(self, lease: int) -> float:
        state = self._leases.get(lease)
        if state is None:
            raise LeaseNotFoundError(lease)
        now = self._clock()
        if now >= state.deadline:
            self._revoke_sync(lease)
            raise LeaseNotFoundError(lease)
        state.deadline = now + state.ttl
        state.confirmed = True
        return state.ttl

    async def lease_revoke(self, lease: int) -> None:
        """End `lease` now, deleting its keys (one revision)."""
        await self._run(self._revoke_sync, lease)

    def _revoke_sync(self, lease: int) -> None:
        if lease not in self._leases:
            raise LeaseNotFoundError(lease)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            keys = [str(k) for (k,) in conn.execute("SELECT key FROM kv WHERE lease = ?", (lease,))]
            _, events = self._apply_ops(tuple(Delete(k) for k in keys))
            rev = self._commit_events(events)
            conn.execute("DELETE FROM lease WHERE id = ?", (lease,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        del self._leases[lease]
        self._after_commit(rev, events)

    async def lease_info(self, lease: int) -> LeaseInfo | None:
        """A lease's TTL, seconds left, keys and whether it was confirmed since a restart."""
        return await self._run(self._info_sync, lease)

    def _info_sync(self, lease: int) -> LeaseInfo | None:
        state = self._leases.get(lease)
        if state is None:
            return None
        keys = tuple(
            str(k)
            for (k,) in self.conn.execute(
                "SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease,)
            )
        )
        remaining = max(0.0, state.deadline - self._clock())
        return LeaseInfo(lease, state.ttl, remaining, keys, state.confirmed)

    async def expire_due(self) -> float | None:
        """Revoke every lease past its deadline now; returns the next deadline (None: no
        lease). The expiry task calls it; tests with a fake clock call it directly."""
        return await self._run(self._expire_sync)

    def _expire_sync(self) -> float | None:
        now = self._clock()
        for lease_id, state in list(self._leases.items()):
            if state.deadline <= now:
                self._revoke_sync(lease_id)
        return min((s.deadline for s in self._leases.values()), default=None)

    async def _expiry_loop(self) -> None:
        assert self._lease_wake is not None
        while not self._closed:
            self._lease_wake.clear()  # before expiring: a grant meanwhile wakes the next wait
            try:
                nxt = await self.expire_due()
            except StoreClosedError:
                return
            delay = self._expiry_interval
            if nxt is not None:
                delay = min(delay, max(nxt - self._clock(), 0.0) + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lease_wake.wait(), delay)

    # ------------------------------------------------------------------ watches

    def watch(
        self, key: str, *, prefix: bool = False, from_revision: int | None = None
    ) -> _SqliteWatch:
        """Changes of `key` (or under it) from `from_revision` on (None or 0: after now)."""
        _check_key(key)
        if self._closed:
            raise StoreClosedError()
        start = from_revision if from_revision and from_revision > 0 else self._published_rev + 1
        w = _SqliteWatch(self, key, prefix, start, catchup=start <= self._published_rev)
        self._watches.add(w)
        return w

    def _publish(self, resp: WatchResponse) -> None:
        self._published_rev = max(self._published_rev, resp.revision)
        for w in list(self._watches):
            w._offer(resp)

    async def _history(
        self, key: str, prefix: bool, from_rev: int
    ) -> tuple[list[WatchResponse], int, bool]:
        return await self._run(self._history_sync, key, prefix, from_rev)

    def _history_sync(
        self, key: str, prefix: bool, from_rev: int
    ) -> tuple[list[WatchResponse], int, bool]:
        """Responses for revisions from_rev.. (one batch), the last revision covered, and
        whether that reached the store revision."""
        if from_rev < self._compact_rev:
            raise CompactedError(from_rev, self._compact_rev)
        upto = min(self._rev, from_rev + _HISTORY_BATCH - 1)
        where, args = _key_clause(key, prefix)
        rows = self.conn.execute(
            "SELECT revision, key, type, value, create_rev, version, lease FROM history "
            f"WHERE revision >= ? AND revision <= ? AND {where} ORDER BY revision, sub",
            [from_rev, upto, *args],
        ).fetchall()
        grouped: dict[int, list[Event]] = {}
        for rev, k, t, v, c, ver, ls in rows:
            kind = EventType.PUT if t == _PUT else EventType.DELETE
            grouped.setdefault(int(rev), []).append(
                Event(kind, KeyValue(str(k), bytes(v), int(c), int(rev), int(ver), int(ls)))
            )
        out = [WatchResponse(rev, tuple(evs)) for rev, evs in grouped.items()]
        return out, upto, upto >= self._rev


class _SqliteWatch:
    """One watch on a `SqliteStore` (see the module docstring for how it catches up)."""

    def __init__(
        self, store: SqliteStore, key: str, prefix: bool, start: int, *, catchup: bool
    ) -> None:
        self._store = store
        self._key = key
        self._prefix = prefix
        self._next = start  # the lowest revision not delivered yet
        self._catchup = catchup
        self._collect = True  # whether live events are queued
        self._lagged = False  # live events were dropped: read them from the table
        self._pending: deque[WatchResponse] = deque()
        self._buffer: deque[WatchResponse] = deque()
        self._read_upto = start - 1  # revisions up to here came from the table
        self._wake = asyncio.Event()
        self._error: BaseException | None = None
        self._closed = False

    def __repr__(self) -> str:
        kind = "prefix" if self._prefix else "key"
        return f"<watch {kind} {self._key!r} next={self._next} catchup={self._catchup}>"

    def __aiter__(self) -> AsyncIterator[WatchResponse]:
        return self

    def _matches(self, key: str) -> bool:
        return key.startswith(self._key) if self._prefix else key == self._key

    def _offer(self, resp: WatchResponse) -> None:
        if self._closed or not self._collect or resp.revision < self._next:
            return
        events = tuple(e for e in resp.events if self._matches(e.kv.key))
        if not events:
            return
        if len(self._pending) >= MAX_PENDING:
            # too far behind: drop the queue and read the table instead
            self._pending.clear()
            self._collect = False
            self._lagged = True
        elif len(events) == len(resp.events):
            self._pending.append(resp)
        else:
            self._pending.append(WatchResponse(resp.revision, events))
        self._wake.set()

    def _close(self, error: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._store._watches.discard(self)
        self._wake.set()

    async def aclose(self) -> None:
        """Stop watching."""
        self._close(None)

    async def __anext__(self) -> WatchResponse:
        while True:
            if self._buffer:
                resp = self._buffer.popleft()
                if resp.revision < self._next:
                    continue
                self._next = resp.revision + 1
                return resp
            # everything read from the table so far was delivered
            self._next = max(self._next, self._read_upto + 1)
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            if self._catchup or self._lagged:
                self._pending.clear()
                self._collect = True
                self._lagged = False
                try:
                    responses, upto, done = await self._store._history(
                        self._key, self._prefix, self._next
                    )
                except BaseException as exc:
                    self._close(exc if isinstance(exc, StoreError) else None)
                    raise
                self._buffer.extend(responses)
                self._read_upto = upto
                self._catchup = not done
                continue
            if self._pending:
                while self._pending:
                    resp = self._pending.popleft()
                    if resp.revision > self._read_upto:
                        self._buffer.append(resp)
                continue
            self._wake.clear()
            await self._wake.wait()
