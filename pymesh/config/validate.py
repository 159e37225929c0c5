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
    "experimental.envoy.filters",
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
    try:
        ipaddress.ip_address(host)
        return ""
    except ValueError:
        pass
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
    if base.startswith("experimental.envoy.filters."):
        return v
    if base in JWT_CONDITION_KEYS:
        ctx.error(
            "PM0003", path, f"condition key {q(v)} needs JWT, which pymesh does not support yet"
        )
        return INVALID
    if base not in CONDITION_KEYS:
        hint = _did_you_mean(base, (*CONDITION_KEYS, *JWT_CONDITION_KEYS))
        ctx.error("PM0006", path, f"unknown condition key {q(v)}{hint}")
        return INVALID
    if base == "request.headers" and not re.match(r"^request\.headers\[[^\]]+\]$", v):
        ctx.error("PM0006", path, f"{q(v)}: write request.headers[<header-name>]")
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
    if raw.get("portLevelMtls") and not raw.get("selector"):
        ctx.error("PM0006", path, "portLevelMtls requires a selector")


def _post_authorization_policy(
    out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx
) -> None:
    targets = [k for k in ("selector", "targetRef", "targetRefs") if raw.get(k) is not None]
    if "selector" in targets and len(targets) > 1:
        ctx.error("PM0006", path, "only one of selector or targetRef(s) can be set")
    if raw.get("targetRef") is not None and raw.get("targetRefs") is not None:
        ctx.error("PM0006", path, "only one of targetRef or targetRefs can be set")


def _post_source(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if not raw:
        ctx.error("PM0007", path, "source must not be empty")
    if raw.get("serviceAccounts") and (raw.get("namespaces") or raw.get("principals")):
        ctx.error("PM0006", path, "cannot set serviceAccounts with namespaces or principals")


def _post_operation(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if not raw:
        ctx.error("PM0007", path, "operation must not be empty")


def _post_condition(out: dict[str, Any], raw: dict[Any, Any], path: str, ctx: Ctx) -> None:
    if not raw.get("values") and not raw.get("notValues"):
        ctx.error("PM0007", path, "a condition needs values or notValues")


POST: dict[str, PostFn] = {
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
    )


def _route_model(d: dict[str, Any]) -> m.HTTPRoute:
    routes = d.get("route") or []
    single = len(routes) == 1
    dests = tuple(
        m.RouteDestination(
            m.Destination(
                host=r["destination"]["host"],
                subset=r["destination"].get("subset") or None,
                port=(r["destination"].get("port") or {}).get("number"),
            ),
            None if single else r.get("weight", 0),
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


def _policy_model(d: dict[str, Any] | None) -> m.TrafficPolicy | None:
    if d is None:
        return None
    lb = (d.get("loadBalancer") or {}).get("simple")
    od = d.get("outlierDetection")
    return m.TrafficPolicy(
        load_balancer=lb,
        outlier_detection=_outlier_model(od) if od is not None else None,
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


BUILDERS: dict[str, Callable[[m.Meta, dict[str, Any]], m.Resource]] = {
    "VirtualService": _build_virtual_service,
    "DestinationRule": _build_destination_rule,
    "ServiceEntry": _build_service_entry,
    "WorkloadEntry": _build_workload_entry,
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
