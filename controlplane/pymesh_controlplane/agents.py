"""What the control plane knows about each agent, in memory: sync status and edge statistics.

How this works: an agent is one process (one `pymesh.Mesh` or `pymesh-proxy`), named by the id
it picks (`agent`). The watch stream records what was sent to it (revision, digest); its ACK or
NACK records what it holds or refused, with the error; its heartbeats record when it was last
seen and its per-destination counters. Counters are cumulative on the agent (requests, errors,
latency sum in ms since it started); the table keeps the last two samples per destination and
derives rates from their difference, as Prometheus does with counters. Nothing here is
persisted: after a restart the agents reconnect and heartbeat, and the table fills again.
Agents gone (no stream, no heartbeat) for `forget_after` seconds are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AgentStatus", "AgentTable", "EdgeSample", "EdgeStats"]


@dataclass(frozen=True, slots=True)
class EdgeSample:
    """One heartbeat's counters for one destination (cumulative since the agent started)."""

    at: float
    requests: int
    errors: int
    latency_ms_sum: float
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """The reported traffic of one source service to one destination."""

    source_service: str
    source_namespace: str
    destination: str
    rps: float
    error_rate: float
    latency_ms_mean: float | None
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    requests: int
    errors: int
    agents: int

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "source": {"service": self.source_service, "namespace": self.source_namespace},
            "destination": self.destination,
            "rps": round(self.rps, 3),
            "errorRate": round(self.error_rate, 4),
            "latencyMsMean": None
            if self.latency_ms_mean is None
            else round(self.latency_ms_mean, 3),
            "latencyMsP50": self.latency_ms_p50,
            "latencyMsP99": self.latency_ms_p99,
            "requests": self.requests,
            "errors": self.errors,
            "agents": self.agents,
        }


@dataclass
class AgentStatus:
    """One agent's sync status and last heartbeat."""

    agent: str
    service: str = ""
    namespace: str = ""
    workload: str = ""
    streams: int = 0
    connected_at: float | None = None
    last_seen: float = 0.0
    sent_revision: int = 0
    sent_digest: str = ""
    acked_revision: int = 0
    acked_digest: str = ""
    nack_revision: int | None = None
    nack_digest: str = ""
    nack_error: str | None = None
    last_heartbeat: float | None = None
    certificate_not_after: float | None = None  # reported by heartbeats (UNIX time)
    edges: dict[str, tuple[EdgeSample | None, EdgeSample]] = field(default_factory=dict)

    def to_dict(self, now: float) -> dict[str, Any]:
        """JSON shape (times as seconds ago)."""

        def ago(t: float | None) -> float | None:
            return None if t is None else round(max(0.0, now - t), 3)

        return {
            "agent": self.agent,
            "service": self.service,
            "namespace": self.namespace,
            "workload": self.workload or None,
            "connected": self.streams > 0,
            "connectedSecondsAgo": ago(self.connected_at),
            "sent": {"revision": self.sent_revision, "digest": self.sent_digest},
            "acked": {"revision": self.acked_revision, "digest": self.acked_digest},
            "nack": None
            if self.nack_error is None
            else {
                "revision": self.nack_revision,
                "digest": self.nack_digest,
                "error": self.nack_error,
            },
            "synced": bool(self.sent_digest) and self.acked_digest == self.sent_digest,
            "lastHeartbeatSecondsAgo": ago(self.last_heartbeat),
            "lastSeenSecondsAgo": ago(self.last_seen),
            "certificate": None
            if self.certificate_not_after is None
            else {"notAfter": self.certificate_not_after},
        }


class AgentTable:
    """Every agent seen recently, by id."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        forget_after: float = 600.0,
        max_edges: int = 1000,
    ) -> None:
        self._clock = clock
        self.forget_after = forget_after
        self.max_edges = max_edges
        self._agents: dict[str, AgentStatus] = {}

    def __repr__(self) -> str:
        connected = sum(1 for a in self._agents.values() if a.streams)
        return f"AgentTable(agents={len(self._agents)}, connected={connected})"

    def __len__(self) -> int:
        return len(self._agents)

    def get(self, agent: str) -> AgentStatus | None:
        """One agent's status, if known."""
        return self._agents.get(agent)

    def touch(
        self, agent: str, *, service: str = "", namespace: str = "", workload: str = ""
    ) -> AgentStatus:
        """The agent's status (created if new), marked seen now; non-empty fields update it."""
        now = self._clock()
        st = self._agents.get(agent)
        if st is None:
            self._prune(now)
            st = self._agents[agent] = AgentStatus(agent)
        st.last_seen = now
        if service:
            st.service = service
        if namespace:
            st.namespace = namespace
        if workload:
            st.workload = workload
        return st

    def connected(self, agent: str, **who: str) -> AgentStatus:
        """A watch stream opened."""
        st = self.touch(agent, **who)
        st.streams += 1
        st.connected_at = self._clock()
        return st

    def disconnected(self, agent: str) -> None:
        """A watch stream closed."""
        st = self._agents.get(agent)
        if st is not None:
            st.streams = max(0, st.streams - 1)
            st.last_seen = self._clock()

    def sent(self, agent: str, revision: int, digest: str) -> None:
        """A snapshot was written to the agent's stream."""
        st = self.touch(agent)
        st.sent_revision, st.sent_digest = revision, digest

    def ack(self, agent: str, revision: int, digest: str, error: str | None) -> AgentStatus:
        """The agent accepted (error None) or refused a snapshot."""
        st = self.touch(agent)
        if error is None:
            st.acked_revision, st.acked_digest = revision, digest
            st.nack_revision, st.nack_digest, st.nack_error = None, "", None
        else:
            st.nack_revision, st.nack_digest, st.nack_error = revision, digest, error
        return st

    def heartbeat(self, agent: str, workload: str, edges: Iterable[tuple[str, EdgeSample]]) -> None:
        """A heartbeat with its edge counters."""
        st = self.touch(agent, workload=workload)
        st.last_heartbeat = self._clock()
        for dest, sample in edges:
            prev = st.edges.get(dest)
            if prev is None and len(st.edges) >= self.max_edges:
                continue
            st.edges[dest] = (prev[1] if prev else None, sample)

    def all(self) -> list[AgentStatus]:
        """Every known agent, by id."""
        self._prune(self._clock())
        return [self._agents[k] for k in sorted(self._agents)]

    def edges(self) -> list[EdgeStats]:
        """Traffic per (source service, destination), summed over agents: rates from the last
        two heartbeats of each agent."""
        acc: dict[tuple[str, str, str], dict[str, Any]] = {}
        for st in self._agents.values():
            for dest, (prev, last) in st.edges.items():
                a = acc.setdefault(
                    (st.service, st.namespace, dest),
                    {
                        "rps": 0.0,
                        "req": 0,
                        "err": 0,
                        "dreq": 0,
                        "derr": 0,
                        "dlat": 0.0,
                        "p50": None,
                        "p99": None,
                        "agents": 0,
                    },
                )
                a["agents"] += 1
                a["req"] += last.requests
                a["err"] += last.errors
                if prev is not None and last.at > prev.at and last.requests >= prev.requests:
                    dreq = last.requests - prev.requests
                    a["rps"] += dreq / (last.at - prev.at)
                    a["dreq"] += dreq
                    a["derr"] += max(0, last.errors - prev.errors)
                    a["dlat"] += max(0.0, last.latency_ms_sum - prev.latency_ms_sum)
                for q in ("p50", "p99"):
                    v = getattr(last, f"latency_ms_{q}")
                    if v is not None:
                        a[q] = v if a[q] is None else max(a[q], v)
        out = []
        for (svc, ns, dest), a in sorted(acc.items()):
            out.append(
                EdgeStats(
                    svc,
                    ns,
                    dest,
                    rps=a["rps"],
                    error_rate=a["derr"] / a["dreq"] if a["dreq"] else 0.0,
                    latency_ms_mean=a["dlat"] / a["dreq"] if a["dreq"] else None,
                    latency_ms_p50=a["p50"],
                    latency_ms_p99=a["p99"],
                    requests=a["req"],
                    errors=a["err"],
                    agents=a["agents"],
                )
            )
        return out

    def _prune(self, now: float) -> None:
        gone = [
            k
            for k, st in self._agents.items()
            if st.streams == 0 and now - st.last_seen > self.forget_after
        ]
        for k in gone:
            del self._agents[k]
