"""The call routes: list and read calls, and the desk's commands on one call.

Every command goes through the desk, which locks the call, lets the domain decide and
commits; two operators racing for one call are serialised there, and the loser gets a
409 naming the owner rather than a second dispatch.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import (
    Acknowledge,
    Actor,
    AddNote,
    Cancel,
    Command,
    Report,
    Resolve,
    StandDown,
)
from callcenter.web import audit, views
from callcenter.web.bodies import (
    CancelBody,
    DispatchBody,
    NoBody,
    NoteBody,
    ResolveBody,
    StandDownBody,
    StatusBody,
    read_body,
)
from callcenter.web.errors import bad_request, not_found
from callcenter.web.replies import json_reply
from callcenter.web.state import CALL, HOUSEHOLD_OF_CALL, OPERATOR, SERVER, CallRef

routes = web.RouteTableDef()

_CLOSED_LIMIT_DEFAULT = 100
_CLOSED_LIMIT_MAX = 1000
# Remembered households of calls; beyond this many the memory starts afresh.
_HOUSEHOLD_MEMORY = 50_000


def _session(request: web.Request) -> AsyncSession:
    return AsyncSession(request.app[SERVER].engine)


def _call_id(request: web.Request) -> int:
    raw = request.match_info["call_id"]
    call_id = views.whole_number(raw)
    if call_id is None:
        raise bad_request(f"a call id is a whole number, not {raw[:40]!r}")
    return call_id


async def _the_call(request: web.Request) -> CallRef:
    """The call named in the path, with its household; 404 when there is none."""
    call_id = _call_id(request)
    remembered = request.app[HOUSEHOLD_OF_CALL]
    household = remembered.get(call_id)
    if household is None:
        async with _session(request) as session:
            household = await views.household_of(session, call_id)
        if household is None:
            raise not_found(f"there is no call {call_id}")
        if len(remembered) >= _HOUSEHOLD_MEMORY:
            remembered.clear()
        remembered[call_id] = household
    ref = CallRef(call_id, household)
    request[CALL] = ref
    return ref


async def _detail(request: web.Request, call_id: int) -> web.Response:
    async with _session(request) as session:
        detail = await views.call_detail(session, call_id)
    if detail is None:
        raise not_found(f"there is no call {call_id}")
    return json_reply(detail)


async def _carer(request: web.Request, code: str, *, in_path: bool) -> int:
    """The id of the carer ``code``: 404 when named in the path, 400 in the body."""
    async with _session(request) as session:
        found = await views.carer_id(session, code) if len(code) <= 16 else None
    if found is None:
        message = f"there is no carer {code!r}; GET /api/carers lists them (e.g. C001)"
        raise not_found(message) if in_path else bad_request(message, field="carer")
    return found


async def _command(
    request: web.Request, ref: CallRef, make: Callable[[Actor], Command]
) -> web.Response:
    """Apply a command from the signed-in operator; answer with the call as it now is."""
    server = request.app[SERVER]
    await server.desk.command(ref.call_id, make(request[OPERATOR].actor))
    return await _detail(request, ref.call_id)


# As docs/database.md allows household codes (they are MQTT topic levels).
_HOUSEHOLD_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")


@routes.get("/api/calls")
async def list_calls(request: web.Request) -> web.Response:
    """Open calls (``?state=open``, the default), ``closed`` or ``all``; one
    household's only with ``?household=H0001``."""
    raw = request.query.get("state", views.CallFilter.OPEN.value)
    try:
        which = views.CallFilter(raw)
    except ValueError:
        allowed = [f.value for f in views.CallFilter]
        raise bad_request(
            f"state must be one of: {', '.join(allowed)}", field="state", allowed=allowed
        ) from None
    limit = _limit(request.query.get("limit"))
    household = request.query.get("household")
    if household is not None and not _HOUSEHOLD_CODE.fullmatch(household):
        raise bad_request(
            f"household must be a household code such as H0001, not {household[:40]!r}",
            field="household",
        )
    async with _session(request) as session:
        calls = await views.list_calls(session, which, closed_limit=limit, household=household)
    return json_reply({"state": which.value, "calls": calls})


def _limit(raw: str | None) -> int:
    if raw is None:
        return _CLOSED_LIMIT_DEFAULT
    limit = views.whole_number(raw)
    if limit is None or not 1 <= limit <= _CLOSED_LIMIT_MAX:
        raise bad_request(
            f"limit must be a whole number from 1 to {_CLOSED_LIMIT_MAX}, not {raw[:40]!r}",
            field="limit",
        )
    return limit


@routes.get("/api/calls/{call_id}")
async def call_detail(request: web.Request) -> web.Response:
    """Everything about one call, household included: the read is audited."""
    ref = await _the_call(request)
    registry = await request.app[SERVER].desk.district.registry()
    household = registry.households_by_code.get(ref.household)
    await audit.record(
        request,
        actor=str(request[OPERATOR].actor),
        household_id=household.id if household is not None else None,
        action="read_call",
        detail={"call_id": ref.call_id},
    )
    return await _detail(request, ref.call_id)


@routes.post("/api/calls/{call_id}/acknowledge")
async def acknowledge(request: web.Request) -> web.Response:
    """Take the call: the first operator to acknowledge owns it until it closes."""
    ref = await _the_call(request)
    await read_body(request, NoBody)
    return await _command(request, ref, Acknowledge)


@routes.post("/api/calls/{call_id}/dispatch")
async def dispatch(request: web.Request) -> web.Response:
    """Send the carer named in the body, or the best free one."""
    ref = await _the_call(request)
    body = await read_body(request, DispatchBody)
    if body.carer is not None:
        await _carer(request, body.carer, in_path=False)
    server = request.app[SERVER]
    await server.desk.dispatch(ref.call_id, request[OPERATOR].actor, body.carer)
    return await _detail(request, ref.call_id)


@routes.post("/api/calls/{call_id}/carers/{code}/status")
async def carer_status(request: web.Request) -> web.Response:
    """A carer's answer or progress, reported by an operator on their behalf."""
    ref = await _the_call(request)
    carer = await _carer(request, request.match_info["code"], in_path=True)
    body = await read_body(request, StatusBody)
    return await _command(request, ref, lambda by: Report(by, carer, body.status))


@routes.post("/api/calls/{call_id}/carers/{code}/stand-down")
async def stand_down(request: web.Request) -> web.Response:
    """Release a carer from the call; the desk pages someone else if it is now short."""
    ref = await _the_call(request)
    carer = await _carer(request, request.match_info["code"], in_path=True)
    body = await read_body(request, StandDownBody)
    return await _command(request, ref, lambda by: StandDown(by, carer, body.why))


@routes.post("/api/calls/{call_id}/notes")
async def add_note(request: web.Request) -> web.Response:
    ref = await _the_call(request)
    body = await read_body(request, NoteBody)
    return await _command(request, ref, lambda by: AddNote(by, body.text))


@routes.post("/api/calls/{call_id}/resolve")
async def resolve(request: web.Request) -> web.Response:
    ref = await _the_call(request)
    body = await read_body(request, ResolveBody)
    return await _command(request, ref, lambda by: Resolve(by, body.outcome, body.note))


@routes.post("/api/calls/{call_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    ref = await _the_call(request)
    body = await read_body(request, CancelBody)
    return await _command(request, ref, lambda by: Cancel(by, body.reason, body.note))
