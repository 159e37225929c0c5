"""AuthorizationPolicy: Istio's evaluation, as a pure decision over one request.

Build an `Authorizer` once per workload and configuration snapshot; call `evaluate` per
request. The inbound server does, in order (each step a pure function of this package):

1. `paths.normalize_path(raw target)` → 400 on a rejection; the app gets the normalized path;
2. `inbound_headers.clean_headers(raw headers)` → 400 on a rejection; the app gets the cleaned
   headers;
3. `peerauthn.admit(mode, transport)` per connection → refuse, or know whether the peer's
   identity counts;
4. `authorizer.evaluate(AuthzRequest(...))` → on `allowed=False` answer 403 with the body
   `DENIED_BODY` ("RBAC: access denied") and log `decision.reason` (the policy name and rule
   go to the log, never to the caller).

    from pymesh.policy.authz import Authorizer, AuthzRequest

    authz = Authorizer.compile(cs.of(AuthorizationPolicy), namespace="default",
                               labels={"app": "reviews"})
    d = authz.evaluate(AuthzRequest(method="GET", path=np.path, host=authority,
                                    headers=clean.values, port=9080, source_ip="10.0.0.7",
                                    principal="spiffe://cluster.local/ns/default/sa/sleep"))
    d.allowed, d.policy, d.rule, d.reason, d.audit

**Selection.** A policy applies to a workload when it is in the workload's namespace or in the
root namespace (`istio-system` unless configured; mesh-wide), and its selector's matchLabels
are all on the workload (no selector: every workload there).

**Evaluation** (CUSTOM is refused at load time): if any DENY policy matches, deny; else if no
ALLOW policy applies, allow; else if any ALLOW policy matches, allow; else deny. AUDIT policies
never change the decision; the ones that match are listed in `audit`. A policy matches when
one of its rules does (no rules: never — so `spec: {}` as ALLOW denies everything). A rule
matches when one of its `from` sources (or it has none), one of its `to` operations (or it has
none) and all of its `when` conditions match. Within a source or operation the fields are
AND-ed; a field matches when the attribute matches one of its values, a `not*` field when it
matches none of them. An attribute the request does not have (no mTLS identity, no such header)
matches no value — so `principals` never matches a plaintext peer, and `notPrincipals` always
does.

**Values** (Istio's matching): `abc` exact, `abc*` prefix, `*abc` suffix, `*` any non-empty
value (a header's `*`: present, even empty). Attributes:

- principals / `source.principal`: the peer's SPIFFE ID without `spiffe://`
  (`cluster.local/ns/default/sa/sleep`); a value in trust domain `cluster.local` (or the
  mesh's own, or an alias) matches the mesh's trust domain and its aliases, as in Istio;
- namespaces / `source.namespace`, serviceAccounts / `source.serviceAccount` (`ns/name`): read
  from the peer's SPIFFE ID (`…/ns/<ns>/sa/<name>`) — mTLS only;
- ipBlocks / `source.ip`: the connection's peer address; remoteIpBlocks / `remote.ip`: the
  original client (`remote_ip`, from trusted proxies; defaults to the peer address);
  `destination.ip`: the local address; CIDR blocks, a bare IP is one address;
- hosts: the Host / `:authority`, case-insensitive, port and trailing dot ignored;
- ports / `destination.port`: the port the workload was called on;
- methods: exact, case-sensitive; paths: the **normalized** path (`paths.normalize_path`),
  without the query;
- `request.headers[name]`: the cleaned, folded value (`inbound_headers.clean_headers`);
- `connection.sni`: the TLS server name the peer sent.

Pure: no I/O; `ipaddress` parses are cached.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

from pymesh.config.model import (
    AuthorizationPolicy,
    AuthorizationRule,
    RuleCondition,
    RuleOperation,
    RuleSource,
)
from pymesh.policy.peerauthn import DEFAULT_ROOT_NAMESPACE, selector_matches

__all__ = [
    "DENIED_BODY",
    "DENIED_STATUS",
    "Authorizer",
    "AuthzDecision",
    "AuthzRequest",
    "policy_applies",
]

DENIED_STATUS = 403
DENIED_BODY = b"RBAC: access denied"
_SPIFFE = "spiffe://"
_LOCAL_TRUST_DOMAIN = "cluster.local"


class AuthzRequest(NamedTuple):
    """What authorization reads from one request (build it once per request).

    `path`: the normalized path without the query (`NormalizedPath.path`). `host`: the Host /
    `:authority` as sent. `headers`: lower-case names to cleaned, folded values
    (`CleanHeaders.values`). `port`: the port the workload was called on. `principal`: the
    peer's verified SPIFFE ID (`spiffe://…`), or None without mTLS — also None when
    `Admission.use_identity` is False. `remote_ip`: the original client behind trusted proxies
    ("" means `source_ip`).
    """

    method: str
    path: str
    host: str
    headers: Mapping[str, str]
    port: int
    source_ip: str = ""
    principal: str | None = None
    remote_ip: str = ""
    destination_ip: str = ""
    sni: str = ""


Verdict = Literal["DENY", "ALLOW", "NO_ALLOW_POLICY", "NO_ALLOW_MATCH"]


class AuthzDecision(NamedTuple):
    """The decision and why: `verdict` says which step decided; `policy` (`ns/name`) and
    `rule` (index in its `rules`) name the policy that matched (None when none did);
    `audit` lists the AUDIT policies (`ns/name`) that matched."""

    allowed: bool
    verdict: Verdict
    policy: str | None = None
    rule: int | None = None
    audit: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """One line for the log (never for the caller)."""
        if self.verdict == "DENY":
            return f"denied by DENY policy {self.policy} rule {self.rule}"
        if self.verdict == "ALLOW":
            return f"allowed by ALLOW policy {self.policy} rule {self.rule}"
        if self.verdict == "NO_ALLOW_POLICY":
            return "allowed: no ALLOW policy applies"
        return "denied: no ALLOW policy matched"


def policy_applies(
    policy: AuthorizationPolicy,
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> bool:
    """Whether `policy` applies to the workload (namespace, labels): same namespace or the
    root namespace, and the selector matches."""
    if policy.meta.namespace not in (namespace, root_namespace):
        return False
    return selector_matches(policy.selector, labels)


# ---------------------------------------------------------------------------------------------
# Attribute extraction (cached: the same peers and addresses come again and again)


class _Identity(NamedTuple):
    principal: str  # without spiffe://
    namespace: str | None
    service_account: str | None  # ns/name


_NO_IDENTITY = _Identity("", None, None)


@lru_cache(maxsize=4096)
def _identity(principal: str) -> _Identity:
    bare = principal[len(_SPIFFE) :] if principal.startswith(_SPIFFE) else principal
    parts = bare.split("/")
    if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa" and parts[2] and parts[4]:
        return _Identity(bare, parts[2], f"{parts[2]}/{parts[4]}")
    return _Identity(bare, None, None)


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4096)
def _address(text: str) -> Address | None:
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])  # no IPv6 zone
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@lru_cache(maxsize=1024)
def _host(authority: str) -> str:
    host = authority.lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[: end + 1] if end >= 0 else host
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".") if host != "." else host


# ---------------------------------------------------------------------------------------------
# Compiled matchers

StrTest = Callable[[str], bool]
Pred = Callable[[AuthzRequest, _Identity], bool]


def _string_test(values: Sequence[str], *, star_present: bool = False) -> StrTest:
    """One test for Istio's string values (exact, `p*`, `*s`, `*`), OR-ed."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    star = False
    for v in values:
        if v == "*":
            star = True
        elif v.startswith("*"):
            suffixes.append(v[1:])
        elif v.endswith("*"):
            prefixes.append(v[:-1])
        else:
            exact.add(v)
    pre, suf = tuple(prefixes), tuple(suffixes)
    if star:
        return (lambda s: True) if star_present else (lambda s: s != "")
    if not pre and not suf:
        return exact.__contains__
    if not exact and not suf:
        return lambda s: s.startswith(pre)
    if not exact and not pre:
        return lambda s: s.endswith(suf)
    return lambda s: s in exact or s.startswith(pre) or s.endswith(suf)


def _networks(values: Sequence[str]) -> tuple[Network, ...]:
    nets: list[Network] = []
    for v in values:
        net = ipaddress.ip_network(v, strict=False)
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
            mapped = ipaddress.IPv6Address(int(net.network_address)).ipv4_mapped
            if mapped is not None:  # ::ffff:a.b.c.d/n is an IPv4 block
                net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
        nets.append(net)
    return tuple(nets)


def _ip_test(values: Sequence[str]) -> Callable[[Address | None], bool]:
    nets = _networks(values)

    def test(addr: Address | None) -> bool:
        return addr is not None and any(addr in n for n in nets)  # versions differ: False

    return test


Getter = Callable[[AuthzRequest, _Identity], str | None]


def _field(
    get: Getter, values: Sequence[str], not_values: Sequence[str], *, star_present: bool = False
) -> Pred | None:
    """A predicate for one string attribute with values (OR) and notValues (NOR)."""
    if not values and not not_values:
        return None
    if not not_values:
        yes = _string_test(values, star_present=star_present)

        def only_yes(req: AuthzRequest, ident: _Identity) -> bool:
            v = get(req, ident)
            return v is not None and yes(v)

        return only_yes
    no = _string_test(not_values, star_present=star_present)
    if not values:

        def only_no(req: AuthzRequest, ident: _Identity) -> bool:
            v = get(req, ident)
            return v is None or not no(v)

        return only_no
    both = _string_test(values, star_present=star_present)

    def pred(req: AuthzRequest, ident: _Identity) -> bool:
        v = get(req, ident)
        return v is not None and both(v) and not no(v)

    return pred


AddrGetter = Callable[[AuthzRequest], Address | None]


def _ip_field(get: AddrGetter, values: Sequence[str], not_values: Sequence[str]) -> Pred | None:
    if not values and not not_values:
        return None
    yes = _ip_test(values) if values else None
    no = _ip_test(not_values) if not_values else None

    def pred(req: AuthzRequest, ident: _Identity) -> bool:
        addr = get(req)
        if yes is not None and not yes(addr):
            return False
        return no is None or not no(addr)

    return pred


def _get_principal(req: AuthzRequest, ident: _Identity) -> str | None:
    return ident.principal or None


def _get_namespace(req: AuthzRequest, ident: _Identity) -> str | None:
    return ident.namespace


def _get_service_account(req: AuthzRequest, ident: _Identity) -> str | None:
    return ident.service_account


def _get_host(req: AuthzRequest, ident: _Identity) -> str | None:
    return _host(req.host) if req.host else None


def _get_method(req: AuthzRequest, ident: _Identity) -> str | None:
    return req.method


def _get_path(req: AuthzRequest, ident: _Identity) -> str | None:
    path = req.path
    return path.partition("?")[0] if "?" in path else path


def _get_port(req: AuthzRequest, ident: _Identity) -> str | None:
    return str(req.port)


def _get_sni(req: AuthzRequest, ident: _Identity) -> str | None:
    return req.sni or None


def _source_ip(req: AuthzRequest) -> Address | None:
    return _address(req.source_ip)


def _remote_ip(req: AuthzRequest) -> Address | None:
    return _address(req.remote_ip or req.source_ip)


def _destination_ip(req: AuthzRequest) -> Address | None:
    return _address(req.destination_ip)


def _header_getter(name: str) -> Getter:
    def get(req: AuthzRequest, ident: _Identity) -> str | None:
        return req.headers.get(name)

    return get


class _Principals:
    """Expands principal values in the local trust domain to the mesh's trust domains."""

    def __init__(self, trust_domain: str, aliases: Sequence[str]) -> None:
        self.domains = (trust_domain, *[a for a in aliases if a != trust_domain])
        self.local = {_LOCAL_TRUST_DOMAIN, *self.domains}

    def expand(self, values: Sequence[str]) -> tuple[str, ...]:
        out: list[str] = []
        for v in values:
            td, sep, rest = v.partition("/")
            if sep and not v.startswith("*") and "*" not in td and td in self.local:
                out += [f"{d}/{rest}" for d in self.domains]
            else:
                out.append(v)
        return tuple(dict.fromkeys(out))


def _all(preds: Iterable[Pred | None]) -> Pred:
    """AND of predicates, without a generator per call (this runs per request and rule)."""
    ps = tuple(p for p in preds if p is not None)
    if not ps:
        return lambda req, ident: True
    if len(ps) == 1:
        return ps[0]
    if len(ps) == 2:
        a, b = ps
        return lambda req, ident: a(req, ident) and b(req, ident)
    if len(ps) == 3:
        a, b, c = ps
        return lambda req, ident: a(req, ident) and b(req, ident) and c(req, ident)

    def every(req: AuthzRequest, ident: _Identity) -> bool:
        for p in ps:  # noqa: SIM110 - a plain loop: no generator per call on the hot path
            if not p(req, ident):
                return False
        return True

    return every


def _any(preds: Sequence[Pred]) -> Pred:
    """OR of predicates."""
    ps = tuple(preds)
    if len(ps) == 1:
        return ps[0]
    if len(ps) == 2:
        a, b = ps
        return lambda req, ident: a(req, ident) or b(req, ident)

    def some(req: AuthzRequest, ident: _Identity) -> bool:
        for p in ps:  # noqa: SIM110 - a plain loop: no generator per call on the hot path
            if p(req, ident):
                return True
        return False

    return some


def _source_pred(s: RuleSource, principals: _Principals) -> Pred:
    return _all(
        (
            _ip_field(_source_ip, s.ip_blocks, s.not_ip_blocks),
            _ip_field(_remote_ip, s.remote_ip_blocks, s.not_remote_ip_blocks),
            _field(_get_namespace, s.namespaces, s.not_namespaces),
            _field(_get_service_account, s.service_accounts, s.not_service_accounts),
            _field(
                _get_principal,
                principals.expand(s.principals),
                principals.expand(s.not_principals),
            ),
        )
    )


def _operation_pred(o: RuleOperation) -> Pred:
    return _all(
        (
            _field(_get_method, o.methods, o.not_methods),
            _field(_get_path, o.paths, o.not_paths),
            _field(_get_port, o.ports, o.not_ports),
            _field(_get_host, [h.lower() for h in o.hosts], [h.lower() for h in o.not_hosts]),
        )
    )


def _condition_pred(c: RuleCondition, principals: _Principals) -> Pred | None:
    key, values, not_values = c.key, c.values, c.not_values
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1].lower()
        return _field(_header_getter(name), values, not_values, star_present=True)
    if key == "source.ip":
        return _ip_field(_source_ip, values, not_values)
    if key == "remote.ip":
        return _ip_field(_remote_ip, values, not_values)
    if key == "destination.ip":
        return _ip_field(_destination_ip, values, not_values)
    if key == "source.namespace":
        return _field(_get_namespace, values, not_values)
    if key == "source.principal":
        return _field(_get_principal, principals.expand(values), principals.expand(not_values))
    if key == "source.serviceAccount":
        return _field(_get_service_account, values, not_values)
    if key == "destination.port":
        return _field(_get_port, values, not_values)
    if key == "connection.sni":
        return _field(_get_sni, values, not_values)
    raise ValueError(f"unsupported condition key {key!r}")  # validation refuses it before


def _rule_pred(r: AuthorizationRule, principals: _Principals) -> Pred:
    parts: list[Pred | None] = []
    if r.sources:
        parts.append(_any([_source_pred(s, principals) for s in r.sources]))
    if r.operations:
        parts.append(_any([_operation_pred(o) for o in r.operations]))
    parts += [_condition_pred(c, principals) for c in r.conditions]
    return _all(parts)


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str  # ns/name
    rules: tuple[Pred, ...]

    def first_match(self, req: AuthzRequest, ident: _Identity) -> int | None:
        for i, rule in enumerate(self.rules):
            if rule(req, ident):
                return i
        return None


@dataclass(frozen=True, slots=True)
class Authorizer:
    """The AuthorizationPolicies of one workload, compiled; `evaluate` decides a request.

    Build with `Authorizer.compile` once per configuration snapshot. `enforcing` is False when
    no policy applies (every request is allowed: a server may skip building the request).
    """

    deny: tuple[_Compiled, ...] = ()
    allow: tuple[_Compiled, ...] = ()
    audit: tuple[_Compiled, ...] = ()

    @classmethod
    def compile(
        cls,
        policies: Iterable[AuthorizationPolicy],
        *,
        namespace: str,
        labels: Mapping[str, str],
        root_namespace: str = DEFAULT_ROOT_NAMESPACE,
        trust_domain: str = _LOCAL_TRUST_DOMAIN,
        trust_domain_aliases: Sequence[str] = (),
    ) -> Authorizer:
        """Select the policies that apply to the workload (namespace, labels) and compile
        them. A whole ConfigSet's AuthorizationPolicies can be passed."""
        principals = _Principals(trust_domain, trust_domain_aliases)
        by_action: dict[str, list[_Compiled]] = {"DENY": [], "ALLOW": [], "AUDIT": []}
        for p in policies:
            if not policy_applies(p, namespace, labels, root_namespace):
                continue
            rules = tuple(_rule_pred(r, principals) for r in p.rules)
            by_action[p.action].append(_Compiled(f"{p.meta.namespace}/{p.meta.name}", rules))
        return cls(tuple(by_action["DENY"]), tuple(by_action["ALLOW"]), tuple(by_action["AUDIT"]))

    @property
    def enforcing(self) -> bool:
        """Whether any policy applies (else every request is allowed)."""
        return bool(self.deny or self.allow or self.audit)

    def evaluate(self, req: AuthzRequest) -> AuthzDecision:
        """Istio's decision for `req`: DENY first, then ALLOW; AUDIT reported in `audit`."""
        ident = _identity(req.principal) if req.principal else _NO_IDENTITY
        audit: tuple[str, ...] = ()
        if self.audit:
            audit = tuple(p.name for p in self.audit if p.first_match(req, ident) is not None)
        for p in self.deny:
            i = p.first_match(req, ident)
            if i is not None:
                return AuthzDecision(False, "DENY", p.name, i, audit)
        if not self.allow:
            return AuthzDecision(True, "NO_ALLOW_POLICY", None, None, audit)
        for p in self.allow:
            i = p.first_match(req, ident)
            if i is not None:
                return AuthzDecision(True, "ALLOW", p.name, i, audit)
        return AuthzDecision(False, "NO_ALLOW_MATCH", None, None, audit)

    def __repr__(self) -> str:
        def names(ps: tuple[_Compiled, ...]) -> str:
            return "[" + ", ".join(p.name for p in ps) + "]"

        return (
            f"Authorizer(deny={names(self.deny)}, allow={names(self.allow)}, "
            f"audit={names(self.audit)})"
        )
