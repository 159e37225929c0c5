"""Sidecar egress: which Sidecar applies to a workload, and which hosts it may call.

Istio's rules:

- The Sidecar in the workload's namespace whose `workloadSelector` matches the workload's
  labels applies (the first one, when several match); else the namespace's Sidecar without a
  selector; else the root namespace's (`istio-system`) Sidecar without a selector; else none
  (every service is visible, unknown hosts pass through).
- `egress[].hosts` entries are `namespace/dnsName`: the namespace is a name, `*` (any), `.`
  (the Sidecar's own) or `~` (none); the dnsName is `*`, a wildcard (`*.example.com`) or a
  name. A service is visible when an entry names the namespace that declared it and a dnsName
  that covers its host. A Sidecar without `egress` sees every service.
- A listener with a `port` covers calls to that service port; the listener without one covers
  every other port (no such listener: nothing is visible on other ports).
- `outboundTrafficPolicy.mode`: with REGISTRY_ONLY a host that is not a visible service is
  refused; with ALLOW_ANY (the default) it passes through to the network.

Short names in `dnsName` (`default/reviews`) are read as Kubernetes DNS would from the entry's
namespace (from the Sidecar's own for `*`), a pymesh convenience: Istio matches them as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pymesh.config.hosts import canonical_host, host_matches
from pymesh.config.model import Sidecar

ROOT_NAMESPACE = "istio-system"


def select_sidecar(
    sidecars: Sequence[Sidecar],
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = ROOT_NAMESPACE,
) -> Sidecar | None:
    """The Sidecar that applies to a workload in `namespace` with `labels`, or None."""
    default = root_default = None
    for sc in sidecars:
        ns = sc.meta.namespace
        sel = sc.workload_selector
        if ns == namespace and sel is not None:
            if all(labels.get(k) == v for k, v in sel.items()):
                return sc
        elif ns == namespace and sel is None:
            default = default or sc
        elif ns == root_namespace and sel is None:
            root_default = root_default or sc
    return default or root_default


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What one workload may call: visible hosts per service port (`by_port`), for every other
    port (`default`; None: nothing), and the outbound mode. `source` names the Sidecar."""

    source: str
    mode: str
    by_port: Mapping[int, frozenset[str]]
    default: frozenset[str] | None
    written: tuple[str, ...]

    @property
    def registry_only(self) -> bool:
        """Whether hosts that are not visible services are refused (REGISTRY_ONLY)."""
        return self.mode == "REGISTRY_ONLY"

    def allows(self, host: str, port: int) -> bool:
        """Whether the canonical mesh `host` is visible on service `port`."""
        hosts = self.by_port.get(port, self.default)
        return hosts is not None and host in hosts


def _entry(written: str, sidecar_ns: str) -> tuple[str | None, str] | None:
    """(namespace or None for any, canonical host pattern) of an egress host; None for `~`."""
    ns, _, dns = written.partition("/")
    if ns == "~":
        return None
    if ns == ".":
        ns = sidecar_ns
    pattern = (
        dns
        if dns == "*" or dns.startswith("*.")
        else canonical_host(dns, ns if ns != "*" else sidecar_ns)
    )
    return (None if ns == "*" else ns), pattern


def visible_hosts(
    written: Sequence[str], sidecar_ns: str, hosts: Mapping[str, str]
) -> frozenset[str]:
    """The hosts (canonical host → namespace that declared it) the entries `written` select."""
    entries = [e for e in (_entry(w, sidecar_ns) for w in written) if e is not None]
    return frozenset(
        host
        for host, host_ns in hosts.items()
        if any((ns is None or ns == host_ns) and host_matches(p, host) for ns, p in entries)
    )


def compile_egress(sidecar: Sidecar, hosts: Mapping[str, str]) -> EgressPolicy:
    """The egress policy of `sidecar` over the mesh's `hosts` (canonical host → namespace)."""
    ns = sidecar.meta.namespace
    by_port: dict[int, frozenset[str]] = {}
    default: frozenset[str] | None = None
    written: list[str] = []
    if not sidecar.egress:
        default = frozenset(hosts)
        written.append("*/*")
    for listener in sidecar.egress:
        visible = visible_hosts(listener.hosts, ns, hosts)
        if listener.port is None:
            default = visible
            written.extend(listener.hosts)
        else:
            by_port[listener.port.number] = visible
            written.extend(f"{h} (port {listener.port.number})" for h in listener.hosts)
    return EgressPolicy(
        source=sidecar.meta.ref,
        mode=sidecar.outbound_mode or "ALLOW_ANY",
        by_port=by_port,
        default=default,
        written=tuple(written),
    )
