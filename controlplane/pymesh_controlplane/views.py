"""Views and snapshots: what configuration one agent receives.

A **view** is what a workload sees. Without a `Sidecar` that applies to it, that is everything;
with one (Istio's choice: the Sidecar in its namespace whose `workloadSelector` matches its
labels, else its namespace's Sidecar without a selector, else the root namespace's), it is the
hosts of the Sidecar's `egress` (`namespace/dnsName`, `.` for its own namespace, `*` for any)
plus the policies of its own and the root namespace. Agents with the same view share one
snapshot.

A **snapshot** is the list of documents of a view at one store revision, ready for
`pymesh.config.load_text`: the stored Istio resources (in creation order), then for every
registered service that no stored ServiceEntry defines a generated ServiceEntry
(`<service>.<namespace>.svc.cluster.local`, MESH_INTERNAL, STATIC, its registered service
ports, selecting its workloads by the `pymesh.io/service` label), then one WorkloadEntry per
registered workload. A ServiceEntry of your own that should include registered workloads
selects them with `workloadSelector: {labels: {app: <service>}}` (registrations carry
`app: <service>` unless they set `app`).

Consistency: a view never holds a route without its destination. Every destination host of an
included VirtualService brings the ServiceEntries, DestinationRules and WorkloadEntries of that
host, so a route never names a subset or service the snapshot lacks. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymesh.config.hosts import canonical_host, host_matches
from pymesh_controlplane.resources import StoredResource

if TYPE_CHECKING:
    from pymesh_controlplane.registry import WorkloadSpec
    from pymesh_controlplane.state import State

__all__ = [
    "ROOT_NAMESPACE",
    "View",
    "registry_service_entry",
    "select_sidecar",
    "snapshot_docs",
    "view_for",
]

ROOT_NAMESPACE = "istio-system"
_POLICY_KINDS = frozenset({"Sidecar", "PeerAuthentication", "AuthorizationPolicy"})


@dataclass(frozen=True, slots=True)
class View:
    """What one group of agents sees: everything (`egress` None) or the hosts of a Sidecar's
    egress, `(namespace, host pattern)` pairs with `.` already resolved."""

    namespace: str
    egress: tuple[tuple[str, str], ...] | None = None
    sidecar: str = ""

    @property
    def everything(self) -> bool:
        """Whether the view holds the whole configuration."""
        return self.egress is None

    def key(self) -> tuple[str, tuple[tuple[str, str], ...] | None]:
        """Agents whose views have equal keys share snapshots (an everything view is the same
        for every namespace)."""
        return ("", None) if self.egress is None else (self.namespace, self.egress)

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        if self.egress is None:
            return {"everything": True}
        return {
            "everything": False,
            "namespace": self.namespace,
            "sidecar": self.sidecar,
            "egress": [f"{ns}/{h}" for ns, h in self.egress],
        }

    def sees(self, namespace: str, host: str) -> bool:
        """Whether canonical `host`, defined in `namespace`, is in the view."""
        if self.egress is None:
            return True
        return any(
            (ns == "*" or ns == namespace) and host_matches(pattern, host)
            for ns, pattern in self.egress
        )


def _spec(res: StoredResource) -> Mapping[str, Any]:
    spec = res.doc.get("spec")
    return spec if isinstance(spec, dict) else {}


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _selector(spec: Mapping[str, Any]) -> dict[str, str] | None:
    sel = spec.get("workloadSelector")
    if not isinstance(sel, dict):
        return None
    labels = sel.get("labels")
    return dict(labels) if isinstance(labels, dict) else {}


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def select_sidecar(
    resources: Iterable[StoredResource], namespace: str, labels: Mapping[str, str]
) -> StoredResource | None:
    """The Sidecar that applies to a workload of `namespace` with `labels` (Istio's order)."""
    sidecars = sorted(
        (r for r in resources if r.kind == "Sidecar"), key=lambda r: (r.create_revision, r.key)
    )
    for r in sidecars:
        sel = _selector(_spec(r))
        if r.namespace == namespace and sel and _selects(sel, labels):
            return r
    for r in sidecars:
        if r.namespace == namespace and not _selector(_spec(r)):
            return r
    for r in sidecars:
        if r.namespace == ROOT_NAMESPACE and not _selector(_spec(r)):
            return r
    return None


def view_for(state: State, namespace: str, labels: Mapping[str, str]) -> View:
    """The view of a workload of `namespace` with `labels`."""
    sidecar = select_sidecar(state.resources.values(), namespace, labels)
    if sidecar is None:
        return View(namespace)
    egress = _spec(sidecar).get("egress")
    if not isinstance(egress, list) or not egress:
        return View(namespace)
    pairs: list[tuple[str, str]] = []
    for listener in egress:
        if not isinstance(listener, dict):
            continue
        for entry in _strings(listener.get("hosts")):
            ns, sep, host = entry.partition("/")
            if not sep:
                ns, host = "*", entry
            if ns == "~":
                continue
            if ns == ".":
                ns = namespace
            if host == "*" or host.startswith("*.") or (ns == "*" and "." not in host):
                pattern = host  # a short name under "*" names no namespace: kept as written
            else:
                pattern = canonical_host(host, ns)
            pairs.append((ns, pattern))
    return View(namespace, tuple(sorted(set(pairs))), sidecar.ref)


def registry_service_entry(
    service: str, namespace: str, workloads: Sequence[WorkloadSpec]
) -> dict[str, Any]:
    """The ServiceEntry generated for a registered service no stored ServiceEntry defines."""
    from pymesh_controlplane.registry import API_VERSION, SERVICE_LABEL

    ports: dict[str, dict[str, Any]] = {}
    numbers: set[int] = set()
    for w in workloads:
        for p in w.ports:
            if p.name in ports or p.number in numbers:
                continue
            numbers.add(p.number)
            ports[p.name] = {"number": p.number, "name": p.name, "protocol": p.protocol}
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceEntry",
        "metadata": {
            "name": registry_entry_name(service),
            "namespace": namespace,
            "labels": {SERVICE_LABEL: service},
        },
        "spec": {
            "hosts": [canonical_host(service, namespace)],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": list(ports.values()),
            "workloadSelector": {"labels": {SERVICE_LABEL: service}},
        },
    }


def registry_entry_name(service: str) -> str:
    """The name of a generated ServiceEntry."""
    return f"{service}.pymesh-registry"


@dataclass(frozen=True, slots=True)
class _Entry:
    namespace: str
    hosts: tuple[str, ...]
    selector: dict[str, str] | None
    doc: dict[str, Any]


def _vs_destinations(spec: Mapping[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key in ("destination", "mirror"):
                d = node.get(key)
                if isinstance(d, dict) and isinstance(d.get("host"), str):
                    found.append(d["host"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return found


def snapshot_docs(state: State, view: View) -> list[dict[str, Any]]:
    """The documents of `view` at the state's revision (see the module docstring)."""
    resources = list(state.ordered_resources())
    by_name = {(r.kind, r.namespace, r.name) for r in resources}

    entries: list[_Entry] = []
    defined: set[str] = set()
    for r in resources:
        if r.kind == "ServiceEntry":
            hosts = tuple(canonical_host(h, r.namespace) for h in _strings(_spec(r).get("hosts")))
            defined.update(hosts)
            entries.append(_Entry(r.namespace, hosts, _selector(_spec(r)), r.doc))
    services: dict[tuple[str, str], list[WorkloadSpec]] = {}
    workloads = sorted(state.workloads.values(), key=lambda w: w.id)
    for w in workloads:
        services.setdefault((w.spec.namespace, w.spec.service), []).append(w.spec)
    generated: list[_Entry] = []
    for (ns, svc), specs in sorted(services.items()):
        host = canonical_host(svc, ns)
        if host in defined or ("ServiceEntry", ns, registry_entry_name(svc)) in by_name:
            continue
        doc = registry_service_entry(svc, ns, specs)
        generated.append(_Entry(ns, (host,), _selector(doc["spec"]), doc))
    we_docs = [
        (w.spec.namespace, w.spec.entry_labels(), w.spec.workload_entry()) for w in workloads
    ]

    if view.everything:
        return [r.doc for r in resources] + [e.doc for e in generated] + [d for _, _, d in we_docs]

    all_entries = entries + generated
    wanted_hosts: set[str] = set()
    chosen: set[str] = set()  # keys of stored resources in the view
    for r in resources:
        spec = _spec(r)
        if r.kind == "VirtualService":
            vs_hosts = [canonical_host(h, r.namespace) for h in _strings(spec.get("hosts"))]
            if any(view.sees(r.namespace, h) for h in vs_hosts):
                chosen.add(r.key)
                wanted_hosts.update(canonical_host(h, r.namespace) for h in _vs_destinations(spec))
        elif r.kind in _POLICY_KINDS and r.namespace in (view.namespace, ROOT_NAMESPACE):
            chosen.add(r.key)
    picked_entries = [
        e
        for e in all_entries
        if any(view.sees(e.namespace, h) or h in wanted_hosts for h in e.hosts)
    ]
    visible_hosts = wanted_hosts | {h for e in picked_entries for h in e.hosts}
    for r in resources:
        if r.kind == "DestinationRule":
            dr_host = _spec(r).get("host")
            if not isinstance(dr_host, str):
                continue
            h = canonical_host(dr_host, r.namespace)
            if view.sees(r.namespace, h) or any(host_matches(h, v) for v in visible_hosts):
                chosen.add(r.key)
    selectors = [(e.namespace, e.selector) for e in picked_entries if e.selector is not None]

    def selected(ns: str, labels: Mapping[str, str]) -> bool:
        return any(sns == ns and _selects(sel, labels) for sns, sel in selectors)

    picked_docs = {id(e.doc) for e in picked_entries}
    out: list[dict[str, Any]] = []
    for r in resources:
        if r.kind == "ServiceEntry":
            if id(r.doc) in picked_docs:
                out.append(r.doc)
        elif r.kind == "WorkloadEntry":
            labels = _spec(r).get("labels")
            if selected(r.namespace, labels if isinstance(labels, dict) else {}):
                out.append(r.doc)
        elif r.key in chosen:
            out.append(r.doc)
    out += [e.doc for e in generated if id(e.doc) in picked_docs]
    out += [d for ns, labels, d in we_docs if selected(ns, labels)]
    return out
