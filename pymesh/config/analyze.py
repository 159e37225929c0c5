"""Cross-resource analysis: what no single resource can show on its own.

Checks, with Istio's analyzer codes where Istio has one:

- IST0101 (error): a route (or mirror) names a subset that no DestinationRule for its host
  defines;
- IST0109 (error): two VirtualServices claim the same host;
- IST0174 (warning): a DestinationRule's host matches no ServiceEntry host;
- PM0101 (warning): a route's destination host matches no ServiceEntry host (it may be an
  external name that passes through);
- PM0102 (warning): more than one DestinationRule configures one host (pymesh uses the first);
- PM0103 (warning): a traffic policy sets `localityLbSetting` but no `outlierDetection` applies
  to it (Istio's footgun: nothing is ever marked unhealthy, so traffic never fails over).

Hosts are compared in canonical form (`pymesh.config.hosts.canonical_host`), each seen from the
namespace of the resource that names it. Resources that failed validation take part only as far
as needed to avoid follow-on noise (a broken DestinationRule still "has" its host).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymesh.config.findings import Finding, Severity
from pymesh.config.hosts import canonical_host, host_matches
from pymesh.config.model import (
    DestinationRule,
    LocalityLbSetting,
    OutlierDetection,
    ServiceEntry,
    TrafficPolicy,
    VirtualService,
)
from pymesh.config.validate import Parsed


def _finding(p: Parsed, code: str, severity: Severity, rel: str, message: str) -> Finding:
    path = p.path(rel)
    ref = p.meta.ref if p.meta is not None else ""
    return Finding(code, severity, message, p.doc.file, p.doc.line_of(path), ref, path)


def _ns_name(p: Parsed) -> str:
    return f"{p.meta.namespace}/{p.meta.name}" if p.meta is not None else "?"


def _spelled(written: str, canonical: str) -> str:
    return written if written == canonical else f"{written} ({canonical})"


def _raw_strings(value: object) -> list[str]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _locality_findings(p: Parsed, dr: DestinationRule) -> list[Finding]:
    """PM0103 for every policy of `dr` whose localityLbSetting has no outlierDetection."""
    out: list[Finding] = []

    def check(tp: TrafficPolicy | None, od: OutlierDetection | None, rel: str) -> None:
        if tp is None:
            return
        lbs = tp.load_balancer
        loc: LocalityLbSetting | None = lbs.locality_lb_setting if lbs is not None else None
        if loc is not None and loc.enabled is not False and od is None:
            effect = (
                "a locality whose endpoints fail keeps its distribute share"
                if loc.distribute
                else "traffic never fails over to another locality (Istio does not apply "
                "failover without it)"
            )
            out.append(
                _finding(
                    p,
                    "PM0103",
                    "warning",
                    f"{rel}.loadBalancer.localityLbSetting",
                    f"localityLbSetting without outlierDetection: no endpoint is ever marked "
                    f"unhealthy, so {effect}; add outlierDetection",
                )
            )
        for k, pl in enumerate(tp.port_level_settings):
            check(
                TrafficPolicy(load_balancer=pl.load_balancer),
                pl.outlier_detection,
                f"{rel}.portLevelSettings[{k}]",
            )

    top = dr.traffic_policy
    check(top, top.outlier_detection if top else None, "spec.trafficPolicy")
    for i, s in enumerate(dr.subsets):
        tp = s.traffic_policy
        if tp is None:
            continue
        od = tp.outlier_detection or (top.outlier_detection if top else None)
        check(tp, od, f"spec.subsets[{i}].trafficPolicy")
    return out


def analyze_parsed(parsed: Sequence[Parsed]) -> list[Finding]:
    """Every cross-resource finding about `parsed` (the output of `validate_documents`)."""
    findings: list[Finding] = []

    # Hosts services are defined for: ServiceEntry hosts (a broken entry still counts).
    service_hosts: list[str] = []
    for p in parsed:
        if p.kind != "ServiceEntry" or p.meta is None:
            continue
        if isinstance(p.resource, ServiceEntry):
            hosts = list(p.resource.hosts)
        else:
            hosts = _raw_strings(p.spec.get("hosts"))
        service_hosts += [canonical_host(h, p.meta.namespace) for h in hosts]

    exact = {h for h in service_hosts if not h.startswith("*")}
    wild = [h for h in service_hosts if h.startswith("*")]

    def defined(host: str) -> bool:
        if host in exact or any(host_matches(w, host) for w in wild):
            return True
        return host.startswith("*") and any(host_matches(host, s) for s in service_hosts)

    # DestinationRules by canonical host; hosts of broken rules are remembered, not checked.
    rules: dict[str, list[tuple[Parsed, DestinationRule]]] = {}
    broken_rule_hosts: set[str] = set()
    for p in parsed:
        if p.kind != "DestinationRule" or p.meta is None:
            continue
        if isinstance(p.resource, DestinationRule):
            host = canonical_host(p.resource.host, p.meta.namespace)
            rules.setdefault(host, []).append((p, p.resource))
            findings += _locality_findings(p, p.resource)
            if not defined(host):
                findings.append(
                    _finding(
                        p,
                        "IST0174",
                        "warning",
                        "spec.host",
                        f"The host {p.resource.host} defined in the DestinationRule does not "
                        "match any services in the mesh (no ServiceEntry defines it)",
                    )
                )
        elif isinstance(p.spec.get("host"), str):
            broken_rule_hosts.add(canonical_host(p.spec["host"], p.meta.namespace))

    for host, group in rules.items():
        if len(group) > 1:
            names = ", ".join(_ns_name(p) for p, _ in group)
            first = _ns_name(group[0][0])
            for p, _ in group:
                findings.append(
                    _finding(
                        p,
                        "PM0102",
                        "warning",
                        "spec.host",
                        f"host {host} is configured by more than one DestinationRule ({names}); "
                        f"pymesh uses the first ({first}): merge them into one",
                    )
                )

    # VirtualService host claims (a resource defined twice is reported once, as PM0014).
    claims: dict[str, list[tuple[Parsed, int]]] = {}
    refs: set[str] = set()
    for p in parsed:
        if p.kind != "VirtualService" or p.meta is None or p.meta.ref in refs:
            continue
        refs.add(p.meta.ref)
        if isinstance(p.resource, VirtualService):
            hosts = list(p.resource.hosts)
        else:
            hosts = _raw_strings(p.spec.get("hosts"))
        for i, h in enumerate(hosts):
            claims.setdefault(canonical_host(h, p.meta.namespace), []).append((p, i))
    for host, claimants in claims.items():
        if len({id(p) for p, _ in claimants}) < 2:
            continue
        names = " and ".join(dict.fromkeys(_ns_name(p) for p, _ in claimants))
        for p, i in claimants:
            findings.append(
                _finding(
                    p,
                    "IST0109",
                    "error",
                    f"spec.hosts[{i}]",
                    f"The VirtualServices {names} define the same host {host}, which can lead "
                    "to undefined behavior; merge them into a single resource",
                )
            )

    # Route destinations: hosts and subsets.
    wild_rule_hosts = [h for h in rules if h.startswith("*")]
    for p in parsed:
        vs = p.resource
        if not isinstance(vs, VirtualService):
            continue
        ns = vs.meta.namespace
        http = p.spec.get("http")
        raw_rules: list[Any] = http if isinstance(http, list) else []
        for i, rule in enumerate(vs.http):
            targets = [
                (f"spec.http[{i}].route[{j}].destination", rd.destination)
                for j, rd in enumerate(rule.route)
            ]
            single = (
                i < len(raw_rules) and isinstance(raw_rules[i], dict) and "mirror" in raw_rules[i]
            )
            targets += [  # mirror destinations: the same checks
                (
                    f"spec.http[{i}].mirror"
                    if single
                    else f"spec.http[{i}].mirrors[{k}].destination",
                    m.destination,
                )
                for k, m in enumerate(rule.mirrors)
            ]
            for rel, dest in targets:
                host = canonical_host(dest.host, ns)
                if not defined(host):
                    findings.append(
                        _finding(
                            p,
                            "PM0101",
                            "warning",
                            f"{rel}.host",
                            f"no ServiceEntry defines host {_spelled(dest.host, host)}; calls "
                            "to it pass through as to an external host",
                        )
                    )
                if dest.subset is None or host in broken_rule_hosts:
                    continue
                candidates = [dr for _, dr in rules.get(host, ())] + [
                    dr
                    for dhost in wild_rule_hosts
                    if dhost != host and host_matches(dhost, host)
                    for _, dr in rules[dhost]
                ]
                if not any(s.name == dest.subset for dr in candidates for s in dr.subsets):
                    why = (
                        "no DestinationRule configures this host"
                        if not candidates
                        else "the DestinationRule for this host does not define it"
                    )
                    findings.append(
                        _finding(
                            p,
                            "IST0101",
                            "error",
                            f"{rel}.subset",
                            f"Referenced host+subset in destinationrule not found: "
                            f'"{dest.host}+{dest.subset}" ({why})',
                        )
                    )
    return findings
