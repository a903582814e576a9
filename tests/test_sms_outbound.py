"""SMS out end to end: press -> outbox -> TwilioSms -> the real twilio library -> the
local fake Twilio the server starts itself (no account configured), on a real broker and
a real database, on virtual time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from twilio.base.exceptions import TwilioRestException  # type: ignore[import-untyped]

from callcenter.app import Running
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.engine import phones
from callcenter.notify.sms import classify
from callcenter.store import models as m
from callcenter.store.db import create_engine
from device_sim.demo import ensure_demo_operators
from tests.desk_support import (
    MONDAY_MORNING,
    desk_config,
    history,
    page_rows,
    press_for_call,
    rows,
    running_desk,
    scalar,
)
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually


async def _press(server: Running, broker: EmbeddedBroker, prefix: str, household: str) -> int:
    return await press_for_call(server, broker.host, broker.port, prefix, household)


async def _carer_phone(server: Running, carer_id: int) -> str:
    return str(await scalar(server, select(m.Carer.phone).where(m.Carer.id == carer_id)))


async def test_a_press_sends_the_dispatch_sms_through_twilio(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a press pages the nearest carer by SMS: the text arrives at the fake
    Twilio, to the carer's phone, naming the household and the call, and the outbox row is
    sent with Twilio's MessageSid and first status."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    async with running_desk(config, ManualClock(MONDAY_MORNING)) as server:
        fake = fake_of(server)
        call_id = await _press(server, broker, topic_prefix, "H0010")

        async def page_sent() -> bool:
            pages = await page_rows(server, call_id)
            return bool(pages) and pages[0].state == m.OutboxState.SENT

        await eventually(page_sent, what="the dispatch page sent")
        (page,) = await page_rows(server, call_id)
        phone = await _carer_phone(server, int(page.guard["carer_id"]))
        (arrived,) = fake.sent_to(phone)
        assert "H0010" in arrived.body and str(call_id) in arrived.body
        assert arrived.body == page.body
        assert arrived.from_ and arrived.account_sid == fake.account_sid
        assert arrived.status_callback == f"{server.web_url}/sms/status"
        assert (page.provider_ref, page.delivery, page.attempts) == (arrived.sid, "queued", 1)


async def test_a_rate_limited_page_is_retried_and_sent_once(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a 429 (Twilio code 20429) leaves the page pending after one attempt,
    and that once the retry delay has passed it is sent, exactly once."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        fake = fake_of(server)
        fake.fail_next(status=429, code=20429)
        call_id = await _press(server, broker, topic_prefix, "H0011")

        async def tried_once() -> bool:
            # Counted when claimed, before the send; the refusal is written after it.
            pages = await page_rows(server, call_id)
            return bool(pages) and pages[0].attempts == 1 and bool(pages[0].last_error)

        await eventually(tried_once, what="the first attempt")
        (page,) = await page_rows(server, call_id)
        assert page.state == m.OutboxState.PENDING
        assert "20429" in page.last_error
        phone = await _carer_phone(server, int(page.guard["carer_id"]))
        assert fake.sent_to(phone) == []

        clock.advance(timedelta(seconds=5))  # the first retry delay
        server.desk.outbox_changed.set()

        async def sent() -> bool:
            return (await page_rows(server, call_id))[0].state == m.OutboxState.SENT

        await eventually(sent, what="the retried page sent")
        await server.relay.drain()
        (page,) = await page_rows(server, call_id)
        (arrived,) = fake.sent_to(phone)
        assert (page.attempts, page.provider_ref, page.last_error) == (2, arrived.sid, "")


async def test_an_invalid_number_is_not_retried_and_the_next_carer_is_paged(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that Twilio's 21211 (invalid number) fails the page for good, without retry:
    the carer is marked unreachable at once, the next carer is paged by SMS, the demo
    supervisor is texted, and the history says "unreachable" then "dispatched"."""
    engine = create_engine(seeded_database_url)
    try:
        await ensure_demo_operators(engine, MONDAY_MORNING)  # the demo's supervisor
    finally:
        await engine.dispose()
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        fake = fake_of(server)
        fake.fail_next(status=400, code=21211)
        call_id = await _press(server, broker, topic_prefix, "H0012")

        async def next_page_sent() -> bool:
            pages = await page_rows(server, call_id)
            return len(pages) == 2 and pages[1].state == m.OutboxState.SENT

        await eventually(next_page_sent, what="the next carer paged")
        first, second = await page_rows(server, call_id)
        assert (first.state, first.attempts) == (m.OutboxState.FAILED, 1)
        assert "21211" in first.last_error and first.provider_ref is None
        first_carer, second_carer = int(first.guard["carer_id"]), int(second.guard["carer_id"])
        assert first_carer != second_carer
        assignments = await rows(
            server,
            select(m.CallAssignment.carer_id, m.CallAssignment.state)
            .where(m.CallAssignment.call_id == call_id)
            .order_by(m.CallAssignment.seq),
        )
        assert assignments == [(first_carer, "unreachable"), (second_carer, "dispatched")]
        second_phone = await _carer_phone(server, second_carer)
        (arrived,) = fake.sent_to(second_phone)
        assert arrived.sid == second.provider_ref
        assert fake.sent_to(await _carer_phone(server, first_carer)) == []

        actions = [h.action for h in await history(server, call_id)]
        assert actions.index("unreachable") < len(actions) - 1
        assert actions[actions.index("unreachable") + 1] == "dispatched"

        async def supervisor_texted() -> bool:
            return bool(fake.sent_to("+8613997100001"))

        await eventually(supervisor_texted, what="the supervisor texted")
        (told,) = fake.sent_to("+8613997100001")
        # In the supervisor's language (zh): which carer, and that texts do not arrive; the
        # provider's code (21211) stays in the call's history and the log.
        assert str(call_id) in told.body and "护理员C" in told.body and "无法送达" in told.body

        # The number is marked: the carer is not paged again while it is wrong.
        first_phone = await _carer_phone(server, first_carer)
        async with server.desk.transaction() as session:
            mark = await phones.find(session, first_phone)
        assert mark is not None and mark.problem is m.PhoneProblem.INVALID_NUMBER
        assert "21211" in mark.detail and mark.recipient == first.recipient
        snapshot = next(s for s in await server.desk.carer_snapshots() if s.id == first_carer)
        assert "21211" in snapshot.phone_problem

        # Nothing is left to retry: the failed page stays failed.
        clock.advance(timedelta(minutes=1))
        await server.relay.drain()
        assert (await page_rows(server, call_id))[0].attempts == 1
        assert fake.sent_to(await _carer_phone(server, first_carer)) == []


@pytest.mark.parametrize(
    ("status", "code", "permanent"),
    [
        (429, 20429, False),
        (503, 20500, False),
        (401, 20003, False),
        (400, 21211, True),
        (400, 21610, True),
        (400, 21614, True),
        (400, 21617, True),
    ],
)
def test_twilio_refusals_are_sorted_into_retry_and_final(
    status: int, code: int, permanent: bool
) -> None:
    """Test that only refusals waiting cannot cure are final; a refused account is
    retried (the configuration gets fixed, the queue still goes out)."""
    error = classify(TwilioRestException(status, "https://api.twilio.test", "refused", code))
    assert error.permanent is permanent
    assert str(code) in error.detail
