"""Who is calling: ``Authorization: Bearer <token>`` (scripts, the API), or the board's
sign-in cookie (see sessions.py), checked against the operators table.

Tokens are random and only their SHA-256 is stored, so a copy of the database does not
let anyone work the desk. The signed-in operator becomes the domain's Actor, which is how
the call history and the first-responder rule know them. Roles rank operator <
supervisor < admin; a route declares the least role it needs in its contract
(``contract.require_role`` refuses the rest).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import Actor, ActorKind
from callcenter.engine.accounts import token_digest
from callcenter.store import models as m
from callcenter.web import sessions
from callcenter.web.bodies import Language, LanguageBody, read_body
from callcenter.web.contract import contract
from callcenter.web.errors import ApiError
from callcenter.web.responses import json_reply
from callcenter.web.state import CLOCK, CONFIG, CREDENTIAL, CSRF, DATABASE, OPERATOR, Credential

# Anything longer is not one of our tokens; refuse it before hashing it.
_MAX_TOKEN_LENGTH = 200
# Paths under this prefix need a token; /healthz and /metrics reveal no personal data.
PROTECTED_PREFIX = "/api/"

routes = web.RouteTableDef()


class MapTiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiles_url: str
    attribution: str


class Me(BaseModel):
    """The signed-in operator and what the board needs to work for them."""

    model_config = ConfigDict(extra="forbid")

    username: str
    name: str
    role: m.OperatorRole
    actor: str = Field(description="as the call history names them, e.g. operator:li.na")
    phone: str | None = Field(
        description="their own phone (desk phone or mobile), E.164; null when none is kept"
    )
    language: str
    csrf_token: str | None = Field(description="the board session's; null for a bearer token")
    timezone: str
    today: str = Field(description="the district's date now (YYYY-MM-DD), by the server's clock")
    map: MapTiles


class LanguageChosen(BaseModel):
    """The language now chosen."""

    model_config = ConfigDict(extra="forbid")

    language: Language


@dataclass(frozen=True)
class DeskOperator:
    """The operator or supervisor a request comes from."""

    id: int
    username: str
    name: str
    role: m.OperatorRole
    language: str = "zh"
    phone: str | None = None

    @property
    def actor(self) -> Actor:
        """As the call history names them, e.g. ``operator:li.na``; an administrator
        works calls with a supervisor's rights."""
        kind = ActorKind.OPERATOR if self.role is m.OperatorRole.OPERATOR else ActorKind.SUPERVISOR
        return Actor(kind, self.username)

    def may(self, role: m.OperatorRole) -> bool:
        """Whether they may do what ``role`` may."""
        return m.ROLE_RANK[self.role] >= m.ROLE_RANK[role]


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


async def operator_for(session: AsyncSession, digest: str) -> DeskOperator:
    """The active operator holding the token whose ``token_digest`` is ``digest``;
    ApiError 401 or 403 otherwise."""
    row = (
        await session.scalars(select(m.Operator).where(m.Operator.token_sha256 == digest))
    ).one_or_none()
    # The lookup is by digest already; comparing again in constant time costs nothing and
    # keeps the check safe should the lookup ever become a prefix or cached match.
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        raise _unauthorised(
            "that token is not valid (it may have been replaced); ask a supervisor for a new one"
        )
    return _active(row)


def _active(row: m.Operator) -> DeskOperator:
    if not row.active:
        raise ApiError(
            403, "forbidden", f"operator {row.username} is no longer active; ask a supervisor"
        )
    return DeskOperator(
        row.id, row.username, row.name, m.OperatorRole(row.role), row.language, row.phone
    )


async def _signed_in(request: web.Request) -> sessions.SignedIn:
    """The board session the cookie names, with the CSRF and origin checks a cookie
    needs; ApiError otherwise."""
    signed_in = await sessions.session_of(request)
    if signed_in is None:
        raise _unauthorised(
            "sign in: on the board at /login, or send 'Authorization: Bearer <token>'"
        )
    if not sessions.same_origin(request):
        raise ApiError(403, "forbidden", "requests from another site are refused")
    if request.method not in sessions.SAFE_METHODS and not sessions.csrf_ok(
        request, signed_in.csrf_token
    ):
        raise ApiError(
            403,
            "csrf",
            f"a change made from the board needs the {sessions.CSRF_HEADER} header with the "
            "token GET /api/me gives; reload the page",
        )
    return signed_in


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests under /api/ need a valid token or board session; the operator is kept
    on the request."""
    if request.path.startswith(PROTECTED_PREFIX):
        if "Authorization" in request.headers or sessions.SESSION_COOKIE not in request.cookies:
            digest = token_digest(bearer_token(request))
            async with AsyncSession(request.app[DATABASE]) as session:
                request[OPERATOR] = await operator_for(session, digest)
            request[CREDENTIAL] = Credential("token", digest)
        else:
            signed_in = await _signed_in(request)
            # session_of found the operator active, with the session, in one query.
            request[OPERATOR] = _active(signed_in.operator)
            request[CSRF] = signed_in.csrf_token
            request[CREDENTIAL] = Credential("session", signed_in.digest)
    return await handler(request)


@routes.get("/api/me")
@contract(answers={200: Me}, tag="accounts")
async def who_am_i(request: web.Request) -> web.Response:
    """The signed-in operator, as the call history names them, with what the board
    needs to work for them: language, the session's CSRF token, time zone, map tiles."""
    operator = request[OPERATOR]
    config = request.app[CONFIG]
    return json_reply(
        {
            "username": operator.username,
            "name": operator.name,
            "role": operator.role.value,
            "actor": str(operator.actor),
            "phone": operator.phone,
            "language": operator.language,
            "csrf_token": request.get(CSRF),
            "timezone": config.district.timezone,
            "today": request.app[CLOCK]
            .now()
            .astimezone(ZoneInfo(config.district.timezone))
            .date()
            .isoformat(),
            "map": {
                "tiles_url": config.web.map_tiles_url,
                "attribution": config.web.map_attribution,
            },
        }
    )


@routes.post("/api/me/language")
@contract(body=LanguageBody, answers={200: LanguageChosen}, tag="accounts")
async def choose_language(request: web.Request) -> web.Response:
    """The signed-in operator's language for the board (and their texts)."""
    operator = request[OPERATOR]
    body = await read_body(request, LanguageBody)
    async with AsyncSession(request.app[DATABASE]) as session, session.begin():
        await session.execute(
            update(m.Operator).where(m.Operator.id == operator.id).values(language=body.language)
        )
    return json_reply({"language": body.language.value})
