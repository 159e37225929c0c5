"""SPIFFE IDs: parsing and validation by the SPIFFE spec (SPIFFE-ID.md §2), strict.

A SPIFFE ID is `spiffe://<trust domain><path>`. pymesh refuses anything the spec forbids and
picks the strict side wherever the spec leaves a choice:

- the scheme is `spiffe`, lowercase, followed by `://`; no query, no fragment;
- the trust domain is non-empty, at most 255 bytes, lowercase `[a-z0-9._-]` only: no
  userinfo (`@`), no port (`:`), no IPv6 literal, no percent-encoding. Upper case is refused,
  not normalized (the spec requires lowercase hosts; accepting two spellings of one identity
  would make every comparison a normalization question). IPv4-looking names are plain names;
- the path is empty (a trust-domain ID) or `/`-separated segments of `[a-zA-Z0-9._-]`: no empty
  segment, no `.` or `..`, no trailing `/`, no percent-encoding;
- the whole ID is at most 2048 bytes.

Workload identities in the mesh are `spiffe://<td>/ns/<namespace>/sa/<service account>`
(`SpiffeId.workload`). Each has a DNS form, `<sa>.<ns>.serviceaccount.identity.<td>`
(`SpiffeId.dns_name`), written into certificates as a DNS SAN for stock TLS clients that check
only DNS names; it is never spelled like a SPIFFE ID, and pymesh itself never reads it.
"""

from __future__ import annotations

import re

from pymesh.identity.errors import SpiffeIdError

MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255
SCHEME_PREFIX = "spiffe://"
DEFAULT_TRUST_DOMAIN = "cluster.local"
DNS_SUFFIX = "serviceaccount.identity"

_FAST = re.compile(r"spiffe://([a-z0-9._\-]+)((?:/[a-zA-Z0-9._\-]+)*)")
_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?")


def _show(ch: str) -> str:
    """A character as a person can read it in a message (control characters escaped)."""
    return repr(ch) if ch.isprintable() and ch != " " else ascii(ch)


def validate_trust_domain(name: str) -> str:
    """Return `name` if it is a valid trust domain name, else raise `SpiffeIdError`."""
    if not name:
        raise SpiffeIdError("trust domain is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_TRUST_DOMAIN_BYTES:
        raise SpiffeIdError(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    if all(c in _TD_CHARS for c in name):
        return name
    if "@" in name:
        raise SpiffeIdError(f"trust domain {name!r} has userinfo ('@'); SPIFFE IDs have none")
    if name.startswith("["):
        raise SpiffeIdError(f"trust domain {name!r} is an IPv6 literal; SPIFFE does not allow it")
    if ":" in name:
        raise SpiffeIdError(f"trust domain {name!r} has a port; SPIFFE IDs have none")
    if "%" in name:
        raise SpiffeIdError(f"trust domain {name!r} is percent-encoded; SPIFFE forbids that")
    if name.lower() != name and all(c in _TD_CHARS for c in name.lower()):
        raise SpiffeIdError(f"trust domain {name!r} must be lowercase")
    bad = next(c for c in name if c not in _TD_CHARS)
    raise SpiffeIdError(
        f"character {_show(bad)} is not allowed in trust domain {name!r} (allowed: a-z 0-9 . - _)"
    )


def validate_path(path: str) -> str:
    """Return `path` if it is a valid SPIFFE ID path ('' or '/seg/seg...'), else raise."""
    if path == "":
        return path
    if not path.startswith("/"):
        raise SpiffeIdError(f"path {path!r} must start with '/'")
    if path.endswith("/"):
        raise SpiffeIdError(f"path {path!r} ends with '/'")
    for segment in path[1:].split("/"):
        validate_segment(segment, path)
    return path


def validate_segment(segment: str, path: str | None = None) -> str:
    """Return `segment` if it is a valid path segment, else raise `SpiffeIdError`."""
    where = f" in path {path!r}" if path is not None else ""
    if segment == "":
        raise SpiffeIdError(f"empty path segment{where} ('//')")
    if segment in (".", ".."):
        raise SpiffeIdError(f"path segment {segment!r}{where} is not allowed")
    if all(c in _SEGMENT_CHARS for c in segment):
        return segment
    if "%" in segment:
        raise SpiffeIdError(f"path segment {segment!r}{where} is percent-encoded; SPIFFE forbids")
    bad = next(c for c in segment if c not in _SEGMENT_CHARS)
    raise SpiffeIdError(
        f"character {_show(bad)} is not allowed in path segment {segment!r}{where} "
        "(allowed: a-z A-Z 0-9 . - _)"
    )


def _dns_form(trust_domain: str, namespace: str, service_account: str) -> str | None:
    if not _DNS_LABEL.fullmatch(namespace):
        return None
    labels = [
        *service_account.split("."),
        namespace,
        *DNS_SUFFIX.split("."),
        *trust_domain.split("."),
    ]
    if not all(_DNS_LABEL.fullmatch(label) for label in labels):
        return None
    name = ".".join(labels)
    return name if len(name) <= 253 else None


class SpiffeId:
    """A validated SPIFFE ID. Immutable; equal and hashable by its URI.

    `SpiffeId.parse("spiffe://cluster.local/ns/default/sa/reviews")` or
    `SpiffeId.workload("cluster.local", "default", "reviews")`. `str(id)` is the URI.
    """

    __slots__ = ("_uri", "path", "trust_domain")

    trust_domain: str
    path: str
    _uri: str

    def __init__(self, trust_domain: str, path: str = "") -> None:
        validate_trust_domain(trust_domain)
        validate_path(path)
        uri = SCHEME_PREFIX + trust_domain + path
        if len(uri.encode()) > MAX_ID_BYTES:
            raise SpiffeIdError(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
        object.__setattr__(self, "trust_domain", trust_domain)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_uri", uri)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SpiffeId is immutable")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse and validate a SPIFFE ID; raise `SpiffeIdError` saying which rule it breaks."""
        if not isinstance(text, str):
            raise SpiffeIdError(f"a SPIFFE ID is a string, not {type(text).__name__}")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise SpiffeIdError(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
        m = _FAST.fullmatch(text)
        if m is not None:
            trust_domain, path = m.group(1), m.group(2)
            if len(trust_domain) > MAX_TRUST_DOMAIN_BYTES:
                raise SpiffeIdError(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
            if "/./" in path + "/" or "/../" in path + "/":
                validate_path(path)  # raises with the precise message
        else:
            trust_domain, path = _split(text)
            validate_trust_domain(trust_domain)
            validate_path(path)
        self = cls.__new__(cls)
        object.__setattr__(self, "trust_domain", trust_domain)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_uri", text)
        return self

    @classmethod
    def workload(cls, trust_domain: str, namespace: str, service_account: str) -> SpiffeId:
        """The mesh identity `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`."""
        validate_segment(namespace)
        validate_segment(service_account)
        return cls(trust_domain, f"/ns/{namespace}/sa/{service_account}")

    @property
    def uri(self) -> str:
        """The ID as a URI string, e.g. `spiffe://cluster.local/ns/default/sa/reviews`."""
        return self._uri

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments (empty for a trust-domain ID)."""
        return tuple(self.path[1:].split("/")) if self.path else ()

    @property
    def namespace(self) -> str | None:
        """The namespace of a `/ns/<ns>/sa/<sa>` identity, else None."""
        s = self.segments
        return s[1] if len(s) == 4 and s[0] == "ns" and s[2] == "sa" else None

    @property
    def service_account(self) -> str | None:
        """The service account of a `/ns/<ns>/sa/<sa>` identity, else None."""
        s = self.segments
        return s[3] if len(s) == 4 and s[0] == "ns" and s[2] == "sa" else None

    @property
    def dns_name(self) -> str | None:
        """`<sa>.<ns>.serviceaccount.identity.<td>` for a workload identity whose parts are
        valid DNS labels (Kubernetes names always are), else None."""
        ns, sa = self.namespace, self.service_account
        if ns is None or sa is None:
            return None
        return _dns_form(self.trust_domain, ns, sa)

    def member_of(self, trust_domain: str) -> bool:
        """Whether this ID belongs to `trust_domain`."""
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"SpiffeId({self._uri!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SpiffeId):
            return self._uri == other._uri
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._uri)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (SpiffeId.parse, (self._uri,))


def _split(text: str) -> tuple[str, str]:
    """Split a string that failed the fast path into (trust domain, path), raising for the
    scheme, query and fragment rules; the parts are validated by the caller."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise SpiffeIdError(f"{text!r} is not a SPIFFE ID: it must start with 'spiffe://'")
    if scheme != "spiffe":
        if scheme.lower() == "spiffe":
            raise SpiffeIdError(f"scheme of {text!r} must be lowercase 'spiffe'")
        raise SpiffeIdError(f"scheme of {text!r} must be 'spiffe', not {scheme!r}")
    if "#" in rest:
        raise SpiffeIdError(f"{text!r} has a fragment ('#'); SPIFFE IDs have none")
    if "?" in rest:
        raise SpiffeIdError(f"{text!r} has a query ('?'); SPIFFE IDs have none")
    authority, slash, path = rest.partition("/")
    if not authority:
        raise SpiffeIdError(f"{text!r} has an empty trust domain")
    return authority, slash + path
