"""Signing in to the board: passwords, server-side sessions, CSRF; and the session and
CSRF helpers the family portal's sign-in shares (token digests, cookies, session ends).

An operator signs in with username and password (Argon2 hashes, argon2-cffi). The browser
then holds a random session token in an HttpOnly, SameSite=Strict cookie; the database
keeps only its SHA-256, with the session's CSRF token and when it ends, so signing out or
deactivating an operator ends the session at once, and a server restart does not.

CSRF: every state-changing request made with the cookie must carry the session's CSRF
token in ``X-CSRF-Token`` (``GET /api/me`` hands it to the page), compared in constant
time; a request from another origin is refused outright. The sign-in form itself uses a
double-submitted token (a cookie and a form field that must match), since there is no
session yet. Requests with a bearer token (scripts, ``docs/api.md``) carry no cookie and
need neither.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.config import WebConfig
from callcenter.domain.offers import Duty
from callcenter.engine.accounts import password_matches, token_digest
from callcenter.store import models as m
from callcenter.store.db import lock_names, locked_transaction
from callcenter.web import bodies
from callcenter.web.assets import LOGIN_PAGE
from callcenter.web.client_address import source_of
from callcenter.web.state import CLOCK, CONFIG, DATABASE, DESK, OPEN_BOARDS

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callcenter.clock import Clock

log = logging.getLogger("callcenter.web.sessions")

SESSION_COOKIE = "callcenter_session"
LOGIN_CSRF_COOKIE = "callcenter_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
HOME_PATH = "/board"
# Methods that change nothing; everything else needs the CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# last_seen_at (of a board's or a family's session) is written at most this often, not
# on every request.
_TOUCH_EVERY = timedelta(minutes=1)
# An address a person signed in from this recently is theirs: the loose per-person limit
# does not pause them there (web.sign_in_failures_per_user).
KNOWN_SOURCE_FOR = timedelta(days=30)
_MAX_FIELD = 200

routes = web.RouteTableDef()


def token_matches(sent: str, kept: str) -> bool:
    """Whether the token a request sent is the one kept for it (a CSRF token), compared
    in constant time; nothing sent never matches."""
    return bool(sent) and hmac.compare_digest(sent.encode(), kept.encode())


def minutes_to_wait(wait: timedelta) -> int:
    """A pause as the "try again in N min" of a refusal says it: whole minutes, at
    least one."""
    return max(1, math.ceil(wait.total_seconds() / 60))


@dataclass(frozen=True)
class SignedIn:
    """A live board session: its operator (their row as it was read with the session),
    the session's CSRF token, and what the database keeps of its cookie."""

    operator: m.Operator
    csrf_token: str
    digest: str

    @property
    def operator_id(self) -> int:
        return self.operator.id


async def note_seen(
    engine: AsyncEngine,
    table: type[m.WebSession] | type[m.FamilySession],
    digest: str,
    last_seen_at: datetime,
    now: datetime,
) -> None:
    """Keep a session alive: its ``last_seen_at`` moved to ``now``, at most once every
    minute. A write of its own, after the read that found the session: that read's
    transaction upgraded to a write is refused by SQLite ("database is locked") whenever
    another writer commits in between, which on a busy desk is often."""
    if now - last_seen_at < _TOUCH_EVERY:
        return
    async with locked_transaction(engine) as session:
        await session.execute(
            update(table).where(table.token_sha256 == digest).values(last_seen_at=now)
        )


async def session_of(request: web.Request) -> SignedIn | None:
    """The live session the request's cookie names, for an active operator; None if
    there is none (no cookie, unknown, ended, or the operator was switched off)."""
    token = cookie_token(request, SESSION_COOKIE)
    if token is None:
        return None
    engine = request.app[DATABASE]
    now = request.app[CLOCK].now()
    idle = timedelta(hours=request.app[CONFIG].web.session_idle_hours)
    digest = token_digest(token)
    async with AsyncSession(engine) as session:
        found = (
            await session.execute(
                select(m.WebSession, m.Operator)
                .join(m.Operator, m.Operator.id == m.WebSession.operator_id)
                .where(m.WebSession.token_sha256 == digest)
            )
        ).one_or_none()
    if found is None:
        return None
    row, operator = found
    if not operator.active or is_ended(now, row, idle):
        return None
    await note_seen(engine, m.WebSession, digest, row.last_seen_at, now)
    return SignedIn(operator, row.csrf_token, digest)


def same_origin(request: web.Request) -> bool:
    """Whether the request comes from a page of ours: an Origin header, when the browser
    sends one, must name this host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()


def csrf_ok(request: web.Request, csrf_token: str, posted: str = "") -> bool:
    """Whether a state-changing request carries its session's CSRF token (a board's or a
    family's), in the header or, from a form, ``posted``."""
    return token_matches(request.headers.get(CSRF_HEADER, "") or posted, csrf_token)


def double_submitted(request: web.Request, sent: str, cookie: str) -> bool:
    """Whether a sign-in request (before there is a session) comes from our page: same
    origin, and ``sent`` (a form field or header) is the token in its ``cookie``."""
    return same_origin(request) and token_matches(sent, request.cookies.get(cookie, ""))


def cookie_token(request: web.Request, cookie: str) -> str | None:
    """The session token in ``cookie`` (a board's or a family's), or None when there is
    none or it is too long to be one of ours."""
    token = request.cookies.get(cookie, "")
    if not token or len(token) > _MAX_FIELD:
        return None
    return token


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    max_age: int,
    path: str = "/",
) -> None:
    """Set one of our cookies: HttpOnly, SameSite=Strict, and Secure behind HTTPS (or
    when ``web.secure_cookies`` says the server is)."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="Strict",
        secure=request.app[CONFIG].web.secure_cookies or request.secure,
    )


# The sign-in page's words, one language at a time (the other is a link away). Nobody is
# signed in yet, so the language is the one asked for (``?lang=``, or the form's), else
# the browser's first preference, else Chinese.
LOGIN_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "title": "登录 — 呼叫中心值班台",
        "heading": "呼叫中心值班台",
        "subtitle": "请登录",
        "username_label": "用户名",
        "password_label": "密码",
        "submit": "登录",
        "switch": "English",
        "switch_lang": "en",
        "expired": "页面已过期，请重新登录。",
        "paused": "尝试次数过多，请{minutes}分钟后再试。",
        "wrong": "用户名或密码错误。",
    },
    "en": {
        "title": "Sign in — Call centre desk",
        "heading": "Call centre desk",
        "subtitle": "Please sign in",
        "username_label": "Username",
        "password_label": "Password",
        "submit": "Sign in",
        "switch": "中文",
        "switch_lang": "zh",
        "expired": "The form expired; please sign in again.",
        "paused": "Too many failed sign-ins; try again in {minutes} min.",
        "wrong": "Wrong username or password.",
    },
}


def login_language(request: web.Request, asked: str = "") -> str:
    """The sign-in page's language: ``asked`` (the form's), ``?lang=``, else the first
    language the browser prefers (English if it is English), else Chinese."""
    for choice in (asked, request.query.get("lang", "")):
        if choice in LOGIN_WORDS:
            return choice
    preferred = request.headers.get("Accept-Language", "").split(",")[0].strip().lower()
    return "en" if preferred.startswith("en") else "zh"


def _login_page(
    request: web.Request,
    *,
    error: str = "",
    status: int = 200,
    username: str = "",
    language: str = "",
) -> web.Response:
    csrf = secrets.token_urlsafe(24)
    language = language if language in LOGIN_WORDS else login_language(request)
    words = LOGIN_WORDS[language]
    page = LOGIN_PAGE.read_text(encoding="utf-8")
    for name, value in (
        ("csrf", csrf),
        ("error", error),
        ("error_hidden", "" if error else "hidden"),
        ("username", username),
        ("lang", language),
        ("switch_href", f"{LOGIN_PATH}?lang={words['switch_lang']}"),
        *(
            (key, words[key])
            for key in (
                "title",
                "heading",
                "subtitle",
                "username_label",
                "password_label",
                "submit",
                "switch",
                "switch_lang",
            )
        ),
    ):
        page = page.replace("{{" + name + "}}", html.escape(value, quote=True))
    response = web.Response(text=page, content_type="text/html", status=status)
    response.headers["Cache-Control"] = "no-store"
    set_cookie(response, request, LOGIN_CSRF_COOKIE, csrf, max_age=3600)
    return response


async def _paused_for(
    session: AsyncSession, config: WebConfig, username: str, source: str, now: datetime
) -> timedelta | None:
    """How long until a limit frees, if ``username`` from ``source`` has reached one;
    None if they may try."""
    since = now - timedelta(minutes=config.sign_in_window_min)
    attempt = m.SignInAttempt
    failures = select(func.count(), func.min(attempt.at)).where(
        attempt.outcome != m.SignInOutcome.SIGNED_IN, attempt.at > since
    )
    # Their last sign-in from here: failures before it are forgiven, and an address they
    # use is not paused by guessing from elsewhere.
    signed_in_here = await session.scalar(
        select(func.max(attempt.at)).where(
            attempt.username == username,
            attempt.source == source,
            attempt.outcome == m.SignInOutcome.SIGNED_IN,
            attempt.at > now - KNOWN_SOURCE_FOR,
        )
    )
    checks = [
        (failures.where(attempt.source == source), config.sign_in_failures_per_source),
        (
            failures.where(
                attempt.username == username,
                attempt.source == source,
                attempt.at > (signed_in_here or since),
            ),
            config.sign_in_failures_per_user_source,
        ),
    ]
    if signed_in_here is None:
        checks.append(
            (failures.where(attempt.username == username), config.sign_in_failures_per_user)
        )
    for query, limit in checks:
        count, earliest = (await session.execute(query)).one()
        if count >= limit and earliest is not None:
            log.warning(
                "sign-in for %r from %s paused: %d failures in %g min (limit %d)",
                username,
                source,
                count,
                config.sign_in_window_min,
                limit,
            )
            return earliest + timedelta(minutes=config.sign_in_window_min) - now
    return None


async def _begin_attempt(
    config: WebConfig, engine: AsyncEngine, clock: Clock, username: str, source: str
) -> int | timedelta:
    """Record a sign-in attempt as failed (it is, until its session is made) and return
    its id; or, when a limit is reached, how long until it frees.

    A plain read first refuses whoever is over a limit already, without taking any
    lock. Otherwise the address and the name stay locked from a second count until the
    attempt is recorded, so simultaneous attempts are counted one after another and no
    more are judged than the limits allow."""
    name = username[:64]  # as the table keeps it
    now = clock.now()
    async with AsyncSession(engine) as session:
        paused = await _paused_for(session, config, name, source, now)
    if paused is not None:
        return paused
    async with locked_transaction(engine) as session:
        await lock_names(session, f"sign-in:source:{source}", f"sign-in:user:{name}")
        paused = await _paused_for(session, config, name, source, now)
        if paused is not None:
            return paused
        row = m.SignInAttempt(at=now, username=name, source=source, outcome=m.SignInOutcome.FAILED)
        session.add(row)
        await session.flush()
        return row.id


@routes.get(LOGIN_PATH)
async def login_form(request: web.Request) -> web.StreamResponse:
    """The sign-in page (or the board, for someone signed in already)."""
    if await session_of(request) is not None:
        raise web.HTTPSeeOther(HOME_PATH)
    return _login_page(request)


@routes.post(LOGIN_PATH)
async def login(request: web.Request) -> web.StreamResponse:
    """Check the password; on success a new session and its cookie, then the board."""
    engine = request.app[DATABASE]
    form = await bodies.read_form(request)
    # No real username has control characters: any are logged and looked up as "?".
    typed = str(form.get("username", "")).strip().lower()[:_MAX_FIELD]
    username = "".join(ch if ch.isprintable() else "?" for ch in typed)
    password = str(form.get("password", ""))[:_MAX_FIELD]
    posted_csrf = str(form.get("csrf", ""))
    words = LOGIN_WORDS[language := login_language(request, str(form.get("lang", "")))]
    if not double_submitted(request, posted_csrf, LOGIN_CSRF_COOKIE):
        log.warning("sign-in refused from %s: missing or wrong CSRF token", request.remote)
        return _login_page(
            request,
            error=words["expired"],
            status=403,
            username=username,
            language=language,
        )
    source = source_of(request.remote)
    web_config = request.app[CONFIG].web
    begun = await _begin_attempt(web_config, engine, request.app[CLOCK], username, source)
    if isinstance(begun, timedelta):
        minutes = minutes_to_wait(begun)
        return _login_page(
            request,
            error=words["paused"].format(minutes=minutes),
            status=429,
            username=username,
            language=language,
        )
    async with AsyncSession(engine) as session:
        operator = (
            await session.scalars(select(m.Operator).where(m.Operator.username == username))
        ).one_or_none()
    stored = operator.password_hash if operator is not None else None
    # Argon2 is slow on purpose: off the loop, so the desk keeps moving meanwhile.
    right = await asyncio.to_thread(password_matches, stored, password)
    if operator is None or not right or not operator.active:
        # The attempt stays recorded as failed. A switched-off account gets the
        # wrong-password answer: anything else would tell a guesser that the password
        # was right.
        why = "switched off" if operator is not None and right else "wrong username or password"
        log.warning("sign-in for %r from %s refused: %s", username, source, why)
        return _login_page(
            request,
            error=words["wrong"],
            status=401,
            username=username,
            language=language,
        )
    now = request.app[CLOCK].now()
    token = secrets.token_urlsafe(32)
    async with locked_transaction(engine) as session:
        await session.execute(
            update(m.SignInAttempt)
            .where(m.SignInAttempt.id == begun)
            .values(outcome=m.SignInOutcome.SIGNED_IN)
        )
        # Sessions that ended are cleared now and then, here, where they are made, and
        # attempts too old to count for anything.
        await session.execute(delete(m.WebSession).where(m.WebSession.expires_at <= now))
        await session.execute(
            delete(m.SignInAttempt).where(m.SignInAttempt.at < now - KNOWN_SOURCE_FOR)
        )
        session.add(
            m.WebSession(
                token_sha256=token_digest(token),
                operator_id=operator.id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=web_config.session_max_hours),
            )
        )
    log.info("operator %s signed in to the board from %s", operator.username, source)
    offers = request.app[DESK].offers
    if offers is not None:  # signing in puts them on duty (docs/calls.md, "Offers")
        await offers.set_duty(operator.id, Duty.ON_DUTY)
    signed = web.HTTPSeeOther(HOME_PATH)
    set_cookie(
        signed, request, SESSION_COOKIE, token, max_age=int(web_config.session_max_hours * 3600)
    )
    signed.del_cookie(LOGIN_CSRF_COOKIE, path="/")
    raise signed


@routes.post(LOGOUT_PATH)
async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (CSRF-checked like any change), then the sign-in page."""
    signed_in = await session_of(request)
    if signed_in is not None:
        form = await bodies.read_form(request)
        if not same_origin(request) or not csrf_ok(
            request, signed_in.csrf_token, str(form.get("csrf", ""))
        ):
            raise web.HTTPForbidden(text="sign out from the board's own button (CSRF token)")
        async with AsyncSession(request.app[DATABASE]) as session, session.begin():
            await session.execute(
                delete(m.WebSession).where(m.WebSession.token_sha256 == signed_in.digest)
            )
        log.info("operator %d signed out of the board", signed_in.operator_id)
        offers = request.app[DESK].offers
        if offers is not None:  # and off duty: a call offered to them moves on at once
            await offers.set_duty(signed_in.operator_id, Duty.OFF_DUTY)
        request.app[OPEN_BOARDS].check_soon()
    signed_out = web.HTTPSeeOther(LOGIN_PATH)
    signed_out.del_cookie(SESSION_COOKIE, path="/")
    raise signed_out


def is_ended(now: datetime, row: m.WebSession | m.FamilySession, idle: timedelta) -> bool:
    """Whether a session row (a board's or a family's) has ended by time."""
    return now >= row.expires_at or now >= row.last_seen_at + idle
