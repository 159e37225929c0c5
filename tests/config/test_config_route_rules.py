"""VirtualService route rules (fault, mirrors, rewrite, redirect, directResponse, headers,
corsPolicy, sourceNamespace) and Sidecar: the model they build and the errors Istio's rules
call for."""

from __future__ import annotations

import textwrap

import pytest

from pymesh.config import analyze_text, load_text
from pymesh.config.findings import Finding
from pymesh.config.model import (
    CorsPolicy,
    Destination,
    FaultAbort,
    FaultDelay,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRewrite,
    HTTPRoute,
    StringMatch,
    VirtualService,
)

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews, shadow]
  ports: [{number: 9080, name: http}]
"""
ROUTE = "route: [{destination: {host: reviews}}]"


def vs_text(rule: str) -> str:
    lines = textwrap.dedent(rule).strip().splitlines()
    body = "\n".join(("  - " if i == 0 else "    ") + ln for i, ln in enumerate(lines))
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
        f"spec:\n  hosts: [reviews]\n  http:\n{body}\n---\n{SE}"
    )


def rule(text: str) -> HTTPRoute:
    cs = load_text(vs_text(text))
    vs = cs.resources[0]
    assert isinstance(vs, VirtualService)
    return vs.http[0]


def findings(text: str) -> list[Finding]:
    return [f for f in analyze_text(vs_text(text)) if f.code != "PM0101"]


def one_error(text: str) -> Finding:
    errors = [f for f in findings(text) if f.severity == "error"]
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


# ------------------------------------------------------------------------------------------
# the model


def test_fault_model() -> None:
    r = rule(f"""
        {ROUTE}
        fault:
          delay: {{fixedDelay: 5s, percentage: {{value: 10}}}}
          abort: {{httpStatus: 503, percentage: {{value: 0.5}}}}
    """)
    assert r.fault == HTTPFaultInjection(FaultDelay(5.0, 10.0), FaultAbort(503, None, 0.5))
    r = rule(f"""
        {ROUTE}
        fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}
    """)
    assert r.fault == HTTPFaultInjection(None, FaultAbort(None, "UNAVAILABLE", 100.0))


def test_fault_deprecated_percent_and_unset_percentage() -> None:
    text = f"""
        {ROUTE}
        fault: {{delay: {{fixedDelay: 1s, percent: 30}}}}
    """
    assert rule(text).fault == HTTPFaultInjection(FaultDelay(1.0, 30.0), None)
    assert [f.code for f in findings(text)] == ["PM0013"]  # deprecated: an info
    text = f"""
        {ROUTE}
        fault: {{abort: {{httpStatus: 500}}}}
    """
    assert rule(text).fault == HTTPFaultInjection(None, FaultAbort(500, None, None))
    (f,) = findings(text)
    assert (f.severity, f.path) == ("warning", "spec.http[0].fault.abort")
    assert "as in Istio, no request is aborted" in f.message


@pytest.mark.parametrize(
    ("extra", "mirrors", "infos"),
    [
        ("mirror: {host: shadow}", (HTTPMirrorPolicy(Destination("shadow"), 100.0),), []),
        (
            "mirror: {host: shadow, port: {number: 9080}}\nmirrorPercentage: {value: 12.5}",
            (HTTPMirrorPolicy(Destination("shadow", None, 9080), 12.5),),
            [],
        ),
        (
            "mirror: {host: shadow}\nmirrorPercent: 5",
            (HTTPMirrorPolicy(Destination("shadow"), 5.0),),
            ["PM0013"],
        ),
        (
            "mirror: {host: shadow}\nmirror_percent: 7",
            (HTTPMirrorPolicy(Destination("shadow"), 7.0),),
            ["PM0013"],
        ),
        (
            "mirrors:\n- destination: {host: shadow, port: {number: 9090}}\n"
            "- {destination: {host: reviews}, percentage: {value: 1}}",
            (
                HTTPMirrorPolicy(Destination("shadow", None, 9090), 100.0),
                HTTPMirrorPolicy(Destination("reviews"), 1.0),
            ),
            [],
        ),
    ],
)
def test_mirror_model(extra: str, mirrors: tuple[HTTPMirrorPolicy, ...], infos: list[str]) -> None:
    text = ROUTE + "\n" + extra
    assert rule(text).mirrors == mirrors
    assert [f.code for f in findings(text)] == infos


def test_rewrite_redirect_direct_response_models() -> None:
    r = rule(f"""
        match: [{{uri: {{prefix: /ratings}}}}]
        rewrite: {{uri: /v1/bookRatings, authority: ratings.prod}}
        {ROUTE}
    """)
    assert r.rewrite == HTTPRewrite("/v1/bookRatings", "ratings.prod")
    r = rule(f"""
        rewrite: {{uriRegexRewrite: {{match: "^/a/(.*)$", rewrite: "/b/\\\\1"}}}}
        {ROUTE}
    """)
    assert r.rewrite is not None and r.rewrite.uri_regex_rewrite is not None
    assert r.rewrite.uri_regex_rewrite.rewrite == "/b/\\1"
    assert rule("redirect: {uri: /x}").redirect == HTTPRedirect(uri="/x", redirect_code=301)
    assert rule(
        "redirect: {scheme: https, derivePort: FROM_REQUEST_PORT, redirectCode: 308}"
    ).redirect == HTTPRedirect(scheme="https", derive_port="FROM_REQUEST_PORT", redirect_code=308)
    assert rule("directResponse: {status: 503, body: {string: down}}").direct_response == (
        HTTPDirectResponse(503, b"down")
    )
    assert rule("directResponse: {status: 200, body: {bytes: aGk_}}").direct_response == (
        HTTPDirectResponse(200, b"hi?")  # URL-safe base64, padding optional (protobuf JSON)
    )
    assert rule("directResponse: {status: 204}").direct_response == HTTPDirectResponse(204)


def test_headers_model() -> None:
    r = rule("""
        headers:
          request:
            set: {X-Api-Version: "2", host: ratings.prod}
            add: {x-tag: "100%%"}
            remove: [X-Debug]
          response: {remove: [server]}
        route:
        - destination: {host: reviews}
          headers: {response: {add: {x-dest: v1}}}
    """)
    assert r.headers == Headers(
        HeaderOperations(
            {"x-api-version": "2", "host": "ratings.prod"}, {"x-tag": "100%"}, ("x-debug",)
        ),
        HeaderOperations(remove=("server",)),
    )
    assert r.route[0].headers == Headers(None, HeaderOperations(add={"x-dest": "v1"}))


def test_cors_model() -> None:
    r = rule(f"""
        {ROUTE}
        corsPolicy:
          allowOrigin: [https://old.example]
          allowOrigins: [{{prefix: "https://"}}, {{regex: ".*\\\\.example\\\\.com"}}]
          allowMethods: [GET, POST]
          allowHeaders: [x-user]
          exposeHeaders: [x-trace]
          maxAge: 24h
          allowCredentials: true
          unmatchedPreflights: IGNORE
    """)
    cors = r.cors_policy
    assert isinstance(cors, CorsPolicy)
    assert [(o.kind, o.value) for o in cors.allow_origins] == [
        ("exact", "https://old.example"),
        ("prefix", "https://"),
        ("regex", ".*\\.example\\.com"),
    ]
    assert cors.allow_origins[2].regex is not None
    assert (cors.allow_methods, cors.allow_headers, cors.expose_headers) == (
        ("GET", "POST"),
        ("x-user",),
        ("x-trace",),
    )
    assert (cors.max_age, cors.allow_credentials, cors.unmatched_preflights) == (
        86400.0,
        True,
        "IGNORE",
    )
    assert StringMatch("exact", "https://old.example") == cors.allow_origins[0]


def test_source_namespace() -> None:
    r = rule(f"""
        match: [{{sourceNamespace: prod}}]
        {ROUTE}
    """)
    assert r.match[0].source_namespace == "prod"


# ------------------------------------------------------------------------------------------
# errors: (id, rule, code, path, message fragment)

ERRORS = [
    (
        "route-and-redirect",
        ROUTE + "\nredirect: {uri: /x}",
        "PM0006",
        "spec.http[0]",
        "cannot have both route and redirect",
    ),
    (
        "route-and-direct",
        ROUTE + "\ndirectResponse: {status: 503}",
        "PM0006",
        "spec.http[0]",
        "cannot have both route and directResponse",
    ),
    (
        "redirect-and-direct",
        "redirect: {uri: /x}\ndirectResponse: {status: 503}",
        "PM0006",
        "spec.http[0]",
        "cannot have both redirect and directResponse",
    ),
    (
        "fault-on-redirect",
        "redirect: {uri: /x}\nfault: {abort: {httpStatus: 500, percentage: {value: 1}}}",
        "PM0006",
        "spec.http[0]",
        "both fault and redirect",
    ),
    (
        "rewrite-on-direct",
        "directResponse: {status: 200}\nrewrite: {uri: /x}",
        "PM0006",
        "spec.http[0]",
        "both rewrite and directResponse",
    ),
    (
        "mirror-on-direct",
        "directResponse: {status: 200}\nmirror: {host: shadow}",
        "PM0006",
        "spec.http[0]",
        "nothing to mirror",
    ),
    (
        "mirror-and-mirrors",
        ROUTE + "\nmirror: {host: shadow}\nmirrors: [{destination: {host: shadow}}]",
        "PM0006",
        "spec.http[0]",
        "both mirror and mirrors",
    ),
    (
        "mirror-percentage-range",
        ROUTE + "\nmirror: {host: shadow}\nmirrorPercentage: {value: 101}",
        "PM0006",
        "spec.http[0].mirrorPercentage.value",
        "0..100",
    ),
    (
        "mirror-percent-both",
        ROUTE + "\nmirror: {host: shadow}\nmirrorPercent: 5\nmirrorPercentage: {value: 5}",
        "PM0006",
        "spec.http[0]",
        "only one of",
    ),
    (
        "mirror-destination-star",
        ROUTE + "\nmirror: {host: '*'}",
        "PM0006",
        "spec.http[0].mirror.host",
        "cannot be *",
    ),
    (
        "redirect-empty",
        "redirect: {redirectCode: 302}",
        "PM0007",
        "spec.http[0].redirect",
        "uri, authority, scheme, or port",
    ),
    (
        "redirect-code-3xx",
        "redirect: {uri: /x, redirectCode: 200}",
        "PM0006",
        "spec.http[0].redirect.redirectCode",
        "must be 3xx",
    ),
    (
        "redirect-code-envoy",
        "redirect: {uri: /x, redirectCode: 305}",
        "PM0003",
        "spec.http[0].redirect.redirectCode",
        "301, 302, 303, 307 or 308",
    ),
    (
        "redirect-scheme",
        "redirect: {scheme: ftp}",
        "PM0006",
        "spec.http[0].redirect.scheme",
        '"http" or "https"',
    ),
    (
        "redirect-port-and-derive",
        "redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}",
        "PM0006",
        "spec.http[0].redirect",
        "only one of port, derivePort",
    ),
    (
        "redirect-uri",
        "redirect: {uri: no-slash}",
        "PM0006",
        "spec.http[0].redirect.uri",
        "not a URI path",
    ),
    (
        "direct-status",
        "directResponse: {status: 600}",
        "PM0006",
        "spec.http[0].directResponse.status",
        "200..599",
    ),
    (
        "direct-status-required",
        "directResponse: {body: {string: x}}",
        "PM0007",
        "spec.http[0].directResponse",
        '"status"',
    ),
    (
        "direct-body-both",
        "directResponse: {status: 200, body: {string: x, bytes: eA==}}",
        "PM0006",
        "spec.http[0].directResponse.body",
        "only one of string, bytes",
    ),
    (
        "direct-bytes",
        "directResponse: {status: 200, body: {bytes: '!!'}}",
        "PM0006",
        "spec.http[0].directResponse.body.bytes",
        "base64",
    ),
    (
        "direct-too-big",
        "directResponse: {status: 200, body: {string: " + "x" * 1_100_000 + "}}",
        "PM0006",
        "spec.http[0].directResponse.body",
        "under 1MB",
    ),
    (
        "rewrite-empty",
        ROUTE + "\nrewrite: {}",
        "PM0007",
        "spec.http[0].rewrite",
        "uri, uriRegexRewrite or authority",
    ),
    (
        "rewrite-uri-and-regex",
        ROUTE + "\nrewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}",
        "PM0006",
        "spec.http[0].rewrite",
        "only one of uri or uriRegexRewrite",
    ),
    (
        "rewrite-regex-invalid",
        ROUTE + "\nrewrite: {uriRegexRewrite: {match: '(', rewrite: b}}",
        "PM0012",
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "invalid regex",
    ),
    (
        "rewrite-regex-re2",
        ROUTE + "\nrewrite: {uriRegexRewrite: {match: '(?=a)', rewrite: b}}",
        "PM0012",
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "RE2",
    ),
    (
        "rewrite-group",
        ROUTE + "\nrewrite: {uriRegexRewrite: {match: '(a)', rewrite: '/\\2'}}",
        "PM0012",
        "spec.http[0].rewrite.uriRegexRewrite.rewrite",
        "group the pattern does not have",
    ),
    (
        "rewrite-regex-rewrite-missing",
        ROUTE + "\nrewrite: {uriRegexRewrite: {match: a}}",
        "PM0007",
        "spec.http[0].rewrite.uriRegexRewrite",
        '"rewrite"',
    ),
    (
        "rewrite-authority",
        ROUTE + "\nrewrite: {authority: 'a b'}",
        "PM0006",
        "spec.http[0].rewrite.authority",
        "not an authority",
    ),
    (
        "authority-twice",
        ROUTE + "\nrewrite: {authority: a}\nheaders: {request: {set: {host: b}}}",
        "PM0006",
        "spec.http[0]",
        "authority is set more than once",
    ),
    (
        "fault-empty",
        ROUTE + "\nfault: {}",
        "PM0007",
        "spec.http[0].fault",
        "an abort and/or a delay",
    ),
    (
        "fault-abort-status",
        ROUTE + "\nfault: {abort: {percentage: {value: 1}}}",
        "PM0007",
        "spec.http[0].fault.abort",
        "httpStatus or grpcStatus",
    ),
    (
        "fault-abort-range",
        ROUTE + "\nfault: {abort: {httpStatus: 199, percentage: {value: 1}}}",
        "PM0006",
        "spec.http[0].fault.abort.httpStatus",
        "200..599",
    ),
    (
        "fault-grpc-name",
        ROUTE + "\nfault: {abort: {grpcStatus: UNAVAILIBLE, percentage: {value: 1}}}",
        "PM0006",
        "spec.http[0].fault.abort.grpcStatus",
        'did you mean "UNAVAILABLE"',
    ),
    (
        "fault-both-statuses",
        ROUTE + "\nfault: {abort: {httpStatus: 500, grpcStatus: INTERNAL, percentage: {value: 1}}}",
        "PM0006",
        "spec.http[0].fault.abort",
        "only one of httpStatus, grpcStatus",
    ),
    (
        "fault-http2",
        ROUTE + "\nfault: {abort: {http2Error: x, percentage: {value: 1}}}",
        "PM0003",
        "spec.http[0].fault.abort.http2Error",
        "not support yet",
    ),
    (
        "fault-exponential",
        ROUTE + "\nfault: {delay: {exponentialDelay: 1s, percentage: {value: 1}}}",
        "PM0003",
        "spec.http[0].fault.delay.exponentialDelay",
        "not support yet",
    ),
    (
        "fault-delay-required",
        ROUTE + "\nfault: {delay: {percentage: {value: 1}}}",
        "PM0007",
        "spec.http[0].fault.delay",
        '"fixedDelay"',
    ),
    (
        "fault-delay-min",
        ROUTE + "\nfault: {delay: {fixedDelay: 0s, percentage: {value: 1}}}",
        "PM0010",
        "spec.http[0].fault.delay.fixedDelay",
        "1ms",
    ),
    (
        "fault-tiny-percentage",
        ROUTE + "\nfault: {abort: {httpStatus: 500, percentage: {value: 0.00001}}}",
        "PM0006",
        "spec.http[0].fault.abort.percentage",
        "0.0001..100",
    ),
    (
        "fault-percent-both",
        ROUTE + "\nfault: {delay: {fixedDelay: 1s, percent: 5, percentage: {value: 5}}}",
        "PM0006",
        "spec.http[0].fault.delay",
        "only one of",
    ),
    (
        "header-name",
        ROUTE + "\nheaders: {request: {set: {'x y': a}}}",
        "PM0006",
        'spec.http[0].headers.request.set["x y"]',
        "invalid header name",
    ),
    (
        "header-host-response",
        ROUTE + "\nheaders: {response: {set: {host: a}}}",
        "PM0006",
        "spec.http[0].headers.response.set.host",
        "Host header",
    ),
    (
        "header-host-remove",
        ROUTE + "\nheaders: {request: {remove: [Host]}}",
        "PM0006",
        "spec.http[0].headers.request.remove[0]",
        "cannot remove the Host header",
    ),
    (
        "header-pseudo",
        ROUTE + "\nheaders: {request: {set: {':path': /x}}}",
        "PM0006",
        'spec.http[0].headers.request.set[":path"]',
        "pseudo-headers",
    ),
    (
        "header-repeat",
        ROUTE + "\nheaders: {request: {add: {x-a: '1', X-A: '2'}}}",
        "PM0009",
        "spec.http[0].headers.request.add.X-A",
        "case-insensitive",
    ),
    (
        "header-operator",
        ROUTE + "\nheaders: {request: {set: {x-ip: '%DOWNSTREAM_REMOTE_ADDRESS%'}}}",
        "PM0003",
        "spec.http[0].headers.request.set.x-ip",
        "command operator",
    ),
    (
        "header-single-percent",
        ROUTE + "\nheaders: {response: {add: {x-p: '50%'}}}",
        "PM0006",
        "spec.http[0].headers.response.add.x-p",
        "single %",
    ),
    (
        "dest-header",
        "route:\n- destination: {host: reviews}\n  headers: {response: {set: {':status': '1'}}}",
        "PM0006",
        'spec.http[0].route[0].headers.response.set[":status"]',
        "pseudo-headers",
    ),
    (
        "cors-method",
        ROUTE + "\ncorsPolicy: {allowMethods: [FETCH]}",
        "PM0006",
        "spec.http[0].corsPolicy.allowMethods[0]",
        "not a supported HTTP method",
    ),
    (
        "cors-max-age",
        ROUTE + "\ncorsPolicy: {maxAge: 1.5s}",
        "PM0010",
        "spec.http[0].corsPolicy.maxAge",
        "whole number of seconds",
    ),
    (
        "cors-origin",
        ROUTE + "\ncorsPolicy: {allowOrigins: [{exact: ''}]}",
        "PM0006",
        "spec.http[0].corsPolicy.allowOrigins[0]",
        "must not be empty",
    ),
    (
        "cors-header",
        ROUTE + "\ncorsPolicy: {allowHeaders: ['a b']}",
        "PM0006",
        "spec.http[0].corsPolicy.allowHeaders[0]",
        "invalid header name",
    ),
    (
        "source-namespace",
        "match: [{sourceNamespace: Prod}]\n" + ROUTE,
        "PM0006",
        "spec.http[0].match[0].sourceNamespace",
        "not a valid name",
    ),
]


@pytest.mark.parametrize(
    ("text", "code", "path", "fragment"),
    [c[1:] for c in ERRORS],
    ids=[c[0] for c in ERRORS],
)
def test_errors(text: str, code: str, path: str, fragment: str) -> None:
    f = one_error(text)
    assert (f.code, f.path) == (code, path), str(f)
    assert fragment in f.message, str(f)


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("redirect: {uri: /x}\ntimeout: 1s", "spec.http[0].timeout", "no effect on a redirect"),
        (
            ROUTE + "\nmirrorPercentage: {value: 5}",
            "spec.http[0].mirrorPercentage",
            "no effect without mirror",
        ),
        (
            ROUTE + "\nfault: {delay: {fixedDelay: 1s}}",
            "spec.http[0].fault.delay",
            "no request is delayed",
        ),
        (
            "directResponse: {status: 200, body: {string: " + "x" * 200_000 + "}}",
            "spec.http[0].directResponse.body",
            "over 100KB",
        ),
    ],
)
def test_warnings(text: str, path: str, fragment: str) -> None:
    (f,) = findings(text)
    assert (f.severity, f.path) == ("warning", path), str(f)
    assert fragment in f.message


def test_mirror_destinations_are_analyzed_like_routes() -> None:
    fs = analyze_text(vs_text(ROUTE + "\nmirror: {host: reviews, subset: v9}"))
    (f,) = [f for f in fs if f.severity == "error"]
    assert (f.code, f.path) == ("IST0101", "spec.http[0].mirror.subset")
    fs = analyze_text(vs_text(ROUTE + "\nmirrors: [{destination: {host: nowhere}}]"))
    (f,) = fs
    assert (f.code, f.path) == ("PM0101", "spec.http[0].mirrors[0].destination.host")


# ------------------------------------------------------------------------------------------
# Sidecar


def sidecar_findings(spec: str) -> list[Finding]:
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    text = (
        f"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: s}}\nspec:\n{body}\n"
    )
    return [f for f in analyze_text(text) if f.severity == "error"]


@pytest.mark.parametrize(
    ("spec", "code", "path", "fragment"),
    [
        ("workloadSelector: {labels: {app: a}}", "PM0007", "spec", "needs egress, ingress"),
        (
            "egress: [{hosts: ['*/*']}, {hosts: ['./*'], port: {number: 80}}]",
            "PM0006",
            "spec.egress[0]",
            "must be the last one",
        ),
        (
            "egress: [{hosts: [a/b]}, {hosts: ['./*']}]",
            "PM0006",
            "spec.egress[1]",
            "only one listener without a port",
        ),
        (
            "egress: [{hosts: ['./*'], port: {number: 80}}, {hosts: [a/b], port: {number: 80}}]",
            "PM0006",
            "spec.egress[1].port",
            "named twice",
        ),
        ("egress: [{hosts: []}]", "PM0007", "spec.egress[0]", "at least one host"),
        ("egress: [{hosts: [reviews]}]", "PM0006", "spec.egress[0].hosts[0]", "namespace/host"),
        (
            "egress: [{hosts: ['./*'], port: {name: http}}]",
            "PM0007",
            "spec.egress[0].port",
            '"number"',
        ),
        (
            "outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: p}}",
            "PM0003",
            "spec.outboundTrafficPolicy.egressProxy",
            "egress proxies",
        ),
        (
            "outboundTrafficPolicy: {mode: BLOCK}",
            "PM0006",
            "spec.outboundTrafficPolicy.mode",
            "REGISTRY_ONLY",
        ),
    ],
)
def test_sidecar_errors(spec: str, code: str, path: str, fragment: str) -> None:
    errors = sidecar_findings(spec)
    assert any((f.code, f.path) == (code, path) and fragment in f.message for f in errors), (
        "\n".join(map(str, errors))
    )
