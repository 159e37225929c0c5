"""The e2e fixtures (backends, refusing ports) for the telemetry tests."""

from tests.e2e.conftest import backends, refusing_port

__all__ = ["backends", "refusing_port"]
