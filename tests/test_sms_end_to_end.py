"""SMS end to end through the fake Twilio the server runs itself: a real mosquitto, a
real seeded SQLite file, the whole server on a virtual clock, the real twilio library
sending to the fake, and the fake posting carers' answers to our inbound webhook signed
as Twilio signs them.

The Must-show path: press -> dispatch SMS at the fake -> the carer answers "a", "s", "r"
from the fake -> the call is accepted, on scene, resolved, each step in the call history
and confirmed to the phone; a replayed answer and a forged one change nothing. And the
timeout path: Twilio takes the page but answers after our timeout, and the next attempt
finds it in Twilio's message list instead of paging the carer twice.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.fake_twilio import INBOUND, FakeMessage, FakeTwilio
from callcenter.store import models as m
from tests.api_support import Api, running_api
from tests.desk_support import (
    MONDAY_MORNING,
    desk_config,
    page_rows,
    press_for_call,
    running_desk,
    scalar,
)
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually


async def _dispatch_text(api: Api, fake: FakeTwilio, call_id: int) -> tuple[str, FakeMessage]:
    """The paged carer's code and the dispatch SMS their phone got."""
    page = await fake.next_message()
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    phone = await scalar(api.server, select(m.Carer.phone).where(m.Carer.code == carer))
    assert page.to == phone, "the first text is the dispatch page to the paged carer"
    return carer, page


def _last_text_from(fake: FakeTwilio, phone: str) -> FakeMessage:
    return [r for r in fake.replies if r.direction == INBOUND and r.from_ == phone][-1]


async def test_a_carer_answers_from_the_fake_accepts_arrives_and_resolves(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test the Must-show path: a press pages a carer by SMS at the fake; the carer's
    "a", "s" and "r", posted by the fake to /sms/inbound, accept the call, put the carer
    on scene and resolve it, each in the call history as the carer and each confirmed
    to the phone; the same MessageSid posted again changes nothing, and an answer signed
    with another token is refused with 403 and changes nothing."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        assert fake.inbound_url == f"{api.server.web_url}/sms/inbound"
        call_id = await api.press("H0001")
        # An operator owns it, so the carer's "r" closes it (calls.md, "Awaiting review").
        assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200
        carer, page = await _dispatch_text(api, fake, call_id)
        phone = page.to
        assert "H0001" in page.body and f"{call_id}a" in page.body

        status, twiml = await fake.reply(phone, f"{call_id}a")
        assert status == 200
        (accepted,) = fake.confirmations(phone)
        assert str(call_id) in accepted and "H0001" in accepted
        assert "<Message>" in twiml
        detail = await api.call(call_id)
        assert detail["state"] == "accepted"
        history_after_accept = detail["history"]

        # Twilio posting the same message again: the first answer, nothing changed.
        accept_sid = _last_text_from(fake, phone).sid
        assert await fake.replay(accept_sid) == (status, twiml)
        # Someone else posting a "decline" signed with a token that is not Twilio's.
        forged_status, _ = await fake.reply(phone, f"{call_id}d", auth_token="not-the-token")
        assert forged_status == 403
        assert _last_text_from(fake, phone).note.startswith("the webhook answered HTTP 403")
        assert fake.confirmations(phone) == [accepted, accepted]
        detail = await api.call(call_id)
        assert detail["state"] == "accepted"
        assert detail["history"] == history_after_accept

        assert (await fake.reply(phone, f"{call_id}s"))[0] == 200
        assert (await api.call(call_id))["state"] == "on_scene"
        assert (await fake.reply(phone, f"{call_id}r"))[0] == 200
        detail = await api.call(call_id)
        assert (detail["state"], detail["outcome"]) == ("resolved", "helped_at_home")

        by_carer = [h["action"] for h in detail["history"] if h["actor"] == f"carer:{carer}"]
        assert by_carer == ["accepted", "on_scene", "resolved"]
        on_scene, resolved = fake.confirmations(phone)[2:]
        assert str(call_id) in on_scene and str(call_id) in resolved
        assert len({accepted, on_scene, resolved}) == 3
        # The carer's phone got one page and nothing else through the API.
        assert fake.sent_to(phone) == [page]


async def test_a_page_answered_after_the_timeout_is_found_not_sent_twice(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test the timeout path: Twilio takes the dispatch page but answers after our
    sms.timeout_s, so the row stays pending and in doubt; on its next attempt the relay
    finds the page in Twilio's message list and settles the row as sent with its
    MessageSid, and the carer's phone has that page exactly once."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    config = config.model_copy(update={"sms": config.sms.model_copy(update={"timeout_s": 0.5})})
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        fake = fake_of(server)
        fake.delay_next(3.0)
        call_id = await press_for_call(server, broker.host, broker.port, topic_prefix, "H0002")

        async def timed_out() -> bool:
            pages = await page_rows(server, call_id)
            return bool(pages) and pages[0].attempts == 1 and bool(pages[0].last_error)

        await eventually(timed_out, what="the dispatch page's first attempt to time out")
        (row,) = await page_rows(server, call_id)
        assert (row.state, row.provider_ref) == (m.OutboxState.PENDING, None)
        assert row.sending_since is not None  # in doubt
        assert "outcome unknown" in row.last_error
        (taken,) = fake.sent_to(row.address)
        assert taken.body == row.body

        clock.advance(timedelta(seconds=5))  # the first retry delay
        server.desk.outbox_changed.set()

        async def settled() -> bool:
            return (await page_rows(server, call_id))[0].state == m.OutboxState.SENT

        await eventually(settled, what="the page in doubt settled")
        (row,) = await page_rows(server, call_id)
        assert (row.provider_ref, row.sending_since, row.last_error) == (taken.sid, None, "")
        assert row.attempts == 2
        assert [sent.sid for sent in fake.sent_to(row.address) if sent.body == row.body] == [
            taken.sid
        ]
        assert fake.sent_to(row.address) == [taken]
