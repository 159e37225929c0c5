"""The inbound decision every server adapter shares: ASGI, WSGI, FastAPI, Django, the proxy.

An adapter converts its native request once into an `InboundRequest` and asks
`InboundPolicy.check`, which applies, in Envoy's order: PeerAuthentication (is this transport
admitted, may its identity be used), header hygiene (NUL/CR/LF → 400; repeated headers folded
once, the same way for authorization and the app; identity headers from the network dropped),
path normalization from the RAW path (what authorization sees is what the app routes), and
AuthorizationPolicy (DENY, then ALLOW; denied → 403 `RBAC: access denied`, the policy's name
goes to the log only). The verdict says what to answer, or what the app receives.

Decisions live in `pymesh.policy` (`peerauthn`, `inbound_headers`, `paths`, `authz`); this
module only strings them together, so sync and async adapters cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

from pymesh.config.model import AuthorizationPolicy, ConfigSet, PeerAuthentication
from pymesh.policy.authz import DENIED_BODY, DENIED_STATUS, Authorizer, AuthzDecision, AuthzRequest
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

Transport = Literal["plaintext", "tls", "mtls"]


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
    with `path` and `headers` as normalized, and `peer` as the identity the app may trust."""

    status: int | None
    body: bytes = b""
    reason: str = ""  # for the log, never for the caller
    path: NormalizedPath | None = None
    headers: CleanHeaders | None = None
    peer: str | None = None
    authz: AuthzDecision | None = None
    location: str | None = None

    @property
    def served(self) -> bool:
        """Whether the request goes to the app."""
        return self.status is None


class InboundPolicy:
    """The inbound policy of one workload for one configuration snapshot."""

    def __init__(
        self,
        peer_authn: PeerAuthnPolicy,
        authorizer: Authorizer,
        *,
        path_options: PathOptions = DEFAULT_PATH_OPTIONS,
        host_header: str = "host",
    ) -> None:
        self.peer_authn = peer_authn
        self.authorizer = authorizer
        self.path_options = path_options
        self._host = host_header

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
    ) -> InboundPolicy:
        """Select and compile the PeerAuthentications and AuthorizationPolicies of `config`
        that apply to the workload (namespace, labels)."""
        pas = [r for r in config.resources if isinstance(r, PeerAuthentication)]
        aps = [r for r in config.resources if isinstance(r, AuthorizationPolicy)]
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
        path = normalize_path(req.target, self.path_options)
        if isinstance(path, PathRejection):
            return InboundVerdict(path.status, b"bad request path", path.reason)
        if path.redirect:
            return InboundVerdict(
                307, b"", "escaped slashes redirected", path=path, location=path.target
            )
        decision = None
        if self.authorizer.enforcing:
            decision = self.authorizer.evaluate(
                AuthzRequest(
                    method=req.method,
                    path=path.path,
                    host=headers.values.get(self._host, ""),
                    headers=headers.values,
                    port=req.port,
                    source_ip=req.source_ip,
                    principal=peer,
                    destination_ip=req.destination_ip,
                    sni=req.sni,
                )
            )
            if not decision.allowed:
                return InboundVerdict(
                    DENIED_STATUS, DENIED_BODY, decision.reason, path, headers, peer, decision
                )
        return InboundVerdict(None, b"", "", path, headers, peer, decision)

    def __repr__(self) -> str:
        return f"InboundPolicy({self.peer_authn!r}, {self.authorizer!r})"
