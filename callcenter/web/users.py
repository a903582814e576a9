"""Administrators manage the desk's accounts from the board: list, add, set a password,
switch off and on. Only an ``admin`` may; everyone else gets 403."""

from __future__ import annotations

import logging

from aiohttp import web

from callcenter.store import models as m
from callcenter.web import accounts
from callcenter.web.auth import require_role
from callcenter.web.bodies import ActiveBody, NewUserBody, PasswordBody, read_body
from callcenter.web.errors import ApiError, bad_request
from callcenter.web.replies import json_reply
from callcenter.web.state import OPEN_BOARDS, SERVER
from callcenter.web.views import iso

log = logging.getLogger("callcenter.web.users")

routes = web.RouteTableDef()


def _refused(error: accounts.OperatorAccountError) -> ApiError:
    text = str(error)
    if text.startswith("there is no operator"):
        return ApiError(404, "not_found", text)
    if text.startswith("there is already"):
        return ApiError(409, "conflict", text)
    return bad_request(text)


@routes.get("/api/users")
async def list_users(request: web.Request) -> web.Response:
    """Every account, without tokens or passwords."""
    require_role(request, m.OperatorRole.ADMIN)
    found = await accounts.list_operators(request.app[SERVER].engine)
    return json_reply(
        {
            "users": [
                {
                    "username": a.username,
                    "name": a.name,
                    "role": a.role,
                    "phone": a.phone,
                    "language": a.language,
                    "active": a.active,
                    "can_sign_in": a.can_sign_in,
                    "created_at": iso(a.created_at),
                }
                for a in found
            ]
        }
    )


@routes.post("/api/users")
async def add_user(request: web.Request) -> web.Response:
    """A new account with a board password."""
    admin = require_role(request, m.OperatorRole.ADMIN)
    body = await read_body(request, NewUserBody)
    server = request.app[SERVER]
    try:
        await accounts.add_operator(
            server.engine,
            body.username,
            name=body.name,
            now=server.clock.now(),
            role=body.role,
            phone=body.phone,
            language=body.language.value,
            password=body.password,
        )
    except accounts.OperatorAccountError as error:
        raise _refused(error) from None
    server.desk.district.invalidate()  # a supervisor with a phone is texted from now on
    log.info("%s added user %s (%s)", admin.username, body.username, body.role.value)
    return json_reply({"username": body.username, "role": body.role.value}, status=201)


@routes.post("/api/users/{username}/password")
async def set_password(request: web.Request) -> web.Response:
    """A new board password for the user; their open boards are signed out."""
    require_role(request, m.OperatorRole.ADMIN)
    body = await read_body(request, PasswordBody)
    try:
        await accounts.set_password(
            request.app[SERVER].engine, request.match_info["username"], body.password
        )
    except accounts.OperatorAccountError as error:
        raise _refused(error) from None
    request.app[OPEN_BOARDS].check_soon()
    return json_reply({"username": request.match_info["username"], "password": "set"})


@routes.post("/api/users/{username}/active")
async def set_active(request: web.Request) -> web.Response:
    """Switch the user off (signed out, token refused) or on again."""
    admin = require_role(request, m.OperatorRole.ADMIN)
    body = await read_body(request, ActiveBody)
    username = request.match_info["username"]
    if username == admin.username and not body.active:
        raise bad_request("an administrator cannot switch themselves off; ask another")
    server = request.app[SERVER]
    try:
        await accounts.set_active(server.engine, username, body.active)
    except accounts.OperatorAccountError as error:
        raise _refused(error) from None
    server.desk.district.invalidate()
    request.app[OPEN_BOARDS].check_soon()
    return json_reply({"username": username, "active": body.active})
