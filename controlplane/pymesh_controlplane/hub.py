"""The watch hub: follows the store, computes snapshots per view, pushes them to agents.

How this works:

- At start the hub loads the store (one range) into a `State` and watches every key from the
  next revision; each watch response (one store revision) is folded in whole.
- **Leading-edge debounce.** The first change after a quiet period is pushed at once; changes
  that arrive within `debounce` seconds of a push are coalesced into one push at the end of
  that window. A burst of N applies costs about two pushes, not N.
- **One computation per view and revision.** A push round takes every subscription, finds its
  view (namespace + labels → the Sidecar that applies, cached per revision), and computes that
  view's snapshot once: its documents are serialized once into the NDJSON line every agent with
  that view receives (the same `bytes` object). A snapshot whose digest did not change is not
  pushed again.
- **Consistency.** Rounds run synchronously on the event loop between two watch responses, so
  every snapshot is the config and registry at one store revision.
- **Slow agents.** A subscription holds only the newest snapshot not yet written: an agent that
  reads slowly skips intermediate versions instead of queueing them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymesh_controlplane.agents import AgentTable
from pymesh_controlplane.metrics import Metrics
from pymesh_controlplane.state import State
from pymesh_controlplane.store import CompactedError, Store, StoreClosedError, Watch
from pymesh_controlplane.views import View, snapshot_docs, view_for

__all__ = ["Hub", "Snapshot", "Subscription"]

Selector = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One view's documents at one store revision, encoded once."""

    view: View
    revision: int
    digest: str
    count: int
    message: bytes  # the NDJSON line: {"type":"snapshot",...}\n
    # the same line with the documents zlib-compressed and base64'd ("encoding":"zlib",
    # "data":...): 20x smaller, made once per version and shared by every agent that asks
    compressed: bytes = b""

    def message_for(self, encoding: str) -> bytes:
        """The line for an agent that asked for `encoding` ("" or "zlib")."""
        return self.compressed if encoding == "zlib" and self.compressed else self.message

    def current_message(self) -> bytes:
        """The line that tells an agent it already holds this snapshot."""
        return _line({"type": "current", "revision": self.revision, "digest": self.digest})

    def documents(self) -> list[dict[str, Any]]:
        """The documents (decoded again from the message)."""
        docs: list[dict[str, Any]] = json.loads(self.message)["resources"]
        return docs


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encode_snapshot(view: View, revision: int, docs: list[dict[str, Any]]) -> Snapshot:
    """Serialize a view's documents once: the digest is over the documents' JSON."""
    body = json.dumps(docs, separators=(",", ":"), ensure_ascii=False).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    head = _line(
        {"type": "snapshot", "revision": revision, "digest": digest, "view": view.to_dict()}
    )
    message = head[:-2] + b',"resources":' + body + b"}\n"
    data = base64.b64encode(zlib.compress(body, 1))
    compressed = head[:-2] + b',"encoding":"zlib","data":"' + data + b'"}\n'
    return Snapshot(view, revision, digest, len(docs), message, compressed)


class _Closed(Exception):
    """The hub ended a subscription while its watcher waited on it."""


class Subscription:
    """One agent's watch stream: the newest snapshot not yet written, if any."""

    def __init__(self, agent: str, namespace: str, labels: Mapping[str, str]) -> None:
        self.agent = agent
        self.namespace = namespace
        self.labels = dict(labels)
        self.selector: Selector = (namespace, tuple(sorted(self.labels.items())))
        self.sent: Snapshot | None = None
        self._latest: Snapshot | None = None
        self._event = asyncio.Event()
        self.closed = False

    def __repr__(self) -> str:
        held = self.sent.revision if self.sent else None
        return f"<Subscription {self.agent} ns={self.namespace} sent={held}>"

    def offer(self, snap: Snapshot) -> bool:
        """Queue `snap` unless the agent has (or is about to get) the same content."""
        last = self._latest or self.sent
        if last is not None and last.digest == snap.digest:
            return False
        self._latest = snap
        self._event.set()
        return True

    def close(self) -> None:
        """End the stream."""
        self.closed = True
        self._event.set()

    async def next(self, timeout: float) -> Snapshot | None:
        """The next snapshot to write, or None after `timeout` seconds without one (a ping is
        due). Raises `_Closed` when the hub ends the stream."""
        if self._latest is None and not self.closed:
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        if self.closed:
            raise _Closed()
        snap, self._latest = self._latest, None
        if snap is not None:
            self.sent = snap
        return snap


class Hub:
    """Keeps the state, the per-view snapshots and the agents' streams."""

    def __init__(
        self,
        store: Store,
        agents: AgentTable,
        metrics: Metrics,
        *,
        debounce: float = 0.05,
        ping_interval: float = 15.0,
    ) -> None:
        self.store = store
        self.agents = agents
        self.metrics = metrics
        self.debounce = debounce
        self.ping_interval = ping_interval
        self.state = State()
        self.ready = False
        self._content_rev = 0  # the last revision that changed what snapshots carry
        self._views: dict[Selector, tuple[int, View]] = {}
        self._snaps: dict[Any, tuple[int, Snapshot]] = {}
        self._subs: set[Subscription] = set()
        self._dirty = asyncio.Event()
        self._dirty_since: float | None = None
        self._last_push = float("-inf")
        self._watch: Watch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._revision_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return (
            f"Hub(revision={self.state.revision}, streams={len(self._subs)}, "
            f"views={len(self._snaps)})"
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the store, start following it and pushing."""
        await self._resync()
        self._tasks = [
            asyncio.create_task(self._follow(), name="hub-follow"),
            asyncio.create_task(self._pusher(), name="hub-push"),
        ]
        self.ready = True

    async def stop(self) -> None:
        """End every stream and stop following the store."""
        self.ready = False
        self.close_streams()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, StoreClosedError):
                await t
        if self._watch is not None:
            await self._watch.aclose()

    def close_streams(self) -> None:
        """End every watch stream (the server is shutting down)."""
        for sub in list(self._subs):
            sub.close()

    async def _resync(self) -> None:
        if self._watch is not None:
            await self._watch.aclose()
        rr = await self.store.range("/", prefix=True)
        self.state.load(rr)
        self._content_rev = rr.revision
        self._watch = self.store.watch("/", prefix=True, from_revision=rr.revision + 1)
        self._update_gauges()

    async def _follow(self) -> None:
        while True:
            assert self._watch is not None
            try:
                async for resp in self._watch:
                    if self.state.apply(resp):
                        self._content_rev = resp.revision
                        self._mark_dirty()
                    self._notify_revision()
            except CompactedError:
                await self._resync()
                self._mark_dirty()
                continue
            return

    def _mark_dirty(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = asyncio.get_running_loop().time()
        self._dirty.set()

    def _notify_revision(self) -> None:
        rev = self.state.revision
        self.metrics.store_revision.set(rev)
        keep = []
        for want, fut in self._revision_waiters:
            if rev >= want:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((want, fut))
        self._revision_waiters = keep

    async def wait_revision(self, revision: int, timeout: float = 5.0) -> bool:
        """Wait until the hub's state has reached `revision` (read-your-writes)."""
        if self.state.revision >= revision:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._revision_waiters.append((revision, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        return True

    async def _pusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            wait = self._last_push + self.debounce - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # trailing edge of a burst
            self._dirty.clear()
            since, self._dirty_since = self._dirty_since, None
            self._last_push = loop.time()
            self.push_round(since)

    # ------------------------------------------------------------------ snapshots

    def view(self, namespace: str, labels: Mapping[str, str]) -> View:
        """The view of a workload (cached until the config changes)."""
        sel: Selector = (namespace, tuple(sorted(labels.items())))
        hit = self._views.get(sel)
        if hit is not None and hit[0] >= self._content_rev:
            return hit[1]
        v = view_for(self.state, namespace, labels)
        self._views[sel] = (self.state.revision, v)
        return v

    def snapshot(self, namespace: str, labels: Mapping[str, str]) -> Snapshot:
        """The current snapshot of a workload's view (computed once per view and revision)."""
        v = self.view(namespace, labels)
        key = v.key()
        hit = self._snaps.get(key)
        if hit is not None and hit[0] >= self._content_rev:
            return hit[1]
        snap = encode_snapshot(v, self.state.revision, snapshot_docs(self.state, v))
        if hit is not None and hit[1].digest == snap.digest:
            snap = hit[1]  # same content: keep the revision the agents already hold
        self._snaps[key] = (self.state.revision, snap)
        return snap

    def push_round(self, since: float | None = None) -> int:
        """Offer every stream its view's current snapshot; returns how many were queued."""
        pushed = 0
        for sub in list(self._subs):
            if sub.offer(self.snapshot(sub.namespace, sub.labels)):
                pushed += 1
        used = {self.view(s.namespace, s.labels).key() for s in self._subs}
        if len(self._snaps) > max(2 * len(used), 256):  # views nobody watches any more
            for key in [k for k in self._snaps if k not in used]:
                del self._snaps[key]
        if len(self._views) > 4 * max(len(self._subs), 64):
            self._views.clear()
        if pushed:
            self.metrics.pushes.inc(pushed)
            if since is not None:
                self.metrics.push_latency.observe(asyncio.get_running_loop().time() - since)
        self.metrics.views.set(len(self._snaps))
        self._update_gauges()
        return pushed

    def _update_gauges(self) -> None:
        self.metrics.workloads.set(len(self.state.workloads))
        self.metrics.store_revision.set(self.state.revision)

    # ------------------------------------------------------------------ streams

    def subscribe(
        self,
        agent: str,
        namespace: str,
        labels: Mapping[str, str],
        *,
        service: str = "",
        workload: str = "",
    ) -> Subscription:
        """A stream for `agent`; `sub.next()` yields its snapshots."""
        sub = Subscription(agent, namespace, labels)
        self._subs.add(sub)
        self.agents.connected(agent, service=service, namespace=namespace, workload=workload)
        self.metrics.connected_agents.set(len(self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """The stream ended."""
        if sub in self._subs:
            self._subs.discard(sub)
            self.agents.disconnected(sub.agent)
            self.metrics.connected_agents.set(len(self._subs))

    @property
    def streams(self) -> int:
        """Open streams."""
        return len(self._subs)

    def ping_message(self) -> bytes:
        """The keep-alive line."""
        return _line({"type": "ping", "revision": self.state.revision})

    Closed = _Closed
