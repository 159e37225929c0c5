"""Findings: what validation and analysis say about a configuration, and where.

A `Finding` names the file, the 1-based line, the resource (`Kind namespace/name`) and the field
path (`spec.http[0].route[1].weight`) of one problem, and renders the way `istioctl analyze` does:

    Error [PM0002] (VirtualService default/reviews mesh.yaml:14) spec.http[0].retries.attemps: ...

Codes `IST0xxx` are Istio's analyzer codes, used where Istio has one with the same meaning;
`PM0xxx` codes are pymesh's own. `CODES` lists them all (the configuration reference documents
the same table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]

SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}

# code -> (name, what it means)
CODES: dict[str, tuple[str, str]] = {
    "PM0001": ("SyntaxError", "The file is not valid YAML or JSON, or could not be read."),
    "PM0002": ("UnknownField", "A field that no Istio kind defines there (a typo, usually)."),
    "PM0003": (
        "NotSupportedYet",
        "An Istio field, value or kind that pymesh does not implement yet.",
    ),
    "PM0004": (
        "OffCluster",
        "An Istio field that means nothing off Kubernetes: accepted, ignored.",
    ),
    "PM0005": ("WrongType", "A field holds a value of the wrong type."),
    "PM0006": ("InvalidValue", "A field's value is out of range or malformed."),
    "PM0007": ("MissingField", "A required field is missing."),
    "PM0008": ("UnknownKind", "Unknown kind, or an apiVersion that does not serve the kind."),
    "PM0009": ("DuplicateKey", "The same key appears twice in one mapping."),
    "PM0010": ("InvalidDuration", "A duration is malformed, negative or too short."),
    "PM0011": ("RouteWeights", "Route weights are out of range or do not sum to 100."),
    "PM0012": ("InvalidRegex", "A regex does not compile, or uses what RE2 does not support."),
    "PM0013": (
        "Deprecated",
        "A deprecated spelling: it still works; the message names the new one.",
    ),
    "PM0014": ("DuplicateResource", "Two documents define the same kind, namespace and name."),
    "PM0101": ("DestinationHostNotFound", "A route sends to a host no ServiceEntry defines."),
    "PM0102": ("MultipleDestinationRules", "More than one DestinationRule configures a host."),
    "PM0103": (
        "LocalityLbWithoutOutlierDetection",
        "Locality load balancing is set where no outlierDetection can mark endpoints unhealthy.",
    ),
    "IST0101": ("ReferencedResourceNotFound", "A referenced resource (e.g. a subset) is missing."),
    "IST0109": (
        "ConflictingMeshGatewayVirtualServiceHosts",
        "Two VirtualServices claim the same host.",
    ),
    "IST0130": ("VirtualServiceUnreachableRule", "A VirtualService rule can never match."),
    "IST0131": ("VirtualServiceIneffectiveMatch", "A match repeats one of an earlier rule."),
    "IST0174": (
        "UnknownDestinationRuleHost",
        "A DestinationRule's host matches no service in the configuration.",
    ),
}


def q(value: object) -> str:
    """`value` quoted for a message: strings in double quotes (JSON-escaped), others as is."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or note) about a configuration: what, how bad, and exactly where.

    `line` is 1-based (None when unknown); `resource` is `Kind namespace/name` ("" when the
    document has no usable identity); `path` is the field path inside the resource.
    """

    code: str
    severity: Severity
    message: str
    file: str = ""
    line: int | None = None
    resource: str = ""
    path: str = ""

    @property
    def location(self) -> str:
        """`file:line` (or just the file, or "")."""
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        where = " ".join(p for p in (self.resource, self.location) if p)
        head = f"{self.severity.capitalize()} [{self.code}]"
        if where:
            head += f" ({where})"
        body = f"{self.path}: {self.message}" if self.path else self.message
        return f"{head} {body}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (what `pymeshctl analyze -o json` prints)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "resource": self.resource,
            "path": self.path,
        }


def sort_key(f: Finding) -> tuple[str, int, int, str]:
    """Order findings by file, line, then severity (errors first) and code."""
    return (f.file, f.line or 0, SEVERITY_ORDER[f.severity], f.code)


def render_errors(findings: list[Finding]) -> str:
    """The message of a `ConfigError`: a count, then every error finding, one per line."""
    errors = [f for f in findings if f.severity == "error"]
    noun = "error" if len(errors) == 1 else "errors"
    lines = [f"configuration refused: {len(errors)} {noun}"]
    lines += [str(f) for f in errors]
    return "\n".join(lines)
