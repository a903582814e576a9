"""The fake Twilio server, driven by the real twilio library's async client."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from callcenter.clock import ManualClock
from callcenter.fake_twilio import FakeTwilio

CARER = "+8613800138000"
DESK = "+8610955500"
SID = re.compile(r"SM[0-9a-f]{32}")


async def test_create_message_is_recorded_with_its_fields(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that create_async returns a message with a valid SID and the fake records it."""
    created = await twilio_client.messages.create_async(
        to=CARER,
        from_=DESK,
        body="Call 12: Wang Fang, 3 Lotus Lane. Reply 12a to accept.",
        status_callback="http://127.0.0.1:9/sms/status",
    )
    assert SID.fullmatch(created.sid)
    assert created.status == "queued"
    assert created.to == CARER
    assert created.from_ == DESK
    assert created.body.startswith("Call 12:")
    assert created.direction == "outbound-api"
    assert created.account_sid == fake_twilio.account_sid
    assert created.num_segments == "1"
    assert created.date_created is not None

    recorded = await fake_twilio.next_message(timeout=1)
    assert recorded.sid == created.sid
    assert (recorded.to, recorded.from_) == (CARER, DESK)
    assert recorded.body == created.body
    assert recorded.status_callback == "http://127.0.0.1:9/sms/status"
    assert fake_twilio.messages == [recorded]


async def test_wrong_credentials_are_refused_with_20003(fake_twilio: FakeTwilio) -> None:
    """Test that a client with the wrong auth token gets TwilioRestException code 20003."""
    client = Client(fake_twilio.account_sid, "wrong-token", http_client=AsyncTwilioHttpClient())
    client.api.base_url = fake_twilio.base_url
    try:
        with pytest.raises(TwilioRestException) as caught:
            await client.messages.create_async(to=CARER, from_=DESK, body="hello")
    finally:
        await client.http_client.close()
    assert caught.value.status == 401
    assert caught.value.code == 20003
    assert fake_twilio.messages == []


@pytest.mark.parametrize("to", ["13800138000", "+86-138", "+1234567", "+0123456789"])
async def test_invalid_to_is_refused_with_21211(
    fake_twilio: FakeTwilio, twilio_client: Client, to: str
) -> None:
    """Test that a To that is not E.164 gets TwilioRestException code 21211 and no message."""
    with pytest.raises(TwilioRestException) as caught:
        await twilio_client.messages.create_async(to=to, from_=DESK, body="hello")
    assert caught.value.status == 400
    assert caught.value.code == 21211
    assert fake_twilio.messages == []


async def test_missing_body_is_refused_with_21602(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that a create without a body gets code 21602."""
    with pytest.raises(TwilioRestException) as caught:
        await twilio_client.messages.create_async(to=CARER, from_=DESK)
    assert caught.value.code == 21602
    assert fake_twilio.messages == []


async def test_planned_failures_come_first_then_success(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that planned 429/20429 and 21211 failures answer the next creates, in order."""
    fake_twilio.fail_next(status=429, code=20429, times=2)
    fake_twilio.fail_next(status=400, code=21211)
    for status, code in ((429, 20429), (429, 20429), (400, 21211)):
        with pytest.raises(TwilioRestException) as caught:
            await twilio_client.messages.create_async(to=CARER, from_=DESK, body="hello")
        assert (caught.value.status, caught.value.code) == (status, code)
    assert fake_twilio.messages == []

    created = await twilio_client.messages.create_async(to=CARER, from_=DESK, body="hello")
    assert [m.sid for m in fake_twilio.messages] == [created.sid]


async def test_list_filters_by_to_and_date_sent_after_across_pages() -> None:
    """Test that list_async by To and date_sent_after returns exactly the right messages
    when they span several pages."""
    clock = ManualClock(datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
    async with FakeTwilio(clock=clock) as fake:
        client = Client(fake.account_sid, fake.auth_token, http_client=AsyncTwilioHttpClient())
        client.api.base_url = fake.base_url
        try:
            send = client.messages.create_async
            await send(to=CARER, from_=DESK, body="before the cut-off")
            await send(to="+8613900139000", from_=DESK, body="another carer, before")
            clock.advance(timedelta(minutes=5))
            cut_off = clock.now()
            wanted = []
            for n in range(5):
                wanted.append((await send(to=CARER, from_=DESK, body=f"after {n}")).sid)
                await send(to="+8613900139000", from_=DESK, body=f"another carer {n}")
                clock.advance(timedelta(seconds=30))

            listed = await client.messages.list_async(
                to=CARER, date_sent_after=cut_off, page_size=2
            )
            first_page = await client.messages.page_async(
                to=CARER, date_sent_after=cut_off, page_size=2
            )
        finally:
            await client.http_client.close()
    assert len(first_page._payload["messages"]) == 2
    assert first_page.next_page_url is not None
    # Newest first, as Twilio lists them.
    assert [m.sid for m in listed] == list(reversed(wanted))
    assert all(m.to == CARER and m.date_sent >= cut_off for m in listed)


async def test_fetch_by_sid_and_unknown_sid(fake_twilio: FakeTwilio, twilio_client: Client) -> None:
    """Test that fetch_async finds a created message by SID and an unknown SID is 20404."""
    created = await twilio_client.messages.create_async(to=CARER, from_=DESK, body="hello")
    fetched = await twilio_client.messages(created.sid).fetch_async()
    assert (fetched.sid, fetched.to, fetched.body) == (created.sid, CARER, "hello")
    assert fetched.status == "sent"
    assert fetched.date_sent is not None

    with pytest.raises(TwilioRestException) as caught:
        await twilio_client.messages("SM" + "0" * 32).fetch_async()
    assert (caught.value.status, caught.value.code) == (404, 20404)


async def test_next_message_times_out_when_nothing_arrives(fake_twilio: FakeTwilio) -> None:
    """Test that next_message raises TimeoutError when no message arrives in time."""
    with pytest.raises(TimeoutError):
        await fake_twilio.next_message(timeout=0.05)


async def test_next_message_waits_for_a_message_still_to_come(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that next_message, awaited before the create, returns the message when it comes."""
    waiting = asyncio.create_task(fake_twilio.next_message(timeout=2))
    await asyncio.sleep(0)
    created = await twilio_client.messages.create_async(to=CARER, from_=DESK, body="hi")
    assert (await waiting).sid == created.sid


class _StatusReceiver:
    """A webhook standing in for ours: keeps each post and whether its signature checks;
    answers 204, or ``twiml`` as text/xml (an inbound webhook's confirmation)."""

    def __init__(self, token: str, path: str = "/sms/status", twiml: str | None = None) -> None:
        self.validator = RequestValidator(token)
        self.path = path
        self.twiml = twiml
        self.reports: list[tuple[dict[str, str], bool]] = []
        self.arrived = asyncio.Event()
        self.url = ""

    async def take(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        self.reports.append((form, self.validator.validate(self.url, form, signature)))
        self.arrived.set()
        if self.twiml is None:
            return web.Response(status=204)
        return web.Response(text=self.twiml, content_type="text/xml")


async def _receiving(receiver: _StatusReceiver) -> web.AppRunner:
    app = web.Application()
    app.router.add_post(receiver.path, receiver.take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}{receiver.path}"
    return runner


async def test_report_status_posts_a_signed_delivery_report(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that report_status posts MessageSid, MessageStatus and ErrorCode to the
    message's StatusCallback, signed with the account's auth token, and returns the
    callback's HTTP status; the fake's own record takes the new status."""
    receiver = _StatusReceiver(fake_twilio.auth_token)
    runner = await _receiving(receiver)
    try:
        created = await twilio_client.messages.create_async(
            to=CARER, from_=DESK, body="Call 12", status_callback=receiver.url
        )
        assert await fake_twilio.report_status(created.sid, "undelivered", 30003) == 204
        ((form, signed),) = receiver.reports
        assert signed
        assert form["MessageSid"] == created.sid
        assert (form["MessageStatus"], form["ErrorCode"]) == ("undelivered", "30003")
        assert (form["To"], form["From"], form["AccountSid"]) == (
            CARER,
            DESK,
            fake_twilio.account_sid,
        )
        assert (await twilio_client.messages(created.sid).fetch_async()).status == "undelivered"

        no_callback = await twilio_client.messages.create_async(to=CARER, from_=DESK, body="x")
        with pytest.raises(ValueError, match="StatusCallback"):
            await fake_twilio.report_status(no_callback.sid, "sent")
        with pytest.raises(LookupError):
            await fake_twilio.report_status("SM" + "0" * 32, "sent")
    finally:
        await runner.cleanup()


async def test_auto_deliver_reports_sent_then_delivered(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that with auto_deliver each accepted message is reported "sent" then
    "delivered" to its StatusCallback, signed."""
    fake_twilio.auto_deliver = True
    receiver = _StatusReceiver(fake_twilio.auth_token)
    runner = await _receiving(receiver)
    try:
        created = await twilio_client.messages.create_async(
            to=CARER, from_=DESK, body="Call 12", status_callback=receiver.url
        )
        async with asyncio.timeout(5):
            while len(receiver.reports) < 2:
                receiver.arrived.clear()
                await receiver.arrived.wait()
        assert [(f["MessageSid"], f["MessageStatus"], ok) for f, ok in receiver.reports] == [
            (created.sid, "sent", True),
            (created.sid, "delivered", True),
        ]
    finally:
        await runner.cleanup()


async def test_a_delayed_create_is_recorded_before_it_is_answered(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that delay_next makes the fake accept and list a message at once but answer
    the create only later, so a sender with a shorter timeout gives up not knowing; the
    create after it is answered at once."""
    fake_twilio.delay_next(5.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await twilio_client.messages.create_async(to=CARER, from_=DESK, body="Call 12")
    (taken,) = fake_twilio.messages
    listed = await twilio_client.messages.list_async(to=CARER)
    assert [(m.sid, m.body) for m in listed] == [(taken.sid, "Call 12")]

    async with asyncio.timeout(2):
        created = await twilio_client.messages.create_async(to=CARER, from_=DESK, body="next")
    assert [m.sid for m in fake_twilio.messages] == [taken.sid, created.sid]
    with pytest.raises(ValueError, match="negative"):
        fake_twilio.delay_next(-1)


async def test_reply_posts_a_signed_inbound_text_and_records_the_confirmation(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that reply posts Twilio's inbound form fields to inbound_url, signed with the
    account's token and addressed to the number that texted the phone, and records the
    TwiML <Message> as a confirmation to the phone; neither shows in the message list
    the sender reconciles against, nor in next_message."""
    webhook = _StatusReceiver(
        fake_twilio.auth_token,
        path="/sms/inbound",
        twiml='<?xml version="1.0" encoding="UTF-8"?>'
        "<Response><Message>Accepted call 12 &amp; noted &lt;ok&gt;</Message></Response>",
    )
    runner = await _receiving(webhook)
    try:
        fake_twilio.inbound_url = webhook.url
        page = await twilio_client.messages.create_async(to=CARER, from_=DESK, body="Call 12")
        status, answer = await fake_twilio.reply(CARER, "12a")
        assert status == 200
        assert "<Message>" in answer
        ((form, signed),) = webhook.reports
        assert signed
        assert SID.fullmatch(form["MessageSid"])
        assert form["SmsSid"] == form["SmsMessageSid"] == form["MessageSid"]
        assert (form["From"], form["To"], form["Body"]) == (CARER, DESK, "12a")
        assert (form["AccountSid"], form["ApiVersion"]) == (fake_twilio.account_sid, "2010-04-01")
        assert (form["SmsStatus"], form["NumMedia"], form["NumSegments"]) == ("received", "0", "1")

        assert fake_twilio.confirmations(CARER) == ["Accepted call 12 & noted <ok>"]
        received, confirmation = fake_twilio.replies
        assert (received.direction, received.sid, received.note) == (
            "inbound",
            form["MessageSid"],
            "",
        )
        assert (confirmation.direction, confirmation.to, confirmation.from_) == (
            "outbound-reply",
            CARER,
            DESK,
        )
        assert [m.sid for m in fake_twilio.everything()] == [
            confirmation.sid,
            received.sid,
            page.sid,
        ]
        listed = await twilio_client.messages.list_async(to=CARER)
        assert [m.sid for m in listed] == [page.sid]
        assert (await fake_twilio.next_message(timeout=1)).sid == page.sid
        with pytest.raises(TimeoutError):
            await fake_twilio.next_message(timeout=0.05)

        # Twilio retrying the webhook: the same MessageSid and fields, signed again.
        assert (await fake_twilio.replay(received.sid))[0] == 200
        assert webhook.reports[1] == webhook.reports[0]
    finally:
        await runner.cleanup()


async def test_reply_to_a_phone_never_texted_and_a_refusing_webhook(
    fake_twilio: FakeTwilio,
) -> None:
    """Test that a reply from a phone we never texted goes to the fake's own number, that
    a webhook's refusal is returned and noted on the text with no confirmation, and that
    without an inbound URL the reply is refused with what to set."""
    with pytest.raises(RuntimeError, match="inbound_url"):
        await fake_twilio.reply(CARER, "12a")
    webhook = _StatusReceiver("another-token", path="/sms/inbound", twiml="<Response/>")
    runner = await _receiving(webhook)
    try:
        fake_twilio.inbound_url = webhook.url
        assert await fake_twilio.reply(CARER, "hello") == (200, "<Response/>")
        ((form, signed),) = webhook.reports
        assert form["To"] == fake_twilio.number
        assert not signed  # the webhook checks with another token
        assert fake_twilio.confirmations(CARER) == []

        webhook.twiml = None  # answers 204: not a TwiML answer
        status, _ = await fake_twilio.reply(CARER, "12d", to=DESK)
        assert status == 204
        assert fake_twilio.replies[-1].note.startswith("the webhook answered HTTP 204")
        with pytest.raises(ValueError, match=r"E\.164"):
            await fake_twilio.reply("13800138000", "12a")
    finally:
        await runner.cleanup()


def test_cli_prints_its_url_and_stops_on_ctrl_c() -> None:
    """Test that `callcenter fake-twilio --port 0` prints its base URL first, then the
    address of its message page, and exits 0 on SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-m", "callcenter.cli", "fake-twilio", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert re.fullmatch(r"fake Twilio listening on http://127\.0\.0\.1:\d+\n", first)
        assert process.stdout.readline().startswith("account SID AC")
        assert process.stdout.readline().startswith("auth token  ")
        base_url = first.removeprefix("fake Twilio listening on ").strip()
        assert process.stdout.readline() == f"SMS a carer would get: {base_url}/\n"
        assert process.stdout.readline().startswith("it listens on loopback only")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_cli_refuses_to_listen_beyond_this_machine() -> None:
    """Test that `callcenter fake-twilio --host 0.0.0.0` does not start: its page shows
    every text (sign-in codes, carer links) to whoever reaches it, so it says why and
    exits 2."""
    ran = subprocess.run(
        [sys.executable, "-m", "callcenter.cli", "fake-twilio", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == 2
    assert ran.stdout == ""
    assert "loopback" in ran.stderr and "0.0.0.0" in ran.stderr
