"""Administrators manage the desk's accounts from the board: list, add, set a password,
switch off and on. Only an ``admin`` may; everyone else gets 403."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import Field

from callcenter.engine import accounts
from callcenter.store import models as m
from callcenter.web.bodies import ActiveBody, NewUserBody, PasswordBody, read_body
from callcenter.web.contract import Parameters, contract, path_of
from callcenter.web.errors import ApiError, bad_request
from callcenter.web.responses import json_reply
from callcenter.web.state import CLOCK, DATABASE, DESK, OPEN_BOARDS, OPERATOR
from callcenter.web.views import Shape, iso

log = logging.getLogger("callcenter.web.users")

routes = web.RouteTableDef()


class UserPath(Parameters):
    username: Annotated[
        str, Field(min_length=1, max_length=64, description="a user name such as li.na")
    ]


class User(Shape):
    username: str
    name: str
    role: m.OperatorRole
    phone: str | None
    language: str
    active: bool
    can_sign_in: bool = Field(description="whether they have a board password")
    created_at: datetime


class UserList(Shape):
    """Every account, without tokens or passwords."""

    users: list[User]


class UserAdded(Shape):
    """The account is made; they sign in to the board with the password given."""

    username: str
    role: m.OperatorRole


class PasswordSet(Shape):
    """The password is set; the user's open boards are signed out."""

    username: str
    password: str = Field(description='always "set"')


class ActiveSet(Shape):
    """The account is switched on or off."""

    username: str
    active: bool


_NO_USER = {404: "no such user"}


def _refused(error: accounts.OperatorAccountError) -> ApiError:
    text = str(error)
    if text.startswith("there is no operator"):
        return ApiError(404, "not_found", text)
    if text.startswith("there is already"):
        return ApiError(409, "conflict", text)
    return bad_request(text)


@routes.get("/api/users")
@contract(role=m.OperatorRole.ADMIN, answers={200: UserList}, tag="accounts")
async def list_users(request: web.Request) -> web.Response:
    """Every account, without tokens or passwords."""
    found = await accounts.list_operators(request.app[DATABASE])
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
@contract(
    role=m.OperatorRole.ADMIN,
    body=NewUserBody,
    answers={201: UserAdded, 409: "the user name is taken"},
    tag="accounts",
)
async def add_user(request: web.Request) -> web.Response:
    """A new account with a board password."""
    admin = request[OPERATOR]
    body = await read_body(request, NewUserBody)
    try:
        await accounts.add_operator(
            request.app[DATABASE],
            body.username,
            name=body.name,
            now=request.app[CLOCK].now(),
            role=body.role,
            phone=body.phone,
            language=body.language.value,
            password=body.password,
        )
    except accounts.OperatorAccountError as error:
        raise _refused(error) from None
    request.app[DESK].district.invalidate()  # a supervisor with a phone is texted from now on
    log.info("%s added user %s (%s)", admin.username, body.username, body.role.value)
    return json_reply({"username": body.username, "role": body.role.value}, status=201)


@routes.post("/api/users/{username}/password")
@contract(
    role=m.OperatorRole.ADMIN,
    path=UserPath,
    body=PasswordBody,
    answers={200: PasswordSet, **_NO_USER},
    tag="accounts",
)
async def set_password(request: web.Request) -> web.Response:
    """A new board password for the user; their open boards are signed out."""
    username = path_of(request, UserPath).username
    body = await read_body(request, PasswordBody)
    try:
        await accounts.set_password(request.app[DATABASE], username, body.password)
    except accounts.OperatorAccountError as error:
        raise _refused(error) from None
    request.app[OPEN_BOARDS].check_soon()
    return json_reply({"username": username, "password": "set"})


@routes.post("/api/users/{username}/active")
@contract(
    role=m.OperatorRole.ADMIN,
    path=UserPath,
    body=ActiveBody,
    answers={200: ActiveSet, **_NO_USER},
    tag="accounts",
)
async def set_active(request: web.Request) -> web.Response:
    """Switch the user off (signed out, token refused) or on again."""
    admin = request[OPERATOR]
    body = await read_body(request, ActiveBody)
    username = path_of(request, UserPath).username
    if username == admin.username and not body.active:
        raise bad_request("an administrator cannot switch themselves off; ask another")
    try:
        await accounts.set_active(request.app[DATABASE], username, body.active)
    except accounts.OperatorAccountError as error:
        raise _refused(error) from None
    request.app[DESK].district.invalidate()
    request.app[OPEN_BOARDS].check_soon()
    return json_reply({"username": username, "active": body.active})
