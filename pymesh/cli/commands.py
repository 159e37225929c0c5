"""The `pymeshctl` commands that talk to the control plane: apply, get, delete, status, token,
proxy-config, describe, top (and the live half of analyze, in `main`).

Each command is a plain function wrapped by `control_plane_command`, which adds the connection
options and turns user errors into one line and an exit status; `main` registers them on the
typer app. Exit status: 0 done, 1 refused or failed (the reason on stderr), 2 a usage error
(a file that does not exist, a malformed flag or config file).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from pymesh.config.durations import DurationError, parse_duration
from pymesh.config.findings import Finding
from pymesh.config.loader import SUFFIXES, parse_text
from pymesh.errors import ConfigError

from .connection import ApiError, LazyClient, control_plane_command, fail
from .inspection import (
    SECTIONS,
    config_error_text,
    describe_service,
    proxy_config,
    render_describe,
    render_proxy_config,
)
from .output import (
    ReadFormat,
    ago,
    dump,
    dump_documents,
    findings_from_json,
    in_time,
    print_findings,
    print_table,
    spinner,
    table,
)

__all__ = [
    "apply",
    "delete",
    "describe_app",
    "get",
    "proxy_config_command",
    "status",
    "token_app",
    "top",
]

OutputOpt = Annotated[
    ReadFormat, typer.Option("--output", "-o", help="table (default), yaml or json.")
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="The namespace.")]


# ------------------------------------------------------------------------------------ apply


@dataclass(frozen=True, slots=True)
class Source:
    """One input of `apply`: its display name and text."""

    name: str
    text: str


def read_sources(paths: list[str]) -> list[Source]:
    """The inputs of `apply -f`: files as given, directories' `*.yaml|*.yml|*.json` (sorted),
    `-` for standard input. A missing or unreadable path is a usage error (exit 2)."""
    out: list[Source] = []
    for raw in paths:
        if raw == "-":
            out.append(Source("<stdin>", sys.stdin.read()))
            continue
        p = Path(raw)
        if p.is_dir():
            files = sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in SUFFIXES)
            if not files:
                raise fail(f"{p}: no *.yaml, *.yml or *.json files in this directory", 2)
        elif p.exists():
            files = [p]
        else:
            raise fail(f"{p}: no such file or directory", 2)
        for f in files:
            try:
                out.append(Source(str(f), f.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise fail(f"{f}: cannot read: {reason}", 2) from None
    return out


BODY_NAME = "pymeshctl-apply.yaml"


def build_body(sources: list[Source]) -> tuple[str, str, list[tuple[int, str]]]:
    """One apply body for every input (the control plane applies a body all or nothing):
    (text, filename, [(first body line, input name)]). One input goes as it is; several are
    joined with `---` and findings are mapped back to their own file and line."""
    if len(sources) == 1:
        return sources[0].text, sources[0].name, [(1, sources[0].name)]
    parts: list[str] = []
    starts: list[tuple[int, str]] = []
    line = 1
    for s in sources:
        text = s.text if s.text.endswith("\n") or not s.text else s.text + "\n"
        parts.append("---\n" + text)
        starts.append((line + 1, s.name))
        line += 1 + text.count("\n")
    return "".join(parts), BODY_NAME, starts


def map_findings(
    findings: list[Finding], body_name: str, starts: list[tuple[int, str]]
) -> list[Finding]:
    """Findings on the joined body, renamed to the input file and line they came from."""
    if body_name != BODY_NAME:
        return findings
    out = []
    for f in findings:
        if f.file == body_name and f.line is not None:
            name, first = starts[0][1], starts[0][0]
            for start, src in starts:
                if f.line >= start:
                    name, first = src, start
            f = Finding(f.code, f.severity, f.message, name, f.line - first + 1, f.resource, f.path)
        out.append(f)
    return out


def _syntax_findings(sources: list[Source]) -> list[Finding]:
    out: list[Finding] = []
    for s in sources:
        _docs, findings = parse_text(s.text, s.name)
        out += [f for f in findings if f.severity == "error"]
    return out


def apply(
    cp: LazyClient,
    filename: Annotated[
        list[str],
        typer.Option(
            "--filename",
            "-f",
            help="A YAML/JSON file, a directory of them, or - for standard input. Repeatable; "
            "everything given is applied all or nothing.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate against the live configuration only.")
    ] = False,
) -> None:
    """Apply Istio resources to the control plane: all of them, or none (the findings say why)."""
    sources = read_sources(filename)
    targets = ", ".join(s.name for s in sources)
    syntax = _syntax_findings(sources)
    if syntax:
        print_findings(syntax, targets)
        raise fail("apply refused: nothing was changed")
    body, name, starts = build_body(sources)
    client = cp()
    ndocs = sum(len(parse_text(s.text, s.name)[0]) for s in sources)
    with spinner(f"Applying {ndocs} documents from {len(sources)} input(s) to {client.url}…"):
        try:
            result = client.post(
                "/v1/apply",
                content=body.encode("utf-8"),
                params={"filename": name, "dryRun": "true" if dry_run else "false"},
                headers={"Content-Type": "application/yaml"},
            )
        except ApiError as exc:
            if exc.status == 422 and exc.code == "invalid_config":
                findings = map_findings(findings_from_json(exc.body.get("findings")), name, starts)
                print_findings(findings, targets)
                raise fail("apply refused: nothing was changed") from None
            raise
    suffix = " (dry run)" if dry_run else ""
    for r in result.get("resources") or []:
        typer.echo(f"{r['kind']} {r['namespace']}/{r['name']} {r['action']}{suffix}")
    # warnings are worth a look; infos (fields accepted and ignored off Kubernetes, such as
    # the server's own metadata in a document from `get -o yaml`) are left to `analyze`
    notes = map_findings(findings_from_json(result.get("findings")), name, starts)
    for f in notes:
        if f.severity == "warning":
            typer.echo(typer.style(str(f), fg="yellow"), err=True)
    if not result.get("resources"):
        typer.echo("nothing to apply: no resources in the input", err=True)
    elif not dry_run:
        typer.echo(f"applied at revision {result.get('revision')}", err=True)


# ------------------------------------------------------------------------------------ get


def _join(values: Any) -> str:
    if isinstance(values, list):
        return ",".join(str(v) for v in values)
    return "" if values is None else str(values)


def _selector(spec: dict[str, Any], key: str) -> str:
    sel = spec.get(key)
    if isinstance(sel, dict):
        labels = sel.get("matchLabels", sel.get("labels"))
        if isinstance(labels, dict):
            return ",".join(f"{k}={v}" for k, v in labels.items())
    return ""


def _columns(kind: str, spec: dict[str, Any]) -> list[tuple[str, str]]:
    if kind == "VirtualService":
        return [
            ("HOSTS", _join(spec.get("hosts"))),
            ("HTTP RULES", str(len(spec.get("http") or []))),
        ]
    if kind == "DestinationRule":
        subsets = [s.get("name") for s in spec.get("subsets") or [] if isinstance(s, dict)]
        return [("HOST", str(spec.get("host", ""))), ("SUBSETS", _join(subsets))]
    if kind == "ServiceEntry":
        ports = [
            f"{p.get('number')}/{p.get('protocol') or p.get('name', '')}"
            for p in spec.get("ports") or []
            if isinstance(p, dict)
        ]
        return [
            ("HOSTS", _join(spec.get("hosts"))),
            ("PORTS", _join(ports)),
            ("LOCATION", str(spec.get("location", ""))),
            ("RESOLUTION", str(spec.get("resolution", ""))),
        ]
    if kind == "WorkloadEntry":
        labels = spec.get("labels") or {}
        return [
            ("ADDRESS", str(spec.get("address", ""))),
            ("LABELS", ",".join(f"{k}={v}" for k, v in labels.items())),
        ]
    if kind == "Sidecar":
        hosts = [
            h for e in spec.get("egress") or [] if isinstance(e, dict) for h in e.get("hosts") or []
        ]
        return [("SELECTOR", _selector(spec, "workloadSelector")), ("EGRESS", _join(hosts))]
    if kind == "PeerAuthentication":
        mtls = spec.get("mtls") or {}
        return [("MODE", str(mtls.get("mode", "UNSET"))), ("SELECTOR", _selector(spec, "selector"))]
    if kind == "AuthorizationPolicy":
        return [
            ("ACTION", str(spec.get("action", "ALLOW"))),
            ("RULES", str(len(spec.get("rules") or []))),
            ("SELECTOR", _selector(spec, "selector")),
        ]
    return []


def resource_rows(
    items: list[dict[str, Any]], all_namespaces: bool
) -> tuple[list[str], list[list[str]]]:
    """Table headers and rows for resources of any kinds."""
    kinds = {str(i.get("kind")) for i in items}
    extra_heads: list[str] = []
    if len(kinds) == 1:
        extra_heads = [h for h, _ in _columns(next(iter(kinds)), {})]
    heads = (["NAMESPACE"] if all_namespaces else []) + ["NAME"]
    if len(kinds) > 1:
        heads.append("KIND")
    heads += [*extra_heads, "REVISION"]
    rows = []
    for i in items:
        meta = i.get("metadata") or {}
        raw = i.get("spec")
        spec: dict[str, Any] = raw if isinstance(raw, dict) else {}
        row = ([str(meta.get("namespace", ""))] if all_namespaces else []) + [str(meta.get("name"))]
        if len(kinds) > 1:
            row.append(str(i.get("kind")))
        if extra_heads:
            row += [v for _, v in _columns(str(i.get("kind")), spec)]
        row.append(str(meta.get("resourceVersion", "")))
        rows.append(row)
    return heads, rows


def get(
    cp: LazyClient,
    kind: Annotated[
        str,
        typer.Argument(
            help="virtualservice (vs), destinationrule (dr), "
            "serviceentry (se), workloadentry (we), sidecar, "
            "peerauthentication (pa), authorizationpolicy (ap)"
        ),
    ],
    name: Annotated[str | None, typer.Argument(help="One resource's name.")] = None,
    namespace: NamespaceOpt = "default",
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="List every namespace.")
    ] = False,
    output: OutputOpt = ReadFormat.table,
) -> None:
    """Show resources: a table, or with -o yaml|json the documents, ready to apply again."""
    client = cp()
    if name is not None:
        doc = client.get(f"/v1/resources/{kind}/{namespace}/{name}")
        items = [doc]
    else:
        params = {"kind": kind} if all_namespaces else {"kind": kind, "namespace": namespace}
        items = list(client.get("/v1/resources", params=params).get("items") or [])
    if output is ReadFormat.json:
        data: Any = (
            items[0] if name is not None else {"apiVersion": "v1", "kind": "List", "items": items}
        )
        typer.echo(dump(data, output))
        return
    if output is ReadFormat.yaml:
        if items:
            typer.echo(dump_documents(items), nl=False)
        return
    where = "any namespace" if all_namespaces else f"namespace {namespace}"
    heads, rows = resource_rows(items, all_namespaces)
    print_table(heads, rows, f"No {kind} resources found in {where}.")


def delete(
    cp: LazyClient,
    kind: Annotated[str, typer.Argument(help="The kind (vs, dr, se, ... or the full name).")],
    name: Annotated[str, typer.Argument(help="The resource's name.")],
    namespace: NamespaceOpt = "default",
) -> None:
    """Delete one resource (refused, with the findings, if the rest would be invalid)."""
    try:
        result = cp().delete(f"/v1/resources/{kind}/{namespace}/{name}")
    except ApiError as exc:
        if exc.status == 422 and exc.code == "invalid_config":
            print_findings(findings_from_json(exc.body.get("findings")), "the configuration")
            raise fail(
                f"delete refused: the rest of the configuration still needs {kind} "
                f"{namespace}/{name}; nothing was changed"
            ) from None
        raise
    for r in result.get("resources") or []:
        typer.echo(f"{r['kind']} {r['namespace']}/{r['name']} deleted")


# ------------------------------------------------------------------------------------ status


def _cert_expiry(agent: dict[str, Any], now: float) -> str:
    cert = agent.get("certificate")
    if not isinstance(cert, dict):
        return "-"
    not_after = cert.get("notAfter")
    if isinstance(not_after, (int, float)):
        return in_time(float(not_after) - now)
    if isinstance(not_after, str) and not_after:
        import datetime as dt

        try:
            when = dt.datetime.fromisoformat(not_after.replace("Z", "+00:00"))
        except ValueError:
            return not_after
        return in_time(when.timestamp() - now)
    return "-"


def sync_state(agent: dict[str, Any]) -> str:
    """SYNCED, NACK, STALE (sent, not yet ACKed) or NOT SENT."""
    if agent.get("nack"):
        return "NACK"
    if agent.get("synced"):
        return "SYNCED"
    if not (agent.get("sent") or {}).get("digest"):
        return "NOT SENT"
    return "STALE"


def status(cp: LazyClient, output: OutputOpt = ReadFormat.table) -> None:
    """Every agent: the config revision it holds, ACK / NACK, certificate, last heartbeat.

    Agents of registered workloads that never opened a watch stream are listed too."""
    client = cp()
    agents = client.get("/v1/agents")
    workloads = client.get("/v1/workloads").get("items") or []
    items: list[dict[str, Any]] = list(agents.get("items") or [])
    known = {a["agent"] for a in items}
    by_workload = {w["workload"]: w for w in workloads}
    for w in workloads:  # registered agents that never opened a watch stream
        for agent in w.get("agents") or []:
            if agent not in known:
                items.append(
                    {
                        "agent": agent,
                        "service": w.get("service"),
                        "namespace": w.get("namespace"),
                        "workload": w["workload"],
                        "connected": False,
                        "sent": {"revision": 0, "digest": ""},
                        "acked": {"revision": 0, "digest": ""},
                        "nack": None,
                        "synced": False,
                        "lastHeartbeatSecondsAgo": None,
                    }
                )
                known.add(agent)
    if output is not ReadFormat.table:
        typer.echo(
            dump(
                {"revision": agents.get("revision"), "agents": items, "workloads": workloads},
                output,
            )
        )
        return
    now = time.time()
    rows = []
    for a in items:
        w = by_workload.get(a.get("workload") or "")
        service = a.get("service") or (w or {}).get("service") or ""
        ns = a.get("namespace") or (w or {}).get("namespace") or ""
        sent = (a.get("sent") or {}).get("revision") or None
        acked = (a.get("acked") or {}).get("revision") or None
        rows.append(
            [
                a["agent"],
                f"{service}.{ns}" if service else ns,
                a.get("workload") or "-",
                "yes" if a.get("connected") else "no",
                sent,
                acked,
                sync_state(a),
                _cert_expiry(a, now),
                ago(a.get("lastHeartbeatSecondsAgo")),
            ]
        )
    typer.echo(
        f"Control plane {client.url}, revision {agents.get('revision')}: "
        f"{len(items)} agents, {len(workloads)} registered workloads"
    )
    if rows:
        typer.echo("")
    print_table(
        ["AGENT", "SERVICE", "WORKLOAD", "CONNECTED", "SENT", "ACKED", "STATUS", "CERT EXPIRES",
         "LAST HEARTBEAT"],
        rows,
        "No agents are connected or registered.",
    )  # fmt: skip
    nacks = [a for a in items if a.get("nack")]
    if nacks:
        typer.echo("")
        for a in nacks:
            n = a["nack"]
            typer.echo(f"{a['agent']} refused revision {n.get('revision')}: {n.get('error')}")


# ------------------------------------------------------------------------------------ tokens

token_app = typer.Typer(
    name="token", help="Join tokens: create, list, revoke.", no_args_is_help=True
)


def parse_ttl(text: str) -> float | None:
    """`1h`, `30m`, `90s`, `24h` → seconds; `0` → None (never expires)."""
    if text.strip() in ("0", "0s"):
        return None
    try:
        value = parse_duration(text)
    except DurationError as exc:
        raise fail(f"--ttl: {exc} (a duration such as 1h, 30m; 0 for never)", 2) from None
    if value <= 0:
        raise fail("--ttl must be positive (0 means never expires)", 2)
    return value


@token_app.command("create")
@control_plane_command
def token_create(
    cp: LazyClient,
    service_account: Annotated[
        str, typer.Option("--service-account", help="The service account the token grants.")
    ],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Its namespace.")] = "default",
    ttl: Annotated[str, typer.Option("--ttl", help="How long it is valid (0: never).")] = "1h",
    output: Annotated[
        ReadFormat | None, typer.Option("--output", "-o", help="yaml or json: the whole record.")
    ] = None,
) -> None:
    """Create a join token for one identity; prints the token (shown once)."""
    seconds = parse_ttl(ttl)
    rec = cp().post(
        "/v1/tokens",
        json={"namespace": namespace, "serviceAccount": service_account, "ttlSeconds": seconds},
    )
    if output in (ReadFormat.json, ReadFormat.yaml):
        typer.echo(dump(rec, output))
        return
    expires = "never expires" if rec.get("expiresAt") is None else (
        f"expires {in_time(float(rec['expiresAt']) - time.time())}"
    )  # fmt: skip
    typer.echo(
        f"join token {rec['id']} for {rec['namespace']}/{rec['serviceAccount']}, {expires}",
        err=True,
    )
    typer.echo(rec["token"])


@token_app.command("list")
@control_plane_command
def token_list(cp: LazyClient, output: OutputOpt = ReadFormat.table) -> None:
    """List join tokens (never their secrets)."""
    items = cp().get("/v1/tokens").get("items") or []
    if output is not ReadFormat.table:
        typer.echo(dump(items, output))
        return
    now = time.time()
    rows = [
        [
            t["id"],
            t["namespace"],
            t["serviceAccount"],
            ago(now - float(t["createdAt"])),
            "never" if t.get("expiresAt") is None else in_time(float(t["expiresAt"]) - now),
            "expired" if t.get("expired") else "valid",
        ]
        for t in items
    ]
    print_table(
        ["ID", "NAMESPACE", "SERVICE ACCOUNT", "CREATED", "EXPIRES", "STATUS"],
        rows,
        "No join tokens.",
    )


@token_app.command("revoke")
@control_plane_command
def token_revoke(
    cp: LazyClient, token_id: Annotated[str, typer.Argument(metavar="ID", help="The token id.")]
) -> None:
    """Revoke a join token: it authenticates nothing from now on."""
    try:
        cp().delete(f"/v1/tokens/{token_id}")
    except ApiError as exc:
        if exc.status == 404:
            raise fail(f"no join token {token_id!r} (pymeshctl token list shows them)") from None
        raise
    typer.echo(f"join token {token_id} revoked")


# ------------------------------------------------------------------------------------ proxy-config


def find_workload(
    workloads: list[dict[str, Any]], name: str, namespace: str | None
) -> dict[str, Any]:
    """The workload `name` names: its id, one of its agents, or its service (if only one
    workload serves it)."""
    for match in (
        lambda w: w.get("workload") == name,
        lambda w: name in (w.get("agents") or []),
        lambda w: w.get("service") == name,
    ):
        found = [
            w
            for w in workloads
            if match(w) and (namespace is None or w.get("namespace") == namespace)
        ]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            ids = ", ".join(str(w["workload"]) for w in found)
            raise fail(f"{name!r} matches several workloads ({ids}): name one of them")
    raise fail(f"no registered workload {name!r} (pymeshctl status lists them)")


def proxy_config_command(
    cp: LazyClient,
    workload: Annotated[
        str, typer.Argument(help="A workload id, an agent id, or a service with one workload.")
    ],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only workloads of this namespace.")
    ] = None,
    section: Annotated[
        list[str] | None,
        typer.Option("--section", "-s", help="routes, clusters, endpoints, policies (repeatable)."),
    ] = None,
    output: OutputOpt = ReadFormat.table,
) -> None:
    """What one workload's agent holds: routes, clusters, endpoints and policies.

    Compiled from the workload's snapshot exactly as the agent compiles it."""
    sections = list(section or SECTIONS)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise fail(f"--section {bad[0]!r}: choose from {', '.join(SECTIONS)}", 2)
    client = cp()
    with spinner("Fetching the workload's snapshot…"):
        wl = find_workload(client.get("/v1/workloads").get("items") or [], workload, namespace)
        snap = client.get("/v1/snapshot", params={"workload": wl["workload"]})
        trust_domain = str(client.get("/v1/version").get("trustDomain") or "cluster.local")
    try:
        pc = proxy_config(snap, wl, trust_domain)
    except ConfigError as exc:
        raise fail(f"workload {wl['workload']}: {config_error_text(exc)}") from None
    if output is not ReadFormat.table:
        typer.echo(
            dump({k: v for k, v in pc.items() if k not in SECTIONS or k in sections}, output)
        )
        return
    typer.echo(render_proxy_config(pc, sections))


# ------------------------------------------------------------------------------------ describe

describe_app = typer.Typer(
    name="describe", help="Describe a service: endpoints, routes, policies.", no_args_is_help=True
)


@describe_app.command("service")
@control_plane_command
def describe_service_command(
    cp: LazyClient,
    name: Annotated[str, typer.Argument(help="The service (reviews, or a host name).")],
    namespace: NamespaceOpt = "default",
    output: OutputOpt = ReadFormat.table,
) -> None:
    """A service's endpoints with their health, the routes to it and the policies on it.

    Policies: DestinationRules, PeerAuthentication, AuthorizationPolicies."""
    client = cp()
    resources = client.get("/v1/resources").get("items") or []
    workloads = client.get("/v1/workloads").get("items") or []
    try:
        d = describe_service(name, namespace, resources, workloads)
    except ConfigError as exc:
        raise fail(config_error_text(exc)) from None
    if d is None:
        raise fail(
            f"service {name!r} not found in namespace {namespace}: no ServiceEntry defines it "
            "and no workload registered it"
        )
    if output is not ReadFormat.table:
        typer.echo(dump(d, output))
        return
    typer.echo(render_describe(d))


# ------------------------------------------------------------------------------------ top


def _ms(v: Any) -> str:
    return "-" if v is None else f"{float(v):.1f}ms"


def top_table(edges: list[dict[str, Any]]) -> str:
    """The edges of `GET /v1/stats` as a table, busiest first."""
    edges = sorted(
        edges, key=lambda e: (-float(e.get("rps") or 0), str(e.get("source")), e["destination"])
    )
    rows = []
    for e in edges:
        src = e.get("source") or {}
        rows.append(
            [
                f"{src.get('service') or '?'}.{src.get('namespace') or '?'}",
                e["destination"],
                f"{float(e.get('rps') or 0):.1f}",
                f"{100 * float(e.get('errorRate') or 0):.2f}%",
                _ms(e.get("latencyMsMean")),
                _ms(e.get("latencyMsP50")),
                _ms(e.get("latencyMsP99")),
                e.get("requests"),
                e.get("agents"),
            ]
        )
    return table(
        ["SOURCE", "DESTINATION", "RPS", "ERRORS", "LATENCY", "P50", "P99", "REQUESTS", "AGENTS"],
        rows,
    )


def top(
    cp: LazyClient,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes (--watch).")
    ] = 2.0,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="With --watch: stop after N refreshes.")
    ] = None,
    output: OutputOpt = ReadFormat.table,
) -> None:
    """Traffic per edge (source → destination): requests/s, errors, latency.

    From the statistics agents send with their heartbeats."""
    client = cp()

    def fetch() -> list[dict[str, Any]]:
        return list(client.get("/v1/stats").get("edges") or [])

    def render(edges: list[dict[str, Any]]) -> str:
        if output is not ReadFormat.table:
            return dump(edges, output)
        if not edges:
            return "No traffic reported yet (agents report it with their heartbeats)."
        return top_table(edges)

    if not watch:
        edges = fetch()
        if not edges and output is ReadFormat.table:
            typer.echo(render(edges), err=True)
        else:
            typer.echo(render(edges))
        return
    n = 0
    if sys.stdout.isatty():
        from rich.live import Live
        from rich.text import Text

        with Live(Text(render(fetch())), auto_refresh=False) as live:
            n = 1
            while count is None or n < count:
                time.sleep(interval)
                live.update(Text(render(fetch())), refresh=True)
                n += 1
        return
    while count is None or n < count:  # not a terminal: one block per refresh
        if n:
            time.sleep(interval)
            typer.echo("")
        typer.echo(time.strftime("%H:%M:%S"))
        typer.echo(render(fetch()))
        n += 1


# exposed for `main` (typer registers them there)
apply_command = control_plane_command(apply)
get_command = control_plane_command(get)
delete_command = control_plane_command(delete)
status_command = control_plane_command(status)
proxy_config_cmd = control_plane_command(proxy_config_command)
top_command = control_plane_command(top)
