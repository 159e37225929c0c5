"""Property-based fuzzing of the API from its own OpenAPI spec (schemathesis) against the real
process: whatever the input, no 5xx. Bounded: 25 examples per operation (derandomized, so a
failure reproduces), each sent with the admin token (so the handlers, not just the auth check,
see the input) and without it.

The operations are read from the app's spec at collection time (one test per operation);
hypothesis drives schemathesis' strategies directly. `/v1/watch` is left out: it is an endless
stream (its first message is what `/v1/snapshot` returns, which is fuzzed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from pymesh_controlplane.server import ControlPlane, Settings
from tests.controlplane.conftest import ControlPlaneProcess

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = ControlPlane(
    Settings(data_dir=Path("unused")), admin_token="-"
).app.openapi()
OPERATIONS = [
    (method.upper(), path)
    for path, item in SPEC["paths"].items()
    for method in item
    if path != "/v1/watch"
]


@pytest.fixture(scope="module")
def fuzzed_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    cp = ControlPlaneProcess(Path(tmp_path_factory.mktemp("fuzz")) / "cp", "--max-body", "65536")
    cp.start()
    yield cp
    assert cp.stop() == 0


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(method: str, path: str, fuzzed_cp: ControlPlaneProcess) -> None:
    operation = schemathesis.openapi.from_dict(SPEC)[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        for headers in (fuzzed_cp.auth, {}):
            response = case.call(base_url=fuzzed_cp.url, headers=headers, timeout=5)
            case.validate_response(response, checks=[not_a_server_error])

    check()
