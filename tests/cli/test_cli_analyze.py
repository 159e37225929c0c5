"""`pymeshctl analyze` and `pymeshctl version`, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "config" / "data"
PYMESHCTL = Path(sys.executable).parent / "pymeshctl"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = str(PYMESHCTL) if PYMESHCTL.exists() else "pymeshctl"
    return subprocess.run(
        [exe, *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        env={"PATH": str(PYMESHCTL.parent), "PYTHONIOENCODING": "utf-8", "COLUMNS": "120"},
    )


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout


def test_clean_file_exits_0() -> None:
    p = run("analyze", "-f", DATA / "mesh.yaml")
    no_traceback(p)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == (
        f"\u2714 No validation issues found when analyzing {DATA / 'mesh.yaml'}."
    )


def test_info_only_exits_0_and_shows_infos() -> None:
    p = run("analyze", "-f", DATA / "info.yaml")
    no_traceback(p)
    assert p.returncode == 0
    assert "Info [PM0004] (ServiceEntry default/ratings" in p.stdout
    assert "No validation issues found" in p.stdout


def test_warning_exits_1() -> None:
    p = run("analyze", "-f", DATA / "warn.yaml")
    no_traceback(p)
    assert p.returncode == 1
    assert "Warning [PM0101]" in p.stdout
    assert "1 warning found when analyzing" in p.stdout


def test_error_exits_1_with_file_line_resource_and_path() -> None:
    p = run("analyze", "-f", DATA / "bad.yaml")
    no_traceback(p)
    assert p.returncode == 1
    assert (
        f"Error [PM0002] (VirtualService default/reviews {DATA / 'bad.yaml'}:13) "
        'spec.http[0].retries.attemps: unknown field "attemps" (did you mean "attempts"?)'
    ) in p.stdout
    assert "1 error" in p.stdout


def test_json_output() -> None:
    p = run("analyze", "-f", DATA / "bad.yaml", "-f", DATA / "dir", "-o", "json")
    no_traceback(p)
    assert p.returncode == 1
    data = json.loads(p.stdout)
    assert isinstance(data, list) and data
    first = data[0]
    assert set(first) == {"code", "severity", "message", "file", "line", "resource", "path"}
    assert (first["code"], first["line"], first["path"]) == (
        "PM0002",
        13,
        "spec.http[0].retries.attemps",
    )


def test_json_output_clean_is_empty_list() -> None:
    p = run("analyze", "-f", DATA / "mesh.yaml", "--output", "json")
    assert p.returncode == 0
    assert json.loads(p.stdout) == []


def test_directory() -> None:
    p = run("analyze", "-f", DATA / "dir")
    no_traceback(p)
    assert p.returncode == 0, p.stdout


def test_namespace_option() -> None:
    p = run("analyze", "-f", DATA / "warn.yaml", "--namespace", "prod", "-o", "json")
    assert [f["resource"] for f in json.loads(p.stdout)] == ["VirtualService prod/httpbin"]


def test_malformed_yaml_reports_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("apiVersion: v1\nkind: VirtualService\nmetadata:\n  name: a: b\n")
    p = run("analyze", "-f", f)
    no_traceback(p)
    assert p.returncode == 1
    assert f"Error [PM0001] ({f}:4) invalid YAML" in p.stdout


def test_missing_file_is_a_usage_error() -> None:
    p = run("analyze", "-f", DATA / "does-not-exist.yaml")
    no_traceback(p)
    assert p.returncode == 2
    assert "does-not-exist.yaml: no such file or directory" in p.stderr
    assert p.stdout == ""


def test_without_files_it_asks_the_control_plane() -> None:
    """No -f: the live configuration; an unreachable control plane is one line, exit 1."""
    p = run("analyze", "--control-plane", "http://127.0.0.1:1")
    no_traceback(p)
    assert p.returncode == 1
    assert p.stderr.startswith("pymeshctl: error: cannot reach the control plane at ")
    assert p.stdout == ""


@pytest.mark.parametrize("args", [("version",)])
def test_version(args: tuple[str, ...]) -> None:
    p = run(*args)
    assert p.returncode == 0
    assert p.stdout.startswith("pymeshctl ")
