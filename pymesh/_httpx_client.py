"""The httpx client classes the mesh hands out: httpx's own, minus two per-request costs.

`Mesh.http_client()` and `Mesh.async_http_client()` return `MeshClient` / `MeshAsyncClient`,
subclasses of `httpx.Client` / `httpx.AsyncClient` that behave exactly like them, but:

- cookies: httpx runs `Cookies.extract_cookies` on every response, building a
  `urllib.request.Request` and an `email.message.Message` for `http.cookiejar` — about 27 µs
  per request here, a third of the client's own overhead — even when the response sets no
  cookie, which is almost always the case between services. `LeanCookies` looks for
  `Set-Cookie` / `Set-Cookie2` first (in httpx's own lower-cased header list) and does exactly
  what httpx does when there is one. The jar is the client's own, so `client.cookies` behaves
  as before (assigning `client.cookies` keeps the lean jar).
- URLs: httpx parses the URL string of every request (`httpx.URL(str)`, about 8 µs). The same
  few service URLs come back again and again, so the parse of a string is cached (`httpx.URL`
  is immutable; the cache is bounded; an invalid URL raises as before and is not cached).
- garbage: httpx binds every response's stream to the response (`BoundSyncStream._response`,
  to set `elapsed` on close), a reference cycle that takes the request, the response, their
  headers and the mesh's decision record with it until the cyclic GC runs — about 25 objects
  per request, 5 µs of collector time. Once `send` returns a closed response (every call that
  is not `client.stream(...)`), the closed stream lets go of it, and all of it is freed at once.
"""

from __future__ import annotations

import functools
from typing import Any

import httpx
from httpx._client import BoundAsyncStream, BoundSyncStream

__all__ = ["LeanCookies", "MeshAsyncClient", "MeshClient"]

_COOKIE_HEADERS = (b"set-cookie", b"set-cookie2")


class LeanCookies(httpx.Cookies):
    """`httpx.Cookies` that skips cookie extraction for responses without a cookie header."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Store the cookies a response sets (only parsing when it sets some)."""
        items = getattr(response.headers, "_list", None)  # (raw, lower-cased, value) triples
        if items is not None:
            for item in items:
                if item[1] in _COOKIE_HEADERS:
                    break
            else:
                return
        super().extract_cookies(response)


@functools.lru_cache(maxsize=512)
def _parse_url(url: str) -> httpx.URL:
    return httpx.URL(url)


class _Lean:
    """What both client classes change (mixed in before httpx's class)."""

    _cookies: httpx.Cookies

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cookies = LeanCookies(self._cookies.jar)

    @property
    def cookies(self) -> httpx.Cookies:
        """The client's cookie jar (as httpx's)."""
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._cookies = LeanCookies(httpx.Cookies(cookies).jar)

    def _merge_url(self, url: httpx.URL | str) -> httpx.URL:
        if type(url) is str:
            url = _parse_url(url)
        merged: httpx.URL = super()._merge_url(url)  # type: ignore[misc]
        return merged


def _unbind(response: httpx.Response) -> httpx.Response:
    """Break httpx's response ↔ stream cycle once the response is closed (see the module
    docstring); a response still open (streamed) keeps it until it is closed."""
    stream = response.stream
    if response.is_closed and type(stream) in _BOUND:
        stream._response = None  # type: ignore[union-attr]
    return response


_BOUND = (BoundSyncStream, BoundAsyncStream)


class MeshClient(_Lean, httpx.Client):
    """`httpx.Client`, with cookie parsing skipped when there is no cookie, URL strings'
    parses cached and closed responses freed at once (see the module docstring)."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send `request` (as `httpx.Client.send`)."""
        return _unbind(super().send(request, **kwargs))


class MeshAsyncClient(_Lean, httpx.AsyncClient):
    """`httpx.AsyncClient`, with cookie parsing skipped when there is no cookie, URL strings'
    parses cached and closed responses freed at once (see the module docstring)."""

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send `request` (as `httpx.AsyncClient.send`)."""
        return _unbind(await super().send(request, **kwargs))
