"""Read YAML / JSON files into plain documents that remember the line of every field.

How this works: PyYAML composes each document into a node tree (which carries marks), and
`_Converter` walks that tree into plain Python values (dict / list / str / int / float / bool /
None) while recording, for every field path (`spec.http[0].route[1].weight`), the 1-based line
where the field's key (or the list item) starts. Problems found on the way — malformed YAML,
duplicate keys, unknown tags — become findings, never exceptions.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pymesh.config.findings import Finding, q

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document (or JSON file): its data and the line of every field path."""

    file: str
    line: int
    data: object
    lines: dict[str, int] = field(default_factory=dict)
    # problems met converting this document (duplicate keys, bad values); validation reports
    # them with the resource they belong to
    problems: tuple[Finding, ...] = ()

    def line_of(self, path: str) -> int:
        """The line of `path`, or of its nearest ancestor that has one, or the document's."""
        p = path
        while p:
            found = self.lines.get(p)
            if found is not None:
                return found
            p = parent_path(p)
        return self.line


def join_path(path: str, key: object) -> str:
    """`path` extended by mapping key `key`: `.name`, or `["a.b/c"]` for keys that need quoting."""
    k = str(key)
    if _PLAIN_KEY.match(k):
        return f"{path}.{k}" if path else k
    return f"{path}[{json.dumps(k, ensure_ascii=False)}]"


def parent_path(path: str) -> str:
    """The path one level up (`a.b[0]` → `a.b`, `a.b` → `a`, `a` → ``)."""
    if path.endswith("]"):
        depth = 0
        for i in range(len(path) - 1, -1, -1):
            c = path[i]
            if c == "]":
                depth += 1
            elif c == "[":
                depth -= 1
                if depth == 0:
                    return path[:i]
        return ""
    i = path.rfind(".")
    return path[:i] if i >= 0 else ""


class _Converter:
    """Node tree → plain data plus a path → line table (one instance per document)."""

    def __init__(self, file: str, findings: list[Finding], json_mode: bool) -> None:
        self.file = file
        self.findings = findings
        self.json_mode = json_mode
        self.lines: dict[str, int] = {}
        self.constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()

    def error(self, code: str, path: str, line: int, message: str) -> None:
        self.findings.append(Finding(code, "error", message, self.file, line, "", path))

    def convert(self, node: Node, path: str) -> object:
        if id(node) in self._active:
            self.error("PM0001", path, node.start_mark.line + 1, "recursive YAML alias")
            return None
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                out: list[object] = []
                for i, item in enumerate(node.value):
                    child = f"{path}[{i}]"
                    self.lines[child] = item.start_mark.line + 1
                    out.append(self.convert(item, child))
                return out
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
        finally:
            self._active.discard(id(node))
        return None  # pragma: no cover - PyYAML has no other node kinds

    def scalar(self, node: ScalarNode, path: str) -> object:
        if self.json_mode and node.style is None:
            with contextlib.suppress(ValueError):  # not JSON: read as YAML below
                return json.loads(node.value)
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as exc:
            line = node.start_mark.line + 1
            self.error("PM0001", path, line, f"cannot read value {q(node.value)}: {_problem(exc)}")
            return None

    def mapping(self, node: MappingNode, path: str) -> dict[object, object]:
        out: dict[object, object] = {}
        merged: set[object] = set()
        for knode, vnode in node.value:
            if knode.tag == _MERGE_TAG:
                self.merge(vnode, path, out, merged)
                continue
            line = knode.start_mark.line + 1
            if not isinstance(knode, ScalarNode):
                self.error("PM0001", path, line, "a mapping key must be a plain value")
                continue
            key = self.scalar(knode, path)
            if isinstance(key, (list, dict)) or (key is None and knode.tag != _STR_TAG):
                self.error("PM0001", path, line, f"invalid mapping key {q(knode.value)}")
                continue
            child = join_path(path, key)
            if key in out and key not in merged:
                first = self.lines.get(child)
                where = f" (first at line {first})" if first else ""
                self.error("PM0009", child, line, f"duplicate key {q(str(key))}{where}")
                continue
            merged.discard(key)
            self.lines[child] = line
            out[key] = self.convert(vnode, child)
        return out

    def merge(self, vnode: Node, path: str, out: dict[object, object], merged: set[object]) -> None:
        """YAML merge keys (`<<: *defaults`): merged keys never override explicit ones."""
        sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
        for src in sources:
            value = self.convert(src, path)
            if not isinstance(value, dict):
                self.error(
                    "PM0001", path, vnode.start_mark.line + 1, "a merge key (<<) needs a mapping"
                )
                continue
            for k, v in value.items():
                if k not in out:
                    out[k] = v
                    merged.add(k)


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        context = exc.context or ""
        cm, pm = exc.context_mark, exc.problem_mark
        if context and cm is not None and (pm is None or cm.line != pm.line):
            context += f" (from line {cm.line + 1})"
        parts = [p for p in (context, exc.problem) if p]
        return "; ".join(parts) or str(exc)
    return str(exc)


def parse_text(text: str, filename: str = "<string>") -> tuple[list[Document], list[Finding]]:
    """Every non-empty document in `text`, and the syntax findings met while reading it.

    A syntax error stops reading at that point (the documents before it are kept)."""
    findings: list[Finding] = []
    docs: list[Document] = []
    json_mode = filename.lower().endswith(".json")
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            if node is None:
                continue
            if isinstance(node, ScalarNode) and node.value.strip() == "" and node.style is None:
                continue
            problems: list[Finding] = []
            conv = _Converter(filename, problems, json_mode)
            data = conv.convert(node, "")
            if data is None:
                findings += problems
                continue
            line = node.start_mark.line + 1
            docs.append(Document(filename, line, data, conv.lines, tuple(problems)))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        findings.append(
            Finding("PM0001", "error", f"invalid YAML: {_problem(exc)}", filename, line)
        )
    return docs, findings


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[Finding]]:
    """Files to read: each file as given; each directory's `*.yaml`, `*.yml`, `*.json`
    (not recursive), sorted by name. Missing paths become findings."""
    files: list[Path] = []
    findings: list[Finding] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            try:
                files += sorted(
                    c for c in p.iterdir() if c.is_file() and c.suffix.lower() in SUFFIXES
                )
            except OSError as exc:
                reason = exc.strerror or str(exc)
                findings.append(
                    Finding("PM0001", "error", f"cannot read directory: {reason}", str(p))
                )
        elif p.exists():
            files.append(p)
        else:
            findings.append(Finding("PM0001", "error", "no such file or directory", str(p)))
    return files, findings


def read_files(paths: Sequence[str | Path]) -> tuple[list[Document], list[Finding], list[str]]:
    """Documents of every file `expand_paths` finds, every finding met reading them, and the
    names of the files read, in order."""
    files, findings = expand_paths(paths)
    docs: list[Document] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            findings.append(Finding("PM0001", "error", f"cannot read file: {reason}", str(f)))
            continue
        d, fs = parse_text(text, str(f))
        docs += d
        findings += fs
    return docs, findings, [str(f) for f in files]
