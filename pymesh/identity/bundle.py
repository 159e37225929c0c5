"""Trust bundles: the CA certificates trusted for each trust domain.

A `TrustBundle` is an immutable map from trust domain to root certificates. During a root
rotation a trust domain has several roots (the old and the new), so certificates issued under
either verify; removing the old root later is a new bundle. TLS contexts are built from a
bundle (`TrustBundle.pem()`), and because roots cannot be removed from an `ssl.SSLContext`,
a changed bundle means new contexts (see `pymesh.identity.workload`).

A trust domain with no roots is not trusted at all (the SPIFFE bundle rule: an empty key set
revokes everything from that trust domain).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from pymesh.identity.errors import IdentityError
from pymesh.identity.spiffeid import validate_trust_domain

_SHA256 = hashes.SHA256()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def load_pem_certificates(data: str | bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM text (raise `IdentityError` if there is none)."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise IdentityError(f"not a PEM certificate list: {exc}") from exc
    return certs


def certificates_pem(certs: Iterable[x509.Certificate]) -> str:
    """Certificates as concatenated PEM text."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


class TrustBundle:
    """The CA certificates trusted per trust domain. Immutable; compare with `==`.

    `TrustBundle.of("cluster.local", root)`; during a rotation
    `bundle.with_roots("cluster.local", new_root)`, later `bundle.without_root(...)`.
    """

    __slots__ = ("_fingerprint", "_pem", "_roots")

    def __init__(self, roots: Mapping[str, Iterable[x509.Certificate]]) -> None:
        normalized: dict[str, tuple[x509.Certificate, ...]] = {}
        for td, certs in roots.items():
            validate_trust_domain(td)
            unique: dict[bytes, x509.Certificate] = {}
            for cert in certs:
                if not _is_ca(cert):
                    raise IdentityError(
                        "a trust bundle holds CA certificates only; "
                        f"{cert.subject.rfc4514_string()!r} for trust domain {td} is not a CA "
                        "(basicConstraints CA:true)"
                    )
                unique.setdefault(cert.fingerprint(_SHA256), cert)
            if unique:
                normalized[td] = tuple(unique.values())
        self._roots = normalized
        digest = hashlib.sha256()
        for td in sorted(normalized):
            digest.update(td.encode() + b"\0")
            for fp in sorted(c.fingerprint(_SHA256) for c in normalized[td]):
                digest.update(fp)
        self._fingerprint = digest.digest()
        self._pem = certificates_pem(self.all_roots())

    @classmethod
    def of(cls, trust_domain: str, *roots: x509.Certificate) -> TrustBundle:
        """A bundle of one trust domain."""
        return cls({trust_domain: roots})

    @classmethod
    def from_pem(cls, trust_domain: str, pem: str | bytes) -> TrustBundle:
        """A bundle of one trust domain from PEM text (e.g. Istio's root-cert.pem)."""
        return cls({trust_domain: load_pem_certificates(pem)})

    @property
    def trust_domains(self) -> frozenset[str]:
        """The trust domains this bundle trusts."""
        return frozenset(self._roots)

    def roots_for(self, trust_domain: str) -> tuple[x509.Certificate, ...]:
        """The roots of one trust domain (empty if it is not trusted)."""
        return self._roots.get(trust_domain, ())

    def all_roots(self) -> tuple[x509.Certificate, ...]:
        """Every root of every trust domain (a root shared by two domains appears once)."""
        seen: dict[bytes, x509.Certificate] = {}
        for td in sorted(self._roots):
            for cert in self._roots[td]:
                seen.setdefault(cert.fingerprint(_SHA256), cert)
        return tuple(seen.values())

    def with_roots(self, trust_domain: str, *roots: x509.Certificate) -> TrustBundle:
        """A new bundle that also trusts `roots` for `trust_domain` (a root rotation starts)."""
        merged = dict(self._roots)
        merged[trust_domain] = (*self.roots_for(trust_domain), *roots)
        return TrustBundle(merged)

    def without_root(self, trust_domain: str, root: x509.Certificate) -> TrustBundle:
        """A new bundle without `root` for `trust_domain` (a root rotation ends)."""
        fp = root.fingerprint(_SHA256)
        merged = dict(self._roots)
        merged[trust_domain] = tuple(
            c for c in self.roots_for(trust_domain) if c.fingerprint(_SHA256) != fp
        )
        return TrustBundle(merged)

    def merged(self, other: TrustBundle) -> TrustBundle:
        """A bundle trusting everything either bundle trusts (federation)."""
        out: dict[str, tuple[x509.Certificate, ...]] = dict(self._roots)
        for td, certs in other._roots.items():
            out[td] = (*out.get(td, ()), *certs)
        return TrustBundle(out)

    def pem(self) -> str:
        """All roots as PEM text (what `ssl.SSLContext.load_verify_locations(cadata=)` takes)."""
        return self._pem

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 over the trust domains and their roots: equal bundles, equal fingerprints."""
        return self._fingerprint

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TrustBundle):
            return self._fingerprint == other._fingerprint
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        parts = ", ".join(f"{td}: {len(c)} root(s)" for td, c in sorted(self._roots.items()))
        return f"TrustBundle({parts})"
