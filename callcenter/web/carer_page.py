"""The carer page: what a dispatched carer opens from the link in the dispatch SMS.

``GET /c/{token}`` shows that one call (type, address with a map link, residents, access
notes) and buttons for accept / decline / on the way / on scene / resolved with an
outcome; ``POST /c/{token}/answer`` applies a button as the carer through the same
function as an SMS reply (``sms_webhooks.apply_answer``). There is no sign-in and no cookie: the
signed token in the path is the credential (see notify/links.py). A link stops working
12 hours after the dispatch (410), and as soon as the call is no longer the carer's:
stood down, declined, passed on, or the call closed (409). Every view is written to the
audit log as ``carer:<code>`` reading the household's call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from html import escape
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter import logs
from callcenter.domain.calls import (
    ACTIVE_ASSIGNMENT,
    Assignment,
    AssignmentState,
    Call,
    CallState,
    Outcome,
)
from callcenter.domain.messages import CALL_TYPE_NAMES
from callcenter.domain.replies import NEXT_ANSWERS, Answer
from callcenter.engine import repository
from callcenter.engine.district import CarerInfo, HouseholdInfo, Registry, household_of
from callcenter.notify import links
from callcenter.web import audit, sms_webhooks
from callcenter.web.assets import CARER_PAGES
from callcenter.web.contract import Access, ErrorBody, Parameters, contract, problems_of
from callcenter.web.errors import ApiError, bad_request
from callcenter.web.pages import listed_file
from callcenter.web.state import CLOCK, DATABASE, DESK
from callcenter.web.views import iso

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callcenter.clock import Clock

log = logging.getLogger("callcenter.carer_page")

routes = web.RouteTableDef()

PAGE = CARER_PAGES / "index.html"
_ASSETS = frozenset({"carer.js", "carer.css"})
# The page's data goes into the HTML here, so one view is one request and one audit row.
_DATA_MARK = "__CALL_DATA__"
# An answer is a word and an outcome: anything longer is not from our page.
MAX_ANSWER_BYTES = 1024


class PageAnswer(StrEnum):
    """The buttons of the page: each sends the ``Answer`` of the same name, as the same
    SMS reply would (which are shown when: ``replies.NEXT_ANSWERS``)."""

    ACCEPT = "accept"
    DECLINE = "decline"
    ON_THE_WAY = "on_the_way"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"


_REFUSALS = {
    "not_found": {
        "en": "This link is not valid. Please use the link in your dispatch SMS.",
        "zh": "此链接无效，请使用派单短信中的链接。",
    },
    "expired": {
        "en": "This link has expired. Please ring the call centre if you still need the call.",
        "zh": "此链接已过期。如仍需处理该呼叫，请致电呼叫中心。",
    },
    "closed": {
        "en": "Call {call} is closed; it is no longer yours to answer.",
        "zh": "呼叫{call}已结束，您无需再处理。",
    },
    "not_yours": {
        "en": "Call {call} is no longer yours ({state}); nothing can be changed from this link.",
        "zh": "呼叫{call}已不再由您处理（{state}），此链接不能再作更改。",
    },
}


# How a carer's part in a call ended, as a refused link names it.
_PART_ENDED = {
    "en": {
        "declined": "you declined",
        "no_answer": "passed on: no answer in time",
        "unreachable": "passed on: your phone could not be reached",
        "stood_down": "you were stood down",
        "finished": "finished",
        "reported_done": "you reported it done; the desk will review it",
    },
    "zh": {
        "declined": "您已拒绝",
        "no_answer": "未及时接单，已转派",
        "unreachable": "短信未送达，已转派",
        "stood_down": "已通知您无需前往",
        "finished": "已完成",
        "reported_done": "您已报告完成，待接线员复核",
    },
}


class LinkRefusedError(Exception):
    """A link that may not show or change its call, with the HTTP status to answer."""

    def __init__(self, status: int, reason: str, language: str = "", **facts: str) -> None:
        self.status = status
        self.reason = reason
        self.language = language
        self.facts = facts
        super().__init__(reason)

    def message(self) -> str:
        """What the carer reads: in their language, or both when we do not know it."""
        texts = _REFUSALS[self.reason]
        languages = [self.language] if self.language in texts else ["zh", "en"]
        said = []
        for lang in languages:
            facts = dict(self.facts)
            if "state" in facts:
                facts["state"] = _PART_ENDED[lang].get(facts["state"], facts["state"])
            said.append(texts[lang].format_map(facts))
        return " / ".join(said)


@dataclass(frozen=True)
class LiveLink:
    """A link that still stands for the carer's active part in an open call."""

    link: links.CarerLink
    carer: CarerInfo
    call: Call
    household: HouseholdInfo
    assignment: Assignment


def _mine(call: Call, carer_id: int) -> Assignment | None:
    """The carer's latest part in the call (a carer paged twice has two)."""
    found = [a for a in call.assignments if a.carer_id == carer_id]
    return found[-1] if found else None


async def live_link(engine: AsyncEngine, clock: Clock, token: str, registry: Registry) -> LiveLink:
    """The call and carer ``token`` stands for, if it may still be used; else
    ``LinkRefusedError``: 404 not ours, 410 expired, 409 no longer the carer's call."""
    async with AsyncSession(engine) as session:
        key = await links.stored_key(session)
        try:
            if key is None:
                raise links.LinkError("no link has been made yet")
            link = links.read_token(key, token)
        except links.LinkError as error:
            raise LinkRefusedError(404, "not_found") from error
        carer = registry.carers.get(link.carer_id)
        if carer is None:
            raise LinkRefusedError(404, "not_found")
        if link.expired(clock.now()):
            raise LinkRefusedError(410, "expired", carer.language)
        call = await repository.load(session, link.call_id, registry.carer_codes, lock=False)
    mine = _mine(call, carer.id) if call is not None else None
    if call is None or mine is None:
        raise LinkRefusedError(404, "not_found", carer.language)
    if not call.is_open:
        raise LinkRefusedError(409, "closed", carer.language, call=str(call.id))
    if mine.state not in ACTIVE_ASSIGNMENT:
        ended = mine.state.value
        if call.state is CallState.AWAITING_REVIEW and mine.state is AssignmentState.FINISHED:
            ended = "reported_done"  # the call is open still, for the desk's review
        raise LinkRefusedError(409, "not_yours", carer.language, call=str(call.id), state=ended)
    return LiveLink(link, carer, call, household_of(registry, call), mine)


def _map_url(household: HouseholdInfo) -> str:
    """An https map of the door, for phones without a geo: handler."""
    lat, lon = f"{household.place.lat:.6f}", f"{household.place.lon:.6f}"
    return f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=18/{lat}/{lon}"


def page_data(live: LiveLink, now: datetime, zone: ZoneInfo) -> dict[str, Any]:
    """What the page shows of the call, in the carer's language; times are shown in the
    district's time zone (``timezone``), whatever the phone's own."""
    zone_year = now.astimezone(zone).year
    call, household, carer = live.call, live.household, live.carer
    names = CALL_TYPE_NAMES.get(carer.language, CALL_TYPE_NAMES["en"])
    place = household.place
    return {
        "call": call.id,
        "type": call.type.value,
        "type_name": names.get(call.type.value, call.type.value),
        "state": call.state.value,
        "opened_at": iso(call.opened_at),
        "household": household.code,
        "address": household.address,
        "lat": place.lat,
        "lon": place.lon,
        "map_url": _map_url(household),
        "geo_uri": f"geo:{place.lat:.6f},{place.lon:.6f}",
        "access_notes": household.access_notes,
        "residents": [
            {
                "name": note.name,
                "age": note.aged(zone_year).age,
                "mobility": note.mobility,
                "care_notes": note.care_notes,
            }
            for note in household.resident_notes
        ],
        "carer": {"code": carer.code, "name": carer.name, "language": carer.language},
        "mine": live.assignment.state.value,
        "buttons": list(NEXT_ANSWERS.get(live.assignment.state, ())),
        "outcomes": [o.value for o in Outcome],
        "link_expires_at": iso(live.link.expires),
        "now": iso(now),
        "timezone": zone.key,
    }


def _refusal_page(refused: LinkRefusedError) -> web.Response:
    language = refused.language or "zh"
    body = (
        f'<!doctype html><html lang="{language}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>Call centre</title><link rel="stylesheet" href="/carer/static/carer.css">'
        f'</head><body><main class="refused" data-reason="{refused.reason}">'
        f"<p>{escape(refused.message())}</p></main></body></html>"
    )
    return web.Response(
        status=refused.status,
        text=body,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _log_refusal(request: web.Request, refused: LinkRefusedError) -> None:
    # The token itself is a credential while it lives: never in the log.
    log.warning(
        "carer link refused (%d %s) from %s: %s",
        refused.status,
        refused.reason,
        request.remote or "?",
        refused.__cause__ or refused.facts,
    )


@routes.get(links.LINK_PATH + "{token}")
async def carer_page(request: web.Request) -> web.Response:
    """The call's page for the carer the link was sent to; a refusal page otherwise."""
    desk, engine, clock = request.app[DESK], request.app[DATABASE], request.app[CLOCK]
    registry = await desk.district.registry()
    try:
        live = await live_link(engine, clock, request.match_info["token"], registry)
    except LinkRefusedError as refused:
        _log_refusal(request, refused)
        return _refusal_page(refused)
    if not PAGE.is_file():
        raise web.HTTPNotFound(text=f"the carer page is missing: {PAGE}")
    now = clock.now()
    data = page_data(live, now, desk.district.zone)
    await audit.record(
        request,
        actor=f"carer:{live.carer.code}",
        household_id=live.household.id,
        action="read_call",
        detail={"call": live.call.id},
    )
    # "<" escaped: nothing in a note can close the script element it sits in.
    embedded = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    html = PAGE.read_text(encoding="utf-8").replace(_DATA_MARK, embedded)
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


async def _body(request: web.Request) -> bytes:
    """The body, read no further than one byte past the limit (a chunked body has no
    Content-Length to refuse it by)."""
    raw = b""
    while len(raw) <= MAX_ANSWER_BYTES:
        chunk = await request.content.read(MAX_ANSWER_BYTES + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    return raw


class LinkPath(Parameters):
    token: str = Field(description="the signed token of the dispatch SMS's link")


class AnswerBody(BaseModel):
    """A button pressed on the carer's page."""

    answer: PageAnswer
    outcome: Outcome = Field(Outcome.HELPED_AT_HOME, description="with resolved: how it ended")


class CallAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str
    outcome: str | None
    mine: str = Field(description="the carer's part in the call now")
    buttons: list[str] = Field(description="what the carer may press next")


class Answered(BaseModel):
    """What became of the answer, in the carer's language, and the call as it now is."""

    model_config = ConfigDict(extra="forbid")

    outcome: str
    message: str
    call: CallAfter


@routes.post(links.LINK_PATH + "{token}/answer")
@contract(
    access=Access.CARER_LINK,
    path=LinkPath,
    body=AnswerBody,
    answers={
        200: Answered,
        400: "not an answer the page sends",
        404: "not a valid link",
        409: Answered | ErrorBody,
        410: "the link has expired",
    },
    tag="carer page",
)
async def answer(request: web.Request) -> web.Response:
    """A button pressed on the page: ``{"answer": "accept", "outcome"?: "..."}``,
    applied as the carer exactly as the same SMS reply would be."""
    desk, engine = request.app[DESK], request.app[DATABASE]
    too_long = f"an answer is at most {MAX_ANSWER_BYTES} bytes"
    if request.content_length is not None and request.content_length > MAX_ANSWER_BYTES:
        raise bad_request(too_long)
    raw = await _body(request)
    if len(raw) > MAX_ANSWER_BYTES:
        raise bad_request(too_long)
    try:
        body = AnswerBody.model_validate_json(raw or b"{}")
    except ValidationError as error:
        problems = problems_of(AnswerBody, error)
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise bad_request(
            f'send JSON such as {{"answer": "accept"}}; {summary}', problems=problems
        ) from None
    registry = await desk.district.registry()
    try:
        live = await live_link(engine, request.app[CLOCK], request.match_info["token"], registry)
    except LinkRefusedError as refused:
        _log_refusal(request, refused)
        raise ApiError(refused.status, refused.reason, refused.message()) from None
    with logs.bound(call_id=live.call.id, household=live.household.code, carer=live.carer.code):
        handled = await sms_webhooks.apply_answer(
            desk,
            engine,
            registry,
            live.carer,
            live.call.id,
            Answer(body.answer),
            outcome=body.outcome,
            via="the carer page",
        )
        log.info(
            "carer %s pressed %s on call %d: %s",
            live.carer.code,
            body.answer.value,
            live.call.id,
            handled.outcome,
        )
    after = await _after(engine, live, registry)
    return web.json_response(
        {
            "outcome": handled.outcome,
            "message": handled.answer,
            "call": after,
        },
        status=409 if handled.outcome == "refused" else 200,
    )


async def _after(engine: AsyncEngine, live: LiveLink, registry: Registry) -> dict[str, Any]:
    """The call as it is now, as the page shows it after a button."""
    async with AsyncSession(engine) as session:
        fresh = await repository.load(session, live.call.id, registry.carer_codes, lock=False)
    call = fresh if fresh is not None else live.call
    mine = _mine(call, live.carer.id) or live.assignment
    still = call.is_open and mine.state in ACTIVE_ASSIGNMENT
    return {
        "state": call.state.value,
        "outcome": call.outcome.value if call.outcome else None,
        "mine": mine.state.value,
        "buttons": list(NEXT_ANSWERS.get(mine.state, ())) if still else [],
    }


@routes.get("/carer/static/{name}")
async def asset(request: web.Request) -> web.StreamResponse:
    """The carer page's script and style, nothing else."""
    return listed_file(request, CARER_PAGES, _ASSETS)
