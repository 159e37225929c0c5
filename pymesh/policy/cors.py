"""CORS as Envoy's cors filter does it, for a VirtualService `http[].corsPolicy` (pure).

`compile_cors` turns a validated `CorsPolicy` into `CorsRules` once per configuration;
`decide` reads one request (method, `Origin`, `Access-Control-Request-Method` /
`-Headers`) and says what to do, the way Envoy's filter does:

- no `Origin` → not a CORS request: nothing to do (None);
- the origin matches no `allowOrigins` entry (an entry that matches the literal `*` allows
  every origin) → with `unmatchedPreflights: FORWARD` (Istio's default) nothing to do; with
  `IGNORE` a preflight is answered 200 without CORS headers (the browser then refuses the
  cross-origin call) and an actual request is served as is;
- an allowed preflight (`OPTIONS` with a non-empty `Access-Control-Request-Method`) is
  answered 200 without calling the app: `access-control-allow-origin` echoes the origin,
  `-allow-credentials: true` when asked, `-allow-methods` and `-allow-headers` (Istio joins
  the lists with `,`; a lone `*` echoes what the browser asked for), `-max-age` in seconds.
  Like Envoy, the requested method is not checked against the list here: the browser does that;
- an allowed actual request is served, and its response gets `access-control-allow-origin`
  (the origin), `-allow-credentials`, `-expose-headers`, and `vary: origin` (the answer depends
  on the origin; Envoy leaves that to the app, caches need it).
"""

from __future__ import annotations

from typing import NamedTuple

from pymesh.config.model import CorsPolicy
from pymesh.policy.routing import StrTest, string_test

Header = tuple[str, str]

PREFLIGHT_STATUS = 200

# the response headers the policy owns: an app's own values for them are replaced
OWNED_HEADERS = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    }
)


class CorsRules(NamedTuple):
    """A `CorsPolicy` compiled for `decide`: origin tests and the header values, joined."""

    origins: tuple[StrTest, ...]
    any_origin: bool  # some allowOrigins entry matches "*" (Envoy: then every origin is allowed)
    allow_methods: str
    allow_headers: str
    expose_headers: str
    max_age: str
    allow_credentials: bool
    forward_unmatched: bool  # unmatchedPreflights FORWARD (and UNSPECIFIED) vs IGNORE


class CorsDecision(NamedTuple):
    """What `decide` says: `preflight` True → answer 200 now with `headers` (the app is not
    called); False → serve the request and add `headers` to its response."""

    preflight: bool
    headers: tuple[Header, ...]


def compile_cors(policy: CorsPolicy) -> CorsRules:
    """The `CorsRules` for one validated `CorsPolicy`."""
    tests = tuple(string_test(m) for m in policy.allow_origins)
    return CorsRules(
        origins=tests,
        any_origin=any(t("*") for t in tests),
        allow_methods=",".join(policy.allow_methods),
        allow_headers=",".join(policy.allow_headers),
        expose_headers=",".join(policy.expose_headers),
        max_age="" if policy.max_age is None else str(int(policy.max_age)),
        allow_credentials=policy.allow_credentials is True,
        forward_unmatched=policy.unmatched_preflights != "IGNORE",
    )


def origin_allowed(rules: CorsRules, origin: str) -> bool:
    """Whether `origin` matches one of the allowed origins."""
    return rules.any_origin or any(t(origin) for t in rules.origins)


_IGNORED = CorsDecision(True, ())


def decide(
    rules: CorsRules,
    method: str,
    origin: str | None,
    request_method: str | None,
    request_headers: str | None,
) -> CorsDecision | None:
    """What to do with one request under `rules` (None: nothing, serve it untouched).

    `origin`, `request_method` and `request_headers` are the values of `Origin`,
    `Access-Control-Request-Method` and `Access-Control-Request-Headers`, or None."""
    if not origin:
        return None
    preflight = method == "OPTIONS" and bool(request_method)
    if not origin_allowed(rules, origin):
        if preflight and not rules.forward_unmatched:
            return _IGNORED
        return None
    out: list[Header] = [("access-control-allow-origin", origin)]
    if rules.allow_credentials:
        out.append(("access-control-allow-credentials", "true"))
    if not preflight:
        if rules.expose_headers:
            out.append(("access-control-expose-headers", rules.expose_headers))
        out.append(("vary", "origin"))
        return CorsDecision(False, tuple(out))
    assert request_method is not None
    if rules.allow_methods:
        methods = request_method if rules.allow_methods == "*" else rules.allow_methods
        out.append(("access-control-allow-methods", methods))
    if rules.allow_headers:
        asked = request_headers or ""
        allowed = asked if rules.allow_headers == "*" else rules.allow_headers
        if allowed:
            out.append(("access-control-allow-headers", allowed))
    if rules.max_age:
        out.append(("access-control-max-age", rules.max_age))
    return CorsDecision(True, tuple(out))
