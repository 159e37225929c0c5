"""What the control-plane agent raises. Every error says which control plane, what it answered
and what to do; `Mesh.start()` raises them (fatal ones at once, `MeshNotReadyError` after the
readiness bound)."""

from __future__ import annotations

from pymesh.errors import MeshError

__all__ = [
    "AgentError",
    "ControlPlaneError",
    "ControlPlaneUnavailableError",
    "JoinTokenError",
    "MeshNotReadyError",
    "PinnedCaMismatchError",
]


class AgentError(MeshError):
    """Base of the control-plane agent's errors."""


class ControlPlaneError(AgentError):
    """The control plane refused a request for good (a retry would get the same answer): a
    refused CSR, a malformed request. `status` and `code` are its HTTP status and error code."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class JoinTokenError(ControlPlaneError):
    """The join token is malformed, unknown, expired, revoked, or bound to another identity."""


class PinnedCaMismatchError(AgentError):
    """The control plane's CA is not the one the join token pins (its hash differs): the agent
    refuses to talk to it (a wrong address, or someone in the middle)."""


class ControlPlaneUnavailableError(AgentError):
    """The control plane cannot be reached or answered with a transient error (retried with
    back-off)."""


class MeshNotReadyError(AgentError):
    """The mesh got no certificate or no first configuration within the readiness bound."""
