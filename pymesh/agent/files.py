"""What the agent keeps in its data dir, so a workload restarted while the control plane is away
starts from disk.

Layout (the directory 0700; every file 0600, written atomically: temp file, then rename):

- `svid.pem` — the current SVID chain and its private key (PEM). `WorkloadIdentity` writes it
  itself (its `key_file`) whenever it installs a certificate, and loads its TLS contexts from it.
- `identity.json` — the SPIFFE ID, the trust domain and the trust bundle (PEM) that go with it.
- `snapshot.json` — the last snapshot the agent applied, as the watch stream sent it.

This is the documented trade-off of control-plane mode: the private key is on disk (owner-only)
so that a restart does not depend on the control plane while the certificate is valid.
`Mesh(..., persist=False)` keeps the key in memory only (then nothing here is written, and a
restart needs the control plane). Several processes of one workload (pre-fork workers) may share
the directory: every write is a whole-file rename, and any of their certificates is a valid one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pymesh.identity import IdentityError, IssuedSvid, SpiffeId, TrustBundle
from pymesh.identity.bundle import load_pem_certificates

__all__ = ["AgentFiles", "StoredIdentity"]

log = logging.getLogger("pymesh.agent")

SVID_FILE = "svid.pem"
IDENTITY_FILE = "identity.json"
SNAPSHOT_FILE = "snapshot.json"
_KEY_MARK = b"-----BEGIN PRIVATE KEY-----"


@dataclass(frozen=True, slots=True)
class StoredIdentity:
    """A key and SVID read back from the data dir."""

    key: ec.EllipticCurvePrivateKey
    svid: IssuedSvid
    trust_domain: str


def _write_0600(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AgentFiles:
    """The agent's data dir (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"AgentFiles({str(self.directory)!r})"

    @property
    def svid_path(self) -> Path:
        """Where `WorkloadIdentity` keeps the chain and key (its `key_file`)."""
        return self.directory / SVID_FILE

    def ensure(self) -> None:
        """Create the directory (0700) if needed."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    # -- identity ---------------------------------------------------------------------------

    def save_identity(self, svid: IssuedSvid) -> None:
        """Record the SPIFFE ID, trust domain and bundle of the SVID now in `svid.pem`."""
        doc = {
            "spiffeId": svid.spiffe_id.uri,
            "trustDomain": svid.spiffe_id.trust_domain,
            "bundle": svid.bundle.pem(),
        }
        _write_0600(self.directory / IDENTITY_FILE, json.dumps(doc).encode())

    def load_identity(self, now: float, *, margin: float = 1.0) -> StoredIdentity | None:
        """The stored key and SVID if they are there, agree, and the certificate is valid for
        at least `margin` more seconds; else None (the reason is logged)."""
        try:
            doc = json.loads((self.directory / IDENTITY_FILE).read_text(encoding="utf-8"))
            pem = self.svid_path.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the identity kept in %s: %s", self.directory, exc)
            return None
        try:
            at = pem.index(_KEY_MARK)
            chain = tuple(load_pem_certificates(pem[:at]))
            key = serialization.load_pem_private_key(pem[at:], password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise IdentityError("the stored key is not an ECDSA key")
            td = str(doc["trustDomain"])
            sid = SpiffeId.parse(str(doc["spiffeId"]))
            bundle = TrustBundle.from_pem(td, str(doc["bundle"]))
        except (ValueError, KeyError, TypeError, IdentityError) as exc:
            log.warning("ignoring the identity kept in %s: %s", self.directory, exc)
            return None
        svid = IssuedSvid(sid, chain, bundle)
        if svid.not_after - now < margin or svid.not_before > now + 300:
            log.info("the certificate kept in %s is not valid now (%r)", self.directory, svid)
            return None
        return StoredIdentity(key, svid, td)

    # -- snapshot ---------------------------------------------------------------------------

    def save_snapshot(self, message: dict[str, Any]) -> None:
        """Keep `message` (a watch `snapshot` message) as the last good snapshot."""
        _write_0600(self.directory / SNAPSHOT_FILE, json.dumps(message).encode())

    def load_snapshot(self) -> dict[str, Any] | None:
        """The last good snapshot, or None."""
        try:
            msg = json.loads((self.directory / SNAPSHOT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the snapshot kept in %s: %s", self.directory, exc)
            return None
        if not isinstance(msg, dict) or msg.get("type") != "snapshot":
            return None
        return msg
