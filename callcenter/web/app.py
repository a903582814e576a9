"""The operator API as an aiohttp application (see docs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from callcenter.web import (
    audit,
    auth,
    board,
    calls,
    carer_page,
    carers,
    family,
    health,
    metrics,
    pages,
    reports,
    sessions,
    sms,
    users,
    welfare,
)
from callcenter.web.errors import json_errors
from callcenter.web.request_log import log_requests
from callcenter.web.state import BOARD, HOUSEHOLD_OF_CALL, METRICS, SERVER

if TYPE_CHECKING:
    from callcenter.app import Running

# Every body the API takes is a few small fields; anything bigger is a mistake or abuse.
MAX_BODY_BYTES = 64 * 1024


def build_app(server: Running) -> web.Application:
    """The API for ``server``: routes, JSON errors, token sign-in, request log."""
    # Outermost first: the log sees the final answer, errors become JSON, then sign-in.
    app = web.Application(
        middlewares=[log_requests, json_errors, auth.authenticate],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SERVER] = server
    app[METRICS] = metrics.Metrics(server)
    app[HOUSEHOLD_OF_CALL] = {}
    app[sessions.FAILURES] = sessions.FailureCounter()
    app[BOARD] = server.boards = board.BoardData(server)
    for module in (
        audit,
        auth,
        board,
        calls,
        carer_page,
        carers,
        family,
        health,
        metrics,
        pages,
        reports,
        sessions,
        sms,
        users,
        welfare,
    ):
        app.add_routes(module.routes)
    app.on_shutdown.append(board.close_boards)
    return app
