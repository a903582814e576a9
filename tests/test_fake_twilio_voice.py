"""The fake Twilio's voice side, driven by the real twilio library's async client, with a
small aiohttp app standing in for the call centre's voice webhooks (it checks every
signature with twilio's own RequestValidator)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Gather, VoiceResponse

from callcenter.clock import ManualClock
from callcenter.fake_twilio import FakeTwilio, Spoken

CARER = "+8613800138000"
OTHER_CARER = "+8613900139000"
DESK = "+8610955500"
CALL_SID = re.compile(r"CA[0-9a-f]{32}")
EVERY_EVENT = ["initiated", "ringing", "answered", "completed"]
PROMPT = "呼叫12：王芳摔倒了。按1接单，按2拒绝"


@dataclass
class Post:
    """One request the fake made to the centre's webhooks."""

    path: str
    form: dict[str, str]
    signed: bool


class Centre:
    """Stands in for the call centre's voice webhooks: answers each path with the TwiML
    set for it (an empty <Response/> otherwise) and keeps every post with whether its
    X-Twilio-Signature checks against the account's auth token."""

    def __init__(self, auth_token: str) -> None:
        self.validator = RequestValidator(auth_token)
        self.twiml: dict[str, str] = {}
        self.posts: list[Post] = []
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    def to(self, path: str) -> list[Post]:
        return [post for post in self.posts if post.path == path]

    async def take(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        signed = self.validator.validate(str(request.url), form, signature)
        self.posts.append(Post(request.path, form, signed))
        if request.path.startswith("/voice/status"):
            return web.Response(status=204)
        return web.Response(
            text=self.twiml.get(request.path, "<Response/>"), content_type="text/xml"
        )


@pytest.fixture
async def centre(fake_twilio: FakeTwilio) -> AsyncIterator[Centre]:
    centre = Centre(fake_twilio.auth_token)
    app = web.Application()
    app.router.add_post("/{tail:.*}", centre.take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    centre.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield centre
    finally:
        await runner.cleanup()


def _prompt(action: str = "/voice/gather", timeout: int = 5) -> str:
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=action, timeout=timeout, action_on_empty_result=True)
    gather.say(PROMPT, language="cmn-CN")
    response.append(gather)
    return str(response)


def _said(*texts: str, hang_up: bool = True) -> str:
    response = VoiceResponse()
    for text in texts:
        response.say(text, language="en-US")
    if hang_up:
        response.hangup()
    return str(response)


async def place_call(client: Client, centre: Centre, to: str = CARER, **extra: object) -> str:
    """A call placed as the server places one: TwiML from /voice/answer, statuses to
    /voice/status."""
    call = await client.calls.create_async(
        to=to,
        from_=DESK,
        url=centre.url("/voice/answer"),
        status_callback=centre.url("/voice/status"),
        **extra,
    )
    assert call.sid is not None
    return call.sid


async def test_a_carer_rung_hears_the_prompt_presses_1_and_every_status_is_reported(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a call created through the API rings the phone, that answering it asks
    the call's Url for TwiML with a signed POST of the call's fields, that the Say is
    heard in its language, that pressing 1 posts Digits=1 to the Gather's action and its
    TwiML runs, that the call keeps when it reached each status, and that every status
    asked for is posted, signed, in order, with SequenceNumber 0.. and the duration on
    completion."""
    centre.twiml["/voice/answer"] = _prompt()
    centre.twiml["/voice/gather"] = _said("Accepted: call 12 is yours.")
    created = await twilio_client.calls.create_async(
        to=CARER,
        from_=DESK,
        url=centre.url("/voice/answer"),
        status_callback=centre.url("/voice/status"),
        status_callback_event=EVERY_EVENT,
        timeout=20,
    )
    assert created.sid is not None and CALL_SID.fullmatch(created.sid)
    assert (created.status, created.direction, created.to, created._from) == (
        "queued",
        "outbound-api",
        CARER,
        DESK,
    )
    assert created.account_sid == fake_twilio.account_sid

    rung = await fake_twilio.next_call(timeout=2)
    assert rung.sid == created.sid
    await fake_twilio.wait_for_status(rung.sid, "ringing")
    assert (await twilio_client.calls(rung.sid).fetch_async()).status == "ringing"
    await fake_twilio.answer(rung.sid)
    await fake_twilio.press(rung.sid, "1")
    call = await fake_twilio.wait_for_status(rung.sid, "completed")

    assert call.statuses == ["queued", "initiated", "ringing", "in-progress", "completed"]
    # When each status was reached, in order (bench/voice.py times rings by "ringing").
    assert list(call.reached) == call.statuses
    assert list(call.reached.values()) == sorted(call.reached.values())
    assert (call.reached["queued"], call.reached["initiated"]) == (
        call.date_created,
        call.start_time,
    )
    assert (call.reached["in-progress"], call.reached["completed"]) == (
        call.answered_at,
        call.end_time,
    )
    assert call.spoken == [
        Spoken(PROMPT, "cmn-CN"),
        Spoken("Accepted: call 12 is yours.", "en-US"),
    ]
    assert call.digits == ["1"]
    (answer,) = centre.to("/voice/answer")
    assert answer.signed
    assert (answer.form["CallSid"], answer.form["CallStatus"]) == (call.sid, "in-progress")
    assert (answer.form["To"], answer.form["From"], answer.form["Direction"]) == (
        CARER,
        DESK,
        "outbound-api",
    )
    assert answer.form["AccountSid"] == fake_twilio.account_sid
    (gathered,) = centre.to("/voice/gather")
    assert gathered.signed and gathered.form["Digits"] == "1"
    assert gathered.form["CallSid"] == call.sid

    reports = centre.to("/voice/status")
    assert all(report.signed for report in reports)
    assert [(r.form["CallStatus"], r.form["SequenceNumber"]) for r in reports] == [
        ("initiated", "0"),
        ("ringing", "1"),
        ("in-progress", "2"),
        ("completed", "3"),
    ]
    final = reports[-1].form
    assert final["CallDuration"] == str(call.duration) and "Timestamp" in final
    assert (final["CallSid"], final["ApiVersion"]) == (call.sid, "2010-04-01")
    fetched = await twilio_client.calls(call.sid).fetch_async()
    assert (fetched.status, fetched.duration) == ("completed", str(call.duration))
    assert fetched.end_time is not None and fetched.start_time is not None


@pytest.mark.parametrize(
    ("behaviour", "final"),
    [("busy", "busy"), ("fail", "failed"), ("no_answer", "no-answer")],
)
async def test_a_planned_phone_ends_the_call_its_way_and_only_that_is_reported(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre, behaviour: str, final: str
) -> None:
    """Test that a phone planned busy, fail or no_answer ends the call with that status,
    that its TwiML is never asked for, and that without StatusCallbackEvent only the
    final status is posted (SequenceNumber 0)."""
    fake_twilio.plan_phone(CARER, behaviour)
    sid = await place_call(twilio_client, centre)
    call = await fake_twilio.wait_for_status(sid, final)
    assert call.statuses == ["queued", "initiated", "ringing", final]
    assert centre.to("/voice/answer") == []
    ((report),) = centre.to("/voice/status")
    assert report.signed
    assert (report.form["CallStatus"], report.form["SequenceNumber"]) == (final, "0")
    assert report.form["CallDuration"] == "0"
    with pytest.raises(LookupError, match="without in-progress"):
        await fake_twilio.wait_for_status(sid, "in-progress")


async def test_hooks_reject_hang_up_and_a_ring_that_runs_out(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that reject ends a ringing call busy, that hang_up ends a live call
    completed (mid-Pause), that an unanswered phone gives no-answer after the call's
    Timeout, and that a phone planned answer_after picks up by itself."""
    rejected = await place_call(twilio_client, centre)
    await fake_twilio.reject(rejected)
    assert (await fake_twilio.wait_for_status(rejected, "busy")).status == "busy"

    centre.twiml["/voice/answer"] = '<Response><Say>hello</Say><Pause length="30"/></Response>'
    fake_twilio.plan_phone(OTHER_CARER, "answer_after:0.1")
    live = await place_call(twilio_client, centre, to=OTHER_CARER)
    await fake_twilio.wait_for_speech(live, "hello")
    await fake_twilio.hang_up(live)
    call = await fake_twilio.wait_for_status(live, "completed")
    assert call.spoken == [Spoken("hello")]
    with pytest.raises(ValueError, match="already ended"):
        await fake_twilio.hang_up(live)

    unanswered = await place_call(twilio_client, centre, timeout=1)
    call = await fake_twilio.wait_for_status(unanswered, "no-answer", timeout=5)
    assert call.answered_at is None and call.duration == 0
    with pytest.raises(ValueError, match="not ringing"):
        await fake_twilio.answer(unanswered)
    with pytest.raises(ValueError, match="answer_after takes seconds"):
        fake_twilio.plan_phone(CARER, "answer_after:soon")
    with pytest.raises(LookupError):
        await fake_twilio.answer("CA" + "0" * 32)


async def test_no_key_repeats_the_prompt_and_an_empty_gather_reaches_its_action(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a Gather that hears nothing posts Digits="" with actionOnEmptyResult,
    that a Redirect asks the next URL, and that TwiML that runs out completes the call;
    a Gather without actionOnEmptyResult falls through to the next verb."""
    centre.twiml["/voice/answer"] = _prompt(timeout=1)
    centre.twiml["/voice/gather"] = (
        '<Response><Gather numDigits="1" timeout="1"><Say>again</Say></Gather>'
        "<Redirect>/voice/goodbye</Redirect></Response>"
    )
    centre.twiml["/voice/goodbye"] = _said("goodbye", hang_up=False)
    fake_twilio.plan_phone(CARER, "answer")
    sid = await place_call(twilio_client, centre)
    call = await fake_twilio.wait_for_status(sid, "completed", timeout=10)
    assert [said.text for said in call.spoken] == [PROMPT, "again", "goodbye"]
    (empty,) = centre.to("/voice/gather")
    assert empty.form["Digits"] == "" and empty.signed
    (goodbye,) = centre.to("/voice/goodbye")
    assert goodbye.signed and goodbye.form["CallSid"] == sid
    assert call.digits == []


async def test_the_api_ends_cancels_and_redirects_calls(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that update_async(status="canceled") ends a ringing call canceled, that
    Twiml redirects a live call, that status="completed" hangs it up, and that a call
    that is not up cannot be redirected (21220)."""
    ringing = await place_call(twilio_client, centre)
    await fake_twilio.wait_for_status(ringing, "ringing")
    canceled = await twilio_client.calls(ringing).update_async(status="canceled")
    assert canceled.status == "canceled"
    assert (await fake_twilio.wait_for_status(ringing, "canceled")).answered_at is None

    centre.twiml["/voice/answer"] = '<Response><Pause length="30"/></Response>'
    fake_twilio.plan_phone(CARER, "answer")
    live = await place_call(twilio_client, centre)
    await fake_twilio.wait_for_status(live, "in-progress")
    await twilio_client.calls(live).update_async(
        twiml='<Response><Say language="cmn-CN">已经有人接单</Say><Pause length="30"/></Response>'
    )
    call = await fake_twilio.wait_for_speech(live, "已经有人接单")
    assert call.spoken == [Spoken("已经有人接单", "cmn-CN")]
    ended = await twilio_client.calls(live).update_async(status="completed")
    assert ended.status == "completed"
    await fake_twilio.wait_for_status(live, "completed")

    with pytest.raises(TwilioRestException) as caught:
        await twilio_client.calls(live).update_async(url=centre.url("/voice/answer"))
    assert (caught.value.status, caught.value.code) == (400, 21220)
    with pytest.raises(TwilioRestException) as caught:
        await twilio_client.calls("CA" + "0" * 32).fetch_async()
    assert (caught.value.status, caught.value.code) == (404, 20404)


async def test_create_refuses_what_twilio_refuses_and_plans_failures(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a create without To (21201), with a To that is not E.164 (21211),
    without Url or Twiml (21205), or with a bad Timeout (20001) is refused and rings
    nobody, and that fail_next answers the next call creation with its error."""
    answer = centre.url("/voice/answer")
    refused = [
        ({"to": "", "from_": DESK, "url": answer}, 21201),
        ({"to": "13800138000", "from_": DESK, "url": answer}, 21211),
        ({"to": CARER, "from_": DESK}, 21205),
        ({"to": CARER, "from_": DESK, "url": "ftp://example.org/x"}, 21205),
        ({"to": CARER, "from_": DESK, "url": answer, "timeout": 0}, 20001),
    ]
    for fields, code in refused:
        with pytest.raises(TwilioRestException) as caught:
            await twilio_client.calls.create_async(**fields)
        assert (caught.value.status, caught.value.code) == (400, code), fields
    fake_twilio.fail_next(status=429, code=20429)
    with pytest.raises(TwilioRestException) as caught:
        await place_call(twilio_client, centre)
    assert caught.value.code == 20429
    assert fake_twilio.voice_calls() == []
    with pytest.raises(TimeoutError):
        await fake_twilio.next_call(timeout=0.05)


async def test_list_filters_and_pages_newest_first(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that list_async filters by To and Status and pages newest first, as the
    sender's reconciliation reads it."""
    fake_twilio.plan_phone(OTHER_CARER, "busy")
    to_carer = [await place_call(twilio_client, centre) for _ in range(3)]
    other = await place_call(twilio_client, centre, to=OTHER_CARER)
    await fake_twilio.wait_for_status(other, "busy")
    listed = await twilio_client.calls.list_async(to=CARER, page_size=2)
    assert [call.sid for call in listed] == list(reversed(to_carer))
    first_page = await twilio_client.calls.page_async(to=CARER, page_size=2)
    assert first_page.next_page_url is not None
    busy = await twilio_client.calls.list_async(status="busy")
    assert [call.sid for call in busy] == [other]
    everything = await twilio_client.calls.list_async()
    assert [call.sid for call in everything] == [other, *reversed(to_carer)]
    assert [call.sid for call in fake_twilio.calls_to(CARER)] == to_carer


async def test_on_a_manual_clock_calls_wait_in_virtual_seconds_and_say_when_quiet(
    centre: Centre,
) -> None:
    """Test that a fake on a ManualClock rings, pauses and waits for keys on that clock:
    nothing times out while the clock stands, ``next_deadline`` names the moment the
    next wait ends, and ``quiet`` returns once every call waits on the clock or on a
    phone with each status it had to post answered (what a simulation on virtual time
    needs before it moves the clock)."""
    start = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    clock = ManualClock(start)
    async with FakeTwilio(host="127.0.0.1", port=0, clock=clock) as fake:
        centre.validator = RequestValidator(fake.auth_token)
        client = Client(fake.account_sid, fake.auth_token, http_client=AsyncTwilioHttpClient())
        client.api.base_url = fake.base_url
        try:
            centre.twiml["/voice/answer"] = _prompt(timeout=8)
            events = {"timeout": 20, "status_callback_event": EVERY_EVENT}
            rung_out = await place_call(client, centre, **events)
            answered = await place_call(client, centre, to=OTHER_CARER, **events)
            await fake.quiet()
            assert [c.status for c in fake.placed()] == ["ringing", "ringing"]
            statuses = [p.form["CallStatus"] for p in centre.to("/voice/status")]
            assert sorted(statuses) == ["initiated", "initiated", "ringing", "ringing"]
            # Both ring out 20 virtual seconds after they were placed, and not before.
            assert fake.next_deadline() == start + timedelta(seconds=20)
            await asyncio.sleep(0.2)
            assert fake.call(rung_out).status == "ringing"  # type: ignore[union-attr]

            await fake.answer(answered)
            await fake.quiet()
            call = fake.call(answered)
            assert call is not None and call.spoken == [Spoken(PROMPT, "cmn-CN")]
            assert fake.listening(answered)
            # Its Gather waits 8 s from now; the other call still rings until 20 s.
            assert fake.next_deadline() == start + timedelta(seconds=8)

            clock.advance(timedelta(seconds=8))
            await fake.quiet()
            (empty,) = centre.to("/voice/gather")
            assert empty.form["Digits"] == "" and not fake.listening(answered)
            assert fake.call(answered).status == "completed"  # type: ignore[union-attr]
            assert fake.call(rung_out).status == "ringing"  # type: ignore[union-attr]

            clock.advance(timedelta(seconds=12))
            await fake.quiet()
            assert fake.call(rung_out).statuses[-1] == "no-answer"  # type: ignore[union-attr]
            assert fake.next_deadline() is None
        finally:
            await client.http_client.close()
