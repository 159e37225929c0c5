"""WorkloadIdentity without the network: renewal timing (a pure function), renewals and their
failures (tenacity back-off, counters, warnings), bundle updates, and how the key reaches ssl
(memfd, or a 0600 file only when asked)."""

from __future__ import annotations

import logging
import os
import random
import ssl
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from pymesh.identity import (
    CertificateAuthority,
    IssuedSvid,
    RenewalError,
    SpiffeId,
    WorkloadIdentity,
    load_key_and_chain,
    renewal_delay,
)
from pymesh.identity import tls as tls_module

ID = SpiffeId.workload("cluster.local", "default", "reviews")


class FixedRng(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("received", "not_after", "draw", "delay"),
    [
        (0.0, 100.0, 0.0, 50.0),  # half-life
        (0.0, 100.0, 1.0, 40.0),  # at most 10 % earlier, never later
        (0.0, 100.0, 0.5, 45.0),
        (50.0, 150.0, 0.0, 50.0),  # counts from receipt, not notBefore
        (10.0, 5.0, 0.0, 0.0),  # already expired: renew now
        (0.0, 2.0, 0.0, 1.0),  # 2 s leaves renew every second
    ],
)
def test_renewal_delay(received: float, not_after: float, draw: float, delay: float) -> None:
    """Half the remaining lifetime minus up to 10 % jitter."""
    assert renewal_delay(received, not_after, FixedRng(draw)) == pytest.approx(delay)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate("cluster.local")


def pub(svid: IssuedSvid) -> bytes:
    return svid.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_first_svid_and_refresh(ca: CertificateAuthority) -> None:
    """The first SVID is fetched at construction; refresh() makes a new key, new SVID and new
    contexts; the server context handed out follows (the same family, a new current)."""
    ident = WorkloadIdentity.from_ca(ca, ID, ttl=600, rng=FixedRng(0.0))
    assert ident.generation == 1 and ident.svid.spiffe_id == ID
    assert ident.next_renewal_at == pytest.approx(ident.received_at + 300, abs=2)
    client, server = ident.client_context(), ident.server_context()
    assert client.verify_mode == ssl.CERT_REQUIRED and not client.check_hostname
    assert server.verify_mode == ssl.CERT_REQUIRED and server.sni_callback is not None
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    permissive = ident.server_context(require_client_cert=False)
    assert permissive.verify_mode == ssl.CERT_OPTIONAL
    old = ident.svid
    ident.refresh()
    assert ident.generation == 2 and ident.renewals == 1
    assert pub(ident.svid) != pub(old)  # a new key each time
    assert ident.client_context() is not client
    assert ident.server_context() is not server
    assert ident.server_context(require_client_cert=False) is not permissive
    assert "generation=2" in repr(ident) and "stopped" in repr(ident)


def test_signer_failures_at_start(ca: CertificateAuthority) -> None:
    """A signer that fails, or returns another identity or another key, is a RenewalError."""

    def broken(csr: bytes) -> IssuedSvid:
        raise ConnectionError("control plane unreachable")

    with pytest.raises(RenewalError, match="control plane unreachable"):
        WorkloadIdentity(ID, broken)
    other = SpiffeId.workload("cluster.local", "default", "other")
    with pytest.raises(RenewalError, match="a workload can only get its own identity"):
        WorkloadIdentity(ID, ca.signer(other))  # the CA refuses: the CSR names ID
    with pytest.raises(RenewalError, match="the signer issued"):
        WorkloadIdentity(ID, lambda csr: replace(ca.sign(csr, identity=ID), spiffe_id=other))
    with pytest.raises(RenewalError, match="another key"):
        WorkloadIdentity(ID, lambda csr: ca.issue(ID)[1])


def test_failed_renewal_retries_with_backoff_and_warns(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures are retried (back-off), counted and logged with the time left; success resets
    the streak."""
    sign = ca.signer(ID, ttl=600)
    calls = {"n": 0}

    def flaky(csr: bytes) -> IssuedSvid:
        calls["n"] += 1
        if 2 <= calls["n"] <= 4:
            raise ConnectionError(f"attempt {calls['n']} failed")
        return sign(csr)

    ident = WorkloadIdentity(ID, flaky, retry_initial=0.001, retry_max=0.01)
    with caplog.at_level(logging.WARNING, logger="pymesh.identity"):
        ident.refresh_with_retry()
    assert calls["n"] == 5
    assert ident.renewal_failures == 3 and ident.consecutive_failures == 0
    assert ident.renewals == 1 and ident.generation == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert "expires in" in warnings[0].getMessage()
    assert "attempt 2 failed" in warnings[0].getMessage()


def test_expiring_soon_logs_an_error(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    """Less than a quarter of the lifetime left while renewals fail: the log is an error."""
    now = {"t": time.time()}
    sign = ca.signer(ID, ttl=100)
    ok = {"flag": True}

    def signer(csr: bytes) -> IssuedSvid:
        if ok["flag"]:
            return sign(csr)
        raise ConnectionError("down")

    ident = WorkloadIdentity(ID, signer, clock=lambda: now["t"], retry_initial=0.001)
    assert not ident.expiring_soon
    ok["flag"] = False
    now["t"] += 80
    assert ident.expiring_soon
    ident._stop.set()  # stop after the first failure
    with caplog.at_level(logging.WARNING, logger="pymesh.identity"), pytest.raises(RenewalError):
        ident.refresh_with_retry()
    assert ident.renewal_failures == 0  # stopped before any retry sleep
    ident._stop.clear()

    attempts = {"n": 0}

    def stop_after_two(csr: bytes) -> IssuedSvid:
        attempts["n"] += 1
        if attempts["n"] >= 2:
            ident._stop.set()
        raise ConnectionError("down")

    ident._renew = stop_after_two
    with caplog.at_level(logging.WARNING, logger="pymesh.identity"), pytest.raises(RenewalError):
        ident.refresh_with_retry()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "expires in" in errors[0].getMessage()
    assert ident.renewal_failures == 1 and isinstance(ident.last_error, RenewalError)


def test_background_thread_renews_and_stops(ca: CertificateAuthority) -> None:
    """start() renews at half-life in the background; stop() ends the thread promptly."""
    ident = WorkloadIdentity.from_ca(ca, ID, ttl=0.4)
    with ident:
        deadline = time.monotonic() + 5
        while ident.generation < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "running" in repr(ident)
    assert ident.generation >= 3
    assert "stopped" in repr(ident)


def test_background_thread_keeps_retrying_then_stops(ca: CertificateAuthority) -> None:
    """A signer that keeps failing is retried until stop(), without killing the thread."""
    sign = ca.signer(ID, ttl=0.2)
    state = {"fail": False}

    def signer(csr: bytes) -> IssuedSvid:
        if state["fail"]:
            raise ConnectionError("down")
        return sign(csr)

    ident = WorkloadIdentity(ID, signer, retry_initial=0.001, retry_max=0.02)
    state["fail"] = True
    ident.start()
    deadline = time.monotonic() + 5
    while ident.renewal_failures < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    ident.stop()
    assert ident.renewal_failures >= 5 and ident.generation == 1


def test_update_bundle_builds_new_contexts(ca: CertificateAuthority) -> None:
    """A new bundle (root rotation) makes new contexts, keeps the SVID and the schedule."""
    ident = WorkloadIdentity.from_ca(ca, ID)
    before, svid, at = ident.client_context(), ident.svid, ident.next_renewal_at
    ident.update_bundle(ident.bundle)  # unchanged: nothing happens
    assert ident.client_context() is before
    rotated = ca.rotated()
    ident.update_bundle(rotated.trust_bundle)
    assert ident.client_context() is not before
    assert ident.svid.chain == svid.chain and ident.bundle == rotated.trust_bundle
    assert ident.next_renewal_at == at


def test_key_is_loaded_through_memfd(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux the PEM goes through memfd_create; no file appears anywhere we can see."""
    if not tls_module.memfd_available():
        pytest.skip("no memfd on this platform")
    made: list[int] = []
    real = os.memfd_create

    def spy(name: str, flags: int = 0) -> int:
        fd = real(name, flags)
        made.append(fd)
        assert flags & os.MFD_CLOEXEC
        return fd

    monkeypatch.setattr(os, "memfd_create", spy)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    key, svid = ca.issue(ID)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert load_key_and_chain(ctx, key, svid.chain) == "memfd"
    assert len(made) == 1
    with pytest.raises(OSError):
        os.fstat(made[0])  # closed right after loading
    assert list(tmp_path.iterdir()) == []


def test_key_file_when_asked(ca: CertificateAuthority, tmp_path: Path) -> None:
    """key_file= writes the key and chain to a 0600 file and keeps it up to date."""
    path = tmp_path / "svid.pem"
    ident = WorkloadIdentity.from_ca(ca, ID, key_file=path)
    ident.server_context()
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_bytes()
    assert b"PRIVATE KEY" in first and b"CERTIFICATE" in first
    ident.refresh()
    assert path.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["svid.pem"]


def test_fallback_without_memfd(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without memfd, a 0600 file in a private temporary directory is removed after loading."""
    monkeypatch.setattr(tls_module, "memfd_available", lambda: False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    key, svid = ca.issue(ID)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert load_key_and_chain(ctx, key, svid.chain) == "tempfile"
    assert list(tmp_path.iterdir()) == []
