"""What every request must pass before any handler reads it.

A NUL character in the path or query is refused outright: no name, code or date of ours
has one, and PostgreSQL's text cannot hold one, so letting it reach a query would turn a
typo into a database error.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from callcenter.web.bodies import NUL_REFUSED
from callcenter.web.errors import bad_request


@web.middleware
async def refuse_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a request with a NUL in its (decoded) path or query."""
    query = request.query
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in query.items()):
        raise bad_request(NUL_REFUSED)
    return await handler(request)
