"""The one `MeshError` tree. Adapters map these to their native errors in one place each
(`pymesh._httpx_errors` for httpx); code that decides raises these, never a native error."""

from __future__ import annotations


class MeshError(Exception):
    """Base of every error pymesh raises on purpose. Its message says what happened and why."""


class ConfigError(MeshError):
    """Configuration was refused. `findings` lists every problem (file, resource, field, line)."""

    def __init__(self, message: str, findings: list[object] | None = None) -> None:
        super().__init__(message)
        self.findings: list[object] = list(findings or [])


class CallError(MeshError):
    """A meshed call failed. `flags` are Envoy-style response flags; `decision` is the record
    of what the mesh decided and tried (route, endpoint, attempts)."""

    flags: str = ""

    def __init__(self, message: str, decision: object | None = None) -> None:
        super().__init__(message)
        self.decision = decision


class NoRouteError(CallError):
    """No VirtualService route matched the request (flag NR)."""

    flags = "NR"


class EgressDeniedError(NoRouteError):
    """The host is not a mesh service this workload may call, and its Sidecar's
    `outboundTrafficPolicy` is REGISTRY_ONLY (Envoy's BlackHoleCluster: flag NR)."""

    flags = "NR"


class NoHealthyEndpointError(CallError):
    """The destination has no endpoint to send to: none defined or all ejected (flag UH)."""

    flags = "UH"


class MeshTimeoutError(CallError):
    """The route timeout or the last attempt's per-try timeout ran out (flag UT)."""

    flags = "UT"


class RetriesExhaustedError(CallError):
    """Every allowed attempt failed to reach the upstream (flags URX plus the last cause)."""

    flags = "URX"


class CircuitOpenError(CallError):
    """A connection-pool limit of the destination (DestinationRule `connectionPool`, Envoy's
    circuit breakers) refused the call at once, rather than queueing it (flag UO)."""

    flags = "UO"


class UpstreamConnectError(CallError):
    """The one allowed attempt could not connect or was reset before a response (UF / UC)."""

    flags = "UF"
