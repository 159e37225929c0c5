"""Resources on the store: all-or-nothing apply with analyze's findings, cross-resource checks
against the stored configuration, resourceVersion, If-Match, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pymesh.config import analyze_text
from pymesh_controlplane.resources import (
    InvalidConfigError,
    NotFoundError,
    PreconditionFailedError,
    ResourceError,
    ResourceService,
    resolve_kind,
)
from pymesh_controlplane.store import SqliteStore

pytestmark = pytest.mark.anyio

SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 18081}, labels: {version: v1}}]
"""
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
    - route: [{destination: {host: reviews, subset: v1}}]
"""
TYPO = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
    - retries: {attemps: 3}
      route: [{destination: {host: ratings}}]
"""


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[ResourceService]:
    store = await SqliteStore.open(tmp_path / "s.db", durable=False)
    try:
        yield ResourceService(store)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("VirtualService", "VirtualService"),
        ("virtualservices", "VirtualService"),
        ("vs", "VirtualService"),
        ("destinationrule", "DestinationRule"),
        ("serviceentries", "ServiceEntry"),
        ("Sidecars", "Sidecar"),
        ("authorizationpolicies", "AuthorizationPolicy"),
        ("ap", "AuthorizationPolicy"),
        ("Gateway", None),
    ],
)
def test_resolve_kind(name: str, kind: str | None) -> None:
    assert resolve_kind(name) == kind


async def test_apply_get_list_and_unchanged(svc: ResourceService) -> None:
    res = await svc.apply(SE + "---\n" + DR + "---\n" + VS, "mesh.yaml")
    assert [(r.kind, r.action) for r in res.resources] == [
        ("ServiceEntry", "created"),
        ("DestinationRule", "created"),
        ("VirtualService", "created"),
    ]
    assert {r.resource_version for r in res.resources} == {str(res.revision)}
    got = await svc.get("VirtualService", "default", "reviews")
    assert got.resource_version == str(res.revision)
    api = got.to_api()
    assert api["metadata"]["resourceVersion"] == str(res.revision)
    assert api["metadata"]["generation"] == 1
    # the same text again changes nothing, not even the revision
    again = await svc.apply(SE + "---\n" + DR + "---\n" + VS, "mesh.yaml")
    assert {r.action for r in again.resources} == {"unchanged"}
    assert again.revision == res.revision
    rev, items = await svc.query(namespace="default")
    assert rev == res.revision and len(items) == 3
    _, vss = await svc.query("VirtualService")
    assert [r.name for r in vss] == ["reviews"]


async def test_invalid_apply_is_refused_whole_with_analyze_findings(svc: ResourceService) -> None:
    text = SE + "---\n" + TYPO
    with pytest.raises(InvalidConfigError) as info:
        await svc.apply(text, "bad.yaml")
    errors = [f for f in info.value.findings if f.severity == "error"]
    expected = [f for f in analyze_text(text, "bad.yaml") if f.severity == "error"]
    assert errors == expected  # the same findings, lines and all, as `pymeshctl analyze`
    assert any("attemps" in f.path for f in errors)
    assert (await svc.query())[1] == []  # the valid ServiceEntry was not stored either


async def test_cross_resource_checks_use_the_stored_config(svc: ResourceService) -> None:
    await svc.apply(SE + "---\n" + DR, "base.yaml")
    # alone, this VirtualService's subset has no DestinationRule; with the stored one it does
    assert any(f.code == "IST0101" for f in analyze_text(VS, "vs.yaml"))
    res = await svc.apply(VS, "vs.yaml")
    assert res.resources[0].action == "created"
    # a DestinationRule that drops the subset would break the stored VirtualService: refused
    no_v1 = DR.replace("subsets: [{name: v1, labels: {version: v1}}]", "subsets: []")
    with pytest.raises(InvalidConfigError) as info:
        await svc.apply(no_v1, "dr.yaml")
    assert [(f.code, f.resource, f.file) for f in info.value.findings] == [
        ("IST0101", "VirtualService default/reviews", "")
    ]
    # and so would deleting it
    with pytest.raises(InvalidConfigError, match="would break"):
        await svc.delete("DestinationRule", "default", "reviews")
    await svc.delete("VirtualService", "default", "reviews")
    await svc.delete("DestinationRule", "default", "reviews")
    with pytest.raises(NotFoundError):
        await svc.get("DestinationRule", "default", "reviews")


async def test_conditional_writes(svc: ResourceService) -> None:
    created = await svc.apply(SE, "se.yaml", if_none_match="*")
    rv = created.resources[0].resource_version
    with pytest.raises(PreconditionFailedError):
        await svc.apply(SE, "se.yaml", if_none_match="*")
    changed = SE.replace("18081", "18082")
    with pytest.raises(PreconditionFailedError, match="expected 999"):
        await svc.apply(changed, "se.yaml", if_match='"999"')
    ok = await svc.apply(changed, "se.yaml", if_match=f'"{rv}"')
    assert ok.resources[0].action == "configured"
    assert (await svc.get("ServiceEntry", "default", "reviews")).version == 2
    with pytest.raises(PreconditionFailedError):
        await svc.delete("ServiceEntry", "default", "reviews", if_match=f'"{rv}"')
    with pytest.raises(ResourceError, match="exactly one"):
        await svc.apply(SE + "---\n" + DR, "two.yaml", if_match='"1"')
    with pytest.raises(ResourceError, match="the URL names"):
        await svc.apply(DR, "x", expect=("ServiceEntry", "default", "reviews"))


async def test_dry_run_and_server_fields(svc: ResourceService) -> None:
    text = (
        SE.replace(
            "metadata: {name: reviews, namespace: default}",
            "metadata: {name: reviews, namespace: default, resourceVersion: '7', uid: x}",
        )
        + "status: {}\n"
    )
    res = await svc.apply(text, "se.yaml", dry_run=True)
    assert res.dry_run and res.resources[0].action == "created"
    assert (await svc.query())[1] == []
    await svc.apply(text, "se.yaml")
    doc = (await svc.get("ServiceEntry", "default", "reviews")).doc
    assert "status" not in doc and set(doc["metadata"]) == {"name", "namespace"}
    _, findings = await svc.analyze()
    assert all(f.severity != "error" for f in findings)


async def test_empty_and_garbage_bodies(svc: ResourceService) -> None:
    with pytest.raises(ResourceError, match="no resource"):
        await svc.apply("", "empty.yaml")
    with pytest.raises(InvalidConfigError) as info:
        await svc.apply("{not: [valid", "x.yaml")
    assert info.value.findings[0].code == "PM0001"
    with pytest.raises(InvalidConfigError):
        await svc.apply("[1, 2]", "x.json")
