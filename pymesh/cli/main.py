"""`pymeshctl`: pymesh's command line.

    pymeshctl analyze -f mesh.yaml -f conf.d/ [-o text|json] [--namespace default]
    pymeshctl version

`analyze` validates Istio YAML offline with the same code the runtime and the control plane use.
Exit status: 0 when there is no error and no warning (infos are fine), 1 when there is any,
2 for a usage error (such as a file that does not exist).
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer

from pymesh.config import analyze_files
from pymesh.config.findings import Finding

app = typer.Typer(
    name="pymeshctl",
    help="pymesh's command line: check Istio configuration for the in-process mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


class OutputFormat(StrEnum):
    """How `analyze` prints its findings."""

    text = "text"
    json = "json"


def _symbol(good: bool) -> str:
    mark = "\u2714" if good else "\u2718"
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        mark.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "OK:" if good else "FAILED:"
    return mark


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _print_text(findings: list[Finding], targets: str) -> None:
    for f in findings:
        typer.echo(typer.style(str(f), fg=_STYLE[f.severity]))
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    infos = sum(f.severity == "info" for f in findings)
    if errors or warnings:
        if findings:
            typer.echo("")
        summary = ", ".join(
            _count(n, noun)
            for n, noun in ((errors, "error"), (warnings, "warning"), (infos, "info"))
            if n
        )
        typer.echo(f"{_symbol(False)} {summary} found when analyzing {targets}.")
        return
    if findings:
        typer.echo("")
    typer.echo(f"{_symbol(True)} No validation issues found when analyzing {targets}.")


@app.command()
def analyze(
    filename: Annotated[
        list[Path],
        typer.Option(
            "--filename",
            "-f",
            help="A YAML/JSON file, or a directory of them (*.yaml, *.yml, *.json). Repeatable.",
        ),
    ],
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="text (default) or json.")
    ] = OutputFormat.text,
    namespace: Annotated[
        str,
        typer.Option("--namespace", "-n", help="Namespace of resources that do not name one."),
    ] = "default",
) -> None:
    """Validate Istio configuration files and report every problem with its file and line."""
    missing = [p for p in filename if not p.exists()]
    if missing:
        for p in missing:
            typer.echo(f"pymeshctl analyze: {p}: no such file or directory", err=True)
        raise typer.Exit(2)
    findings = analyze_files(filename, default_namespace=namespace)
    if output is OutputFormat.json:
        typer.echo(json.dumps([f.to_dict() for f in findings], indent=2, ensure_ascii=False))
    else:
        _print_text(findings, ", ".join(str(p) for p in filename))
    if any(f.severity in ("error", "warning") for f in findings):
        raise typer.Exit(1)


@app.command("version")
def version_command() -> None:
    """Print pymeshctl's version."""
    try:
        v = version("pymesh")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        v = "unknown"
    typer.echo(f"pymeshctl {v}")


def main() -> None:  # pragma: no cover - console entry for `python -m pymesh.cli.main`
    """Run the app."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
