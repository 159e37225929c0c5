"""`WorkloadIdentity`: a workload's own key, its current SVID and the TLS contexts built on them.

How this works:

- The key is made in this process (ECDSA P-256), a new one for every certificate. The CSR goes
  to a `renew` callable (a `Signer`: DER CSR in, `IssuedSvid` out) that stands for the caller's
  credentials: in static mode `CertificateAuthority.signer(identity)`, later the control
  plane's network signer. The identity is fixed by whoever made the signer.
- Each new SVID (or new trust bundle) builds NEW `ssl.SSLContext`s: roots cannot be removed from
  an existing context, and mutating one under live handshakes is unsafe. Clients take
  `client_context()` for each new connection; connections in flight keep the context they were
  made with. Servers are given `server_context()` once: every context pymesh builds carries the
  same `sni_callback`, which OpenSSL calls on every handshake (also when the client sent no
  SNI) and which swaps the handshake onto the current context (`ssl_object.context = current`).
- Renewal happens at half the remaining lifetime, minus up to 10 % jitter (`renewal_delay`), on
  a daemon thread (`start()`; `stop()` ends it); `refresh()` renews at once. A failed renewal is
  retried with exponential back-off and jitter (tenacity) until it succeeds or the identity is
  stopped; every failure logs a warning saying when the certificate expires and counts in
  `renewal_failures`; once less than a quarter of the lifetime is left, the log is an error
  and `expiring_soon` is true.
- `check_peer(ssl_object, peer_role=..., expected=...)` runs the SPIFFE checks of
  `pymesh.identity.verify` on a finished handshake, with this identity's bundle and clock.
  OpenSSL verified the chain in that handshake, so only the leaf is checked — except for a
  resumed session, whose chain was verified under an older context: then the leaf is also
  path-validated against the current bundle (a root removed since refuses it).

Wiring (what adapters do):

    identity = WorkloadIdentity.from_ca(ca, SpiffeId.workload(td, ns, sa)).start()
    # outbound, per new connection
    sock = identity.client_context().wrap_socket(raw, server_hostname=None)
    peer = identity.check_peer(sock, peer_role="server", expected={...}, expected_for="reviews")
    # inbound: pass identity.server_context() to the server once, then per connection
    peer = identity.check_peer(ssl_object, peer_role="client")
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from os import PathLike

import tenacity
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pymesh.identity.bundle import TrustBundle
from pymesh.identity.ca import CertificateAuthority, IssuedSvid, Signer, create_csr, generate_key
from pymesh.identity.errors import PeerIdentityError, PeerRefusal, RenewalError
from pymesh.identity.spiffeid import SpiffeId
from pymesh.identity.tls import DEFAULT_ALPN, build_client_context, build_server_context
from pymesh.identity.verify import Expected, PeerRole, verify_peer

log = logging.getLogger("pymesh.identity")

RENEW_FRACTION = 0.5
RENEW_JITTER = 0.1
WARN_FRACTION = 0.25
MIN_RENEWAL_DELAY = 0.05  # never spin on a signer that hands out expired certificates


def renewal_delay(
    received_at: float,
    not_after: float,
    rng: random.Random,
    *,
    fraction: float = RENEW_FRACTION,
    jitter: float = RENEW_JITTER,
) -> float:
    """Seconds after `received_at` to renew a certificate valid until `not_after`: at
    `fraction` of its remaining lifetime, minus up to `jitter` of it (never later), so a fleet
    issued together does not renew together. The lifetime counts from receipt, not notBefore,
    which the CA back-dates for clock skew."""
    lifetime = max(0.0, not_after - received_at)
    return lifetime * (fraction - jitter * rng.random())


class _Family:
    """Server contexts of one verify mode: the current one, and whether it was asked for."""

    __slots__ = ("current", "require_client_cert")

    def __init__(self, require_client_cert: bool, current: ssl.SSLContext) -> None:
        self.require_client_cert = require_client_cert
        self.current = current


class WorkloadIdentity:
    """A workload's SPIFFE identity: key, current SVID, trust bundle, TLS contexts, renewal.

    `WorkloadIdentity(spiffe_id, renew)` gets the first SVID at once (raising `RenewalError` if
    it cannot), or starts from `initial=(key, svid)` (one obtained elsewhere, or kept on disk);
    `start()` keeps it fresh in the background. `on_install(key, svid)` is called after every
    new certificate or bundle is in place (the control-plane agent persists and reuses it).
    `client_context()` is the context for a new outbound connection; `server_context()` is
    given to a server once and follows rotations per handshake. `check_peer()` is the SPIFFE
    check after every handshake.
    """

    def __init__(
        self,
        spiffe_id: SpiffeId,
        renew: Signer,
        *,
        alpn: Sequence[str] = DEFAULT_ALPN,
        key_file: str | PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        retry_initial: float = 0.05,
        retry_max: float = 30.0,
        initial: tuple[ec.EllipticCurvePrivateKey, IssuedSvid] | None = None,
        on_install: Callable[[ec.EllipticCurvePrivateKey, IssuedSvid], None] | None = None,
    ) -> None:
        self.spiffe_id = spiffe_id
        self._renew = renew
        self.alpn = tuple(alpn)
        self.key_file = key_file
        self._clock = clock
        self._rng = rng or random.Random()
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._on_install = on_install
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._families: dict[bool, _Family] = {}
        # counters (read by metrics and tests)
        self.generation = 0
        self.renewals = 0
        self.renewal_failures = 0
        self.consecutive_failures = 0
        self.last_error: BaseException | None = None
        self._key: ec.EllipticCurvePrivateKey
        self.svid: IssuedSvid
        self.bundle: TrustBundle
        self.received_at = 0.0
        self.next_renewal_at = 0.0
        self._client: ssl.SSLContext
        if initial is None:
            self._install(*self._obtain())
        else:
            self._install(*self._checked(*initial))

    @classmethod
    def from_ca(
        cls,
        ca: CertificateAuthority,
        spiffe_id: SpiffeId,
        *,
        ttl: float | None = None,
        alpn: Sequence[str] = DEFAULT_ALPN,
        key_file: str | PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> WorkloadIdentity:
        """Static mode: renew by signing with the in-process `ca` (`ttl` overrides the CA's
        leaf TTL; the other arguments are the constructor's)."""
        signer = ca.signer(spiffe_id, ttl=ttl)
        return cls(spiffe_id, signer, alpn=alpn, key_file=key_file, clock=clock, rng=rng)

    # -- obtaining and installing ---------------------------------------------------------

    def _obtain(self) -> tuple[ec.EllipticCurvePrivateKey, IssuedSvid]:
        key = generate_key()
        try:
            svid = self._renew(create_csr(key, self.spiffe_id))
        except Exception as exc:
            raise RenewalError(f"could not get a certificate for {self.spiffe_id}: {exc}") from exc
        return self._checked(key, svid)

    def _checked(
        self, key: ec.EllipticCurvePrivateKey, svid: IssuedSvid
    ) -> tuple[ec.EllipticCurvePrivateKey, IssuedSvid]:
        if svid.spiffe_id != self.spiffe_id:
            raise RenewalError(f"asked for {self.spiffe_id}, the signer issued {svid.spiffe_id}")
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if svid.leaf.public_key().public_bytes(der, pub) != key.public_key().public_bytes(der, pub):
            raise RenewalError("the signer returned a certificate for another key")
        return key, svid

    def _install(
        self, key: ec.EllipticCurvePrivateKey, svid: IssuedSvid, *, reschedule: bool = True
    ) -> None:
        """Build new contexts for `svid` and make them current (under the lock)."""
        with self._lock:
            client = build_client_context(
                key, svid.chain, svid.bundle, alpn=self.alpn, key_file=self.key_file
            )
            servers = {
                require: build_server_context(
                    key,
                    svid.chain,
                    svid.bundle,
                    require_client_cert=require,
                    alpn=self.alpn,
                    sni_callback=self._sni_callback(require),
                    key_file=self.key_file,
                )
                for require in self._families
            }
            self._key, self.svid, self.bundle = key, svid, svid.bundle
            self._client = client
            for require, ctx in servers.items():
                self._families[require].current = ctx
            if reschedule:
                now = self._clock()
                self.received_at = now
                delay = renewal_delay(now, svid.not_after, self._rng)
                self.next_renewal_at = now + max(MIN_RENEWAL_DELAY, delay)
            self.generation += 1
        if self._on_install is not None:
            self._on_install(key, svid)

    def refresh(self) -> IssuedSvid:
        """Get a new key and SVID now and switch to it (one attempt; raises `RenewalError`)."""
        key, svid = self._obtain()
        self._install(key, svid)
        self.renewals += 1
        self.consecutive_failures = 0
        log.info("renewed %s: %r", self.spiffe_id, svid)
        return svid

    def refresh_with_retry(self) -> IssuedSvid:
        """`refresh()`, retried with exponential back-off until it succeeds or `stop()`; raises
        the last `RenewalError` if stopped first."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RenewalError),
            wait=tenacity.wait_exponential(multiplier=self.retry_initial, max=self.retry_max)
            + tenacity.wait_random(0, self.retry_initial),
            stop=tenacity.stop_when_event_set(self._stop),
            sleep=self._sleep,
            before_sleep=self._on_failure,
            reraise=True,
        )
        result: IssuedSvid = retrying(self.refresh)
        return result

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _on_failure(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        self.renewal_failures += 1
        self.consecutive_failures += 1
        self.last_error = exc
        left = self.svid.not_after - self._clock()
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        level = logging.ERROR if self.expiring_soon else logging.WARNING
        log.log(
            level,
            "renewing %s failed (%d in a row; retry in %.2f s); the certificate %s: %s",
            self.spiffe_id,
            self.consecutive_failures,
            wait,
            f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago",
            exc,
        )

    @property
    def expiring_soon(self) -> bool:
        """Whether less than a quarter of the current certificate's lifetime is left."""
        lifetime = max(1e-9, self.svid.not_after - self.received_at)
        return (self.svid.not_after - self._clock()) < WARN_FRACTION * lifetime

    def update_bundle(self, bundle: TrustBundle) -> None:
        """Trust `bundle` from now on (a root rotation pushed by the control plane): new
        contexts with the same key and SVID."""
        if bundle == self.bundle:
            return
        svid = IssuedSvid(self.svid.spiffe_id, self.svid.chain, bundle)
        with self._lock:
            key = self._key
        self._install(key, svid, reschedule=False)

    # -- contexts -------------------------------------------------------------------------

    def client_context(self) -> ssl.SSLContext:
        """The context for a new outbound connection (the current SVID and bundle)."""
        return self._client

    def server_context(self, *, require_client_cert: bool = True) -> ssl.SSLContext:
        """The context to give a TLS server once: each handshake switches to the current
        context. `require_client_cert=False` accepts clients without a certificate
        (PERMISSIVE); `check_peer` then raises `no_certificate` for them."""
        with self._lock:
            family = self._families.get(require_client_cert)
            if family is None:
                ctx = build_server_context(
                    self._key,
                    self.svid.chain,
                    self.bundle,
                    require_client_cert=require_client_cert,
                    alpn=self.alpn,
                    sni_callback=self._sni_callback(require_client_cert),
                    key_file=self.key_file,
                )
                family = self._families[require_client_cert] = _Family(require_client_cert, ctx)
            return family.current

    def _sni_callback(
        self, require_client_cert: bool
    ) -> Callable[[ssl.SSLObject | ssl.SSLSocket, str | None, ssl.SSLContext], None]:
        families = self._families

        def switch(
            conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext
        ) -> None:
            current = families[require_client_cert].current
            if ctx is not current:
                conn.context = current

        return switch

    # -- peers ----------------------------------------------------------------------------

    def check_peer(
        self,
        conn: ssl.SSLObject | ssl.SSLSocket,
        *,
        peer_role: PeerRole,
        expected: Expected = None,
        expected_for: str | None = None,
    ) -> SpiffeId:
        """The SPIFFE checks on a connection whose handshake just finished; return the peer's
        identity or raise `PeerIdentityError`. Call it before the first request byte."""
        der = conn.getpeercert(binary_form=True)
        if der is None:
            raise PeerIdentityError(
                PeerRefusal.NO_CERTIFICATE, "peer presented no certificate", role=peer_role
            )
        resumed = bool(conn.session_reused)
        chain: list[bytes] = [der]
        if resumed:
            enc = serialization.Encoding.DER
            chain += [c.public_bytes(enc) for c in self.svid.chain[1:]]
        return verify_peer(
            chain,
            self.bundle,
            now=self._clock(),
            peer_role=peer_role,
            expected=expected,
            expected_for=expected_for,
            check_chain=resumed,
        )

    # -- background renewal ---------------------------------------------------------------

    def start(self) -> WorkloadIdentity:
        """Start renewing in the background (a daemon thread); return self."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"pymesh-identity {self.spiffe_id}", daemon=True
                )
                self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop background renewal (the current SVID stays usable until it expires)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    close = stop

    def __enter__(self) -> WorkloadIdentity:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.next_renewal_at - self._clock()
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                self.refresh_with_retry()
            except RenewalError:
                return  # stopped while failing; the failures were logged
            except Exception:  # never let the renewal thread die silently
                log.exception("renewal loop for %s failed", self.spiffe_id)
                self._stop.wait(self.retry_max)

    def __repr__(self) -> str:
        state = "running" if self._thread is not None and self._thread.is_alive() else "stopped"
        return (
            f"WorkloadIdentity({self.spiffe_id}, generation={self.generation}, "
            f"not_after={self.svid.leaf.not_valid_after_utc.isoformat()}, "
            f"failures={self.renewal_failures}, {state})"
        )
