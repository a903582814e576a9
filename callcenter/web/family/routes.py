"""The family portal's routes: its API under /family/api/ (sign-in with a code, then a
phone's own households and their calls), its page and the page's two files.

Each route checks who is asking (signin.py), reads what they may see (history.py) and
writes every read to the audit log. See docs/family.md.
"""

from __future__ import annotations

import secrets

from aiohttp import web
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.db import locked_transaction
from callcenter.web import audit
from callcenter.web.assets import FAMILY_PAGES
from callcenter.web.bodies import read_body
from callcenter.web.contract import Access, Parameters, contract
from callcenter.web.errors import ApiError
from callcenter.web.family.history import (
    FamilyCalls,
    FamilyCallSteps,
    FamilyHouseholds,
    call_of,
    calls_of,
    household_views,
    households_of,
    own_household,
)
from callcenter.web.family.signin import (
    CODE_LIFETIME,
    COOKIE_MAX_AGE,
    FAMILY_COOKIE,
    LOGIN_PATH,
    PORTAL_PATH,
    SIGN_IN_CSRF_COOKIE,
    CodeAsked,
    FamilyMe,
    PhoneBody,
    SignedIn,
    SignedOut,
    SignInToken,
    VerifyBody,
    check_sign_in_request,
    contacts_of,
    end_session,
    family_of,
    phone_number,
    signed_in,
    start_session,
    text_code,
    use_code,
)
from callcenter.web.pages import file_response, listed_file
from callcenter.web.responses import json_reply
from callcenter.web.sessions import set_cookie
from callcenter.web.state import CLOCK, CONFIG, DATABASE, DESK

# The only files served from dashboards/family/ besides the page.
_ASSETS = frozenset({"family.js", "family.css"})

routes = web.RouteTableDef()


class HouseholdPath(Parameters):
    # Any text: whatever is not one of this phone's households is the same 404.
    code: str = Field(description="a household code such as H0001", examples=["H0001"])


class HouseholdCallPath(HouseholdPath):
    call_id: str = Field(description="a call id", examples=["1"])


_SIGNED_OUT = {401: "signed_out: no live family session", 403: "csrf: a change without the token"}
_SIGN_IN = {403: "csrf: no or a wrong sign-in token", 429: "too_many: try again later"}
_NOT_YOURS = {404: "none of this phone's households or calls (whether or not it exists)"}


@routes.get("/family/api/sign-in")
@contract(access=Access.PUBLIC, answers={200: SignInToken}, tag="family")
async def sign_in_token(request: web.Request) -> web.StreamResponse:
    """A fresh token for the code and verify requests (kept in a cookie as well)."""
    token = secrets.token_urlsafe(24)
    response = json_reply({"csrf_token": token})
    set_cookie(
        response, request, SIGN_IN_CSRF_COOKIE, token, max_age=COOKIE_MAX_AGE, path=PORTAL_PATH
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
    check_sign_in_request(request)
    phone = phone_number((await read_body(request, PhoneBody)).phone)
    if await text_code(request, phone):
        request.app[DESK].outbox_written()
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
    check_sign_in_request(request)
    body = await read_body(request, VerifyBody)
    phone = phone_number(body.phone)
    if not await use_code(request, phone, body.code):
        raise ApiError(
            401,
            "wrong_code",
            "验证码错误或已过期，请重新获取 / That code is wrong, used or expired; "
            "check the SMS or ask for a new code.",
        )
    token, csrf = await start_session(request, phone)
    response = json_reply({"phone": phone, "csrf_token": csrf})
    set_cookie(response, request, FAMILY_COOKIE, token, max_age=COOKIE_MAX_AGE, path=PORTAL_PATH)
    response.del_cookie(SIGN_IN_CSRF_COOKIE, path=PORTAL_PATH)
    return response


@routes.post("/family/api/logout")
@contract(access=Access.FAMILY, answers={200: SignedOut, **_SIGNED_OUT}, tag="family")
async def sign_out(request: web.Request) -> web.StreamResponse:
    """End this phone's session here (CSRF-checked like any change)."""
    await signed_in(request)
    await end_session(request)
    response = json_reply({"signed_out": True})
    response.del_cookie(FAMILY_COOKIE, path=PORTAL_PATH)
    return response


@routes.get("/family/api/me")
@contract(access=Access.FAMILY, answers={200: FamilyMe, **_SIGNED_OUT}, tag="family")
async def who_am_i(request: web.Request) -> web.StreamResponse:
    """The signed-in phone, its language, its CSRF token and the district's time zone."""
    member = await signed_in(request)
    async with AsyncSession(request.app[DATABASE], expire_on_commit=False) as session:
        contacts = await contacts_of(session, member.phone)
    return json_reply(
        {
            "phone": member.phone,
            "name": contacts[0].name if contacts else "",
            "language": contacts[0].language if contacts else "zh",
            "csrf_token": member.csrf_token,
            "timezone": request.app[CONFIG].district.timezone,
        }
    )


@routes.get("/family/api/households")
@contract(access=Access.FAMILY, answers={200: FamilyHouseholds, **_SIGNED_OUT}, tag="family")
async def my_households(request: web.Request) -> web.StreamResponse:
    """The households this phone is a contact of: code, address, residents' names."""
    member = await signed_in(request)
    async with locked_transaction(request.app[DATABASE]) as session:
        homes = await households_of(session, member.phone)
        views = await household_views(session, homes)
        for home in homes:
            await audit.record_read(
                session, request, actor=member.actor, household_id=home.id, action="read_household"
            )
    return json_reply({"households": views})


@routes.get("/family/api/households/{code}/calls")
@contract(
    access=Access.FAMILY,
    path=HouseholdPath,
    answers={200: FamilyCalls, **_SIGNED_OUT, **_NOT_YOURS},
    tag="family",
)
async def household_calls(request: web.Request) -> web.StreamResponse:
    """Every call of one of this phone's households, newest first."""
    member = await signed_in(request)
    async with locked_transaction(request.app[DATABASE]) as session:
        home = await own_household(session, member, request.match_info["code"])
        views = await calls_of(session, home, request.app[CLOCK].now())
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
    member = await signed_in(request)
    async with locked_transaction(request.app[DATABASE]) as session:
        home = await own_household(session, member, request.match_info["code"])
        view = await call_of(session, home, request.match_info["call_id"], request.app[CLOCK].now())
        await audit.record_read(
            session,
            request,
            actor=member.actor,
            household_id=home.id,
            action="read_call",
            detail={"call": view["id"]},
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
    return listed_file(request, FAMILY_PAGES, _ASSETS)
