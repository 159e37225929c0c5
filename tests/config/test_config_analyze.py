"""Cross-resource analysis: subsets, conflicting hosts, unknown hosts, duplicate rules."""

from __future__ import annotations

import pytest

from pymesh.config import Finding, analyze_text, load_text
from pymesh.errors import ConfigError


def se(name: str, host: str, ns: str = "default") -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        f"metadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec: {{hosts: [{host}], ports: [{{number: 80, name: http}}]}}\n"
    )


def dr(name: str, host: str, subsets: tuple[str, ...] = (), ns: str = "default") -> str:
    subs = ", ".join(f"{{name: {s}}}" for s in subsets)
    return (
        f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        f"metadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec: {{host: {host}, subsets: [{subs}]}}\n"
    )


def vs(name: str, host: str, dest: str, subset: str = "", ns: str = "default") -> str:
    sub = f", subset: {subset}" if subset else ""
    return (
        f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec:\n  hosts: [{host}]\n  http:\n"
        f"  - route:\n    - destination: {{host: {dest}{sub}}}\n"
    )


def run(*docs: str) -> list[Finding]:
    return [f for f in analyze_text("---\n".join(docs), "m.yaml") if f.severity != "info"]


def codes(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.code, f.severity) for f in findings]


def test_clean_configuration_has_no_findings() -> None:
    assert (
        run(se("r", "reviews"), dr("r", "reviews", ("v1",)), vs("r", "reviews", "reviews", "v1"))
        == []
    )


@pytest.mark.parametrize(
    "dest",
    ["reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"],
)
def test_hosts_resolve_kubernetes_style(dest: str) -> None:
    assert run(se("r", "reviews"), dr("r", dest, ("v1",)), vs("r", dest, dest, "v1")) == []


def test_subset_missing_from_destination_rule() -> None:
    (f,) = run(se("r", "reviews"), dr("r", "reviews", ("v1",)), vs("r", "reviews", "reviews", "v2"))
    assert codes([f]) == [("IST0101", "error")]
    assert f.path == "spec.http[0].route[0].destination.subset"
    assert f.resource == "VirtualService default/r"
    assert f.line == 18
    assert 'Referenced host+subset in destinationrule not found: "reviews+v2"' in f.message


def test_subset_without_any_destination_rule() -> None:
    (f,) = run(se("r", "reviews"), vs("r", "reviews", "reviews", "v1"))
    assert f.code == "IST0101" and "no DestinationRule configures this host" in f.message


def test_subset_from_other_namespace_rule_by_fqdn() -> None:
    docs = (
        se("r", "reviews", ns="prod"),
        dr("r", "reviews", ("v1",), ns="prod"),
        vs("r", "reviews.prod.svc.cluster.local", "reviews.prod", "v1", ns="web"),
    )
    assert run(*docs) == []


def test_subset_in_short_name_other_namespace_is_not_found() -> None:
    docs = (
        se("r", "reviews", ns="prod"),
        dr("r", "reviews", ("v1",), ns="prod"),
        vs("r", "reviews.prod", "reviews", "v1", ns="web"),  # reviews.web: another service
    )
    assert [f.code for f in run(*docs)] == ["PM0101", "IST0101"]


def test_wildcard_destination_rule_covers_subsets() -> None:
    docs = (
        se("e", "api.example.com"),
        dr("all", "'*.example.com'", ("v1",)),
        vs("r", "api.example.com", "api.example.com", "v1"),
    )
    assert run(*docs) == []


def test_broken_destination_rule_does_not_cause_subset_noise() -> None:
    broken = dr("r", "reviews", ("v1",)).replace("subsets:", "subsetz:")
    findings = run(se("r", "reviews"), broken, vs("r", "reviews", "reviews", "v1"))
    assert codes(findings) == [("PM0002", "error")]


def test_conflicting_virtual_service_hosts() -> None:
    findings = run(
        se("r", "reviews"),
        vs("a", "reviews", "reviews"),
        vs("b", "reviews.default.svc.cluster.local", "reviews.default", ns="other"),
    )
    assert codes(findings) == [("IST0109", "error"), ("IST0109", "error")]
    assert [f.resource for f in findings] == [
        "VirtualService default/a",
        "VirtualService other/b",
    ]
    assert "default/a and other/b" in findings[0].message
    assert findings[0].path == "spec.hosts[0]"
    with pytest.raises(ConfigError, match="IST0109"):
        load_text(
            "---\n".join(
                [se("r", "reviews"), vs("a", "reviews", "reviews"), vs("b", "reviews", "reviews")]
            )
        )


def test_destination_host_nothing_defines_is_a_warning() -> None:
    (f,) = run(vs("r", "httpbin.org", "httpbin.org"))
    assert codes([f]) == [("PM0101", "warning")]
    assert f.path == "spec.http[0].route[0].destination.host"
    load_text(vs("r", "httpbin.org", "httpbin.org"))  # a warning does not refuse the load


def test_wildcard_service_entry_defines_hosts() -> None:
    assert run(se("e", "'*.example.com'"), vs("r", "api.example.com", "api.example.com")) == []


def test_destination_rule_for_unknown_host_is_a_warning() -> None:
    (f,) = run(dr("r", "ratings"))
    assert codes([f]) == [("IST0174", "warning")]
    assert f.path == "spec.host"


def test_two_destination_rules_for_one_host() -> None:
    findings = run(se("r", "reviews"), dr("a", "reviews"), dr("b", "reviews.default"))
    assert codes(findings) == [("PM0102", "warning"), ("PM0102", "warning")]
    assert "pymesh uses the first (default/a)" in findings[0].message


def test_unreachable_rules() -> None:
    text = (
        se("r", "reviews") + "---\n"
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec:\n  hosts: [reviews]\n  http:\n"
        "  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n"
        "  - match: [{uri: {prefix: /a}, name: again}]\n"
        "    route: [{destination: {host: reviews}}]\n"
        "  - route: [{destination: {host: reviews}}]\n"
        "  - name: late\n    route: [{destination: {host: reviews}}]\n"
    )
    findings = [f for f in analyze_text(text) if f.code.startswith("IST01")]
    assert [(f.code, f.severity, f.path) for f in findings] == [
        ("IST0131", "info", "spec.http[1].match[0]"),
        ("IST0130", "warning", "spec.http[1]"),
        ("IST0130", "warning", "spec.http[3]"),
    ]
    assert 'rule "late" not used' in findings[2].message
