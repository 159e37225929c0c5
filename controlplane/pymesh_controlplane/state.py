"""The control plane's in-memory copy of config, registry and join tokens, followed from the
store.

How this works (Kubernetes' informer pattern): `load` takes a full range of the store, then
`apply` folds in each watch response — one whole store revision at a time — so between two
calls the copy is exactly the store at `revision`. Snapshots are computed from it without
touching the store, and never from a half-applied transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymesh_controlplane.registry import AGENT_PREFIX, WORKLOAD_PREFIX, WorkloadRecord
from pymesh_controlplane.resources import RESOURCE_PREFIX, StoredResource
from pymesh_controlplane.store import EventType, KeyValue, RangeResult, WatchResponse
from pymesh_controlplane.tokens import TOKEN_PREFIX, TokenRecord

__all__ = ["State"]


class State:
    """Resources and registered workloads at one store revision."""

    def __init__(self) -> None:
        self.revision = 0
        self.resources: dict[str, StoredResource] = {}
        self.workloads: dict[str, WorkloadRecord] = {}
        self.workload_agents: dict[str, set[str]] = {}
        self.tokens: dict[str, TokenRecord] = {}

    def __repr__(self) -> str:
        return (
            f"State(revision={self.revision}, resources={len(self.resources)}, "
            f"workloads={len(self.workloads)})"
        )

    def load(self, rr: RangeResult) -> None:
        """Replace everything with a full range of the store."""
        self.resources.clear()
        self.workloads.clear()
        self.workload_agents.clear()
        self.tokens.clear()
        for kv in rr.kvs:
            self._put(kv)
        self.revision = rr.revision

    def apply(self, resp: WatchResponse) -> bool:
        """Fold in one revision's events; True when something the snapshots carry changed."""
        changed = False
        for ev in resp.events:
            if ev.type is EventType.PUT:
                changed |= self._put(ev.kv)
            else:
                changed |= self._delete(ev.kv.key)
        self.revision = max(self.revision, resp.revision)
        return changed

    def _put(self, kv: KeyValue) -> bool:
        key = kv.key
        if key.startswith(RESOURCE_PREFIX):
            res = StoredResource.from_kv(kv)
            if res is not None:
                self.resources[key] = res
                return True
        elif key.startswith(WORKLOAD_PREFIX):
            rec = WorkloadRecord.from_kv(kv)
            if rec is not None:
                self.workloads[rec.id] = rec
                return True
        elif key.startswith(AGENT_PREFIX):
            wid, _, agent = key[len(AGENT_PREFIX) :].partition("/")
            self.workload_agents.setdefault(wid, set()).add(agent)
        elif key.startswith(TOKEN_PREFIX):
            tok = TokenRecord.from_kv(kv)
            if tok is not None:
                self.tokens[tok.id] = tok
        return False

    def _delete(self, key: str) -> bool:
        if key.startswith(RESOURCE_PREFIX):
            return self.resources.pop(key, None) is not None
        if key.startswith(WORKLOAD_PREFIX):
            return self.workloads.pop(key[len(WORKLOAD_PREFIX) :], None) is not None
        if key.startswith(TOKEN_PREFIX):
            self.tokens.pop(key[len(TOKEN_PREFIX) :], None)
            return False
        if key.startswith(AGENT_PREFIX):
            wid, _, agent = key[len(AGENT_PREFIX) :].partition("/")
            agents = self.workload_agents.get(wid)
            if agents is not None:
                agents.discard(agent)
                if not agents:
                    del self.workload_agents[wid]
        return False

    def ordered_resources(self) -> Iterable[StoredResource]:
        """Resources in the order they were first created (file order, for agents)."""
        return sorted(self.resources.values(), key=lambda r: (r.create_revision, r.key))
