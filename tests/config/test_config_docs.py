"""docs/configuration.md covers every field of the typed kinds and every finding code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pymesh.config.findings import CODES
from pymesh.config.schema import MESSAGES, ListOf, MapOf, Message, Status

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def _fields(kind: str) -> set[str]:
    out: set[str] = set()
    todo, seen = [kind], {kind}
    while todo:
        for name, f in MESSAGES[todo.pop()].items():
            out.add(name)
            t = f.type
            while isinstance(t, (ListOf, MapOf)):
                t = t.item if isinstance(t, ListOf) else t.value
            if isinstance(t, Message) and f.status is Status.SUPPORTED and t.name not in seen:
                seen.add(t.name)
                todo.append(t.name)
    return out


@pytest.mark.parametrize(
    "kind",
    [
        "VirtualService",
        "DestinationRule",
        "ServiceEntry",
        "WorkloadEntry",
        "PeerAuthentication",
        "AuthorizationPolicy",
    ],
)
def test_every_field_is_documented(kind: str) -> None:
    missing = sorted(f for f in _fields(kind) if not re.search(rf"[`.]{re.escape(f)}[`.\[]", DOC))
    assert missing == []


def test_every_code_is_documented() -> None:
    missing = [c for c in CODES if f"| {c} |" not in DOC]
    assert missing == []
