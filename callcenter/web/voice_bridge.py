"""Click-to-call, as Twilio posts about it: the operator's own phone was rung by the desk
(a ``bridge`` voice row, placed by the outbox like any ring); once they pick up
(``POST /voice/bridge/answer/{outbox id}``) they hear which household is being rung, and
the household's numbers are dialled one at a time, in the register's order, through a
``<Dial>`` whose action (``POST /voice/bridge/dialed/{outbox id}?attempt=N``) falls to
the next number when one is busy, not answered or fails; none left, the operator hears
so. Each number's leg reports its statuses (``POST /voice/bridge/leg/{outbox id}
?attempt=N``), kept once per CallSid and SequenceNumber and written in the call's
history: ringing, answered, busy, no answer, failed, ended with its duration.

Checked as every voice webhook is (sms_webhooks.signed_form): a forged post gets 403 and
changes nothing. The operator's own leg reports to the ring's status route
(web/voice_webhooks.py), as any call the desk places.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web
from pydantic import Field
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from callcenter import logs
from callcenter.domain.calls import CallError, RingNoted, VoicePurpose
from callcenter.domain.messages import Message, MessageKind, render
from callcenter.domain.phones import HouseholdNumber
from callcenter.engine import repository
from callcenter.engine.desk import CallNotFoundError
from callcenter.engine.numbers import household_numbers
from callcenter.engine.voice import CALL_STATUS_RANK, FINAL, VoiceScript
from callcenter.notify.voice import BRIDGE_PATH
from callcenter.store import models as m
from callcenter.web import sms_webhooks
from callcenter.web.contract import Access, Reply, contract
from callcenter.web.sms_webhooks import required_fields, shaped, signed_form
from callcenter.web.state import CLOCK, CONFIG, DATABASE, DESK
from callcenter.web.voice_webhooks import CallForm, StatusForm

log = logging.getLogger("callcenter.voice")

routes = web.RouteTableDef()

DIALED_PATH = "/voice/bridge/dialed/{outbox_id}"
LEG_PATH = "/voice/bridge/leg/{outbox_id}"
# Each number's leg reports every status, the final one included.
LEG_EVENTS = "initiated ringing answered completed"
# The history's status when none of the household's numbers answered.
NONE_ANSWERED = "all-unanswered"
# The statuses kept in the call's history: "queued" and "initiated" say nothing new.
_NOTED = frozenset(CALL_STATUS_RANK) - {"queued", "initiated"}


class DialForm(CallForm):
    """A ``<Dial>``'s action: how the number it rang went (``CallStatus`` is the
    operator's own leg)."""

    DialCallStatus: str = shaped("DialCallStatus", "completed, busy, no-answer, failed, canceled")
    DialCallDuration: str | None = Field(
        None, pattern=r"^[0-9]{1,6}$", description="seconds the household spoke"
    )


_CALL_FIELDS = required_fields(CallForm)
_DIAL_FIELDS = required_fields(DialForm)
_STATUS_FIELDS = required_fields(StatusForm)

_ANSWERS = {
    200: Reply("TwiML: what the operator's phone does next", media="text/xml"),
    **sms_webhooks.SIGNED_ANSWERS,
}


@dataclass(frozen=True)
class Bridge:
    """A bridge row as its webhooks need it: the operator's ring, the call it is about,
    the household and its numbers in the order to try them."""

    outbox_id: int
    call_id: int
    script: VoiceScript
    household: str
    numbers: list[HouseholdNumber]

    @property
    def label(self) -> str:
        """The household as the call's history names whom a ring went to."""
        return f"household:{self.household}"


def _twiml(response: VoiceResponse) -> web.Response:
    return web.Response(text=str(response), content_type="text/xml")


def _attempt(request: web.Request) -> int:
    """Which of the household's numbers a webhook is about (1 first); 0 if none is named."""
    try:
        return max(0, int(request.query.get("attempt", "0")))
    except ValueError:
        return 0


async def _bridge(request: web.Request) -> Bridge | None:
    """The bridge row the path names, with its household's numbers read afresh; None for
    anything else."""
    try:
        outbox_id = int(request.match_info["outbox_id"])
    except ValueError:
        return None
    async with AsyncSession(request.app[DATABASE]) as session:
        row = (
            await session.execute(
                select(m.OutboxItem.id, m.OutboxItem.call_id, m.OutboxItem.body).where(
                    m.OutboxItem.id == outbox_id, m.OutboxItem.channel == repository.VOICE
                )
            )
        ).one_or_none()
        if row is None or row.call_id is None:
            return None
        try:
            script = VoiceScript.read(row.body)
        except ValueError:
            return None
        if script.purpose is not VoicePurpose.BRIDGE:
            return None
        household = await session.scalar(
            select(m.Household.code)
            .join(m.Call, m.Call.household_id == m.Household.id)
            .where(m.Call.id == row.call_id)
        )
        if household is None:
            return None
        numbers = await household_numbers(session, household)
    return Bridge(row.id, row.call_id, script, household, numbers)


def _base(request: web.Request) -> str:
    """Where Twilio reaches us: the public address, else the one it used."""
    public = request.app[CONFIG].sms.public_url
    return public.rstrip("/") if public else str(request.url.origin())


def _say(request: web.Request, response: VoiceResponse, bridge: Bridge, text: str) -> None:
    language = request.app[CONFIG].voice.speech_language(bridge.script.language)
    response.say(text, language=language)


async def _dial(
    request: web.Request, bridge: Bridge, attempt: int, caller: str, response: VoiceResponse
) -> web.Response:
    """Dial the household's number ``attempt`` (1 first); none left: the operator hears
    that nobody answered, the history says so, and the call ends."""
    if attempt > len(bridge.numbers):
        none = Message(MessageKind.VOICE_BRIDGE_NONE, {"household": bridge.household})
        _say(request, response, bridge, render(none, bridge.script.language))
        response.hangup()
        noted = RingNoted(bridge.label, VoicePurpose.BRIDGE, NONE_ANSWERED)
        await _tell_desk(request, bridge, noted)
        return _twiml(response)
    number = bridge.numbers[attempt - 1]
    base, query = _base(request), f"?attempt={attempt}"
    dial = response.dial(
        action=base + DIALED_PATH.format(outbox_id=bridge.outbox_id) + query,
        method="POST",
        timeout=request.app[CONFIG].voice.ring_timeout_s,
        caller_id=caller,
    )
    dial.number(
        number.number,
        status_callback=base + LEG_PATH.format(outbox_id=bridge.outbox_id) + query,
        status_callback_event=LEG_EVENTS,
        status_callback_method="POST",
    )
    return _twiml(response)


def _hang_up() -> web.Response:
    response = VoiceResponse()
    response.hangup()
    return _twiml(response)


@routes.post(BRIDGE_PATH)
@contract(access=Access.TWILIO, form=CallForm, answers=_ANSWERS, tag="twilio")
async def bridge_answer(request: web.Request) -> web.Response:
    """The operator picked up their phone: told which household is rung, and its first
    number dialled."""
    form = await signed_form(request, required=_CALL_FIELDS, what="voice")
    bridge = await _bridge(request)
    if bridge is None:
        log.warning("voice call %s picked up for no bridge we placed; hung up", form["CallSid"])
        return _hang_up()
    with logs.bound(call_id=bridge.call_id, household=bridge.household):
        log.info(
            "bridge %s (outbox %d): operator picked up; %d numbers to try",
            form["CallSid"],
            bridge.outbox_id,
            len(bridge.numbers),
        )
        response = VoiceResponse()
        _say(request, response, bridge, bridge.script.say)
        # The household sees the centre's number: the one the operator was rung from.
        return await _dial(request, bridge, 1, form["From"], response)


@routes.post(DIALED_PATH)
@contract(access=Access.TWILIO, form=DialForm, answers=_ANSWERS, tag="twilio")
async def bridge_dialed(request: web.Request) -> web.Response:
    """A number of the household was rung: answered (and the bridge is over), or busy,
    not answered or failed, and the next number is dialled."""
    form = await signed_form(request, required=_DIAL_FIELDS, what="voice")
    bridge = await _bridge(request)
    attempt = _attempt(request)
    if bridge is None or attempt == 0:
        return _hang_up()
    outcome = form["DialCallStatus"]
    with logs.bound(call_id=bridge.call_id, household=bridge.household):
        log.info(
            "bridge %s: number %d of %s: %s", form["CallSid"], attempt, bridge.household, outcome
        )
        if outcome == "completed" or form["CallStatus"] != "in-progress":
            # They spoke (or the operator hung up meanwhile): nothing more to dial.
            return _hang_up()
        return await _dial(request, bridge, attempt + 1, form["From"], VoiceResponse())


@routes.post(LEG_PATH)
@contract(
    access=Access.TWILIO,
    form=StatusForm,
    answers={
        200: Reply("recorded (also for a call or status we do not know)", media=""),
        **sms_webhooks.SIGNED_ANSWERS,
    },
    tag="twilio",
)
async def bridge_leg(request: web.Request) -> web.Response:
    """A household number's leg reported a status: kept once, written in the history."""
    form = await signed_form(request, required=_STATUS_FIELDS, what="voice")
    sid, status = form["CallSid"], form["CallStatus"]
    if status not in CALL_STATUS_RANK:
        return web.Response()
    bridge = await _bridge(request)
    try:
        async with request.app[DESK].transaction() as session:
            await session.execute(
                insert(m.VoiceStatus).values(
                    call_sid=sid,
                    sequence=int(form["SequenceNumber"]),
                    status=status,
                    outbox_id=None if bridge is None else bridge.outbox_id,
                    received_at=request.app[CLOCK].now(),
                )
            )
    except IntegrityError:
        log.info("bridge leg %s: status %s was received before; nothing done", sid, status)
        return web.Response()
    if bridge is None or status not in _NOTED:
        return web.Response()
    duration = form.get("CallDuration")
    noted = RingNoted(
        bridge.label,
        VoicePurpose.BRIDGE,
        status,
        duration_s=int(duration) if duration and status in FINAL else None,
        number=form["To"],
        attempt=_attempt(request),
    )
    with logs.bound(call_id=bridge.call_id, household=bridge.household):
        await _tell_desk(request, bridge, noted)
    return web.Response()


async def _tell_desk(request: web.Request, bridge: Bridge, noted: RingNoted) -> None:
    try:
        await request.app[DESK].command(bridge.call_id, noted)
    except (CallError, CallNotFoundError) as refused:
        log.info("bridge on call %d: %s not recorded: %s", bridge.call_id, noted, refused)
