"""Carers' SMS replies, as Twilio posts them: ``POST /sms/inbound``; and Twilio's
delivery reports on what we sent: ``POST /sms/status``.

Only requests signed by Twilio (X-Twilio-Signature, checked with the twilio library's
RequestValidator) are read. Each message is kept once per MessageSid before anything is
done, so Twilio retrying a webhook replays the first answer and changes nothing. The
reply is bound to one call of the sending carer, applied through the desk as that
carer, and confirmed in the TwiML answer, which Twilio sends back as an SMS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callcenter import logs
from callcenter.domain.calls import (
    Actor,
    ActorKind,
    CallError,
    Outcome,
)
from callcenter.domain.messages import Message, MessageKind, render
from callcenter.domain.replies import (
    Answer,
    ReplyError,
    command_for,
    confirmation,
    parse_reply,
    refusal,
)
from callcenter.engine import phones, repository
from callcenter.engine.desk import CallNotFoundError
from callcenter.engine.district import CarerInfo, Registry, household_of
from callcenter.engine.outbox.delivery import did_not_arrive, paged_carer
from callcenter.notify.sms import STATUS_PATH
from callcenter.notify.twilio_errors import BROKEN_BY_DELIVERY, delivery_error
from callcenter.store import models as m
from callcenter.web import twilio_form
from callcenter.web.contract import Access, Reply, contract
from callcenter.web.errors import ApiError, bad_request
from callcenter.web.state import CLOCK, CONFIG, DATABASE, DESK, SMS_ACCOUNT

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callcenter.clock import Clock
    from callcenter.engine.desk import Desk
    from callcenter.notify.sms import TwilioAccount

log = logging.getLogger("callcenter.sms")

routes = web.RouteTableDef()

INBOUND_PATH = "/sms/inbound"
SIGNATURE_HEADER = "X-Twilio-Signature"
# The example call number in help texts when the carer has no open call.
_EXAMPLE_CALL = "12"
# An unknown sender's language is not known: they get both.
_UNKNOWN_SENDER_LANGUAGES = ("zh", "en")


def shaped(name: str, meaning: str, **default: Any) -> Any:
    """A form field described with the shape twilio_form holds it to."""
    shape = twilio_form.SHAPES[name]
    return Field(
        pattern=f"^{shape.pattern.pattern}$", description=f"{meaning}: {shape.says}", **default
    )


class InboundForm(BaseModel):
    """What Twilio posts for a text a carer sent (it posts more fields; they are kept
    out of the reply's handling but are part of the signature). Every field once."""

    model_config = ConfigDict(extra="allow")

    AccountSid: str = shaped("AccountSid", "this server's Twilio account")
    MessageSid: str = shaped("MessageSid", "Twilio's message id")
    From: str = shaped("From", "the sender's phone")
    To: str = shaped("To", "our number")
    Body: str = Field(max_length=twilio_form.MAX_BODY_CHARS, description="the text")


class StatusForm(BaseModel):
    """What Twilio posts when a message we sent changes state. Every field once."""

    model_config = ConfigDict(extra="allow")

    AccountSid: str = shaped("AccountSid", "this server's Twilio account")
    MessageSid: str = shaped("MessageSid", "Twilio's message id")
    MessageStatus: str = shaped("MessageStatus", "e.g. delivered")
    ErrorCode: str | None = shaped("ErrorCode", "Twilio's delivery error, if any", default=None)


def required_fields(form: type[BaseModel]) -> tuple[str, ...]:
    """The fields a webhook cannot do without: those its form model requires
    (twilio_form checks every field's shape)."""
    return tuple(
        info.alias or name for name, info in form.model_fields.items() if info.is_required()
    )


_INBOUND_FIELDS = required_fields(InboundForm)
_STATUS_FIELDS = required_fields(StatusForm)

SIGNED_ANSWERS = {
    400: (
        "signed, but not a form Twilio posts: a field missing, posted twice, or not in "
        "Twilio's shape (a NUL character, an id or number with something glued on, "
        "another account, a Body over 1600 characters)"
    ),
    403: "not signed by Twilio (X-Twilio-Signature missing or wrong)",
    415: "not application/x-www-form-urlencoded, as Twilio posts",
}


def webhook_auth_token(account: TwilioAccount) -> str:
    """The secret Twilio signs webhooks with: the local fake's while it runs, else the
    account's auth token from the configuration."""
    return account.auth_token


def signed_url(request: web.Request, public_url: str) -> str:
    """The URL Twilio signed: ``public_url`` (the address Twilio calls, behind a proxy)
    with this request's path and query, else the URL the request arrived at."""
    if public_url:
        return public_url.rstrip("/") + request.path_qs
    return str(request.url)


def twiml(text: str) -> web.Response:
    """A TwiML answer; Twilio sends ``text`` back to the sender as an SMS."""
    message = f"<Message>{escape(text)}</Message>" if text else ""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response>{message}</Response>'
    return web.Response(text=body, content_type="text/xml")


def webhook_account_sid(account: TwilioAccount) -> str:
    """The account whose webhooks these are: the local fake's while it runs, else the
    configured account."""
    return account.account_sid


async def signed_form(
    request: web.Request, *, required: tuple[str, ...], what: str = "SMS"
) -> dict[str, str]:
    """The posted form fields, if Twilio signed them (else 403 and a log line) and they
    have the shapes Twilio gives them (else 400 and a log line: see twilio_form). A post
    without a signature is refused before its body is read. ``what``: the webhook's
    kind, for the log ("SMS", "voice")."""
    account = request.app[SMS_ACCOUNT]
    token = webhook_auth_token(account)
    signature = request.headers.get(SIGNATURE_HEADER, "")
    url = signed_url(request, request.app[CONFIG].sms.public_url)
    form = await twilio_form.read_form(request) if token and signature else None
    if form is None or not RequestValidator(token).validate(url, form, signature):
        why = (
            "no auth token is configured to check it"
            if not token
            else "it is not signed"
            if not signature
            else "its signature does not match"
        )
        log.warning(
            "refused %s %s webhook from %s for %s: %s",
            "an" if what == "SMS" else "a",
            what,
            request.remote or "?",
            url,
            why,
        )
        raise ApiError(403, "forbidden", f"only Twilio may post here: {why} (X-Twilio-Signature)")
    try:
        return twilio_form.checked(
            form, account_sid=webhook_account_sid(account), required=required
        )
    except twilio_form.FormRefusedError as refused:
        # Signed, yet not as Twilio posts it: a captured request cut into other fields.
        log.warning(
            "refused a signed %s webhook from %s for %s: %s; Twilio never posts that "
            "(a captured request re-cut into other fields?)",
            what,
            request.remote or "?",
            url,
            refused,
        )
        raise bad_request(
            f"{refused}: this is not a form Twilio posts", field=refused.field
        ) from None


@dataclass(frozen=True)
class Handled:
    """What became of one reply: the outcome kept in inbound_sms and the answer text."""

    outcome: str
    answer: str
    call_id: int | None = None


@routes.post(INBOUND_PATH)
@contract(
    access=Access.TWILIO,
    form=InboundForm,
    answers={
        200: Reply("TwiML: the confirmation Twilio texts back", media="text/xml"),
        **SIGNED_ANSWERS,
    },
    tag="twilio",
)
async def inbound_sms(request: web.Request) -> web.Response:
    """A carer's reply from Twilio: checked, kept once, applied, confirmed in TwiML."""
    form = await signed_form(request, required=_INBOUND_FIELDS)
    sid, sender, body = form["MessageSid"], form["From"], form["Body"]
    desk, engine, clock = request.app[DESK], request.app[DATABASE], request.app[CLOCK]
    try:
        async with desk.transaction() as session:
            row_id = (
                await session.execute(
                    insert(m.InboundSms)
                    .values(
                        message_sid=sid,
                        from_number=sender,
                        body=body,
                        received_at=clock.now(),
                        outcome="received",
                        answer="",
                    )
                    .returning(m.InboundSms.id)
                )
            ).scalar_one()
    except IntegrityError:
        return await _replayed(engine, sid)
    carer = _carer_by_phone(await desk.district.registry(), sender)
    with logs.bound(carer=None if carer is None else carer.code):
        handled = await _handle(desk, engine, clock, sender, body)
        async with desk.transaction() as session:
            # A carer may name a call that does not exist ("99999a"): kept as text, not
            # linked.
            call_id = handled.call_id
            if call_id is not None and await session.get(m.Call, call_id) is None:
                call_id = None
            await session.execute(
                update(m.InboundSms)
                .where(m.InboundSms.id == row_id)
                .values(outcome=handled.outcome, answer=handled.answer, call_id=call_id)
            )
        with logs.bound(call_id=call_id):
            log.info(
                "SMS %s from %s %r: %s%s",
                sid,
                sender,
                body[:40],
                handled.outcome,
                f" on call {handled.call_id}" if handled.call_id is not None else "",
            )
    return twiml(handled.answer)


async def _replayed(engine: AsyncEngine, sid: str) -> web.Response:
    """A MessageSid seen before: the same answer again, nothing else."""
    async with AsyncSession(engine) as session:
        answer = await session.scalar(
            select(m.InboundSms.answer).where(m.InboundSms.message_sid == sid)
        )
    log.info("SMS %s was received before; answered as then, nothing done", sid)
    return twiml(answer or "")


def _carer_by_phone(registry: Registry, phone: str) -> CarerInfo | None:
    # An active carer wins over a former one who had the same number.
    found = [c for c in registry.carers.values() if c.phone == phone]
    found.sort(key=lambda c: not c.active)
    return found[0] if found else None


async def _open_call_of(engine: AsyncEngine, carer_id: int) -> int | None:
    """The call of the carer's latest active assignment (at most one is active)."""
    async with AsyncSession(engine) as session:
        call_id: int | None = await session.scalar(
            select(m.CallAssignment.call_id)
            .where(m.CallAssignment.carer_id == carer_id, m.CallAssignment.active.is_(True))
            .order_by(m.CallAssignment.dispatched_at.desc(), m.CallAssignment.id.desc())
            .limit(1)
        )
    return call_id


async def _was_on(engine: AsyncEngine, call_id: int, carer_id: int) -> bool:
    async with AsyncSession(engine) as session:
        found = await session.scalar(
            select(func.count())
            .select_from(m.CallAssignment)
            .where(m.CallAssignment.call_id == call_id, m.CallAssignment.carer_id == carer_id)
        )
    return bool(found)


async def _handle(desk: Desk, engine: AsyncEngine, clock: Clock, sender: str, text: str) -> Handled:
    """Read the reply, bind it to one of the sender's calls and apply it."""
    registry = await desk.district.registry()
    carer = _carer_by_phone(registry, sender)
    reply = parse_reply(text)
    languages = (carer.language,) if carer is not None else _UNKNOWN_SENDER_LANGUAGES

    def say(kind: MessageKind, **facts: str) -> str:
        return " ".join(render(Message(kind, facts), lang) for lang in languages)

    who = f"carer {carer.code}" if carer is not None else sender
    if not isinstance(reply, ReplyError) and reply.answer is Answer.STOP:
        # Anyone may stop our texts, carer or not. Twilio blocks the number by itself
        # from now on; the mark stops us trying (and paging this carer) meanwhile.
        async with desk.transaction() as session:
            await phones.mark(
                session,
                sender,
                m.PhoneProblem.OPTED_OUT,
                "its owner texted STOP; texts reach it again after START",
                recipient=f"carer:{carer.code}" if carer is not None else "",
                now=clock.now(),
            )
        log.warning("%s opted out of SMS (sent %r)", who, text[:40])
        return Handled("opted_out", say(MessageKind.REPLY_OPTED_OUT))
    if not isinstance(reply, ReplyError) and reply.answer is Answer.START:
        async with desk.transaction() as session:
            await phones.lift(session, sender, m.PhoneProblem.OPTED_OUT)
        log.info("%s opted back in to SMS", who)
        return Handled("opted_in", say(MessageKind.REPLY_OPTED_IN))
    if carer is None:
        log.warning("SMS from %s, a number no carer has: %r", sender, text[:40])
        return Handled("unknown_sender", say(MessageKind.REPLY_UNKNOWN_SENDER))
    if isinstance(reply, ReplyError):
        log.info("SMS from carer %s not understood (%s): %r", carer.code, reply.reason, reply.text)
        open_call = await _open_call_of(engine, carer.id)
        example = str(open_call) if open_call is not None else _EXAMPLE_CALL
        return Handled("not_understood", say(MessageKind.REPLY_NOT_UNDERSTOOD, call_ref=example))
    call_id = reply.call_id
    if call_id is None:
        call_id = await _open_call_of(engine, carer.id)
        if call_id is None:
            return Handled("no_open_call", say(MessageKind.REPLY_NO_OPEN_CALL))
    return await apply_answer(desk, engine, registry, carer, call_id, reply.answer, via="SMS")


async def apply_answer(
    desk: Desk,
    engine: AsyncEngine,
    registry: Registry,
    carer: CarerInfo,
    call_id: int,
    answer: Answer,
    *,
    outcome: Outcome = Outcome.HELPED_AT_HOME,
    via: str,
) -> Handled:
    """Apply one carer's answer to one call through the desk, as that carer, and say
    what became of it in the carer's language: the confirmation, or why nothing changed
    (never on it, already taken, passed on, closed). SMS replies and the carer page
    both answer through here, so a call moves the same way whichever the carer used."""

    def say(kind: MessageKind, **facts: str) -> str:
        return render(Message(kind, facts), carer.language)

    with logs.bound(call_id=call_id, carer=carer.code):
        if not await _was_on(engine, call_id, carer.id):
            return Handled(
                "refused", say(MessageKind.REPLY_NOT_YOURS, call_ref=str(call_id)), call_id
            )
        command = command_for(answer, Actor(ActorKind.CARER, carer.code), carer.id, outcome, via)
        try:
            call = await desk.command(call_id, command)
        except CallNotFoundError:
            return Handled(
                "refused", say(MessageKind.REPLY_NOT_YOURS, call_ref=str(call_id)), call_id
            )
        except CallError as error:
            refused = await _refusal(engine, registry, call_id, carer, error, via)
            return Handled("refused", refused, call_id)
        household = household_of(registry, call).code
        confirmed = confirmation(answer, call, household, outcome)
        # A done that leaves the call for the desk's review is kept as what it was.
        kept = "reported_done" if confirmed.kind is MessageKind.REPLY_REVIEW else str(answer)
        return Handled(kept, render(confirmed, carer.language), call_id)


async def _refusal(
    engine: AsyncEngine,
    registry: Registry,
    call_id: int,
    carer: CarerInfo,
    error: CallError,
    via: str,
) -> str:
    async with AsyncSession(engine) as session:
        call = await repository.load(session, call_id, registry.carer_codes, lock=False)
    household = "?"
    if call is None:
        message = Message(MessageKind.REPLY_NOT_YOURS, {"call_ref": str(call_id)})
    else:
        household = household_of(registry, call).code
        message = refusal(call, carer.id, household, str(error))
    with logs.bound(household=None if call is None else household):
        log.info(
            "%s answer from carer %s refused on call %d household %s: %s",
            via,
            carer.code,
            call_id,
            household,
            error,
        )
    return render(message, carer.language)


# Twilio's message statuses in the order a message passes through them. A status is
# recorded only over one of lower rank, so a late "sent" never undoes "delivered".
_DELIVERY_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "read": 5,
}
# Nothing is recorded over these: the message will not arrive.
_NEVER_ARRIVES = frozenset({"undelivered", "failed", "canceled"})
# What moves a dispatch on at once: the carer was not reached.
NOT_REACHED = frozenset({"undelivered", "failed"})


def not_over(status: str) -> frozenset[str]:
    """The delivery statuses a report of ``status`` must not replace."""
    rank = _DELIVERY_RANK[status]
    return frozenset(s for s, r in _DELIVERY_RANK.items() if r >= rank) | _NEVER_ARRIVES


@routes.post(STATUS_PATH)
@contract(
    access=Access.TWILIO,
    form=StatusForm,
    answers={
        200: Reply("recorded (also for a message or status we do not know)", media=""),
        **SIGNED_ANSWERS,
    },
    tag="twilio",
)
async def sms_status(request: web.Request) -> web.Response:
    """Twilio's report on a message we sent: recorded, only ever forward; a dispatch
    page that cannot arrive moves the call on to the next carer at once."""
    form = await signed_form(request, required=_STATUS_FIELDS)
    desk = request.app[DESK]
    sid, status, code = form["MessageSid"], form["MessageStatus"], form.get("ErrorCode", "")
    if status not in _DELIVERY_RANK:
        log.info("SMS status %s for %s is not one we track; ignored", status, sid)
        return web.Response()
    error = f"{status}: {delivery_error(code)}" if code else None
    problem = BROKEN_BY_DELIVERY.get(code) if status in NOT_REACHED else None
    async with desk.transaction() as session:
        noted = await repository.note_delivery(
            session, sid, status, error=error, not_over=not_over(status)
        )
        if noted and problem is not None:
            await phones.mark(
                session,
                noted[0].address,
                problem,
                delivery_error(code),
                recipient=noted[0].recipient,
                now=request.app[CLOCK].now(),
            )
    if not noted:
        # Answered 200 all the same: Twilio would otherwise retry it for nothing.
        log.warning("SMS status %s for %s: no message of ours has that sid", status, sid)
        return web.Response()
    for row in noted:
        with logs.bound(
            call_id=row.call_id,
            household=row.household or None,
            carer=repository.carer_code(row.recipient),
        ):
            await _after_delivery(desk, sid, status, code, row)
    return web.Response()


async def _after_delivery(
    desk: Desk, sid: str, status: str, code: str, row: repository.Delivery
) -> None:
    about = f"outbox {row.outbox_id}, call {row.call_id} household {row.household or '?'}"
    if not row.moved:
        log.info(
            "SMS status %s for %s (%s) ignored: it already was %s", status, sid, about, row.before
        )
        return
    log.info(
        "SMS %s (%s): %s -> %s%s",
        sid,
        about,
        row.before,
        status,
        f" ({delivery_error(code)})" if code else "",
    )
    if status not in NOT_REACHED or row.call_id is None:
        return
    carer_id = paged_carer(row.guard)
    why = ("dispatch SMS " if carer_id is not None else "SMS ") + status
    why += f": {delivery_error(code)}" if code else ""
    await did_not_arrive(
        desk,
        row.call_id,
        carer_id=carer_id,
        recipient=row.recipient,
        address=row.address,
        why=why,
        about=f"SMS status ({about})",
    )
