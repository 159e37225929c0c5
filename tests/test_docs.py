"""Every code block in docs/**/*.md and README.md runs here, so the docs cannot rot.

Per markdown file (one test each, named by the file), in a fresh temporary working directory:

1. every ```yaml block whose first line is `# file: NAME` is written to NAME (all of them first,
   so a python block may load a file shown further down);
2. then the blocks run in document order, sharing one namespace per file:
   - ```python blocks are executed; ```python no-run blocks are skipped (use sparingly);
   - ```console blocks: every line starting with `$ ` is a shell command (a line ending in `\\`
     continues on the next), run by bash with the venv's bin first on PATH; it must exit 0, or N
     when the info string says `console exit=N`. Other lines are sample output, not checked.

Other languages (```sh, ```bash, ```text, ...) are shown, not run. A failure names the file and
the block's line; tracebacks point into the markdown file itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
FILE_MARK = re.compile(r"^#\s*file:\s*(?P<name>\S+)\s*$")
COMMAND_TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, the rest of its info string, and where it starts."""

    lang: str
    attrs: tuple[str, ...]
    fence_line: int  # 1-based line of the opening fence
    code: str

    @property
    def first_line(self) -> int:
        """1-based line number of the block's first code line."""
        return self.fence_line + 1

    @property
    def file_name(self) -> str | None:
        """NAME for a yaml block that starts with `# file: NAME`, else None."""
        if self.lang not in ("yaml", "yml"):
            return None
        first = self.code.split("\n", 1)[0]
        m = FILE_MARK.match(first.strip())
        return m.group("name") if m else None

    @property
    def runnable(self) -> bool:
        """Whether the harness does anything with this block."""
        if self.lang == "python":
            return "no-run" not in self.attrs
        return self.lang == "console" or self.file_name is not None

    def expected_exit(self) -> int:
        """For a console block: the exit code its commands must return (`exit=N`, default 0)."""
        for attr in self.attrs:
            if attr.startswith("exit="):
                return int(attr.removeprefix("exit="))
        return 0


def parse_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, in order (indented fences, e.g. in lists, too)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group("indent"), m.group("fence"), m.group("info").split()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if stripped.startswith(fence) and stripped == fence[0] * len(stripped):
                break
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # past the closing fence
        lang = info[0].lower() if info else ""
        blocks.append(Block(lang, tuple(info[1:]), start + 1, "\n".join(body) + "\n"))
    return blocks


def console_commands(block: Block) -> list[tuple[int, str]]:
    """(line number, command) for each `$ ` line of a console block, continuations joined."""
    commands: list[tuple[int, str]] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            lineno = block.first_line + i
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i]
            commands.append((lineno, command))
        i += 1
    return commands


def doc_files() -> list[Path]:
    """README.md and every markdown file under docs/ that has a block to run."""
    candidates = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [
        p
        for p in candidates
        if p.is_file() and any(b.runnable for b in parse_blocks(p.read_text(encoding="utf-8")))
    ]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _run_python(block: Block, doc: Path, namespace: dict[str, object]) -> None:
    # Pad so line numbers in tracebacks are the markdown file's own.
    source = "\n" * (block.first_line - 1) + block.code
    code = compile(source, str(doc), "exec", dont_inherit=True)
    try:
        exec(code, namespace)
    except BaseException as exc:
        exc.add_note(f"in the ```python block at {_rel(doc)}:{block.fence_line}")
        raise


def _run_console(block: Block, doc: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    expected = block.expected_exit()
    for lineno, command in console_commands(block):
        result = subprocess.run(
            command,
            shell=True,
            executable="/bin/bash",
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode != expected:
            pytest.fail(
                f"{_rel(doc)}:{lineno}: `{command}` exited {result.returncode}, "
                f"expected {expected}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}",
                pytrace=False,
            )


@pytest.mark.parametrize("doc", doc_files(), ids=_rel)
def test_doc(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write the doc's files, then run its python and console blocks in order."""
    blocks = parse_blocks(doc.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        name = block.file_name
        if name is not None:
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")

    # One namespace per doc, as a real module (dataclasses, pickle and typing look it up).
    module = types.ModuleType("__pymesh_doc__")
    module.__file__ = str(doc)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks:
        if not block.runnable:
            continue
        if block.lang == "python":
            _run_python(block, doc, module.__dict__)
        elif block.lang == "console":
            _run_console(block, doc)


def test_docs_have_runnable_blocks() -> None:
    """The harness finds real python blocks to run (guards against a parser that finds none)."""
    found = [
        b
        for doc in doc_files()
        for b in parse_blocks(doc.read_text(encoding="utf-8"))
        if b.lang == "python" and b.runnable
    ]
    assert found, "no runnable ```python block in docs/ or README.md"


SAMPLE = """\
# Title

```yaml
# file: conf/mesh.yaml
kind: X
```

- a list item:

  ```python
  x = 1
  ```

```python no-run
raise SystemExit
```

````console exit=2
$ false \\
  && true
out
$ exit 2
````

```text
not run
```
"""


def test_parse_blocks() -> None:
    """The fence parser: languages, attributes, line numbers, indented fences, continuations."""
    blocks = parse_blocks(SAMPLE)
    assert [(b.lang, b.attrs, b.fence_line) for b in blocks] == [
        ("yaml", (), 3),
        ("python", (), 10),
        ("python", ("no-run",), 14),
        ("console", ("exit=2",), 18),
        ("text", (), 25),
    ]
    assert blocks[0].file_name == "conf/mesh.yaml"
    assert blocks[1].code == "x = 1\n"
    assert [b.runnable for b in blocks] == [True, True, False, True, False]
    assert blocks[3].expected_exit() == 2
    assert console_commands(blocks[3]) == [(19, "false \\\n  && true"), (22, "exit 2")]


def test_harness_runs_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A markdown file with a yaml file, python that reads it, and a console block runs clean."""
    doc = tmp_path / "sample.md"
    doc.write_text(
        "```yaml\n# file: a.yaml\nk: v\n```\n\n"
        "```python\nfrom pathlib import Path\ntext = Path('a.yaml').read_text()\n```\n\n"
        "```python\nassert 'k: v' in text\n```\n\n"
        "```console\n$ test -f a.yaml && python -c 'import sys'\n```\n",
        encoding="utf-8",
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # failure messages name files from ROOT
    test_doc(doc, work, monkeypatch)


def test_harness_reports_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A console command with the wrong exit code fails the doc, naming the file and line."""
    doc = tmp_path / "bad.md"
    doc.write_text("text\n\n```console exit=3\n$ exit 4\n```\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"bad\.md:4: `exit 4` exited 4, expected 3"):
        test_doc(doc, work, monkeypatch)
