"""Bad input: every mistake is an error naming file, resource, field path and line.

Each case's YAML marks the offending line with a trailing `#!`.
"""

from __future__ import annotations

import pytest

from pymesh.config import Finding, analyze_text, load_files, load_text
from pymesh.errors import ConfigError

VS_HEAD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
"""
DR_HEAD = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
"""
SE_HEAD = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ext
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https}]
"""
ROUTE = "  - route: [{destination: {host: reviews}}]\n"
VS = "VirtualService default/reviews"
DR = "DestinationRule default/reviews"

# (id, yaml, code, resource, path, message fragment)
CASES: list[tuple[str, str, str, str, str, str]] = [
    (
        "malformed-yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: x: y #!\n",
        "PM0001",
        "",
        "",
        "invalid YAML: mapping values are not allowed",
    ),
    (
        "unknown-kind",
        "apiVersion: networking.istio.io/v1\nkind: VirtualServce #!\nmetadata: {name: a}\n",
        "PM0008",
        "VirtualServce default/a",
        "kind",
        'unknown kind "VirtualServce" (did you mean "VirtualService"?)',
    ),
    (
        "istio-kind-not-yet",
        "apiVersion: networking.istio.io/v1\nkind: Gateway #!\nmetadata: {name: a}\n",
        "PM0003",
        "Gateway default/a",
        "kind",
        "Gateway is an Istio kind pymesh does not support yet",
    ),
    (
        "kubernetes-kind",
        "apiVersion: v1\nkind: Service #!\nmetadata: {name: a}\n",
        "PM0008",
        "Service default/a",
        "kind",
        "Service is a Kubernetes kind",
    ),
    (
        "wrong-api-version",
        "apiVersion: security.istio.io/v1 #!\nkind: VirtualService\nmetadata: {name: a}\n"
        "spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n",
        "PM0008",
        "VirtualService default/a",
        "apiVersion",
        'VirtualService is not served as "security.istio.io/v1"',
    ),
    (
        "unknown-top-level-field",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\n"
        "specs: {host: a} #!\n",
        "PM0002",
        "DestinationRule default/a",
        "specs",
        'unknown field "specs" (did you mean "spec"?)',
    ),
    (
        "missing-name",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: #!\n"
        "  namespace: prod\nspec: {host: a}\n",
        "PM0007",
        "",
        "metadata",
        'missing required field "name"',
    ),
    (
        "unknown-field-did-you-mean",
        VS_HEAD + ROUTE + "    retries:\n      attemps: 3 #!\n",
        "PM0002",
        VS,
        "spec.http[0].retries.attemps",
        'unknown field "attemps" (did you mean "attempts"?)',
    ),
    (
        "snake-case-did-you-mean",
        VS_HEAD + ROUTE + "    retries:\n      attempts: 3\n      per_try_timeout: 1s #!\n",
        "PM0002",
        VS,
        "spec.http[0].retries.per_try_timeout",
        '(did you mean "perTryTimeout"?)',
    ),
    (
        "not-yet-field",
        VS_HEAD + ROUTE + "    delegate: #!\n      name: reviews-routes\n",
        "PM0003",
        VS,
        "spec.http[0].delegate",
        '"delegate" is an Istio field pymesh does not support yet (VirtualService delegation)',
    ),
    (
        "not-yet-nested-field",
        VS_HEAD
        + ROUTE
        + "    fault:\n      abort:\n        http2Error: REFUSED_STREAM #!\n"
        + "        percentage: {value: 1}\n",
        "PM0003",
        VS,
        "spec.http[0].fault.abort.http2Error",
        '"http2Error" is an Istio field pymesh does not support yet',
    ),
    (
        "not-yet-retry-backoff",
        VS_HEAD + ROUTE + "    retries: {attempts: 2, backoff: 1s} #!\n",
        "PM0003",
        VS,
        "spec.http[0].retries.backoff",
        "does not support yet",
    ),
    (
        "not-yet-connection-pool",
        DR_HEAD
        + "  trafficPolicy:\n    connectionPool:\n      http: {maxConcurrentStreams: 1} #!\n",
        "PM0003",
        DR,
        "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams",
        "does not support yet (HTTP/2 upstream connections)",
    ),
    (
        "not-yet-tls-credential-name",
        DR_HEAD + "  trafficPolicy:\n    tls: {mode: SIMPLE, credentialName: x} #!\n",
        "PM0003",
        DR,
        "spec.trafficPolicy.tls.credentialName",
        "does not support yet",
    ),
    (
        "not-yet-tcp-routes",
        VS_HEAD + ROUTE + "  tcp: [] #!\n",
        "PM0003",
        VS,
        "spec.tcp",
        "does not support yet",
    ),
    (
        "wrong-type-list",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
        "spec:\n  hosts: reviews #!\n  http:\n" + ROUTE,
        "PM0005",
        VS,
        "spec.hosts",
        'expected a list, got string "reviews"',
    ),
    (
        "wrong-type-int",
        VS_HEAD + "  - route:\n    - destination: {host: reviews}\n      weight: '100' #!\n",
        "PM0005",
        VS,
        "spec.http[0].route[0].weight",
        'expected an integer, got string "100"',
    ),
    (
        "wrong-type-label",
        DR_HEAD + "  subsets:\n  - name: v1\n    labels:\n      version: 1 #!\n",
        "PM0005",
        DR,
        "spec.subsets[0].labels.version",
        'expected a string, got integer 1 (quote it: "1")',
    ),
    (
        "wrong-type-bool",
        VS_HEAD
        + "  - match:\n    - ignoreUriCase: 'yes' #!\n"
        + "    route: [{destination: {host: reviews}}]\n",
        "PM0005",
        VS,
        "spec.http[0].match[0].ignoreUriCase",
        "expected true or false",
    ),
    (
        "bad-regex",
        VS_HEAD
        + "  - match:\n    - uri: {regex: '/a(b'} #!\n"
        + "    route: [{destination: {host: reviews}}]\n",
        "PM0012",
        VS,
        "spec.http[0].match[0].uri.regex",
        'invalid regex "/a(b": missing )',
    ),
    (
        "regex-not-re2",
        VS_HEAD
        + "  - match:\n    - uri: {regex: '/(?!admin).*'} #!\n"
        + "    route: [{destination: {host: reviews}}]\n",
        "PM0012",
        VS,
        "spec.http[0].match[0].uri.regex",
        "uses a lookaround, which RE2 (Istio) does not support",
    ),
    (
        "string-match-two-kinds",
        VS_HEAD
        + "  - match:\n    - uri: {exact: /a, prefix: /b} #!\n"
        + "    route: [{destination: {host: reviews}}]\n",
        "PM0006",
        VS,
        "spec.http[0].match[0].uri",
        "only one of exact, prefix may be set",
    ),
    (
        "string-match-empty",
        VS_HEAD
        + "  - match:\n    - uri: {} #!\n"
        + "    route: [{destination: {host: reviews}}]\n",
        "PM0007",
        VS,
        "spec.http[0].match[0].uri",
        "a string match needs one of exact, prefix or regex",
    ),
    (
        "negative-duration",
        VS_HEAD + ROUTE + "    timeout: -1s #!\n",
        "PM0010",
        VS,
        "spec.http[0].timeout",
        'negative duration "-1s" is not allowed',
    ),
    (
        "malformed-duration",
        VS_HEAD + ROUTE + "    timeout: 5 seconds #!\n",
        "PM0010",
        VS,
        "spec.http[0].timeout",
        'invalid duration "5 seconds"',
    ),
    (
        "duration-without-unit",
        VS_HEAD + ROUTE + "    timeout: '5' #!\n",
        "PM0010",
        VS,
        "spec.http[0].timeout",
        "missing unit",
    ),
    (
        "duration-number",
        VS_HEAD + ROUTE + "    timeout: 5 #!\n",
        "PM0005",
        VS,
        "spec.http[0].timeout",
        'expected a duration such as "5s"',
    ),
    (
        "duration-below-1ms",
        VS_HEAD + ROUTE + "    retries: {attempts: 1, perTryTimeout: 500us} #!\n",
        "PM0010",
        VS,
        "spec.http[0].retries.perTryTimeout",
        "must be at least 1ms",
    ),
    (
        "weight-over-100",
        VS_HEAD
        + "  - route:\n    - destination: {host: reviews}\n      weight: 120 #!\n"
        + "    - destination: {host: ratings}\n      weight: 0\n",
        "PM0011",
        VS,
        "spec.http[0].route[0].weight",
        "weight must be 0..100, got 120",
    ),
    (
        "weights-not-100",
        VS_HEAD
        + "  - route: #!\n    - destination: {host: reviews}\n      weight: 80\n"
        + "    - destination: {host: ratings}\n      weight: 10\n",
        "PM0011",
        VS,
        "spec.http[0].route",
        "must sum to 100, got 90 (80 + 10",
    ),
    (
        "duplicate-key",
        DR_HEAD + "  host: ratings #!\n",
        "PM0009",
        DR,
        "spec.host",
        'duplicate key "host" (first at line 6)',
    ),
    (
        "gateway-not-mesh",
        VS_HEAD.replace("  http:\n", "  gateways: [bookinfo-gateway] #!\n  http:\n") + ROUTE,
        "PM0003",
        VS,
        "spec.gateways[0]",
        'only "mesh" is accepted',
    ),
    (
        "retry-on-unknown",
        VS_HEAD + ROUTE + "    retries: {attempts: 2, retryOn: '5xx,connect-failed'} #!\n",
        "PM0006",
        VS,
        "spec.http[0].retries.retryOn",
        '"connect-failed" is not a retry condition (did you mean "connect-failure"?)',
    ),
    (
        "retry-on-not-yet",
        VS_HEAD + ROUTE + "    retries: {attempts: 2, retryOn: retriable-headers} #!\n",
        "PM0003",
        VS,
        "spec.http[0].retries.retryOn",
        "not supported by pymesh yet",
    ),
    (
        "retry-on-status-out-of-range",
        VS_HEAD + ROUTE + "    retries: {attempts: 2, retryOn: '600'} #!\n",
        "PM0006",
        VS,
        "spec.http[0].retries.retryOn",
        "600 is not an HTTP status code",
    ),
    (
        "retry-negative-attempts",
        VS_HEAD + ROUTE + "    retries: {attempts: -1} #!\n",
        "PM0006",
        VS,
        "spec.http[0].retries.attempts",
        "must not be negative",
    ),
    (
        "retry-policy-without-attempts",
        VS_HEAD + ROUTE + "    retries: {retryOn: 5xx} #!\n",
        "PM0006",
        VS,
        "spec.http[0].retries",
        "attempts is 0",
    ),
    (
        "port-out-of-range",
        VS_HEAD + "  - route: [{destination: {host: reviews, port: {number: 70000}}}] #!\n",
        "PM0006",
        VS,
        "spec.http[0].route[0].destination.port.number",
        "port must be 1..65535, got 70000",
    ),
    (
        "rule-without-route",
        VS_HEAD + "  - name: empty #!\n",
        "PM0007",
        VS,
        "spec.http[0]",
        "a rule needs a route",
    ),
    (
        "vs-without-hosts",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
        "spec: #!\n  http:\n" + ROUTE,
        "PM0007",
        VS,
        "spec",
        'missing required field "hosts"',
    ),
    (
        "vs-star-host",
        VS_HEAD.replace("hosts: [reviews]", "hosts: ['*'] #!") + ROUTE,
        "PM0006",
        VS,
        "spec.hosts[0]",
        "wildcard host * is not allowed",
    ),
    (
        "lb-enum",
        DR_HEAD + "  trafficPolicy:\n    loadBalancer: {simple: round_robin} #!\n",
        "PM0006",
        DR,
        "spec.trafficPolicy.loadBalancer.simple",
        '(did you mean "ROUND_ROBIN"?)',
    ),
    (
        "outlier-percent",
        DR_HEAD + "  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 150} #!\n",
        "PM0006",
        DR,
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "percentage must be 0..100",
    ),
    (
        "duplicate-subset",
        DR_HEAD + "  subsets:\n  - name: v1\n  - name: v1 #!\n",
        "PM0006",
        DR,
        "spec.subsets[1].name",
        'duplicate subset name "v1"',
    ),
    (
        "subset-name",
        DR_HEAD + "  subsets:\n  - name: V_1 #!\n",
        "PM0006",
        DR,
        "spec.subsets[0].name",
        '"V_1" is not a valid name',
    ),
    (
        "se-resolution-not-yet",
        SE_HEAD + "  resolution: DYNAMIC_DNS #!\n",
        "PM0003",
        "ServiceEntry default/ext",
        "spec.resolution",
        "DYNAMIC_DNS is an Istio value pymesh does not support yet",
    ),
    (
        "se-static-needs-ip",
        SE_HEAD + "  resolution: STATIC\n  endpoints:\n  - address: db.internal #!\n",
        "PM0006",
        "ServiceEntry default/ext",
        "spec.endpoints[0].address",
        "resolution STATIC needs IPs",
    ),
    (
        "se-endpoint-port-name",
        SE_HEAD + "  resolution: DNS\n  endpoints:\n  - address: a.example.com\n"
        "    ports: {htps: 8443} #!\n",
        "PM0006",
        "ServiceEntry default/ext",
        "spec.endpoints[0].ports.htps",
        'port "htps" is not a port name of this ServiceEntry (did you mean "https"?)',
    ),
    (
        "se-none-with-endpoints",
        SE_HEAD.replace("spec:\n", "spec: #!\n") + "  endpoints: [{address: 10.0.0.1}]\n",
        "PM0006",
        "ServiceEntry default/ext",
        "spec",
        "endpoints need resolution STATIC or DNS",
    ),
    (
        "authz-custom",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"
        "spec:\n  action: CUSTOM #!\n",
        "PM0003",
        "AuthorizationPolicy default/a",
        "spec.action",
        "CUSTOM is an Istio value pymesh does not support yet",
    ),
    (
        "authz-request-principals",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"
        "spec:\n  rules:\n  - from:\n    - source:\n        requestPrincipals: ['*'] #!\n",
        "PM0003",
        "AuthorizationPolicy default/a",
        "spec.rules[0].from[0].source.requestPrincipals",
        "until JWT lands",
    ),
    (
        "sidecar-unknown-field",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a}\n"
        "spec:\n  egress:\n  - hosts: ['./*']\n    hostz: [] #!\n",
        "PM0002",
        "Sidecar default/a",
        "spec.egress[0].hostz",
        '(did you mean "hosts"?)',
    ),
    (
        "peer-authentication-mode",
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: a}\n"
        "spec:\n  mtls: {mode: strict} #!\n",
        "PM0006",
        "PeerAuthentication default/a",
        "spec.mtls.mode",
        '(did you mean "STRICT"?)',
    ),
    (
        "unknown-yaml-tag",
        DR_HEAD.replace("host: reviews", "host: !Ref reviews #!"),
        "PM0001",
        DR,
        "spec.host",
        "cannot read value",
    ),
]


def _marked_line(text: str) -> int:
    lines = [i for i, ln in enumerate(text.splitlines(), 1) if ln.rstrip().endswith("#!")]
    assert len(lines) == 1, "each case marks exactly one line with #!"
    return lines[0]


def _find(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code and f.severity == "error"]
    assert matching, f"no {code} error in:\n" + "\n".join(map(str, findings))
    return matching[0]


@pytest.mark.parametrize(
    ("text", "code", "resource", "path", "fragment"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_error_names_file_resource_path_and_line(
    text: str, code: str, resource: str, path: str, fragment: str
) -> None:
    findings = analyze_text(text, "mesh.yaml")
    f = _find(findings, code)
    assert f.file == "mesh.yaml"
    assert f.line == _marked_line(text), str(f)
    assert f.resource == resource
    assert f.path == path
    assert fragment in f.message, str(f)
    with pytest.raises(ConfigError) as info:
        load_text(text, "mesh.yaml")
    assert str(f) in str(info.value)


def test_rendering_like_istio_analyze() -> None:
    text = VS_HEAD + ROUTE + "    retries:\n      attemps: 3\n"
    (f,) = [f for f in analyze_text(text, "mesh.yaml") if f.severity == "error"]
    assert str(f) == (
        "Error [PM0002] (VirtualService default/reviews mesh.yaml:10) "
        'spec.http[0].retries.attemps: unknown field "attemps" (did you mean "attempts"?)'
    )
    assert f.to_dict() == {
        "code": "PM0002",
        "severity": "error",
        "message": 'unknown field "attemps" (did you mean "attempts"?)',
        "file": "mesh.yaml",
        "line": 10,
        "resource": "VirtualService default/reviews",
        "path": "spec.http[0].retries.attemps",
    }


def test_config_error_lists_every_error_and_returns_nothing() -> None:
    good = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ok}\n"
        "spec: {hosts: [ok], ports: [{number: 80, name: http}]}\n---\n"
    )
    text = good + VS_HEAD + ROUTE + "    timeout: -1s\n    retries: {attemps: 1}\n"
    result = None
    with pytest.raises(ConfigError) as info:
        result = load_text(text, "mesh.yaml")
    assert result is None
    err = info.value
    assert len(err.findings) == 2
    lines = str(err).splitlines()
    assert lines[0] == "configuration refused: 2 errors"
    assert lines[1:] == [str(f) for f in err.findings]
    assert all(isinstance(f, Finding) and f.severity == "error" for f in err.findings)


def test_all_errors_reported_at_once_across_documents() -> None:
    text = (
        DR_HEAD
        + "  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n---\n"
        + VS_HEAD
        + ROUTE
        + "    timeout: 1x\n"
    )
    codes = [f.code for f in analyze_text(text) if f.severity == "error"]
    assert codes == ["PM0006", "PM0010"]


def test_off_cluster_fields_are_infos_not_errors() -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata:\n  name: a\n  annotations: {x: y}\n  uid: 123\n  resourceVersion: '9'\n"
        "spec:\n  hosts: [a]\n  exportTo: ['.']\n  addresses: [240.0.0.1]\n"
        "  ports: [{number: 80, name: http}]\nstatus: {}\n"
    )
    findings = analyze_text(text)
    assert {f.severity for f in findings} == {"info"}
    assert sorted(f.path for f in findings) == [
        "metadata.annotations",
        "metadata.resourceVersion",
        "metadata.uid",
        "spec.addresses",
        "spec.exportTo",
        "status",
    ]
    assert all(f.code == "PM0004" for f in findings)
    load_text(text)  # loads fine


def test_deprecated_spellings_are_infos() -> None:
    text = DR_HEAD + (
        "  trafficPolicy:\n    loadBalancer: {simple: LEAST_CONN}\n"
        "    outlierDetection: {consecutiveErrors: 5}\n"
    )
    findings = analyze_text(text)
    assert [(f.code, f.severity) for f in findings if f.code == "PM0013"] == [
        ("PM0013", "info"),
        ("PM0013", "info"),
    ]


def test_missing_file_is_a_finding_and_an_error(tmp_path: object) -> None:
    from pathlib import Path

    missing = Path(str(tmp_path)) / "nope.yaml"
    from pymesh.config import analyze_files

    (f,) = analyze_files([missing])
    assert (f.code, f.severity, f.file) == ("PM0001", "error", str(missing))
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_files([missing])


def test_malformed_yaml_keeps_line_and_no_traceback_text() -> None:
    text = "apiVersion: v1\nkind: [unclosed\nmetadata: {}\n"
    (f,) = analyze_text(text, "x.yaml")
    assert f.code == "PM0001" and f.line is not None and f.file == "x.yaml"
    assert "Traceback" not in str(f)


def test_single_destination_weight_is_a_warning() -> None:
    text = VS_HEAD + "  - route:\n    - destination: {host: reviews}\n      weight: 50\n"
    (f,) = [f for f in analyze_text(text) if f.code == "PM0011"]
    assert f.severity == "warning" and f.path == "spec.http[0].route[0].weight"
