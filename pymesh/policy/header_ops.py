"""Header operations (`headers.request` / `headers.response`) in Envoy's order.

Istio turns one `HeaderOperations` into Envoy's `*_headers_to_remove` and `*_headers_to_add`
(`set` entries overwrite, then `add` entries append). Envoy evaluates one level by removing
first, then adding in order; levels apply from the most specific to the least: the chosen
destination's (`route[].headers`) first, then the rule's (`http[].headers`) — so where both
`set` one header, the rule's value wins. A request `set` (or `add`) of `host` / `:authority`
is not a header operation: it rewrites the authority sent upstream (as Istio does).

Headers are raw `(name, value)` byte pairs as httpx/httpcore carry them; names compare
case-insensitively and keep the caller's spelling where they are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pymesh.config.model import HeaderOperations

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """One level of compiled operations: names to remove (lower-case), then pairs to set
    (replacing every value of the name), then pairs to append."""

    remove: frozenset[bytes] = frozenset()
    set: tuple[Header, ...] = ()
    add: tuple[Header, ...] = ()


def _authority_name(name: str) -> bool:
    return name in ("host", ":authority")


def compile_header_ops(ops: HeaderOperations | None) -> HeaderOps | None:
    """Compile validated operations (without their authority entries); None when empty."""
    if ops is None:
        return None
    remove = frozenset(n.encode("latin-1") for n in ops.remove)
    set_ = tuple(
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in ops.set.items()
        if not _authority_name(k)
    )
    add = tuple(
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in ops.add.items()
        if not _authority_name(k)
    )
    if not remove and not set_ and not add:
        return None
    return HeaderOps(remove, set_, add)


def authority_of(ops: HeaderOperations | None) -> str | None:
    """The authority a request `set`/`add` of `host` (or `:authority`) asks for, if any."""
    if ops is None:
        return None
    for table in (ops.set, ops.add):
        for k, v in table.items():
            if _authority_name(k):
                return v
    return None


def apply_header_ops(headers: Iterable[Header], levels: Iterable[HeaderOps]) -> list[Header]:
    """`headers` after each level of operations, in order (remove, set, add per level)."""
    out = list(headers)
    for ops in levels:
        drop = ops.remove | {k for k, _ in ops.set}
        if drop:
            out = [h for h in out if h[0].lower() not in drop]
        out.extend(ops.set)
        out.extend(ops.add)
    return out


def with_authority(headers: Iterable[Header], authority: str) -> list[Header]:
    """`headers` with the Host header's value replaced by `authority` (added when absent)."""
    value = authority.encode("latin-1")
    out: list[Header] = []
    done = False
    for name, v in headers:
        if name.lower() == b"host":
            if not done:
                out.append((name, value))
                done = True
            continue
        out.append((name, v))
    if not done:
        out.insert(0, (b"host", value))
    return out


def shadow_authority(authority: str) -> str:
    """The authority of a mirrored request: Envoy adds `-shadow` to the host part
    (`reviews:9080` → `reviews-shadow:9080`)."""
    if authority.startswith("["):  # an IPv6 literal: the suffix goes after its brackets
        end = authority.find("]") + 1
        return authority[:end] + "-shadow" + authority[end:]
    if ":" not in authority:
        return authority + "-shadow"
    host, _, port = authority.rpartition(":")
    return f"{host}-shadow:{port}"
