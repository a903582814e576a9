"""Phone calls the desk placed, as Twilio posts about them: what to say once the phone is
picked up (``POST /voice/answer/{outbox id}``), the key pressed
(``POST /voice/gather/{outbox id}``), and each status of the call
(``POST /voice/status/{outbox id}``).

Checked as the SMS webhooks are (sms_webhooks.signed_form: X-Twilio-Signature, every
field in Twilio's shape, our account): a forged post gets 403 and changes nothing. The
row named in the path says why the phone rang and what to say (engine/voice.py). A key
is the same answer as the text's code (domain/replies.py), applied through the same
``apply_answer`` as SMS replies and the carer page, and confirmed by voice. Each status
is kept once per CallSid and SequenceNumber before anything is done, so Twilio posting it
again changes nothing; each goes into the call's history, and a carer who did not pick
up is released as one who does not answer the text.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from callcenter import logs
from callcenter.domain.calls import (
    CallError,
    Command,
    FamilyHeard,
    FamilyRingOver,
    RingNoted,
    RingUnanswered,
    VoicePurpose,
)
from callcenter.domain.messages import Message, MessageKind, render
from callcenter.domain.policy import Milestone
from callcenter.domain.replies import (
    SPOKEN_CONFIRMATIONS,
    Answer,
    family_no_longer_needed,
    goodbye,
    key_answer,
    ring_no_longer_wanted,
    spoken_confirmation,
)
from callcenter.engine import repository
from callcenter.engine.desk import CallNotFoundError, Desk
from callcenter.engine.district import household_of
from callcenter.engine.outbox.delivery import paged_carer
from callcenter.engine.voice import CALL_STATUS_RANK, FINAL, NOT_PICKED_UP, VoiceScript, not_over
from callcenter.notify.voice import ANSWER_PATH, GATHER_PATH, STATUS_PATH
from callcenter.store import models as m
from callcenter.web import sms_webhooks
from callcenter.web.contract import Access, Parameters, Reply, contract
from callcenter.web.sms_webhooks import required_fields, shaped, signed_form
from callcenter.web.state import CLOCK, CONFIG, DATABASE, DESK

log = logging.getLogger("callcenter.voice")

routes = web.RouteTableDef()

# Seconds Twilio waits for a key after the summary has been said.
KEY_WAIT_S = 8
# The summary is said this many times at most before the call says goodbye.
SAYINGS = 2
# The statuses kept in the call's history: "queued" and "initiated" say nothing new.
NOTED_STATUSES = frozenset(CALL_STATUS_RANK) - {"queued", "initiated"}


class OutboxPath(Parameters):
    """The outbox row that placed the call, named in a voice webhook's path. Read as
    text: the signature is checked first (403 for a forgery whatever its path), and a
    path naming no row of ours is answered as a call we did not place."""

    outbox_id: str = Field(description="the outbox row's id, e.g. 12")


class CallForm(BaseModel):
    """What Twilio posts with every request about a call (it posts more fields; they are
    part of the signature). Every field once."""

    model_config = ConfigDict(extra="allow")

    AccountSid: str = shaped("AccountSid", "this server's Twilio account")
    CallSid: str = shaped("CallSid", "Twilio's call id")
    From: str = shaped("From", "the number the call came from")
    To: str = shaped("To", "the number rung")
    CallStatus: str = shaped("CallStatus", "e.g. in-progress")


class GatherForm(CallForm):
    """A call's form with the keys pressed (none when the wait ran out)."""

    Digits: str | None = shaped("Digits", "the keys pressed", default=None)


class StatusForm(CallForm):
    """A call's status report."""

    SequenceNumber: str = shaped("SequenceNumber", "0, 1, 2... for each report on one call")
    CallDuration: str | None = shaped("CallDuration", "seconds, on completed", default=None)


CALL_FIELDS = required_fields(CallForm)
_STATUS_FIELDS = required_fields(StatusForm)

TWIML_ANSWERS = {
    200: Reply("TwiML: what the phone says, built by the twilio library", media="text/xml"),
    **sms_webhooks.SIGNED_ANSWERS,
}
# What a status callback answers.
STATUS_ANSWERS = {
    200: Reply("recorded (also for a call or status we do not know)", media=""),
    **sms_webhooks.SIGNED_ANSWERS,
}


def twiml(response: VoiceResponse) -> web.Response:
    """TwiML as the answer to a Twilio webhook (the voice webhooks' one way to answer)."""
    return web.Response(text=str(response), content_type="text/xml")


def hang_up() -> web.Response:
    """TwiML that ends the call: for a row, call or path that is no ring of ours."""
    response = VoiceResponse()
    response.hangup()
    return twiml(response)


def said_then_hang_up(request: web.Request, text: str, language: str) -> web.Response:
    """``text`` said in ``language`` (ours: "zh", "en"), then the call ends."""
    response = VoiceResponse()
    response.say(text, language=request.app[CONFIG].voice.speech_language(language))
    response.hangup()
    return twiml(response)


def _outbox_id(request: web.Request) -> int | None:
    try:
        return int(request.match_info["outbox_id"])
    except ValueError:
        return None


async def _row(request: web.Request, outbox_id: int | None) -> Any:
    """The voice row a webhook's path names, or None."""
    if outbox_id is None:
        return None
    async with AsyncSession(request.app[DATABASE]) as session:
        return (
            await session.execute(
                select(m.OutboxItem).where(
                    m.OutboxItem.id == outbox_id, m.OutboxItem.channel == repository.VOICE
                )
            )
        ).scalar_one_or_none()


def public_base(request: web.Request) -> str:
    """Where Twilio reaches us: the public address, else the one it used."""
    public = request.app[CONFIG].sms.public_url
    return public.rstrip("/") if public else str(request.url.origin())


def _prompt(request: web.Request, row: Any, script: VoiceScript, saying: int) -> VoiceResponse:
    """The summary said, and a key waited for; ``saying``: how many times it has been."""
    language = request.app[CONFIG].voice.speech_language(script.language)
    response = VoiceResponse()
    if saying > 1:
        response.say(render(Message(MessageKind.VOICE_NO_KEY), script.language), language=language)
    action = public_base(request) + GATHER_PATH.format(outbox_id=row.id) + f"?saying={saying}"
    gather = response.gather(
        num_digits=1,
        timeout=KEY_WAIT_S,
        action=action,
        method="POST",
        action_on_empty_result=True,
    )
    gather.say(script.say, language=language)
    return response


def _script(row: Any) -> VoiceScript | None:
    try:
        return VoiceScript.read(row.body)
    except ValueError as error:
        log.error("outbox %d: %s", row.id, error)
        return None


@routes.post(ANSWER_PATH)
@contract(access=Access.TWILIO, path=OutboxPath, form=CallForm, answers=TWIML_ANSWERS, tag="twilio")
async def voice_answer(request: web.Request) -> web.Response:
    """A phone the desk rang was picked up: what it says, and the key it waits for."""
    form = await signed_form(request, required=CALL_FIELDS, what="voice")
    row = await _row(request, _outbox_id(request))
    script = None if row is None else _script(row)
    if row is None or script is None:
        log.warning("voice call %s picked up for no call we placed; hung up", form["CallSid"])
        return hang_up()
    with logs.bound(call_id=row.call_id, carer=repository.carer_code(row.recipient)):
        log.info(
            "voice call %s (outbox %d) to %s picked up", form["CallSid"], row.id, row.recipient
        )
        stale = await _no_longer_wanted(request, row, script)
    if stale is not None:
        # Accepted by text while the phone rang, released, or the call closed: said so,
        # and no key is asked for.
        return said_then_hang_up(request, render(stale, script.language), script.language)
    return twiml(_prompt(request, row, script, 1))


async def _no_longer_wanted(request: web.Request, row: Any, script: VoiceScript) -> Message | None:
    """What a carer rung about their page hears instead once it no longer waits for
    them (replies.ring_no_longer_wanted), or a family contact once help has arrived
    (replies.family_no_longer_needed); None while it does, or for another ring."""
    guard = row.guard or {}
    carer_id = paged_carer(guard)
    family = script.purpose is VoicePurpose.FAMILY and "unless" in guard
    if (carer_id is None and not family) or row.call_id is None:
        return None
    registry = await request.app[DESK].district.registry()
    async with AsyncSession(request.app[DATABASE]) as session:
        call = await repository.load(session, row.call_id, registry.carer_codes, lock=False)
    if call is None:
        return None
    if carer_id is None:
        return family_no_longer_needed(call, Milestone(guard["unless"]))
    return ring_no_longer_wanted(call, carer_id)


@routes.post(GATHER_PATH)
@contract(
    access=Access.TWILIO, path=OutboxPath, form=GatherForm, answers=TWIML_ANSWERS, tag="twilio"
)
async def voice_gather(request: web.Request) -> web.Response:
    """The key pressed (or none): applied as the text's code would be, and confirmed by
    voice; nothing or a key that means nothing is asked once more, then goodbye."""
    form = await signed_form(request, required=CALL_FIELDS, what="voice")
    row = await _row(request, _outbox_id(request))
    script = None if row is None else _script(row)
    if row is None or script is None:
        return hang_up()
    digits = form.get("Digits", "")
    with logs.bound(call_id=row.call_id, carer=repository.carer_code(row.recipient)):
        if digits and row.call_id is not None:
            noted = RingNoted(row.recipient, script.purpose, "key", key=digits)
            await _tell_desk(request.app[DESK], row.call_id, noted, f"outbox {row.id}")
        answer = key_answer(script.purpose, digits)
        if answer is Answer.HEARD and row.call_id is not None:
            # A family contact heard it: nobody else of the family is rung.
            heard = FamilyHeard(row.recipient)
            await _tell_desk(request.app[DESK], row.call_id, heard, f"outbox {row.id}")
            thanks = render(Message(SPOKEN_CONFIRMATIONS[answer]), script.language)
            return said_then_hang_up(request, thanks, script.language)
        carer_id = paged_carer(row.guard or {})
        if answer is None or carer_id is None or row.call_id is None:
            saying = _saying(request)
            if saying < SAYINGS:
                return twiml(_prompt(request, row, script, saying + 1))
            bye = render(goodbye(script.purpose), script.language)
            return said_then_hang_up(request, bye, script.language)
        said = await _apply_key(request, row.call_id, carer_id, answer, script)
    return said_then_hang_up(request, said, script.language)


def _saying(request: web.Request) -> int:
    try:
        return max(1, min(SAYINGS, int(request.query.get("saying", "1"))))
    except ValueError:
        return SAYINGS


async def _apply_key(
    request: web.Request, call_id: int, carer_id: int, answer: Answer, script: VoiceScript
) -> str:
    """Apply the carer's answer as an SMS reply is applied; what to say back."""
    desk, engine = request.app[DESK], request.app[DATABASE]
    registry = await desk.district.registry()
    carer = registry.carers.get(carer_id)
    if carer is None:
        not_yours = Message(MessageKind.REPLY_NOT_YOURS, {"call_ref": str(call_id)})
        return render(not_yours, script.language)
    handled = await sms_webhooks.apply_answer(
        desk, engine, registry, carer, call_id, answer, via="voice"
    )
    log.info("voice key from carer %s on call %d: %s", carer.code, call_id, handled.outcome)
    if handled.outcome != str(answer):
        return handled.answer  # refused: why, in the carer's language
    async with AsyncSession(engine) as session:
        call = await repository.load(session, call_id, registry.carer_codes, lock=False)
    if call is None:
        return handled.answer
    household = household_of(registry, call).code
    return render(spoken_confirmation(answer, call, household), script.language)


@routes.post(STATUS_PATH)
@contract(
    access=Access.TWILIO, path=OutboxPath, form=StatusForm, answers=STATUS_ANSWERS, tag="twilio"
)
async def voice_status(request: web.Request) -> web.Response:
    """Twilio's report on a call we placed: kept once, written in the call's history; a
    carer rung about their page who did not pick up is released and the next one paged."""
    form = await signed_form(request, required=_STATUS_FIELDS, what="voice")
    sid, status = form["CallSid"], form["CallStatus"]
    if status not in CALL_STATUS_RANK:
        log.info("voice status %s for %s is not one we track; ignored", status, sid)
        return web.Response()
    desk = request.app[DESK]
    row = await _row(request, _outbox_id(request))
    try:
        async with desk.transaction() as session:
            await keep_status(session, form, None if row is None else row.id, request)
            if row is not None:
                # Only ever forward, as texts' delivery reports.
                await session.execute(
                    update(m.OutboxItem)
                    .where(
                        m.OutboxItem.id == row.id,
                        m.OutboxItem.delivery.is_(None)
                        | m.OutboxItem.delivery.not_in(not_over(status)),
                    )
                    .values(delivery=status)
                )
    except IntegrityError:
        log.info(
            "voice status %s #%s for %s was received before; nothing done",
            status,
            form["SequenceNumber"],
            sid,
        )
        return web.Response()
    script = None if row is None else _script(row)
    if row is None or script is None or row.call_id is None:
        log.warning("voice status %s for %s: no call of ours", status, sid)
        return web.Response()
    about = f"voice status {status} for {sid} (outbox {row.id})"
    with logs.bound(call_id=row.call_id, carer=repository.carer_code(row.recipient)):
        log.info("%s to %s", about, row.recipient)
        if status in NOTED_STATUSES:
            duration = form.get("CallDuration")
            noted = RingNoted(
                row.recipient,
                script.purpose,
                status,
                duration_s=int(duration) if duration and status in FINAL else None,
            )
            await _tell_desk(desk, row.call_id, noted, about)
        carer_id = paged_carer(row.guard or {})
        if status in NOT_PICKED_UP and carer_id is not None and script.purpose is VoicePurpose.PAGE:
            await _tell_desk(desk, row.call_id, RingUnanswered(carer_id, status), about)
        if status in FINAL and script.purpose is VoicePurpose.FAMILY:
            # Over without their 1 (it would have been recorded first): the next contact.
            await _tell_desk(desk, row.call_id, FamilyRingOver(row.recipient, status), about)
    return web.Response()


async def keep_status(
    session: AsyncSession, form: dict[str, str], outbox_id: int | None, request: web.Request
) -> None:
    """Keep a status callback once per CallSid and SequenceNumber: IntegrityError when
    it was kept before (Twilio posting it again)."""
    await session.execute(
        insert(m.VoiceStatus).values(
            call_sid=form["CallSid"],
            sequence=int(form["SequenceNumber"]),
            status=form["CallStatus"],
            outbox_id=outbox_id,
            received_at=request.app[CLOCK].now(),
        )
    )


async def _tell_desk(desk: Desk, call_id: int, command: Command, about: str) -> None:
    """Apply ``command`` to the call; a call that moved on meanwhile is only logged."""
    try:
        await desk.command(call_id, command)
    except (CallError, CallNotFoundError) as refused:
        log.info("%s: %s not recorded on call %d: %s", about, command, call_id, refused)
