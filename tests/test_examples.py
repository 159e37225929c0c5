"""The examples run and print what they promise (real servers on loopback: `slow` tier)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_static_demo() -> None:
    """examples/static/demo.py: an 80/20 split, header routing, and a clear error when v2 stops."""
    result = subprocess.run(
        [sys.executable, "-W", "default", str(ROOT / "examples/static/demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"demo failed\n--- stdout\n{out}--- stderr\n{result.stderr}"

    split = re.search(r"v1: (\d+)  v2: (\d+)  \(VirtualService default/reviews splits 80/20\)", out)
    assert split, out
    v1, v2 = int(split.group(1)), int(split.group(2))
    assert v1 + v2 == 100, out
    assert v1 > v2 > 0, out  # 80/20 over 100 requests; the odds against this are ~1e-9

    assert "x-user: jason -> v2  (the first route matches this header)" in out
    after = out.split("reviews v2 stopped", 1)
    assert len(after) == 2, out
    failed = re.search(r"x-user: jason -> (.+)", after[1])
    assert failed, out
    assert failed.group(1).strip() != "v2", out

    # Clean shutdown: no warnings (ResourceWarning, unclosed sockets, ...) and no tracebacks.
    assert "Warning" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
