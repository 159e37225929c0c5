"""The agent against a real control plane process (HTTPS, sub-second leases): apply moves a
running client within a second; an expired lease removes a killed workload; join tokens are
scoped and the CA pinned; a snapshot the agent cannot load is NACKed and the previous one keeps
serving."""

from __future__ import annotations

import signal
import stat
import time
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.agent import JoinTokenError, MeshNotReadyError, PinnedCaMismatchError
from pymesh.errors import ConfigError
from tests.agent.conftest import SE, Kit, eventually
from tests.e2e.meshkit import Backend, destination_rule, route_to, virtual_service

pytestmark = pytest.mark.slow

URL = "http://reviews:9080/"


def backend_of(client: httpx.Client) -> str:
    return client.get(URL).headers["x-backend"]


def to(subset: str) -> dict[str, Any]:
    return virtual_service([{"route": [route_to(subset)]}])


def reviews(kit: Kit, version: str) -> Backend:
    mesh = kit.mesh("reviews", labels={"app": "reviews", "version": version})
    backend = Backend(version)
    kit.serve(mesh, backend)
    return backend


def test_apply_moves_a_running_client_within_a_second(kit: Kit) -> None:
    kit.apply(SE, destination_rule(subsets=["v1", "v2"]), to("v1"))
    reviews(kit, "v1")
    reviews(kit, "v2")
    front = kit.mesh("productpage")
    assert not front.ready()
    with front.http_client() as client:  # waits until ready: certificate + first snapshot
        assert front.ready() and front.identity is not None
        assert str(front.identity.spiffe_id) == "spiffe://cluster.local/ns/default/sa/productpage"
        eventually(lambda: backend_of(client) == "v1")
        for subset in ("v2", "v1"):
            kit.apply(to(subset))
            took = eventually(lambda s=subset: backend_of(client) == s, timeout=3.0)  # type: ignore[misc]
            assert took < 1.0
    agent = front.agent

    def synced() -> bool:  # the ACK is its own POST, after the snapshot is applied
        status = kit.agents()[agent.id]
        return bool(status["synced"]) and status["acked"]["revision"] == agent.revision

    eventually(synced)
    assert agent.source == "control-plane" and agent.nacks == 0
    # key, certificate and snapshot kept owner-only in the data dir
    data = agent.settings.data_dir
    assert data is not None and stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("svid.pem", "identity.json", "snapshot.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600


def test_expired_lease_removes_a_killed_workload(kit: Kit) -> None:
    kit.apply(SE)
    reviews(kit, "a")
    proc, port = kit.run_workload("reviews", "b")  # another process, killed below
    front = kit.mesh("productpage")
    with front.http_client() as client:
        seen: set[str] = set()
        eventually(lambda: seen.add(backend_of(client)) or seen == {"a", "b"})  # type: ignore[func-returns-value]

        def ports() -> set[int]:
            cluster = front.snapshot.clusters["outbound|9080||reviews.default.svc.cluster.local"]
            return {e.port for e in cluster.endpoints}

        assert port in ports()
        proc.send_signal(signal.SIGKILL)  # no deregistration: only the lease can tell
        proc.wait()
        gone = eventually(lambda: port not in ports(), timeout=5.0)
        assert gone < 0.9 + 1.5  # the TTL, then the push
        assert {backend_of(client) for _ in range(20)} == {"a"}


def test_join_tokens_are_scoped(kit: Kit, tmp_path: Any) -> None:
    def start(token: str) -> None:
        mesh = kit.mesh("reviews", token=token, data_dir=tmp_path / f"fresh-{time.time_ns()}")
        mesh.start()

    t0 = time.monotonic()
    with pytest.raises(JoinTokenError, match="bound to another namespace or service account"):
        start(kit.token("ratings"))
    expired = kit.token("reviews", ttl=0.2)
    time.sleep(0.3)
    with pytest.raises(JoinTokenError, match="unknown, expired or revoked"):
        start(expired)
    revoked = kit.token("reviews", ttl=600)
    with kit.admin() as c:
        c.delete(f"/v1/tokens/{revoked.split('.')[1]}").raise_for_status()
    with pytest.raises(JoinTokenError, match="unknown, expired or revoked"):
        start(revoked)
    with pytest.raises(JoinTokenError, match="malformed"):
        start("not-a-token")
    assert time.monotonic() - t0 < 5.0  # refused at once, not after the readiness bound
    metrics = httpx.get(kit.cp.url + "/metrics", verify=kit.cp.verify()).text
    assert 'pymesh_cp_csrs_total{result="signed"}' not in metrics


def test_a_pinned_ca_mismatch_is_refused(kit: Kit, tmp_path: Any) -> None:
    good = kit.token("reviews")
    other = f"{good.rsplit('.', 1)[0]}.{'ab' * 32}"  # pins some other CA
    mesh = kit.mesh("reviews", token=other, data_dir=tmp_path / "pin")
    with pytest.raises(PinnedCaMismatchError, match="does not have the CA the join token pins"):
        mesh.start()
    with kit.admin() as c:  # nothing was sent: no CSR reached the CA
        assert 'result="signed"' not in c.get("/metrics").text


def test_renewal_uses_the_svid_and_registration_is_idempotent(kit: Kit) -> None:
    kit.apply(SE)
    token = kit.token("reviews", ttl=600)
    first = kit.mesh("reviews", token=token)
    first.start()
    assert first.identity is not None
    with kit.admin() as c:  # the join token goes; the SVID it got is the credential now
        c.delete(f"/v1/tokens/{token.split('.')[1]}").raise_for_status()
    serial = first.identity.svid.leaf.serial_number
    first.identity.refresh()  # a renewal through the control plane, over mTLS
    assert first.identity.svid.leaf.serial_number != serial
    # two processes of one pre-fork server register the same address and port: one workload
    second = kit.mesh("reviews")
    first.register(18080)
    second.register(18080)

    def one_workload_two_agents() -> bool:
        with kit.admin() as c:
            items = c.get("/v1/workloads").json()["items"]
        return len(items) == 1 and len(items[0]["agents"]) == 2

    eventually(one_workload_two_agents)
    first.deregister(18080)
    eventually(lambda: not one_workload_two_agents())
    time.sleep(1.2)  # more than a TTL: heartbeats (by SVID) keep the registration
    with kit.admin() as c:
        (w,) = c.get("/v1/workloads").json()["items"]
    assert w["agents"] == [second.agent.id]


def test_not_ready_within_the_bound(tmp_path: Any) -> None:
    mesh = pymesh.Mesh(
        service="reviews",
        control_plane="https://127.0.0.1:9",  # nothing listens there
        token="pmj1.abcd.secret." + "00" * 32,
        data_dir=tmp_path / "nowhere",
        ready_timeout=0.5,
        agent_settings={"retry_initial": 0.05, "retry_max": 0.1},
    )
    try:
        with pytest.raises(MeshNotReadyError, match=r"not ready after 0\.5 s"):
            mesh.start()
    finally:
        mesh.close()


def test_a_snapshot_the_agent_cannot_load_is_nacked(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymesh.agent import agent as agent_module

    real = agent_module.load_text

    def picky(text: str, *args: Any, **kw: Any) -> Any:
        if "nack-me" in text:  # as an older agent would refuse a newer control plane's field
            raise ConfigError("spec.http[0].match[0].headers: this agent cannot load it")
        return real(text, *args, **kw)

    monkeypatch.setattr(agent_module, "load_text", picky)
    kit.apply(SE, destination_rule(subsets=["v1", "v2"]), to("v1"))
    reviews(kit, "v1")
    reviews(kit, "v2")
    front = kit.mesh("productpage")
    with front.http_client() as client:
        eventually(lambda: backend_of(client) == "v1")
        held = front.agent.revision
        bad = virtual_service(
            [
                {
                    "match": [{"headers": {"x-tag": {"exact": "nack-me"}}}],
                    "route": [route_to("v1")],
                },
                {"route": [route_to("v2")]},
            ]
        )
        rev = kit.apply(bad)

        def nacked() -> bool:
            nack = kit.agents()[front.agent.id]["nack"]
            return nack is not None and nack["revision"] == rev

        eventually(nacked)
        status = kit.agents()[front.agent.id]
        assert "this agent cannot load it" in status["nack"]["error"]
        assert status["acked"]["revision"] == held and not status["synced"]
        assert front.agent.revision == held and front.agent.nacks >= 1
        assert {backend_of(client) for _ in range(10)} == {"v1"}  # the previous one serves
        kit.apply(to("v2"))  # a good one is taken again
        eventually(lambda: backend_of(client) == "v2")


def test_heartbeats_carry_edge_statistics_for_top(kit: Kit) -> None:
    """A serving workload's heartbeats report its outbound calls per destination: what the
    control plane's `/v1/stats` (and `pymeshctl top`) show."""
    kit.apply(SE, destination_rule(subsets=["v1"]), to("v1"))
    reviews(kit, "v1")
    front = kit.mesh("productpage")
    kit.serve(front, Backend("productpage"))  # serving: registered, so it heartbeats
    with front.http_client() as client:

        def reported() -> bool:
            assert backend_of(client) == "v1"  # keep traffic flowing across heartbeats
            with kit.admin() as c:
                edges = c.get("/v1/stats").json()["edges"]
            return any(
                e["source"]["service"] == "productpage"
                and "reviews" in e["destination"]
                and e["requests"] > 0
                for e in edges
            )

        eventually(reported, timeout=5.0, every=0.05)
    # and the certificate's expiry, for `pymeshctl status`
    status = kit.agents()[front.agent.id]
    assert status["certificate"]["notAfter"] > time.time()
