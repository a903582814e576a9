"""JSON replies, with names and addresses left readable (UTF-8, not \\u escapes)."""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

_dumps = functools.partial(json.dumps, ensure_ascii=False)


def json_reply(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``body`` as a JSON response."""
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)
