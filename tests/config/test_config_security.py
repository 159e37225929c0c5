"""PeerAuthentication and AuthorizationPolicy: YAML → typed model, and every value check
with the finding it produces."""

from __future__ import annotations

import textwrap

import pytest

from pymesh.config import analyze_text, load_text
from pymesh.config.findings import Finding
from pymesh.config.model import (
    AuthorizationPolicy,
    AuthorizationRule,
    PeerAuthentication,
    RuleCondition,
    RuleOperation,
    RuleSource,
)


def _doc(kind: str, spec: str, ns: str = "default", api: str = "v1") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") if spec.strip() else "  {}"
    return (
        f"apiVersion: security.istio.io/{api}\nkind: {kind}\n"
        f"metadata: {{name: x, namespace: {ns}}}\nspec:\n{body}\n"
    )


def _one(kind: str, spec: str, ns: str = "default") -> object:
    (r,) = load_text(_doc(kind, spec, ns)).resources
    return r


# ---------------------------------------------------------------------------------------------
# Models


def test_peer_authentication_model() -> None:
    r = _one(
        "PeerAuthentication",
        """
        selector: {matchLabels: {app: reviews}}
        mtls: {mode: STRICT}
        portLevelMtls:
          8080: {mode: PERMISSIVE}
          "9090": {}
        """,
    )
    assert isinstance(r, PeerAuthentication)
    assert r.selector == {"app": "reviews"}
    assert r.mode == "STRICT"
    assert r.port_level_mtls == {8080: "PERMISSIVE", 9090: "UNSET"}
    assert r.meta.ref == "PeerAuthentication default/x"


@pytest.mark.parametrize(
    ("spec", "selector", "mode"),
    [
        ("", None, "UNSET"),
        ("mtls: {}", None, "UNSET"),
        ("mtls: {mode: DISABLE}", None, "DISABLE"),
        ("selector: {}\nmtls: {mode: PERMISSIVE}", None, "PERMISSIVE"),
        ("selector: {matchLabels: {}}", None, "UNSET"),
    ],
)
def test_peer_authentication_defaults(spec: str, selector: object, mode: str) -> None:
    r = _one("PeerAuthentication", spec)
    assert isinstance(r, PeerAuthentication)
    assert (r.selector, r.mode, r.port_level_mtls) == (selector, mode, {})


@pytest.mark.parametrize("api", ["v1", "v1beta1"])
def test_both_security_versions_are_typed(api: str) -> None:
    cs = load_text(
        _doc("AuthorizationPolicy", "", api=api)
        + "---\n"
        + _doc("PeerAuthentication", "", ns="b", api=api)
    )
    assert [type(r) for r in cs.resources] == [AuthorizationPolicy, PeerAuthentication]


def test_authorization_policy_model() -> None:
    r = _one(
        "AuthorizationPolicy",
        """
        selector: {matchLabels: {app: reviews}}
        action: DENY
        rules:
        - from:
          - source:
              principals: ["cluster.local/ns/default/sa/productpage"]
              notPrincipals: ["*/sa/evil"]
              namespaces: [prod]
              notNamespaces: ["dev-*"]
              ipBlocks: [10.0.0.0/8, 192.168.1.1]
              notIpBlocks: [10.0.0.1]
              remoteIpBlocks: ["2001:db8::/32"]
              notRemoteIpBlocks: [203.0.113.4]
          - source:
              serviceAccounts: [reader, prod/writer]
              notServiceAccounts: [prod/admin]
          to:
          - operation:
              hosts: [Reviews.Example.com, "api.example.com:*", "*.svc"]
              notHosts: [Secret.com]
              ports: ["9080"]
              notPorts: ["15000"]
              methods: [GET, HEAD]
              notMethods: [DELETE]
              paths: ["/reviews/*", "*.json", /exact]
              notPaths: [/admin]
          when:
          - key: request.headers[X-User]
            values: [admin]
          - key: source.ip
            notValues: [10.0.0.1/32]
          - key: remote.ip
            values: [203.0.113.0/24]
          - key: destination.ip
            values: [10.0.0.2]
          - key: source.namespace
            values: [prod]
          - key: source.principal
            values: [cluster.local/ns/prod/sa/a]
          - key: source.serviceAccount
            values: [a, other/b]
          - key: destination.port
            values: ["9080"]
          - key: connection.sni
            values: ["*.example.com"]
        - {}
        """,
        ns="default",
    )
    assert isinstance(r, AuthorizationPolicy)
    assert r.action == "DENY" and r.selector == {"app": "reviews"}
    rule, empty = r.rules
    assert empty == AuthorizationRule()
    assert rule.sources == (
        RuleSource(
            principals=("cluster.local/ns/default/sa/productpage",),
            not_principals=("*/sa/evil",),
            namespaces=("prod",),
            not_namespaces=("dev-*",),
            ip_blocks=("10.0.0.0/8", "192.168.1.1"),
            not_ip_blocks=("10.0.0.1",),
            remote_ip_blocks=("2001:db8::/32",),
            not_remote_ip_blocks=("203.0.113.4",),
        ),
        RuleSource(
            service_accounts=("default/reader", "prod/writer"),
            not_service_accounts=("prod/admin",),
        ),
    )
    assert rule.operations == (
        RuleOperation(
            hosts=("reviews.example.com", "api.example.com", "*.svc"),
            not_hosts=("secret.com",),
            ports=("9080",),
            not_ports=("15000",),
            methods=("GET", "HEAD"),
            not_methods=("DELETE",),
            paths=("/reviews/*", "*.json", "/exact"),
            not_paths=("/admin",),
        ),
    )
    assert rule.conditions == (
        RuleCondition("request.headers[x-user]", ("admin",)),
        RuleCondition("source.ip", (), ("10.0.0.1/32",)),
        RuleCondition("remote.ip", ("203.0.113.0/24",)),
        RuleCondition("destination.ip", ("10.0.0.2",)),
        RuleCondition("source.namespace", ("prod",)),
        RuleCondition("source.principal", ("cluster.local/ns/prod/sa/a",)),
        RuleCondition("source.serviceAccount", ("default/a", "other/b")),
        RuleCondition("destination.port", ("9080",)),
        RuleCondition("connection.sni", ("*.example.com",)),
    )


@pytest.mark.parametrize(
    ("spec", "action", "selector", "rules"),
    [
        ("", "ALLOW", None, ()),
        ("action: AUDIT\nrules: [{}]", "AUDIT", None, (AuthorizationRule(),)),
        ("selector: {matchLabels: {}}\nrules: []", "ALLOW", None, ()),
    ],
)
def test_authorization_policy_defaults(
    spec: str, action: str, selector: object, rules: tuple[AuthorizationRule, ...]
) -> None:
    r = _one("AuthorizationPolicy", spec)
    assert isinstance(r, AuthorizationPolicy)
    assert (r.action, r.selector, r.rules) == (action, selector, rules)


# ---------------------------------------------------------------------------------------------
# Findings: (id, kind, spec, code, severity, path, message part)

AP, PA = "AuthorizationPolicy", "PeerAuthentication"


def _rule(block: str) -> str:
    return "rules:\n- " + textwrap.indent(textwrap.dedent(block).strip("\n"), "  ")[2:]


def _src(fields: str) -> str:
    return f"rules:\n- from:\n  - source: {{{fields}}}"


def _op(fields: str) -> str:
    return f"rules:\n- to:\n  - operation: {{{fields}}}"


def _when(key: str, values: str = "values: [a]") -> str:
    return f"rules:\n- when:\n  - key: {key}\n    {values}"


S = "spec.rules[0].from[0].source"
OP = "spec.rules[0].to[0].operation"
W = "spec.rules[0].when[0]"

FINDINGS = [
    # refused until implemented
    ("custom", AP, "action: CUSTOM", "PM0003", "error", "spec.action", "CUSTOM is an Istio value"),
    (
        "provider",
        AP,
        "provider: {name: x}",
        "PM0003",
        "error",
        "spec.provider",
        "CUSTOM authorization",
    ),
    (
        "targetRef",
        AP,
        "targetRef: {kind: Gateway, name: gw}",
        "PM0003",
        "error",
        "spec.targetRef",
        "use selector",
    ),
    (
        "targetRefs",
        AP,
        "targetRefs: [{kind: Service, name: s}]",
        "PM0003",
        "error",
        "spec.targetRefs",
        "targetRef",
    ),
    (
        "requestPrincipals",
        AP,
        _src("requestPrincipals: ['*']"),
        "PM0003",
        "error",
        f"{S}.requestPrincipals",
        "until JWT lands",
    ),
    (
        "notRequestPrincipals",
        AP,
        _src("notRequestPrincipals: ['*']"),
        "PM0003",
        "error",
        f"{S}.notRequestPrincipals",
        "JWT",
    ),
    ("when-jwt", AP, _when("request.auth.claims[iss]"), "PM0003", "error", f"{W}.key", "needs JWT"),
    (
        "when-jwt-principal",
        AP,
        _when("request.auth.principal"),
        "PM0003",
        "error",
        f"{W}.key",
        "needs JWT",
    ),
    (
        "when-envoy",
        AP,
        _when("experimental.envoy.filters.a.b[c]"),
        "PM0003",
        "error",
        f"{W}.key",
        "Envoy-specific",
    ),
    (
        "path-template",
        AP,
        _op("paths: ['/a/{*}/b']"),
        "PM0003",
        "error",
        f"{OP}.paths[0]",
        "path templates",
    ),
    # unknown fields (Istio has no trustDomains in a source)
    (
        "trustDomains",
        AP,
        _src("trustDomains: [a]"),
        "PM0002",
        "error",
        f"{S}.trustDomains",
        "unknown field",
    ),
    (
        "typo",
        AP,
        _src("principal: [a]"),
        "PM0002",
        "error",
        f"{S}.principal",
        'did you mean "principals"',
    ),
    # structure
    (
        "empty-source",
        AP,
        "rules:\n- from:\n  - source: {}",
        "PM0007",
        "error",
        S,
        "must not be empty",
    ),
    (
        "empty-operation",
        AP,
        "rules:\n- to:\n  - operation: {}",
        "PM0007",
        "error",
        OP,
        "must not be empty",
    ),
    (
        "empty-from",
        AP,
        "rules:\n- from: []",
        "PM0006",
        "error",
        "spec.rules[0].from",
        "must not be an empty list",
    ),
    (
        "empty-to",
        AP,
        "rules:\n- to: []",
        "PM0006",
        "error",
        "spec.rules[0].to",
        "must not be an empty list",
    ),
    (
        "no-values",
        AP,
        _when("source.ip", "values: []"),
        "PM0007",
        "error",
        W,
        "needs values or notValues",
    ),
    (
        "sa-with-principals",
        AP,
        _src("serviceAccounts: [a], principals: [b]"),
        "PM0006",
        "error",
        S,
        "cannot set serviceAccounts",
    ),
    (
        "notsa-with-ns",
        AP,
        _src("notServiceAccounts: [a], namespaces: [b]"),
        "PM0006",
        "error",
        S,
        "cannot set serviceAccounts",
    ),
    (
        "deny-no-rules",
        AP,
        "action: DENY",
        "PM0006",
        "warning",
        "spec",
        "DENY policy without rules matches nothing",
    ),
    ("audit-no-rules", AP, "action: AUDIT", "PM0006", "warning", "spec", "an AUDIT policy"),
    # values
    (
        "principal-spiffe",
        AP,
        _src("principals: ['spiffe://cluster.local/ns/a/sa/b']"),
        "PM0006",
        "error",
        f"{S}.principals[0]",
        "without spiffe://",
    ),
    (
        "principal-middle-star",
        AP,
        _src("principals: ['cluster.local/*/sa/b']"),
        "PM0006",
        "error",
        f"{S}.principals[0]",
        "'*' is allowed only",
    ),
    (
        "principal-two-stars",
        AP,
        _src("principals: ['*a*']"),
        "PM0006",
        "error",
        f"{S}.principals[0]",
        "'*' is allowed only",
    ),
    (
        "principal-empty",
        AP,
        _src("principals: ['']"),
        "PM0006",
        "error",
        f"{S}.principals[0]",
        "must not be empty",
    ),
    (
        "namespace-star",
        AP,
        _src("namespaces: ['a*b']"),
        "PM0006",
        "error",
        f"{S}.namespaces[0]",
        "'*'",
    ),
    (
        "sa-wildcard",
        AP,
        _src("serviceAccounts: ['ns/*']"),
        "PM0006",
        "error",
        f"{S}.serviceAccounts[0]",
        "no wildcards",
    ),
    (
        "sa-two-slashes",
        AP,
        _src("serviceAccounts: [a/b/c]"),
        "PM0006",
        "error",
        f"{S}.serviceAccounts[0]",
        "<namespace>/<name>",
    ),
    (
        "sa-bad-name",
        AP,
        _src("serviceAccounts: [ns/Bad_Name]"),
        "PM0006",
        "error",
        f"{S}.serviceAccounts[0]",
        "invalid service account",
    ),
    (
        "ipblock",
        AP,
        _src("ipBlocks: [10.0.0.0/33]"),
        "PM0006",
        "error",
        f"{S}.ipBlocks[0]",
        "not an IP address or CIDR",
    ),
    (
        "remote-ipblock",
        AP,
        _src("notRemoteIpBlocks: [nope]"),
        "PM0006",
        "error",
        f"{S}.notRemoteIpBlocks[0]",
        "CIDR",
    ),
    (
        "host-port",
        AP,
        _op("hosts: ['secret.com:80']"),
        "PM0006",
        "error",
        f"{OP}.hosts[0]",
        'write "secret.com"',
    ),
    (
        "host-v6-port",
        AP,
        _op("notHosts: ['[::1]:80']"),
        "PM0006",
        "error",
        f"{OP}.notHosts[0]",
        'write "[::1]"',
    ),
    (
        "host-empty",
        AP,
        _op("hosts: ['']"),
        "PM0006",
        "error",
        f"{OP}.hosts[0]",
        "must not be empty",
    ),
    ("port", AP, _op("ports: ['http']"), "PM0006", "error", f"{OP}.ports[0]", "not a port number"),
    (
        "port-range",
        AP,
        _op("notPorts: ['70000']"),
        "PM0006",
        "error",
        f"{OP}.notPorts[0]",
        "not a port number",
    ),
    ("port-int", AP, _op("ports: [8080]"), "PM0005", "error", f"{OP}.ports[0]", 'quote it: "8080"'),
    (
        "method-case",
        AP,
        _op("methods: [get]"),
        "PM0006",
        "warning",
        f"{OP}.methods[0]",
        'never matches "GET"',
    ),
    (
        "path-relative",
        AP,
        _op("paths: [admin]"),
        "PM0006",
        "error",
        f"{OP}.paths[0]",
        "a path starts with /",
    ),
    (
        "path-query",
        AP,
        _op("paths: ['/a?b=1']"),
        "PM0006",
        "error",
        f"{OP}.paths[0]",
        "without the query",
    ),
    (
        "path-fragment",
        AP,
        _op("notPaths: ['/a#b']"),
        "PM0006",
        "error",
        f"{OP}.notPaths[0]",
        "without the query",
    ),
    (
        "path-middle-star",
        AP,
        _op("paths: ['/a/*/b']"),
        "PM0006",
        "error",
        f"{OP}.paths[0]",
        "'*' is allowed only",
    ),
    (
        "path-unnormalized",
        AP,
        _op("paths: ['/a/../b']"),
        "PM0006",
        "warning",
        f"{OP}.paths[0]",
        'matched as "/b"',
    ),
    (
        "path-double-slash",
        AP,
        _op("paths: ['//admin']"),
        "PM0006",
        "warning",
        f"{OP}.paths[0]",
        'matched as "/admin"',
    ),
    (
        "path-escaped",
        AP,
        _op("notPaths: ['/a%2Fb']"),
        "PM0006",
        "warning",
        f"{OP}.notPaths[0]",
        'matched as "/a/b"',
    ),
    (
        "when-unknown",
        AP,
        _when("source.ipp"),
        "PM0006",
        "error",
        f"{W}.key",
        'did you mean "source.ip"',
    ),
    (
        "when-header-form",
        AP,
        _when("request.headers"),
        "PM0006",
        "error",
        f"{W}.key",
        "request.headers[<header-name>]",
    ),
    (
        "when-header-name",
        AP,
        _when("request.headers[x y]"),
        "PM0006",
        "error",
        f"{W}.key",
        "invalid header name",
    ),
    (
        "when-brackets",
        AP,
        _when("source.ip[a]"),
        "PM0006",
        "error",
        f"{W}.key",
        "takes no [...] part",
    ),
    (
        "when-ip",
        AP,
        _when("source.ip", "values: [nope]"),
        "PM0006",
        "error",
        f"{W}.values[0]",
        "CIDR",
    ),
    (
        "when-remote-ip",
        AP,
        _when("remote.ip", "notValues: [1.2.3]"),
        "PM0006",
        "error",
        f"{W}.notValues[0]",
        "CIDR",
    ),
    (
        "when-dest-ip",
        AP,
        _when("destination.ip", "values: [x]"),
        "PM0006",
        "error",
        f"{W}.values[0]",
        "CIDR",
    ),
    (
        "when-port",
        AP,
        _when("destination.port", "values: ['0']"),
        "PM0006",
        "error",
        f"{W}.values[0]",
        "not a port",
    ),
    (
        "when-principal",
        AP,
        _when("source.principal", "values: ['spiffe://a/b']"),
        "PM0006",
        "error",
        f"{W}.values[0]",
        "without spiffe://",
    ),
    (
        "when-sa",
        AP,
        _when("source.serviceAccount", "values: ['a/*']"),
        "PM0006",
        "error",
        f"{W}.values[0]",
        "no wildcards",
    ),
    (
        "when-namespace",
        AP,
        _when("source.namespace", "values: ['**']"),
        "PM0006",
        "error",
        f"{W}.values[0]",
        "'*'",
    ),
    (
        "when-sni",
        AP,
        _when("connection.sni", "values: ['a*b*']"),
        "PM0006",
        "error",
        f"{W}.values[0]",
        "'*'",
    ),
    (
        "when-header-ctl",
        AP,
        _when("request.headers[x]", 'values: ["a\\u0000"]'),
        "PM0006",
        "error",
        f"{W}.values[0]",
        "control character",
    ),
    # PeerAuthentication
    (
        "pa-mode",
        PA,
        "mtls: {mode: strict}",
        "PM0006",
        "error",
        "spec.mtls.mode",
        'did you mean "STRICT"',
    ),
    (
        "pa-ports-no-selector",
        PA,
        "portLevelMtls: {8080: {mode: STRICT}}",
        "PM0006",
        "error",
        "spec",
        "requires a selector",
    ),
    (
        "pa-ports-empty-selector",
        PA,
        "selector: {matchLabels: {}}\nportLevelMtls: {8080: {mode: STRICT}}",
        "PM0006",
        "error",
        "spec",
        "requires a selector",
    ),
    (
        "pa-ports-empty",
        PA,
        "selector: {matchLabels: {a: b}}\nportLevelMtls: {}",
        "PM0006",
        "error",
        "spec.portLevelMtls",
        "must not be empty",
    ),
    (
        "pa-port-zero",
        PA,
        "selector: {matchLabels: {a: b}}\nportLevelMtls: {0: {mode: STRICT}}",
        "PM0006",
        "error",
        "spec.portLevelMtls.0",
        "port number",
    ),
    (
        "pa-unknown",
        PA,
        "mtls: {mode: STRICT, strict: true}",
        "PM0002",
        "error",
        "spec.mtls.strict",
        "unknown field",
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "code", "severity", "path", "message"),
    [c[1:] for c in FINDINGS],
    ids=[c[0] for c in FINDINGS],
)
def test_findings(kind: str, spec: str, code: str, severity: str, path: str, message: str) -> None:
    found = [f for f in analyze_text(_doc(kind, spec)) if f.path == path and f.code == code]
    assert found, [str(f) for f in analyze_text(_doc(kind, spec))]
    f: Finding = found[0]
    assert f.severity == severity
    assert message in f.message, f.message
    assert f.resource == f"{kind} default/x"
    assert f.line is not None


def test_valid_values_make_no_findings() -> None:
    spec = """
    rules:
    - from:
      - source:
          principals: ["*", "a*", "*b", cluster.local/ns/a/sa/b]
          ipBlocks: ["::1", 10.0.0.0/8]
      to:
      - operation:
          hosts: ["*", "*.a.com", "b.*", "[::1]"]
          methods: ["*", GET]
          paths: ["*", /x/*, "*.js", /]
      when:
      - key: request.headers[x-a]
        values: ["*", "a*", "*a", a]
    """
    assert analyze_text(_doc(AP, spec)) == []
