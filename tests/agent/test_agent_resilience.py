"""The control plane goes away under load: no request fails, a client restarted meanwhile starts
from disk and serves, and changes made after the control plane is back reach the clients."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import httpx
import pytest

import pymesh
from tests.agent.conftest import SE, Kit, eventually
from tests.e2e.meshkit import Backend, destination_rule, route_to, virtual_service

pytestmark = pytest.mark.slow

URL = "http://reviews:9080/"


class Load:
    """A thread sending requests through a meshed client until stopped."""

    def __init__(self, mesh: pymesh.Mesh) -> None:
        self.client = mesh.http_client()
        self.ok: Counter[str] = Counter()
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = self.client.get(URL)
                r.raise_for_status()
                self.ok[r.headers["x-backend"]] += 1
            except httpx.HTTPError as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")

    def total(self) -> int:
        return sum(self.ok.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def to(subset: str) -> dict[str, Any]:
    return virtual_service([{"route": [route_to(subset)]}])


def test_control_plane_killed_under_load_then_restarted(kit: Kit) -> None:
    kit.apply(SE, destination_rule(subsets=["v1", "v2"]), to("v1"))
    for version in ("v1", "v2"):
        mesh = kit.mesh("reviews", labels={"app": "reviews", "version": version})
        kit.serve(mesh, Backend(version))
    data_dir = kit.tmp / "front"
    front = kit.mesh("productpage", data_dir=data_dir)
    load = Load(front)
    try:
        eventually(lambda: load.ok["v1"] > 20)
        kit.cp.kill()  # SIGKILL: streams cut, nothing said
        before = load.total()
        eventually(lambda: load.total() > before + 200, timeout=10.0)
    finally:
        load.stop()
    assert load.failed == [] and set(load.ok) == {"v1"}

    # a client restarted while the control plane is down starts from its data dir
    held = front.agent.revision
    front.close()
    again = kit.mesh("productpage", data_dir=data_dir, ready_timeout=3.0)
    again.start()
    assert again.agent.source == "disk" and again.agent.revision == held
    load = Load(again)
    try:
        eventually(lambda: load.ok["v1"] > 20)
        kit.cp.start(same_port=True)  # back, on the same address, with the same store
        kit.apply(to("v2"))  # a change made after the restart reaches the running client
        eventually(lambda: load.ok["v2"] > 20, timeout=10.0)
    finally:
        load.stop()
    assert load.failed == []
    assert again.agent.source == "control-plane"
    eventually(lambda: kit.agents()[again.agent.id]["synced"])
