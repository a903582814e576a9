"""Calls to the centre's number (docs/voice.md, "Inbound calls"): the number's voice URL
(``POST /voice/incoming``), what the desk's phone says when it is picked up
(``POST /voice/inbound/whisper/{call id}/{operator id}``), and how each ring ended
(``POST /voice/inbound/dialed/{call id}``, the ``<Dial>``'s action).

Checked as every voice webhook is (sms_webhooks.signed_form): a forged post gets 403
and changes nothing. The caller's number names the household (engine/inbound.py); its
most urgent open call gets the ring noted on it, else a ``voice`` call opens. Every
operator on duty with a phone rings at once (one ``<Dial>``, a ``<Number>`` each); the
first to pick up acknowledges the call as the board's Acknowledge does (the first to
take it owns it) and is put through, and Twilio stops the other phones. Nobody within
``voice.inbound_ring_s``: the supervisors on duty ring; nobody still: the caller hears
the recorded message and the call escalates as an alarm nobody took.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from callcenter import logs
from callcenter.domain.calls import (
    Acknowledge,
    Actor,
    ActorKind,
    AlreadyOwnedError,
    Call,
    CallError,
    IllegalTransitionError,
    InboundNoted,
    InboundStep,
)
from callcenter.domain.messages import Message, MessageKind, render
from callcenter.engine import repository
from callcenter.engine.desk import CallNotFoundError, Desk
from callcenter.engine.district import household_of
from callcenter.engine.inbound import DeskPhone, caller_of, desk_phones
from callcenter.store import models as m
from callcenter.web.contract import Access, Parameters, contract
from callcenter.web.sms_webhooks import shaped, signed_form
from callcenter.web.state import CLOCK, CONFIG, DATABASE, DESK
from callcenter.web.voice_webhooks import (
    CALL_FIELDS,
    TWIML_ANSWERS,
    CallForm,
    hang_up,
    public_base,
    said_then_hang_up,
    twiml,
)

log = logging.getLogger("callcenter.voice")

routes = web.RouteTableDef()

INCOMING_PATH = "/voice/incoming"
WHISPER_PATH = "/voice/inbound/whisper/{call_id}/{operator_id}"
DIALED_PATH = "/voice/inbound/dialed/{call_id}"

# The <Dial> of the operators, then of the supervisors.
OPERATORS, SUPERVISORS = "operators", "supervisors"


class DialedForm(CallForm):
    """A ``<Dial>``'s action: how the ring of the desk's phones ended."""

    DialCallStatus: str | None = shaped("DialCallStatus", "e.g. no-answer", default=None)


class WhisperPath(Parameters):
    """The call a desk phone was rung about (0: a number nobody registered) and whose
    phone it is. Read as text, as voice_webhooks.OutboxPath is: the signature is checked
    first (403 for a forgery whatever its path), and a path that names nothing is hung up."""

    call_id: str = Field(description="the call's id, e.g. 12; 0 for a number nobody registered")
    operator_id: str = Field(description="the operator's account id, e.g. 3")


class DialedPath(Parameters):
    """The call whose desk phones were rung (0: a number nobody registered), as text."""

    call_id: str = Field(description="the call's id, e.g. 12; 0 for a number nobody registered")


def _path_int(request: web.Request, name: str) -> int | None:
    try:
        return int(request.match_info[name])
    except ValueError:
        return None


async def _tell(desk: Desk, call_id: int, noted: InboundNoted) -> None:
    """Write ``noted`` on the call; a call gone meanwhile is only logged."""
    try:
        await desk.command(call_id, noted)
    except (CallError, CallNotFoundError) as refused:
        log.info("inbound %s not recorded on call %d: %s", noted.step, call_id, refused)


def _ring(
    request: web.Request, call_id: int, phones: list[DeskPhone], stage: str, rung: int
) -> VoiceResponse:
    """Every phone of ``phones`` rung at once; the first to pick up is put through."""
    base = public_base(request)
    response = VoiceResponse()
    dial = response.dial(
        timeout=request.app[CONFIG].voice.inbound_ring_s,
        action=f"{base}{DIALED_PATH.format(call_id=call_id)}?stage={stage}&rung={rung}",
        method="POST",
    )
    for phone in phones:
        whisper = WHISPER_PATH.format(call_id=call_id, operator_id=phone.operator_id)
        dial.number(phone.phone, url=f"{base}{whisper}?rung={rung}", method="POST")
    return response


def _nobody(request: web.Request) -> VoiceResponse:
    """The recorded message, in Chinese and then English, and goodbye."""
    voice = request.app[CONFIG].voice
    response = VoiceResponse()
    for language in ("zh", "en"):
        said = render(Message(MessageKind.INBOUND_NOBODY), language)
        response.say(said, language=voice.speech_language(language))
    response.hangup()
    return response


@routes.post(INCOMING_PATH)
@contract(access=Access.TWILIO, form=CallForm, answers=TWIML_ANSWERS, tag="twilio")
async def voice_incoming(request: web.Request) -> web.Response:
    """Someone rings the centre's number: the call opened or attached, and every operator
    on duty with a phone rung at once."""
    form = await signed_form(request, required=CALL_FIELDS, what="voice")
    caller, sid = form["From"], form["CallSid"]
    desk, engine = request.app[DESK], request.app[DATABASE]
    async with AsyncSession(engine) as session:
        household_id = await caller_of(session, caller)
        operators = await desk_phones(session, supervisors=False)
    call_id = await desk.inbound(household_id, caller, sid)
    with logs.bound(call_id=call_id or None):
        log.info("call %s from %s to the centre's number: call %s", sid, caller, call_id or "-")
        return await _ring_or_nobody(request, call_id, caller, sid, operators, OPERATORS)


async def _ring_or_nobody(
    request: web.Request,
    call_id: int,
    caller: str,
    sid: str,
    phones: list[DeskPhone],
    stage: str,
) -> web.Response:
    """Ring ``phones`` (the ``stage``'s); with nobody to ring, the next stage."""
    desk = request.app[DESK]
    if not phones and stage == OPERATORS:
        async with AsyncSession(request.app[DATABASE]) as session:
            phones = await desk_phones(session, supervisors=True)
        stage = SUPERVISORS
    if not phones:
        if call_id:
            await _tell(desk, call_id, InboundNoted(InboundStep.NOBODY, caller, sid))
        log.warning("call %s from %s: nobody at the desk to ring", sid, caller)
        return twiml(_nobody(request))
    step = InboundStep.OPERATORS_RUNG if stage == OPERATORS else InboundStep.SUPERVISORS_RUNG
    if call_id:
        rung = tuple(phone.actor for phone in phones)
        await _tell(desk, call_id, InboundNoted(step, caller, sid, rung=rung))
    now = int(request.app[CLOCK].now().timestamp())
    return twiml(_ring(request, call_id, phones, stage, now))


@routes.post(WHISPER_PATH)
@contract(
    access=Access.TWILIO, path=WhisperPath, form=CallForm, answers=TWIML_ANSWERS, tag="twilio"
)
async def voice_inbound_whisper(request: web.Request) -> web.Response:
    """A desk phone rung about a call to the centre's number was picked up: the first to
    do so owns the call (the board's Acknowledge) and hears who is calling, then is put
    through; one who picked up after another took this ring hears who did, and hangs up."""
    form = await signed_form(request, required=CALL_FIELDS, what="voice")
    call_id = _path_int(request, "call_id")
    operator_id = _path_int(request, "operator_id")
    if call_id is None or operator_id is None:
        return hang_up()
    caller, sid = form["From"], form.get("ParentCallSid") or form["CallSid"]
    async with AsyncSession(request.app[DATABASE]) as session:
        person = await session.get(m.Operator, operator_id)
    if person is None:
        return hang_up()
    kind = ActorKind.OPERATOR if person.role == m.OperatorRole.OPERATOR else ActorKind.SUPERVISOR
    actor = Actor(kind, person.username)
    language = person.language
    if not call_id:  # a number the register does not know: no call to own
        return _whisper(
            request, Message(MessageKind.INBOUND_WHISPER, {"household": caller}), language
        )
    desk = request.app[DESK]
    with logs.bound(call_id=call_id):
        call = await _take(request, call_id, actor)
        if call is None:
            return hang_up()
        if call.owner not in (None, str(actor)) and _taken_since(call, request):
            log.info("call %d: %s picked up after %s took the ring", call_id, actor, call.owner)
            taken = Message(
                MessageKind.INBOUND_TAKEN, {"call_ref": str(call_id), "owner": call.owner or ""}
            )
            return said_then_hang_up(request, render(taken, language), language)
        log.info("call %d: %s picked up the call from %s", call_id, actor, caller)
        await _tell(desk, call_id, InboundNoted(InboundStep.ANSWERED, caller, sid, by=str(actor)))
        registry = await desk.district.registry()
        household = household_of(registry, call).code or caller
    about = {"call_ref": str(call_id), "household": household}
    return _whisper(request, Message(MessageKind.INBOUND_WHISPER, about), language)


async def _take(request: web.Request, call_id: int, actor: Actor) -> Call | None:
    """Acknowledge the call as ``actor``; the call as it is then (None: no such call).
    A call already owned (by them or by whoever took it first) is left as it is."""
    desk = request.app[DESK]
    try:
        return await desk.command(call_id, Acknowledge(actor))
    except (AlreadyOwnedError, IllegalTransitionError) as refused:
        log.info("call %d: not acknowledged by %s: %s", call_id, actor, refused)
    except CallNotFoundError:
        return None
    registry = await desk.district.registry()
    async with AsyncSession(request.app[DATABASE]) as session:
        return await repository.load(session, call_id, registry.carer_codes, lock=False)


def _taken_since(call: Call, request: web.Request) -> bool:
    """Whether the call's owner took it during this ring (the whisper's ``rung``): the
    phone picked up second hangs up. One who owned it before the ring is put through."""
    try:
        rung = datetime.fromtimestamp(int(request.query.get("rung", "0")), UTC)
    except (ValueError, OverflowError):
        return True
    return call.acknowledged_at is not None and call.acknowledged_at >= rung


def _whisper(request: web.Request, message: Message, language: str) -> web.Response:
    """Said to the desk's phone before it is put through (the TwiML runs out: bridged)."""
    response = VoiceResponse()
    response.say(
        render(message, language), language=request.app[CONFIG].voice.speech_language(language)
    )
    return twiml(response)


@routes.post(DIALED_PATH)
@contract(
    access=Access.TWILIO, path=DialedPath, form=DialedForm, answers=TWIML_ANSWERS, tag="twilio"
)
async def voice_inbound_dialed(request: web.Request) -> web.Response:
    """How the ring of the desk's phones ended: put through and over (the call ends);
    nobody picked up: the supervisors ring, then the recorded message."""
    form = await signed_form(request, required=CALL_FIELDS, what="voice")
    call_id = _path_int(request, "call_id")
    if call_id is None:
        return hang_up()
    caller, sid = form["From"], form["CallSid"]
    dialed = form.get("DialCallStatus", "")
    desk = request.app[DESK]
    with logs.bound(call_id=call_id or None):
        log.info("call %s from %s: the desk's ring ended %s", sid, caller, dialed or "?")
        if dialed == "completed":
            if call_id:
                duration = form.get("DialCallDuration", "")
                ended = InboundNoted(
                    InboundStep.ENDED,
                    caller,
                    sid,
                    status=dialed,
                    duration_s=int(duration) if duration.isdigit() else None,
                )
                await _tell(desk, call_id, ended)
            return hang_up()
        if request.query.get("stage") == OPERATORS and form["CallStatus"] not in _OVER:
            async with AsyncSession(request.app[DATABASE]) as session:
                supervisors = await desk_phones(session, supervisors=True)
            if supervisors:
                return await _ring_or_nobody(
                    request, call_id, caller, sid, supervisors, SUPERVISORS
                )
        if call_id:
            nobody = InboundNoted(InboundStep.NOBODY, caller, sid, status=form["CallStatus"])
            await _tell(desk, call_id, nobody)
        return twiml(_nobody(request))


# The caller hung up while the desk's phones rang.
_OVER = frozenset({"completed", "canceled", "busy", "no-answer", "failed"})
