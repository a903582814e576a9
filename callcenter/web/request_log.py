"""One log line per API request: who asked for what, the answer, and how long it took.

A request about a call names the call and its household, as every log line about a call
does; a refused request says why. Health checks and scrapes are logged only at DEBUG.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from callcenter import logs
from callcenter.web.state import CALL, OPERATOR, REFUSAL

log = logging.getLogger("callcenter.web")

_QUIET_PATHS = frozenset({"/healthz", "/metrics"})


@web.middleware
async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as answer:  # a redirect or a refusal, raised as the answer
        status = answer.status
        raise
    finally:
        elapsed_ms = (time.perf_counter() - started) * 1000
        call = request.get(CALL)
        about = f"{call}: " if call is not None else ""
        who = str(request[OPERATOR].actor) if OPERATOR in request else "anonymous"
        why = f" ({request[REFUSAL]})" if REFUSAL in request and status >= 400 else ""
        quiet = request.path in _QUIET_PATHS and status < 400
        with logs.bound(
            call_id=None if call is None else call.call_id,
            household=None if call is None else call.household,
        ):
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s%s %s -> %d by %s in %.1f ms%s",
                about,
                request.method,
                request.path_qs,
                status,
                who,
                elapsed_ms,
                why,
            )
