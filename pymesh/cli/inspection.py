"""What `pymeshctl proxy-config` and `pymeshctl describe service` show, computed from what the
control plane returns (pure functions: no I/O).

- `proxy_config` compiles one workload's snapshot (the documents `GET /v1/snapshot` returns for
  it) with `pymesh.snapshot.compile_snapshot`, exactly as the agent inside `pymesh.Mesh` does,
  and lists its routes (per virtual host, in match order), clusters, endpoints and the inbound
  policies that apply to it (PeerAuthentication, AuthorizationPolicy) plus its Sidecar egress.
- `describe_service` joins the stored resources (`GET /v1/resources`) and the registry
  (`GET /v1/workloads`): the service's definition and ports, its endpoints with their health
  (registered: lease; static: declared), the routes that send to it, and the policies on it.

Both return JSON-ready dicts (what `-o json|yaml` prints); `render_*` turn them into text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymesh.config import load_text
from pymesh.config.durations import format_duration
from pymesh.config.hosts import canonical_host
from pymesh.config.model import (
    AuthorizationPolicy,
    ConfigSet,
    DestinationRule,
    HTTPMatchRequest,
    HTTPRoute,
    PeerAuthentication,
    ServiceEntry,
    StringMatch,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
)
from pymesh.errors import ConfigError
from pymesh.policy.authz import policy_applies
from pymesh.policy.peerauthn import PeerAuthnPolicy
from pymesh.snapshot import ClusterSpec, RouteEntry, compile_snapshot

from .output import table

__all__ = [
    "SERVICE_LABEL",
    "describe_service",
    "entry_labels",
    "load_documents",
    "match_text",
    "proxy_config",
    "render_describe",
    "render_proxy_config",
    "short_host",
]

SERVICE_LABEL = "pymesh.io/service"
SECTIONS = ("routes", "clusters", "endpoints", "policies")
_RULE = re.compile(r"^(?P<ref>.+) http\[(?P<index>\d+)\]")


def load_documents(docs: Sequence[Mapping[str, Any]], name: str) -> ConfigSet:
    """Load API documents (JSON objects) with the same code as everything else."""
    text = "\n---\n".join(json.dumps(d) for d in docs)
    return load_text(text, name)


def entry_labels(workload: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a registered workload's WorkloadEntry: its own, `app: <service>` unless
    set, and `pymesh.io/service: <service>` (see docs/control-plane.md)."""
    labels = {str(k): str(v) for k, v in (workload.get("labels") or {}).items()}
    service = str(workload.get("service", ""))
    labels.setdefault("app", service)
    labels[SERVICE_LABEL] = service
    return labels


# ---------------------------------------------------------------------------- text of matches


def _sm(what: str, m: StringMatch | None) -> str:
    if m is None:
        return f"{what} present"
    return f"{what} {m.kind} {m.value}"


def match_text(m: HTTPMatchRequest) -> str:
    """One match block as text (its conditions, ANDed): `uri prefix /api, header x-user exact
    jason`."""
    parts: list[str] = []
    for what, sm in (("uri", m.uri), ("method", m.method), ("authority", m.authority)):
        if sm is not None:
            parts.append(_sm(what, sm) + (" (ignore case)" if what == "uri" and m.ignore_uri_case
                                          else ""))  # fmt: skip
    if m.scheme is not None:
        parts.append(_sm("scheme", m.scheme))
    parts += [_sm(f"header {k}", v) for k, v in sorted(m.headers.items())]
    parts += [_sm(f"query {k}", v) for k, v in sorted(m.query_params.items())]
    parts += [_sm(f"without header {k}", v) for k, v in sorted(m.without_headers.items())]
    if m.port is not None:
        parts.append(f"port {m.port}")
    if m.source_labels:
        parts.append("source " + ",".join(f"{k}={v}" for k, v in sorted(m.source_labels.items())))
    if m.source_namespace:
        parts.append(f"source namespace {m.source_namespace}")
    return ", ".join(parts) or "*"


def _rules(config: ConfigSet) -> dict[tuple[str, int], HTTPRoute]:
    out: dict[tuple[str, int], HTTPRoute] = {}
    for r in config.resources:
        if isinstance(r, VirtualService):
            for i, rule in enumerate(r.http):
                out[(r.meta.ref, i)] = rule
    return out


def _duration(seconds: float | None) -> str | None:
    return None if seconds is None else format_duration(seconds)


def _route(
    host: str, entry: RouteEntry, rules: Mapping[tuple[str, int], HTTPRoute]
) -> dict[str, Any]:
    m = _RULE.match(entry.name)
    rule = rules.get((m.group("ref"), int(m.group("index")))) if m else None
    matches = [match_text(x) for x in rule.match] if rule is not None and rule.match else ["*"]
    dests = []
    prev = 0
    for choice, cum in zip(entry.destinations, entry.cumulative, strict=True):
        dests.append(
            {
                "host": choice.host,
                "subset": choice.subset,
                "port": choice.port,
                "weight": cum - prev,
            }
        )
        prev = cum
    retry = entry.retry
    out: dict[str, Any] = {
        "host": host,
        "rule": entry.name,
        "match": matches,
        "destinations": dests,
        "timeout": _duration(entry.timeout),
        "retries": {
            "attempts": retry.num_retries,
            "retryOn": sorted(retry.retry_on)
            + sorted(str(c) for c in retry.retriable_status_codes),
            "perTryTimeout": _duration(retry.per_try_timeout),
        },
    }
    if entry.fault is not None:
        out["fault"] = True
    if entry.mirrors:
        out["mirrors"] = [
            {"host": t.choice.host, "subset": t.choice.subset, "percent": t.share / 10_000}
            for t in entry.mirrors
        ]
    if entry.redirect is not None:
        out["redirect"] = True
    if entry.direct is not None:
        out["directResponse"] = entry.direct.status
    return out


def short_host(host: str, domain: str = "cluster.local") -> str:
    """`reviews.default.svc.cluster.local` → `reviews.default` (other hosts as they are)."""
    return host.removesuffix(f".svc.{domain}")


def _dest_text(d: Mapping[str, Any]) -> str:
    text = short_host(str(d["host"]))
    if d.get("subset"):
        text += f"|{d['subset']}"
    if d.get("port"):
        text += f":{d['port']}"
    return text


def _cluster(c: ClusterSpec) -> dict[str, Any]:
    od = c.outlier
    tls = "auto (mesh mTLS to endpoints with an identity)" if c.tls is None else c.tls.mode
    pool = c.connection_pool
    return {
        "name": c.name,
        "host": c.host,
        "port": c.port,
        "subset": c.subset,
        "lb": c.lb,
        "outlierDetection": None
        if od is None
        else {
            "consecutive5xxErrors": od.consecutive_5xx_errors,
            "consecutiveGatewayErrors": od.consecutive_gateway_errors,
            "interval": format_duration(od.interval),
            "baseEjectionTime": format_duration(od.base_ejection_time),
            "maxEjectionPercent": od.max_ejection_percent,
        },
        "connectionPool": None
        if pool is None
        else {k: v for k, v in _fields(pool).items() if v is not None},
        "tls": tls,
        "endpoints": len(c.endpoints),
    }


def _fields(obj: object) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in getattr(obj, "__slots__", ()):
        v = getattr(obj, name, None)
        out[name] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out


def _policies(config: ConfigSet, namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    pas = [r for r in config.resources if isinstance(r, PeerAuthentication)]
    pa = PeerAuthnPolicy.compile(pas, namespace=namespace, labels=labels)
    aps = [
        r
        for r in config.resources
        if isinstance(r, AuthorizationPolicy) and policy_applies(r, namespace, labels)
    ]
    return {
        "peerAuthentication": {
            "mode": pa.mode,
            "ports": {str(p): m for p, m in sorted(pa.port_modes.items())},
            "decidedBy": list(pa.decided_by) or ["default (no PeerAuthentication applies)"],
        },
        "authorizationPolicies": [
            {
                "policy": f"{p.meta.namespace}/{p.meta.name}",
                "action": p.action,
                "rules": len(p.rules),
            }
            for p in aps
        ],
    }


def proxy_config(
    snapshot: Mapping[str, Any], workload: Mapping[str, Any], trust_domain: str = "cluster.local"
) -> dict[str, Any]:
    """What the agent of `workload` (a `GET /v1/workloads` item) holds, from its snapshot
    (the `GET /v1/snapshot?workload=` message), compiled as the agent compiles it."""
    docs = snapshot.get("resources") or []
    config = load_documents(docs, f"snapshot@{snapshot.get('revision')}")
    namespace = str(workload.get("namespace", "default"))
    labels = entry_labels(workload)
    snap = compile_snapshot(
        config,
        namespace,
        labels,
        version=str(snapshot.get("revision")),
        locality=str(workload.get("locality") or "") or None,
        trust_domain=trust_domain,
    )
    rules = _rules(config)
    routes = [
        _route(host, entry, rules)
        for host in sorted(snap.vhosts)
        for _pred, entry in snap.vhosts[host].table
    ]
    clusters = [_cluster(snap.clusters[k]) for k in sorted(snap.clusters)]
    endpoints = [
        {
            "cluster": name,
            "address": ep.address,
            "port": ep.port,
            "labels": dict(ep.labels),
            "locality": ep.locality,
            "priority": ep.priority,
            "weight": ep.weight,
            "identity": ep.identity,
        }
        for name in sorted(snap.clusters)
        for ep in snap.clusters[name].endpoints
    ]
    policies = _policies(config, namespace, labels)
    eg = snap.egress
    policies["sidecar"] = (
        None
        if eg is None
        else {"source": eg.source, "outboundMode": eg.mode, "egress": list(eg.written)}
    )
    return {
        "workload": {
            "workload": workload.get("workload"),
            "service": workload.get("service"),
            "namespace": namespace,
            "address": workload.get("address"),
            "labels": labels,
            "locality": workload.get("locality") or "",
        },
        "revision": snapshot.get("revision"),
        "digest": snapshot.get("digest"),
        "view": snapshot.get("view"),
        "routes": routes,
        "clusters": clusters,
        "endpoints": endpoints,
        "policies": policies,
    }


def render_proxy_config(pc: Mapping[str, Any], sections: Iterable[str] = SECTIONS) -> str:
    """`proxy_config`'s result as text: a header, then one table per section."""
    wl = pc["workload"]
    view = pc.get("view") or {}
    view_text = "everything" if view.get("everything", True) else (
        f"Sidecar {view.get('sidecar')}: " + ", ".join(view.get("egress") or [])
    )  # fmt: skip
    out = [
        f"Workload:  {wl['workload']} (service {wl['service']}, namespace {wl['namespace']}, "
        f"{wl['address']})",
        f"Snapshot:  revision {pc['revision']} ({str(pc.get('digest') or '')[:19]}), "
        f"view: {view_text}",
    ]
    wanted = set(sections)
    if "routes" in wanted:
        rows = []
        for r in pc["routes"]:
            retries = r["retries"]
            rtext = f"{retries['attempts']}"
            if retries["attempts"]:
                rtext += " on " + ",".join(retries["retryOn"])
                if retries["perTryTimeout"]:
                    rtext += f" per try {retries['perTryTimeout']}"
            extra = [
                k
                for k, label in (
                    ("fault", "fault"),
                    ("mirrors", "mirror"),
                    ("redirect", "redirect"),
                )
                if r.get(k)
            ]
            if r.get("directResponse") is not None:
                extra.append(f"direct {r['directResponse']}")
            dests = ", ".join(f"{_dest_text(d)} {d['weight']}%" for d in r["destinations"])
            rows.append(
                [
                    r["host"],
                    " | ".join(r["match"]),
                    dests or ("-" if not extra else ""),
                    r["timeout"],
                    rtext,
                    " ".join(extra),
                    r["rule"],
                ]
            )
        out += ["", "ROUTES", table(
            ["HOST", "MATCH", "DESTINATIONS", "TIMEOUT", "RETRIES", "ALSO", "RULE"], rows
        )]  # fmt: skip
    if "clusters" in wanted:
        rows = []
        for c in pc["clusters"]:
            od = c["outlierDetection"]
            otext = (
                f"{od['consecutive5xxErrors']}x5xx/{od['interval']} eject {od['baseEjectionTime']}"
                if od
                else "-"
            )
            tls = "auto" if str(c["tls"]).startswith("auto") else c["tls"]
            rows.append([c["name"], c["lb"], otext, tls, c["endpoints"]])
        out += ["", "CLUSTERS", table(["NAME", "LB", "OUTLIER", "TLS", "ENDPOINTS"], rows)]
    if "endpoints" in wanted:
        rows = [
            [
                f"{e['address']}:{e['port']}",
                e["cluster"],
                e["locality"],
                e["priority"],
                e["weight"],
                e["identity"],
            ]
            for e in pc["endpoints"]
        ]
        out += [
            "",
            "ENDPOINTS",
            table(["ENDPOINT", "CLUSTER", "LOCALITY", "PRIORITY", "WEIGHT", "IDENTITY"], rows)
            if rows
            else "(none)",
        ]
    if "policies" in wanted:
        pol = pc["policies"]
        pa = pol["peerAuthentication"]
        ports = ", ".join(f"port {p}: {m}" for p, m in pa["ports"].items())
        lines = [
            f"PeerAuthentication:   {pa['mode']}"
            + (f" ({ports})" if ports else "")
            + f" — {', '.join(pa['decidedBy'])}"
        ]
        aps = pol["authorizationPolicies"]
        if aps:
            lines += [
                f"AuthorizationPolicy:  {a['policy']} {a['action']} ({a['rules']} rules)"
                for a in aps
            ]
        else:
            lines.append("AuthorizationPolicy:  none (every request allowed)")
        sc = pol.get("sidecar")
        if sc:
            lines.append(
                f"Sidecar:              {sc['source']} ({sc['outboundMode']}): "
                + ", ".join(sc["egress"])
            )
        else:
            lines.append("Sidecar:              none (every service visible)")
        out += ["", "POLICIES", *lines]
    return "\n".join(out)


# ---------------------------------------------------------------------------- describe service


def _traffic_policy_text(tp: TrafficPolicy | None) -> list[str]:
    if tp is None:
        return []
    out = []
    lb = tp.load_balancer
    if lb is not None:
        if lb.consistent_hash is not None:
            out.append(f"loadBalancer {lb.consistent_hash.algorithm} ({lb.consistent_hash.key})")
        elif lb.simple:
            out.append(f"loadBalancer {lb.simple}")
        if lb.locality_lb_setting is not None:
            out.append("locality load balancing")
    od = tp.outlier_detection
    if od is not None:
        out.append(
            f"outlierDetection {od.consecutive_5xx_errors} consecutive 5xx / "
            f"{format_duration(od.interval)}, eject {format_duration(od.base_ejection_time)}"
        )
    if tp.connection_pool is not None:
        out.append("connectionPool")
    if tp.tls is not None:
        out.append(f"tls {tp.tls.mode}")
    return out


def _selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return selector is not None and all(labels.get(k) == v for k, v in selector.items())


def describe_service(
    name: str,
    namespace: str,
    resources: Sequence[Mapping[str, Any]],
    workloads: Sequence[Mapping[str, Any]],
) -> dict[str, Any] | None:
    """Everything about one service (None when nothing defines or registers it)."""
    config = load_documents(resources, "<stored>") if resources else ConfigSet(())
    host = canonical_host(name, namespace)
    entries = [
        r
        for r in config.resources
        if isinstance(r, ServiceEntry)
        and host in {canonical_host(h, r.meta.namespace) for h in r.hosts}
    ]
    registered = [
        w
        for w in workloads
        if canonical_host(str(w.get("service", "")), str(w.get("namespace", ""))) == host
    ]
    if not entries and not registered:
        return None
    defined_by = [f"{se.meta.ref} ({se.location}, {se.resolution})" for se in entries] or [
        "the registry (no ServiceEntry: one is generated for the registered workloads)"
    ]
    ports: dict[int, dict[str, Any]] = {}
    for se in entries:
        for p in se.ports:
            ports.setdefault(
                p.number,
                {"name": p.name, "number": p.number, "protocol": p.protocol,
                 "targetPort": p.target_port},
            )  # fmt: skip
    if not entries:
        for w in registered:
            for p in w.get("ports") or []:
                num = int(p.get("servicePort") or p.get("port"))
                ports.setdefault(
                    num,
                    {"name": p.get("name"), "number": num, "protocol": p.get("protocol", "HTTP"),
                     "targetPort": None},
                )  # fmt: skip

    endpoints: list[dict[str, Any]] = []
    seen: set[str] = set()
    wes = [r for r in config.resources if isinstance(r, WorkloadEntry)]

    def add_registered(w: Mapping[str, Any]) -> None:
        wid = str(w.get("workload"))
        if wid in seen:
            return
        seen.add(wid)
        lease = w.get("lease")
        if lease is None:
            health = "no lease"
        elif not lease.get("confirmed", True):
            health = (
                f"unconfirmed: lease {lease['remainingSeconds']:.1f}s left of "
                f"{lease['ttlSeconds']:g}s (no heartbeat since the control plane restarted)"
            )
        else:
            health = (
                f"healthy: lease {lease['remainingSeconds']:.1f}s left of {lease['ttlSeconds']:g}s"
            )
        endpoints.append(
            {
                "address": w.get("address"),
                "ports": {str(p.get("name")): p.get("port") for p in w.get("ports") or []},
                "labels": entry_labels(w),
                "locality": w.get("locality") or "",
                "source": f"registered workload {wid}",
                "agents": list(w.get("agents") or []),
                "health": health,
            }
        )

    for se in entries:
        for ep in se.endpoints:
            endpoints.append(
                {
                    "address": ep.address,
                    "ports": dict(ep.ports),
                    "labels": dict(ep.labels),
                    "locality": ep.locality,
                    "source": f"{se.meta.ref} (static endpoint)",
                    "agents": [],
                    "health": "declared (static: no lease)",
                }
            )
        if se.workload_selector is not None:
            for we in wes:
                if we.meta.namespace == se.meta.namespace and _selects(
                    se.workload_selector, we.endpoint.labels
                ):
                    endpoints.append(
                        {
                            "address": we.endpoint.address,
                            "ports": dict(we.endpoint.ports),
                            "labels": dict(we.endpoint.labels),
                            "locality": we.endpoint.locality,
                            "source": we.meta.ref,
                            "agents": [],
                            "health": "declared (WorkloadEntry: no lease)",
                        }
                    )
            for w in workloads:
                if w.get("namespace") == se.meta.namespace and _selects(
                    se.workload_selector, entry_labels(w)
                ):
                    add_registered(w)
    if not entries:
        for w in registered:
            add_registered(w)

    virtual_services: list[str] = []
    routes_to: list[dict[str, Any]] = []
    for vs in (r for r in config.resources if isinstance(r, VirtualService)):
        ns = vs.meta.namespace
        if host in {canonical_host(h, ns) for h in vs.hosts}:
            virtual_services.append(vs.meta.ref)
        for i, rule in enumerate(vs.http):
            label = f"{vs.meta.ref} http[{i}]" + (f" ({rule.name})" if rule.name else "")
            matches = " | ".join(match_text(m) for m in rule.match) if rule.match else "*"
            for rd in rule.route:
                if canonical_host(rd.destination.host, ns) == host:
                    weight = 100 if rd.weight is None and len(rule.route) == 1 else rd.weight or 0
                    routes_to.append(
                        {
                            "rule": label,
                            "hosts": list(vs.hosts),
                            "match": matches,
                            "subset": rd.destination.subset,
                            "port": rd.destination.port,
                            "weight": weight,
                            "mirror": False,
                        }
                    )
            for mp in rule.mirrors:
                if canonical_host(mp.destination.host, ns) == host:
                    routes_to.append(
                        {
                            "rule": label,
                            "hosts": list(vs.hosts),
                            "match": matches,
                            "subset": mp.destination.subset,
                            "port": mp.destination.port,
                            "weight": mp.percentage,
                            "mirror": True,
                        }
                    )

    rules = []
    for dr in (r for r in config.resources if isinstance(r, DestinationRule)):
        if canonical_host(dr.host, dr.meta.namespace) != host:
            continue
        rules.append(
            {
                "rule": dr.meta.ref,
                "trafficPolicy": _traffic_policy_text(dr.traffic_policy),
                "subsets": [
                    {
                        "name": s.name,
                        "labels": dict(s.labels),
                        "trafficPolicy": _traffic_policy_text(s.traffic_policy),
                    }
                    for s in dr.subsets
                ],
            }
        )

    pas = [r for r in config.resources if isinstance(r, PeerAuthentication)]
    aps = [r for r in config.resources if isinstance(r, AuthorizationPolicy)]
    targets = [(namespace, e["labels"]) for e in endpoints] or [(namespace, {})]
    peer: dict[str, dict[str, Any]] = {}
    for ns, labels in targets:
        pa = PeerAuthnPolicy.compile(pas, namespace=ns, labels=labels)
        key = json.dumps([pa.mode, sorted(pa.port_modes.items()), pa.decided_by])
        peer.setdefault(
            key,
            {
                "mode": pa.mode,
                "ports": {str(p): m for p, m in sorted(pa.port_modes.items())},
                "decidedBy": list(pa.decided_by) or ["default (no PeerAuthentication applies)"],
            },
        )
    authz = [
        {"policy": f"{p.meta.namespace}/{p.meta.name}", "action": p.action, "rules": len(p.rules)}
        for p in aps
        if any(policy_applies(p, ns, labels) for ns, labels in targets)
    ]
    return {
        "service": host,
        "namespace": namespace,
        "definedBy": defined_by,
        "ports": [ports[k] for k in sorted(ports)],
        "endpoints": endpoints,
        "virtualServices": virtual_services,
        "routesTo": routes_to,
        "destinationRules": rules,
        "peerAuthentication": list(peer.values()),
        "authorizationPolicies": authz,
    }


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != SERVICE_LABEL)


def render_describe(d: Mapping[str, Any]) -> str:
    """`describe_service`'s result as text."""
    ports = ", ".join(
        f"{p['name']} {p['number']}/{p['protocol']}"
        + (f" → {p['targetPort']}" if p.get("targetPort") else "")
        for p in d["ports"]
    )
    out = [
        f"Service:     {d['service']}",
        f"Namespace:   {d['namespace']}",
        "Defined by:  " + "; ".join(d["definedBy"]),
        f"Ports:       {ports or '-'}",
        "",
        "Endpoints:",
    ]
    rows = [
        [
            e["address"],
            ",".join(f"{k}={v}" for k, v in e["ports"].items()),
            _labels(e["labels"]),
            e["locality"],
            e["health"],
            e["source"],
        ]
        for e in d["endpoints"]
    ]
    if rows:
        out += [
            "  " + line
            for line in table(
                ["ADDRESS", "PORTS", "LABELS", "LOCALITY", "HEALTH", "FROM"], rows
            ).splitlines()
        ]
    else:
        out.append("  (none: nothing is registered and no endpoint is declared)")
    out += ["", "Virtual services on its host: " + (", ".join(d["virtualServices"]) or "none")]
    out += ["", "Routes to it:"]
    if d["routesTo"]:
        for r in d["routesTo"]:
            target = (r["subset"] and f"subset {r['subset']}") or "all endpoints"
            if r["port"]:
                target += f" port {r['port']}"
            what = f"mirror {r['weight']:g}%" if r["mirror"] else f"{r['weight']}%"
            out.append(f"  {r['rule']}: {what} → {target} (match: {r['match']})")
    else:
        out.append("  none (calls use the default route: every endpoint)")
    out += ["", "Policies:"]
    for dr in d["destinationRules"]:
        subsets = ", ".join(
            f"{s['name']} ({_labels(s['labels'])})"
            + (f" [{'; '.join(s['trafficPolicy'])}]" if s["trafficPolicy"] else "")
            for s in dr["subsets"]
        )
        tp = "; ".join(dr["trafficPolicy"]) or "default traffic policy"
        out.append(f"  {dr['rule']}: {tp}" + (f"; subsets {subsets}" if subsets else ""))
    if not d["destinationRules"]:
        out.append("  DestinationRule: none (LEAST_REQUEST, no outlier detection)")
    for pa in d["peerAuthentication"]:
        ports_text = ", ".join(f"port {p}: {m}" for p, m in pa["ports"].items())
        out.append(
            f"  PeerAuthentication: {pa['mode']}"
            + (f" ({ports_text})" if ports_text else "")
            + f" — {', '.join(pa['decidedBy'])}"
        )
    for ap in d["authorizationPolicies"]:
        out.append(f"  AuthorizationPolicy {ap['policy']}: {ap['action']} ({ap['rules']} rules)")
    if not d["authorizationPolicies"]:
        out.append("  AuthorizationPolicy: none (every request allowed)")
    return "\n".join(out)


def config_error_text(exc: ConfigError) -> str:
    """One line about configuration that does not load (should not happen for stored config)."""
    first = exc.findings[0] if exc.findings else None
    return f"the configuration does not load: {first or exc}"
