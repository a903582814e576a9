"""The fake Twilio's page for calls: each ringing or live call with buttons to answer,
refuse (busy), press keys and hang up as its phone, what was said on it (escaped), and
``GET /calls.json``; its buttons act only from the page itself."""

from __future__ import annotations

import html
import re

import aiohttp
import pytest
from twilio.rest import Client

from callcenter.fake_twilio import FakeTwilio
from tests.fixtures.browser import OpenTab
from tests.test_fake_twilio_voice import CARER, DESK, Centre, centre

__all__ = ["centre"]  # the fixture, shared with the voice tests

HOSTILE = "<script>alert('x')</script> & 呼叫12"


def _token(page: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', page)
    assert found is not None, "the page's forms carry its token"
    return found.group(1)


async def _get(fake: FakeTwilio, path: str) -> str:
    async with aiohttp.ClientSession(base_url=fake.base_url) as http, http.get(path) as answer:
        assert answer.status == 200
        return await answer.text()


async def _act(
    fake: FakeTwilio, fields: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(base_url=fake.base_url) as http,
        http.post("/call", data=fields, headers=headers or {}, allow_redirects=False) as answer,
    ):
        return answer.status, await answer.text()


async def _ring(client: Client, centre: Centre) -> str:
    centre.twiml["/voice/answer"] = (
        f'<Response><Gather numDigits="1" action="/voice/gather"><Say language="cmn-CN">'
        f"{html.escape(HOSTILE)}</Say></Gather></Response>"
    )
    centre.twiml["/voice/gather"] = "<Response><Say>Thank you</Say></Response>"
    call = await client.calls.create_async(to=CARER, from_=DESK, url=centre.url("/voice/answer"))
    assert call.sid is not None
    return call.sid


async def test_the_pages_buttons_answer_and_press_keys_as_the_phone(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that GET / shows a ringing call with answer, busy and hang-up buttons, that
    its answer button (the page's token) answers it, that the live call then shows a
    keypad whose 1 reaches the Gather's action, that what was said is shown escaped, and
    that GET /calls.json lists the call with what was said and pressed."""
    sid = await _ring(twilio_client, centre)
    await fake_twilio.wait_for_status(sid, "ringing")
    page = await _get(fake_twilio, "/")
    assert f'id="{sid}"' in page
    for action in ("answer", "busy", "hang_up"):
        assert f'name="action" value="{action}"' in page
    token = _token(page)

    assert (await _act(fake_twilio, {"sid": sid, "action": "answer", "token": token}))[0] == 303
    await fake_twilio.wait_for_speech(sid, "呼叫12")
    page = await _get(fake_twilio, "/")
    assert 'class="keypad"' in page and 'name="action" value="answer"' not in page
    assert "<script>alert" not in page and html.escape(HOSTILE) in page
    status, _ = await _act(
        fake_twilio, {"sid": sid, "action": "press", "digits": "1", "token": token}
    )
    assert status == 303
    call = await fake_twilio.wait_for_status(sid, "completed")
    assert call.digits == ["1"]
    (gathered,) = centre.to("/voice/gather")
    assert gathered.form["Digits"] == "1" and gathered.signed

    async with (
        aiohttp.ClientSession(base_url=fake_twilio.base_url) as http,
        http.get("/calls.json") as answer,
    ):
        listing = await answer.json()
    (listed,) = listing["calls"]
    assert (listed["sid"], listed["status"], listed["digits"]) == (sid, "completed", ["1"])
    assert listed["spoken"][0] == {"text": HOSTILE, "language": "cmn-CN"}
    assert listed["statuses"] == call.statuses


async def test_the_pages_buttons_act_only_from_the_page(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that POST /call is refused (403, the phone still rings) without the page's
    token or from another site's page, that an unknown action is 400 and an unknown call
    404, and that the busy button refuses the call."""
    sid = await _ring(twilio_client, centre)
    await fake_twilio.wait_for_status(sid, "ringing")
    token = _token(await _get(fake_twilio, "/"))
    answer = {"sid": sid, "action": "answer"}
    assert (await _act(fake_twilio, answer))[0] == 403
    assert (await _act(fake_twilio, {**answer, "token": token[:-1] + "x"}))[0] == 403
    foreign = {"Origin": "http://attacker.example"}
    assert (await _act(fake_twilio, {**answer, "token": token}, foreign))[0] == 403
    call = fake_twilio.call(sid)
    assert call is not None and call.status == "ringing"

    assert (await _act(fake_twilio, {**answer, "action": "dance", "token": token}))[0] == 400
    missing = {**answer, "sid": "CA" + "0" * 32, "token": token}
    assert (await _act(fake_twilio, missing))[0] == 404
    busy = {**answer, "action": "busy", "token": token}
    assert (await _act(fake_twilio, busy, {"Origin": fake_twilio.base_url}))[0] == 303
    await fake_twilio.wait_for_status(sid, "busy")
    status, text = await _act(fake_twilio, busy)
    assert status == 409 and "not ringing" in text


@pytest.mark.page
async def test_a_person_answers_and_presses_1_in_chromium(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre, open_tab: OpenTab
) -> None:
    """Test that in Chromium the page's answer button answers the ringing call and its
    keypad's 1 reaches the Gather's action, with no script error on the page."""
    sid = await _ring(twilio_client, centre)
    await fake_twilio.wait_for_status(sid, "ringing")
    tab = await open_tab(locale="en-US")
    await tab.page.goto(fake_twilio.page_url)
    await tab.page.locator(f'tr[id="{sid}"] button[value="answer"]').click()
    await fake_twilio.wait_for_speech(sid, "呼叫12")
    await tab.page.goto(fake_twilio.page_url)
    await tab.page.locator(f'tr[id="{sid}"] form.keypad button[value="1"]').click()
    call = await fake_twilio.wait_for_status(sid, "completed")
    assert call.digits == ["1"]
    assert tab.errors == []
