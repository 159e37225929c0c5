"""Read and validate Istio YAML: the resources pymesh runs on, checked the way `istioctl` would.

    from pymesh.config import load_files, load_text, analyze_files, Finding

    cs = load_files(["mesh.yaml", "conf.d/"])  # a ConfigSet, or ConfigError listing every error
    findings = analyze_files(["mesh.yaml"])     # every finding (errors, warnings, infos)

Loading reads YAML (multi-document) or JSON, validates every field against Istio's API (see
`pymesh.config.schema`), builds the typed model (`pymesh.config.model`) and runs the
cross-resource checks (`pymesh.config.analyze`). Any error refuses the whole load: nothing
half-built is returned. The same code backs `pymeshctl analyze` and the control plane.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pymesh.config.analyze import analyze_parsed
from pymesh.config.findings import Finding, render_errors
from pymesh.config.hosts import canonical_host
from pymesh.config.loader import Document, parse_text, read_files
from pymesh.config.model import ConfigSet
from pymesh.config.validate import validate_documents
from pymesh.errors import ConfigError

__all__ = [
    "ConfigError",
    "Finding",
    "analyze_files",
    "analyze_text",
    "canonical_host",
    "load_files",
    "load_text",
]

PathArg = str | Path


def _paths(paths: PathArg | Iterable[PathArg]) -> list[PathArg]:
    if isinstance(paths, (str, Path)):
        return [paths]
    return list(paths)


def _run(
    docs: list[Document], findings: list[Finding], files: list[str], default_namespace: str
) -> tuple[ConfigSet, list[Finding]]:
    parsed, more = validate_documents(docs, default_namespace)
    findings = findings + more + analyze_parsed(parsed)
    order = {name: i for i, name in enumerate(dict.fromkeys(files))}
    findings.sort(key=lambda f: (order.get(f.file, -1), f.line or 0))
    resources = tuple(p.resource for p in parsed if p.resource is not None)
    return ConfigSet(resources), findings


def _checked(cs: ConfigSet, findings: list[Finding]) -> ConfigSet:
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise ConfigError(render_errors(errors), list(errors))
    return cs


def load_text(
    text: str, filename: str = "<string>", *, default_namespace: str = "default"
) -> ConfigSet:
    """Load resources from YAML or JSON `text` (named `filename` in findings).

    Raises `ConfigError` (with `.findings`) when any error is found; returns nothing partial.
    """
    docs, findings = parse_text(text, filename)
    return _checked(*_run(docs, findings, [filename], default_namespace))


def load_files(
    paths: PathArg | Iterable[PathArg], *, default_namespace: str = "default"
) -> ConfigSet:
    """Load resources from files and directories (a directory's `*.yaml`, `*.yml`, `*.json`,
    sorted by name). Resources without `metadata.namespace` go to `default_namespace`.

    Raises `ConfigError` (with `.findings`) when any error is found; returns nothing partial.
    """
    docs, findings, files = read_files(_paths(paths))
    return _checked(*_run(docs, findings, files, default_namespace))


def analyze_text(
    text: str, filename: str = "<string>", *, default_namespace: str = "default"
) -> list[Finding]:
    """Every finding about YAML or JSON `text`: errors, warnings and infos. Never raises for
    mistakes in the input."""
    docs, findings = parse_text(text, filename)
    return _run(docs, findings, [filename], default_namespace)[1]


def analyze_files(
    paths: PathArg | Iterable[PathArg], *, default_namespace: str = "default"
) -> list[Finding]:
    """Every finding about the given files and directories: errors, warnings and infos, in
    file and line order. Never raises for mistakes in the input (a missing file is a finding)."""
    docs, findings, files = read_files(_paths(paths))
    return _run(docs, findings, files, default_namespace)[1]
