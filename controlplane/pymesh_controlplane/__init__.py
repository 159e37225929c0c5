"""pymesh-controlplane: the control plane of pymesh.

It stores Istio resources (validated as `pymeshctl analyze` does), keeps the workload registry
(registration and heartbeat leases), signs workload certificates (the CA) and streams versioned
config snapshots to the agents in `pymesh.Mesh`. See DESIGN.md, "Control plane".
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
