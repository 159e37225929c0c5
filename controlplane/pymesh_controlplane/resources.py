"""Istio resources in the store: apply (all or nothing), get, list, delete, conditional updates.

How this works:

- A resource lives at `/resources/<Kind>/<namespace>/<name>` as its JSON document (apiVersion,
  kind, metadata, spec), without the fields a server owns (status, resourceVersion, ...). Its
  `resourceVersion` is the key's mod revision; `generation` its version.
- **Apply** parses the text (YAML or JSON, several documents, `kind: List`) and validates it
  with `pymesh.config`, the code behind `pymeshctl analyze`: field checks on every document, then
  the cross-resource checks on the configuration the apply would produce (stored resources with
  the applied ones replacing theirs). Any error refuses the whole apply and nothing is written;
  the findings are the ones `analyze` reports (errors a change would cause on a stored resource
  are reported on that resource). Resources whose document did not change are left alone.
- **One writer at a time, across replicas.** Every config write also writes `/config/epoch`, and
  commits only if that key did not change since the read it validated against (compare-and-swap
  on its mod revision); a lost race re-reads and validates again. So two concurrent applies can
  never each pass validation and together break the configuration.
- Conditional writes: `if_match` (a resourceVersion; "0" or None) must equal the stored one, or
  `PreconditionFailed` (HTTP 412); `if_none_match="*"` refuses to replace an existing resource.
- Validation results of stored documents are cached by (key, mod revision).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pymesh.config.analyze import analyze_parsed
from pymesh.config.findings import Finding, render_errors
from pymesh.config.loader import Document, parse_text
from pymesh.config.schema import KINDS
from pymesh.config.validate import Parsed, validate_documents
from pymesh_controlplane.store import Compare, Delete, KeyValue, Put, Store

__all__ = [
    "CONFIG_EPOCH_KEY",
    "RESOURCE_PREFIX",
    "AppliedResource",
    "ApplyResult",
    "ConflictError",
    "InvalidConfigError",
    "NotFoundError",
    "PreconditionFailedError",
    "ResourceError",
    "ResourceService",
    "StoredResource",
    "parse_resource_key",
    "resolve_kind",
    "resource_key",
]

RESOURCE_PREFIX = "/resources/"
CONFIG_EPOCH_KEY = "/config/epoch"
STORED_FILE = "<stored>"
MAX_RETRIES = 16

# server-owned metadata: never stored, filled in on reads
_SERVER_META = (
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)

_ALIASES: dict[str, str] = {
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "se": "ServiceEntry",
    "we": "WorkloadEntry",
    "pa": "PeerAuthentication",
    "ap": "AuthorizationPolicy",
}


def resolve_kind(name: str) -> str | None:
    """The kind `name` means: `VirtualService`, `virtualservice`, `virtualservices`, `vs`, ...;
    None when it names no kind pymesh reads."""
    low = name.strip().lower()
    if low in _ALIASES:
        return _ALIASES[low]
    for kind in KINDS:
        k = kind.lower()
        plurals = (k + "s", k[:-1] + "ies") if k.endswith("y") else (k + "s",)
        if low == k or low in plurals:
            return kind
    return None


def resource_key(kind: str, namespace: str, name: str) -> str:
    """The store key of one resource."""
    return f"{RESOURCE_PREFIX}{kind}/{namespace}/{name}"


def parse_resource_key(key: str) -> tuple[str, str, str] | None:
    """(kind, namespace, name) of a resource key, or None for other keys."""
    if not key.startswith(RESOURCE_PREFIX):
        return None
    parts = key[len(RESOURCE_PREFIX) :].split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


class ResourceError(Exception):
    """Base of the errors the resource API reports (each maps to one HTTP status)."""

    status = 400
    code = "bad_request"

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": self.code, "message": str(self)}


class InvalidConfigError(ResourceError):
    """The configuration was refused: `findings` lists every finding (errors first)."""

    status = 422
    code = "invalid_config"

    def __init__(self, findings: Sequence[Finding], message: str | None = None) -> None:
        self.findings = list(findings)
        super().__init__(message or render_errors(self.findings))

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body, with the findings."""
        return {**super().to_dict(), "findings": [f.to_dict() for f in self.findings]}


class NotFoundError(ResourceError):
    """No such resource."""

    status = 404
    code = "not_found"


class PreconditionFailedError(ResourceError):
    """If-Match / If-None-Match did not hold."""

    status = 412
    code = "precondition_failed"


class ConflictError(ResourceError):
    """The write kept losing races with other writers."""

    status = 409
    code = "conflict"


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One stored resource: its identity, document and revisions."""

    kind: str
    namespace: str
    name: str
    doc: dict[str, Any]
    create_revision: int
    mod_revision: int
    version: int

    @property
    def key(self) -> str:
        """Its store key."""
        return resource_key(self.kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        """`Kind namespace/name`."""
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def resource_version(self) -> str:
        """The mod revision, as Kubernetes spells resourceVersion (a string)."""
        return str(self.mod_revision)

    @classmethod
    def from_kv(cls, kv: KeyValue) -> StoredResource | None:
        """Decode a store key-value (None if it is not a resource)."""
        ident = parse_resource_key(kv.key)
        if ident is None:
            return None
        doc = json.loads(kv.value)
        return cls(*ident, doc, kv.create_revision, kv.mod_revision, kv.version)

    def to_api(self) -> dict[str, Any]:
        """The document as the API returns it: with resourceVersion and generation."""
        doc = dict(self.doc)
        meta = dict(doc.get("metadata") or {})
        meta["resourceVersion"] = self.resource_version
        meta["generation"] = self.version
        doc["metadata"] = meta
        return doc


@dataclass(frozen=True, slots=True)
class AppliedResource:
    """What an apply did to one resource."""

    kind: str
    namespace: str
    name: str
    action: Literal["created", "configured", "unchanged", "deleted"]
    resource_version: str

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "action": self.action,
            "resourceVersion": self.resource_version,
        }


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of an apply: the store revision after it, one entry per resource, and the
    warnings and infos found (errors refuse the apply instead)."""

    revision: int
    resources: tuple[AppliedResource, ...]
    findings: tuple[Finding, ...] = ()
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "revision": self.revision,
            "dryRun": self.dry_run,
            "resources": [r.to_dict() for r in self.resources],
            "findings": [f.to_dict() for f in self.findings],
        }


def normalize(data: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The document to store: apiVersion, kind, metadata (namespace filled in, server-owned
    fields dropped) and spec; `status` dropped."""
    meta = {k: v for k, v in dict(data.get("metadata") or {}).items() if k not in _SERVER_META}
    meta["namespace"] = namespace
    out: dict[str, Any] = {
        "apiVersion": data["apiVersion"],
        "kind": data["kind"],
        "metadata": meta,
    }
    if data.get("spec") is not None:
        out["spec"] = data["spec"]
    return out


def _raw_of(p: Parsed) -> Mapping[str, Any]:
    data: Any = p.doc.data
    if p.base:
        index = int(p.base.removeprefix("items[").removesuffix("]"))
        data = data["items"][index]
    return data  # type: ignore[no-any-return]


def _stored_finding(f: Finding) -> Finding:
    return replace(f, file="", line=None) if f.file == STORED_FILE else f


@dataclass
class _Plan:
    revision: int
    epoch: int
    stored: dict[str, StoredResource]
    writes: list[tuple[str, StoredResource | None, dict[str, Any] | None]] = field(
        default_factory=list
    )


class ResourceService:
    """Apply / get / list / delete Istio resources on a `Store`."""

    def __init__(self, store: Store, *, default_namespace: str = "default") -> None:
        self.store = store
        self.default_namespace = default_namespace
        self._parsed: dict[tuple[str, int], Parsed] = {}

    def __repr__(self) -> str:
        return f"ResourceService({self.store!r}, cached={len(self._parsed)})"

    # ------------------------------------------------------------------ reads

    async def query(
        self, kind: str | None = None, namespace: str | None = None, name: str | None = None
    ) -> tuple[int, list[StoredResource]]:
        """(store revision, resources) filtered by kind, namespace and name, in key order."""
        prefix = RESOURCE_PREFIX
        if kind is not None:
            prefix += f"{kind}/"
            if namespace is not None:
                prefix += f"{namespace}/"
        rr = await self.store.range(prefix, prefix=True)
        out = []
        for kv in rr.kvs:
            res = StoredResource.from_kv(kv)
            if res is None:
                continue
            if namespace is not None and res.namespace != namespace:
                continue
            if name is not None and res.name != name:
                continue
            out.append(res)
        return rr.revision, out

    async def get(self, kind: str, namespace: str, name: str) -> StoredResource:
        """One resource, or `NotFoundError`."""
        rr = await self.store.range(resource_key(kind, namespace, name))
        if not rr.kvs:
            raise NotFoundError(f"{kind} {namespace}/{name} not found")
        res = StoredResource.from_kv(rr.kvs[0])
        assert res is not None
        return res

    async def analyze(self) -> tuple[int, list[Finding]]:
        """Every finding about the stored configuration (what `pymeshctl analyze` says live)."""
        plan = await self._read()
        parsed = [self._parse_stored(r) for r in self._ordered(plan.stored.values())]
        findings = [f for p in parsed for f in self._stored_findings(p)]
        findings += analyze_parsed(parsed)
        return plan.revision, [_stored_finding(f) for f in findings]

    # ------------------------------------------------------------------ writes

    async def apply(
        self,
        text: str,
        filename: str = "<apply>",
        *,
        dry_run: bool = False,
        if_match: str | None = None,
        if_none_match: str | None = None,
        expect: tuple[str, str, str] | None = None,
    ) -> ApplyResult:
        """Validate `text` and store every resource in it, all or nothing.

        `if_match` / `if_none_match` need exactly one resource; `expect` (kind, namespace, name)
        refuses a body that holds anything else (PUT on one resource's URL)."""
        docs, findings = parse_text(text, filename)
        parsed, more = validate_documents(docs, self.default_namespace)
        findings = findings + more
        applied: list[tuple[str, Parsed]] = []
        for p in parsed:
            if p.meta is not None:
                applied.append((resource_key(p.kind, p.meta.namespace, p.meta.name), p))
        if not applied and not any(f.severity == "error" for f in findings):
            raise ResourceError("the body holds no resource")
        if (if_match is not None or if_none_match is not None or expect) and len(applied) != 1:
            raise ResourceError("a conditional or single-resource write needs exactly one resource")
        if expect is not None and applied:
            p = applied[0][1]
            assert p.meta is not None
            got = (p.kind, p.meta.namespace, p.meta.name)
            if got != expect:
                raise ResourceError(
                    f"the body is {got[0]} {got[1]}/{got[2]}, the URL names "
                    f"{expect[0]} {expect[1]}/{expect[2]}"
                )
        for _attempt in range(MAX_RETRIES):
            plan = await self._read()
            keys = {k for k, _ in applied}
            merged = [
                self._parse_stored(r)
                for r in self._ordered(plan.stored.values())
                if r.key not in keys
            ]
            merged += [p for _, p in applied]
            cross = analyze_parsed(merged)
            out = findings + [f for f in cross if f.file != STORED_FILE]
            out += [
                _stored_finding(f) for f in cross if f.file == STORED_FILE and f.severity == "error"
            ]
            out.sort(key=lambda f: (f.file != filename, f.line or 0))
            if any(f.severity == "error" for f in out):
                raise InvalidConfigError(out)
            for key, p in applied:
                assert p.meta is not None
                old = plan.stored.get(key)
                self._check_preconditions(key, old, if_match, if_none_match)
                plan.writes.append((key, old, normalize(_raw_of(p), p.meta.namespace)))
            result = await self._commit(plan, dry_run)
            if result is not None:
                return replace(result, findings=tuple(out))
        raise ConflictError("the configuration kept changing during the apply; try again")

    async def delete(
        self, kind: str, namespace: str, name: str, *, if_match: str | None = None
    ) -> ApplyResult:
        """Delete one resource (`NotFoundError` if absent). Refused (`InvalidConfigError`) when
        the remaining configuration would have errors."""
        key = resource_key(kind, namespace, name)
        for _attempt in range(MAX_RETRIES):
            plan = await self._read()
            old = plan.stored.get(key)
            if old is None:
                raise NotFoundError(f"{kind} {namespace}/{name} not found")
            self._check_preconditions(key, old, if_match, None)
            rest = [
                self._parse_stored(r) for r in self._ordered(plan.stored.values()) if r.key != key
            ]
            errors = [_stored_finding(f) for f in analyze_parsed(rest) if f.severity == "error"]
            if errors:
                raise InvalidConfigError(
                    errors,
                    f"deleting {old.ref} would break the configuration:\n"
                    + "\n".join(str(f) for f in errors),
                )
            plan.writes.append((key, old, None))
            result = await self._commit(plan, False)
            if result is not None:
                return result
        raise ConflictError("the configuration kept changing during the delete; try again")

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _check_preconditions(
        key: str, old: StoredResource | None, if_match: str | None, if_none_match: str | None
    ) -> None:
        if if_none_match is not None:
            if if_none_match.strip() != "*":
                raise ResourceError('If-None-Match supports only "*"')
            if old is not None:
                raise PreconditionFailedError(f"{old.ref} exists (If-None-Match: *)")
        if if_match is not None:
            want = if_match.strip().strip('"').removeprefix("W/").strip('"')
            have = old.resource_version if old is not None else "0"
            if (want != "*" and want != have) or (want == "*" and old is None):
                what = old.ref if old is not None else key
                raise PreconditionFailedError(
                    f"{what} is at resourceVersion {have}, the request expected {want}"
                )

    async def _read(self) -> _Plan:
        rr = await self.store.range("/", prefix=True)
        stored: dict[str, StoredResource] = {}
        epoch = 0
        for kv in rr.kvs:
            if kv.key == CONFIG_EPOCH_KEY:
                epoch = kv.mod_revision
                continue
            res = StoredResource.from_kv(kv)
            if res is not None:
                stored[kv.key] = res
        live = {(r.key, r.mod_revision) for r in stored.values()}
        for k in [k for k in self._parsed if k not in live]:
            del self._parsed[k]
        return _Plan(rr.revision, epoch, stored)

    async def _commit(self, plan: _Plan, dry_run: bool) -> ApplyResult | None:
        """Write the plan if the config did not change since it was read (None: retry)."""
        entries: list[AppliedResource] = []
        ops: list[Put | Delete] = []
        for key, old, doc in plan.writes:
            kind, ns, name = parse_resource_key(key) or ("", "", "")
            if doc is None:
                ops.append(Delete(key))
                entries.append(AppliedResource(kind, ns, name, "deleted", "0"))
            elif old is not None and old.doc == doc:
                entries.append(AppliedResource(kind, ns, name, "unchanged", old.resource_version))
            else:
                ops.append(Put(key, json.dumps(doc, separators=(",", ":")).encode()))
                action: Literal["created", "configured"] = "configured" if old else "created"
                entries.append(AppliedResource(kind, ns, name, action, ""))
        if dry_run or not ops:
            return ApplyResult(plan.revision, tuple(entries), dry_run=dry_run)
        ops.append(Put(CONFIG_EPOCH_KEY, b""))
        compares = [Compare(CONFIG_EPOCH_KEY, "mod", "=", plan.epoch)]
        compares += [
            Compare(key, "mod", "=", old.mod_revision if old else 0) for key, old, _ in plan.writes
        ]
        result = await self.store.txn(compares, ops)
        if not result.succeeded:
            return None
        rev = str(result.revision)
        done = tuple(
            replace(e, resource_version=rev) if e.action in ("created", "configured") else e
            for e in entries
        )
        return ApplyResult(result.revision, done)

    @staticmethod
    def _ordered(resources: Iterable[StoredResource]) -> list[StoredResource]:
        return sorted(resources, key=lambda r: (r.create_revision, r.key))

    def _parse_stored(self, res: StoredResource) -> Parsed:
        cache_key = (res.key, res.mod_revision)
        hit = self._parsed.get(cache_key)
        if hit is not None:
            return hit
        parsed, _ = validate_documents([Document(STORED_FILE, 1, res.doc)], res.namespace)
        p = (
            parsed[0]
            if parsed
            else Parsed(None, res.kind, None, {}, Document(STORED_FILE, 1, res.doc), "")
        )
        self._parsed[cache_key] = p
        return p

    @staticmethod
    def _stored_findings(p: Parsed) -> list[Finding]:
        _, findings = validate_documents([p.doc], p.meta.namespace if p.meta else "default")
        return findings
