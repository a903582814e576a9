"""Operators on duty: who is working the desk, paused or off duty, and the calls offered
to them (``GET /api/operators/duty``), and an operator's own duty (``POST
/api/desk/duty``). Signing in to the board puts an operator on duty and signing out takes
them off (web/sessions.py); the rules are in domain/offers.py, docs/calls.md "Offers".
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import Field

from callcenter.domain.offers import Duty
from callcenter.engine.offers import Offers
from callcenter.web import views
from callcenter.web.bodies import DutyBody, read_body
from callcenter.web.contract import contract
from callcenter.web.errors import ApiError
from callcenter.web.responses import json_reply
from callcenter.web.state import CLOCK, DESK, OPERATOR

routes = web.RouteTableDef()


class OperatorOnDuty(views.Shape):
    actor: str = Field(description="as the call history names them, e.g. operator:li.na")
    name: str
    role: str = Field(description="operator, supervisor or admin; only operators are offered")
    duty: Duty
    since: datetime = Field(description="when their duty last changed")
    idle_since: datetime | None = Field(
        description="while free: since when no work was handed to them (longest idle first)"
    )
    owned: int = Field(description="open alarm calls they own")
    offer: int | None = Field(description="the call being offered to them now, if any")
    board: bool = Field(description="a board of theirs is connected to the server now")


class OperatorsOnDuty(views.Shape):
    """Every operator who has been on duty, by name."""

    at: datetime
    operators: list[OperatorOnDuty]


class MyDuty(views.Shape):
    """The signed-in person's duty after the change, and everyone's."""

    changed: bool = Field(description="false: they were already so")
    operator: OperatorOnDuty
    operators: list[OperatorOnDuty]


def offers_of(request: web.Request) -> Offers:
    offers = request.app[DESK].offers
    if offers is None:  # build_desk always makes them; a tool's desk may not
        raise ApiError(503, "unavailable", "this server keeps no operators' duty")
    return offers


@routes.get("/api/operators/duty")
@contract(answers={200: OperatorsOnDuty}, tag="board")
async def operators_on_duty(request: web.Request) -> web.Response:
    """Who is on duty, paused or off duty, what each owns and is offered, and whether
    their board is connected."""
    operators = views.operators_view(await offers_of(request).view())
    return json_reply({"at": views.iso(request.app[CLOCK].now()), "operators": operators})


@routes.post("/api/desk/duty")
@contract(body=DutyBody, answers={200: MyDuty}, tag="board")
async def set_my_duty(request: web.Request) -> web.Response:
    """Go on duty, pause (no calls are offered to you meanwhile) or go off duty. A call
    offered to you moves on to the next operator at once when you pause or leave."""
    body = await read_body(request, DutyBody)
    offers = offers_of(request)
    me = request[OPERATOR]
    changed = await offers.set_duty(me.id, body.duty)
    operators = views.operators_view(await offers.view())
    mine = next(o for o in operators if o["actor"] == str(me.actor))
    return json_reply({"changed": changed, "operator": mine, "operators": operators})
