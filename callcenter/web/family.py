"""The family portal: a relative listed as a household's contact signs in with their phone
and a one-time code sent by SMS, and sees that household's calls, and only those.

Sign-in codes are six digits, kept only as their SHA-256, live 10 minutes, work once and
die after 5 wrong tries; asking for codes and guessing them are limited per phone and per
address, counted from the audit log (so the limits hold across restarts and instances)
while the phone and the address are locked (so they hold under simultaneous requests).
An unknown phone gets the same answer as a known one and nothing is sent. A session is a
random cookie (``callcenter_family``) bound to the phone; every household or call that is
not this phone's is a 404, whatever is tried, and every read is written to the audit log.
See docs/family.md.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import AssignmentState
from callcenter.domain.response_times import ACCEPTED_OR_LATER, ON_SCENE, first_at, seconds_after
from callcenter.engine import repository
from callcenter.store import models as m
from callcenter.store.db import lock_names, locked_transaction
from callcenter.web import audit
from callcenter.web.assets import FAMILY_PAGES
from callcenter.web.bodies import _Body, read_body
from callcenter.web.contract import MAX_ID, Access, Parameters, contract
from callcenter.web.errors import ApiError, not_found
from callcenter.web.pages import file_response
from callcenter.web.replies import json_reply
from callcenter.web.sessions import (
    CSRF_HEADER,
    SAFE_METHODS,
    minutes_to_wait,
    note_seen,
    same_origin,
    set_cookie,
    token_digest,
    token_matches,
)
from callcenter.web.state import SERVER
from callcenter.web.views import iso, whole_number

PORTAL_PATH = "/family"
LOGIN_PATH = "/family/login"
FAMILY_COOKIE = "callcenter_family"
# Before there is a session, the code and verify requests carry a double-submitted token.
SIGN_IN_CSRF_COOKIE = "callcenter_family_csrf"

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=10)
CODE_TRIES = 5
# Codes asked for, and wrong guesses, counted over this window.
LIMIT_WINDOW = timedelta(minutes=15)
CODES_PER_PHONE = 3
CODES_PER_ADDRESS = 10
FAILURES_PER_PHONE = 5
FAILURES_PER_ADDRESS = 20
# A family member checks in now and then; a lost phone's session should not last long.
SESSION_IDLE = timedelta(hours=1)
SESSION_MAX = timedelta(hours=12)
_COOKIE_MAX_AGE = int(SESSION_MAX.total_seconds())

# Audit actions for the sign-in itself (reads have their own below).
CODE_ASKED = "family_code_asked"
CODE_WRONG = "family_code_wrong"
SIGNED_IN = "family_signed_in"

# The only files served from dashboards/family/ besides the page.
_ASSETS = frozenset({"family.js", "family.css"})

_CODE_TEXT = {
    "zh": "【居家养老呼叫中心】家属登录验证码：{code}，10分钟内有效，仅可使用一次。请勿告诉他人。",
    "en": (
        "Eldercare call centre: your family sign-in code is {code}. It works once, for "
        "10 minutes. Never share it."
    ),
}
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")

routes = web.RouteTableDef()


class PhoneBody(_Body):
    phone: str = Field(max_length=40, description="the phone number the family gave us")


class VerifyBody(PhoneBody):
    code: str = Field(max_length=16, description="the code the SMS brought")


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignInToken(_Shape):
    """A token for the code and verify requests, also set in a cookie."""

    csrf_token: str


class CodeAsked(_Shape):
    """The same answer whether or not the phone is a contact: nobody learns which are."""

    message: str
    expires_in_min: int


class SignedIn(_Shape):
    """Signed in: the session cookie is set; changes need this CSRF token."""

    phone: str
    csrf_token: str


class SignedOut(_Shape):
    """Signed out here."""

    signed_out: bool


class FamilyMe(_Shape):
    """The signed-in phone, its language, CSRF token and the district's time zone."""

    phone: str
    name: str
    language: str
    csrf_token: str
    timezone: str


class FamilyHousehold(_Shape):
    code: str
    address: str
    residents: list[str]
    open_calls: int


class FamilyHouseholds(_Shape):
    """The households this phone is a contact of."""

    households: list[FamilyHousehold]


class ResponseTimes(_Shape):
    to_acknowledge_s: int | None
    to_carer_accepted_s: int | None
    to_on_scene_s: int | None


class LiveStage(_Shape):
    stage: str = Field(description="raised, operator_handling, carer_asked, on_the_way, on_scene")
    carer: str | None
    eta_min: int | None


class FamilyCall(_Shape):
    """One call as a family sees it."""

    id: int
    type: str
    state: str
    raised_at: datetime
    presses: int
    answered_by: str | None
    acknowledged_at: datetime | None
    carer: str | None
    accepted_at: datetime | None
    on_scene_at: datetime | None
    closed_at: datetime | None
    outcome: str | None
    response: ResponseTimes
    live: LiveStage | None


class FamilyCalls(_Shape):
    """Every call of the household, newest first."""

    household: str
    calls: list[FamilyCall]


class Step(_Shape):
    at: datetime
    state: str | None


class FamilyCallSteps(FamilyCall):
    """One call with its steps in order."""

    steps: list[Step]


class HouseholdPath(Parameters):
    # Any text: whatever is not one of this phone's households is the same 404.
    code: str = Field(description="a household code such as H0001", examples=["H0001"])


class HouseholdCallPath(HouseholdPath):
    call_id: str = Field(description="a call id", examples=["1"])


_SIGNED_OUT = {401: "signed_out: no live family session", 403: "csrf: a change without the token"}
_SIGN_IN = {403: "csrf: no or a wrong sign-in token", 429: "too_many: try again later"}
_NOT_YOURS = {404: "none of this phone's households or calls (whether or not it exists)"}


@dataclass(frozen=True)
class FamilyMember:
    """Whoever a family cookie belongs to: the phone they proved, and their CSRF token."""

    phone: str
    csrf_token: str

    @property
    def actor(self) -> str:
        """How the audit log names them."""
        return f"family:{self.phone}"


def phone_number(raw: str) -> str:
    """``raw`` as the registry writes phones (E.164): separators dropped, ``00`` read as
    ``+``, and an 11-digit mainland mobile given the +86 it was written without."""
    phone = _PHONE_SEPARATORS.sub("", raw.strip())
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if re.fullmatch(r"1\d{10}", phone):
        phone = "+86" + phone
    if not re.fullmatch(r"\+\d{6,15}", phone):
        raise ApiError(
            400,
            "bad_phone",
            "请输入手机号码，例如 13800138000 / Enter a mobile number, e.g. +8613800138000",
            field="phone",
        )
    return phone


def _code_digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _address(request: web.Request) -> str:
    return (request.remote or "")[:64]


def _forbidden(message: str) -> ApiError:
    return ApiError(403, "csrf", message)


def _check_sign_in_request(request: web.Request) -> None:
    """A code or verify request must come from our page: same origin, and the token from
    ``GET /family/api/sign-in`` both in the header and in its cookie."""
    sent = request.headers.get(CSRF_HEADER, "")
    if not same_origin(request) or not token_matches(
        sent, request.cookies.get(SIGN_IN_CSRF_COOKIE, "")
    ):
        raise _forbidden("请刷新页面后重试 / The sign-in page expired; reload it and try again.")


async def family_of(request: web.Request) -> FamilyMember | None:
    """The live family session the request's cookie names, or None (no cookie, unknown,
    signed out, or ended by time)."""
    token = request.cookies.get(FAMILY_COOKIE, "")
    if not token or len(token) > 200:
        return None
    engine = request.app[SERVER].engine
    now = request.app[SERVER].clock.now()
    digest = token_digest(token)
    async with AsyncSession(engine) as session:
        row = await session.get(m.FamilySession, digest)
    if row is None or now >= row.expires_at or now >= row.last_seen_at + SESSION_IDLE:
        return None
    await note_seen(engine, m.FamilySession, digest, row.last_seen_at, now)
    return FamilyMember(row.phone, row.csrf_token)


async def _signed_in(request: web.Request) -> FamilyMember:
    """The family member behind this request, CSRF-checked when it changes something."""
    member = await family_of(request)
    if member is None:
        raise ApiError(
            401, "signed_out", "请重新登录 / You are signed out; sign in again at /family/login"
        )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not same_origin(request) or not token_matches(sent, member.csrf_token):
            raise _forbidden("请刷新页面后重试 / Reload the page and try again (CSRF token).")
    return member


async def _count_since(
    session: AsyncSession,
    action: str,
    since: datetime,
    *,
    actor: str | None = None,
    address: str | None = None,
) -> tuple[int, datetime | None]:
    """How many audit rows of ``action`` since ``since`` for the actor or address, and the
    earliest of them (when the window frees)."""
    query = select(func.count(), func.min(m.AuditEntry.at)).where(
        m.AuditEntry.action == action, m.AuditEntry.at > since
    )
    if actor is not None:
        query = query.where(m.AuditEntry.actor == actor)
    if address is not None:
        query = query.where(m.AuditEntry.address == address)
    count, earliest = (await session.execute(query)).one()
    return int(count), earliest


async def _refuse_if_over(
    session: AsyncSession,
    request: web.Request,
    action: str,
    phone: str,
    limits: tuple[int, int],
    what: tuple[str, str],
) -> None:
    """429 when this phone or this address has used up ``action`` in the window."""
    now = request.app[SERVER].clock.now()
    since = now - LIMIT_WINDOW
    per_phone, per_address = limits
    for count, earliest, limit in (
        (*await _count_since(session, action, since, actor=f"family:{phone}"), per_phone),
        (*await _count_since(session, action, since, address=_address(request)), per_address),
    ):
        if count >= limit and earliest is not None:
            minutes = minutes_to_wait(earliest + LIMIT_WINDOW - now)
            raise ApiError(
                429,
                "too_many",
                f"{what[0]}，请{minutes}分钟后再试 / {what[1]}; try again in {minutes} min.",
                retry_after_min=minutes,
            )


@asynccontextmanager
async def _within_limits(
    request: web.Request,
    action: str,
    phone: str,
    limits: tuple[int, int],
    what: tuple[str, str],
) -> AsyncIterator[AsyncSession]:
    """The transaction of one try at ``action`` (asking for a code, typing one), once
    this phone and this address are within ``limits``; 429 otherwise.

    A plain read first refuses whoever is over a limit already, without taking any lock.
    Otherwise the phone and the address stay locked from a second count until the
    transaction commits the try it records: simultaneous requests are counted one after
    another, so a burst gets exactly what the limits allow (on PostgreSQL as on SQLite)."""
    engine = request.app[SERVER].engine
    async with AsyncSession(engine) as session:
        await _refuse_if_over(session, request, action, phone, limits, what)
    async with locked_transaction(engine) as session:
        await lock_names(session, f"family:phone:{phone}", f"family:address:{_address(request)}")
        await _refuse_if_over(session, request, action, phone, limits, what)
        yield session


async def _contacts(session: AsyncSession, phone: str) -> list[m.FamilyContact]:
    return list(
        (
            await session.scalars(
                select(m.FamilyContact)
                .where(m.FamilyContact.phone == phone)
                .order_by(m.FamilyContact.household_id)
            )
        ).all()
    )


@routes.get("/family/api/sign-in")
@contract(access=Access.PUBLIC, answers={200: SignInToken}, tag="family")
async def sign_in_token(request: web.Request) -> web.StreamResponse:
    """A fresh token for the code and verify requests (kept in a cookie as well)."""
    token = secrets.token_urlsafe(24)
    response = json_reply({"csrf_token": token})
    set_cookie(
        response, request, SIGN_IN_CSRF_COOKIE, token, max_age=_COOKIE_MAX_AGE, path=PORTAL_PATH
    )
    return response


@routes.post("/family/api/code")
@contract(
    access=Access.FAMILY_SIGN_IN,
    body=PhoneBody,
    answers={202: CodeAsked, 400: "bad_phone or a bad body", **_SIGN_IN},
    tag="family",
)
async def ask_for_code(request: web.Request) -> web.StreamResponse:
    """Text a sign-in code to ``phone`` if it is a family contact; the same answer either
    way, so nobody learns which numbers we know."""
    _check_sign_in_request(request)
    phone = phone_number((await read_body(request, PhoneBody)).phone)
    server = request.app[SERVER]
    now = server.clock.now()
    async with _within_limits(
        request,
        CODE_ASKED,
        phone,
        (CODES_PER_PHONE, CODES_PER_ADDRESS),
        ("验证码请求过多", "Too many codes asked for"),
    ) as session:
        contacts = await _contacts(session, phone)
        if contacts:
            code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
            session.add(
                m.FamilyCode(
                    phone=phone,
                    code_sha256=_code_digest(code),
                    created_at=now,
                    expires_at=now + CODE_LIFETIME,
                    attempts=0,
                    requested_from=_address(request),
                )
            )
            language = contacts[0].language if contacts[0].language in _CODE_TEXT else "zh"
            session.add(
                m.OutboxItem(
                    call_id=None,
                    channel=repository.SMS,
                    recipient=f"family:{phone}",
                    address=phone,
                    body=_CODE_TEXT[language].format(code=code),
                    guard={},
                    state=m.OutboxState.PENDING.value,
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                    last_error="",
                )
            )
        await audit.record_read(
            session,
            request,
            actor=f"family:{phone}",
            household_id=None,
            action=CODE_ASKED,
            detail={"sent": bool(contacts)},
        )
    if contacts:
        server.desk.outbox_changed.set()
    return json_reply(
        {
            "message": (
                "如果该号码登记为家属联系人，验证码已发出 / If this number is a family "
                "contact, a code is on its way by SMS."
            ),
            "expires_in_min": int(CODE_LIFETIME.total_seconds() // 60),
        },
        status=202,
    )


@routes.post("/family/api/verify")
@contract(
    access=Access.FAMILY_SIGN_IN,
    body=VerifyBody,
    answers={200: SignedIn, 401: "wrong_code: wrong, used or expired", **_SIGN_IN},
    tag="family",
)
async def verify_code(request: web.Request) -> web.StreamResponse:
    """Sign in with the code: checked in constant time, once, before it expires; guessing
    is paused after a few wrong codes per phone or per address."""
    _check_sign_in_request(request)
    body = await read_body(request, VerifyBody)
    phone = phone_number(body.phone)
    server = request.app[SERVER]
    now = server.clock.now()
    # Always a 64-character digest, so the comparison below takes the same time whatever
    # was typed.
    typed = _code_digest(body.code.strip())
    async with _within_limits(
        request,
        CODE_WRONG,
        phone,
        (FAILURES_PER_PHONE, FAILURES_PER_ADDRESS),
        ("错误次数过多", "Too many wrong codes"),
    ) as session:
        live = (
            await session.scalars(
                select(m.FamilyCode).where(
                    m.FamilyCode.phone == phone,
                    m.FamilyCode.used_at.is_(None),
                    m.FamilyCode.expires_at > now,
                    m.FamilyCode.attempts < CODE_TRIES,
                )
            )
        ).all()
        matched = None
        for row in live:  # every live code compared, so timing tells nothing
            if hmac.compare_digest(row.code_sha256.encode(), typed.encode()):
                matched = row
        used = False
        if matched is not None and await _contacts(session, phone):
            # Single use, even for two requests racing with the same code.
            claimed = await session.execute(
                update(m.FamilyCode)
                .where(m.FamilyCode.id == matched.id, m.FamilyCode.used_at.is_(None))
                .values(used_at=now)
            )
            used = claimed.rowcount == 1  # type: ignore[attr-defined]
        if not used:
            if live:
                await session.execute(
                    update(m.FamilyCode)
                    .where(m.FamilyCode.id.in_([row.id for row in live]))
                    .values(attempts=m.FamilyCode.attempts + 1)
                )
            await audit.record_read(
                session, request, actor=f"family:{phone}", household_id=None, action=CODE_WRONG
            )
    if not used:
        raise ApiError(
            401,
            "wrong_code",
            "验证码错误或已过期，请重新获取 / That code is wrong, used or expired; "
            "check the SMS or ask for a new code.",
        )
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    async with locked_transaction(server.engine) as session:
        # Ended sessions are cleared here, where new ones are made.
        await session.execute(delete(m.FamilySession).where(m.FamilySession.expires_at <= now))
        session.add(
            m.FamilySession(
                token_sha256=token_digest(token),
                phone=phone,
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=now + SESSION_MAX,
            )
        )
        await audit.record_read(
            session, request, actor=f"family:{phone}", household_id=None, action=SIGNED_IN
        )
    response = json_reply({"phone": phone, "csrf_token": csrf})
    set_cookie(response, request, FAMILY_COOKIE, token, max_age=_COOKIE_MAX_AGE, path=PORTAL_PATH)
    response.del_cookie(SIGN_IN_CSRF_COOKIE, path=PORTAL_PATH)
    return response


@routes.post("/family/api/logout")
@contract(access=Access.FAMILY, answers={200: SignedOut, **_SIGNED_OUT}, tag="family")
async def sign_out(request: web.Request) -> web.StreamResponse:
    """End this phone's session here (CSRF-checked like any change)."""
    await _signed_in(request)
    token = request.cookies[FAMILY_COOKIE]
    async with AsyncSession(request.app[SERVER].engine) as session, session.begin():
        await session.execute(
            delete(m.FamilySession).where(m.FamilySession.token_sha256 == token_digest(token))
        )
    response = json_reply({"signed_out": True})
    response.del_cookie(FAMILY_COOKIE, path=PORTAL_PATH)
    return response


@routes.get("/family/api/me")
@contract(access=Access.FAMILY, answers={200: FamilyMe, **_SIGNED_OUT}, tag="family")
async def who_am_i(request: web.Request) -> web.StreamResponse:
    """The signed-in phone, its language, its CSRF token and the district's time zone."""
    member = await _signed_in(request)
    server = request.app[SERVER]
    async with AsyncSession(server.engine, expire_on_commit=False) as session:
        contacts = await _contacts(session, member.phone)
    return json_reply(
        {
            "phone": member.phone,
            "name": contacts[0].name if contacts else "",
            "language": contacts[0].language if contacts else "zh",
            "csrf_token": member.csrf_token,
            "timezone": server.config.district.timezone,
        }
    )


async def _households(session: AsyncSession, phone: str) -> list[m.Household]:
    return list(
        (
            await session.scalars(
                select(m.Household)
                .join(m.FamilyContact, m.FamilyContact.household_id == m.Household.id)
                .where(m.FamilyContact.phone == phone)
                .order_by(m.Household.code)
                .distinct()
            )
        ).all()
    )


async def _own_household(session: AsyncSession, member: FamilyMember, code: str) -> m.Household:
    """The household coded ``code`` if this phone is its contact; otherwise 404 with the
    same words whether or not it exists."""
    found = None
    if len(code) <= 32:
        found = await session.scalar(
            select(m.Household)
            .join(m.FamilyContact, m.FamilyContact.household_id == m.Household.id)
            .where(m.Household.code == code, m.FamilyContact.phone == member.phone)
            .limit(1)
        )
    if found is None:
        raise not_found(f"您没有编号为 {code[:32]} 的家庭 / None of your households is {code[:32]}")
    return found


@routes.get("/family/api/households")
@contract(access=Access.FAMILY, answers={200: FamilyHouseholds, **_SIGNED_OUT}, tag="family")
async def my_households(request: web.Request) -> web.StreamResponse:
    """The households this phone is a contact of: code, address, residents' names."""
    member = await _signed_in(request)
    async with locked_transaction(request.app[SERVER].engine) as session:
        homes = await _households(session, member.phone)
        residents: dict[int, list[str]] = defaultdict(list)
        for resident in await session.scalars(
            select(m.Resident)
            .where(m.Resident.household_id.in_([h.id for h in homes]))
            .order_by(m.Resident.id)
        ):
            residents[resident.household_id].append(resident.name)
        open_calls = dict(
            (
                await session.execute(
                    select(m.Call.household_id, func.count())
                    .where(
                        m.Call.household_id.in_([h.id for h in homes]), m.Call.closed_at.is_(None)
                    )
                    .group_by(m.Call.household_id)
                )
            ).all()
        )
        for home in homes:
            await audit.record_read(
                session, request, actor=member.actor, household_id=home.id, action="read_household"
            )
    return json_reply(
        {
            "households": [
                {
                    "code": h.code,
                    "address": h.address,
                    "residents": residents[h.id],
                    "open_calls": int(open_calls.get(h.id, 0)),
                }
                for h in homes
            ]
        }
    )


@dataclass(frozen=True)
class _Sent:
    """A carer sent to a call, as the family sees them (no phone, no code)."""

    name: str
    state: str
    active: bool
    dispatched_at: datetime
    changed_at: datetime
    travel_s: float | None


_ARRIVED = {AssignmentState.ON_SCENE.value, AssignmentState.FINISHED.value}
_COMING = {AssignmentState.ACCEPTED.value, AssignmentState.ON_THE_WAY.value}


def _seconds(start: datetime, end: datetime | None) -> int | None:
    after = seconds_after(start, end)
    return None if after is None else round(after)


def _first(
    history: Sequence[m.CallHistory], states: Collection[str], after: datetime
) -> datetime | None:
    """When the call first got as far as one of ``states``: a family measures the call's
    own state (with two carers needed, it is accepted when both have)."""
    return first_at(((h.to_state, h.at) for h in history), states, after=after)


def family_view(
    call: m.Call,
    history: Sequence[m.CallHistory],
    sent: Sequence[_Sent],
    operators: dict[str, str],
    now: datetime,
) -> dict[str, Any]:
    """One call as a family sees it: when it was raised, who answered, which carer came
    and when, the outcome, the response times, and while it is open where things stand."""
    accepted_at = _first(history, ACCEPTED_OR_LATER, call.opened_at)
    on_scene_at = _first(history, {ON_SCENE}, call.opened_at)
    came = [s for s in sent if s.state in _ARRIVED]
    coming = next((s for s in sent if s.active and s.state in _COMING), None)
    asked = next((s for s in sent if s.active), None)
    carer = came[-1] if came else coming
    owner = call.owner or ""
    answered_by = operators.get(owner.split(":", 1)[-1]) if owner.startswith("operator:") else None
    view: dict[str, Any] = {
        "id": call.id,
        "type": call.call_type,
        "state": call.state,
        "raised_at": iso(call.opened_at),
        "presses": call.presses,
        "answered_by": answered_by,
        "acknowledged_at": iso(call.acknowledged_at),
        "carer": carer.name if carer is not None else None,
        "accepted_at": iso(accepted_at),
        "on_scene_at": iso(on_scene_at),
        "closed_at": iso(call.closed_at),
        "outcome": call.outcome or call.cancel_reason,
        "response": {
            "to_acknowledge_s": _seconds(call.opened_at, call.acknowledged_at),
            "to_carer_accepted_s": _seconds(call.opened_at, accepted_at),
            "to_on_scene_s": _seconds(call.opened_at, on_scene_at),
        },
        "live": None,
    }
    if call.closed_at is None:
        view["live"] = _live(call, history, coming, asked, came, now)
    return view


def _live(
    call: m.Call,
    history: Sequence[m.CallHistory],
    coming: _Sent | None,
    asked: _Sent | None,
    came: Sequence[_Sent],
    now: datetime,
) -> dict[str, Any]:
    """Where an open call stands, for the live line ("carer 王 is on the way, about 6 min")."""
    if came and came[-1].active:
        return {"stage": "on_scene", "carer": came[-1].name, "eta_min": None}
    if coming is not None:
        # The estimate counts from when this carer accepted (or set off, if that is all
        # we heard), falling back to the page.
        started = (
            _first(history, ACCEPTED_OR_LATER, coming.dispatched_at)
            or coming.changed_at
            or coming.dispatched_at
        )
        eta = None
        if coming.travel_s is not None:
            left = coming.travel_s - (now - started).total_seconds()
            eta = max(1, math.ceil(left / 60))
        return {"stage": "on_the_way", "carer": coming.name, "eta_min": eta}
    if asked is not None:
        return {"stage": "carer_asked", "carer": asked.name, "eta_min": None}
    if call.acknowledged_at is not None:
        return {"stage": "operator_handling", "carer": None, "eta_min": None}
    return {"stage": "raised", "carer": None, "eta_min": None}


async def _views(session: AsyncSession, calls: Sequence[m.Call], now: datetime) -> list[Any]:
    ids = [c.id for c in calls]
    history: dict[int, list[m.CallHistory]] = defaultdict(list)
    for h in await session.scalars(
        select(m.CallHistory).where(m.CallHistory.call_id.in_(ids)).order_by(m.CallHistory.id)
    ):
        history[h.call_id].append(h)
    sent: dict[int, list[_Sent]] = defaultdict(list)
    for a, name in await session.execute(
        select(m.CallAssignment, m.Carer.name)
        .join(m.Carer, m.Carer.id == m.CallAssignment.carer_id)
        .where(m.CallAssignment.call_id.in_(ids))
        .order_by(m.CallAssignment.seq)
    ):
        sent[a.call_id].append(
            _Sent(name, a.state, a.active, a.dispatched_at, a.changed_at, a.travel_s)
        )
    usernames = {
        c.owner.split(":", 1)[1] for c in calls if c.owner and c.owner.startswith("operator:")
    }
    operators = dict(
        (
            await session.execute(
                select(m.Operator.username, m.Operator.name).where(
                    m.Operator.username.in_(usernames)
                )
            )
        ).all()
    )
    return [family_view(c, history[c.id], sent[c.id], operators, now) for c in calls]


@routes.get("/family/api/households/{code}/calls")
@contract(
    access=Access.FAMILY,
    path=HouseholdPath,
    answers={200: FamilyCalls, **_SIGNED_OUT, **_NOT_YOURS},
    tag="family",
)
async def household_calls(request: web.Request) -> web.StreamResponse:
    """Every call of one of this phone's households, newest first."""
    member = await _signed_in(request)
    server = request.app[SERVER]
    async with locked_transaction(server.engine) as session:
        home = await _own_household(session, member, request.match_info["code"])
        calls = (
            await session.scalars(
                select(m.Call)
                .where(m.Call.household_id == home.id)
                .order_by(m.Call.opened_at.desc(), m.Call.id.desc())
            )
        ).all()
        views = await _views(session, calls, server.clock.now())
        await audit.record_read(
            session,
            request,
            actor=member.actor,
            household_id=home.id,
            action="read_calls",
            detail={"calls": len(views)},
        )
    return json_reply({"household": home.code, "calls": views})


@routes.get("/family/api/households/{code}/calls/{call_id}")
@contract(
    access=Access.FAMILY,
    path=HouseholdCallPath,
    answers={200: FamilyCallSteps, **_SIGNED_OUT, **_NOT_YOURS},
    tag="family",
)
async def household_call(request: web.Request) -> web.StreamResponse:
    """One call of one of this phone's households, with its steps in order."""
    member = await _signed_in(request)
    server = request.app[SERVER]
    raw_id = request.match_info["call_id"]
    async with locked_transaction(server.engine) as session:
        home = await _own_household(session, member, request.match_info["code"])
        call = None
        call_id = whole_number(raw_id)
        if call_id is not None and 0 < call_id <= MAX_ID:
            call = await session.scalar(
                select(m.Call).where(m.Call.id == call_id, m.Call.household_id == home.id)
            )
        if call is None:
            shown = raw_id[:20]
            raise not_found(
                f"{home.code} 没有编号为 {shown} 的呼叫 / {home.code} has no call {shown}"
            )
        (view,) = await _views(session, [call], server.clock.now())
        steps = await session.scalars(
            select(m.CallHistory).where(m.CallHistory.call_id == call.id).order_by(m.CallHistory.id)
        )
        # State changes only: the desk's own notes are not for the family.
        view["steps"] = [
            {"at": iso(h.at), "state": h.to_state}
            for h in steps
            if h.from_state != h.to_state or h.from_state is None
        ]
        await audit.record_read(
            session,
            request,
            actor=member.actor,
            household_id=home.id,
            action="read_call",
            detail={"call": call.id},
        )
    return json_reply(view)


def _page(request: web.Request) -> web.StreamResponse:
    page = FAMILY_PAGES / "index.html"
    if not page.is_file():
        raise web.HTTPNotFound(text=f"the family page is missing: {page}")
    return file_response(page)


@routes.get(PORTAL_PATH)
async def portal(request: web.Request) -> web.StreamResponse:
    """The portal for a signed-in phone; the sign-in page for anyone else."""
    if await family_of(request) is None:
        raise web.HTTPSeeOther(LOGIN_PATH)
    return _page(request)


@routes.get(LOGIN_PATH)
async def login_page(request: web.Request) -> web.StreamResponse:
    """The sign-in page (the same page, showing its sign-in form), or the portal for
    someone signed in already."""
    if await family_of(request) is not None:
        raise web.HTTPSeeOther(PORTAL_PATH)
    return _page(request)


@routes.get("/family/static/{name}")
async def asset(request: web.Request) -> web.StreamResponse:
    """The portal's script and style, nothing else."""
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound(text=f"no such file: {name}")
    return file_response(FAMILY_PAGES / name)
