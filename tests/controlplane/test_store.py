"""The SQLite store against etcd's model: tables for the rules, property tests against a
reference model (revisions, compare-and-swap, reads at a revision, watch order, compaction),
and lease expiry on a fake clock (restart grace included)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymesh_controlplane.store import (
    CompactedError,
    Compare,
    Delete,
    DeleteResult,
    EventType,
    FutureRevisionError,
    Get,
    GetResult,
    LeaseNotFoundError,
    Put,
    SqliteStore,
    StoreClosedError,
    StoreLockedError,
    WatchResponse,
    prefix_end,
)
from tests.controlplane.conftest import FakeClock

pytestmark = pytest.mark.anyio
T = TypeVar("T")


def run(fn: Callable[[Path], Awaitable[T]]) -> T:
    """Run an async test body against a fresh directory (for hypothesis examples)."""
    with tempfile.TemporaryDirectory() as d:
        return asyncio.run(fn(Path(d)))


async def open_store(path: Path, clock: FakeClock | None = None, **kw: Any) -> SqliteStore:
    return await SqliteStore.open(
        path / "s.db",
        clock=clock or FakeClock(),
        durable=False,
        expire_automatically=clock is None,
        **kw,
    )


async def drain(w: Any, until: int, timeout: float = 2.0) -> list[WatchResponse]:
    """Watch responses up to (and including) revision `until`."""
    out: list[WatchResponse] = []
    while not out or out[-1].revision < until:
        out.append(await asyncio.wait_for(w.__anext__(), timeout))
    return out


# ---------------------------------------------------------------------------- tables


def test_prefix_end() -> None:
    assert prefix_end("/a/") == "/a0"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("") is None
    assert prefix_end("\U0010ffff") is None


async def test_revisions_versions_and_reads(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        assert await s.current_revision() == 1  # etcd starts at 1
        r2 = await s.put("/a/x", b"1")
        r3 = await s.put("/a/x", b"2")
        r4 = await s.put("/a/y", b"3")
        assert (r2, r3, r4) == (2, 3, 4)
        rr = await s.range("/a/", prefix=True)
        assert rr.revision == 4
        x, y = rr.kvs
        assert (x.key, x.value, x.create_revision, x.mod_revision, x.version) == (
            "/a/x",
            b"2",
            2,
            3,
            2,
        )
        assert (y.key, y.create_revision, y.version) == ("/a/y", 4, 1)
        # a read in the past sees the value then
        old = await s.range("/a/x", revision=2)
        assert old.revision == 2 and old.kvs[0].value == b"1"
        with pytest.raises(FutureRevisionError):
            await s.range("/a/x", revision=99)
        # deleting a missing key changes nothing, not even the revision
        assert await s.delete("/nope") == 0
        assert await s.current_revision() == 4
        assert await s.delete("/a/", prefix=True) == 2
        assert await s.current_revision() == 5
        assert (await s.range("/a/", prefix=True)).kvs == ()
        # put after delete starts a new life: new create revision, version 1
        await s.put("/a/x", b"again")
        kv = (await s.range("/a/x")).kvs[0]
        assert (kv.create_revision, kv.version) == (6, 1)
    finally:
        await s.close()


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare("/k", "version", "=", 2), True),
        (Compare("/k", "version", ">", 2), False),
        (Compare("/k", "mod", "=", 3), True),
        (Compare("/k", "create", "=", 2), True),
        (Compare("/k", "create", "<", 2), False),
        (Compare("/k", "value", "=", b"v2"), True),
        (Compare("/k", "value", "!=", b"v2"), False),
        (Compare("/missing", "create", "=", 0), True),  # "does not exist"
        (Compare("/missing", "version", "=", 0), True),
        (Compare("/missing", "value", "=", b""), False),  # etcd: a value compare needs a key
        (Compare("/k", "lease", "=", 0), True),
    ],
)
async def test_compare_and_swap(tmp_path: Path, compare: Compare, holds: bool) -> None:
    s = await open_store(tmp_path)
    try:
        await s.put("/k", b"v1")
        await s.put("/k", b"v2")  # create 2, mod 3, version 2
        res = await s.txn([compare], [Put("/ok", b"1")], [Put("/fail", b"1")])
        assert res.succeeded is holds
        assert res.revision == 4
        assert bool((await s.range("/ok")).kvs) is holds
        assert bool((await s.range("/fail")).kvs) is not holds
    finally:
        await s.close()


async def test_txn_results_and_rules(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        await s.put("/a", b"1")
        res = await s.txn([], [Get("/a"), Put("/a", b"2"), Delete("/b"), Get("/a")])
        get1, put, dele, get2 = res.responses
        assert isinstance(get1, GetResult) and get1.kvs[0].value == b"1"
        assert put == type(put)(prev=get1.kvs[0])
        assert isinstance(dele, DeleteResult) and dele.deleted == ()
        assert isinstance(get2, GetResult) and get2.kvs[0].value == b"2"  # sees its own write
        with pytest.raises(ValueError, match="at most once"):
            await s.txn([], [Put("/x", b"1"), Put("/x", b"2")])
        with pytest.raises(LeaseNotFoundError):
            await s.txn([], [Put("/x", b"1", lease=12345)])
        assert (await s.range("/x")).kvs == ()  # nothing of a refused txn is written
        # a read-only txn does not bump the revision
        rev = await s.current_revision()
        assert (await s.txn([], [Get("/a")])).revision == rev
    finally:
        await s.close()


async def test_watch_live_catchup_and_filter(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        live = s.watch("/a/", prefix=True)
        one = s.watch("/a/x")
        await s.put("/a/x", b"1")
        await s.put("/b", b"2")  # not watched
        res = await s.txn([], [Put("/a/y", b"3"), Put("/a/x", b"4")])
        await s.delete("/a/y")
        got = await drain(live, res.revision + 1)
        assert [r.revision for r in got] == [2, 4, 5]
        assert [(e.type, e.kv.key) for e in got[1].events] == [
            (EventType.PUT, "/a/y"),
            (EventType.PUT, "/a/x"),
        ]
        assert got[2].events[0].type is EventType.DELETE
        assert [r.revision for r in await drain(one, 4)] == [2, 4]
        # a watch from the past replays the table, then follows live events without a gap
        past = s.watch("/a/", prefix=True, from_revision=3)
        await s.put("/a/z", b"6")
        assert [r.revision for r in await drain(past, 6)] == [4, 5, 6]
        await past.aclose()
        with pytest.raises(StopAsyncIteration):
            await past.__anext__()
    finally:
        await s.close()
    with pytest.raises(StoreClosedError):
        await live.__anext__()


async def test_watch_that_falls_behind_reads_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pymesh_controlplane.store.sqlite.MAX_PENDING", 3)
    s = await open_store(tmp_path)
    try:
        w = s.watch("/", prefix=True)
        for i in range(10):
            await s.put(f"/k{i}", b"v")
        await asyncio.sleep(0)
        got = await drain(w, 11)
        assert [r.revision for r in got] == list(range(2, 12))
    finally:
        await s.close()


async def test_compaction(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        for i in range(6):
            await s.put("/k", str(i).encode())  # revisions 2..7
        await s.put("/other", b"x")  # 8
        await s.compact(5)
        with pytest.raises(CompactedError) as info:
            await s.range("/k", revision=4)
        assert info.value.compact_revision == 5
        assert "resync" in str(info.value)
        assert (await s.range("/k", revision=5)).kvs[0].value == b"3"
        w = s.watch("/", prefix=True, from_revision=3)
        with pytest.raises(CompactedError):
            await w.__anext__()
        w2 = s.watch("/", prefix=True, from_revision=5)
        assert [r.revision for r in await drain(w2, 8)] == [5, 6, 7, 8]
    finally:
        await s.close()


async def test_automatic_compaction_keeps_recent_history(tmp_path: Path) -> None:
    s = await open_store(tmp_path, history_revisions=5)
    try:
        for i in range(30):
            await s.put("/k", str(i).encode())
        rev = await s.current_revision()
        assert (await s.range("/k", revision=rev - 4)).kvs[0].value == b"25"
        with pytest.raises(CompactedError):
            await s.range("/k", revision=2)
    finally:
        await s.close()


async def test_second_process_refused(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        with pytest.raises(StoreLockedError):
            await open_store(tmp_path)
    finally:
        await s.close()


# ---------------------------------------------------------------------------- leases


async def test_lease_expiry_on_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    s = await open_store(tmp_path, clock)
    try:
        short = await s.lease_grant(1.0)
        long = await s.lease_grant(10.0)
        await s.put("/w/a", b"1", lease=short.id)
        await s.put("/w/b", b"2", lease=short.id)
        await s.put("/w/c", b"3", lease=long.id)
        w = s.watch("/w/", prefix=True)
        clock.advance(0.9)
        assert await s.lease_keepalive(short.id) == 1.0  # renewed: 1 s from now
        clock.advance(0.9)
        await s.expire_due()
        assert len((await s.range("/w/", prefix=True)).kvs) == 3
        clock.advance(0.2)
        nxt = await s.expire_due()
        assert nxt == pytest.approx(clock() + 10.0 - 2.0)
        assert [kv.key for kv in (await s.range("/w/", prefix=True)).kvs] == ["/w/c"]
        # the keys vanish as DELETE events, in one revision
        (resp,) = await drain(w, await s.current_revision())
        assert {(e.type, e.kv.key) for e in resp.events} == {
            (EventType.DELETE, "/w/a"),
            (EventType.DELETE, "/w/b"),
        }
        with pytest.raises(LeaseNotFoundError):
            await s.lease_keepalive(short.id)
        assert await s.lease_info(short.id) is None
        info = await s.lease_info(long.id)
        assert info is not None and info.keys == ("/w/c",) and info.confirmed
        await s.lease_revoke(long.id)
        assert (await s.range("/w/", prefix=True)).kvs == ()
    finally:
        await s.close()


async def test_keepalive_after_the_deadline_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    s = await open_store(tmp_path, clock)
    try:
        lease = await s.lease_grant(1.0)
        await s.put("/x", b"1", lease=lease.id)
        clock.advance(1.5)  # past the deadline, before the expiry task ran
        with pytest.raises(LeaseNotFoundError):
            await s.lease_keepalive(lease.id)
        assert (await s.range("/x")).kvs == ()
    finally:
        await s.close()


async def test_leases_get_one_ttl_of_grace_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    s = await open_store(tmp_path, clock)
    alive = await s.lease_grant(2.0)
    dead = await s.lease_grant(2.0)
    await s.put("/alive", b"1", lease=alive.id)
    await s.put("/dead", b"1", lease=dead.id)
    await s.put("/plain", b"1")
    await s.close()
    clock.advance(100.0)  # down far longer than the TTL
    s = await open_store(tmp_path, clock)
    try:
        info = await s.lease_info(alive.id)
        assert info is not None and not info.confirmed and info.remaining == 2.0
        clock.advance(1.5)
        await s.lease_keepalive(alive.id)  # the workload heartbeats again
        assert (await s.lease_info(alive.id)).confirmed  # type: ignore[union-attr]
        clock.advance(1.0)
        await s.expire_due()
        keys = [kv.key for kv in (await s.range("/", prefix=True)).kvs]
        assert keys == ["/alive", "/plain"]
    finally:
        await s.close()


async def test_expiry_task_runs_on_real_time(tmp_path: Path) -> None:
    s = await SqliteStore.open(tmp_path / "s.db", durable=False)
    try:
        w = s.watch("/", prefix=True)
        lease = await s.lease_grant(0.05)
        await s.put("/x", b"1", lease=lease.id)
        got = await drain(w, 3, timeout=2.0)
        assert got[-1].events[0].type is EventType.DELETE
    finally:
        await s.close()


# ---------------------------------------------------------------------------- properties

KEYS = ["/a", "/a/b", "/a/c", "/b", "/b/x"]
key_st = st.sampled_from(KEYS)
value_st = st.binary(max_size=3)


@dataclass
class Model:
    """etcd's semantics, by the book: the oracle for the property tests."""

    rev: int = 1
    kv: dict[str, tuple[bytes, int, int, int]] = field(default_factory=dict)  # value,c,m,ver
    log: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)
    at: dict[int, dict[str, bytes]] = field(default_factory=lambda: {1: {}})

    def holds(self, c: Compare) -> bool:
        cur = self.kv.get(c.key)
        if c.target == "value":
            if cur is None:
                return False
            return cur[0] == c.value if c.op == "=" else cur[0] != c.value
        actual = (
            0 if cur is None else {"version": cur[3], "create": cur[1], "mod": cur[2]}[c.target]
        )
        assert isinstance(c.value, int)
        return {
            "=": actual == c.value,
            "!=": actual != c.value,
            "<": actual < c.value,
            ">": actual > c.value,
        }[c.op]

    def apply(self, ops: list[Put | Delete]) -> None:
        rev = self.rev + 1
        events: list[tuple[str, str]] = []
        for op in ops:
            if isinstance(op, Put):
                cur = self.kv.get(op.key)
                self.kv[op.key] = (
                    op.value,
                    cur[1] if cur else rev,
                    rev,
                    cur[3] + 1 if cur else 1,
                )
                events.append(("PUT", op.key))
            else:
                gone = [
                    k
                    for k in sorted(self.kv)
                    if (k.startswith(op.key) if op.prefix else k == op.key)
                ]
                for k in gone:
                    del self.kv[k]
                    events.append(("DELETE", k))
        if events:
            self.rev = rev
            self.log.append((rev, events))
            self.at[rev] = {k: v[0] for k, v in self.kv.items()}


single_op = st.one_of(
    st.builds(Put, key_st, value_st),
    st.builds(Delete, key_st),
)
compare_st = st.one_of(
    st.builds(
        Compare,
        key_st,
        st.sampled_from(["version", "create", "mod"]),
        st.sampled_from(["=", "!=", "<", ">"]),
        st.integers(0, 6),
    ),
    st.builds(Compare, key_st, st.just("value"), st.sampled_from(["=", "!="]), value_st),
)


def distinct(ops: list[Put | Delete]) -> list[Put | Delete]:
    seen: set[str] = set()
    out = []
    for op in ops:
        if op.key not in seen:
            seen.add(op.key)
            out.append(op)
    return out


step_st = st.one_of(
    st.tuples(st.just("put"), key_st, value_st),
    st.tuples(st.just("delete"), key_st, st.booleans()),
    st.tuples(
        st.just("txn"),
        st.lists(compare_st, max_size=2),
        st.lists(single_op, max_size=3).map(distinct),
        st.lists(single_op, max_size=2).map(distinct),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_st, max_size=14), probe=st.integers(1, 20))
def test_store_matches_the_model(steps: list[tuple[Any, ...]], probe: int) -> None:
    """Revisions rise by one per changing write and never otherwise; CAS decides as etcd does;
    reads now and at any revision match; a watch from the start and one from the past see
    every change, in order, exactly once."""

    async def body(d: Path) -> None:
        s = await open_store(d)
        m = Model()
        watch_all = s.watch("/", prefix=True)
        try:
            for step in steps:
                before = await s.current_revision()
                if step[0] == "put":
                    rev = await s.put(step[1], step[2])
                    m.apply([Put(step[1], step[2])])
                    assert rev == m.rev
                elif step[0] == "delete":
                    await s.delete(step[1], prefix=step[2])
                    m.apply([Delete(step[1], step[2])])
                else:
                    _, compares, ok_ops, fail_ops = step
                    expect = all(m.holds(c) for c in compares)
                    res = await s.txn(compares, ok_ops, fail_ops)
                    assert res.succeeded is expect
                    m.apply(ok_ops if expect else fail_ops)
                    assert res.revision == m.rev
                after = await s.current_revision()
                assert after == m.rev
                assert after in (before, before + 1)
                now = await s.range("/", prefix=True)
                assert {
                    kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version)
                    for kv in now.kvs
                } == m.kv
            # reads in the past
            r = min(probe, m.rev)
            past = await s.range("/", prefix=True, revision=r)
            known = max(k for k in m.at if k <= r)
            assert {kv.key: kv.value for kv in past.kvs} == m.at[known]
            # watches: from the start (live) and from the past (catch-up), same story
            expected = [(rev, ev) for rev, ev in m.log]
            late = s.watch("/", prefix=True, from_revision=2)
            for w in (watch_all, late):
                got = await drain(w, m.rev, timeout=2.0) if m.log else []
                assert [
                    (g.revision, [(e.type.value, e.kv.key) for e in g.events]) for g in got
                ] == expected
        finally:
            await s.close()

    run(body)


lease_step = st.one_of(
    st.tuples(st.just("advance"), st.floats(0.1, 1.5)),
    st.tuples(st.just("keepalive"), st.integers(0, 2)),
    st.tuples(st.just("expire")),
)


@settings(max_examples=40, deadline=None)
@given(
    ttls=st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=1, max_size=3),
    steps=st.lists(lease_step, max_size=12),
)
def test_lease_expiry_property(ttls: list[float], steps: list[tuple[Any, ...]]) -> None:
    """A key lives exactly while its lease was kept alive within its TTL."""

    async def body(d: Path) -> None:
        clock = FakeClock()
        s = await open_store(d, clock)
        try:
            leases = [await s.lease_grant(t) for t in ttls]
            deadline = {g.id: clock() + g.ttl for g in leases}
            for i, g in enumerate(leases):
                await s.put(f"/k{i}", b"v", lease=g.id)
            for step in steps:
                if step[0] == "advance":
                    clock.advance(step[1])
                elif step[0] == "keepalive":
                    g = leases[step[1] % len(leases)]
                    if clock() < deadline[g.id]:
                        await s.lease_keepalive(g.id)
                        deadline[g.id] = clock() + g.ttl
                    else:
                        with pytest.raises(LeaseNotFoundError):
                            await s.lease_keepalive(g.id)
                else:
                    await s.expire_due()
                    alive = {f"/k{i}" for i, g in enumerate(leases) if clock() < deadline[g.id]}
                    keys = {kv.key for kv in (await s.range("/", prefix=True)).kvs}
                    assert keys == alive
        finally:
            await s.close()

    run(body)
