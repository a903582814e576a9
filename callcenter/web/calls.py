"""The call routes: list and read calls, and the desk's commands on one call.

Every command goes through the desk, which locks the call, lets the domain decide and
commits; two operators racing for one call are serialised there, and the loser gets a
409 naming the owner rather than a second dispatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from aiohttp import web
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import (
    Acknowledge,
    Actor,
    AddNote,
    AnswerScript,
    Cancel,
    Command,
    Report,
    Resolve,
    RingHousehold,
    StandDown,
)
from callcenter.store import models as m
from callcenter.web import audit, views
from callcenter.web.bodies import (
    CancelBody,
    DispatchBody,
    NoBody,
    NoteBody,
    ResolveBody,
    ScriptAnswerBody,
    StandDownBody,
    StatusBody,
    read_body,
)
from callcenter.web.contract import (
    CallPath,
    HouseholdCode,
    Limit,
    Parameters,
    contract,
    path_of,
    query_of,
)
from callcenter.web.errors import bad_request, not_found
from callcenter.web.responses import json_reply
from callcenter.web.state import CALL, DATABASE, DESK, HOUSEHOLD_OF_CALL, OPERATOR, CallRef
from callcenter.web.voice_bridge import no_numbers, operator_to_ring

routes = web.RouteTableDef()

# Remembered households of calls; beyond this many the memory starts afresh.
_HOUSEHOLD_MEMORY = 50_000


def _session(request: web.Request) -> AsyncSession:
    return AsyncSession(request.app[DATABASE])


class CarerOnCallPath(CallPath):
    code: Annotated[
        str,
        Field(
            min_length=1, max_length=16, description="a carer code such as C012", examples=["C001"]
        ),
    ]


class CallsQuery(Parameters):
    state: views.CallFilter = Field(
        views.CallFilter.OPEN, description="open calls, closed ones, or all"
    )
    limit: Limit = Field(100, description="a whole number from 1 to 1000: closed calls at most")
    household: HouseholdCode | None = Field(None, description="a household code such as H0001")


# What a command on a call may answer besides the call itself (docs/api.md, "Commands").
_COMMAND_ERRORS = {
    404: "no such call (or carer, when named in the path)",
    409: "already_owned, not_owner, carer_unavailable or conflict: the call's state "
    "does not allow it; owner names who owns the call",
}
# What resolving and answering the script may answer besides (docs/api.md).
_RESOLVE_ERRORS = {
    **_COMMAND_ERRORS,
    422: "reason_needed: an alarm call no carer reached closed with an outcome that "
    "needs a reason, and none given",
}
_ANSWER_ERRORS = {
    **_COMMAND_ERRORS,
    422: "unknown_question: the call's script has no such question",
}


async def _the_call(request: web.Request) -> CallRef:
    """The call named in the path, with its household; 404 when there is none."""
    call_id = path_of(request, CallPath).call_id
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


async def _household_id(request: web.Request, code: str) -> int | None:
    registry = await request.app[DESK].district.registry()
    household = registry.households_by_code.get(code)
    return household.id if household is not None else None


async def _detail(
    request: web.Request,
    call_id: int,
    *,
    after: str | None = None,
    result: dict[str, object] | None = None,
) -> web.Response:
    """The call with its whole household record (residents, care notes, family phones),
    audited as a ``read_call`` before it goes out; ``after``: the command it answers,
    ``result``: what it did, when the answer says so (dispatch)."""
    async with _session(request) as session:
        found = await views.call_detail(session, call_id)
    if found is None:
        raise not_found(f"there is no call {call_id}")
    detail, household_id = found
    facts: dict[str, object] = {"call_id": call_id, "closed": detail["closed_at"] is not None}
    if after is not None:
        facts["after"] = after
    await audit.record(
        request,
        actor=str(request[OPERATOR].actor),
        household_id=household_id,
        action="read_call",
        detail=facts,
    )
    if result is not None:
        detail["result"] = result
    return json_reply(detail)


async def _carer(request: web.Request, code: str, *, in_path: bool) -> int:
    """The id of the carer ``code``: 404 when named in the path, 400 in the body."""
    async with _session(request) as session:
        found = await views.carer_id(session, code)
    if found is None:
        message = f"there is no carer {code!r}; GET /api/carers lists them (e.g. C001)"
        raise not_found(message) if in_path else bad_request(message, field="carer")
    return found


async def _command(
    request: web.Request, ref: CallRef, name: str, make: Callable[[Actor], Command]
) -> web.Response:
    """Apply the command ``name`` from the signed-in operator; answer with the call as
    it now is."""
    await request.app[DESK].command(ref.call_id, make(request[OPERATOR].actor))
    return await _detail(request, ref.call_id, after=name)


@routes.get("/api/calls")
@contract(query=CallsQuery, answers={200: views.CallList}, tag="calls")
async def list_calls(request: web.Request) -> web.Response:
    """Open calls (``?state=open``, the default), ``closed`` or ``all``; one
    household's only with ``?household=H0001``."""
    query = query_of(request, CallsQuery)
    async with _session(request) as session:
        calls = await views.list_calls(
            session, query.state, closed_limit=query.limit, household=query.household
        )
    await audit.record_shown(
        request,
        actor=str(request[OPERATOR].actor),
        action="list_calls",
        households=(call["household"]["code"] for call in calls if call["household"]),
        named=None if query.household is None else await _household_id(request, query.household),
        detail={"state": query.state.value, "calls": len(calls)},
    )
    return json_reply({"state": query.state.value, "calls": calls})


@routes.get("/api/calls/{call_id}")
@contract(path=CallPath, answers={200: views.CallDetail, 404: "no such call"}, tag="calls")
async def call_detail(request: web.Request) -> web.Response:
    """Everything about one call, household included: the read is audited."""
    ref = await _the_call(request)
    return await _detail(request, ref.call_id)


@routes.post("/api/calls/{call_id}/acknowledge")
@contract(
    path=CallPath, body=NoBody, answers={200: views.CallDetail, **_COMMAND_ERRORS}, tag="calls"
)
async def acknowledge(request: web.Request) -> web.Response:
    """Take the call: the first operator to acknowledge owns it until it closes."""
    ref = await _the_call(request)
    await read_body(request, NoBody)
    return await _command(request, ref, "acknowledge", Acknowledge)


@routes.post("/api/calls/{call_id}/dispatch")
@contract(
    path=CallPath,
    body=DispatchBody,
    answers={
        200: views.Dispatched,
        **_COMMAND_ERRORS,
        422: "no_household: a call of no household (a number nobody registered rang) has "
        "no door to send a carer to",
    },
    tag="calls",
)
async def dispatch(request: web.Request) -> web.Response:
    """Send the carer named in the body, or the best free one; ``result`` says who was
    paged, or that nobody free could go (and which escalation ran because of it)."""
    ref = await _the_call(request)
    body = await read_body(request, DispatchBody)
    if body.carer is not None:
        await _carer(request, body.carer, in_path=False)
    _, done = await request.app[DESK].dispatch(ref.call_id, request[OPERATOR].actor, body.carer)
    result: dict[str, object] = {
        "sent": list(done.sent),
        "nobody_free": done.nobody_free,
        "escalated": list(done.escalated),
    }
    return await _detail(request, ref.call_id, after="dispatch", result=result)


@routes.post("/api/calls/{call_id}/carers/{code}/status")
@contract(
    path=CarerOnCallPath,
    body=StatusBody,
    answers={200: views.CallDetail, **_COMMAND_ERRORS},
    tag="calls",
)
async def carer_status(request: web.Request) -> web.Response:
    """A carer's answer or progress, reported by an operator on their behalf."""
    ref = await _the_call(request)
    carer = await _carer(request, path_of(request, CarerOnCallPath).code, in_path=True)
    body = await read_body(request, StatusBody)
    return await _command(request, ref, "status", lambda by: Report(by, carer, body.status))


@routes.post("/api/calls/{call_id}/carers/{code}/stand-down")
@contract(
    path=CarerOnCallPath,
    body=StandDownBody,
    answers={200: views.CallDetail, **_COMMAND_ERRORS},
    tag="calls",
)
async def stand_down(request: web.Request) -> web.Response:
    """Release a carer from the call; the desk pages someone else if it is now short."""
    ref = await _the_call(request)
    carer = await _carer(request, path_of(request, CarerOnCallPath).code, in_path=True)
    body = await read_body(request, StandDownBody)
    return await _command(request, ref, "stand-down", lambda by: StandDown(by, carer, body.why))


@routes.post("/api/calls/{call_id}/notes")
@contract(
    path=CallPath, body=NoteBody, answers={200: views.CallDetail, **_COMMAND_ERRORS}, tag="calls"
)
async def add_note(request: web.Request) -> web.Response:
    """A note in the call's history; a closed call takes notes too (a supervisor adding
    what was learnt afterwards), answered and audited like any other command."""
    ref = await _the_call(request)
    body = await read_body(request, NoteBody)
    return await _command(request, ref, "note", lambda by: AddNote(by, body.text))


@routes.post("/api/calls/{call_id}/script-answers")
@contract(
    path=CallPath,
    body=ScriptAnswerBody,
    answers={200: views.CallDetail, **_ANSWER_ERRORS},
    tag="calls",
)
async def answer_script(request: web.Request) -> web.Response:
    """An answer to one question of the call's handling script, kept in its history;
    desk work, so the owner's (or a supervisor's), and it takes a call nobody owns."""
    ref = await _the_call(request)
    body = await read_body(request, ScriptAnswerBody)
    return await _command(
        request, ref, "script-answer", lambda by: AnswerScript(by, body.question, body.answer)
    )


@routes.post("/api/calls/{call_id}/resolve")
@contract(
    path=CallPath, body=ResolveBody, answers={200: views.CallDetail, **_RESOLVE_ERRORS}, tag="calls"
)
async def resolve(request: web.Request) -> web.Response:
    """Close the call with its outcome; carers still on their way are stood down. An
    alarm no carer reached needs a ``reason`` for most outcomes (docs/calls.md)."""
    ref = await _the_call(request)
    body = await read_body(request, ResolveBody)
    return await _command(
        request,
        ref,
        "resolve",
        lambda by: Resolve(by, body.outcome, body.note, reason=body.reason),
    )


@routes.post("/api/calls/{call_id}/cancel")
@contract(
    path=CallPath, body=CancelBody, answers={200: views.CallDetail, **_COMMAND_ERRORS}, tag="calls"
)
async def cancel(request: web.Request) -> web.Response:
    """Close the call as not needed (the resident cancelled, a duplicate, a mistake)."""
    ref = await _the_call(request)
    body = await read_body(request, CancelBody)
    return await _command(request, ref, "cancel", lambda by: Cancel(by, body.reason, body.note))


@routes.post("/api/calls/{call_id}/call-household")
@contract(
    path=CallPath,
    body=NoBody,
    role=m.OperatorRole.OPERATOR,
    answers={
        200: views.CallDetail,
        **_COMMAND_ERRORS,
        422: "no_phone: your account has no phone to ring; no_numbers: the household has "
        "none registered; voice_off: the centre places no phone calls ([voice] enabled)",
    },
    tag="calls",
)
async def call_household(request: web.Request) -> web.Response:
    """Call the household (click-to-call): your own phone rings, and once you pick up
    the household's numbers are dialled in order until one answers; each attempt goes
    into the call's history (docs/voice.md). Desk work: it takes a call nobody owns."""
    ref = await _the_call(request)
    await read_body(request, NoBody)
    me = operator_to_ring(request)
    registry = await request.app[DESK].district.registry()
    household = registry.households_by_code.get(ref.household)
    if household is None or not household.phones:
        raise no_numbers(ref.household)
    return await _command(request, ref, "call-household", lambda by: RingHousehold(by, me))
