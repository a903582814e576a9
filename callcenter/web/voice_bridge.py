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
from datetime import timedelta

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from callcenter import logs
from callcenter.domain.calls import CallError, Person, RingNoted, VoicePurpose
from callcenter.domain.messages import Message, MessageKind, render
from callcenter.domain.phones import HouseholdNumber
from callcenter.engine import bridges, repository
from callcenter.engine.desk import CallNotFoundError
from callcenter.engine.numbers import household_numbers
from callcenter.engine.voice import CALL_STATUS_RANK, FINAL, VoiceScript
from callcenter.engine.welfare import (
    WelfareCallDoneError,
    WelfareCallNotFoundError,
    WelfareOutcome,
)
from callcenter.notify.voice import BRIDGE_PATH
from callcenter.store import models as m
from callcenter.web import audit, sms_webhooks
from callcenter.web.bodies import NoBody, read_body
from callcenter.web.contract import MAX_ID, Access, Id, Parameters, Reply, contract, path_of
from callcenter.web.errors import ApiError, bad_request, not_found
from callcenter.web.responses import json_reply
from callcenter.web.sms_webhooks import required_fields, shaped, signed_form
from callcenter.web.state import CLOCK, CONFIG, DATABASE, DESK, OPERATOR
from callcenter.web.voice_webhooks import (
    CALL_FIELDS,
    NOTED_STATUSES,
    STATUS_ANSWERS,
    CallForm,
    OutboxPath,
    StatusForm,
    hang_up,
    keep_status,
    public_base,
    twiml,
)
from callcenter.web.welfare import already_done, welfare_list

log = logging.getLogger("callcenter.voice")

routes = web.RouteTableDef()

DIALED_PATH = "/voice/bridge/dialed/{outbox_id}"
LEG_PATH = "/voice/bridge/leg/{outbox_id}"
RECORDING_PATH = "/voice/bridge/recording/{outbox_id}"
# The longest recording URL kept (voice_bridges.recording_url).
MAX_RECORDING_URL = 255
# Each number's leg reports its statuses, the final one included (not "initiated", as
# for the calls we place: notify/voice.py STATUS_EVENTS).
LEG_EVENTS = "ringing answered completed"
# The history's status when none of the household's numbers answered.
NONE_ANSWERED = "all-unanswered"
# The statuses kept in the call's history: "queued" and "initiated" say nothing new.


class DialForm(CallForm):
    """A ``<Dial>``'s action: how the number it rang went (``CallStatus`` is the
    operator's own leg)."""

    DialCallStatus: str = shaped("DialCallStatus", "completed, busy, no-answer, failed, canceled")
    DialCallDuration: str | None = Field(None, description="seconds the household spoke")


_DIAL_FIELDS = required_fields(DialForm)
_STATUS_FIELDS = required_fields(StatusForm)

_ANSWERS = {
    200: Reply("TwiML: what the operator's phone does next", media="text/xml"),
    **sms_webhooks.SIGNED_ANSWERS,
}


@dataclass(frozen=True)
class Bridge:
    """A bridge row as its webhooks need it: the operator's ring, what it is about (a
    call, or a welfare call ringing the resident), the household and its numbers in the
    order to try them."""

    outbox_id: int
    operator: str  # as the outbox names the ring's recipient, e.g. "operator:li.na"
    call_id: int | None
    welfare_id: int | None
    script: VoiceScript
    household_id: int
    household: str
    numbers: list[HouseholdNumber]

    @property
    def label(self) -> str:
        """The household as the call's history names whom a ring went to."""
        return f"household:{self.household}"


def operator_to_ring(request: web.Request) -> Person:
    """The signed-in operator as the phone a bridge rings first; 422 ``no_phone`` when
    their account has none, ``voice_off`` when the centre places no calls."""
    operator = request[OPERATOR]
    if not operator.phone:
        raise ApiError(
            422,
            "no_phone",
            f"{operator.username} has no phone for the desk to ring first; ask an "
            "administrator to set yours (E.164, e.g. +8613912345678) on your account",
        )
    if not request.app[DESK].rings:
        raise ApiError(422, "voice_off", "this centre places no phone calls ([voice] enabled)")
    return Person(str(operator.actor), operator.name, operator.phone, operator.language)


def no_numbers(household: str) -> ApiError:
    """The refusal of a bridge to a household with no numbers to ring."""
    return ApiError(422, "no_numbers", f"household {household} has no numbers registered to ring")


def _attempt(request: web.Request) -> int:
    """Which of the household's numbers a webhook is about (1 first); 0 if none is named."""
    try:
        return max(0, int(request.query.get("attempt", "0")))
    except ValueError:
        return 0


async def _bridge(request: web.Request) -> Bridge | None:
    """The bridge row the path names, with its household's numbers read afresh (for a
    welfare call, the resident's own mobile first); None for anything else."""
    try:
        outbox_id = int(request.match_info["outbox_id"])
    except ValueError:
        return None
    async with AsyncSession(request.app[DATABASE]) as session:
        row = (
            await session.execute(
                select(
                    m.OutboxItem.id, m.OutboxItem.call_id, m.OutboxItem.recipient, m.OutboxItem.body
                ).where(m.OutboxItem.id == outbox_id, m.OutboxItem.channel == repository.VOICE)
            )
        ).one_or_none()
        if row is None:
            return None
        try:
            script = VoiceScript.read(row.body)
        except ValueError:
            return None
        if script.purpose is not VoicePurpose.BRIDGE:
            return None
        kept = await bridges.of_outbox(session, outbox_id)
        welfare_id = None if kept is None else kept.welfare_id
        resident = ""
        if row.call_id is not None:
            household_id = await session.scalar(
                select(m.Call.household_id).where(m.Call.id == row.call_id)
            )
        elif welfare_id is not None:
            found = (
                await session.execute(
                    select(m.WelfareCall.household_id, m.Resident.name)
                    .join(m.Resident, m.Resident.id == m.WelfareCall.resident_id)
                    .where(m.WelfareCall.id == welfare_id)
                )
            ).one()
            household_id, resident = found.household_id, found.name
        else:
            return None
        household = await session.scalar(
            select(m.Household.code).where(m.Household.id == household_id)
        )
        if household_id is None or household is None:
            return None
        numbers = bridges.resident_first(await household_numbers(session, household), resident)
    return Bridge(
        row.id, row.recipient, row.call_id, welfare_id, script, household_id, household, numbers
    )


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
        await _ended(request, bridge, bridges.NO_ANSWER)
        return twiml(response)
    number = bridge.numbers[attempt - 1]
    base, query = public_base(request), f"?attempt={attempt}"
    voice = request.app[CONFIG].voice
    recorded = (
        {
            "record": "record-from-answer-dual",
            "recording_status_callback": base + RECORDING_PATH.format(outbox_id=bridge.outbox_id),
            "recording_status_callback_method": "POST",
        }
        if voice.record
        else {}
    )
    dial = response.dial(
        action=base + DIALED_PATH.format(outbox_id=bridge.outbox_id) + query,
        method="POST",
        timeout=voice.ring_timeout_s,
        caller_id=caller,
        **recorded,
    )
    dial.number(
        number.number,
        status_callback=base + LEG_PATH.format(outbox_id=bridge.outbox_id) + query,
        status_callback_event=LEG_EVENTS,
        status_callback_method="POST",
    )
    return twiml(response)


@routes.post(BRIDGE_PATH)
@contract(access=Access.TWILIO, path=OutboxPath, form=CallForm, answers=_ANSWERS, tag="twilio")
async def bridge_answer(request: web.Request) -> web.Response:
    """The operator picked up their phone: told which household is rung, and its first
    number dialled."""
    form = await signed_form(request, required=CALL_FIELDS, what="voice")
    bridge = await _bridge(request)
    if bridge is None:
        log.warning("voice call %s picked up for no bridge we placed; hung up", form["CallSid"])
        return hang_up()
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
@contract(access=Access.TWILIO, path=OutboxPath, form=DialForm, answers=_ANSWERS, tag="twilio")
async def bridge_dialed(request: web.Request) -> web.Response:
    """A number of the household was rung: answered (and the bridge is over), or busy,
    not answered or failed, and the next number is dialled."""
    form = await signed_form(request, required=_DIAL_FIELDS, what="voice")
    bridge = await _bridge(request)
    attempt = _attempt(request)
    if bridge is None or attempt == 0:
        return hang_up()
    outcome = form["DialCallStatus"]
    with logs.bound(call_id=bridge.call_id, household=bridge.household):
        log.info(
            "bridge %s: number %d of %s: %s", form["CallSid"], attempt, bridge.household, outcome
        )
        if outcome == "completed":
            await _ended(request, bridge, bridges.ANSWERED)
            return hang_up()
        if form["CallStatus"] != "in-progress":
            return hang_up()  # the operator hung up meanwhile: nothing more to dial
        return await _dial(request, bridge, attempt + 1, form["From"], VoiceResponse())


@routes.post(LEG_PATH)
@contract(
    access=Access.TWILIO, path=OutboxPath, form=StatusForm, answers=STATUS_ANSWERS, tag="twilio"
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
            await keep_status(session, form, None if bridge is None else bridge.outbox_id, request)
    except IntegrityError:
        log.info("bridge leg %s: status %s was received before; nothing done", sid, status)
        return web.Response()
    if bridge is None or status not in NOTED_STATUSES:
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
    """Write ``noted`` in the history of the call the bridge is about (a welfare call
    has none: its legs' statuses are kept in voice_statuses only)."""
    if bridge.call_id is None:
        return
    try:
        await request.app[DESK].command(bridge.call_id, noted)
    except (CallError, CallNotFoundError) as refused:
        log.info("bridge on call %d: %s not recorded: %s", bridge.call_id, noted, refused)


async def _kept(request: web.Request, session: AsyncSession, bridge: Bridge) -> m.VoiceBridge:
    """The bridge's row: a welfare call's was written with its ring; a call's is made the
    first time it has something to keep."""
    if bridge.call_id is None:
        kept = await bridges.of_outbox(session, bridge.outbox_id)
        assert kept is not None  # a welfare ring is written with its bridge row
        return kept
    now = request.app[CLOCK].now()
    return await bridges.kept(session, bridge.outbox_id, bridge.call_id, bridge.household_id, now)


async def _ended(request: web.Request, bridge: Bridge, result: str) -> None:
    """How the bridge ended, kept once. A welfare call nobody answered is rung again
    after ``welfare.ring_retry_after_min`` while retries are left; after the last, its
    outcome is "no answer", recorded as by the operator who rang."""
    config, clock = request.app[CONFIG], request.app[CLOCK]
    desk = request.app[DESK]
    now = clock.now()
    retry_at = None
    async with desk.transaction() as session:
        kept = await _kept(request, session, bridge)
        if kept.result is not None:
            return  # told before
        await bridges.settle(session, kept.id, result)
        last = kept.try_number > config.welfare.ring_retries
        if result == bridges.NO_ANSWER and bridge.welfare_id is not None and not last:
            retry_at = now + timedelta(minutes=config.welfare.ring_retry_after_min)
            await bridges.ring_again(session, kept, now, retry_at)
        try_number = kept.try_number
    if bridge.welfare_id is None or result != bridges.NO_ANSWER:
        return
    if retry_at is not None:
        log.info(
            "welfare call %d: nobody answered (try %d); rung again at %s",
            bridge.welfare_id,
            try_number,
            retry_at.isoformat(timespec="seconds"),
        )
        desk.outbox_written()
        return
    calls = welfare_list(config, request.app[DATABASE], clock)
    try:
        await calls.record(bridge.welfare_id, WelfareOutcome.NO_ANSWER, "", bridge.operator)
    except WelfareCallDoneError as done:
        log.info("welfare call %d: %s", bridge.welfare_id, done)
        return
    log.info("welfare call %d: nobody answered after %d tries", bridge.welfare_id, try_number)


class RecordingForm(BaseModel):
    """Twilio's report of a bridge's recording."""

    model_config = ConfigDict(extra="allow")

    AccountSid: str = shaped("AccountSid", "this server's Twilio account")
    CallSid: str = shaped("CallSid", "the operator's call")
    RecordingSid: str = Field(description="RE and 32 lower-case hex digits")
    RecordingUrl: str = Field(description="where Twilio keeps it: https, at most 255 characters")
    RecordingStatus: str = Field(description="completed when it can be played")


_RECORDING_FIELDS = required_fields(RecordingForm)


@routes.post(RECORDING_PATH)
@contract(
    access=Access.TWILIO,
    path=OutboxPath,
    form=RecordingForm,
    answers={200: Reply("kept (or not ours)", media=""), **sms_webhooks.SIGNED_ANSWERS},
    tag="twilio",
)
async def bridge_recording(request: web.Request) -> web.Response:
    """A bridge's recording is ready: its reference kept on the bridge (and so on its
    call) until ``voice.recording_retention_days`` have passed."""
    form = await signed_form(request, required=_RECORDING_FIELDS, what="voice")
    url = form["RecordingUrl"]
    if not url.startswith("https://") or len(url) > MAX_RECORDING_URL:
        raise bad_request(f"RecordingUrl is not https, or longer than {MAX_RECORDING_URL}")
    bridge = await _bridge(request)
    if bridge is None or form["RecordingStatus"] != "completed":
        return web.Response()
    days = request.app[CONFIG].voice.recording_retention_days
    async with request.app[DESK].transaction() as session:
        kept = await _kept(request, session, bridge)
        kept.recording_sid = form["RecordingSid"]
        kept.recording_url = form["RecordingUrl"]
        kept.recording_expires_at = request.app[CLOCK].now() + timedelta(days=days)
    log.info(
        "bridge %s: recording %s kept for %d days", form["CallSid"], form["RecordingSid"], days
    )
    return web.Response()


class WelfareRingPath(Parameters):
    welfare_id: Id


@routes.post("/api/welfare/{welfare_id}/ring")
@contract(
    path=WelfareRingPath,
    body=NoBody,
    role=m.OperatorRole.OPERATOR,
    answers={
        200: Reply("ringing your phone: the welfare call's id, the resident and household"),
        404: "no such welfare call",
        409: "already_done: its outcome is recorded already; done_by and done_at say by whom",
        422: "no_phone, no_numbers or voice_off, as for POST /api/calls/{id}/call-household",
    },
    tag="welfare",
)
async def ring_welfare(request: web.Request) -> web.Response:
    """Ring the resident of a welfare call through the click-to-call bridge: your phone
    first, then the household's numbers, the resident's own mobile first. Nobody
    answering is rung again (``welfare.ring_retries``, ``welfare.ring_retry_after_min``),
    and after the last try the outcome is "no answer" (docs/voice.md)."""
    welfare_id = path_of(request, WelfareRingPath).welfare_id
    if welfare_id > MAX_ID:
        raise not_found(f"there is no welfare call {welfare_id}")
    await read_body(request, NoBody)
    me = operator_to_ring(request)
    desk = request.app[DESK]
    try:
        async with desk.transaction() as session:
            ring = await bridges.ring_welfare(session, welfare_id, me, request.app[CLOCK].now())
            if not await household_numbers(session, ring.household):
                raise no_numbers(ring.household)
    except WelfareCallNotFoundError as error:
        raise not_found(str(error)) from None
    except WelfareCallDoneError as error:
        raise already_done(error) from None
    desk.outbox_written()
    await audit.record(
        request,
        actor=str(request[OPERATOR].actor),
        household_id=ring.household_id,
        action="ring_welfare",
        detail={"welfare_id": welfare_id, "outbox_id": ring.outbox_id},
    )
    return json_reply(
        {
            "welfare_id": welfare_id,
            "resident": ring.resident,
            "household": ring.household,
            "ringing": me.phone,
        }
    )
