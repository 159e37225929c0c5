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
"""

from __future__ import annotations

import functools
from typing import Any

import httpx

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


class MeshClient(_Lean, httpx.Client):
    """`httpx.Client`, with cookie parsing skipped when there is no cookie and URL strings'
    parses cached (see the module docstring)."""


class MeshAsyncClient(_Lean, httpx.AsyncClient):
    """`httpx.AsyncClient`, with cookie parsing skipped when there is no cookie and URL
    strings' parses cached (see the module docstring)."""
