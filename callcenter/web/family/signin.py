"""Signing in to the family portal: codes by SMS, their limits, the family's sessions.

Sign-in codes are six digits, kept only as their SHA-256, live 10 minutes, work once and
die after 5 wrong tries; asking for codes and guessing them are limited per phone and per
address, counted from the audit log (so the limits hold across restarts and instances)
while the phone and the address are locked (so they hold under simultaneous requests).
An unknown phone gets the same answer as a known one and nothing is sent. A session is a
random cookie (``callcenter_family``) bound to the phone; its digest, CSRF check and end
by time are the board's own (web/sessions.py). The routes that call this are in
routes.py; see docs/family.md.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from pydantic import Field
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.phones import is_e164
from callcenter.engine import repository
from callcenter.engine.accounts import token_digest
from callcenter.store import models as m
from callcenter.store.db import lock_names, locked_transaction
from callcenter.web import audit
from callcenter.web.bodies import _Body
from callcenter.web.errors import ApiError
from callcenter.web.sessions import (
    CSRF_HEADER,
    SAFE_METHODS,
    cookie_token,
    csrf_ok,
    double_submitted,
    is_ended,
    minutes_to_wait,
    note_seen,
    same_origin,
)
from callcenter.web.state import CLOCK, DATABASE
from callcenter.web.views import Shape

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
COOKIE_MAX_AGE = int(SESSION_MAX.total_seconds())

# Audit actions for the sign-in itself (reads have their own, in routes.py).
CODE_ASKED = "family_code_asked"
CODE_WRONG = "family_code_wrong"
SIGNED_IN = "family_signed_in"

_CODE_TEXT = {
    "zh": "【居家养老呼叫中心】家属登录验证码：{code}，10分钟内有效，仅可使用一次。请勿告诉他人。",
    "en": (
        "Eldercare call centre: your family sign-in code is {code}. It works once, for "
        "10 minutes. Never share it."
    ),
}
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")


class PhoneBody(_Body):
    phone: str = Field(max_length=40, description="the phone number the family gave us")


class VerifyBody(PhoneBody):
    code: str = Field(max_length=16, description="the code the SMS brought")


class SignInToken(Shape):
    """A token for the code and verify requests, also set in a cookie."""

    csrf_token: str


class CodeAsked(Shape):
    """The same answer whether or not the phone is a contact: nobody learns which are."""

    message: str
    expires_in_min: int


class SignedIn(Shape):
    """Signed in: the session cookie is set; changes need this CSRF token."""

    phone: str
    csrf_token: str


class SignedOut(Shape):
    """Signed out here."""

    signed_out: bool


class FamilyMe(Shape):
    """The signed-in phone, its language, CSRF token and the district's time zone."""

    phone: str
    name: str
    language: str
    csrf_token: str
    timezone: str


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
    if not is_e164(phone):
        raise ApiError(
            400,
            "bad_phone",
            "请输入手机号码，例如 13800138000 / Enter a mobile number, e.g. +8613800138000",
            field="phone",
        )
    return phone


def _address(request: web.Request) -> str:
    return (request.remote or "")[:64]


def _forbidden(message: str) -> ApiError:
    return ApiError(403, "csrf", message)


def check_sign_in_request(request: web.Request) -> None:
    """A code or verify request must come from our page: same origin, and the token from
    ``GET /family/api/sign-in`` both in the header and in its cookie."""
    if not double_submitted(request, request.headers.get(CSRF_HEADER, ""), SIGN_IN_CSRF_COOKIE):
        raise _forbidden("请刷新页面后重试 / The sign-in page expired; reload it and try again.")


async def family_of(request: web.Request) -> FamilyMember | None:
    """The live family session the request's cookie names, or None (no cookie, unknown,
    signed out, or ended by time)."""
    token = cookie_token(request, FAMILY_COOKIE)
    if token is None:
        return None
    engine = request.app[DATABASE]
    now = request.app[CLOCK].now()
    digest = token_digest(token)
    async with AsyncSession(engine) as session:
        row = await session.get(m.FamilySession, digest)
    if row is None or is_ended(now, row, SESSION_IDLE):
        return None
    await note_seen(engine, m.FamilySession, digest, row.last_seen_at, now)
    return FamilyMember(row.phone, row.csrf_token)


async def signed_in(request: web.Request) -> FamilyMember:
    """The family member behind this request, CSRF-checked when it changes something."""
    member = await family_of(request)
    if member is None:
        raise ApiError(
            401, "signed_out", "请重新登录 / You are signed out; sign in again at /family/login"
        )
    if request.method not in SAFE_METHODS and (
        not same_origin(request) or not csrf_ok(request, member.csrf_token)
    ):
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
    now = request.app[CLOCK].now()
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
    engine = request.app[DATABASE]
    async with AsyncSession(engine) as session:
        await _refuse_if_over(session, request, action, phone, limits, what)
    async with locked_transaction(engine) as session:
        await lock_names(session, f"family:phone:{phone}", f"family:address:{_address(request)}")
        await _refuse_if_over(session, request, action, phone, limits, what)
        yield session


async def contacts_of(session: AsyncSession, phone: str) -> list[m.FamilyContact]:
    """The family contacts written with this phone who may sign in to the portal, by
    household (a contact the register keeps off the portal gets no code)."""
    return list(
        (
            await session.scalars(
                select(m.FamilyContact)
                .where(m.FamilyContact.phone == phone, m.FamilyContact.portal.is_(True))
                .order_by(m.FamilyContact.household_id)
            )
        ).all()
    )


async def text_code(request: web.Request, phone: str) -> bool:
    """Put a fresh code for ``phone`` in the outbox if it is a family contact, within the
    limits (429 otherwise); whether one was sent. The try is audited either way."""
    now = request.app[CLOCK].now()
    async with _within_limits(
        request,
        CODE_ASKED,
        phone,
        (CODES_PER_PHONE, CODES_PER_ADDRESS),
        ("验证码请求过多", "Too many codes asked for"),
    ) as session:
        contacts = await contacts_of(session, phone)
        if contacts:
            code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
            session.add(
                m.FamilyCode(
                    phone=phone,
                    code_sha256=token_digest(code),
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
    return bool(contacts)


async def use_code(request: web.Request, phone: str, code: str) -> bool:
    """Whether ``code`` is a live code of ``phone`` (a contact still), used up now if so:
    checked in constant time, once, before it expires; a wrong one counts against every
    live code and the limits (429 once they are reached)."""
    now = request.app[CLOCK].now()
    # Always a 64-character digest, so the comparison below takes the same time whatever
    # was typed.
    typed = token_digest(code.strip())
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
        if matched is not None and await contacts_of(session, phone):
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
    return used


async def start_session(request: web.Request, phone: str) -> tuple[str, str]:
    """A new session for ``phone``, audited: its cookie's token and its CSRF token."""
    now = request.app[CLOCK].now()
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    async with locked_transaction(request.app[DATABASE]) as session:
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
    return token, csrf


async def end_session(request: web.Request) -> None:
    """End the session the request's cookie names (its holder is checked already)."""
    token = request.cookies[FAMILY_COOKIE]
    async with AsyncSession(request.app[DATABASE]) as session, session.begin():
        await session.execute(
            delete(m.FamilySession).where(m.FamilySession.token_sha256 == token_digest(token))
        )
