"""The operator API as an aiohttp application (see docs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from callcenter.domain.offers import Duty
from callcenter.web import (
    admin,
    audit,
    auth,
    board,
    board_feed,
    board_watch,
    calls,
    carer_page,
    carers,
    duty,
    guards,
    headers,
    health,
    metrics,
    openapi,
    pages,
    register,
    register_files,
    reports,
    rota,
    sessions,
    sms_webhooks,
    users,
    voice_bridge,
    voice_inbound,
    voice_webhooks,
    wall,
    welfare,
)
from callcenter.web.client_address import real_client
from callcenter.web.errors import json_errors
from callcenter.web.family import routes as family
from callcenter.web.request_log import log_requests
from callcenter.web.state import (
    BOARD,
    CLOCK,
    CONFIG,
    DATABASE,
    DESK,
    DEVICE_LOGINS,
    HEALTH,
    HOUSEHOLD_OF_CALL,
    METRICS,
    OPEN_BOARDS,
    SMS_ACCOUNT,
    STRICT_ANSWERS,
)

if TYPE_CHECKING:
    from callcenter.app import Running

# Every body the API takes is a few small fields; anything bigger is a mistake or abuse.
MAX_BODY_BYTES = 64 * 1024


def build_app(server: Running) -> web.Application:
    """The API for ``server``: routes, JSON errors, token sign-in, request log. The
    handlers are given the services they call, each under its key in state.py."""
    # Outermost first: the client's address behind trusted proxies (for everything
    # after), the log sees the final answer, errors become JSON, sign-in (a request
    # without one is refused before anything it carries is read; credentials are only
    # ever hashed), then nothing with a NUL goes further.
    app = web.Application(
        middlewares=[
            real_client,
            log_requests,
            json_errors,
            auth.authenticate,
            guards.refuse_nul,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[CONFIG] = server.config
    app[CLOCK] = server.clock
    app[DATABASE] = server.engine
    app[DESK] = server.desk
    app[DEVICE_LOGINS] = server.device_logins
    app[HEALTH] = server.health
    app[SMS_ACCOUNT] = server.sms_account
    app[STRICT_ANSWERS] = server.config.web.strict_answers
    app[METRICS] = metrics.Metrics(
        server.engine,
        server.clock,
        metrics.Counted(
            ingest=server.ingest,
            follower=server.follower,
            scheduler=server.scheduler,
            relay=server.relay,
            watchdog=server.watchdog,
            health=server.health,
            refusals=server.broker_refusals,
        ),
    )
    app[HOUSEHOLD_OF_CALL] = {}
    app[BOARD] = board.BoardData(
        server.config, server.engine, server.clock, server.desk, server.health
    )
    app[OPEN_BOARDS] = board_watch.OpenBoards(server.config.web, server.engine, server.clock)
    offers = server.desk.offers
    if offers is not None:
        # A sign-in that ended takes its operator off duty (docs/calls.md, "Offers").
        app[OPEN_BOARDS].on_ended = lambda operator_id: offers.set_duty(operator_id, Duty.OFF_DUTY)
    for module in (
        admin,
        audit,
        auth,
        board,
        board_feed,
        calls,
        carer_page,
        carers,
        duty,
        family,
        health,
        metrics,
        openapi,
        pages,
        register,
        register_files,
        rota,
        reports,
        sessions,
        sms_webhooks,
        voice_webhooks,
        voice_inbound,
        voice_bridge,
        users,
        wall,
        welfare,
    ):
        app.add_routes(module.routes)
    headers.install(app)
    app.on_shutdown.append(board.close_boards)
    app.cleanup_ctx.append(board_watch.watching)
    return app
