"""How `pymeshctl` prints: findings (as `analyze` renders them), plain tables, YAML / JSON
dumps, times, and a spinner on stderr for operations that take a while.

Tables are plain text, columns padded and separated by three spaces like kubectl's, never
wrapped or truncated, so scripts can read them; colour only for findings, and only on a
terminal (click strips it otherwise).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import Any

import typer
import yaml

from pymesh.config.findings import Finding

__all__ = [
    "ReadFormat",
    "ago",
    "count",
    "dump",
    "findings_from_json",
    "in_time",
    "print_findings",
    "print_table",
    "spinner",
    "symbol",
    "table",
]

STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


class ReadFormat(StrEnum):
    """How read commands print: a table (default), YAML or JSON."""

    table = "table"
    yaml = "yaml"
    json = "json"


def symbol(good: bool) -> str:
    """✔ / ✘, or OK: / FAILED: where the terminal's encoding lacks them."""
    mark = "\u2714" if good else "\u2718"
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        mark.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "OK:" if good else "FAILED:"
    return mark


def count(n: int, noun: str) -> str:
    """`1 error`, `2 errors`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def print_findings(findings: Sequence[Finding], targets: str, *, err: bool = False) -> None:
    """Print findings exactly as `pymeshctl analyze` does, then the summary line."""
    for f in findings:
        typer.echo(typer.style(str(f), fg=STYLE[f.severity]), err=err)
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    infos = sum(f.severity == "info" for f in findings)
    if errors or warnings:
        if findings:
            typer.echo("", err=err)
        summary = ", ".join(
            count(n, noun)
            for n, noun in ((errors, "error"), (warnings, "warning"), (infos, "info"))
            if n
        )
        typer.echo(f"{symbol(False)} {summary} found when analyzing {targets}.", err=err)
        return
    if findings:
        typer.echo("", err=err)
    typer.echo(f"{symbol(True)} No validation issues found when analyzing {targets}.", err=err)


def findings_from_json(items: Any) -> list[Finding]:
    """Findings from the API's JSON (`Finding.to_dict` shape); malformed entries are skipped."""
    out: list[Finding] = []
    if not isinstance(items, list):
        return out
    for d in items:
        if not isinstance(d, dict) or d.get("severity") not in STYLE:
            continue
        line = d.get("line")
        out.append(
            Finding(
                code=str(d.get("code", "")),
                severity=d["severity"],
                message=str(d.get("message", "")),
                file=str(d.get("file") or ""),
                line=line if isinstance(line, int) else None,
                resource=str(d.get("resource") or ""),
                path=str(d.get("path") or ""),
            )
        )
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: every cell padded to its column's width, three spaces apart."""
    cells = [[str(h) for h in headers]] + [
        ["-" if c is None or c == "" else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    """Print a table, or `empty` (to stderr) when there are no rows."""
    if not rows:
        typer.echo(empty, err=True)
        return
    typer.echo(table(headers, rows))


def dump(data: Any, fmt: ReadFormat) -> str:
    """`data` as YAML or JSON text. A YAML list of resources is a multi-document stream."""
    if fmt is ReadFormat.json:
        return json.dumps(data, indent=2, ensure_ascii=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def dump_documents(docs: Sequence[Any]) -> str:
    """Several documents as one YAML stream (`---` between them), as `apply -f -` reads."""
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 90:
        return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"
    if s < 3570:
        return f"{s / 60:.0f}m"
    if s < 47.5 * 3600:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def ago(seconds: float | None) -> str:
    """`3.2s ago` (`-` for None)."""
    return "-" if seconds is None else f"{_span(seconds)} ago"


def in_time(seconds: float | None) -> str:
    """`in 5m`, or `5m ago` for a time already past (`never` for None)."""
    if seconds is None:
        return "never"
    return f"in {_span(seconds)}" if seconds >= 0 else f"{_span(seconds)} ago"


@contextlib.contextmanager
def spinner(message: str) -> Iterator[None]:
    """A spinner with `message` on stderr while the block runs (only on a terminal)."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield
