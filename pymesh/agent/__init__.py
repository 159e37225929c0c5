"""The control-plane agent that runs inside every `pymesh.Mesh` in control-plane mode.

    mesh = pymesh.Mesh(service="reviews", control_plane="https://cp:15012", token="pmj1....")
    mesh.start()            # certificate + first snapshot (bounded wait), or a clear error
    mesh.server(app).start()  # serves with mTLS and registers the port it really listens on

`Agent` (`agent.py`) gets the workload's certificate with the join token, registers its
listeners, watches its snapshot, ACKs / NACKs, renews, and keeps the last good state on disk
(`files.py`); `ControlPlaneClient` (`client.py`) pins the control plane's CA by the token's
hash. See docs/agent.md.
"""

from pymesh.agent.agent import Agent, AgentSettings, Listener
from pymesh.agent.client import ControlPlaneClient, JoinToken, ca_hash_of
from pymesh.agent.errors import (
    AgentError,
    ControlPlaneError,
    ControlPlaneUnavailableError,
    JoinTokenError,
    MeshNotReadyError,
    PinnedCaMismatchError,
)
from pymesh.agent.files import AgentFiles

__all__ = [
    "Agent",
    "AgentError",
    "AgentFiles",
    "AgentSettings",
    "ControlPlaneClient",
    "ControlPlaneError",
    "ControlPlaneUnavailableError",
    "JoinToken",
    "JoinTokenError",
    "Listener",
    "MeshNotReadyError",
    "PinnedCaMismatchError",
    "ca_hash_of",
]
