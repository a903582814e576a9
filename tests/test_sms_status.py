"""Twilio's delivery reports end to end: press -> dispatch SMS at the local fake Twilio
the server starts itself -> the fake posts signed status callbacks to POST /sms/status,
on a real broker and a real database, on virtual time (which never moves here, so any
re-dispatch comes from the report, not from a timer)."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from sqlalchemy import select

from callcenter.app import Running
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.notify.sms import STATUS_PATH
from callcenter.store import models as m
from callcenter.web.sms_webhooks import INBOUND_PATH
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
from tests.sms_support import post_signed


async def _press(server: Running, broker: EmbeddedBroker, prefix: str, household: str) -> int:
    return await press_for_call(server, broker.host, broker.port, prefix, household)


async def _pages_sent(server: Running, call_id: int, how_many: int) -> list[m.OutboxItem]:
    async def sent() -> bool:
        pages = await page_rows(server, call_id)
        return len(pages) >= how_many and all(p.state == m.OutboxState.SENT for p in pages)

    await eventually(sent, what=f"{how_many} dispatch page(s) sent")
    return await page_rows(server, call_id)


async def _assignments(server: Running, call_id: int) -> list[tuple[int, str]]:
    found = await rows(
        server,
        select(m.CallAssignment.carer_id, m.CallAssignment.state)
        .where(m.CallAssignment.call_id == call_id)
        .order_by(m.CallAssignment.seq),
    )
    return [(carer_id, state) for carer_id, state in found]


async def _carer_phone(server: Running, carer_id: int) -> str:
    return str(await scalar(server, select(m.Carer.phone).where(m.Carer.id == carer_id)))


async def test_delivery_reports_only_move_a_message_forward(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that "delivered" is recorded on the page's outbox row, and that a late "sent"
    after it is answered 200 and leaves it "delivered"."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    async with running_desk(config, ManualClock(MONDAY_MORNING)) as server:
        fake = fake_of(server)
        call_id = await _press(server, broker, topic_prefix, "H0020")
        (page,) = await _pages_sent(server, call_id, 1)
        assert page.delivery == "queued"
        sid = str(page.provider_ref)

        assert await fake.report_status(sid, "sent") == 200
        assert (await page_rows(server, call_id))[0].delivery == "sent"
        assert await fake.report_status(sid, "delivered") == 200
        assert (await page_rows(server, call_id))[0].delivery == "delivered"
        assert await fake.report_status(sid, "sent") == 200
        assert await fake.report_status(sid, "queued") == 200
        (page,) = await page_rows(server, call_id)
        assert (page.delivery, page.last_error, page.state) == ("delivered", "", "sent")
        assert [state for _, state in await _assignments(server, call_id)] == ["dispatched"]


async def test_an_undelivered_page_pages_the_next_carer_at_once(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that "undelivered" with error 30003 on a dispatch page marks the carer
    unreachable and pages the next carer at once (a second SMS at the fake, the clock not
    moved), records the status and the error's meaning, and writes "unreachable" then
    "dispatched" in the history; a repeat of the report does nothing more."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    async with running_desk(config, ManualClock(MONDAY_MORNING)) as server:
        fake = fake_of(server)
        call_id = await _press(server, broker, topic_prefix, "H0021")
        (page,) = await _pages_sent(server, call_id, 1)
        first_carer = int(page.guard["carer_id"])

        assert await fake.report_status(str(page.provider_ref), "undelivered", 30003) == 200
        first, second = await _pages_sent(server, call_id, 2)
        assert first.delivery == "undelivered"
        assert "30003" in first.last_error and "unreachable handset" in first.last_error
        second_carer = int(second.guard["carer_id"])
        assert second_carer != first_carer
        assert await _assignments(server, call_id) == [
            (first_carer, "unreachable"),
            (second_carer, "dispatched"),
        ]
        (arrived,) = fake.sent_to(await _carer_phone(server, second_carer))
        assert arrived.sid == second.provider_ref and str(call_id) in arrived.body

        entries = await history(server, call_id)
        actions = [h.action for h in entries]
        assert actions[actions.index("unreachable") + 1] == "dispatched"

        # Twilio retrying the same report changes nothing.
        assert await fake.report_status(str(page.provider_ref), "undelivered", 30003) == 200
        assert len(await page_rows(server, call_id)) == 2
        assert len(await history(server, call_id)) == len(entries)


async def test_a_failed_page_to_a_carer_who_accepted_changes_nothing_in_the_call(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a "failed" report for the page of a carer who has already accepted by
    SMS is recorded on the message but leaves the call, its carers and its history alone,
    and pages nobody."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    async with running_desk(config, ManualClock(MONDAY_MORNING)) as server:
        fake = fake_of(server)
        call_id = await _press(server, broker, topic_prefix, "H0022")
        (page,) = await _pages_sent(server, call_id, 1)
        carer = int(page.guard["carer_id"])
        reply = {
            "MessageSid": "SM" + "a" * 32,
            "AccountSid": fake.account_sid,
            "From": await _carer_phone(server, carer),
            "To": "+8610690000000",
            "Body": f"{call_id}a",
        }
        assert await post_signed(server, INBOUND_PATH, reply) == 200
        assert await _assignments(server, call_id) == [(carer, "accepted")]
        before = len(await history(server, call_id))

        assert await fake.report_status(str(page.provider_ref), "failed", 30005) == 200
        (page,) = await page_rows(server, call_id)
        assert page.delivery == "failed" and "30005" in page.last_error
        assert await _assignments(server, call_id) == [(carer, "accepted")]
        assert len(await history(server, call_id)) == before
        assert await scalar(server, select(m.Call.state).where(m.Call.id == call_id)) == (
            "accepted"
        )
        await server.relay.drain()
        assert len(await page_rows(server, call_id)) == 1


async def test_forged_unknown_and_incomplete_reports(
    broker: EmbeddedBroker,
    topic_prefix: str,
    seeded_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test that a report signed with another token or not signed gets 403 and a log line
    and changes nothing; that an unknown MessageSid gets 200 and a log line; and that a
    report without MessageStatus gets 400."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    caplog.set_level(logging.INFO, logger="callcenter.sms")
    async with running_desk(config, ManualClock(MONDAY_MORNING)) as server:
        fake = fake_of(server)
        call_id = await _press(server, broker, topic_prefix, "H0023")
        (page,) = await _pages_sent(server, call_id, 1)
        report = {
            "MessageSid": str(page.provider_ref),
            "MessageStatus": "undelivered",
            "ErrorCode": "30003",
            "AccountSid": fake.account_sid,
            "To": await _carer_phone(server, int(page.guard["carer_id"])),
        }
        assert await post_signed(server, STATUS_PATH, report, token="not-the-token") == 403
        async with (
            aiohttp.ClientSession(base_url=server.web_url) as http,
            http.post(STATUS_PATH, data=report) as unsigned,
        ):
            assert unsigned.status == 403
        refusals = [r for r in caplog.records if "refused an SMS webhook" in r.getMessage()]
        assert len(refusals) == 2
        (page,) = await page_rows(server, call_id)
        assert (page.delivery, page.last_error) == ("queued", "")
        assert [state for _, state in await _assignments(server, call_id)] == ["dispatched"]

        unknown = {**report, "MessageSid": "SM" + "f" * 32}
        assert await post_signed(server, STATUS_PATH, unknown) == 200
        assert any("no message of ours" in r.getMessage() for r in caplog.records)
        assert [state for _, state in await _assignments(server, call_id)] == ["dispatched"]

        incomplete = {k: v for k, v in report.items() if k != "MessageStatus"}
        assert await post_signed(server, STATUS_PATH, incomplete) == 400
        assert (await page_rows(server, call_id))[0].delivery == "queued"
