"""The inbound decision every server adapter shares: ASGI, WSGI, FastAPI, Django, the proxy.

An adapter converts its native request once into an `InboundRequest` and asks
`InboundPolicy.check`, which applies, in Envoy's order: PeerAuthentication (is this transport
admitted, may its identity be used), header hygiene (NUL/CR/LF → 400; repeated headers folded
once, the same way for authorization and the app; identity headers from the network dropped),
path normalization from the RAW path (what authorization sees is what the app routes),
AuthorizationPolicy (DENY, then ALLOW; denied → 403 `RBAC: access denied`, the policy's name
goes to the log only), then CORS (Istio puts Envoy's cors filter after RBAC): the
`corsPolicy` of the first `http[]` rule, of the VirtualService for this workload's own service
host, whose match holds; an allowed preflight is answered 200 here, an actual request carries
the headers to add to its response (`InboundVerdict.response_headers`). The verdict says what
to answer, or what the app receives.

Decisions live in `pymesh.policy` (`peerauthn`, `inbound_headers`, `paths`, `authz`, `cors`);
this module only strings them together, so sync and async adapters cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

from pymesh.config.hosts import canonical_host
from pymesh.config.model import (
    AuthorizationPolicy,
    AuthorizationRule,
    ConfigSet,
    PeerAuthentication,
    VirtualService,
)
from pymesh.policy.authz import DENIED_BODY, DENIED_STATUS, Authorizer, AuthzDecision, AuthzRequest
from pymesh.policy.cors import PREFLIGHT_STATUS, CorsRules, compile_cors, decide
from pymesh.policy.inbound_headers import (
    UNTRUSTED_HEADERS,
    UNTRUSTED_PREFIXES,
    CleanHeaders,
    HeaderRejection,
    clean_headers,
)
from pymesh.policy.paths import (
    DEFAULT_PATH_OPTIONS,
    NormalizedPath,
    PathOptions,
    PathRejection,
    normalize_path,
)
from pymesh.policy.peerauthn import DEFAULT_ROOT_NAMESPACE, PeerAuthnPolicy, admit
from pymesh.policy.routing import Predicate, compile_rule_matches, first_match

Transport = Literal["plaintext", "tls", "mtls"]
CorsTable = tuple[tuple[Predicate, CorsRules | None], ...]


_MEMO_SIZE = 4096
_REQUEST_DATA_KEYS = ("request.", "source.ip", "remote.ip", "destination.ip", "connection.")


def _reads_request_data(rule: AuthorizationRule) -> bool:
    """Whether a rule reads more than method, path, host, port and peer (headers, addresses,
    SNI) — then its decisions cannot be memoized by those alone."""
    for s in rule.sources:
        if s.ip_blocks or s.not_ip_blocks or s.remote_ip_blocks or s.not_remote_ip_blocks:
            return True
    return any(c.key.startswith(_REQUEST_DATA_KEYS) for c in rule.conditions)


def _host_of(items: list[tuple[bytes, bytes]], name: bytes) -> str:
    """The Host header from cleaned pairs, without decoding the others."""
    for n, v in items:
        if n == name:
            return v.decode("latin-1")
    return ""


class InboundRequest(NamedTuple):
    """One request as the inbound policy reads it (built once by the adapter)."""

    method: str
    target: bytes  # the raw request target: path and query exactly as received
    headers: Iterable[tuple[bytes, bytes]]  # lower-case names, raw values, as received
    port: int  # the port the workload was called on
    transport: Transport
    peer: str | None = None  # the verified SPIFFE ID of an mTLS peer
    source_ip: str = ""
    destination_ip: str = ""
    sni: str = ""


class InboundVerdict(NamedTuple):
    """What to do with a request: answer `status` with `body` (and `location`), or serve it
    with `path` and `headers` as normalized, and `peer` as the identity the app may trust.
    `response_headers` go on the answer, or are added to the app's response (CORS): an
    adapter replaces the app's own values of those names, except `vary`, which it adds."""

    status: int | None
    body: bytes = b""
    reason: str = ""  # for the log, never for the caller
    path: NormalizedPath | None = None
    headers: CleanHeaders | None = None
    peer: str | None = None
    authz: AuthzDecision | None = None
    location: str | None = None
    response_headers: tuple[tuple[str, str], ...] = ()

    @property
    def served(self) -> bool:
        """Whether the request goes to the app."""
        return self.status is None

    @property
    def refused(self) -> bool:
        """Whether the request was refused (not served, and not a CORS preflight answer)."""
        return self.status is not None and self.reason != CORS_PREFLIGHT


CORS_PREFLIGHT = "cors preflight"


class _CorsRoute:
    """The inbound request as route matching reads it (built only when CORS rules exist)."""

    __slots__ = ("_headers", "authority", "method", "path", "port", "query", "scheme")

    def __init__(
        self, req: InboundRequest, path: NormalizedPath, headers: CleanHeaders, host: str
    ) -> None:
        self.method = req.method
        self.path = path.path
        self.query = path.query
        self.authority = host
        self.scheme = "http" if req.transport == "plaintext" else "https"
        self.port = req.port
        self._headers = headers

    def header(self, name: str) -> str | None:
        """The (folded) value of lower-case header `name`, or None."""
        return self._headers.values.get(name)


def compile_cors_table(config: ConfigSet, service_host: str) -> CorsTable | None:
    """The (match, CORS rules) table of the first VirtualService whose `hosts` include
    `service_host` (canonical), one entry per `http[]` rule in order; None when no rule of it
    has a `corsPolicy` (then CORS costs nothing). Match blocks that name the caller
    (`sourceLabels`, `sourceNamespace`) cannot be checked on the inbound side: they never match."""
    for vs in config.resources:
        if not isinstance(vs, VirtualService):
            continue
        if service_host not in (canonical_host(h, vs.meta.namespace) for h in vs.hosts):
            continue
        if not any(rule.cors_policy is not None for rule in vs.http):
            return None
        table: list[tuple[Predicate, CorsRules | None]] = []
        for rule in vs.http:
            pred = compile_rule_matches(rule.match, {}, "")
            if pred is not None:
                rules = compile_cors(rule.cors_policy) if rule.cors_policy is not None else None
                table.append((pred, rules))
        return tuple(table)
    return None


class InboundPolicy:
    """The inbound policy of one workload for one configuration snapshot."""

    def __init__(
        self,
        peer_authn: PeerAuthnPolicy,
        authorizer: Authorizer,
        *,
        path_options: PathOptions = DEFAULT_PATH_OPTIONS,
        host_header: str = "host",
        decisions_need_request_data: bool = True,
        cors: CorsTable | None = None,
    ) -> None:
        self.peer_authn = peer_authn
        self.authorizer = authorizer
        self.path_options = path_options
        self._host = host_header
        self._host_b = host_header.encode("latin-1")
        self._cors = cors
        # Memos (bounded; a snapshot builds a new policy, so they never outlive the config):
        # normalization depends on the raw target alone; a decision depends on the request
        # line, host, port and peer alone unless some rule reads headers or addresses.
        self._paths: dict[bytes, NormalizedPath | PathRejection] = {}
        self._decisions: dict[tuple[str, str, str, int, str | None], AuthzDecision] | None = (
            None if decisions_need_request_data else {}
        )

    @classmethod
    def compile(
        cls,
        config: ConfigSet,
        *,
        namespace: str,
        labels: Mapping[str, str],
        trust_domain: str = "cluster.local",
        root_namespace: str = DEFAULT_ROOT_NAMESPACE,
        path_options: PathOptions = DEFAULT_PATH_OPTIONS,
        service_host: str | None = None,
    ) -> InboundPolicy:
        """Select and compile the PeerAuthentications and AuthorizationPolicies of `config`
        that apply to the workload (namespace, labels), and the CORS policies of the
        VirtualService for `service_host` (the workload's canonical service host; None: no
        CORS)."""
        pas = [r for r in config.resources if isinstance(r, PeerAuthentication)]
        aps = [r for r in config.resources if isinstance(r, AuthorizationPolicy)]
        needs_data = any(_reads_request_data(rule) for p in aps for rule in p.rules)
        return cls(
            PeerAuthnPolicy.compile(
                pas, namespace=namespace, labels=labels, root_namespace=root_namespace
            ),
            Authorizer.compile(
                aps,
                namespace=namespace,
                labels=labels,
                root_namespace=root_namespace,
                trust_domain=trust_domain,
            ),
            path_options=path_options,
            decisions_need_request_data=needs_data,
            cors=None if service_host is None else compile_cors_table(config, service_host),
        )

    def check(self, req: InboundRequest) -> InboundVerdict:
        """Decide one request."""
        admission = admit(self.peer_authn.mode_for(req.port), req.transport)
        if not admission.allowed:
            return InboundVerdict(
                403, b"peer authentication: mutual TLS required", admission.reason
            )
        peer = req.peer if admission.use_identity else None
        headers = clean_headers(
            req.headers, drop=UNTRUSTED_HEADERS, drop_prefixes=UNTRUSTED_PREFIXES
        )
        if isinstance(headers, HeaderRejection):
            return InboundVerdict(headers.status, b"bad request headers", headers.reason)
        path = self._paths.get(req.target)
        if path is None:
            path = normalize_path(req.target, self.path_options)
            if len(self._paths) >= _MEMO_SIZE:
                self._paths.clear()
            self._paths[req.target] = path
        if isinstance(path, PathRejection):
            return InboundVerdict(path.status, b"bad request path", path.reason)
        if path.redirect:
            return InboundVerdict(
                307, b"", "escaped slashes redirected", path=path, location=path.target
            )
        decision = None
        if self.authorizer.enforcing:
            host = _host_of(headers.items, self._host_b)
            memo = self._decisions
            key = (req.method, path.path, host, req.port, peer)
            decision = memo.get(key) if memo is not None else None
            if decision is None:
                decision = self._evaluate(req, path, headers, host, peer)
                if memo is not None:
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    memo[key] = decision
            if not decision.allowed:
                return InboundVerdict(
                    DENIED_STATUS, DENIED_BODY, decision.reason, path, headers, peer, decision
                )
        if self._cors is not None:
            return self._cors_verdict(req, path, headers, peer, decision)
        return InboundVerdict(None, b"", "", path, headers, peer, decision)

    def _cors_verdict(
        self,
        req: InboundRequest,
        path: NormalizedPath,
        headers: CleanHeaders,
        peer: str | None,
        decision: AuthzDecision | None,
    ) -> InboundVerdict:
        assert self._cors is not None
        values = headers.values
        origin = values.get("origin")
        answer = None
        if origin:
            route = _CorsRoute(req, path, headers, values.get(self._host, ""))
            rules = first_match(self._cors, route)
            if rules is not None:
                answer = decide(
                    rules,
                    req.method,
                    origin,
                    values.get("access-control-request-method"),
                    values.get("access-control-request-headers"),
                )
        if answer is None:
            return InboundVerdict(None, b"", "", path, headers, peer, decision)
        if answer.preflight:
            return InboundVerdict(
                PREFLIGHT_STATUS,
                b"",
                CORS_PREFLIGHT,
                path,
                headers,
                peer,
                decision,
                response_headers=answer.headers,
            )
        return InboundVerdict(
            None, b"", "", path, headers, peer, decision, response_headers=answer.headers
        )

    def _evaluate(
        self,
        req: InboundRequest,
        path: NormalizedPath,
        headers: CleanHeaders,
        host: str,
        peer: str | None,
    ) -> AuthzDecision:
        return self.authorizer.evaluate(
            AuthzRequest(
                method=req.method,
                path=path.path,
                host=host,
                headers=headers.values,
                port=req.port,
                source_ip=req.source_ip,
                principal=peer,
                destination_ip=req.destination_ip,
                sni=req.sni,
            )
        )

    def __repr__(self) -> str:
        return f"InboundPolicy({self.peer_authn!r}, {self.authorizer!r})"
