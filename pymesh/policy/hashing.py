"""Consistent hashing: the request's hash key, a Ketama ring and a Maglev table, as Envoy does.

- `request_hash` computes a call's 64-bit hash from `consistentHash`: a header, a cookie (made
  up and returned for `Set-Cookie` when absent and a `ttl` is set, as Envoy does), a query
  parameter, or the caller's own address. No key → None, and the balancer picks at random
  (Envoy's behaviour).
- `RingHash` is a Ketama ring: each endpoint owns `minimum_ring_size` points per unit of
  weight; a key goes to the first point at or after its hash, wrapping around.
- `Maglev` is Envoy's Maglev table (a prime `table_size`, default 65537): each endpoint fills
  slots in the order of its own permutation, in turn, weighted; a key goes to `table[h % size]`.

Both keep a key on one endpoint while the endpoint set is unchanged, and removing one of N
endpoints moves about 1/N of the keys (the ones that were on it).

The hash function is BLAKE2b with an 8-byte digest (`hashlib`): stable across processes and
Python versions (unlike `hash()`), fast for short inputs, and well mixed. Envoy uses xxHash64;
the placement differs from Envoy's, the properties are the same. Everything here is pure.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Collection, Sequence
from hashlib import blake2b
from typing import Protocol, TypeVar

MAX_RING_SIZE = 8_388_608  # Envoy's maximum_ring_size default
_MASK64 = (1 << 64) - 1
_POINTS = struct.Struct("<8Q").unpack


def hash64(data: str, seed: int = 0) -> int:
    """A stable 64-bit hash of `data` (BLAKE2b-64, keyed by `seed` when non-zero)."""
    h = blake2b(data.encode("utf-8", "surrogateescape"), digest_size=8)
    if seed:
        h.update(seed.to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little")


class RandomSource(Protocol):
    """The part of `random.Random` hashing uses (a seeded instance in tests)."""

    def randrange(self, stop: int, /) -> int:
        """An int in [0, stop)."""
        ...


class HashSpec(Protocol):
    """The part of `pymesh.config.model.ConsistentHash` the key computation reads."""

    @property
    def key(self) -> str:
        """`header`, `cookie`, `query` or `source_ip`."""
        ...

    @property
    def name(self) -> str:
        """The header (lower case), cookie or query parameter name."""
        ...

    @property
    def cookie_path(self) -> str:
        """`Path` of a generated cookie ("" = none)."""
        ...

    @property
    def cookie_ttl(self) -> float | None:
        """`Max-Age` of a generated cookie; None = never generate one; 0 = a session cookie."""
        ...

    @property
    def cookie_attributes(self) -> tuple[tuple[str, str], ...]:
        """Extra attributes of a generated cookie."""
        ...


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The value of cookie `name` in a `Cookie` header (surrounding quotes removed), or None."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        k, eq, v = part.strip().partition("=")
        if eq and k.strip() == name:
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            return v
    return None


def query_value(query: str, name: str) -> str | None:
    """The raw value of the first query parameter `name` (a bare `name` gives ""), or None."""
    if not query:
        return None
    for part in query.split("&"):
        k, _, v = part.partition("=")
        if k == name:
            return v
    return None


def set_cookie_value(
    name: str, value: str, path: str, ttl: float, attributes: Sequence[tuple[str, str]] = ()
) -> str:
    """A `Set-Cookie` value as Envoy writes it: `name="value"; Max-Age=N; Path=p; a=b; HttpOnly`
    (no Max-Age for a ttl of 0, a session cookie)."""
    out = f'{name}="{value}"'
    max_age = int(ttl)
    if max_age:
        out += f"; Max-Age={max_age}"
    if path:
        out += f"; Path={path}"
    for k, v in attributes:
        out += f"; {k}={v}" if v else f"; {k}"
    return out + "; HttpOnly"


def request_hash(
    spec: HashSpec,
    header: Callable[[str], str | None],
    query: str,
    source_ip: str,
    rng: RandomSource,
) -> tuple[int | None, str | None]:
    """The request's hash and, when a cookie had to be made up, the `Set-Cookie` value to add
    to the response. `header` looks a request header up by lower-case name.

    A generated cookie's value is 64 random bits in hex from `rng`: Envoy hashes the downstream
    connection's address, which a library inside the caller does not have.
    """
    kind = spec.key
    if kind == "header":
        value = header(spec.name)
        return (hash64(value) if value is not None else None), None
    if kind == "cookie":
        value = cookie_value(header("cookie"), spec.name)
        if value:
            return hash64(value), None
        if spec.cookie_ttl is None:
            return None, None
        value = f"{rng.randrange(1 << 64):016x}"
        cookie = set_cookie_value(
            spec.name, value, spec.cookie_path, spec.cookie_ttl, spec.cookie_attributes
        )
        return hash64(value), cookie
    if kind == "query":
        value = query_value(query, spec.name)
        return (hash64(value) if value is not None else None), None
    return hash64(source_ip), None


class Weighted(Protocol):
    """An endpoint as the hash tables see it: a stable label and a weight."""

    @property
    def label(self) -> str:
        """`address:port`: what places the endpoint in the table."""
        ...

    @property
    def weight(self) -> int:
        """Load-balancing weight (≥ 1)."""
        ...


W = TypeVar("W", bound=Weighted)


class RingHash:
    """A Ketama ring over `endpoints`: each endpoint owns `minimum_ring_size` points per unit of
    weight (so the ring has at least `minimum_ring_size` points, Envoy's minimum), capped at
    Envoy's 8M points in all (then scaled down evenly).

    Where an endpoint's points fall depends on its label alone, never on the other endpoints:
    removing one of N endpoints moves exactly the keys it owned (about 1/N) and adding one takes
    about 1/(N+1) from the others — Ketama's property. (Envoy shares `minimum_ring_size` points
    among all endpoints, so there a change also moves keys between endpoints that stay.)"""

    __slots__ = ("_hashes", "_owners", "endpoints")

    def __init__(self, endpoints: Sequence[W], minimum_ring_size: int = 1024) -> None:
        self.endpoints = list(endpoints)
        counts = [minimum_ring_size * max(1, e.weight) for e in endpoints]
        total = sum(counts)
        if total > MAX_RING_SIZE:
            counts = [max(1, c * MAX_RING_SIZE // total) for c in counts]
        # one BLAKE2b-512 digest gives 8 points; a point is (hash << 20 | owner), sorted
        points: list[int] = []
        add = points.extend
        for i, (e, count) in enumerate(zip(endpoints, counts, strict=True)):
            prefix = e.label.encode("utf-8", "surrogateescape") + b"_"
            mine: list[int] = []
            for n in range(0, count, 8):
                mine.extend(_POINTS(blake2b(prefix + b"%d" % n, digest_size=64).digest()))
            add([(h << 20) | i for h in mine[:count]])
        points.sort()
        self._hashes = [p >> 20 for p in points]
        self._owners = [p & 0xFFFFF for p in points]

    def __len__(self) -> int:
        return len(self._hashes)

    def index(self, h: int) -> int:
        """The endpoint index that owns hash `h`."""
        i = bisect.bisect_left(self._hashes, h & _MASK64)
        return self._owners[i if i < len(self._owners) else 0]

    def pick(self, h: int, avoid: Collection[object] = ()) -> int:
        """The endpoint index for `h`; with `avoid`, walk the ring to the next endpoint not in
        it (Envoy's behaviour for a retry with a previous-hosts predicate)."""
        hashes = self._hashes
        n = len(hashes)
        start = bisect.bisect_left(hashes, h & _MASK64)
        owners = self._owners
        if not avoid:
            return owners[start if start < n else 0]
        eps = self.endpoints
        for k in range(n):
            i = owners[(start + k) % n]
            if eps[i] not in avoid:
                return i
        return owners[start if start < n else 0]

    def __repr__(self) -> str:
        return f"RingHash(endpoints={len(self.endpoints)}, points={len(self._hashes)})"


class Maglev:
    """Envoy's Maglev table over `endpoints` (weighted): `table_size` must be prime."""

    __slots__ = ("endpoints", "size", "table")

    def __init__(self, endpoints: Sequence[W], table_size: int = 65537) -> None:
        self.endpoints = list(endpoints)
        self.size = m = table_size
        n = len(endpoints)
        table = [-1] * m
        if n:
            offsets = [hash64(e.label) % m for e in endpoints]
            skips = [hash64(e.label, seed=1) % (m - 1) + 1 for e in endpoints]
            weights = [max(1, e.weight) for e in endpoints]
            top = max(weights)
            nexts = [0] * n
            targets = list(weights)  # Envoy's target_weight, starting at each weight
            filled = 0
            iteration = 0
            while filled < m:
                iteration += 1
                for i in range(n):
                    if iteration * weights[i] < targets[i]:
                        continue
                    targets[i] += top
                    off, skip, j = offsets[i], skips[i], nexts[i]
                    c = (off + skip * j) % m
                    while table[c] >= 0:
                        j += 1
                        c = (off + skip * j) % m
                    table[c] = i
                    nexts[i] = j + 1
                    filled += 1
                    if filled == m:
                        break
        self.table = table

    def pick(self, h: int, avoid: Collection[object] = ()) -> int:
        """The endpoint index for `h`; with `avoid`, rehash a few times (Envoy mutates the hash
        per attempt), then fall back to the first slot."""
        first = self.table[h % self.size]
        if not avoid:
            return first
        eps = self.endpoints
        if eps[first] not in avoid:
            return first
        for attempt in range(1, 9):
            i = self.table[hash64(f"{h}:{attempt}") % self.size]
            if eps[i] not in avoid:
                return i
        for i, e in enumerate(eps):
            if e not in avoid:
                return i
        return first

    def __repr__(self) -> str:
        return f"Maglev(endpoints={len(self.endpoints)}, size={self.size})"


class HashPolicy:
    """A consistent-hash balancer (Envoy's RING_HASH or MAGLEV). Tables are built per
    candidate list and cached by the list's identity (the cluster hands out the same list
    object until its healthy set changes); a call without a hash key gets a random endpoint."""

    __slots__ = ("_cache", "algorithm", "name", "size")

    def __init__(self, algorithm: str = "RING_HASH", size: int = 1024) -> None:
        self.algorithm = algorithm
        self.name = algorithm
        self.size = size
        self._cache: dict[int, tuple[Sequence[object], RingHash | Maglev]] = {}

    def table(self, candidates: Sequence[W]) -> RingHash | Maglev:
        """The table for this candidate list (built once per list object)."""
        got = self._cache.get(id(candidates))
        if got is not None and got[0] is candidates:
            return got[1]
        table: RingHash | Maglev = (
            Maglev(candidates, self.size)
            if self.algorithm == "MAGLEV"
            else RingHash(candidates, self.size)
        )
        if len(self._cache) >= 8:
            self._cache.clear()
        self._cache[id(candidates)] = (candidates, table)
        return table

    def pick(
        self,
        candidates: Sequence[W],
        rng: RandomSource,
        avoid: Collection[W] = (),
        key: int | None = None,
    ) -> W:
        """The endpoint `key` hashes to (another one for a retry when possible)."""
        if len(candidates) == 1:
            return candidates[0]
        if key is None:
            pool = [e for e in candidates if e not in avoid] if avoid else candidates
            pool = pool or candidates
            return pool[rng.randrange(len(pool))]
        return candidates[self.table(candidates).pick(key, avoid)]

    def __repr__(self) -> str:
        return f"HashPolicy({self.algorithm}, size={self.size})"
