"""The examples run and print what they promise (real servers on loopback: `slow` tier)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import ROOT, free_port


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


def _trace_context_demo(*args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-W", "default", str(ROOT / "examples/trace_context_service.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--otel-sdk",), id="otel-sdk"),
        pytest.param((), id="api-only"),
    ],
)
def test_trace_context_service_demo(args: tuple[str, ...]) -> None:
    """examples/trace_context_service.py: callbacks continue the caller's trace with a new
    parent id each and its tracestate; an invalid traceparent restarts the trace."""
    rc, out, err = _trace_context_demo(*args)
    checks = re.findall(r"^  (.+): (yes|NO)$", out, re.MULTILINE)
    assert [name for name, _ in checks] == [
        "same trace id",
        "a new parent id per call",
        "sampled flag carried",
        "tracestate carried",
        "trace restarted",
        "tracestate dropped",
    ], out
    assert all(ok == "yes" for _, ok in checks), out
    assert rc == 0, f"--- stdout\n{out}--- stderr\n{err}"
    assert "Warning" not in err, err
    assert "Traceback" not in err, err


@pytest.mark.slow
def test_trace_context_service_serves_until_interrupted() -> None:
    """`--port N` serves the harness's endpoint until Ctrl-C, then stops cleanly."""
    port = free_port()
    example = str(ROOT / "examples/trace_context_service.py")
    proc = subprocess.Popen(
        [sys.executable, "-W", "default", example, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/test", json=[], timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        assert (response.status_code, response.json()) == (200, [])
        assert httpx.get(f"http://127.0.0.1:{port}/test", timeout=5).status_code == 405
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, f"--- stdout\n{out}--- stderr\n{err}"
    assert "Traceback" not in err and "Warning" not in err, err
