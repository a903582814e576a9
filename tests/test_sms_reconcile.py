"""SMS whose outcome is unknown (the process died mid-send, a timeout): reconciled with
Twilio's message list before anything is sent again. The real twilio library talks to
the fake Twilio the server runs itself, on a real broker and a real database, on virtual
time; the test drives its own OutboxRelay, as a restarted process would.

"Killing" the sender: the relay is handed a sender (tests/outbox_support.py) that does
the real send through TwilioSms and then raises a BaseException, which nothing in the
relay catches, so the claim (attempt counted, ``sending_since`` set) is committed and the
settle never runs, just as when the process dies between Twilio's answer and our commit
of "sent".
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from callcenter.app import Running
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.engine.outbox import OutboxRelay
from callcenter.engine.outbox.reconcile import REPEAT_MARK
from callcenter.fake_twilio import FakeTwilio
from callcenter.notify.sms import TwilioAccount, TwilioSms
from callcenter.store import models as m
from tests.desk_support import MONDAY_MORNING, desk_config, rows, running_desk, scalar
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually, publish_events
from tests.outbox_support import KilledMidSend, ListUnreachable, ProcessKilled, closed_port

FROM_NUMBER = "+8610000000000"
FAMILY_PHONE = "+8613900000099"


def _account(fake: FakeTwilio, base_url: str | None = None) -> TwilioAccount:
    return TwilioAccount(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=FROM_NUMBER,
        api_base_url=base_url or fake.base_url,
        timeout_s=5.0,
    )


async def _page(server: Running, broker: EmbeddedBroker, prefix: str, household: str) -> int:
    """Press in ``household``; the id of the dispatch page's outbox row."""
    await publish_events(broker.host, broker.port, prefix, [(household, f"CB-{household}", "p1")])

    async def paged() -> bool:
        return await scalar(server, select(m.OutboxItem.id)) is not None

    await eventually(paged, what="a carer paged")
    (page_id,) = [
        row_id
        for (row_id,) in await rows(
            server, select(m.OutboxItem.id).where(m.OutboxItem.channel == "sms")
        )
    ]
    return int(page_id)


async def _row(server: Running, row_id: int) -> m.OutboxItem:
    row = await scalar(server, select(m.OutboxItem).where(m.OutboxItem.id == row_id))
    assert isinstance(row, m.OutboxItem)
    return row


async def _phone(server: Running, row_id: int) -> str:
    return (await _row(server, row_id)).address


async def test_a_page_sent_before_the_process_died_is_settled_not_sent_again(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a page Twilio took just before the sender died is found in Twilio's
    message list after a restart: the row is settled as sent with that MessageSid, and
    the carer's phone still has exactly one message."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relays
        fake = fake_of(server)
        page_id = await _page(server, broker, topic_prefix, "H0010")
        phone = await _phone(server, page_id)
        claimed_at = clock.now()
        async with TwilioSms(_account(fake)) as texts:
            dying = OutboxRelay(server.engine, server.desk, clock, {"sms": KilledMidSend(texts)})
            with pytest.raises(ProcessKilled):
                await dying.drain()
        (taken,) = fake.sent_to(phone)
        row = await _row(server, page_id)
        assert (row.state, row.attempts, row.provider_ref) == ("pending", 1, None)
        assert row.sending_since == claimed_at  # in doubt

        clock.advance(timedelta(seconds=5))  # its next attempt falls due
        async with TwilioSms(_account(fake)) as texts:
            restarted = OutboxRelay(server.engine, server.desk, clock, {"sms": texts})
            await restarted.drain()
        row = await _row(server, page_id)
        assert (row.state, row.provider_ref, row.sending_since) == ("sent", taken.sid, None)
        assert (row.attempts, row.last_error) == (2, "")
        assert fake.sent_to(phone) == [taken]


async def test_a_page_in_doubt_that_twilio_never_took_is_sent_once(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a page claimed but never handed to Twilio (the process died first) is
    looked for, not found, and then sent: once, with its own text, no repeat mark."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relays
        fake = fake_of(server)
        page_id = await _page(server, broker, topic_prefix, "H0011")
        phone = await _phone(server, page_id)
        async with TwilioSms(_account(fake)) as texts:
            dying = OutboxRelay(
                server.engine,
                server.desk,
                clock,
                {"sms": KilledMidSend(texts, before_request=True)},
            )
            with pytest.raises(ProcessKilled):
                await dying.drain()
        assert fake.sent_to(phone) == []
        assert (await _row(server, page_id)).sending_since is not None

        clock.advance(timedelta(seconds=5))
        async with TwilioSms(_account(fake)) as texts:
            restarted = OutboxRelay(server.engine, server.desk, clock, {"sms": texts})
            await restarted.drain()
        row = await _row(server, page_id)
        (arrived,) = fake.sent_to(phone)
        assert arrived.body == row.body
        assert (row.state, row.provider_ref, row.sending_since) == ("sent", arrived.sid, None)


async def test_when_twilio_cannot_be_asked_a_page_is_repeated_and_a_notice_waits(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that when Twilio's message list cannot be read, an in-doubt dispatch page is
    sent again with the repeat mark, while an in-doubt informational text is not sent
    again but stays pending with the reason, and is settled from the list once it can be
    read."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relays
        fake = fake_of(server)
        page_id = await _page(server, broker, topic_prefix, "H0012")
        phone = await _phone(server, page_id)
        call_id = (await _row(server, page_id)).call_id
        # An informational text (no carer guard), written as the desk writes its rows.
        async with server.engine.begin() as connection:
            notice_id = (
                await connection.execute(
                    insert(m.OutboxItem)
                    .values(
                        call_id=call_id,
                        channel="sms",
                        recipient="family:H0012",
                        address=FAMILY_PHONE,
                        body="A carer is on the way to your relative.",
                        guard={},
                        state="pending",
                        attempts=0,
                        created_at=clock.now(),
                        next_attempt_at=clock.now(),
                        last_error="",
                    )
                    .returning(m.OutboxItem.id)
                )
            ).scalar_one()
        async with TwilioSms(_account(fake)) as texts:
            dying = OutboxRelay(server.engine, server.desk, clock, {"sms": KilledMidSend(texts)})
            # Two phones, two lanes: the process dies with both texts mid-send.
            with pytest.raises(ProcessKilled):
                await dying.drain()
        (first_page,) = fake.sent_to(phone)
        (notice,) = fake.sent_to(FAMILY_PHONE)

        clock.advance(timedelta(seconds=5))
        nowhere = f"http://127.0.0.1:{closed_port()}"
        async with (
            TwilioSms(_account(fake)) as texts,
            TwilioSms(_account(fake, nowhere)) as unreachable,
        ):
            relay = OutboxRelay(
                server.engine,
                server.desk,
                clock,
                {"sms": ListUnreachable(texts, unreachable)},
            )
            await relay.drain()
        page = await _row(server, page_id)
        first, repeat = fake.sent_to(phone)
        assert first == first_page
        assert repeat.body == REPEAT_MARK + page.body
        assert (page.state, page.provider_ref, page.sending_since) == ("sent", repeat.sid, None)

        pending = await _row(server, notice_id)
        assert (pending.state, pending.attempts, pending.provider_ref) == ("pending", 2, None)
        assert pending.sending_since is not None
        assert "message list could not be checked" in pending.last_error
        assert fake.sent_to(FAMILY_PHONE) == [notice]  # not sent again

        clock.advance(timedelta(seconds=10))  # its next attempt falls due; Twilio answers
        async with TwilioSms(_account(fake)) as texts:
            await OutboxRelay(server.engine, server.desk, clock, {"sms": texts}).drain()
        settled = await _row(server, notice_id)
        assert (settled.state, settled.provider_ref, settled.last_error) == ("sent", notice.sid, "")
        assert fake.sent_to(FAMILY_PHONE) == [notice]
