"""Per-phone rate limits: texts beyond a phone's limit are bundled into one text, never
dropped, and a dispatch page is never held back. The relay sends through the real
TwilioSms and twilio library to the fake Twilio the server runs, on a real database and
virtual time; the rows are written straight into the outbox, as the desk would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from callcenter.app import Running
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.engine.outbox import OutboxMessage, OutboxRelay, TextLimit
from callcenter.engine.outbox.limits import BUNDLE_SEPARATOR, bundles
from callcenter.notify.sms import TwilioAccount, TwilioSms
from callcenter.store import models as m
from tests.desk_support import MONDAY_MORNING, desk_config, rows, running_desk
from tests.fixtures.fake_twilio import fake_of

SUPERVISOR = "+8613900000001"
OTHER_PHONE = "+8613900000002"
LIMIT = TextLimit(count=3, window_s=60)


def _message(row_id: int, body: str, *, page: bool = False) -> OutboxMessage:
    return OutboxMessage(
        row_id, None, "sms", "x", SUPERVISOR, body, 1, carer_id=7 if page else None
    )


def test_bundles_put_pages_first_and_keep_each_text_within_the_limit() -> None:
    """Test that a bundle starts with the pages, keeps the rest oldest first, and splits
    where one text would grow past the limit; a text longer than the limit goes alone."""
    notes = [_message(1, "a" * 10), _message(2, "b" * 10), _message(3, "p" * 10, page=True)]
    assert [[m.id for m in part] for part in bundles(notes)] == [[3, 1, 2]]
    tight = 10 + len(BUNDLE_SEPARATOR) + 10
    assert [[m.id for m in part] for part in bundles(notes, tight)] == [[3, 1], [2]]
    huge = [_message(1, "x" * 50), _message(2, "y")]
    assert [[m.id for m in part] for part in bundles(huge, 20)] == [[1], [2]]
    assert bundles([]) == []


@pytest.fixture
async def desk(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> AsyncIterator[tuple[Running, ManualClock]]:
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # the test drives its own relay with its own limit
        yield server, clock


async def _queue(server: Running, clock: ManualClock, *texts: tuple[str, str, bool]) -> list[int]:
    """Outbox rows (phone, body, is a page) due now; their ids."""
    values: list[dict[str, Any]] = [
        {
            "call_id": None,
            "channel": "sms",
            "recipient": f"operator:{phone[-2:]}",
            "address": phone,
            "body": body,
            "guard": {"carer_id": 1} if page else {},
            "state": m.OutboxState.PENDING,
            "attempts": 0,
            "created_at": clock.now(),
            "next_attempt_at": clock.now(),
            "last_error": "",
        }
        for phone, body, page in texts
    ]
    async with server.desk.transaction() as session:
        result = await session.execute(insert(m.OutboxItem).returning(m.OutboxItem.id), values)
        return [int(row_id) for row_id in result.scalars().all()]


async def _drain(server: Running, clock: ManualClock) -> None:
    fake = server.fake_twilio
    assert fake is not None
    account = TwilioAccount(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number="+8610000000000",
        api_base_url=fake.base_url,
    )
    async with TwilioSms(account) as texts:
        relay = OutboxRelay(server.engine, server.desk, clock, {"sms": texts}, text_limit=LIMIT)
        await relay.drain()


async def _rows(server: Running, ids: list[int]) -> list[tuple[str, str | None, int]]:
    found = await rows(
        server,
        select(m.OutboxItem.state, m.OutboxItem.provider_ref, m.OutboxItem.attempts)
        .where(m.OutboxItem.id.in_(ids))
        .order_by(m.OutboxItem.id),
    )
    return [(state, ref, attempts) for state, ref, attempts in found]


async def test_texts_over_the_limit_wait_then_go_out_as_one(
    desk: tuple[Running, ManualClock],
) -> None:
    """Test that a phone gets its first texts one by one up to its limit; texts beyond it
    are held (not dropped, no attempt counted) until the window frees, and then, being
    more than the limit allows, go out as one text carrying all of them, each row settled
    with that text's MessageSid; another phone is not held meanwhile."""
    server, clock = desk
    first = await _queue(server, clock, *[(SUPERVISOR, f"notice {n}", False) for n in (1, 2, 3)])
    await _drain(server, clock)
    assert [msg.body for msg in fake_of(server).sent_to(SUPERVISOR)] == [
        "notice 1",
        "notice 2",
        "notice 3",
    ]

    clock.advance(timedelta(seconds=10))
    later = await _queue(
        server,
        clock,
        *[(SUPERVISOR, f"notice {n}", False) for n in (4, 5, 6, 7)],
        (OTHER_PHONE, "for someone else", False),
    )
    await _drain(server, clock)
    assert len(fake_of(server).sent_to(SUPERVISOR)) == 3
    assert [msg.body for msg in fake_of(server).sent_to(OTHER_PHONE)] == ["for someone else"]
    held = await rows(
        server,
        select(m.OutboxItem.state, m.OutboxItem.attempts, m.OutboxItem.next_attempt_at).where(
            m.OutboxItem.id.in_(later[:4])
        ),
    )
    assert {tuple(row) for row in held} == {
        ("pending", 0, MONDAY_MORNING + timedelta(seconds=LIMIT.window_s))
    }

    # The window frees: four waiting where three are allowed go out as one text.
    clock.advance(timedelta(seconds=50))
    await _drain(server, clock)
    *_, bundle = fake_of(server).sent_to(SUPERVISOR)
    assert len(fake_of(server).sent_to(SUPERVISOR)) == 4
    assert bundle.body == BUNDLE_SEPARATOR.join(f"notice {n}" for n in (4, 5, 6, 7))
    assert await _rows(server, later[:4]) == [("sent", bundle.sid, 1)] * 4
    assert [state for state, _, _ in await _rows(server, first)] == ["sent"] * 3

    # Within the limit again, a lone text goes as itself.
    clock.advance(timedelta(seconds=1))
    await _queue(server, clock, (SUPERVISOR, "notice 8", False))
    await _drain(server, clock)
    assert fake_of(server).sent_to(SUPERVISOR)[-1].body == "notice 8"


async def test_a_page_is_never_held_and_carries_what_waits_for_that_phone(
    desk: tuple[Running, ManualClock],
) -> None:
    """Test that at the limit a dispatch page still goes out at once, first in one text
    with the notices waiting for the same phone; more waiting than the limit allows
    goes as one text too."""
    server, clock = desk
    await _queue(server, clock, *[(SUPERVISOR, f"notice {n}", False) for n in (1, 2, 3)])
    await _drain(server, clock)
    clock.advance(timedelta(seconds=5))
    waiting = await _queue(
        server, clock, (SUPERVISOR, "notice 4", False), (SUPERVISOR, "GO TO H0007", True)
    )
    await _drain(server, clock)
    *_, bundle = fake_of(server).sent_to(SUPERVISOR)
    assert bundle.body == f"GO TO H0007{BUNDLE_SEPARATOR}notice 4"
    assert await _rows(server, waiting) == [("sent", bundle.sid, 1)] * 2

    # A fresh window, but five waiting where three are allowed: one text, not five.
    clock.advance(timedelta(minutes=2))
    burst = await _queue(server, clock, *[(OTHER_PHONE, f"n{n}", False) for n in range(5)])
    await _drain(server, clock)
    (one,) = fake_of(server).sent_to(OTHER_PHONE)
    assert one.body == BUNDLE_SEPARATOR.join(f"n{n}" for n in range(5))
    assert {ref for _, ref, _ in await _rows(server, burst)} == {one.sid}


async def test_a_text_in_doubt_that_went_out_in_a_bundle_is_not_sent_again(
    desk: tuple[Running, ManualClock],
) -> None:
    """Test reconciliation across bundles: a row whose attempt is in doubt is settled as
    sent when Twilio's list holds a text that carried it among others."""
    server, clock = desk
    first, second = await _queue(
        server, clock, (OTHER_PHONE, "A", False), (OTHER_PHONE, "B", False)
    )
    fake = server.fake_twilio
    assert fake is not None
    # As if the process died after Twilio took the bundle and before the rows settled.
    async with TwilioSms(
        TwilioAccount(
            fake.account_sid, fake.auth_token, "+8610000000000", api_base_url=fake.base_url
        )
    ) as texts:
        sent = await texts.send(
            OutboxMessage(
                first, None, "sms", "x", OTHER_PHONE, "notice A" + BUNDLE_SEPARATOR + "notice B", 1
            )
        )
    async with server.desk.transaction() as session:
        await session.execute(
            m.OutboxItem.__table__.update()
            .where(m.OutboxItem.id.in_([first, second]))
            .values(attempts=1, sending_since=clock.now())
        )
    clock.advance(timedelta(seconds=5))
    await _drain(server, clock)
    assert len(fake_of(server).sent_to(OTHER_PHONE)) == 1
    assert await _rows(server, [first, second]) == [("sent", sent.ref, 2)] * 2


async def test_a_text_in_doubt_sent_ahead_counts_against_the_limit_of_those_after_it(
    desk: tuple[Running, ManualClock],
) -> None:
    """Test that a text in doubt (its sending cut short), sent again ahead of others
    waiting for the same phone, counts against the phone's limit: the limit reached,
    those after it are held rather than bundled past it, though the phone's recent texts
    were read for the whole batch before it went out."""
    server, clock = desk
    await _queue(server, clock, *[(SUPERVISOR, f"notice {n}", False) for n in (1, 2)])
    await _drain(server, clock)
    clock.advance(timedelta(seconds=5))
    doubt, *after = await _queue(
        server, clock, *[(SUPERVISOR, f"notice {n}", False) for n in (3, 4, 5)]
    )
    async with server.desk.transaction() as session:
        await session.execute(
            m.OutboxItem.__table__.update()
            .where(m.OutboxItem.id == doubt)
            .values(attempts=1, sending_since=clock.now() - timedelta(seconds=1))
        )
    await _drain(server, clock)
    assert [msg.body for msg in fake_of(server).sent_to(SUPERVISOR)] == [
        "notice 1",
        "notice 2",
        "notice 3",
    ]
    assert [(state, attempts) for state, _, attempts in await _rows(server, after)] == [
        ("pending", 0),
        ("pending", 0),
    ]
