"""Loading files: multi-document YAML, JSON, directories, and the shipped fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymesh.config import analyze_files, load_files
from pymesh.config.model import (
    DestinationRule,
    ServiceEntry,
    VirtualService,
    WorkloadEntry,
)
from pymesh.errors import ConfigError

DATA = Path(__file__).parent / "data"


def test_load_fixture_mesh() -> None:
    cs = load_files([DATA / "mesh.yaml"])
    kinds = [type(r) for r in cs.resources]
    assert kinds == [ServiceEntry, VirtualService, DestinationRule]
    vs = cs.resources[1]
    assert isinstance(vs, VirtualService)
    assert [r.weight for r in vs.http[1].route] == [75, 25]
    assert vs.http[1].retries is not None
    assert vs.http[1].retries.retry_on == ("connect-failure", "refused-stream", "503")
    assert vs.meta.source is not None and vs.meta.source.line == 24


def test_single_path_string_is_accepted() -> None:
    assert len(load_files(str(DATA / "mesh.yaml")).resources) == 3


def test_directory_loads_yaml_yml_json_sorted_and_skips_others() -> None:
    cs = load_files([DATA / "dir"])
    assert [(type(r).__name__, r.meta.name) for r in cs.resources] == [
        ("ServiceEntry", "ratings"),
        ("WorkloadEntry", "ratings-1"),
        ("VirtualService", "ratings"),
        ("DestinationRule", "ratings"),
    ]
    we = cs.resources[1]
    assert isinstance(we, WorkloadEntry) and we.endpoint.ports == {"http": 8080}
    files = {Path(r.meta.source.file).name for r in cs.resources if r.meta.source}
    assert files == {"10-services.yaml", "20-routes.yml", "30-rules.json"}


def test_files_and_directories_together() -> None:
    cs = load_files([DATA / "mesh.yaml", DATA / "dir"])
    assert len(cs.resources) == 7


def test_json_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(
        '{\n  "apiVersion": "networking.istio.io/v1",\n  "kind": "DestinationRule",\n'
        '  "metadata": {"name": "r"},\n  "spec": {\n    "host": "r",\n'
        '    "subsetz": []\n  }\n}\n'
    )
    (f,) = [f for f in analyze_files([p]) if f.severity == "error"]
    assert (f.code, f.line, f.path) == ("PM0002", 7, "spec.subsetz")


def test_bad_file_in_directory_refuses_everything(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text((DATA / "mesh.yaml").read_text())
    (tmp_path / "b.yaml").write_text("kind: [\n")
    with pytest.raises(ConfigError) as info:
        load_files([tmp_path])
    (f,) = info.value.findings
    assert str(tmp_path / "b.yaml") in str(f)


def test_non_utf8_file_is_a_finding(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_bytes(b"\xff\xfe\x00")
    (f,) = analyze_files([p])
    assert f.code == "PM0001" and "cannot read file" in f.message


def test_duplicate_resource_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text((DATA / "info.yaml").read_text())
    (tmp_path / "b.yaml").write_text((DATA / "info.yaml").read_text())
    errors = [f for f in analyze_files([tmp_path]) if f.severity == "error"]
    assert [(f.code, Path(f.file).name, f.path) for f in errors] == [
        ("PM0014", "b.yaml", "metadata.name")
    ]
    assert "defined twice (first at" in errors[0].message


def test_findings_are_in_file_then_line_order() -> None:
    findings = analyze_files([DATA / "info.yaml", DATA / "bad.yaml", DATA / "warn.yaml"])
    order = [(Path(f.file).name, f.line) for f in findings]
    assert [n for n, _ in order] == sorted(
        (n for n, _ in order), key=["info.yaml", "bad.yaml", "warn.yaml"].index
    )
