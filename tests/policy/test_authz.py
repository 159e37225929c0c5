"""AuthorizationPolicy evaluation as Istio does it: tables per rule, the traversal wordlist
against a DENY on /private/*, and the CVE inputs that concern paths, hosts and headers."""

from __future__ import annotations

import json
import posixpath
import textwrap
from urllib.parse import quote

import pytest

from pymesh.config import load_text
from pymesh.config.model import AuthorizationPolicy
from pymesh.policy.authz import (
    DENIED_BODY,
    DENIED_STATUS,
    Authorizer,
    AuthzDecision,
    AuthzRequest,
    policy_applies,
)
from pymesh.policy.inbound_headers import CleanHeaders, clean_headers
from pymesh.policy.paths import NormalizedPath, PathRejection, normalize_path
from tests.helpers import shared_data

WORDLIST = shared_data("istio-traversal-wordlist.txt")
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
ADMIN = "spiffe://cluster.local/ns/ops/sa/admin"


def policies(*docs: str) -> list[AuthorizationPolicy]:
    """AuthorizationPolicies from YAML documents (`name ns action` header line + spec)."""
    texts = []
    for doc in docs:
        head, _, spec = textwrap.dedent(doc).strip("\n").partition("\n")
        name, ns, action = head.split()
        spec = "" if spec.strip() == "{}" else spec  # `spec: {}`: the action alone
        texts.append(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  action: {action}\n"
            + textwrap.indent(spec, "  ")
        )
    cs = load_text("\n---\n".join(texts))
    return [r for r in cs.resources if isinstance(r, AuthorizationPolicy)]


def authorizer(*docs: str, ns: str = "default", labels: dict[str, str] | None = None) -> Authorizer:
    return Authorizer.compile(policies(*docs), namespace=ns, labels=labels or {"app": "web"})


def req(
    path: str = "/",
    *,
    method: str = "GET",
    host: str = "web.default.svc.cluster.local",
    headers: dict[str, str] | None = None,
    port: int = 8080,
    source_ip: str = "10.1.2.3",
    principal: str | None = SLEEP,
    remote_ip: str = "",
    destination_ip: str = "10.9.9.9",
    sni: str = "",
) -> AuthzRequest:
    return AuthzRequest(
        method,
        path,
        host,
        headers or {},
        port,
        source_ip,
        principal,
        remote_ip,
        destination_ip,
        sni,
    )


# ---------------------------------------------------------------------------------------------
# Evaluation order


def test_no_policy_allows_everything() -> None:
    a = Authorizer.compile([], namespace="default", labels={})
    assert not a.enforcing
    assert a.evaluate(req()) == AuthzDecision(True, "NO_ALLOW_POLICY")


def test_allow_nothing_denies_everything() -> None:
    # `spec: {}` is an ALLOW policy without rules: nothing matches, so everything is denied
    a = authorizer("allow-nothing default ALLOW\n{}")
    d = a.evaluate(req())
    assert d == AuthzDecision(False, "NO_ALLOW_MATCH")
    assert d.reason == "denied: no ALLOW policy matched"


def test_allow_all_with_an_empty_rule() -> None:
    a = authorizer("allow-all default ALLOW\nrules:\n- {}")
    assert a.evaluate(req(principal=None)) == AuthzDecision(True, "ALLOW", "default/allow-all", 0)


def test_deny_without_rules_denies_nothing() -> None:
    a = authorizer("deny-none default DENY\n{}")
    assert a.evaluate(req()).allowed


def test_deny_wins_over_allow() -> None:
    a = authorizer(
        "allow-all default ALLOW\nrules:\n- {}",
        "deny-admin default DENY\nrules:\n- to:\n  - operation: {paths: [/admin/*]}",
    )
    d = a.evaluate(req("/admin/users"))
    assert d == AuthzDecision(False, "DENY", "default/deny-admin", 0)
    assert d.reason == "denied by DENY policy default/deny-admin rule 0"
    assert a.evaluate(req("/public")).allowed


def test_allow_policies_but_none_matches() -> None:
    a = authorizer("get-only default ALLOW\nrules:\n- to:\n  - operation: {methods: [GET]}")
    assert a.evaluate(req(method="GET")).allowed
    assert a.evaluate(req(method="POST")) == AuthzDecision(False, "NO_ALLOW_MATCH")


def test_rule_index_reported() -> None:
    a = authorizer(
        """
        p default ALLOW
        rules:
        - to: [{operation: {paths: [/a]}}]
        - to: [{operation: {paths: [/b]}}]
        """
    )
    assert a.evaluate(req("/b")) == AuthzDecision(True, "ALLOW", "default/p", 1)


def test_audit_reported_without_affecting_the_decision() -> None:
    a = authorizer(
        "audit-get default AUDIT\nrules:\n- to: [{operation: {methods: [GET]}}]",
        "audit-post default AUDIT\nrules:\n- to: [{operation: {methods: [POST]}}]",
        "deny-x default DENY\nrules:\n- to: [{operation: {paths: [/x]}}]",
    )
    assert a.evaluate(req("/")) == AuthzDecision(
        True, "NO_ALLOW_POLICY", audit=("default/audit-get",)
    )
    d = a.evaluate(req("/x"))
    assert not d.allowed and d.audit == ("default/audit-get",)
    assert a.enforcing


def test_denied_answer_constants() -> None:
    assert DENIED_STATUS == 403 and DENIED_BODY == b"RBAC: access denied"


# ---------------------------------------------------------------------------------------------
# Selection


@pytest.mark.parametrize(
    ("ns", "selector", "workload_ns", "labels", "applies"),
    [
        ("default", None, "default", {"app": "web"}, True),
        ("default", None, "prod", {"app": "web"}, False),
        ("default", {"app": "web"}, "default", {"app": "web", "v": "1"}, True),
        ("default", {"app": "web"}, "default", {"app": "api"}, False),
        ("default", {"app": "web", "v": "2"}, "default", {"app": "web", "v": "1"}, False),
        ("istio-system", None, "prod", {"app": "web"}, True),  # mesh-wide
        ("istio-system", {"app": "web"}, "prod", {"app": "web"}, True),  # mesh-wide, selected
        ("istio-system", {"app": "web"}, "prod", {"app": "api"}, False),
    ],
)
def test_policy_selection(
    ns: str,
    selector: dict[str, str] | None,
    workload_ns: str,
    labels: dict[str, str],
    applies: bool,
) -> None:
    sel = f"selector: {{matchLabels: {json.dumps(selector)}}}\n" if selector else ""
    (p,) = policies(f"p {ns} ALLOW\n{sel}rules:\n- {{}}")
    assert policy_applies(p, workload_ns, labels) is applies
    a = Authorizer.compile([p], namespace=workload_ns, labels=labels)
    assert a.enforcing is applies


def test_root_namespace_is_configurable() -> None:
    ps = policies("deny-all mesh-root DENY\nrules:\n- {}")
    a = Authorizer.compile(ps, namespace="default", labels={}, root_namespace="mesh-root")
    assert not a.evaluate(req()).allowed
    b = Authorizer.compile(ps, namespace="default", labels={})
    assert b.evaluate(req()).allowed


def test_empty_match_labels_selects_every_workload() -> None:
    (p,) = policies("p default DENY\nselector: {matchLabels: {}}\nrules:\n- {}")
    assert p.selector is None
    assert policy_applies(p, "default", {"any": "thing"})


# ---------------------------------------------------------------------------------------------
# Rule structure: from / to / when, lists OR-ed, fields AND-ed


STRUCTURE = """
p default ALLOW
rules:
- from:
  - source: {namespaces: [default], ipBlocks: [10.0.0.0/8]}
  - source: {principals: [cluster.local/ns/ops/sa/admin]}
  to:
  - operation: {methods: [GET], paths: [/api/*]}
  - operation: {methods: [POST], paths: [/api/write]}
  when:
  - key: request.headers[x-tenant]
    values: [acme]
  - key: destination.port
    values: ["8080"]
"""


@pytest.mark.parametrize(
    ("request_", "allowed"),
    [
        (req("/api/x", headers={"x-tenant": "acme"}), True),
        (req("/api/write", method="POST", headers={"x-tenant": "acme"}), True),
        (req("/api/x", method="POST", headers={"x-tenant": "acme"}), False),  # op fields AND
        (req("/api/x", headers={"x-tenant": "other"}), False),  # when fails
        (req("/api/x"), False),  # header absent
        (req("/api/x", headers={"x-tenant": "acme"}, port=9090), False),  # all when AND-ed
        (req("/api/x", headers={"x-tenant": "acme"}, source_ip="192.168.0.1"), False),
        (
            req("/api/x", headers={"x-tenant": "acme"}, source_ip="192.168.0.1", principal=ADMIN),
            True,
        ),
        (req("/api/x", headers={"x-tenant": "acme"}, principal=None), False),  # no identity
        (req("/other", headers={"x-tenant": "acme"}), False),
    ],
)
def test_rule_structure(request_: AuthzRequest, allowed: bool) -> None:
    assert authorizer(STRUCTURE).evaluate(request_).allowed is allowed


# ---------------------------------------------------------------------------------------------
# String matching per field: (operation or source YAML, request, matches)

A, B = "cluster.local/ns/default/sa/sleep", "cluster.local/ns/ops/sa/admin"

MATCH_TABLE: list[tuple[str, str, AuthzRequest, bool]] = [
    # paths: exact, prefix, suffix, presence; matched against the normalized path, no query
    ("paths-exact", "to: [{operation: {paths: [/info]}}]", req("/info"), True),
    ("paths-exact-no", "to: [{operation: {paths: [/info]}}]", req("/info/"), False),
    ("paths-prefix", "to: [{operation: {paths: [/info/*]}}]", req("/info/x/y"), True),
    ("paths-prefix-bare", "to: [{operation: {paths: [/info/*]}}]", req("/info"), False),
    ("paths-prefix-abc", "to: [{operation: {paths: [/inf*]}}]", req("/info"), True),
    ("paths-suffix", "to: [{operation: {paths: ['*.html']}}]", req("/a/b.html"), True),
    ("paths-suffix-no", "to: [{operation: {paths: ['*.html']}}]", req("/a/b.htm"), False),
    ("paths-star", "to: [{operation: {paths: ['*']}}]", req("/"), True),
    ("paths-query", "to: [{operation: {paths: [/secret]}}]", req("/secret?x=1"), True),
    ("paths-case", "to: [{operation: {paths: [/admin]}}]", req("/Admin"), False),
    ("notPaths", "to: [{operation: {notPaths: [/health]}}]", req("/health"), False),
    ("notPaths-other", "to: [{operation: {notPaths: [/health]}}]", req("/x"), True),
    # methods: exact, case-sensitive
    ("methods", "to: [{operation: {methods: [GET, HEAD]}}]", req(method="HEAD"), True),
    ("methods-case", "to: [{operation: {methods: [GET]}}]", req(method="get"), False),
    ("notMethods", "to: [{operation: {notMethods: [DELETE]}}]", req(method="DELETE"), False),
    # hosts: case-insensitive, port and trailing dot ignored
    ("hosts", "to: [{operation: {hosts: [secret.com]}}]", req(host="Secret.COM"), True),
    ("hosts-port", "to: [{operation: {hosts: [secret.com]}}]", req(host="secret.com:8080"), True),
    (
        "hosts-port-star",
        "to: [{operation: {hosts: ['secret.com:*']}}]",
        req(host="secret.com:80"),
        True,
    ),
    ("hosts-dot", "to: [{operation: {hosts: [secret.com]}}]", req(host="secret.com."), True),
    (
        "hosts-suffix",
        "to: [{operation: {hosts: ['*.example.com']}}]",
        req(host="A.Example.com:443"),
        True,
    ),
    ("hosts-prefix", "to: [{operation: {hosts: ['api.*']}}]", req(host="API.svc"), True),
    ("hosts-ipv6", "to: [{operation: {hosts: ['[::1]']}}]", req(host="[::1]:8080"), True),
    ("hosts-no", "to: [{operation: {hosts: [secret.com]}}]", req(host="secret.com.evil"), False),
    ("hosts-absent", "to: [{operation: {hosts: ['*']}}]", req(host=""), False),
    ("notHosts", "to: [{operation: {notHosts: [Secret.com]}}]", req(host="SECRET.com:1"), False),
    # ports: the port the workload was called on, as strings
    ("ports", "to: [{operation: {ports: ['8080']}}]", req(port=8080), True),
    ("ports-no", "to: [{operation: {ports: ['8080']}}]", req(port=9090), False),
    ("notPorts", "to: [{operation: {notPorts: ['8080']}}]", req(port=8080), False),
    # principals: SPIFFE ID without spiffe://; plaintext peers have none
    ("principals", f"from: [{{source: {{principals: [{A}]}}}}]", req(), True),
    ("principals-other", f"from: [{{source: {{principals: [{B}]}}}}]", req(), False),
    (
        "principals-plaintext",
        f"from: [{{source: {{principals: [{A}]}}}}]",
        req(principal=None),
        False,
    ),
    ("principals-star", "from: [{source: {principals: ['*']}}]", req(), True),
    ("principals-star-plain", "from: [{source: {principals: ['*']}}]", req(principal=None), False),
    (
        "principals-prefix",
        "from: [{source: {principals: [cluster.local/ns/default/*]}}]",
        req(),
        True,
    ),
    ("principals-suffix", "from: [{source: {principals: ['*/sa/sleep']}}]", req(), True),
    ("notPrincipals", f"from: [{{source: {{notPrincipals: [{A}]}}}}]", req(), False),
    (
        "notPrincipals-plain",
        f"from: [{{source: {{notPrincipals: [{A}]}}}}]",
        req(principal=None),
        True,
    ),
    # namespaces: from the peer's SPIFFE ID
    ("namespaces", "from: [{source: {namespaces: [default]}}]", req(), True),
    ("namespaces-no", "from: [{source: {namespaces: [ops]}}]", req(), False),
    ("namespaces-prefix", "from: [{source: {namespaces: ['def*']}}]", req(), True),
    ("namespaces-plain", "from: [{source: {namespaces: ['*']}}]", req(principal=None), False),
    (
        "namespaces-odd-id",
        "from: [{source: {namespaces: ['*']}}]",
        req(principal="spiffe://td/x"),
        False,
    ),
    ("notNamespaces", "from: [{source: {notNamespaces: [default]}}]", req(), False),
    (
        "notNamespaces-plain",
        "from: [{source: {notNamespaces: [default]}}]",
        req(principal=None),
        True,
    ),
    # serviceAccounts: ns/name (name alone: the policy's namespace)
    ("serviceAccounts", "from: [{source: {serviceAccounts: [default/sleep]}}]", req(), True),
    ("serviceAccounts-local", "from: [{source: {serviceAccounts: [sleep]}}]", req(), True),
    ("serviceAccounts-no", "from: [{source: {serviceAccounts: [ops/sleep]}}]", req(), False),
    ("notServiceAccounts", "from: [{source: {notServiceAccounts: [sleep]}}]", req(), False),
    # ipBlocks: the connection's peer; remoteIpBlocks: the original client
    ("ipBlocks", "from: [{source: {ipBlocks: [10.1.0.0/16]}}]", req(), True),
    ("ipBlocks-single", "from: [{source: {ipBlocks: [10.1.2.3]}}]", req(), True),
    ("ipBlocks-no", "from: [{source: {ipBlocks: [10.2.0.0/16]}}]", req(), False),
    ("ipBlocks-v6", "from: [{source: {ipBlocks: ['fd00::/8']}}]", req(source_ip="fd00::1"), True),
    (
        "ipBlocks-mapped",
        "from: [{source: {ipBlocks: [10.1.0.0/16]}}]",
        req(source_ip="::ffff:10.1.2.3"),
        True,
    ),
    ("ipBlocks-v4-vs-v6", "from: [{source: {ipBlocks: ['::/0']}}]", req(), False),
    ("ipBlocks-bad-ip", "from: [{source: {ipBlocks: [0.0.0.0/0]}}]", req(source_ip="unix"), False),
    ("notIpBlocks", "from: [{source: {notIpBlocks: [10.1.2.3]}}]", req(), False),
    (
        "remoteIpBlocks",
        "from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]",
        req(remote_ip="203.0.113.9"),
        True,
    ),
    ("remoteIpBlocks-default", "from: [{source: {remoteIpBlocks: [10.1.2.3]}}]", req(), True),
    (
        "notRemoteIpBlocks",
        "from: [{source: {notRemoteIpBlocks: [203.0.113.9]}}]",
        req(remote_ip="203.0.113.9"),
        False,
    ),
]


@pytest.mark.parametrize(
    ("rule", "request_", "matches"),
    [c[1:] for c in MATCH_TABLE],
    ids=[c[0] for c in MATCH_TABLE],
)
def test_field_matching(rule: str, request_: AuthzRequest, matches: bool) -> None:
    a = authorizer(f"p default DENY\nrules:\n- {rule}")
    assert a.evaluate(request_).allowed is not matches


# when: (key, values YAML, request, matches)
WHEN_TABLE: list[tuple[str, str, str, AuthzRequest, bool]] = [
    (
        "header",
        "request.headers[X-User]",
        "values: [admin]",
        req(headers={"x-user": "admin"}),
        True,
    ),
    (
        "header-case",
        "request.headers[x-user]",
        "values: [admin]",
        req(headers={"x-user": "Admin"}),
        False,
    ),
    ("header-absent", "request.headers[x-user]", "values: [admin]", req(), False),
    (
        "header-present",
        "request.headers[x-user]",
        "values: ['*']",
        req(headers={"x-user": ""}),
        True,
    ),
    ("header-present-no", "request.headers[x-user]", "values: ['*']", req(), False),
    (
        "header-prefix",
        "request.headers[x-user]",
        "values: [adm*]",
        req(headers={"x-user": "admin"}),
        True,
    ),
    (
        "header-suffix",
        "request.headers[x-user]",
        "values: ['*min']",
        req(headers={"x-user": "admin"}),
        True,
    ),
    (
        "header-not",
        "request.headers[x-user]",
        "notValues: [admin]",
        req(headers={"x-user": "admin"}),
        False,
    ),
    ("header-not-absent", "request.headers[x-user]", "notValues: [admin]", req(), True),
    (
        "header-both",
        "request.headers[x-user]",
        "values: ['a*']\n    notValues: [admin]",
        req(headers={"x-user": "alice"}),
        True,
    ),
    (
        "header-both-no",
        "request.headers[x-user]",
        "values: ['a*']\n    notValues: [admin]",
        req(headers={"x-user": "admin"}),
        False,
    ),
    ("source.ip", "source.ip", "values: [10.0.0.0/8]", req(), True),
    ("source.ip-not", "source.ip", "notValues: [10.0.0.0/8]", req(), False),
    ("remote.ip", "remote.ip", "values: [203.0.113.9]", req(remote_ip="203.0.113.9"), True),
    ("destination.ip", "destination.ip", "values: [10.9.9.0/24]", req(), True),
    ("destination.ip-no", "destination.ip", "values: [10.9.8.0/24]", req(), False),
    ("source.namespace", "source.namespace", "values: [default]", req(), True),
    ("source.namespace-plain", "source.namespace", "values: [default]", req(principal=None), False),
    ("source.principal", "source.principal", f"values: [{A}]", req(), True),
    ("source.principal-no", "source.principal", f"values: [{B}]", req(), False),
    ("source.serviceAccount", "source.serviceAccount", "values: [default/sleep]", req(), True),
    ("destination.port", "destination.port", "values: ['8080']", req(), True),
    ("destination.port-no", "destination.port", "values: ['80']", req(), False),
    (
        "connection.sni",
        "connection.sni",
        "values: ['*.example.com']",
        req(sni="a.example.com"),
        True,
    ),
    ("connection.sni-absent", "connection.sni", "values: ['*']", req(), False),
]


@pytest.mark.parametrize(
    ("key", "values", "request_", "matches"),
    [c[1:] for c in WHEN_TABLE],
    ids=[c[0] for c in WHEN_TABLE],
)
def test_when_conditions(key: str, values: str, request_: AuthzRequest, matches: bool) -> None:
    a = authorizer(f"p default DENY\nrules:\n- when:\n  - key: {key}\n    {values}")
    assert a.evaluate(request_).allowed is not matches


def test_trust_domain_aliases() -> None:
    ps = policies(f"p default ALLOW\nrules:\n- from: [{{source: {{principals: [{A}]}}}}]")
    a = Authorizer.compile(
        ps,
        namespace="default",
        labels={},
        trust_domain="prod.example",
        trust_domain_aliases=["old.example"],
    )
    assert a.evaluate(req(principal="spiffe://prod.example/ns/default/sa/sleep")).allowed
    assert a.evaluate(req(principal="spiffe://old.example/ns/default/sa/sleep")).allowed
    assert not a.evaluate(req(principal="spiffe://other.example/ns/default/sa/sleep")).allowed
    # with the default trust domain, cluster.local means itself only
    b = Authorizer.compile(ps, namespace="default", labels={})
    assert b.evaluate(req()).allowed
    assert not b.evaluate(req(principal="spiffe://prod.example/ns/default/sa/sleep")).allowed


def test_repr_names_the_policies() -> None:
    a = authorizer("d default DENY\nrules:\n- {}", "x default ALLOW\nrules:\n- {}")
    assert repr(a) == "Authorizer(deny=[default/d], allow=[default/x], audit=[])"


# ---------------------------------------------------------------------------------------------
# The whole inbound order on raw inputs: normalize, clean headers, authorize


def inbound(
    az: Authorizer, target: str, headers: list[tuple[bytes, bytes]] | None = None, **kw: object
) -> int:
    """The status the inbound server would answer (200 when the app is called)."""
    np = normalize_path(target)
    if isinstance(np, PathRejection):
        return np.status
    clean = clean_headers(headers or [])
    if not isinstance(clean, CleanHeaders):
        return clean.status
    d = az.evaluate(req(np.path, headers=dict(clean.values), **kw))  # type: ignore[arg-type]
    return 200 if d.allowed else DENIED_STATUS


DENY_PRIVATE = authorizer(
    "deny-private default DENY\nrules:\n- to: [{operation: {paths: [/private/*]}}]"
)


def _encode_once(s: str) -> str:
    return quote(s, safe="")


def _encode_all(s: str) -> str:
    return "".join(f"%{b:02X}" for b in s.encode())


ENCODINGS = {
    "plain": lambda s: s,
    "encoded-once": _encode_once,
    "encoded-twice": lambda s: _encode_once(_encode_once(s)),
    "every-byte-once": _encode_all,
    "every-byte-twice": lambda s: _encode_all(_encode_all(s)),
}


def _app_resolves_to_private(np: NormalizedPath) -> bool:
    """Where a file-serving app would land: the decoded path it receives, dot segments
    resolved, backslashes as separators (the worst case)."""
    resolved = posixpath.normpath(np.asgi_path().replace("\\", "/"))
    return resolved == "/private" or resolved.startswith(("/private/", "//private"))


def test_traversal_wordlist_never_reaches_private() -> None:
    payloads = WORDLIST.read_text().splitlines()
    assert len(payloads) == 847
    outcomes: dict[str, int] = {}
    for encoding, encode in ENCODINGS.items():
        for payload in payloads:
            target = "/public/" + encode(payload)
            np = normalize_path(target)
            status = inbound(DENY_PRIVATE, target)
            if status == 200:
                assert isinstance(np, NormalizedPath)
                assert not _app_resolves_to_private(np), (encoding, payload, np)
                # what the app receives normalizes to itself: no second reading
                assert normalize_path(np.path) == NormalizedPath(np.path), (encoding, payload)
            key = f"{encoding}:{status}"
            outcomes[key] = outcomes.get(key, 0) + 1
    # the plain and once-encoded traversals are really denied, not just lost
    assert outcomes["plain:403"] > 150 and outcomes["encoded-once:403"] > 100
    assert outcomes["every-byte-once:403"] > 100


CVE_CASES = [
    # CVE-2019-9901: ALLOW /info/*, DENY /private*; /info/../private must not reach /private
    ("9901", "/info/../private", [], 403),
    ("9901-encoded", "/info/%2e%2e/private", [], 403),
    ("9901-allowed", "/info/x", [], 200),
    # CVE-2021-31920: slashes and escaped slashes
    ("31920-double", "//private", [], 403),
    ("31920-%2F", "/%2Fprivate", [], 403),
    ("31920-%2f", "/%2fprivate", [], 403),
    ("31920-%5C", "/%5Cprivate", [], 403),
    ("31920-trailing", "/private%2f", [], 403),
    ("31920-dots", "/app/%2E./private", [], 403),
    # CVE-2020-8595: the query and fragment are not part of the path
    ("8595-query", "/private?", [], 403),
    ("8595-fragment", "/private#", [], 403),
    # CVE-2021-39156: fragment in the path
    ("39156", "/private#section1", [], 403),
    # CVE-2026-33186: a path without the leading /
    ("33186", "private", [], 400),
    # CVE-2019-9900: NUL in a header value
    ("9900", "/info/x", [(b"x-foo", b"abc\x00_special_cluster")], 400),
    # CVE-2019-18802: trailing whitespace must not dodge an exact DENY
    ("18802-space", "/info/x", [(b"x-user", b"admin ")], 403),
    ("18802-tab", "/info/x", [(b"x-user", b"admin\t")], 403),
    # CVE-2021-32777: two header lines are one value for both readers
    ("32777", "/info/x", [(b"x-user", b"alice"), (b"x-user", b"admin")], 403),
    # NUL in the path
    ("nul", "/info/%00", [], 400),
]


@pytest.mark.parametrize(
    ("target", "headers", "status"), [c[1:] for c in CVE_CASES], ids=[c[0] for c in CVE_CASES]
)
def test_cve_inputs(target: str, headers: list[tuple[bytes, bytes]], status: int) -> None:
    az = authorizer(
        "allow-info default ALLOW\nrules:\n- to: [{operation: {paths: [/info/*, /app/*]}}]",
        "deny-private default DENY\nrules:\n- to: [{operation: {paths: [/private, /private/*]}}]",
        """
        deny-admin-user default DENY
        rules:
        - when:
          - key: request.headers[x-user]
            values: [admin, '*, admin', 'admin, *']
        """,
        """
        deny-special default DENY
        rules:
        - when:
          - key: request.headers[x-foo]
            values: ['*_special_cluster']
        """,
    )
    assert inbound(az, target, headers) == status


def test_cve_host_case_and_port() -> None:
    # CVE-2021-39155: hosts compared case-insensitively; the port ignored
    az = authorizer("deny-secret default DENY\nrules:\n- to: [{operation: {hosts: [secret.com]}}]")
    for host in ["secret.com", "Secret.com", "SECRET.COM", "secret.com:80", "Secret.com:8080"]:
        assert not az.evaluate(req(host=host)).allowed, host
    assert az.evaluate(req(host="public.com")).allowed
