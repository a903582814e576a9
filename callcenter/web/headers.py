"""The headers every answer of the server carries.

Every page (board, reports, sign-in, family portal, carer page) loads its own scripts,
styles and images and nothing else, and has no inline code; so one strict
Content-Security-Policy fits them all: only this server's own files run, no inline
script or style, no plugin, no framing by another site, forms post only here, images
also from the configured map tile server. Every answer says ``nosniff`` and names the
server without a version; answers under ``/api/`` and ``/family/api/`` (households' data,
refusals too) are never kept by a cache.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web, web_response

from callcenter.config import WebConfig
from callcenter.web.state import CONFIG

SERVER_NAME = "callcenter"
_NOT_STORED = ("/api/", "/family/api/")


def tile_source(tiles_url: str) -> str:
    """The origin a map tile URL template loads from, as a policy names it
    (``https://{s}.tile.example.org/{z}/{x}/{y}.png`` -> ``https://*.tile.example.org``);
    empty when there is none or it is not http(s)."""
    parts = urlsplit(tiles_url.replace("{s}", "x-subdomain"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc.replace('x-subdomain', '*')}"


def page_policy(web_config: WebConfig) -> str:
    """The Content-Security-Policy of every answer. ``connect-src 'self'`` covers the
    board's own WebSocket (CSP Level 3: 'self' takes ws: and wss: on the same host)."""
    images = " ".join(filter(None, ["'self'", "data:", tile_source(web_config.map_tiles_url)]))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "font-src 'self'",
            "media-src 'self'",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def install(app: web.Application) -> None:
    """Give every answer of ``app`` these headers (just before it is sent, so pages,
    files, errors and the board's WebSocket alike)."""
    # The answers aiohttp writes itself, to requests it cannot read at all, never pass
    # the app: their Server header is aiohttp's default, which names its version.
    setattr(web_response, "SERVER_SOFTWARE", SERVER_NAME)  # noqa: B010 (not exported)
    app.on_response_prepare.append(_add_headers)


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["Server"] = SERVER_NAME
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = page_policy(request.app[CONFIG].web)
    headers["X-Frame-Options"] = "DENY"
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith(_NOT_STORED):
        headers["Cache-Control"] = "no-store"
