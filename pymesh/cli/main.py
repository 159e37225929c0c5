"""`pymeshctl`: pymesh's command line.

    pymeshctl analyze -f mesh.yaml -f conf.d/ [-o text|json] [--namespace default]
    pymeshctl analyze                      # the live configuration of the control plane
    pymeshctl apply -f FILE|DIR|- [--dry-run]
    pymeshctl get KIND [NAME] [-n NS | -A] [-o table|yaml|json]
    pymeshctl delete KIND NAME [-n NS]
    pymeshctl status
    pymeshctl token create --service-account SA [--namespace NS] [--ttl 1h]
    pymeshctl token list | token revoke ID
    pymeshctl proxy-config WORKLOAD [--section routes|clusters|endpoints|policies]
    pymeshctl describe service NAME [-n NS]
    pymeshctl top [--watch]
    pymeshctl version

Commands that talk to the control plane take `--control-plane URL` and `--token` (or
`PYMESH_CONTROL_PLANE` / `PYMESH_ADMIN_TOKEN`, or the config file; see
`pymesh.cli.connection`). `analyze -f` validates Istio YAML offline with the same code the
runtime and the control plane use. Exit status: 0 when all is well (for analyze: no error and
no warning; infos are fine), 1 when something was refused or found, 2 for a usage error (such
as a file that does not exist).
"""

from __future__ import annotations

import json
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer

from pymesh.config import analyze_files

from . import commands
from .connection import LazyClient, control_plane_command
from .output import findings_from_json, print_findings

app = typer.Typer(
    name="pymeshctl",
    help="pymesh's command line: check Istio configuration, and run the control plane's "
    "configuration, identities and registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(StrEnum):
    """How `analyze` prints its findings."""

    text = "text"
    json = "json"


@app.command()
@control_plane_command
def analyze(
    cp: LazyClient,
    filename: Annotated[
        list[Path] | None,
        typer.Option(
            "--filename",
            "-f",
            help="A YAML/JSON file, or a directory of them (*.yaml, *.yml, *.json). Repeatable. "
            "Without -f: the live configuration of the control plane.",
        ),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="text (default) or json.")
    ] = OutputFormat.text,
    namespace: Annotated[
        str,
        typer.Option("--namespace", "-n", help="Namespace of resources that do not name one."),
    ] = "default",
) -> None:
    """Validate Istio configuration and report every problem with its file and line.

    With -f: files, offline. Without: the control plane's live configuration."""
    if filename:
        missing = [p for p in filename if not p.exists()]
        if missing:
            for p in missing:
                typer.echo(f"pymeshctl analyze: {p}: no such file or directory", err=True)
            raise typer.Exit(2)
        findings = analyze_files(filename, default_namespace=namespace)
        targets = ", ".join(str(p) for p in filename)
    else:
        client = cp()
        live = client.get("/v1/analyze")
        findings = findings_from_json(live.get("findings"))
        targets = f"the live configuration at {client.url} (revision {live.get('revision')})"
    if output is OutputFormat.json:
        typer.echo(json.dumps([f.to_dict() for f in findings], indent=2, ensure_ascii=False))
    else:
        print_findings(findings, targets)
    if any(f.severity in ("error", "warning") for f in findings):
        raise typer.Exit(1)


app.command("apply")(commands.apply_command)
app.command("get")(commands.get_command)
app.command("delete")(commands.delete_command)
app.command("status")(commands.status_command)
app.add_typer(commands.token_app)
app.command("proxy-config")(commands.proxy_config_cmd)
app.add_typer(commands.describe_app)
app.command("top")(commands.top_command)


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
