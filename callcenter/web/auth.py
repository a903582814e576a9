"""Who is calling: ``Authorization: Bearer <token>``, checked against the operators table.

Tokens are random and only their SHA-256 is stored, so a copy of the database does not
let anyone work the desk. The signed-in operator becomes the domain's Actor, which is how
the call history and the first-responder rule know them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import Actor, ActorKind
from callcenter.store import models as m
from callcenter.web.errors import ApiError
from callcenter.web.replies import json_reply
from callcenter.web.state import OPERATOR, SERVER

# Anything longer is not one of our tokens; refuse it before hashing it.
_MAX_TOKEN_LENGTH = 200
# Paths under this prefix need a token; /healthz and /metrics reveal no personal data.
PROTECTED_PREFIX = "/api/"

routes = web.RouteTableDef()


def new_token() -> str:
    """A fresh random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class DeskOperator:
    """The operator or supervisor a request comes from."""

    id: int
    username: str
    name: str
    role: m.OperatorRole

    @property
    def actor(self) -> Actor:
        """As the call history names them, e.g. ``operator:li.na``."""
        kind = (
            ActorKind.SUPERVISOR if self.role is m.OperatorRole.SUPERVISOR else ActorKind.OPERATOR
        )
        return Actor(kind, self.username)


def _unauthorised(message: str) -> ApiError:
    return ApiError(401, "unauthorised", message)


def bearer_token(request: web.Request) -> str:
    """The token in the Authorization header; ApiError 401 when there is none."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise _unauthorised(
            "sign in: send 'Authorization: Bearer <token>' "
            "(a supervisor issues tokens with `callcenter operator token USERNAME`)"
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorised("the Authorization header must be 'Bearer <token>'")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise _unauthorised("that token is not valid; ask a supervisor for a new one")
    return token


async def operator_for(session: AsyncSession, token: str) -> DeskOperator:
    """The active operator holding ``token``; ApiError 401 or 403 otherwise."""
    digest = token_digest(token)
    row = (
        await session.scalars(select(m.Operator).where(m.Operator.token_sha256 == digest))
    ).one_or_none()
    # The lookup is by digest already; comparing again in constant time costs nothing and
    # keeps the check safe should the lookup ever become a prefix or cached match.
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        raise _unauthorised(
            "that token is not valid (it may have been replaced); ask a supervisor for a new one"
        )
    if not row.active:
        raise ApiError(
            403, "forbidden", f"operator {row.username} is no longer active; ask a supervisor"
        )
    return DeskOperator(row.id, row.username, row.name, m.OperatorRole(row.role))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests under /api/ need a valid token; the operator is kept on the request."""
    if request.path.startswith(PROTECTED_PREFIX):
        token = bearer_token(request)
        async with AsyncSession(request.app[SERVER].engine) as session:
            request[OPERATOR] = await operator_for(session, token)
    return await handler(request)


@routes.get("/api/me")
async def who_am_i(request: web.Request) -> web.Response:
    """The signed-in operator, as the call history names them."""
    operator = request[OPERATOR]
    return json_reply(
        {
            "username": operator.username,
            "name": operator.name,
            "role": operator.role.value,
            "actor": str(operator.actor),
        }
    )
