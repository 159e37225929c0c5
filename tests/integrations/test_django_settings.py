"""`settings.PYMESH["telemetry"]`: read into a `TelemetryConfig` (a dict of its fields, True,
False or the object itself), a mistake is `ImproperlyConfigured` naming it, and the process's
mesh is built with it. Django is configured in this process only inside `pymesh_settings`,
whatever settings were there before are put back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from pymesh.telemetry import TelemetryConfig
from pymesh_django.runtime import Options


@contextlib.contextmanager
def pymesh_settings(**pymesh: Any) -> Iterator[None]:
    from django.conf import settings
    from django.utils.functional import empty

    saved = settings._wrapped
    settings._wrapped = empty
    settings.configure(PYMESH=pymesh)
    try:
        yield
    finally:
        settings._wrapped = saved


def test_telemetry_from_a_dict_reaches_the_mesh() -> None:
    with pymesh_settings(service="reviews", telemetry={"sampling": 0.5, "access_log": True}):
        options = Options.from_settings()
    assert options.telemetry == TelemetryConfig(sampling=0.5, access_log=True)
    mesh = options.build()
    try:
        assert mesh.telemetry is not None and mesh.telemetry.sampling == 0.5
    finally:
        mesh.close()


@pytest.mark.parametrize("value", [True, False, TelemetryConfig(metrics=False), None])
def test_telemetry_true_false_or_a_config(value: Any) -> None:
    with pymesh_settings(service="reviews", telemetry=value):
        assert Options.from_settings().telemetry == value
    with pymesh_settings(service="reviews"):
        assert Options.from_settings().telemetry is None  # pymesh.telemetry.configure()'s


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"sampling": 0.5, "sampels": 1}, "'telemetry': "),
        ("yes", "'telemetry' must be True, False, a dict"),
    ],
)
def test_a_telemetry_mistake_is_improperly_configured(value: Any, says: str) -> None:
    with (
        pymesh_settings(service="reviews", telemetry=value),
        pytest.raises(ImproperlyConfigured, match=says) as info,
    ):
        Options.from_settings()
    assert str(info.value).startswith("settings.PYMESH: ")
    if isinstance(value, dict):
        assert "sampels" in str(info.value)


def test_telemetry_with_a_mesh_factory_is_refused() -> None:
    with (
        pymesh_settings(mesh=lambda: None, telemetry=True),
        pytest.raises(ImproperlyConfigured, match="not both"),
    ):
        Options.from_settings()
