"""pymesh: a service mesh inside the Python process.

`Mesh` is what users touch; `MeshTransport` / `AsyncMeshTransport` are the httpx transports;
the errors say why a meshed call failed.
"""

from pymesh._async.transport import AsyncMeshTransport
from pymesh._sync.transport import MeshTransport
from pymesh.errors import (
    CallError,
    CircuitOpenError,
    ConfigError,
    EgressDeniedError,
    MeshError,
    MeshTimeoutError,
    NoHealthyEndpointError,
    NoRouteError,
    RetriesExhaustedError,
    UpstreamConnectError,
)
from pymesh.mesh import Mesh

__version__ = "0.1.0"

__all__ = [
    "AsyncMeshTransport",
    "CallError",
    "CircuitOpenError",
    "ConfigError",
    "EgressDeniedError",
    "Mesh",
    "MeshError",
    "MeshTimeoutError",
    "MeshTransport",
    "NoHealthyEndpointError",
    "NoRouteError",
    "RetriesExhaustedError",
    "UpstreamConnectError",
    "__version__",
]
