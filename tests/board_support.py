"""An HTTP client that signs in to the board through its page, keeps the cookie and
sends the CSRF token, as the board's own page does."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from callcenter.web.sessions import CSRF_HEADER
from tests.api_support import PASSWORD, Api


@dataclass
class Browser:
    """An HTTP client that keeps cookies and does not follow redirects, like a careful
    browser; ``csrf`` is the session's token once signed in."""

    api: Api
    http: aiohttp.ClientSession
    csrf: str = ""

    async def get(self, path: str, **options: Any) -> aiohttp.ClientResponse:
        async with self.http.get(path, allow_redirects=False, **options) as reply:
            await reply.read()
            return reply

    async def post(self, path: str, *, csrf: bool = True, **options: Any) -> aiohttp.ClientResponse:
        headers = dict(options.pop("headers", {}))
        if csrf and self.csrf:
            headers[CSRF_HEADER] = self.csrf
        async with self.http.post(path, allow_redirects=False, headers=headers, **options) as reply:
            await reply.read()
            return reply

    async def sign_in(
        self, username: str, password: str = PASSWORD, *, address: str | None = None
    ) -> aiohttp.ClientResponse:
        """Fill in the sign-in form as a person would (from ``address``, through a
        trusted proxy: see api_support.trust_local_proxy)."""
        headers = {} if address is None else {"X-Forwarded-For": address}
        page = await self.get("/login", headers=headers)
        assert page.status == 200
        form_csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert form_csrf is not None
        reply = await self.post(
            "/login",
            csrf=False,
            data={"username": username, "password": password, "csrf": form_csrf.group(1)},
            headers=headers,
        )
        if reply.status == 303:
            async with self.http.get("/api/me") as me:
                self.csrf = (await me.json())["csrf_token"]
        return reply


@contextlib.asynccontextmanager
async def browser(api: Api) -> AsyncIterator[Browser]:
    # unsafe: the server is 127.0.0.1, and aiohttp keeps no cookies for bare addresses
    # unless told to.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=api.server.web_url, cookie_jar=jar) as http:
        yield Browser(api, http)
