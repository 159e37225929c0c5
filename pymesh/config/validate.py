"""Validate documents against the field tables and build the typed model.

How this works: `validate_documents` takes each `Document` from the loader, checks its envelope
(apiVersion, kind, metadata), then walks its spec with the message table of its kind
(`pymesh.config.schema`). The walk checks types, statuses (supported / off-cluster / not yet /
unknown), value checks (`CHECKS`, named by the tables) and per-message rules (`POST`), and
returns a "clean" copy holding only supported, valid values (durations already in seconds,
enums normalised). A resource whose walk produced no error is then built into its model class
(`BUILDERS`); a resource with errors is reported and not built, so nothing half-valid escapes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import importlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pymesh.config import model as m
from pymesh.config.durations import DurationError, parse_duration
from pymesh.config.findings import Finding, Severity, q
from pymesh.config.loader import Document, join_path
from pymesh.config.schema import (
    KINDS,
    MESSAGES,
    NOT_YET_KINDS,
    RESOURCE,
    EnumT,
    Field,
    FieldType,
    ListOf,
    MapOf,
    Message,
    Scalar,
    Status,
)
from pymesh.policy.fault import GRPC_STATUS_CODES
from pymesh.policy.paths import NormalizedPath, normalize_path
from pymesh.policy.rewrite import rewrite_template


class _Invalid:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_WILDCARD_FIRST = re.compile(r"^(\*|(\*|\*-)?[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")

RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
RETRY_ON_NOT_YET = frozenset({"retriable-headers"})
PROTOCOLS = (
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "MONGO",
    "REDIS",
    "MYSQL",
    "TCP",
    "TLS",
    "UDP",
)
CONDITION_KEYS = (
    "request.headers",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "destination.ip",
    "destination.port",
    "connection.sni",
)
KUBERNETES_KINDS = frozenset(
    {
        "Service",
        "Deployment",
        "Pod",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Namespace",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Ingress",
        "Endpoints",
        "EndpointSlice",
    }
)
# failoverPriority labels with a topology meaning (Istio: not with `failover`)
TOPOLOGY_LABELS = frozenset(
    {
        "topology.istio.io/network",
        "topology.istio.io/cluster",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.istio.io/subzone",
    }
)
JWT_CONDITION_KEYS = (
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims",
)


# ---------------------------------------------------------------------------------------------
# Context


class Ctx:
    """The state of validating one resource: where it is, who it is, and how many errors."""

    __slots__ = ("doc", "errors", "findings", "resource")

    def __init__(self, doc: Document, findings: list[Finding]) -> None:
        self.doc = doc
        self.findings = findings
        self.resource = ""
        self.errors = 0

    def add(
        self, code: str, severity: Severity, path: str, message: str, line: int | None = None
    ) -> None:
        """Record a finding at `path` (its line, unless given, from the document's table)."""
        if line is None:
            line = self.doc.line_of(path)
        self.findings.append(
            Finding(code, severity, message, self.doc.file, line, self.resource, path)
        )
        if severity == "error":
            self.errors += 1

    def error(self, code: str, path: str, message: str) -> None:
        """Record an error."""
        self.add(code, "error", path, message)

    def __repr__(self) -> str:
        return f"Ctx({self.doc.file!r}, {self.resource!r}, errors={self.errors})"


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value:g}"
    if isinstance(value, str):
        return f"string {q(value)}" if len(value) < 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _type_error(ctx: Ctx, path: str, expected: str, value: object) -> Any:
    hint = ""
    if expected == "a string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        hint = f' (quote it: "{value}")'
    elif expected == "a string" and isinstance(value, bool):
        hint = " (quote it: YAML reads yes/no/true/false/on/off as booleans)"
    ctx.error("PM0005", path, f"expected {expected}, got {_describe(value)}{hint}")
    return INVALID


def _suggest(word: str, candidates: Iterable[str]) -> str:
    cands = list(candidates)
    camel = re.sub(r"_([a-z0-9])", lambda mo: mo.group(1).upper(), word)
    if camel != word and camel in cands:
        return camel
    lower = {c.lower(): c for c in cands}
    if word.lower() in lower:
        return lower[word.lower()]
    close = difflib.get_close_matches(word, cands, n=1, cutoff=0.6)
    return close[0] if close else ""


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    s = _suggest(word, candidates)
    return f' (did you mean "{s}"?)' if s else ""


# ---------------------------------------------------------------------------------------------
# The walk


def walk(value: object, ftype: FieldType, path: str, ctx: Ctx) -> Any:
    """Check `value` against `ftype`; return its clean form, or INVALID (after reporting)."""
    if isinstance(ftype, Scalar):
        return _scalar(value, ftype.name, path, ctx)
    if isinstance(ftype, EnumT):
        return _enum(value, ftype, path, ctx)
    if isinstance(ftype, Message):
        return walk_message(value, ftype.name, path, ctx)
    if isinstance(ftype, ListOf):
        if not isinstance(value, list):
            return _type_error(ctx, path, "a list", value)
        out = []
        for i, item in enumerate(value):
            ipath = f"{path}[{i}]"
            if item is None:
                ctx.error("PM0005", ipath, "a list item must not be null")
                v = INVALID
            else:
                v = walk(item, ftype.item, ipath, ctx)
            out.append(v)
        # one bad item spoils the list: indices of what follows stay those of the YAML
        return INVALID if any(v is INVALID for v in out) else out
    return _map(value, ftype, path, ctx)


def _scalar(value: object, name: str, path: str, ctx: Ctx) -> Any:
    if name == "any":
        return value
    if name == "string":
        return value if isinstance(value, str) else _type_error(ctx, path, "a string", value)
    if name == "bool":
        return value if isinstance(value, bool) else _type_error(ctx, path, "true or false", value)
    if name == "double":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return _type_error(ctx, path, "a number", value)
    if name == "duration":
        if not isinstance(value, str):
            return _type_error(ctx, path, 'a duration such as "5s" or "100ms"', value)
        try:
            return parse_duration(value)
        except DurationError as exc:
            ctx.error("PM0010", path, str(exc))
            return INVALID
    lo, hi = _INT_RANGES[name]
    if not isinstance(value, int) or isinstance(value, bool):
        expected = "a non-negative integer" if lo == 0 else "an integer"
        return _type_error(ctx, path, expected, value)
    if not lo <= value <= hi:
        ctx.error("PM0006", path, f"{value} is out of range for {name} ({lo}..{hi})")
        return INVALID
    return value


def _enum(value: object, t: EnumT, path: str, ctx: Ctx) -> Any:
    if not isinstance(value, str):
        return _type_error(ctx, path, "one of " + ", ".join(t.values), value)
    if value not in t.values:
        hint = _did_you_mean(value, t.values)
        ctx.error("PM0006", path, f"invalid value {q(value)} (one of {', '.join(t.values)}){hint}")
        return INVALID
    if value in t.not_yet:
        ctx.error("PM0003", path, f"{value} is an Istio value pymesh does not support yet")
        return INVALID
    for old, new in t.deprecated:
        if value == old:
            ctx.add("PM0013", "info", path, f"{old} is deprecated in Istio; it means {new}")
            return new
    return value


def _map(value: object, t: MapOf, path: str, ctx: Ctx) -> Any:
    if not isinstance(value, dict):
        return _type_error(ctx, path, "a mapping", value)
    out: dict[Any, Any] = {}
    for key, item in value.items():
        kpath = join_path(path, key)
        k: Any = key
        if t.key == "port":
            if isinstance(key, str) and key.isdigit():
                k = int(key)
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 65535:
                ctx.error("PM0006", kpath, f"key {q(key)} must be a port number (1..65535)")
                continue
        elif not isinstance(key, str):
            _type_error(ctx, kpath, "a string key", key)
            continue
        elif t.key == "label" and not _valid_label_key(key):
            ctx.error("PM0006", kpath, f"invalid label key {q(key)}")
            continue
        elif t.key == "header" and not _HEADER_NAME.match(key):
            ctx.error("PM0006", kpath, f"invalid header name {q(key)}")
            continue
        if item is None and isinstance(t.value, Message):
            item = {}
        v = walk(item, t.value, kpath, ctx)
        if v is INVALID:
            continue
        if t.key == "label" and (len(v) > 63 or not _LABEL_VALUE.match(v)):
            ctx.error("PM0006", kpath, f"invalid label value {q(v)}")
            continue
        out[k] = v
    return out


def _valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


def walk_message(value: object, name: str, path: str, ctx: Ctx) -> Any:
    """Check a mapping against message `name`: every key must be a field of its table."""
    if not isinstance(value, dict):
        return _type_error(ctx, path, "a mapping", value)
    fields = MESSAGES[name]
    out: dict[str, Any] = {}
    oneofs: dict[str, list[str]] = {}
    for key, v in value.items():
        kpath = join_path(path, key)
        if not isinstance(key, str):
            _type_error(ctx, kpath, "a field name (string)", key)
            continue
        f = fields.get(key)
        if f is None:
            hint = _did_you_mean(key, fields)
            ctx.error("PM0002", kpath, f'unknown field "{key}"{hint}')
            continue
        if v is None:  # null means unset, as in Kubernetes
            continue
        if not _field_status(key, f, fields, kpath, ctx):
            if f.status is Status.OFF_CLUSTER:
                walk(v, f.type, kpath, ctx)  # still type-checked: Istio would refuse it too
            continue
        if f.oneof:
            oneofs.setdefault(f.oneof, []).append(key)
        clean = walk(v, f.type, kpath, ctx)
        if clean is not INVALID and f.check:
            clean = _apply_check(f.check, clean, f.type, kpath, ctx)
        if clean is not INVALID:
            out[key] = clean
    for keys in oneofs.values():
        if len(keys) > 1:
            ctx.error("PM0006", path, "only one of " + ", ".join(keys) + " may be set")
    for fname, f in fields.items():
        if f.required and f.status is Status.SUPPORTED and value.get(fname) is None:
            ctx.error("PM0007", path, f"missing required field {q(fname)}")
    post = POST.get(name)
    if post is not None:
        post(out, value, path, ctx)
    return out


def _field_status(key: str, f: Field, fields: dict[str, Field], path: str, ctx: Ctx) -> bool:
    """Report what the field's status calls for; True when its value should be walked."""
    real = fields[f.alias_of] if f.alias_of else f
    label = f"{q(key)}"
    if f.alias_of:
        label += f" (the proto spelling of {q(f.alias_of)})"
    if real.status is Status.NOT_YET:
        what = f" ({real.note})" if real.note else ""
        dep = f"; deprecated in Istio: {real.deprecated}" if real.deprecated else ""
        ctx.error(
            "PM0003", path, f"{label} is an Istio field pymesh does not support yet{what}{dep}"
        )
        return False
    if f.status is Status.OFF_CLUSTER:
        why = f" ({f.note})" if f.note else " (it means nothing off Kubernetes)"
        ctx.add("PM0004", "info", path, f"{label} is accepted and ignored{why}")
        return False
    if f.deprecated:
        ctx.add("PM0013", "info", path, f"{label} is deprecated in Istio: {f.deprecated}")
    return True


# ---------------------------------------------------------------------------------------------
# Value checks (named by the schema's `check`)

CheckFn = Callable[[Any, str, Ctx], Any]


def _apply_check(name: str, value: Any, ftype: FieldType, path: str, ctx: Ctx) -> Any:
    fn = CHECKS[name]
    if isinstance(ftype, ListOf):
        out = []
        for i, item in enumerate(value):
            v = fn(item, f"{path}[{i}]", ctx)
            if v is not INVALID:
                out.append(v)
        return out if len(out) == len(value) else INVALID
    return fn(value, path, ctx)


def _range(lo: int, hi: int, what: str, code: str = "PM0006") -> CheckFn:
    def check(v: Any, path: str, ctx: Ctx) -> Any:
        if not lo <= v <= hi:
            ctx.error(code, path, f"{what} must be {lo}..{hi}, got {v}")
            return INVALID
        return v

    return check


def _non_negative(v: Any, path: str, ctx: Ctx) -> Any:
    if v < 0:
        ctx.error("PM0006", path, f"must not be negative, got {v}")
        return INVALID
    return v


def _min_1ms(v: Any, path: str, ctx: Ctx) -> Any:
    if v < 0.001:
        ctx.error("PM0010", path, "must be at least 1ms (as Istio requires)")
        return INVALID
    return v


def _dns_label(v: Any, path: str, ctx: Ctx) -> Any:
    if len(v) > 63 or not _DNS_LABEL.match(v):
        ctx.error(
            "PM0006",
            path,
            f"{q(v)} is not a valid name (lower-case letters, digits and '-', at most 63)",
        )
        return INVALID
    return v


def _resource_name(v: Any, path: str, ctx: Ctx) -> Any:
    if len(v) > 253 or not _DNS_SUBDOMAIN.match(v):
        ctx.error(
            "PM0006",
            path,
            f"{q(v)} is not a valid resource name (lower-case letters, digits, '-' and '.')",
        )
        return INVALID
    return v


def _host_problem(host: str) -> str:
    if not host:
        return "host must not be empty"
    if len(host) > 255:
        return "host name is too long"
    with contextlib.suppress(ValueError):  # not an address: checked as a name below
        ipaddress.ip_address(host)
        return ""
    labels = host.split(".")
    if not _WILDCARD_FIRST.match(labels[0]):
        return f"invalid host {q(host)}"
    for label in labels[1:]:
        if len(label) > 63 or not _DNS_LABEL.match(label):
            bad = "upper-case letters" if label.lower() != label else f"label {q(label)}"
            return f"invalid host {q(host)} ({bad})"
    return ""


def _host_check(allow_star: bool, star_reason: str) -> CheckFn:
    def check(v: Any, path: str, ctx: Ctx) -> Any:
        if v == "*" and not allow_star:
            ctx.error("PM0006", path, star_reason)
            return INVALID
        problem = _host_problem(v)
        if problem:
            ctx.error("PM0006", path, problem)
            return INVALID
        return v

    return check


def _gateway(v: Any, path: str, ctx: Ctx) -> Any:
    if v == "mesh":
        ctx.add("PM0004", "info", path, '"mesh" is the only gateway pymesh has; accepted')
        return v
    ctx.error(
        "PM0003",
        path,
        f'gateway {q(v)}: pymesh does not support Istio gateways yet; only "mesh" is accepted',
    )
    return INVALID


def _retry_on(v: Any, path: str, ctx: Ctx) -> Any:
    ok = True
    for raw in v.split(","):
        tok = raw.strip()
        if not tok:
            ctx.error("PM0006", path, f"retryOn {q(v)} has an empty condition")
            ok = False
        elif tok.isdigit():
            if not 100 <= int(tok) <= 599:
                ctx.error("PM0006", path, f"retryOn: {tok} is not an HTTP status code (100..599)")
                ok = False
        elif tok in RETRY_ON_NOT_YET:
            ctx.error("PM0003", path, f"retryOn: {q(tok)} is not supported by pymesh yet")
            ok = False
        elif tok not in RETRY_ON:
            hint = _did_you_mean(tok, RETRY_ON)
            ctx.error("PM0006", path, f"retryOn: {q(tok)} is not a retry condition{hint}")
            ok = False
    return v if ok else INVALID


def _protocol(v: Any, path: str, ctx: Ctx) -> Any:
    if v.upper() not in PROTOCOLS:
        hint = _did_you_mean(v.upper(), PROTOCOLS)
        ctx.error("PM0006", path, f"unknown protocol {q(v)} (one of {', '.join(PROTOCOLS)}){hint}")
        return INVALID
    return v.upper()


def _address(v: Any, path: str, ctx: Ctx) -> Any:
    if v.startswith("unix://"):
        rest = v[len("unix://") :]
        if not (rest.startswith("/") or rest.startswith("@")) or rest.endswith("/"):
            ctx.error("PM0006", path, f"{q(v)}: a unix address needs an absolute path or @name")
            return INVALID
        return v
    problem = _host_problem(v) if v else "address must not be empty"
    if problem or v.startswith("*"):
        ctx.error("PM0006", path, problem or f"invalid address {q(v)}")
        return INVALID
    return v


def _regex(v: Any, path: str, ctx: Ctx) -> Any:
    if not v:
        ctx.error("PM0012", path, "regex must not be empty")
        return INVALID
    if len(v) > 1024:
        ctx.error("PM0012", path, "regex is too long (Istio's limit is 1024 characters)")
        return INVALID
    try:
        re.compile(v)
    except re.error as exc:
        ctx.error("PM0012", path, f"invalid regex {q(v)}: {exc}")
        return INVALID
    problem = re2_problem(v)
    if problem:
        ctx.error(
            "PM0012", path, f"regex {q(v)} uses {problem}, which RE2 (Istio) does not support"
        )
        return INVALID
    return v


_RE2_UNSUPPORTED = {
    "ASSERT": "a lookaround",
    "ASSERT_NOT": "a lookaround",
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group",
    "ATOMIC_GROUP": "an atomic group",
    "POSSESSIVE_REPEAT": "a possessive quantifier",
}


def re2_problem(pattern: str) -> str:
    """What in `pattern` RE2 lacks (lookarounds, backreferences...), or "" when none."""
    try:
        parser: Any = importlib.import_module("re._parser")
        tree = parser.parse(pattern)
    except Exception:  # a Python without re._parser: skip the extra check
        return ""
    sub_type = type(tree)

    def visit(node: Any) -> str:
        if isinstance(node, sub_type):
            for op, arg in node:
                found = _RE2_UNSUPPORTED.get(str(op), "") or visit(arg)
                if found:
                    return found
        elif isinstance(node, (list, tuple)):
            for item in node:
                found = visit(item)
                if found:
                    return found
        return ""

    return visit(tree)


def _port_name(v: Any, path: str, ctx: Ctx) -> Any:
    if len(v) > 63 or not re.match(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$", v):
        ctx.error("PM0006", path, f"invalid port name {q(v)} (letters, digits and '-')")
        return INVALID
    return v


def _sidecar_host(v: Any, path: str, ctx: Ctx) -> Any:
    ns, sep, host = v.partition("/")
    if not sep:
        ctx.error("PM0006", path, f"egress host {q(v)} must be written namespace/host")
        return INVALID
    if ns not in ("*", ".", "~") and not _DNS_LABEL.match(ns):
        ctx.error("PM0006", path, f"invalid namespace {q(ns)} in egress host {q(v)}")
        return INVALID
    if host != "*" and _host_problem(host):
        ctx.error("PM0006", path, _host_problem(host))
        return INVALID
    return v


def _ip_block(v: Any, path: str, ctx: Ctx) -> Any:
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        ctx.error("PM0006", path, f"{q(v)} is not an IP address or CIDR block")
        return INVALID
    return v


def _port_string(v: Any, path: str, ctx: Ctx) -> Any:
    if not v.isdigit() or not 1 <= int(v) <= 65535:
        ctx.error("PM0006", path, f"{q(v)} is not a port number (1..65535)")
        return INVALID
    return v


def _condition_key(v: Any, path: str, ctx: Ctx) -> Any:
    base = v.split("[", 1)[0]
    if base.startswith(("experimental.", "request.experimental.")):
        ctx.error(
            "PM0003", path, f"condition key {q(v)}: Envoy-specific keys are not supported yet"
        )
        return INVALID
    if base in JWT_CONDITION_KEYS:
        ctx.error(
            "PM0003", path, f"condition key {q(v)} needs JWT, which pymesh does not support yet"
        )
        return INVALID
    if base not in CONDITION_KEYS:
        hint = _did_you_mean(base, (*CONDITION_KEYS, *JWT_CONDITION_KEYS))
        ctx.error("PM0006", path, f"unknown condition key {q(v)}{hint}")
        return INVALID
    if base == "request.headers":
        mo = re.match(r"^request\.headers\[([^\]]+)\]$", v)
        if not mo:
            ctx.error("PM0006", path, f"{q(v)}: write request.headers[<header-name>]")
            return INVALID
        if not _HEADER_NAME.match(mo.group(1)):
            ctx.error("PM0006", path, f"{q(v)}: invalid header name {q(mo.group(1))}")
            return INVALID
        return f"request.headers[{mo.group(1).lower()}]"  # header names are case-insensitive
    if v != base:
        ctx.error("PM0006", path, f"condition key {q(base)} takes no [...] part")
        return INVALID
    return v


# AuthorizationPolicy values. Istio's string matching: exact, `prefix*`, `*suffix`, or `*`
# alone (any non-empty value); a `*` anywhere else would be taken literally, so it is refused.


def _authz_pattern_problem(v: str) -> str:
    if not v:
        return "must not be empty"
    if v.count("*") > 1 or (v != "*" and "*" in v[1:-1]):
        return (
            f"{q(v)}: '*' is allowed only alone, at the end (prefix match) or at the start "
            "(suffix match)"
        )
    if _CONTROL_CHARS.search(v):
        return f"{q(v)} contains a control character"
    return ""


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _authz_string(v: Any, path: str, ctx: Ctx) -> Any:
    problem = _authz_pattern_problem(v)
    if problem:
        ctx.error("PM0006", path, problem)
        return INVALID
    return v


def _authz_principal(v: Any, path: str, ctx: Ctx) -> Any:
    if v.startswith("spiffe://"):
        ctx.error(
            "PM0006",
            path,
            f"{q(v)}: write principals without spiffe:// (Istio's form: "
            f"{q(v[len('spiffe://') :])})",
        )
        return INVALID
    return _authz_string(v, path, ctx)


def _authz_service_account(v: Any, path: str, ctx: Ctx) -> Any:
    ns, sep, name = v.rpartition("/")
    if "*" in v or v.count("/") > 1 or (sep and not _DNS_LABEL.match(ns)):
        ctx.error(
            "PM0006",
            path,
            f"{q(v)}: a service account is <namespace>/<name> or <name> (no wildcards)",
        )
        return INVALID
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        ctx.error("PM0006", path, f"{q(v)}: invalid service account name {q(name)}")
        return INVALID
    return v


_HOST_WITH_PORT = re.compile(r"^(\[[^\]]*\]|[^:\[\]]*):(\d+)$")


def _authz_host(v: Any, path: str, ctx: Ctx) -> Any:
    host = v.lower()  # hosts match case-insensitively
    if host.endswith(":*"):
        host = host[:-2]  # any port: pymesh ignores the port in host matching anyway
    elif mo := _HOST_WITH_PORT.match(host):
        ctx.error(
            "PM0006",
            path,
            f"{q(v)}: pymesh matches hosts without their port; write {q(mo.group(1))} "
            "and match the port with ports",
        )
        return INVALID
    return _authz_string(host, path, ctx)


def _authz_method(v: Any, path: str, ctx: Ctx) -> Any:
    v = _authz_string(v, path, ctx)
    if v is not INVALID and v != v.upper():
        ctx.add(
            "PM0006",
            "warning",
            path,
            f"methods are case-sensitive: {q(v)} never matches {q(v.upper())}",
        )
    return v


def _authz_path(v: Any, path: str, ctx: Ctx) -> Any:
    if "{" in v or "}" in v:
        ctx.error("PM0003", path, f"{q(v)}: path templates ({{*}}, {{**}}) are not supported yet")
        return INVALID
    if not v.startswith(("/", "*")):
        ctx.error("PM0006", path, f"{q(v)}: a path starts with / (or * for a suffix match)")
        return INVALID
    if "?" in v or "#" in v:
        ctx.error(
            "PM0006",
            path,
            f"{q(v)}: paths are matched without the query and fragment; this never matches",
        )
        return INVALID
    v = _authz_string(v, path, ctx)
    if v is not INVALID and "*" not in v:
        normalized = normalize_path(v)
        if isinstance(normalized, NormalizedPath) and normalized.path != v:
            ctx.add(
                "PM0006",
                "warning",
                path,
                f"{q(v)} never matches under the default path normalization "
                f"(DECODE_AND_MERGE_SLASHES): requests for it are matched as "
                f"{q(normalized.path)}",
            )
    return v


def _percent_double(v: Any, path: str, ctx: Ctx) -> Any:
    if not 0.0 <= v <= 100.0:
        ctx.error("PM0006", path, f"percentage must be 0..100, got {v:g}")
        return INVALID
    return v


def _header_name(v: Any, path: str, ctx: Ctx) -> Any:
    if not _HEADER_NAME.match(v):
        ctx.error("PM0006", path, f"invalid header name {q(v)}")
        return INVALID
    return v


_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _cookie_name(v: Any, path: str, ctx: Ctx) -> Any:
    if not _COOKIE_NAME.match(v):
        ctx.error("PM0006", path, f"invalid cookie name {q(v)}")
        return INVALID
    return v


MAX_RING_SIZE = 8_388_608  # Envoy's maximum_ring_size
MAX_MAGLEV_TABLE = 5_000_011  # Envoy's largest Maglev table


def _ring_size(v: Any, path: str, ctx: Ctx) -> Any:
    if not 1 <= v <= MAX_RING_SIZE:
        ctx.error("PM0006", path, f"minimumRingSize must be 1..{MAX_RING_SIZE}, got {v}")
        return INVALID
    return v


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    i = 3
    while i * i <= n:
        if n % i == 0:
            return False
        i += 2
    return True


def _maglev_table_size(v: Any, path: str, ctx: Ctx) -> Any:
    if not _is_prime(v) or v > MAX_MAGLEV_TABLE:
        ctx.error(
            "PM0006",
            path,
            f"tableSize must be a prime number up to {MAX_MAGLEV_TABLE} (as Envoy requires), "
            f"got {v}",
        )
        return INVALID
    return v


def locality_pattern_problem(v: str) -> str:
    """Why `v` is not a locality pattern (`region/zone/subzone`, `*` only as a whole last
    segment), or ""."""
    if not v:
        return "a locality must not be empty"
    parts = v.split("/")
    if len(parts) > 3:
        return f"locality {q(v)} has more than 3 segments (region/zone/subzone)"
    for i, part in enumerate(parts):
        if not part:
            return f"locality {q(v)} has an empty segment"
        if "*" in part and (part != "*" or i != len(parts) - 1):
            return f"locality {q(v)}: wildcard '*' must be the whole last segment"
    return ""


def _locality_pattern(v: Any, path: str, ctx: Ctx) -> Any:
    problem = locality_pattern_problem(v)
    if problem:
        ctx.error("PM0006", path, problem)
        return INVALID
    return v


def _failover_region(v: Any, path: str, ctx: Ctx) -> Any:
    if not v or "/" in v or "*" in v:
        ctx.error(
            "PM0006",
            path,
            f"failover names a region, without '/' or '*' wildcards, got {q(v)}",
        )
        return INVALID
    return v


def _failover_priority(v: Any, path: str, ctx: Ctx) -> Any:
    key, eq, value = v.partition("=")
    if not _valid_label_key(key) or (eq and (len(value) > 63 or not _LABEL_VALUE.match(value))):
        ctx.error("PM0006", path, f"{q(v)} is not a label key or key=value")
        return INVALID
    return v


_AUTHORITY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~\-]+)(:[0-9]{1,5})?$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CORS_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "*"}
)
REDIRECT_CODES = (301, 302, 303, 307, 308)


def _uri_path(v: Any, path: str, ctx: Ctx) -> Any:
    if v == "":
        return v  # empty means unset, as in Istio
    if not v.startswith("/") or not v.isascii() or any(c.isspace() for c in v):
        ctx.error(
            "PM0006",
            path,
            f"{q(v)} is not a URI path (it starts with '/'; no spaces; percent-encode "
            "non-ASCII characters)",
        )
        return INVALID
    return v


def _authority(v: Any, path: str, ctx: Ctx) -> Any:
    if v == "":
        return v
    port = _AUTHORITY.match(v)
    if port is None or (port.group(2) and not 1 <= int(port.group(2)[1:]) <= 65535):
        ctx.error("PM0006", path, f"{q(v)} is not an authority (host or host:port)")
        return INVALID
    return v


def _redirect_scheme(v: Any, path: str, ctx: Ctx) -> Any:
    if v not in ("http", "https"):
        ctx.error("PM0006", path, f'invalid redirect scheme {q(v)}: must be "http" or "https"')
        return INVALID
    return v


def _redirect_code(v: Any, path: str, ctx: Ctx) -> Any:
    if v == 0:
        return v  # unset: 301
    if not 300 <= v <= 399:
        ctx.error("PM0006", path, f"{v} is not a valid redirect code, must be 3xx")
        return INVALID
    if v not in REDIRECT_CODES:
        ctx.error(
            "PM0003",
            path,
            f"redirect code {v} is not supported (Envoy, and so Istio, redirects with 301, 302, "
            "303, 307 or 308)",
        )
        return INVALID
    return v


def _http_status(v: Any, path: str, ctx: Ctx) -> Any:
    if not 200 <= v <= 599:
        ctx.error("PM0006", path, f"HTTP status {v} is not in range 200..599")
        return INVALID
    return v


def decode_base64(v: str) -> bytes:
    """Protobuf JSON `bytes`: standard or URL-safe base64, padding optional."""
    text = v.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _base64(v: Any, path: str, ctx: Ctx) -> Any:
    try:
        decode_base64(v)
    except (ValueError, binascii.Error):
        ctx.error("PM0006", path, "bytes must be base64 (write text as body.string)")
        return INVALID
    return v


def _grpc_status(v: Any, path: str, ctx: Ctx) -> Any:
    if v not in GRPC_STATUS_CODES:
        hint = _did_you_mean(v, GRPC_STATUS_CODES)
        ctx.error(
            "PM0006",
            path,
            f"gRPC status {q(v)} is not a gRPC status code name such as UNAVAILABLE or "
            f"NOT_FOUND{hint}",
        )
        return INVALID
    return v


def _fault_percentage(v: Any, path: str, ctx: Ctx) -> Any:
    value = v.get("value", 0.0)
    if 0.0 < value < 0.0001:
        ctx.error(
            "PM0006", path, f"percentage {value:g} is neither 0 nor in range 0.0001..100 (Istio)"
        )
        return INVALID
    return v


def _cors_origin(v: Any, path: str, ctx: Ctx) -> Any:
    if v.get("exact") == "" or v.get("regex") == "":
        ctx.error("PM0006", path, "an allowed origin must not be empty")
        return INVALID
    return v


def _cors_method(v: Any, path: str, ctx: Ctx) -> Any:
    if v not in _CORS_METHODS:
        hint = _did_you_mean(v, _CORS_METHODS)
        ctx.error("PM0006", path, f"{q(v)} is not a supported HTTP method{hint}")
        return INVALID
    return v


def _whole_seconds(v: Any, path: str, ctx: Ctx) -> Any:
    if v < 1 or v != int(v):
        ctx.error("PM0010", path, "maxAge is a whole number of seconds (at least 1s)")
        return INVALID
    return v


CHECKS: dict[str, CheckFn] = {
    "port": _range(1, 65535, "port"),
    "weight": _range(0, 100, "weight", "PM0011"),
    "percent": _range(0, 100, "percentage"),
    "non_negative": _non_negative,
    "min_1ms": _min_1ms,
    "dns_label": _dns_label,
    "subset_name": _dns_label,
    "resource_name": _resource_name,
    "vs_host": _host_check(
        False, "wildcard host * is not allowed for VirtualServices bound to the mesh"
    ),
    "se_host": _host_check(False, "a ServiceEntry host cannot be *"),
    "dr_host": _host_check(True, ""),
    "dest_host": _host_check(False, "a destination host cannot be *"),
    "gateway": _gateway,
    "retry_on": _retry_on,
    "protocol": _protocol,
    "port_name": _port_name,
    "address": _address,
    "regex": _regex,
    "sidecar_host": _sidecar_host,
    "ip_block": _ip_block,
    "port_string": _port_string,
    "condition_key": _condition_key,
    "authz_string": _authz_string,
    "authz_principal": _authz_principal,
    "authz_service_account": _authz_service_account,
    "authz_host": _authz_host,
    "authz_method": _authz_method,
    "authz_path": _authz_path,
    "uri_path": _uri_path,
    "authority": _authority,
    "redirect_scheme": _redirect_scheme,
    "redirect_code": _redirect_code,
    "http_status": _http_status,
    "base64": _base64,
    "grpc_status": _grpc_status,
    "fault_percentage": _fault_percentage,
    "cors_origin": _cors_origin,
    "cors_method": _cors_method,
    "whole_seconds": _whole_seconds,
    "percent_double": _percent_double,
    "header_name": _header_name,
    "cookie_name": _cookie_name,
    "ring_size": _ring_size,
    "maglev_table_size": _maglev_table_size,
    "locality_pattern": _locality_pattern,
    "failover_region": _failover_region,
    "failover_priority": _failover_priority,
}


# ---------------------------------------------------------------------------------------------
# Per-message rules: `post(clean, raw, path, ctx)`

PostFn = Callable[[dict[str, Any], dict[Any, Any], str, Ctx], None]
_MATCH_KINDS = ("exact", "prefix", "regex")


def _string_match(presence_ok: bool) -> PostFn:
    def post(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
        set_ = [k for k in _MATCH_KINDS if raw.get(k) is not None]
        if not set_ and not presence_ok:
            ctx.error("PM0007", path, "a string match needs one of exact, prefix or regex")
        if out.get("prefix") == "":
            ctx.error("PM0006", join_path(path, "prefix"), "prefix must not be empty")

    return post


def _post_http_match(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    for field_name in ("headers", "withoutHeaders"):
        seen: dict[str, str] = {}
        for name in out.get(field_name, {}):
            low = name.lower()
            if low in ("uri", "scheme", "method", "authority"):
                ctx.add(
                    "PM0006",
                    "warning",
                    join_path(join_path(path, field_name), name),
                    f"Istio ignores a header match named {q(name)}; use match.{low}",
                )
            if low in seen:
                ctx.error(
                    "PM0009",
                    join_path(join_path(path, field_name), name),
                    f"header {q(name)} repeats {q(seen[low])} (header names are case-insensitive)",
                )
            seen[low] = name


def _post_http_route(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    _route_rule_conflicts(out, raw, path, ctx)
    routes = raw.get("route")
    other = any(raw.get(k) is not None for k in ("redirect", "directResponse", "delegate"))
    if not routes and not other:
        ctx.error("PM0007", path, "a rule needs a route with at least one destination")
        return
    if not isinstance(routes, list) or not routes:
        return
    weights: list[int] = []
    for r in routes:
        w = r.get("weight") if isinstance(r, dict) else None
        if w is None:
            weights.append(0)
        elif isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 100:
            weights.append(w)
        else:
            return  # already reported
    rpath = join_path(path, "route")
    if len(routes) == 1:
        w0 = routes[0].get("weight") if isinstance(routes[0], dict) else None
        if w0 is not None and w0 != 100:
            ctx.add(
                "PM0011",
                "warning",
                f"{rpath}[0].weight",
                f"a rule with one destination sends it all traffic; weight {w0} has no effect",
            )
        return
    total = sum(weights)
    if total != 100:
        parts = " + ".join(str(w) for w in weights)
        ctx.error(
            "PM0011",
            rpath,
            f"weights of a rule's destinations must sum to 100, got {total} ({parts}; "
            "a missing weight counts as 0)",
        )


def _post_retry(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if any(k not in MESSAGES["HTTPRetry"] for k in raw):
        return  # a misspelt field (reported already) may be the missing attempts
    attempts = raw.get("attempts")
    if not attempts and (raw.get("perTryTimeout") is not None or raw.get("retryOn") is not None):
        ctx.error(
            "PM0006",
            path,
            "perTryTimeout/retryOn are set but attempts is 0 (retries disabled); set attempts",
        )


def _post_virtual_service(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    hosts = raw.get("hosts")
    if not hosts:
        ctx.error(
            "PM0007",
            path,
            'missing required field "hosts" (delegate VirtualServices are not supported yet)',
        )
    elif "hosts" in out:
        seen: set[str] = set()
        for i, h in enumerate(out["hosts"]):
            if h.lower() in seen:
                ctx.error("PM0006", f"{path}.hosts[{i}]", f"duplicate host {q(h)}")
            seen.add(h.lower())
    if not raw.get("http") and not raw.get("tcp") and not raw.get("tls"):
        ctx.error("PM0007", path, "a VirtualService needs http routes")
    _unreachable_rules(out.get("http") or [], path, ctx)


def _unreachable_rules(rules: list[dict[str, Any]], path: str, ctx: Ctx) -> None:
    """Istio's IST0130 / IST0131: rules after a catch-all, and repeated matches."""
    catch_all = -1
    seen: dict[str, int] = {}

    def name(i: int) -> str:
        n = rules[i].get("name")
        return f'"{n}"' if n else f"#{i}"

    for i, rule in enumerate(rules):
        rpath = f"{path}.http[{i}]"
        matches = rule.get("match") or []
        if not matches:
            if catch_all >= 0:
                ctx.add(
                    "IST0130",
                    "warning",
                    rpath,
                    f"VirtualService rule {name(i)} not used (only the last rule can have no "
                    "matches)",
                )
            catch_all = i
            continue
        dups = 0
        for j, match in enumerate(matches):
            if catch_all >= 0:
                ctx.add(
                    "IST0130",
                    "warning",
                    rpath,
                    f"VirtualService rule {name(i)} not used (rule {name(catch_all)} before it "
                    "matches everything)",
                )
                break
            key = json.dumps({k: v for k, v in match.items() if k != "name"}, sort_keys=True)
            if key in seen:
                dups += 1
                mname = f'"{match["name"]}"' if match.get("name") else f"#{j}"
                ctx.add(
                    "IST0131",
                    "info",
                    f"{rpath}.match[{j}]",
                    f"VirtualService rule {name(i)} match {mname} is not used (duplicate match in "
                    f"rule {name(seen[key])})",
                )
            else:
                seen[key] = i
        if matches and dups == len(matches):
            ctx.add(
                "IST0130",
                "warning",
                rpath,
                f"VirtualService rule {name(i)} not used (all matches used by prior rules)",
            )


def _post_destination_rule(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    seen: set[str] = set()
    for i, s in enumerate(out.get("subsets") or []):
        n = s.get("name")
        if n in seen:
            ctx.error("PM0006", f"{path}.subsets[{i}].name", f"duplicate subset name {q(n)}")
        if n:
            seen.add(n)


def _post_service_entry(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    resolution = out.get("resolution", "NONE")
    endpoints = raw.get("endpoints")
    numbers: set[int] = set()
    names: set[str] = set()
    for i, p in enumerate(out.get("ports") or []):
        if p.get("number") in numbers:
            ctx.error("PM0006", f"{path}.ports[{i}].number", f"duplicate port {p['number']}")
        if p.get("name") in names:
            ctx.error("PM0006", f"{path}.ports[{i}].name", f"duplicate port name {q(p['name'])}")
        numbers.add(p.get("number", 0))
        names.add(p.get("name", ""))
    if raw.get("workloadSelector") is not None and endpoints is not None:
        ctx.error("PM0006", path, "only one of workloadSelector or endpoints can be set")
    if endpoints and resolution == "NONE":
        ctx.error(
            "PM0006", path, "endpoints need resolution STATIC or DNS (resolution NONE has none)"
        )
    if resolution == "DNS_ROUND_ROBIN" and isinstance(endpoints, list) and len(endpoints) > 1:
        ctx.error("PM0006", path, "resolution DNS_ROUND_ROBIN allows at most one endpoint")
    if resolution == "DNS" and not endpoints:
        for i, h in enumerate(out.get("hosts") or []):
            if h.startswith("*"):
                ctx.error(
                    "PM0006",
                    f"{path}.hosts[{i}]",
                    f"host {q(h)}: a wildcard host needs endpoints with resolution DNS",
                )
    for i, ep in enumerate(out.get("endpoints") or []):
        epath = f"{path}.endpoints[{i}]"
        addr = ep.get("address", "")
        if resolution == "STATIC" and addr and not addr.startswith("unix://"):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                ctx.error(
                    "PM0006",
                    join_path(epath, "address"),
                    f"{q(addr)} is not an IP address (resolution STATIC needs IPs)",
                )
        if names:
            for pname in ep.get("ports") or {}:
                if pname not in names:
                    ctx.error(
                        "PM0006",
                        join_path(join_path(epath, "ports"), pname),
                        f"port {q(pname)} is not a port name of this ServiceEntry"
                        + _did_you_mean(pname, names),
                    )


def _post_workload(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    ppath = join_path(path, "ports")
    for pname, number in (out.get("ports") or {}).items():
        kpath = join_path(ppath, pname)
        _port_name(pname, kpath, ctx)
        if not 1 <= number <= 65535:
            ctx.error("PM0006", kpath, f"port must be 1..65535, got {number}")
    if str(out.get("address", "")).startswith("unix://") and out.get("ports"):
        ctx.error("PM0006", ppath, "a unix address cannot have ports")


def _post_peer_authentication(
    out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx
) -> None:
    selector = raw.get("selector")
    labels = selector.get("matchLabels") if isinstance(selector, dict) else None
    port_level = raw.get("portLevelMtls")
    if port_level and not labels:
        ctx.error(
            "PM0006",
            path,
            "portLevelMtls requires a selector with matchLabels (a mesh- or namespace-wide "
            "policy cannot have port-level modes)",
        )
    if isinstance(port_level, dict) and not port_level:
        ctx.error("PM0006", join_path(path, "portLevelMtls"), "portLevelMtls must not be empty")


def _post_authorization_policy(
    out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx
) -> None:
    action = out.get("action", "ALLOW")
    if action in ("DENY", "AUDIT") and not raw.get("rules") and "action" in out:
        ctx.add(
            "PM0006",
            "warning",
            path,
            f"a{'n' if action == 'AUDIT' else ''} {action} policy without rules matches "
            "nothing (it has no effect)",
        )


def _post_rule(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    for key in ("from", "to", "when"):
        if isinstance(raw.get(key), list) and not raw[key]:
            ctx.error("PM0006", join_path(path, key), f"`{key}` must not be an empty list")


_SOURCE_IDENTITY = ("principals", "notPrincipals", "namespaces", "notNamespaces")


def _post_source(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if not raw:
        ctx.error("PM0007", path, "source must not be empty")
    if (raw.get("serviceAccounts") or raw.get("notServiceAccounts")) and any(
        raw.get(k) for k in _SOURCE_IDENTITY
    ):
        ctx.error("PM0006", path, "cannot set serviceAccounts with namespaces or principals")


def _post_operation(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if not raw:
        ctx.error("PM0007", path, "operation must not be empty")


# `when` keys -> the check their values get
_CONDITION_VALUE_CHECKS: dict[str, CheckFn] = {
    "request.headers": _authz_string,
    "source.ip": _ip_block,
    "remote.ip": _ip_block,
    "destination.ip": _ip_block,
    "source.namespace": _authz_string,
    "source.principal": _authz_principal,
    "source.serviceAccount": _authz_service_account,
    "destination.port": _port_string,
    "connection.sni": _authz_string,
}


def _post_condition(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if not raw.get("values") and not raw.get("notValues"):
        ctx.error("PM0007", path, "a condition needs values or notValues")
    key = out.get("key")
    if not isinstance(key, str):
        return
    check = _CONDITION_VALUE_CHECKS.get(key.split("[", 1)[0])
    if check is None:  # pragma: no cover - the key check refused it
        return
    for field_name in ("values", "notValues"):
        values = out.get(field_name)
        if not isinstance(values, list):
            continue
        fpath = join_path(path, field_name)
        checked = [check(v, f"{fpath}[{i}]", ctx) for i, v in enumerate(values)]
        out[field_name] = checked


def _post_consistent_hash(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    keys = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
    if not any(raw.get(k) not in (None, False) for k in keys):
        ctx.error("PM0007", path, "consistentHash needs a hash key: one of " + ", ".join(keys))
    if raw.get("minimumRingSize") is not None:
        if raw.get("maglev") is not None:
            ctx.error("PM0006", path, "minimumRingSize is a ring hash setting; maglev is set")
        elif raw.get("ringHash") is not None:
            ctx.error("PM0006", path, "only one of minimumRingSize, ringHash may be set")
    if out.get("minimumRingSize") is not None:
        _ring_size(out["minimumRingSize"], join_path(path, "minimumRingSize"), ctx)


def _post_locality_lb(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if raw.get("distribute") and (raw.get("failover") or raw.get("failoverPriority")):
        ctx.error("PM0006", path, "distribute cannot be set with failover or failoverPriority")
    if raw.get("failover") and raw.get("failoverPriority"):
        for i, label in enumerate(out.get("failoverPriority") or []):
            if label.partition("=")[0] in TOPOLOGY_LABELS:
                ctx.error(
                    "PM0006",
                    f"{path}.failoverPriority[{i}]",
                    f"failover cannot be set with the topology label {q(label)} in "
                    "failoverPriority",
                )
    froms: list[str] = []
    for i, d in enumerate(out.get("distribute") or []):
        f = d.get("from")
        if f is not None:
            if f in froms:
                ctx.error("PM0006", f"{path}.distribute[{i}].from", f"duplicate from {q(f)}")
            froms.append(f)
    for i, fo in enumerate(out.get("failover") or []):
        if fo.get("from") is not None and fo.get("from") == fo.get("to"):
            ctx.error("PM0006", f"{path}.failover[{i}]", "failover from and to must differ")


def _post_locality_distribute(
    out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx
) -> None:
    if raw.get("from") is None:
        ctx.error("PM0007", path, 'missing required field "from"')
    to = out.get("to")
    if not raw.get("to"):
        ctx.error("PM0007", path, 'missing required field "to"')
        return
    if to is None or len(to) != len(raw["to"]):
        return  # reported already
    total = 0
    for loc, weight in to.items():
        kpath = join_path(join_path(path, "to"), loc)
        problem = locality_pattern_problem(loc)
        if problem:
            ctx.error("PM0006", kpath, problem)
        if not 1 <= weight <= 100:
            ctx.error("PM0011", kpath, f"locality weight must be 1..100, got {weight}")
            return
        total += weight
    if total != 100:
        ctx.error("PM0011", join_path(path, "to"), f"locality weights must sum to 100, got {total}")


def _post_locality_failover(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    for k in ("from", "to"):
        if not raw.get(k):
            ctx.error("PM0007", path, f"missing required field {q(k)}")


def _post_traffic_policy(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    seen: set[int] = set()
    for i, pl in enumerate(out.get("portLevelSettings") or []):
        number = (pl.get("port") or {}).get("number")
        if number in seen:
            ctx.add(
                "PM0006",
                "warning",
                f"{path}.portLevelSettings[{i}].port",
                f"port {number} already has port-level settings; only the first applies",
            )
        if number is not None:
            seen.add(number)


def _header_value_problem(v: str) -> tuple[str, str]:
    """(code, message) for a header value pymesh cannot send as written, or ("", "")."""
    if _CONTROL.search(v):
        return "PM0006", "a header value must not hold control characters"
    if v.count("%") % 2:
        return "PM0006", "single % not allowed (write %% for a literal %)"
    for mo in re.finditer(r"%([^%]*)%", v):
        if mo.group(1):
            return (
                "PM0003",
                f"Envoy's command operator %{mo.group(1)}% is not supported yet "
                "(write %% for a literal %)",
            )
    return "", ""


def _is_authority_header(name: str) -> bool:
    return name.lower() in ("host", ":authority")


def _header_ops(request: bool) -> PostFn:
    def post(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
        for op in ("set", "add", "remove"):
            names = out.get(op)
            if not names:
                continue
            opath = join_path(path, op)
            seen: dict[str, str] = {}
            items = list(names.items()) if isinstance(names, dict) else [(n, None) for n in names]
            for i, (name, value) in enumerate(items):
                npath = join_path(opath, name) if value is not None else f"{opath}[{i}]"
                authority = _is_authority_header(name)
                if authority and request and op != "remove":
                    pass  # sets the authority sent upstream (a rewrite of it)
                elif authority or name.startswith(":"):
                    ctx.error(
                        "PM0006",
                        npath,
                        f"invalid header {q(name)}: cannot "
                        + ("remove" if op == "remove" else "set")
                        + " the Host header or HTTP/2 pseudo-headers",
                    )
                elif not _HEADER_NAME.match(name):
                    ctx.error("PM0006", npath, f"invalid header name {q(name)}")
                low = name.lower()
                if low in seen:
                    ctx.error(
                        "PM0009",
                        npath,
                        f"header {q(name)} repeats {q(seen[low])} (header names are "
                        "case-insensitive)",
                    )
                seen[low] = name
                if value is not None:
                    code, problem = _header_value_problem(value)
                    if code:
                        ctx.error(code, npath, problem)

    return post


def _authority_set(route: dict[str, Any]) -> list[str]:
    request = (route.get("headers") or {}).get("request") or {}
    found = [(route.get("rewrite") or {}).get("authority") or ""]
    for op in ("set", "add"):
        found += [v for k, v in (request.get(op) or {}).items() if _is_authority_header(k)]
    return [a for a in found if a]


def _route_rule_conflicts(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    """Istio's rules between route, redirect, directResponse, fault, rewrite and mirrors."""
    has = {k: raw.get(k) is not None for k in raw}
    routes = bool(raw.get("route"))
    for local, label in (("redirect", "redirect"), ("directResponse", "directResponse")):
        if not has.get(local):
            continue
        for other in ("route", "fault", "rewrite"):
            if other == "route" and not routes:
                continue
            if has.get(other):
                ctx.error("PM0006", path, f"a rule cannot have both {other} and {label}")
        if has.get("mirror") or has.get("mirrors"):
            ctx.error(
                "PM0006", path, f"a {label} rule sends nothing upstream, so nothing to mirror"
            )
        for idle in ("timeout", "retries"):
            if has.get(idle):
                ctx.add(
                    "PM0006",
                    "warning",
                    join_path(path, idle),
                    f"{idle} has no effect on a {label} rule (it answers without a call)",
                )
    if has.get("redirect") and has.get("directResponse"):
        ctx.error("PM0006", path, "a rule cannot have both redirect and directResponse")
    if has.get("mirror") and has.get("mirrors"):
        ctx.error("PM0006", path, "a rule cannot have both mirror and mirrors")
    for pct in ("mirrorPercentage", "mirrorPercent", "mirror_percent"):
        if has.get(pct) and not has.get("mirror"):
            ctx.add(
                "PM0006",
                "warning",
                join_path(path, pct),
                f"{pct} has no effect without mirror (each mirrors[] item has its own percentage)",
            )
    authorities = _authority_set(out)
    if len(authorities) > 1:
        ctx.error(
            "PM0006",
            path,
            "the authority is set more than once (rewrite.authority and headers.request "
            f"host): {', '.join(q(a) for a in authorities)}",
        )


def _post_rewrite(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if raw.get("uri") and raw.get("uriRegexRewrite") is not None:
        ctx.error("PM0006", path, "rewrite may have only one of uri or uriRegexRewrite")
    if not raw.get("uri") and raw.get("uriRegexRewrite") is None and not raw.get("authority"):
        ctx.error("PM0007", path, "rewrite needs uri, uriRegexRewrite or authority")


def _post_regex_rewrite(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if raw.get("match") == "" or raw.get("rewrite") == "":
        ctx.error("PM0007", path, "uriRegexRewrite needs both match and rewrite")
        return
    rewrite = out.get("rewrite", "")
    if not rewrite.isascii() or any(c.isspace() for c in rewrite):
        ctx.error(
            "PM0006",
            join_path(path, "rewrite"),
            "a rewrite has no spaces; percent-encode non-ASCII characters",
        )
    elif "match" in out and "rewrite" in out:
        try:
            rewrite_template(re.compile(out["match"]), out["rewrite"])
        except ValueError as exc:
            ctx.error("PM0012", join_path(path, "rewrite"), f"invalid rewrite: {exc}")


def _post_redirect(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    keys = ("uri", "authority", "port", "derivePort", "scheme")
    if not any(raw.get(k) not in (None, "") for k in keys):
        ctx.error("PM0007", path, "redirect must specify uri, authority, scheme, or port")


def _post_direct_response(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    body = out.get("body") or {}
    size = len(body["string"].encode()) if "string" in body else 0
    if "bytes" in body:
        size = len(decode_base64(body["bytes"]))
    if size > 1024 * 1024:
        ctx.error("PM0006", join_path(path, "body"), "a direct response body must be under 1MB")
    elif size > 100 * 1024:
        ctx.add(
            "PM0006",
            "warning",
            join_path(path, "body"),
            "a large direct response body (over 100KB) is held in every snapshot",
        )


def _post_fault(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if raw.get("delay") is None and raw.get("abort") is None:
        ctx.error("PM0007", path, "fault injection needs an abort and/or a delay")


def _no_percentage_warning(what: str) -> PostFn:
    def post(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
        if raw.get("percentage") is None and raw.get("percent") is None:
            ctx.add(
                "PM0006",
                "warning",
                path,
                f"no percentage: as in Istio, no request is {what} (set percentage.value; 100 "
                "for every request)",
            )

    return post


def _post_fault_delay(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if raw.get("fixedDelay") is None and raw.get("exponentialDelay") is None:
        ctx.error("PM0007", path, 'missing required field "fixedDelay"')
    _no_percentage_warning("delayed")(out, raw, path, ctx)


def _post_fault_abort(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if all(raw.get(k) is None for k in ("httpStatus", "grpcStatus", "http2Error")):
        ctx.error("PM0007", path, "abort needs httpStatus or grpcStatus")
    _no_percentage_warning("aborted")(out, raw, path, ctx)


def _post_sidecar(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    keys = ("egress", "ingress", "outboundTrafficPolicy", "inboundConnectionPool")
    if all(raw.get(k) is None for k in keys):
        ctx.error("PM0007", path, "a Sidecar needs egress, ingress or outboundTrafficPolicy")
    egress = raw.get("egress")
    if not isinstance(egress, list):
        return
    ports: set[object] = set()
    catch_all = False
    for i, listener in enumerate(egress):
        if not isinstance(listener, dict):
            continue
        lpath = f"{path}.egress[{i}]"
        port = listener.get("port")
        if port is None:
            if catch_all:
                ctx.error("PM0006", lpath, "egress can have only one listener without a port")
            elif i != len(egress) - 1:
                ctx.error(
                    "PM0006", lpath, "the egress listener without a port must be the last one"
                )
            catch_all = True
        elif isinstance(port, dict):
            number = port.get("number")
            if number is None:
                ctx.error("PM0007", join_path(lpath, "port"), 'missing required field "number"')
            elif number in ports:
                ctx.error("PM0006", join_path(lpath, "port"), f"port {number} is named twice")
            ports.add(number)
        if listener.get("hosts") == []:
            ctx.error("PM0007", lpath, "an egress listener needs at least one host")


def _post_client_tls(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    mode = out.get("mode", "DISABLE")
    if mode == "MUTUAL" and not (out.get("clientCertificate") and out.get("privateKey")):
        ctx.error(
            "PM0007", path, "tls mode MUTUAL needs clientCertificate and privateKey (file paths)"
        )
    if mode in ("DISABLE", "ISTIO_MUTUAL"):
        for key in ("clientCertificate", "privateKey", "caCertificates", "sni"):
            if out.get(key):
                ctx.error(
                    "PM0006",
                    join_path(path, key),
                    f"{key} means nothing with tls mode {mode} (the mesh's own identity is used)"
                    if mode == "ISTIO_MUTUAL"
                    else f"{key} means nothing with tls mode DISABLE",
                )


POST: dict[str, PostFn] = {
    "ClientTLSSettings": _post_client_tls,
    "StringMatch": _string_match(False),
    "PresenceStringMatch": _string_match(True),
    "HTTPMatchRequest": _post_http_match,
    "HTTPRoute": _post_http_route,
    "HTTPRetry": _post_retry,
    "VirtualService": _post_virtual_service,
    "DestinationRule": _post_destination_rule,
    "ServiceEntry": _post_service_entry,
    "WorkloadEntry": _post_workload,
    "PeerAuthentication": _post_peer_authentication,
    "AuthorizationPolicy": _post_authorization_policy,
    "Source": _post_source,
    "Operation": _post_operation,
    "Condition": _post_condition,
    "Rule": _post_rule,
    "RequestHeaderOperations": _header_ops(True),
    "ResponseHeaderOperations": _header_ops(False),
    "HTTPRewrite": _post_rewrite,
    "RegexRewrite": _post_regex_rewrite,
    "HTTPRedirect": _post_redirect,
    "HTTPDirectResponse": _post_direct_response,
    "HTTPFaultInjection": _post_fault,
    "FaultDelay": _post_fault_delay,
    "FaultAbort": _post_fault_abort,
    "Sidecar": _post_sidecar,
    "ConsistentHashLB": _post_consistent_hash,
    "LocalityLoadBalancerSetting": _post_locality_lb,
    "LocalityDistribute": _post_locality_distribute,
    "LocalityFailover": _post_locality_failover,
    "TrafficPolicy": _post_traffic_policy,
}


# ---------------------------------------------------------------------------------------------
# Builders: clean dicts -> model


def _string_match_model(d: dict[str, Any] | None) -> m.StringMatch | None:
    if not d:
        return None
    for kind in _MATCH_KINDS:
        if kind in d:
            value = d[kind]
            rx = re.compile(value) if kind == "regex" else None
            k: Literal["exact", "prefix", "regex"] = kind  # type: ignore[assignment]
            return m.StringMatch(k, value, rx)
    return None  # pragma: no cover - validated before


def _match_model(d: dict[str, Any]) -> m.HTTPMatchRequest:
    def presence(mp: dict[str, Any], lower: bool) -> dict[str, m.StringMatch | None]:
        return {(k.lower() if lower else k): _string_match_model(v) for k, v in mp.items()}

    return m.HTTPMatchRequest(
        name=d.get("name", ""),
        uri=_string_match_model(d.get("uri")),
        scheme=_string_match_model(d.get("scheme")),
        method=_string_match_model(d.get("method")),
        authority=_string_match_model(d.get("authority")),
        headers=presence(d.get("headers") or {}, True),
        without_headers=presence(d.get("withoutHeaders") or {}, True),
        query_params=presence(d.get("queryParams") or {}, False),
        port=d.get("port"),
        source_labels=dict(d.get("sourceLabels") or {}),
        ignore_uri_case=d.get("ignoreUriCase", False),
        source_namespace=d.get("sourceNamespace", ""),
    )


def _destination_model(d: dict[str, Any]) -> m.Destination:
    return m.Destination(
        host=d["host"],
        subset=d.get("subset") or None,
        port=(d.get("port") or {}).get("number"),
    )


def _literal(value: str) -> str:
    """A validated header value as sent: `%%` is a literal `%`."""
    return value.replace("%%", "%")


def _header_ops_model(d: dict[str, Any] | None) -> m.HeaderOperations | None:
    if d is None:
        return None
    return m.HeaderOperations(
        set={k.lower(): _literal(v) for k, v in (d.get("set") or {}).items()},
        add={k.lower(): _literal(v) for k, v in (d.get("add") or {}).items()},
        remove=tuple(n.lower() for n in d.get("remove") or ()),
    )


def _headers_model(d: dict[str, Any] | None) -> m.Headers | None:
    if d is None:
        return None
    return m.Headers(
        request=_header_ops_model(d.get("request")),
        response=_header_ops_model(d.get("response")),
    )


def _percentage(d: dict[str, Any] | None) -> float | None:
    return None if d is None else float(d.get("value", 0.0))


def _fault_model(d: dict[str, Any] | None) -> m.HTTPFaultInjection | None:
    if d is None:
        return None
    delay = abort = None
    if "delay" in d:
        dd = d["delay"]
        pct = _percentage(dd.get("percentage"))
        if pct is None and "percent" in dd:
            pct = float(dd["percent"])
        delay = m.FaultDelay(fixed_delay=dd["fixedDelay"], percentage=pct)
    if "abort" in d:
        ad = d["abort"]
        abort = m.FaultAbort(
            http_status=ad.get("httpStatus"),
            grpc_status=ad.get("grpcStatus"),
            percentage=_percentage(ad.get("percentage")),
        )
    return m.HTTPFaultInjection(delay=delay, abort=abort)


def _mirrors_model(d: dict[str, Any]) -> tuple[m.HTTPMirrorPolicy, ...]:
    out: list[m.HTTPMirrorPolicy] = []
    if "mirror" in d:
        pct = 100.0
        if "mirrorPercentage" in d:
            pct = float(d["mirrorPercentage"].get("value", 0.0))
        elif "mirrorPercent" in d:
            pct = float(d["mirrorPercent"])
        elif "mirror_percent" in d:
            pct = float(d["mirror_percent"])
        out.append(m.HTTPMirrorPolicy(_destination_model(d["mirror"]), pct))
    for mp in d.get("mirrors") or []:
        share = _percentage(mp.get("percentage"))
        out.append(
            m.HTTPMirrorPolicy(
                _destination_model(mp["destination"]), 100.0 if share is None else share
            )
        )
    return tuple(out)


def _rewrite_model(d: dict[str, Any] | None) -> m.HTTPRewrite | None:
    if d is None:
        return None
    rr = d.get("uriRegexRewrite")
    return m.HTTPRewrite(
        uri=d.get("uri") or None,
        authority=d.get("authority") or None,
        uri_regex_rewrite=(
            m.RegexRewrite(rr["match"], rr["rewrite"], re.compile(rr["match"]))
            if rr is not None
            else None
        ),
    )


def _redirect_model(d: dict[str, Any] | None) -> m.HTTPRedirect | None:
    if d is None:
        return None
    return m.HTTPRedirect(
        uri=d.get("uri") or None,
        authority=d.get("authority") or None,
        port=d.get("port"),
        derive_port=d.get("derivePort"),
        scheme=d.get("scheme") or None,
        redirect_code=d.get("redirectCode") or 301,
    )


def _direct_response_model(d: dict[str, Any] | None) -> m.HTTPDirectResponse | None:
    if d is None:
        return None
    body = d.get("body")
    data: bytes | None = None
    if body is not None:
        if "string" in body:
            data = body["string"].encode()
        elif "bytes" in body:
            data = decode_base64(body["bytes"])
    return m.HTTPDirectResponse(status=d["status"], body=data)


def _cors_model(d: dict[str, Any] | None) -> m.CorsPolicy | None:
    if d is None:
        return None
    origins = [m.StringMatch("exact", o) for o in d.get("allowOrigin") or ()]
    origins += [sm for sm in (_string_match_model(o) for o in d.get("allowOrigins") or ()) if sm]
    return m.CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=tuple(d.get("allowMethods") or ()),
        allow_headers=tuple(d.get("allowHeaders") or ()),
        expose_headers=tuple(d.get("exposeHeaders") or ()),
        max_age=d.get("maxAge"),
        allow_credentials=d.get("allowCredentials"),
        unmatched_preflights=d.get("unmatchedPreflights", "UNSPECIFIED"),
    )


def _route_model(d: dict[str, Any]) -> m.HTTPRoute:
    routes = d.get("route") or []
    single = len(routes) == 1
    dests = tuple(
        m.RouteDestination(
            _destination_model(r["destination"]),
            None if single else r.get("weight", 0),
            _headers_model(r.get("headers")),
        )
        for r in routes
    )
    retries = None
    if "retries" in d:
        rd = d["retries"]
        retry_on = None
        if rd.get("retryOn"):
            retry_on = tuple(t.strip() for t in rd["retryOn"].split(",") if t.strip())
        retries = m.HTTPRetry(
            attempts=rd.get("attempts", 0),
            per_try_timeout=rd.get("perTryTimeout"),
            retry_on=retry_on,
        )
    return m.HTTPRoute(
        name=d.get("name", ""),
        match=tuple(_match_model(x) for x in d.get("match") or []),
        route=dests,
        timeout=d.get("timeout"),
        retries=retries,
        fault=_fault_model(d.get("fault")),
        mirrors=_mirrors_model(d),
        rewrite=_rewrite_model(d.get("rewrite")),
        redirect=_redirect_model(d.get("redirect")),
        direct_response=_direct_response_model(d.get("directResponse")),
        headers=_headers_model(d.get("headers")),
        cors_policy=_cors_model(d.get("corsPolicy")),
    )


def _build_virtual_service(meta: m.Meta, spec: dict[str, Any]) -> m.VirtualService:
    return m.VirtualService(
        meta=meta,
        hosts=tuple(spec.get("hosts") or ()),
        http=tuple(_route_model(r) for r in spec.get("http") or []),
    )


def _outlier_model(d: dict[str, Any]) -> m.OutlierDetection:
    five: int | None = 5
    gateway: int | None = None
    legacy = d.get("consecutiveErrors")
    if legacy:  # Istio: counts gateway errors only, and turns the 5xx detector off
        gateway = legacy
        five = None
    if "consecutive5xxErrors" in d:
        five = d["consecutive5xxErrors"] or None
    if "consecutiveGatewayErrors" in d:
        gateway = d["consecutiveGatewayErrors"] or None
    return m.OutlierDetection(
        consecutive_5xx_errors=five,
        consecutive_gateway_errors=gateway,
        interval=d.get("interval", 10.0),
        base_ejection_time=d.get("baseEjectionTime", 30.0),
        max_ejection_percent=d.get("maxEjectionPercent", 10),
        min_health_percent=d.get("minHealthPercent", 0),
    )


def _hash_model(d: dict[str, Any]) -> m.ConsistentHash:
    key: m.HashKeyKind
    name = ""
    path = ""
    ttl: float | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    if d.get("httpHeaderName"):
        key, name = "header", d["httpHeaderName"].lower()
    elif d.get("httpCookie") is not None:
        c = d["httpCookie"]
        key, name, path, ttl = "cookie", c["name"], c.get("path", ""), c.get("ttl")
        attributes = tuple((a["name"], a.get("value", "")) for a in c.get("attributes") or [])
    elif d.get("httpQueryParameterName"):
        key, name = "query", d["httpQueryParameterName"]
    else:
        key = "source_ip"
    if d.get("maglev") is not None:
        return m.ConsistentHash(
            key,
            name,
            path,
            ttl,
            attributes,
            "MAGLEV",
            table_size=d["maglev"].get("tableSize") or 65537,
        )
    ring = (d.get("ringHash") or {}).get("minimumRingSize") or d.get("minimumRingSize") or 1024
    return m.ConsistentHash(key, name, path, ttl, attributes, "RING_HASH", minimum_ring_size=ring)


def _locality_model(d: dict[str, Any]) -> m.LocalityLbSetting:
    return m.LocalityLbSetting(
        distribute=tuple(
            m.LocalityDistribute(x["from"], tuple(sorted(x["to"].items())))
            for x in d.get("distribute") or []
        ),
        failover=tuple((x["from"], x["to"]) for x in d.get("failover") or []),
        failover_priority=tuple(d.get("failoverPriority") or ()),
        enabled=d.get("enabled"),
    )


def _lb_model(d: dict[str, Any] | None) -> m.LoadBalancerSettings | None:
    if d is None:
        return None
    ch = d.get("consistentHash")
    loc = d.get("localityLbSetting")
    return m.LoadBalancerSettings(
        simple=d.get("simple"),
        consistent_hash=_hash_model(ch) if ch is not None else None,
        locality_lb_setting=_locality_model(loc) if loc is not None else None,
    )


def _positive(v: int | None) -> int | None:
    """Istio reads a count of 0 as "not set" (the proto default)."""
    return v or None


def _pool_model(d: dict[str, Any] | None) -> m.ConnectionPoolSettings | None:
    if d is None:
        return None
    tcp = d.get("tcp") or {}
    http = d.get("http") or {}
    ka = tcp.get("tcpKeepalive")
    return m.ConnectionPoolSettings(
        max_connections=_positive(tcp.get("maxConnections")),
        connect_timeout=tcp.get("connectTimeout"),
        tcp_keepalive=(
            m.TcpKeepalive(ka.get("probes"), ka.get("time"), ka.get("interval"))
            if ka is not None
            else None
        ),
        max_connection_duration=tcp.get("maxConnectionDuration"),
        tcp_idle_timeout=tcp.get("idleTimeout"),
        http1_max_pending_requests=_positive(http.get("http1MaxPendingRequests")),
        http2_max_requests=_positive(http.get("http2MaxRequests")),
        max_requests_per_connection=_positive(http.get("maxRequestsPerConnection")),
        max_retries=_positive(http.get("maxRetries")),
        idle_timeout=http.get("idleTimeout"),
        h2_upgrade_policy=http.get("h2UpgradePolicy", "DEFAULT"),
        use_client_protocol=http.get("useClientProtocol", False),
    )


def _tls_model(d: dict[str, Any] | None) -> m.ClientTLSSettings | None:
    if d is None:
        return None
    return m.ClientTLSSettings(
        mode=d.get("mode", "DISABLE"),
        client_certificate=d.get("clientCertificate", ""),
        private_key=d.get("privateKey", ""),
        ca_certificates=d.get("caCertificates", ""),
        subject_alt_names=tuple(d.get("subjectAltNames") or ()),
        sni=d.get("sni", ""),
        insecure_skip_verify=bool(d.get("insecureSkipVerify", False)),
    )


def _policy_model(d: dict[str, Any] | None) -> m.TrafficPolicy | None:
    if d is None:
        return None
    od = d.get("outlierDetection")
    rb = d.get("retryBudget")
    return m.TrafficPolicy(
        load_balancer=_lb_model(d.get("loadBalancer")),
        outlier_detection=_outlier_model(od) if od is not None else None,
        connection_pool=_pool_model(d.get("connectionPool")),
        tls=_tls_model(d.get("tls")),
        retry_budget=(
            m.RetryBudget(
                percent=rb.get("percent", 20.0),
                min_retry_concurrency=rb.get("minRetryConcurrency") or 3,
            )
            if rb is not None
            else None
        ),
        port_level_settings=tuple(
            m.PortTrafficPolicy(
                port=p["port"]["number"],
                load_balancer=_lb_model(p.get("loadBalancer")),
                connection_pool=_pool_model(p.get("connectionPool")),
                outlier_detection=(
                    _outlier_model(p["outlierDetection"]) if "outlierDetection" in p else None
                ),
                tls=_tls_model(p.get("tls")),
            )
            for p in d.get("portLevelSettings") or []
        ),
    )


def _build_destination_rule(meta: m.Meta, spec: dict[str, Any]) -> m.DestinationRule:
    return m.DestinationRule(
        meta=meta,
        host=spec["host"],
        traffic_policy=_policy_model(spec.get("trafficPolicy")),
        subsets=tuple(
            m.Subset(
                name=s["name"],
                labels=dict(s.get("labels") or {}),
                traffic_policy=_policy_model(s.get("trafficPolicy")),
            )
            for s in spec.get("subsets") or []
        ),
    )


def _endpoint_model(d: dict[str, Any]) -> m.WorkloadEndpoint:
    return m.WorkloadEndpoint(
        address=d["address"],
        ports=dict(d.get("ports") or {}),
        labels=dict(d.get("labels") or {}),
        locality=d.get("locality", ""),
        weight=d.get("weight") or 1,
        service_account=d.get("serviceAccount", ""),
        network=d.get("network", ""),
    )


def _protocol_of(port: dict[str, Any]) -> str:
    """The port's protocol; unset, Istio reads it from the name's prefix (`http-web`)."""
    if port.get("protocol"):
        return str(port["protocol"])
    prefix = str(port.get("name", "")).split("-", 1)[0].upper()
    return prefix if prefix in PROTOCOLS else "HTTP"


def _build_service_entry(meta: m.Meta, spec: dict[str, Any]) -> m.ServiceEntry:
    ws = spec.get("workloadSelector")
    return m.ServiceEntry(
        meta=meta,
        hosts=tuple(spec["hosts"]),
        ports=tuple(
            m.ServicePort(
                number=p["number"],
                name=p["name"],
                protocol=_protocol_of(p),
                target_port=p.get("targetPort"),
            )
            for p in spec.get("ports") or []
        ),
        resolution=spec.get("resolution", "NONE"),
        location=spec.get("location", "MESH_EXTERNAL"),
        endpoints=tuple(_endpoint_model(e) for e in spec.get("endpoints") or []),
        workload_selector=dict(ws.get("labels") or {}) if ws is not None else None,
        subject_alt_names=tuple(spec.get("subjectAltNames") or ()),
    )


def _build_workload_entry(meta: m.Meta, spec: dict[str, Any]) -> m.WorkloadEntry:
    return m.WorkloadEntry(meta=meta, endpoint=_endpoint_model(spec))


def _build_sidecar(meta: m.Meta, spec: dict[str, Any]) -> m.Sidecar:
    ws = spec.get("workloadSelector")
    egress = []
    for e in spec.get("egress") or []:
        port = e.get("port")
        egress.append(
            m.EgressListener(
                hosts=tuple(e["hosts"]),
                port=(
                    m.SidecarPort(port["number"], port.get("protocol", ""), port.get("name", ""))
                    if port is not None
                    else None
                ),
                bind=e.get("bind", ""),
            )
        )
    return m.Sidecar(
        meta=meta,
        workload_selector=dict(ws.get("labels") or {}) if ws is not None else None,
        egress=tuple(egress),
        outbound_mode=(spec.get("outboundTrafficPolicy") or {}).get("mode"),
        ingress=tuple(spec.get("ingress") or ()),
        inbound_connection_pool=spec.get("inboundConnectionPool"),
    )


def _match_labels(selector: dict[str, Any] | None) -> dict[str, str] | None:
    """`selector.matchLabels`, or None when there is no selector or it has no labels."""
    labels = (selector or {}).get("matchLabels") or {}
    return dict(labels) or None


def _build_peer_authentication(meta: m.Meta, spec: dict[str, Any]) -> m.PeerAuthentication:
    return m.PeerAuthentication(
        meta=meta,
        selector=_match_labels(spec.get("selector")),
        mode=(spec.get("mtls") or {}).get("mode", "UNSET"),
        port_level_mtls={
            port: (mtls or {}).get("mode", "UNSET")
            for port, mtls in (spec.get("portLevelMtls") or {}).items()
        },
    )


def _strings(d: dict[str, Any], key: str) -> tuple[str, ...]:
    return tuple(d.get(key) or ())


def _service_accounts(d: dict[str, Any], key: str, namespace: str) -> tuple[str, ...]:
    # `name` alone means a service account of the policy's own namespace (as Istio reads it)
    return tuple(sa if "/" in sa else f"{namespace}/{sa}" for sa in d.get(key) or ())


def _rule_source_model(d: dict[str, Any], namespace: str) -> m.RuleSource:
    return m.RuleSource(
        principals=_strings(d, "principals"),
        not_principals=_strings(d, "notPrincipals"),
        namespaces=_strings(d, "namespaces"),
        not_namespaces=_strings(d, "notNamespaces"),
        service_accounts=_service_accounts(d, "serviceAccounts", namespace),
        not_service_accounts=_service_accounts(d, "notServiceAccounts", namespace),
        ip_blocks=_strings(d, "ipBlocks"),
        not_ip_blocks=_strings(d, "notIpBlocks"),
        remote_ip_blocks=_strings(d, "remoteIpBlocks"),
        not_remote_ip_blocks=_strings(d, "notRemoteIpBlocks"),
    )


def _rule_operation_model(d: dict[str, Any]) -> m.RuleOperation:
    return m.RuleOperation(
        hosts=_strings(d, "hosts"),
        not_hosts=_strings(d, "notHosts"),
        ports=_strings(d, "ports"),
        not_ports=_strings(d, "notPorts"),
        methods=_strings(d, "methods"),
        not_methods=_strings(d, "notMethods"),
        paths=_strings(d, "paths"),
        not_paths=_strings(d, "notPaths"),
    )


def _rule_condition_model(d: dict[str, Any], namespace: str) -> m.RuleCondition:
    key = d["key"]
    if key == "source.serviceAccount":
        return m.RuleCondition(
            key,
            _service_accounts(d, "values", namespace),
            _service_accounts(d, "notValues", namespace),
        )
    return m.RuleCondition(key, _strings(d, "values"), _strings(d, "notValues"))


def _build_authorization_policy(meta: m.Meta, spec: dict[str, Any]) -> m.AuthorizationPolicy:
    ns = meta.namespace
    return m.AuthorizationPolicy(
        meta=meta,
        action=spec.get("action", "ALLOW"),
        selector=_match_labels(spec.get("selector")),
        rules=tuple(
            m.AuthorizationRule(
                sources=tuple(_rule_source_model(f["source"], ns) for f in r.get("from") or []),
                operations=tuple(_rule_operation_model(t["operation"]) for t in r.get("to") or []),
                conditions=tuple(_rule_condition_model(c, ns) for c in r.get("when") or []),
            )
            for r in spec.get("rules") or []
        ),
    )


BUILDERS: dict[str, Callable[[m.Meta, dict[str, Any]], m.Resource]] = {
    "PeerAuthentication": _build_peer_authentication,
    "AuthorizationPolicy": _build_authorization_policy,
    "VirtualService": _build_virtual_service,
    "DestinationRule": _build_destination_rule,
    "ServiceEntry": _build_service_entry,
    "WorkloadEntry": _build_workload_entry,
    "Sidecar": _build_sidecar,
}


# ---------------------------------------------------------------------------------------------
# Documents -> resources


@dataclass(frozen=True, slots=True)
class Parsed:
    """One resource document after validation: its model (None if it had errors), identity,
    raw spec, and where it came from (document plus path prefix, for `kind: List` items)."""

    resource: m.Resource | None
    kind: str
    meta: m.Meta | None
    spec: dict[Any, Any]
    doc: Document
    base: str

    def path(self, rel: str) -> str:
        """The full field path of `rel` (e.g. `spec.hosts[0]`) inside this document."""
        return f"{self.base}.{rel}" if self.base else rel


def validate_documents(
    docs: Iterable[Document], default_namespace: str = "default"
) -> tuple[list[Parsed], list[Finding]]:
    """Validate every document; build the ones without errors. Never raises for bad input."""
    findings: list[Finding] = []
    parsed: list[Parsed] = []
    seen: dict[tuple[str, str, str], str] = {}
    for doc in docs:
        for item, base in _items(doc, findings):
            p = _validate_resource(doc, item, base, default_namespace, findings)
            if p is None:
                continue
            if p.meta is not None:
                key = (p.kind, p.meta.namespace, p.meta.name)
                where = f"{doc.file}:{doc.line_of(p.path('metadata.name'))}"
                if key in seen:
                    findings.append(
                        Finding(
                            "PM0014",
                            "error",
                            f"{p.meta.ref} is defined twice (first at {seen[key]})",
                            doc.file,
                            doc.line_of(p.path("metadata.name")),
                            p.meta.ref,
                            p.path("metadata.name"),
                        )
                    )
                    p = Parsed(None, p.kind, p.meta, p.spec, p.doc, p.base)
                else:
                    seen[key] = where
            parsed.append(p)
    return parsed, findings


def _items(doc: Document, findings: list[Finding]) -> list[tuple[object, str]]:
    """The resources of a document: itself, or the items of a `kind: List`."""
    data = doc.data
    if isinstance(data, dict) and data.get("kind") == "List" and "items" in data:
        items = data["items"]
        if not isinstance(items, list):
            findings.append(
                Finding(
                    "PM0005",
                    "error",
                    "items of a List must be a list",
                    doc.file,
                    doc.line,
                    "",
                    "items",
                )
            )
            return []
        for f in doc.problems:
            if not f.path.startswith("items["):
                findings.append(f)
        return [(it, f"items[{i}]") for i, it in enumerate(items)]
    return [(data, "")]


def _validate_resource(
    doc: Document, data: object, base: str, default_namespace: str, findings: list[Finding]
) -> Parsed | None:
    ctx = Ctx(doc, findings)

    def p(rel: str) -> str:
        return f"{base}.{rel}" if base else rel

    # conversion problems (duplicate keys...) of this resource, now that it has a name
    problems = [
        f
        for f in doc.problems
        if not base or f.path == base or f.path.startswith((base + ".", base + "["))
    ]

    if not isinstance(data, dict):
        findings.extend(problems)
        ctx.error("PM0005", base, f"a resource must be a mapping, got {_describe(data)}")
        return None
    kind = data.get("kind")
    api = data.get("apiVersion")
    meta_raw = data.get("metadata")
    name = meta_raw.get("name") if isinstance(meta_raw, dict) else None
    ns = meta_raw.get("namespace") if isinstance(meta_raw, dict) else None
    if not isinstance(ns, str) or not ns:
        ns = default_namespace
    if isinstance(kind, str) and isinstance(name, str):
        ctx.resource = f"{kind} {ns}/{name}"
    for f in problems:
        ctx.add(f.code, f.severity, f.path, f.message, f.line)

    for key in data:
        if key not in RESOURCE:
            hint = _did_you_mean(str(key), RESOURCE)
            ctx.error("PM0002", join_path(base, key), f'unknown field "{key}"{hint}')
    if data.get("status") is not None:
        ctx.add(
            "PM0004",
            "info",
            p("status"),
            '"status" is accepted and ignored (the Kubernetes control plane writes it)',
        )
    if kind is None:
        ctx.error("PM0007", base, 'missing required field "kind"')
        return None
    if not isinstance(kind, str):
        _type_error(ctx, p("kind"), "a string", kind)
        return None
    info = KINDS.get(kind)
    if info is None:
        if kind in NOT_YET_KINDS:
            ctx.error("PM0003", p("kind"), f"{kind} is an Istio kind pymesh does not support yet")
        elif kind in KUBERNETES_KINDS:
            ctx.error(
                "PM0008",
                p("kind"),
                f"{kind} is a Kubernetes kind; pymesh reads Istio kinds only (declare a service "
                "with a ServiceEntry and its instances as WorkloadEntries)",
            )
        else:
            known = ", ".join(KINDS)
            hint = _did_you_mean(kind, [*KINDS, *NOT_YET_KINDS])
            ctx.error("PM0008", p("kind"), f"unknown kind {q(kind)}{hint} (pymesh reads {known})")
        return None
    if api is None:
        ctx.error("PM0007", base, 'missing required field "apiVersion"')
    elif api not in info.api_versions:
        ctx.error(
            "PM0008",
            p("apiVersion"),
            f"{kind} is not served as {q(api)} (use one of {', '.join(info.api_versions)})",
        )
    if meta_raw is None:
        ctx.error("PM0007", base, 'missing required field "metadata"')
        meta_clean: Any = INVALID
    else:
        meta_clean = walk_message(meta_raw, "ObjectMeta", p("metadata"), ctx)
    spec_raw = data.get("spec")
    if spec_raw is None:
        spec_raw = {}
    spec_clean = walk_message(spec_raw, kind, p("spec"), ctx)

    meta: m.Meta | None = None
    if isinstance(name, str) and meta_clean is not INVALID and "name" in meta_clean:
        meta = m.Meta(
            kind=kind,
            api_version=str(api),
            name=name,
            namespace=ns,
            labels=dict(meta_clean.get("labels") or {}),
            source=m.Source(doc.file, doc.line_of(base) if base else doc.line),
        )
    spec_dict: dict[Any, Any] = spec_raw if isinstance(spec_raw, dict) else {}
    resource: m.Resource | None = None
    if ctx.errors == 0 and meta is not None:
        builder = BUILDERS.get(kind)
        if builder is not None:
            resource = builder(meta, spec_clean)
        else:
            resource = m.RawResource(meta, {str(k): v for k, v in spec_dict.items()})
    return Parsed(resource, kind, meta, spec_dict, doc, base)
