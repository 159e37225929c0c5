"""The workload registry: workloads register their real addresses and ports and hold a lease.

How this works:

- A workload is one address and set of ports serving one service (in a namespace, under a
  service account). Its id is `<service>-<hash of namespace, address and target ports>`, so a
  second registration of the same address — another worker of a pre-fork server, or the same
  process after a reconnect — joins the same entry instead of adding an endpoint.
- It is stored at `/registry/workloads/<id>` (its spec, JSON) and each agent that registered it
  at `/registry/agents/<id>/<agent>`, all attached to **one lease** per workload. Any of its
  agents' heartbeats keeps the lease alive; when the lease expires (no heartbeat for a TTL) the
  store deletes the keys and the watch pushes snapshots without the endpoint.
- Deregistering an agent deletes its key; the last agent of a workload revokes the lease, which
  removes the workload. (A sibling registering in the same instant may lose its keys with it;
  its next heartbeat then gets `NotRegisteredError` and it registers again.)
- Registrations are validated by building the WorkloadEntry (and ServiceEntry) documents the
  snapshots will carry and checking them with `pymesh.config`, so a registration can never put
  an invalid document into a snapshot.
- Heartbeats carry the agent's edge counters, kept in memory by `AgentTable`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymesh.config.findings import Finding
from pymesh.config.hosts import canonical_host
from pymesh.config.loader import Document
from pymesh.config.validate import validate_documents
from pymesh_controlplane.agents import AgentTable, EdgeSample
from pymesh_controlplane.resources import InvalidConfigError, ResourceError
from pymesh_controlplane.store import (
    Compare,
    Delete,
    KeyValue,
    LeaseNotFoundError,
    Put,
    Store,
)

__all__ = [
    "AGENT_PREFIX",
    "SERVICE_LABEL",
    "WORKLOAD_PREFIX",
    "NotRegisteredError",
    "Registration",
    "Registry",
    "WorkloadPort",
    "WorkloadRecord",
    "WorkloadSpec",
]

WORKLOAD_PREFIX = "/registry/workloads/"
AGENT_PREFIX = "/registry/agents/"
SERVICE_LABEL = "pymesh.io/service"
API_VERSION = "networking.istio.io/v1"
MAX_RETRIES = 16


class NotRegisteredError(ResourceError):
    """The workload is not registered (never was, or its lease expired): register again."""

    status = 404
    code = "not_registered"


@dataclass(frozen=True, slots=True)
class WorkloadPort:
    """One port a workload listens on: `port` is where it listens (the target port),
    `service_port` what callers dial (`reviews:9080`; default: the same)."""

    name: str
    port: int
    service_port: int = 0
    protocol: str = "HTTP"

    @property
    def number(self) -> int:
        """The service port (callers dial it)."""
        return self.service_port or self.port


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What a workload registers."""

    service: str
    namespace: str
    address: str
    ports: tuple[WorkloadPort, ...]
    service_account: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    locality: str = ""
    weight: int = 1
    network: str = ""

    @property
    def workload_id(self) -> str:
        """`<service>-<hash>`: equal for every registration of this address and ports."""
        ident = json.dumps(
            [self.namespace, self.address, sorted((p.name, p.port) for p in self.ports)]
        )
        return f"{self.service}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"

    @property
    def host(self) -> str:
        """The service's canonical host (`reviews.default.svc.cluster.local`)."""
        return canonical_host(self.service, self.namespace)

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(
            {
                "service": self.service,
                "namespace": self.namespace,
                "serviceAccount": self.service_account,
                "address": self.address,
                "ports": [
                    {
                        "name": p.name,
                        "port": p.port,
                        "servicePort": p.number,
                        "protocol": p.protocol,
                    }
                    for p in self.ports
                ],
                "labels": dict(sorted(self.labels.items())),
                "locality": self.locality,
                "weight": self.weight,
                "network": self.network,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WorkloadSpec:
        """Decode the stored form."""
        d = json.loads(raw)
        return cls(
            service=d["service"],
            namespace=d["namespace"],
            address=d["address"],
            ports=tuple(
                WorkloadPort(
                    p["name"], p["port"], p.get("servicePort", 0), p.get("protocol", "HTTP")
                )
                for p in d.get("ports", ())
            ),
            service_account=d.get("serviceAccount", "default"),
            labels=dict(d.get("labels") or {}),
            locality=d.get("locality", ""),
            weight=d.get("weight", 1),
            network=d.get("network", ""),
        )

    def entry_labels(self) -> dict[str, str]:
        """The labels of its WorkloadEntry: its own, plus `app: <service>` (unless set) and
        `pymesh.io/service: <service>`."""
        labels = dict(self.labels)
        labels.setdefault("app", self.service)
        labels[SERVICE_LABEL] = self.service
        return labels

    def workload_entry(self) -> dict[str, Any]:
        """The WorkloadEntry document snapshots carry for it."""
        spec: dict[str, Any] = {
            "address": self.address,
            "ports": {p.name: p.port for p in self.ports},
            "labels": self.entry_labels(),
            "serviceAccount": self.service_account,
            "weight": self.weight,
        }
        if self.locality:
            spec["locality"] = self.locality
        if self.network:
            spec["network"] = self.network
        return {
            "apiVersion": API_VERSION,
            "kind": "WorkloadEntry",
            "metadata": {
                "name": self.workload_id,
                "namespace": self.namespace,
                "labels": {SERVICE_LABEL: self.service},
            },
            "spec": spec,
        }

    def validate(self) -> None:
        """Refuse (InvalidConfigError) what would make an invalid snapshot document."""
        from pymesh_controlplane.views import registry_service_entry

        if not self.ports:
            raise InvalidConfigError(
                [Finding("PM0007", "error", "a workload registers at least one port", path="ports")]
            )
        docs = [self.workload_entry(), registry_service_entry(self.service, self.namespace, [self])]
        findings: list[Finding] = []
        for doc in docs:
            _, found = validate_documents([Document("<registration>", 1, doc)], self.namespace)
            findings += [f for f in found if f.severity == "error"]
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            findings.append(Finding("PM0006", "error", "port names must be unique", path="ports"))
        if findings:
            raise InvalidConfigError(findings)


@dataclass(frozen=True, slots=True)
class WorkloadRecord:
    """A registered workload as stored: its spec, lease and revisions."""

    id: str
    spec: WorkloadSpec
    lease: int
    create_revision: int
    mod_revision: int

    @classmethod
    def from_kv(cls, kv: KeyValue) -> WorkloadRecord | None:
        """Decode a store key-value (None if it is not a workload key)."""
        if not kv.key.startswith(WORKLOAD_PREFIX):
            return None
        wid = kv.key[len(WORKLOAD_PREFIX) :]
        return cls(
            wid, WorkloadSpec.from_json(kv.value), kv.lease, kv.create_revision, kv.mod_revision
        )


@dataclass(frozen=True, slots=True)
class Registration:
    """The answer to a registration."""

    workload: str
    agent: str
    ttl: float
    heartbeat: float
    revision: int
    created: bool


def workload_key(wid: str) -> str:
    """The store key of a workload."""
    return WORKLOAD_PREFIX + wid


def agent_key(wid: str, agent: str) -> str:
    """The store key of one agent of a workload."""
    return f"{AGENT_PREFIX}{wid}/{agent}"


class Registry:
    """Register, heartbeat and deregister workloads on a `Store`."""

    def __init__(
        self,
        store: Store,
        agents: AgentTable,
        *,
        ttl: float = 15.0,
        heartbeat: float = 5.0,
        min_ttl: float = 0.1,
        max_ttl: float = 300.0,
    ) -> None:
        self.store = store
        self.agents = agents
        self.ttl = ttl
        self.heartbeat_interval = heartbeat
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self._leases: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Registry(ttl={self.ttl}, heartbeat={self.heartbeat_interval})"

    def _interval(self, ttl: float) -> float:
        return round(min(self.heartbeat_interval, ttl / 3), 3)

    async def register(
        self, spec: WorkloadSpec, agent: str, *, ttl: float | None = None
    ) -> Registration:
        """Register (or join) the workload at `spec`'s address for `agent`."""
        spec.validate()
        want = self.ttl if ttl is None else min(max(ttl, self.min_ttl), self.max_ttl)
        wid = spec.workload_id
        wkey, akey = workload_key(wid), agent_key(wid, agent)
        value = spec.to_json()
        marker = json.dumps({"agent": agent}).encode()
        for _attempt in range(MAX_RETRIES):
            rr = await self.store.range(wkey)
            if rr.kvs:
                kv = rr.kvs[0]
                try:
                    lease_ttl = await self.store.lease_keepalive(kv.lease)
                    ops = [Put(akey, marker, kv.lease)]
                    if kv.value != value:
                        ops.append(Put(wkey, value, kv.lease))
                    res = await self.store.txn([Compare(wkey, "mod", "=", kv.mod_revision)], ops)
                except LeaseNotFoundError:
                    continue
                if res.succeeded:
                    self._leases[wid] = kv.lease
                    self.agents.touch(
                        agent, service=spec.service, namespace=spec.namespace, workload=wid
                    )
                    return Registration(
                        wid, agent, lease_ttl, self._interval(lease_ttl), res.revision, False
                    )
                continue
            grant = await self.store.lease_grant(want)
            res = await self.store.txn(
                [Compare(wkey, "create", "=", 0)],
                [Put(wkey, value, grant.id), Put(akey, marker, grant.id)],
            )
            if res.succeeded:
                self._leases[wid] = grant.id
                self.agents.touch(
                    agent, service=spec.service, namespace=spec.namespace, workload=wid
                )
                return Registration(
                    wid, agent, grant.ttl, self._interval(grant.ttl), res.revision, True
                )
            with contextlib.suppress(LeaseNotFoundError):
                await self.store.lease_revoke(grant.id)
        raise ResourceError("registration kept racing with other writers; try again")

    async def _lease_of(self, wid: str) -> int:
        lease = self._leases.get(wid)
        if lease is not None:
            return lease
        rr = await self.store.range(workload_key(wid))
        if not rr.kvs:
            raise NotRegisteredError(f"workload {wid} is not registered (register again)")
        self._leases[wid] = rr.kvs[0].lease
        return rr.kvs[0].lease

    async def heartbeat(
        self, wid: str, agent: str, edges: Sequence[tuple[str, EdgeSample]] = ()
    ) -> tuple[float, float]:
        """Renew the workload's lease; record the agent's counters. Returns (ttl, interval).
        `NotRegisteredError` when the lease is gone: the agent must register again."""
        lease = await self._lease_of(wid)
        try:
            ttl = await self.store.lease_keepalive(lease)
        except LeaseNotFoundError:
            self._leases.pop(wid, None)
            raise NotRegisteredError(
                f"workload {wid} is not registered (its lease expired; register again)"
            ) from None
        self.agents.heartbeat(agent, wid, edges)
        return ttl, self._interval(ttl)

    async def deregister(self, wid: str, agent: str) -> bool:
        """Remove `agent` from the workload; the last agent removes the workload (True)."""
        rr = await self.store.range(f"{AGENT_PREFIX}{wid}/", prefix=True)
        mine = agent_key(wid, agent)
        if not any(kv.key == mine for kv in rr.kvs):
            raise NotRegisteredError(f"agent {agent} has not registered workload {wid}")
        others = [kv for kv in rr.kvs if kv.key != mine]
        if others:
            await self.store.txn([], [Delete(mine)])
            return False
        lease = rr.kvs[0].lease
        self._leases.pop(wid, None)
        with contextlib.suppress(LeaseNotFoundError):
            await self.store.lease_revoke(lease)
        return True

    async def workloads(self) -> tuple[int, list[tuple[WorkloadRecord, list[str]]]]:
        """(store revision, every workload with its agents)."""
        rr = await self.store.range("/registry/", prefix=True)
        agents: dict[str, list[str]] = {}
        records: list[WorkloadRecord] = []
        for kv in rr.kvs:
            if kv.key.startswith(AGENT_PREFIX):
                wid, _, agent = kv.key[len(AGENT_PREFIX) :].partition("/")
                agents.setdefault(wid, []).append(agent)
            else:
                rec = WorkloadRecord.from_kv(kv)
                if rec is not None:
                    records.append(rec)
        return rr.revision, [(r, agents.get(r.id, [])) for r in records]
