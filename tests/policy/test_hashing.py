"""Consistent hashing as tables: the hash key of a request, the cookie Envoy would set, and the
ring hash / Maglev properties (stickiness, spread, ~1/N keys move when one of N goes)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from pymesh.config.model import ConsistentHash
from pymesh.policy.hashing import (
    HashPolicy,
    Maglev,
    RingHash,
    cookie_value,
    hash64,
    query_value,
    request_hash,
    set_cookie_value,
)


@dataclass(frozen=True)
class Ep:
    label: str
    weight: int = 1


def eps(n: int) -> list[Ep]:
    return [Ep(f"10.0.0.{i}:8080") for i in range(n)]


KEYS = [hash64(f"user-{i}") for i in range(4000)]


def test_hash64_is_stable_and_seeded() -> None:
    assert hash64("abc") == hash64("abc")
    assert hash64("abc") != hash64("abd")
    assert hash64("abc", seed=1) != hash64("abc")
    assert 0 <= hash64("x") < 2**64


@pytest.mark.parametrize(
    ("header", "name", "expected"),
    [
        ("user=alice", "user", "alice"),
        ('a=1; user="bob"; b=2', "user", "bob"),
        ("a=1;user=carol", "user", "carol"),
        ("a=1", "user", None),
        (None, "user", None),
        ("username=x", "user", None),
        ("user=", "user", ""),
    ],
)
def test_cookie_value(header: str | None, name: str, expected: str | None) -> None:
    assert cookie_value(header, name) == expected


@pytest.mark.parametrize(
    ("query", "name", "expected"),
    [
        ("a=1&user=7", "user", "7"),
        ("user=7&user=8", "user", "7"),
        ("user", "user", ""),
        ("", "user", None),
        ("users=1", "user", None),
    ],
)
def test_query_value(query: str, name: str, expected: str | None) -> None:
    assert query_value(query, name) == expected


@pytest.mark.parametrize(
    ("ttl", "path", "attributes", "expected"),
    [
        (3600.0, "/", (), 'sid="v"; Max-Age=3600; Path=/; HttpOnly'),
        (0.0, "", (), 'sid="v"; HttpOnly'),
        (
            1.5,
            "/a",
            (("SameSite", "Lax"), ("Secure", "")),
            'sid="v"; Max-Age=1; Path=/a; SameSite=Lax; Secure; HttpOnly',
        ),
    ],
)
def test_set_cookie_value_as_envoy_writes_it(
    ttl: float, path: str, attributes: tuple[tuple[str, str], ...], expected: str
) -> None:
    assert set_cookie_value("sid", "v", path, ttl, attributes) == expected


def _headers(d: dict[str, str]):  # type: ignore[no-untyped-def]
    return d.get


@pytest.mark.parametrize(
    ("spec", "headers", "query", "key_of", "cookie"),
    [
        (ConsistentHash("header", "x-user"), {"x-user": "alice"}, "", "alice", False),
        (ConsistentHash("header", "x-user"), {}, "", None, False),
        (ConsistentHash("cookie", "sid"), {"cookie": "sid=abc"}, "", "abc", False),
        (ConsistentHash("cookie", "sid"), {}, "", None, False),  # no ttl: never made up
        (ConsistentHash("query", "u"), {}, "u=9&x=1", "9", False),
        (ConsistentHash("query", "u"), {}, "x=1", None, False),
        (ConsistentHash("source_ip"), {}, "", "10.1.2.3", False),
    ],
)
def test_request_hash(
    spec: ConsistentHash,
    headers: dict[str, str],
    query: str,
    key_of: str | None,
    cookie: bool,
) -> None:
    key, set_cookie = request_hash(spec, headers.get, query, "10.1.2.3", random.Random(1))
    assert key == (hash64(key_of) if key_of is not None else None)
    assert (set_cookie is not None) is cookie


def test_cookie_with_ttl_is_generated_when_absent_and_hashes_its_value() -> None:
    spec = ConsistentHash("cookie", "sid", cookie_path="/", cookie_ttl=60.0)
    key, set_cookie = request_hash(spec, {}.get, "", "", random.Random(7))
    assert set_cookie is not None
    value = set_cookie.split('"')[1]
    assert len(value) == 16 and int(value, 16) >= 0
    assert set_cookie == f'sid="{value}"; Max-Age=60; Path=/; HttpOnly'
    assert key == hash64(value)
    # the next request carries it back: same key, nothing generated
    key2, again = request_hash(spec, {"cookie": f'sid="{value}"'}.get, "", "", random.Random(8))
    assert (key2, again) == (key, None)


TABLES = [
    pytest.param(lambda e: RingHash(e, 1024), id="ring"),
    pytest.param(lambda e: Maglev(e, 65537), id="maglev"),
    pytest.param(lambda e: Maglev(e, 5003), id="maglev-small"),
]


@pytest.mark.parametrize("make", TABLES)
def test_a_key_stays_on_one_endpoint(make) -> None:  # type: ignore[no-untyped-def]
    a = make(eps(5))
    b = make(eps(5))  # rebuilt from the same endpoints: same placement
    assert [a.pick(k) for k in KEYS] == [a.pick(k) for k in KEYS] == [b.pick(k) for k in KEYS]


@pytest.mark.parametrize("make", TABLES)
@pytest.mark.parametrize("n", [3, 5, 10])
def test_removing_one_of_n_moves_about_one_nth_of_keys(make, n: int) -> None:  # type: ignore[no-untyped-def]
    full = eps(n)
    before = make(full)
    gone = full[n // 2]
    after = make([e for e in full if e is not gone])
    moved = 0
    for k in KEYS:
        was = before.endpoints[before.pick(k)]
        now = after.endpoints[after.pick(k)]
        if was is not now:
            moved += 1
            if isinstance(before, RingHash):  # a ring moves only the keys the endpoint owned
                assert was is gone
    share = moved / len(KEYS)
    assert abs(share - 1 / n) < 0.6 / n, (share, 1 / n)


@pytest.mark.parametrize("make", TABLES)
def test_keys_spread_over_endpoints(make) -> None:  # type: ignore[no-untyped-def]
    t = make(eps(4))
    counts = Counter(t.pick(k) for k in KEYS)
    assert len(counts) == 4
    assert min(counts.values()) > len(KEYS) / 4 * 0.6


@pytest.mark.parametrize("make", TABLES)
def test_weights_are_proportional(make) -> None:  # type: ignore[no-untyped-def]
    t = make([Ep("a:1", 3), Ep("b:1", 1)])
    counts = Counter(t.pick(k) for k in KEYS)
    assert 2.2 < counts[0] / counts[1] < 4.0


def test_ring_size_at_least_minimum_and_capped() -> None:
    assert len(RingHash(eps(3), 1024)) >= 1024
    assert len(RingHash(eps(3), 10)) >= 10
    assert len(RingHash([Ep("a:1")], 1)) == 1


def test_maglev_table_is_full_and_balanced() -> None:
    m = Maglev(eps(3), 65537)
    assert -1 not in m.table
    counts = Counter(m.table)
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("make", TABLES)
def test_a_retry_avoids_the_endpoint_already_tried(make) -> None:  # type: ignore[no-untyped-def]
    e = eps(4)
    t = make(e)
    for k in KEYS[:200]:
        first = e[t.pick(k)]
        second = e[t.pick(k, avoid={first})]
        assert second is not first
        assert e[t.pick(k, avoid=set(e))] is first  # nothing else left: the hashed one


def test_hash_policy_sticks_and_caches_tables_by_list_identity() -> None:
    pol = HashPolicy("RING_HASH", 1024)
    e = eps(5)
    rng = random.Random(1)
    picks = {k: pol.pick(e, rng, (), k) for k in KEYS[:100]}
    assert all(pol.pick(e, rng, (), k) is picks[k] for k in KEYS[:100])
    assert pol.table(e) is pol.table(e)
    assert pol.table(list(e)) is not pol.table(e)


def test_hash_policy_without_a_key_picks_at_random() -> None:
    pol = HashPolicy("MAGLEV", 5003)
    e = eps(5)
    rng = random.Random(3)
    seen = Counter(pol.pick(e, rng, (), None).label for _ in range(500))
    assert len(seen) == 5
