"""The carer page behind the signed link in the dispatch SMS, end to end: a real
mosquitto, a real seeded SQLite file, the whole server on a virtual clock and its own
fake Twilio. The link in the page the carer's phone got opens the call; its buttons move
the call exactly as SMS replies do; a tampered, expired or no-longer-theirs link is
refused and changes nothing."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.replies import CONFIRMATIONS, NEXT_ANSWERS, Answer
from callcenter.fake_twilio import FakeTwilio
from callcenter.notify import links
from callcenter.store import models as m
from callcenter.store.db import create_engine
from callcenter.web.carer_page import PageAnswer
from tests.api_support import Api, Reply
from tests.fixtures.browser import OpenTab
from tests.fixtures.fake_twilio import fake_of
from tests.sms_support import paged

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _link_in(text: str, api: Api) -> str:
    found = re.search(re.escape(api.server.web_url) + r"/c/[A-Za-z0-9_=-]+", text)
    assert found is not None, f"no carer link in {text!r}"
    return found.group(0)


async def _dispatch_link(api: Api, fake: FakeTwilio, phone: str) -> str:
    """The link in the latest dispatch page the carer's phone got."""
    pages = [msg for msg in fake.sent_to(phone) if "/c/" in msg.body]
    assert pages, f"no dispatch page with a link reached {phone}"
    return _link_in(pages[-1].body, api)


async def _linked(api: Api, household: str = "H0001") -> tuple[int, str, str]:
    """Press the household's button: the call, the paged carer's code and their link."""
    call_id, carer, phone = await paged(api, household)
    fake = fake_of(api.server)
    for _ in range(50):
        if any("/c/" in msg.body for msg in fake.sent_to(phone)):
            break
        await fake.next_message()
    return call_id, carer, await _dispatch_link(api, fake, phone)


async def _key(api: Api) -> bytes:
    async with AsyncSession(api.server.engine) as session:
        key = await links.stored_key(session)
    assert key is not None, "a dispatch made the server's link key"
    return key


def _path(link: str) -> str:
    return "/c/" + link.rsplit("/c/", 1)[1]


async def _press(api: Api, link: str, answer: str, **extra: str) -> Reply:
    return await api.request(
        "POST", _path(link) + "/answer", who=None, json={"answer": answer, **extra}
    )


def _by(detail: dict[str, Any], carer: str) -> list[str]:
    return [h["action"] for h in detail["history"] if h["actor"] == f"carer:{carer}"]


async def test_the_dispatch_sms_carries_a_short_link_that_opens_the_call(api: Api) -> None:
    """Test that the dispatch page at the fake Twilio ends with the carer's link (a token
    under 40 characters), that it opens the call's page with the household, address, map
    and residents, and that the view is in the audit log as the carer reading the call."""
    call_id, carer, link = await _linked(api)
    token = link.rsplit("/", 1)[1]
    assert len(token) < 40
    page = await api.get(_path(link), who=None)
    assert page.status == 200, page
    assert page.headers["Content-Type"].startswith("text/html")
    assert f'"call": {call_id}' in page.body and '"household": "H0001"' in page.body
    assert "openstreetmap.org/?mlat=" in page.body and '"geo_uri": "geo:' in page.body
    assert f'"code": "{carer}"' in page.body and '"buttons": ["accept", "decline"]' in page.body
    assert "__CALL_DATA__" not in page.body
    audit = await api.get("/api/audit?household=H0001", who="sun.admin")
    assert audit.status == 200, audit
    reads = [e for e in audit.body["entries"] if e["actor"] == f"carer:{carer}"]
    assert [(e["action"], e["detail"]) for e in reads] == [("read_call", {"call": call_id})]


async def test_nobody_but_the_carer_sees_a_live_link(api: Api) -> None:
    """Test that the link's token is in the SMS the carer's phone got and nowhere an
    operator, supervisor or administrator can read it: the call's outbox rows show the
    link masked, and the audit row of the carer's view (stored and as GET /api/audit
    answers) names the path with the token masked; the link itself still works."""
    call_id, carer, link = await _linked(api)
    token = link.rsplit("/", 1)[1]
    assert (await api.get(_path(link), who=None)).status == 200
    assert (await _press(api, link, "accept")).status == 200

    for who in ("li.na", "zhao.min", "sun.admin"):
        reply = await api.get(f"/api/calls/{call_id}", who=who)
        assert reply.status == 200, reply
        shown = json.dumps(reply.body, ensure_ascii=False)
        assert token not in shown, who
        pages = [o["body"] for o in reply.body["outbox"] if "/c/" in o["body"]]
        assert pages and all(api.server.web_url + "/c/***" in body for body in pages), pages

    audit = await api.get("/api/audit?household=H0001", who="sun.admin")
    assert token not in json.dumps(audit.body)
    paths = [e["path"] for e in audit.body["entries"] if e["actor"] == f"carer:{carer}"]
    assert paths == ["/c/***"]
    async with AsyncSession(api.server.engine) as session:
        stored = (await session.scalars(select(m.AuditEntry.path))).all()
    assert stored and not any(token in path for path in stored), stored


async def test_the_page_moves_the_call_as_sms_replies_do(api: Api) -> None:
    """Test that accept, on scene and resolved pressed on the page accept the call, put
    the carer on scene and close it with the chosen outcome, each in the history as the
    carer; that each answer is confirmed in the carer's words; and that the link of the
    closed call then shows no call and changes nothing."""
    call_id, carer, link = await _linked(api)
    # An operator owns the call, so the carer's "done" closes it.
    assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200

    accepted = await _press(api, link, "accept")
    assert accepted.status == 200, accepted
    assert accepted.body["outcome"] == "accept" and str(call_id) in accepted.body["message"]
    assert accepted.body["call"]["state"] == "accepted"
    assert (await api.call(call_id))["state"] == "accepted"

    on_scene = await _press(api, link, "on_scene")
    assert on_scene.status == 200, on_scene
    assert on_scene.body["call"]["buttons"] == ["resolved"]
    assert (await api.call(call_id))["state"] == "on_scene"

    resolved = await _press(api, link, "resolved", outcome="taken_to_hospital")
    assert resolved.status == 200, resolved
    assert "taken to hospital" in resolved.body["message"] or "送医" in resolved.body["message"]
    detail = await api.call(call_id)
    assert (detail["state"], detail["outcome"]) == ("resolved", "taken_to_hospital")
    assert _by(detail, carer) == ["accepted", "on_scene", "resolved"]

    closed = await api.get(_path(link), who=None)
    assert closed.status == 409 and 'data-reason="closed"' in closed.body
    again = await _press(api, link, "accept")
    assert again.status == 409 and again.body["error"] == "closed"
    assert (await api.call(call_id))["history"] == detail["history"]


async def test_done_on_the_page_for_an_emergency_nobody_took_says_the_desk_will_review(
    api: Api,
) -> None:
    """Test that "resolved" pressed on the page of an emergency no operator owned leaves
    the call awaiting review, says so to the carer, and offers no more buttons."""
    call_id, carer, link = await _linked(api)
    assert (await _press(api, link, "on_scene")).status == 200
    done = await _press(api, link, "resolved", outcome="false_alarm")
    assert done.status == 200, done
    assert done.body["outcome"] == "reported_done"
    assert "复核" in done.body["message"] or "review" in done.body["message"], done.body
    assert done.body["call"] == {
        "state": "awaiting_review",
        "outcome": None,
        "mine": "finished",
        "buttons": [],
    }
    detail = await api.call(call_id)
    assert detail["state"] == "awaiting_review"
    assert detail["reported"]["outcome"] == "false_alarm"
    assert _by(detail, carer) == ["on_scene", "reported_done"]
    # The link now says the carer's part is done and the desk reviews it.
    page = await api.get(_path(link), who=None)
    assert page.status == 409 and 'data-reason="not_yours"' in page.body
    assert "待接线员复核" in page.body or "the desk will review it" in page.body, page.body


async def test_a_tampered_or_malformed_link_is_not_found(api: Api) -> None:
    """Test that a link with one character changed, cut short or made up is 404 for the
    page and for its buttons, and that the call does not move."""
    call_id, _, link = await _linked(api)
    token = link.rsplit("/", 1)[1]
    flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    for bad in (flipped, token[:-1], token + "A", "x" * len(token), "not a token"):
        page = await api.get(f"/c/{bad}", who=None)
        assert page.status == 404, (bad, page)
        assert 'data-reason="not_found"' in page.body
        pressed = await api.request("POST", f"/c/{bad}/answer", who=None, json={"answer": "accept"})
        assert pressed.status == 404, (bad, pressed)
    assert (await api.call(call_id))["state"] == "dispatched"


async def test_an_expired_link_is_gone(api: Api) -> None:
    """Test that 12 hours after the dispatch the link answers 410 with a page saying it
    expired, and its buttons change nothing."""
    call_id, _, link = await _linked(api)
    assert (await api.get(_path(link), who=None)).status == 200
    api.clock.advance(links.LINK_LIFETIME + timedelta(seconds=1))
    page = await api.get(_path(link), who=None)
    assert page.status == 410 and 'data-reason="expired"' in page.body
    pressed = await _press(api, link, "accept")
    assert pressed.status == 410 and pressed.body["error"] == "expired"
    by_carers = [h for h in (await api.call(call_id))["history"] if h["actor"].startswith("carer:")]
    assert by_carers == []


async def test_a_stood_down_carers_link_is_refused(api: Api) -> None:
    """Test that once an operator stands the carer down, their link shows that the call
    is no longer theirs (409) and pressing accept on it changes nothing."""
    call_id, carer, link = await _linked(api)
    stood = await api.post(
        f"/api/calls/{call_id}/carers/{carer}/stand-down", {"why": "family is there"}
    )
    assert stood.status == 200, stood
    before = (await api.call(call_id))["history"]
    page = await api.get(_path(link), who=None)
    assert page.status == 409 and 'data-reason="not_yours"' in page.body
    assert "stood down" in page.body or "无需前往" in page.body
    pressed = await _press(api, link, "accept")
    assert pressed.status == 409 and pressed.body["error"] == "not_yours"
    assert (await api.call(call_id))["history"] == before


async def test_a_declined_link_is_refused_and_the_next_carer_has_their_own(api: Api) -> None:
    """Test that declining on the page pages another carer, that the declined link is
    then refused, and that the next carer's link works for them only."""
    call_id, carer, link = await _linked(api)
    declined = await _press(api, link, "decline")
    assert declined.status == 200 and declined.body["call"]["buttons"] == []
    assert (await _press(api, link, "accept")).status == 409
    detail = await api.call(call_id)
    assignments = detail["assignments"]
    assert [a["state"] for a in assignments if a["carer"] == carer] == ["declined"]
    others = [a for a in assignments if a["carer"] != carer]
    assert others, "declining pages the next carer"
    assert _by(detail, carer) == ["declined"]


async def test_a_link_never_acts_for_another_call(api: Api) -> None:
    """Test that two carers paged to two calls each move only their own call with their
    link, and that a token re-signed for the other call without the key is refused."""
    first, carer1, link1 = await _linked(api, "H0001")
    second, carer2, link2 = await _linked(api, "H0002")
    assert carer1 != carer2 and link1 != link2
    assert (await _press(api, link1, "accept")).status == 200
    assert (await api.call(first))["state"] == "accepted"
    assert (await api.call(second))["state"] == "dispatched"
    assert _by(await api.call(second), carer1) == []

    # The first carer's link re-made for the second call, signed with a guessed key.
    fields = links.read_token(await _key(api), link1.rsplit("/", 1)[1])
    assert fields.call_id == first
    forged = links.make_token(b"guessed-key", replace(fields, call_id=second))
    pressed = await api.request("POST", f"/c/{forged}/answer", who=None, json={"answer": "accept"})
    assert pressed.status == 404
    assert (await api.call(second))["state"] == "dispatched"


async def test_a_page_answer_must_be_one_of_the_buttons(api: Api) -> None:
    """Test that an unknown answer, an unknown outcome, a body that is not JSON and an
    oversized body are 400 with the answers listed, and change nothing."""
    call_id, _, link = await _linked(api)
    assert (await _press(api, link, "maybe")).status == 400
    bad_outcome = await _press(api, link, "accept", outcome="abducted")
    assert bad_outcome.status == 400 and "helped_at_home" in bad_outcome.body["message"]
    not_json = await api.request("POST", _path(link) + "/answer", who=None, data="accept")
    assert not_json.status == 400
    huge = await api.request(
        "POST", _path(link) + "/answer", who=None, json={"answer": "accept", "x": "y" * 5000}
    )
    assert huge.status == 400 and "at most" in huge.body["message"]
    assert (await api.call(call_id))["state"] == "dispatched"


@pytest.mark.page
async def test_a_carer_opens_the_link_in_a_browser_and_accepts(api: Api, open_tab: OpenTab) -> None:
    """Test in headless Chromium that the link from the dispatch SMS shows the call with
    its address and residents, and that pressing accept accepts the call as the carer."""
    call_id, carer, link = await _linked(api)
    tab = await open_tab(locale="zh-CN", viewport=(390, 844))
    page = tab.page
    await page.goto(link)
    await expect(page.locator("#title")).to_contain_text(str(call_id))
    await expect(page.locator("#title")).to_contain_text("H0001")
    await expect(page.locator("#address")).not_to_be_empty()
    await expect(page.locator("[data-answer=accept]")).to_be_visible()
    await expect(page.locator("[data-answer=on_scene]")).to_be_hidden()
    await page.locator("[data-answer=accept]").click()
    await expect(page.locator("#message")).to_contain_text(str(call_id))
    await expect(page.locator("[data-answer=on_scene]")).to_be_visible()
    await expect(page.locator("[data-answer=accept]")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "carer-page.png"), full_page=True)
    assert tab.errors == []
    detail = await api.call(call_id)
    assert detail["state"] == "accepted"
    assert _by(detail, carer) == ["accepted"]


async def test_a_chunked_oversized_answer_is_refused(api: Api) -> None:
    """Test that a body sent without Content-Length (chunked) is cut off at the limit
    too, and changes nothing."""
    call_id, _, link = await _linked(api)

    async def chunks() -> Any:
        for _ in range(10):
            yield b'{"answer": "accept", "x": "' + b"y" * 500

    async with api.http.post(_path(link) + "/answer", data=chunks()) as reply:
        assert reply.status == 400
        assert "at most" in (await reply.json())["message"]
    assert (await api.call(call_id))["state"] == "dispatched"


async def test_the_link_key_is_made_once_and_read_once_per_transaction(
    seeded_database_url: str,
) -> None:
    """Test that the key signing carers' links is made on first use and kept, and that a
    transaction paging several carers (a batch of presses) reads it only once."""
    engine = create_engine(seeded_database_url)
    reads: list[str] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "server_secrets" in statement:
            reads.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    try:
        async with AsyncSession(engine) as session, session.begin():
            made = await links.link_key(session, now)
            for _ in range(4):  # four more pages in the same transaction
                assert await links.link_key(session, now) == made
        in_first = len(reads)
        async with AsyncSession(engine) as session:
            stored = await links.stored_key(session)
            again = await links.link_key(session, now)
    finally:
        await engine.dispose()
    assert in_first == 1
    assert stored == again == made
    assert len(made) == 32


def test_every_answer_the_page_offers_is_a_button_it_has() -> None:
    """Test that each button of the carer page sends an answer, and that every answer
    offered in some state of a carer's part is one of the page's buttons."""
    offered = {answer for answers in NEXT_ANSWERS.values() for answer in answers}
    assert {Answer(button.value) for button in PageAnswer} == offered
    assert offered <= set(CONFIRMATIONS)
