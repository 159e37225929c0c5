"""A meshed workload in its own process, for the agent tests: `python workload.py NAME`.

Configured by the environment (`pymesh.Mesh.from_env`), it serves a `Backend(NAME)` with the
mesh's mTLS on a free port, registers it, prints `READY <port>` and runs until killed.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pymesh
from tests.e2e.meshkit import Backend


def main() -> None:
    name = sys.argv[1]
    mesh = pymesh.Mesh.from_env(agent_settings={"retry_initial": 0.05, "retry_max": 0.3})
    server = mesh.server(Backend(name)).start()
    print(f"READY {server.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
