"""The meshed httpx client classes behave as httpx's own: cookies are still stored (and sent),
URLs (absolute, relative to `base_url`, invalid) resolve as before."""

from __future__ import annotations

import httpx
import pytest

from pymesh._httpx_client import LeanCookies, MeshAsyncClient, MeshClient
from tests.e2e.meshkit import endpoint, make_mesh, service_entry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def echo(request: httpx.Request) -> httpx.Response:
    headers = [("x-cookie", request.headers.get("cookie", ""))]
    if request.url.path == "/login":
        headers.append(("set-cookie", "session=abc; Path=/"))
    return httpx.Response(200, headers=headers, text=str(request.url))


def test_cookies_are_stored_and_sent_as_by_httpx() -> None:
    with MeshClient(transport=httpx.MockTransport(echo)) as client:
        assert isinstance(client.cookies, LeanCookies)
        assert client.get("http://svc/").headers["x-cookie"] == ""
        client.get("http://svc/login")
        assert client.cookies["session"] == "abc"
        assert client.get("http://svc/again").headers["x-cookie"] == "session=abc"
        client.cookies = {"other": "1"}  # assigning keeps the lean jar, with httpx's meaning
        assert isinstance(client.cookies, LeanCookies)
        assert client.get("http://svc/").headers["x-cookie"] == "other=1"


def test_urls_resolve_as_by_httpx() -> None:
    transport = httpx.MockTransport(echo)
    with MeshClient(transport=transport, base_url="http://svc/api/") as client:
        for _ in range(2):  # the second time from the parse cache
            assert client.get("http://other:81/x?y=1").text == "http://other:81/x?y=1"
            assert client.get("items?page=2").text == "http://svc/api/items?page=2"
        with pytest.raises(httpx.InvalidURL):
            client.get("http://[::1/")


@pytest.mark.anyio
async def test_async_client_is_the_same() -> None:
    async with MeshAsyncClient(transport=httpx.MockTransport(echo)) as client:
        await client.get("http://svc/login")
        r = await client.get("http://svc/")
        assert r.headers["x-cookie"] == "session=abc"


def test_mesh_hands_out_these_classes() -> None:
    mesh = make_mesh(service_entry([endpoint(9)]))
    assert isinstance(mesh.http_client(), MeshClient)
    client = mesh.async_http_client(pool="httpcore")
    assert isinstance(client, MeshAsyncClient) and isinstance(client, httpx.AsyncClient)
    with pytest.raises(ValueError, match="async-only"):
        mesh.http_client(pool="lean")
    with pytest.raises(ValueError, match="expected one of"):
        mesh.async_http_client(pool="fast")
