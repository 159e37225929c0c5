"""Real TLS on loopback with the identity layer's contexts: mutual authentication between two
`WorkloadIdentity`s, the post-handshake SPIFFE check on both sides, OpenSSL's own refusals
mapped to the same errors, asyncio, rotation under load with 2 s leaves, and curl as a
non-Python client."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from pymesh.identity import (
    CertificateAuthority,
    PeerIdentityError,
    PeerRefusal,
    SpiffeId,
    WorkloadIdentity,
    build_client_context,
    refusal_from_ssl_error,
)
from tests.helpers import curl as curl_binary
from tests.identity.certkit import der, key_pem
from tests.identity.tlskit import TLSServer, connect, get

pytestmark = pytest.mark.slow

TD = "cluster.local"
REVIEWS = SpiffeId.workload(TD, "default", "reviews")
FRONTEND = SpiffeId.workload(TD, "default", "frontend")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate(TD)


def test_mutual_tls_handshake(ca: CertificateAuthority) -> None:
    """Both sides present SVIDs; each checks the other's SPIFFE ID after the handshake."""
    server = WorkloadIdentity.from_ca(ca, REVIEWS)
    client = WorkloadIdentity.from_ca(ca, FRONTEND)
    with (
        TLSServer(server.server_context(), server) as srv,
        connect(client.client_context(), srv.port) as conn,
    ):
        peer = client.check_peer(conn, peer_role="server", expected={str(REVIEWS)})
        assert peer == REVIEWS
        assert get(conn) == str(FRONTEND).encode()  # what the server saw
        assert conn.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.selected_alpn_protocol() == "http/1.1"
    assert not srv.errors and not srv.refusals


def test_unexpected_server_identity(ca: CertificateAuthority) -> None:
    """A valid server that is not the one expected for the destination is refused by name."""
    server = WorkloadIdentity.from_ca(ca, SpiffeId.workload(TD, "default", "ratings"))
    client = WorkloadIdentity.from_ca(ca, FRONTEND)
    with (
        TLSServer(server.server_context(), server) as srv,
        connect(client.client_context(), srv.port) as conn,
        pytest.raises(PeerIdentityError) as info,
    ):
        client.check_peer(conn, peer_role="server", expected={str(REVIEWS)}, expected_for="reviews")
    assert info.value.reason is PeerRefusal.UNEXPECTED_IDENTITY
    assert "expected for reviews" in str(info.value)


def test_openssl_refusals_map_to_peer_errors(ca: CertificateAuthority) -> None:
    """What OpenSSL refuses during the handshake (another CA, an expired leaf) reads as the
    same PeerIdentityError reasons as pymesh's own checks."""
    server = WorkloadIdentity.from_ca(ca, REVIEWS)
    other = CertificateAuthority.generate(TD)
    # a client whose bundle does not have our root: the server's certificate is untrusted
    stranger = WorkloadIdentity.from_ca(other, FRONTEND)
    with TLSServer(server.server_context(), server) as srv:
        with (
            pytest.raises(ssl.SSLCertVerificationError) as info,
            connect(stranger.client_context(), srv.port),
        ):
            pass
        err = refusal_from_ssl_error(info.value, peer_role="server")
        assert err is not None and err.reason is PeerRefusal.UNTRUSTED_CHAIN
    # a server whose leaf has expired (issued by a CA whose clock is 1 h behind)
    old = CertificateAuthority(
        trust_domain=TD,
        certificate=ca.certificate,
        key=ca._key,
        clock=lambda: time.time() - 3600,
    )
    expired = WorkloadIdentity.from_ca(old, REVIEWS, ttl=60)
    client = WorkloadIdentity.from_ca(ca, FRONTEND)
    with TLSServer(expired.server_context(), expired) as srv:
        with (
            pytest.raises(ssl.SSLCertVerificationError) as info,
            connect(client.client_context(), srv.port),
        ):
            pass
        err = refusal_from_ssl_error(info.value, peer_role="server")
        assert err is not None and err.reason is PeerRefusal.EXPIRED
        assert "expired" in str(err)
    assert refusal_from_ssl_error(ssl.SSLError(1, "other")) is None


def test_permissive_server_sees_no_certificate(ca: CertificateAuthority) -> None:
    """`server_context(require_client_cert=False)` lets a certificate-less client finish the
    handshake; `check_peer` then refuses it as `no_certificate` (STRICT refuses earlier)."""
    server = WorkloadIdentity.from_ca(ca, REVIEWS)
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=ca.trust_bundle.pem())
    with TLSServer(server.server_context(require_client_cert=False), server) as srv:
        with (
            connect(anonymous, srv.port) as conn,
            pytest.raises((ConnectionError, ssl.SSLError, OSError)),
        ):
            get(conn)
        deadline = time.monotonic() + 5
        while not srv.refusals and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.reason for r in srv.refusals] == [PeerRefusal.NO_CERTIFICATE]
    with (
        TLSServer(server.server_context(), server) as strict,
        pytest.raises((ssl.SSLError, ConnectionError, OSError)),
        connect(anonymous, strict.port) as conn,
    ):
        get(conn)  # TLS 1.3: the refusal arrives with the first read


def test_resumed_session_is_rechecked_against_the_current_bundle() -> None:
    """CVE-2022-21654: OpenSSL resumes a session made before the trust bundle changed without
    verifying the chain again (the ticket keys belong to the context the server was given), so
    check_peer path-validates a resumed session's certificate against the current bundle."""
    old = CertificateAuthority.generate(TD)
    new = old.rotated()  # trusts both roots
    server = WorkloadIdentity.from_ca(new, REVIEWS)
    client = WorkloadIdentity.from_ca(old, FRONTEND)  # a certificate under the old root
    client.update_bundle(new.trust_bundle)
    with TLSServer(server.server_context(), server) as srv:
        with connect(client.client_context(), srv.port) as conn:
            assert get(conn) == str(FRONTEND).encode()
            session = conn.session
        assert session is not None
        with connect(client.client_context(), srv.port, session=session) as conn:
            assert get(conn) == str(FRONTEND).encode()  # resumed, re-checked, still trusted
            assert conn.session_reused
        server.update_bundle(server.bundle.without_root(TD, old.certificate))
        with connect(client.client_context(), srv.port, session=session) as conn:
            assert conn.session_reused  # OpenSSL let the old session in ...
            with pytest.raises((ConnectionError, OSError)):
                get(conn)
        deadline = time.monotonic() + 5
        while not srv.refusals and time.monotonic() < deadline:
            time.sleep(0.01)
    # ... and the post-handshake check refused it
    assert [r.reason for r in srv.refusals] == [PeerRefusal.UNTRUSTED_CHAIN]
    assert not srv.errors


def test_resumed_session_check_without_sockets() -> None:
    """The same rule on a stand-in connection: resumed means the chain is validated here."""
    old = CertificateAuthority.generate(TD)
    me = WorkloadIdentity.from_ca(old.rotated(), REVIEWS)
    _, peer_svid = old.issue(FRONTEND)

    class Resumed:
        session_reused = True

        def getpeercert(self, binary_form: bool) -> bytes:
            return der(peer_svid.leaf)

    assert me.check_peer(Resumed(), peer_role="client") == FRONTEND  # type: ignore[arg-type]
    me.update_bundle(me.bundle.without_root(TD, old.certificate))
    with pytest.raises(PeerIdentityError) as info:
        me.check_peer(Resumed(), peer_role="client")  # type: ignore[arg-type]
    assert info.value.reason is PeerRefusal.UNTRUSTED_CHAIN


def test_asyncio_server_and_client(ca: CertificateAuthority) -> None:
    """The same contexts under asyncio: the sni_callback switches an SSLObject's context, so an
    asyncio server given server_context() once presents each refreshed certificate."""
    server = WorkloadIdentity.from_ca(ca, REVIEWS)
    client = WorkloadIdentity.from_ca(ca, FRONTEND)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        obj = writer.get_extra_info("ssl_object")
        peer = server.check_peer(obj, peer_role="client")
        await reader.readline()
        writer.write(str(peer).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def main() -> list[int]:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server.server_context())
        port = srv.sockets[0].getsockname()[1]
        serials = []
        async with srv:
            for _ in range(3):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client.client_context(), server_hostname=""
                )
                obj = writer.get_extra_info("ssl_object")
                assert client.check_peer(obj, peer_role="server", expected={str(REVIEWS)})
                serials.append(
                    x509.load_der_x509_certificate(obj.getpeercert(binary_form=True)).serial_number
                )
                writer.write(b"hi\n")
                assert await reader.readline() == str(FRONTEND).encode() + b"\n"
                writer.close()
                await writer.wait_closed()
                server.refresh()
        return serials

    serials = asyncio.run(main())
    assert len(set(serials)) == 3  # a new server certificate on each connection


def test_rotation_under_load_with_2s_leaves(ca: CertificateAuthority) -> None:
    """2 s leaves renewed in the background at half-life: new handshakes keep succeeding across
    at least 3 rotations on both sides, and a connection made before the first rotation keeps
    working after its certificates expired."""
    server = WorkloadIdentity.from_ca(ca, REVIEWS, ttl=2).start()
    client = WorkloadIdentity.from_ca(ca, FRONTEND, ttl=2).start()
    failures: list[BaseException] = []
    server_serials: set[int] = set()
    requests = 0
    try:
        with TLSServer(server.server_context(), server) as srv:
            with connect(client.client_context(), srv.port) as held:
                first = held.getpeercert(binary_form=True)
                assert get(held) == str(FRONTEND).encode()
                gen_server, gen_client = server.generation, client.generation
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and (
                    len(server_serials) < 4 or client.generation - gen_client < 3
                ):
                    try:
                        with connect(client.client_context(), srv.port) as conn:
                            client.check_peer(conn, peer_role="server", expected={str(REVIEWS)})
                            der = conn.getpeercert(binary_form=True)
                            server_serials.add(hash(der))
                            assert get(conn) == str(FRONTEND).encode()
                            requests += 1
                    except Exception as exc:
                        failures.append(exc)
                    time.sleep(0.01)
                time.sleep(0.3)
                # the held connection: its certificates expired meanwhile, it still works
                assert held.getpeercert(binary_form=True) == first
                assert get(held) == str(FRONTEND).encode()
            assert not srv.errors and not srv.refusals
    finally:
        server.stop()
        client.stop()
    assert failures == []
    assert server.generation - gen_server >= 3 and client.generation - gen_client >= 3
    assert len(server_serials) >= 4, server_serials
    assert requests > 50
    assert server.renewal_failures == 0 and client.renewal_failures == 0


def test_curl_with_client_certificate_and_dns_san(ca: CertificateAuthority, tmp_path: Path) -> None:
    """curl, a non-Python client, verifies the server by its DNS SAN (name override with
    --resolve) and authenticates with an SVID; without the right name or a certificate it fails."""
    curl_path = curl_binary()
    server = WorkloadIdentity.from_ca(ca, REVIEWS)
    key, svid = ca.issue(SpiffeId.workload(TD, "default", "curl"))
    cert_file, key_file, ca_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert_file.write_text(svid.chain_pem())
    key_file.write_bytes(key_pem(key))
    key_file.chmod(0o600)
    ca_file.write_text(ca.trust_bundle.pem())
    name = REVIEWS.dns_name
    assert name is not None

    def curl(host: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [curl_path, "-sS", "--max-time", "10", "--cacert", str(ca_file), *extra,
             "--resolve", f"{host}:{srv.port}:127.0.0.1", f"https://{host}:{srv.port}/"],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip

    with TLSServer(server.server_context(), server) as srv:
        ok = curl(name, "--cert", str(cert_file), "--key", str(key_file))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == "spiffe://cluster.local/ns/default/sa/curl"
        other = "ratings.default.serviceaccount.identity.cluster.local"
        wrong = curl(other, "--cert", str(cert_file), "--key", str(key_file))
        assert wrong.returncode == 60, wrong.stderr  # the server's certificate is not for that name
        anonymous = curl(name)
        assert anonymous.returncode != 0


def test_client_context_keyfile_mode(ca: CertificateAuthority, tmp_path: Path) -> None:
    """With `key_file`, the key and chain go to a 0600 file the user asked for (and work)."""
    path = tmp_path / "svid.pem"
    key, svid = ca.issue(FRONTEND)
    ctx = build_client_context(key, svid.chain, svid.bundle, key_file=path)
    assert path.stat().st_mode & 0o777 == 0o600
    server = WorkloadIdentity.from_ca(ca, REVIEWS)
    with TLSServer(server.server_context(), server) as srv, connect(ctx, srv.port) as conn:
        assert get(conn) == str(FRONTEND).encode()


def test_many_threads_share_server_context(ca: CertificateAuthority) -> None:
    """Concurrent handshakes while the server refreshes: none fails."""
    server = WorkloadIdentity.from_ca(ca, REVIEWS)
    client = WorkloadIdentity.from_ca(ca, FRONTEND)
    errors: list[BaseException] = []
    with TLSServer(server.server_context(), server) as srv:

        def worker() -> None:
            for _ in range(10):
                try:
                    with connect(client.client_context(), srv.port) as conn:
                        client.check_peer(conn, peer_role="server")
                        get(conn)
                except Exception as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(5):
            server.refresh()
            time.sleep(0.02)
        for t in threads:
            t.join(30)
    assert errors == [] and not srv.errors
