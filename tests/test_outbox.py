"""The outbox relay: guards re-checked under the call's lock, retries, permanent failures,
and lanes: one phone's texts in order, different phones side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from callcenter.app import Running
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.domain.calls import Acknowledge, Actor, ActorKind, StandDown
from callcenter.domain.policy import Milestone
from callcenter.engine.outbox import OutboxMessage, OutboxRelay, Receipt, SendError
from callcenter.engine.outbox.relay import still_wanted
from callcenter.engine.repository import ClaimedPage
from callcenter.store import models as m
from tests.desk_support import MONDAY_MORNING, desk_config, rows, running_desk, scalar
from tests.ingest_support import eventually, publish_events

OPERATOR = Actor(ActorKind.OPERATOR, "li.na")


@dataclass
class TextMessages:
    """An SMS channel that keeps what it is given, and fails when told to."""

    channel: str = "sms"
    sent: list[OutboxMessage] = field(default_factory=list)
    failures: list[SendError] = field(default_factory=list)

    async def send(self, message: OutboxMessage) -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return f"ref-{message.id}"


async def _paged_call(server: Running, broker: EmbeddedBroker, prefix: str) -> tuple[int, str]:
    await publish_events(broker.host, broker.port, prefix, [("H0010", "CB-H0010", "p1")])

    async def paged() -> bool:
        return bool(await rows(server, select(m.CallAssignment.id)))

    await eventually(paged, what="a carer paged")
    call_id, carer_id = (
        await rows(server, select(m.CallAssignment.call_id, m.CallAssignment.carer_id))
    )[0]
    return call_id, carer_id


async def _outbox(server: Running) -> list[tuple[str, str, int]]:
    found = await rows(
        server,
        select(m.OutboxItem.recipient, m.OutboxItem.state, m.OutboxItem.attempts)
        .where(m.OutboxItem.channel == "sms")
        .order_by(m.OutboxItem.id),
    )
    return [(r, s, a) for r, s, a in found]


async def test_a_page_for_a_carer_stood_down_before_it_went_out_is_skipped(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that the relay re-checks each SMS under the call's lock: the page to a carer
    who was stood down meanwhile is skipped; their stand-down and the next page go out."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relay with its own SMS channel
        call_id, carer_id = await _paged_call(server, broker, topic_prefix)
        first = await scalar(server, select(m.Carer.code).where(m.Carer.id == carer_id))
        await server.desk.command(call_id, Acknowledge(OPERATOR))
        await server.desk.command(call_id, StandDown(OPERATOR, carer_id, "wrong carer"))
        texts = TextMessages()
        relay = OutboxRelay(server.engine, server.desk, clock, {"sms": texts})
        await relay.drain()
        outbox = await _outbox(server)
        assert outbox[0] == (f"carer:{first}", "skipped", 0)
        assert [(r, s) for r, s, _ in outbox[1:]] == [(r, "sent") for r, _, _ in outbox[1:]]
        assert f"carer:{first}" in [m.recipient for m in texts.sent]  # the stand-down
        assert len(texts.sent) == len(outbox) - 1


async def test_a_failed_send_is_retried_with_backoff_and_a_refusal_is_final(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a temporary failure keeps the row pending until its next attempt is due,
    the retry carries the same row id, and a permanent refusal marks it failed."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relay with its own SMS channel
        await _paged_call(server, broker, topic_prefix)
        texts = TextMessages(failures=[SendError("gateway timeout")])
        relay = OutboxRelay(server.engine, server.desk, clock, {"sms": texts})
        await relay.drain()
        ((recipient, state, attempts),) = await _outbox(server)
        assert (state, attempts, texts.sent) == ("pending", 1, [])
        await relay.drain()  # not due again yet
        assert texts.sent == []
        clock.advance(timedelta(seconds=5))
        await relay.drain()
        assert [(m.recipient, m.attempt) for m in texts.sent] == [(recipient, 2)]
        assert await _outbox(server) == [(recipient, "sent", 2)]

    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relay with its own SMS channel
        await publish_events(broker.host, broker.port, topic_prefix, [("H0011", "CB-H0011", "p1")])

        async def two_pages() -> bool:
            return len(await _outbox(server)) == 2

        await eventually(two_pages, what="a second page")
        texts = TextMessages(failures=[SendError("not a mobile number", permanent=True)])
        relay = OutboxRelay(server.engine, server.desk, clock, {"sms": texts})
        await relay.drain()
        last_error = await scalar(
            server, select(m.OutboxItem.last_error).where(m.OutboxItem.state == "failed")
        )
        assert last_error == "not a mobile number"
        assert relay.failed == 1


def test_guards_follow_the_call() -> None:
    """Test that still_wanted honours both kinds of guard."""
    from callcenter.domain.calls import CallState
    from tests.calls_support import call_in  # the domain tests' ready-made calls

    dispatched = call_in(CallState.DISPATCHED)
    paged = dispatched.assignments[0].carer_id
    assert still_wanted(dispatched, {"carer_id": paged})
    assert not still_wanted(dispatched, {"carer_id": paged + 100})
    assert still_wanted(dispatched, {"unless": Milestone.ON_SCENE.value})
    on_scene = call_in(CallState.ON_SCENE)
    assert not still_wanted(on_scene, {"unless": Milestone.ON_SCENE.value})
    assert not still_wanted(call_in(CallState.RESOLVED), {"carer_id": paged})


def _text_row(recipient: str, address: str, body: str, now: datetime) -> dict[str, Any]:
    """An SMS row waiting in the outbox, due now."""
    return {
        "channel": "sms",
        "recipient": recipient,
        "address": address,
        "body": body,
        "guard": {},
        "state": m.OutboxState.PENDING,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "last_error": "",
    }


@dataclass
class HeldPhone:
    """An SMS channel on which texts to one phone hang until let go; others go at once."""

    held: str
    channel: str = "sms"
    sent: list[tuple[str, str]] = field(default_factory=list)
    let_go: asyncio.Event = field(default_factory=asyncio.Event)
    out: int = 0  # texts being sent now
    most_out: int = 0

    async def send(self, message: OutboxMessage) -> str:
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            if message.address == self.held:
                await self.let_go.wait()
            self.sent.append((message.address, message.body))
        finally:
            self.out -= 1
        return f"ref-{message.id}"


async def test_a_phone_that_hangs_holds_up_only_its_own_texts(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test the outbox lanes: while a text to one phone hangs, the texts to other phones
    queued after it go out; the phone's own second text waits for its first and follows
    it in order; with a single lane one text is out at a time, so what had not gone
    before the hanging text waits behind it."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relays with its own SMS channel
        queued = [
            ("+8613800000001", "first to the slow phone"),
            ("+8613800000002", "to another phone"),
            ("+8613800000001", "second to the slow phone"),
            ("+8613800000003", "to a third phone"),
        ]
        async with server.desk.transaction() as session:
            await session.execute(
                insert(m.OutboxItem),
                [
                    _text_row(f"operator:test{n}", address, body, clock.now())
                    for n, (address, body) in enumerate(queued)
                ],
            )
        for lanes, others_first in ((1, False), (4, True)):
            if lanes == 4:  # the same rows again, for the second relay
                async with server.desk.transaction() as session:
                    await session.execute(
                        update(m.OutboxItem).values(
                            state=m.OutboxState.PENDING,
                            attempts=0,
                            sending_since=None,
                            next_attempt_at=clock.now(),
                        )
                    )
            texts = HeldPhone(held="+8613800000001")
            relay = OutboxRelay(server.engine, server.desk, clock, {"sms": texts}, lanes=lanes)
            draining = asyncio.create_task(relay.drain())

            async def others_out(texts: HeldPhone = texts) -> bool:
                return len(texts.sent) == 2

            if others_first:
                await eventually(others_out, within_s=5, what="the other phones' texts")
                assert {address for address, _ in texts.sent} == {
                    "+8613800000002",
                    "+8613800000003",
                }
            else:
                await asyncio.sleep(0.5)
                assert texts.out == 1  # the hanging text, and nothing beside it
            texts.let_go.set()
            assert await asyncio.wait_for(draining, 10) == 4
            if lanes == 1:
                assert texts.most_out == 1
            slow = [body for address, body in texts.sent if address == "+8613800000001"]
            assert slow == ["first to the slow phone", "second to the slow phone"]


@dataclass
class ClaimsSeen:
    """An SMS channel that notes, at each send, how many of the due texts were claimed."""

    server: Running
    channel: str = "sms"
    claimed_at_send: list[int] = field(default_factory=list)

    async def send(self, message: OutboxMessage) -> str:
        claimed = await rows(self.server, select(m.OutboxItem.id).where(m.OutboxItem.attempts > 0))
        self.claimed_at_send.append(len(claimed))
        return f"ref-{message.id}"


async def test_a_batch_of_due_texts_is_claimed_together_and_sent_a_lane_at_a_time(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that the texts due for many phones are all claimed before the first is sent
    (on SQLite their claims share the write turn; on PostgreSQL they go side by side),
    and that ``lanes`` bounds only the sends: with one lane they go out one at a time,
    each claimed once."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relay with its own SMS channel
        async with server.desk.transaction() as session:
            await session.execute(
                insert(m.OutboxItem),
                [
                    _text_row(f"operator:test{n}", f"+86138000001{n:02d}", f"text {n}", clock.now())
                    for n in range(20)
                ],
            )
        texts = ClaimsSeen(server)
        relay = OutboxRelay(server.engine, server.desk, clock, {"sms": texts}, lanes=1)
        assert await relay.drain() == 20
        if seeded_database_url.startswith("sqlite"):
            assert texts.claimed_at_send == [20] * 20
        else:
            assert texts.claimed_at_send == sorted(texts.claimed_at_send)
        assert await _outbox(server) == [(f"operator:test{n}", "sent", 1) for n in range(20)]


class MarkHook(OutboxRelay):
    """A relay that awaits ``before_mark`` before marking row ``row`` as sent: one that
    waits makes the mark slow, one that raises makes it fail."""

    row: int = 0
    before_mark: Callable[[], Awaitable[object]]

    async def _settle(
        self,
        message: OutboxMessage,
        error: SendError | None,
        receipt: Any = None,
        *,
        still_in_doubt: bool = False,
    ) -> None:
        if error is None and self.hooked(message):
            await self.before_mark()
        await super()._settle(message, error, receipt, still_in_doubt=still_in_doubt)

    def hooked(self, message: OutboxMessage) -> bool:
        return message.id == self.row


async def _two_texts_to_one_phone(server: Running, clock: ManualClock) -> list[int]:
    """Two texts due now for the same phone, "first" and "second"; their row ids."""
    async with server.desk.transaction() as session:
        return list(
            (
                await session.scalars(
                    insert(m.OutboxItem).returning(m.OutboxItem.id),
                    [
                        _text_row("operator:test", "+8613800000001", body, clock.now())
                        for body in ("first", "second")
                    ],
                )
            ).all()
        )


async def _mark_refused() -> None:
    raise RuntimeError("the mark could not be written")


async def test_a_mark_that_failed_while_its_lane_went_on_is_reported(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a sent row whose mark fails in the background, while its lane sends the
    next text, makes the relay's pass fail (logged, the pass tried again) rather than
    vanishing; the row stays in doubt, to be checked with the provider."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relay with its own SMS channel
        ids = await _two_texts_to_one_phone(server, clock)
        relay = MarkHook(server.engine, server.desk, clock, {"sms": HeldPhone(held="")})
        relay.row, relay.before_mark = min(ids), _mark_refused
        with pytest.raises(RuntimeError, match="could not be written"):
            await relay.drain()
        in_doubt = await rows(
            server,
            select(m.OutboxItem.state, m.OutboxItem.sending_since.is_not(None)).where(
                m.OutboxItem.id == min(ids)
            ),
        )
        assert [tuple(row) for row in in_doubt] == [("pending", True)]


async def test_a_lane_goes_on_while_its_last_text_is_marked_sent(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a phone's second text goes out while its first is still being marked
    sent, in order, and that the relay's pass ends only once every mark is written."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relay with its own SMS channel
        ids = await _two_texts_to_one_phone(server, clock)
        texts = TextMessages()
        let_go = asyncio.Event()
        relay = MarkHook(server.engine, server.desk, clock, {"sms": texts})
        relay.row, relay.before_mark = min(ids), let_go.wait
        draining = asyncio.create_task(relay.drain())

        async def both_sent() -> bool:
            return len(texts.sent) == 2

        await eventually(both_sent, within_s=5, what="the second text, the first still marking")
        assert [t.body for t in texts.sent] == ["first", "second"]
        await asyncio.sleep(0.2)
        assert not draining.done()  # the first row's mark is not written yet
        let_go.set()
        assert await asyncio.wait_for(draining, 10) == 2
        states = await rows(server, select(m.OutboxItem.state).where(m.OutboxItem.id.in_(ids)))
        assert [s for (s,) in states] == [m.OutboxState.SENT, m.OutboxState.SENT]


class ClaimsCounted(OutboxRelay):
    """A relay that counts the rows it claims from the outbox."""

    claims: int = 0

    async def _claim(self, item_id: int) -> OutboxMessage | None:
        self.claims += 1
        return await super()._claim(item_id)


async def _row(server: Running, item_id: int) -> tuple[Any, ...]:
    found = await rows(
        server,
        select(
            m.OutboxItem.state, m.OutboxItem.attempts, m.OutboxItem.sending_since.is_not(None)
        ).where(m.OutboxItem.id == item_id),
    )
    return tuple(found[0])


async def test_a_page_goes_out_claimed_by_its_decision_in_its_phones_turn(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that while the relay runs, a dispatch page is written claimed by the decision
    that made it and sent when that commits, with no claim of the relay's own; and that
    a page handed over while another text to the same phone is out waits for it."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test runs its own relay with its own SMS channel
        texts = HeldPhone(held="")
        relay = ClaimsCounted(server.engine, server.desk, clock, {"sms": texts})
        running = asyncio.create_task(relay.run())
        try:
            call_id, carer_id = await _paged_call(server, broker, topic_prefix)
            phone, code = (
                await rows(
                    server, select(m.Carer.phone, m.Carer.code).where(m.Carer.id == carer_id)
                )
            )[0]

            def to_phone() -> list[str]:
                return [body for address, body in texts.sent if address == phone]

            async def sent_to_phone(count: int) -> bool:
                return len(to_phone()) == count

            await eventually(lambda: sent_to_phone(1), within_s=5, what="the page")
            page = await scalar(
                server, select(func.max(m.OutboxItem.id)).where(m.OutboxItem.address == phone)
            )
            await eventually(lambda: _marked(server, page), within_s=5, what="the page marked")
            assert await _row(server, page) == (m.OutboxState.SENT, 1, False)
            assert relay.claims == 0

            # The carer is stood down (a text through the outbox, which hangs) and sent
            # again: the second page waits for the stand-down to go out, then follows it.
            texts.held = phone
            await server.desk.command(call_id, Acknowledge(OPERATOR))
            await server.desk.command(call_id, StandDown(OPERATOR, carer_id, "wrong carer"))

            async def stand_down_out() -> bool:
                return texts.out == 1

            await eventually(stand_down_out, within_s=5, what="the stand-down being sent")
            claims = relay.claims
            await server.desk.dispatch(call_id, OPERATOR, code)
            second = await scalar(
                server, select(func.max(m.OutboxItem.id)).where(m.OutboxItem.address == phone)
            )
            await asyncio.sleep(0.3)
            assert (texts.out, len(to_phone())) == (1, 1)  # the second page waits its turn
            texts.let_go.set()
            await eventually(lambda: sent_to_phone(3), within_s=5, what="the second page")
            await eventually(lambda: _marked(server, second), within_s=5, what="its mark")
            bodies = await rows(
                server,
                select(m.OutboxItem.body)
                .where(m.OutboxItem.address == phone)
                .order_by(m.OutboxItem.id),
            )
            assert to_phone() == [body for (body,) in bodies]  # page, stand-down, page
            assert await _row(server, second) == (m.OutboxState.SENT, 1, False)
            assert relay.claims == claims  # the second page was not claimed by the relay
        finally:
            texts.let_go.set()
            relay.stop()
            await asyncio.wait_for(running, 10)
        assert server.desk.page_courier is None


async def _marked(server: Running, item_id: int) -> bool:
    return (await _row(server, item_id))[0] == m.OutboxState.SENT


@dataclass
class LostCourier:
    """A page courier whose process dies before it sends what it was handed."""

    relay: OutboxRelay
    handed: list[int] = field(default_factory=list)

    def claimed_until(self, now: datetime) -> datetime:
        return self.relay.claimed_until(now)

    def hand_over(self, pages: Sequence[ClaimedPage], household: str) -> None:
        self.handed += [page.id for page in pages]


@dataclass
class ProviderLog(TextMessages):
    """An SMS channel that can say what it took earlier: ``took`` by row id."""

    took: dict[int, Receipt] = field(default_factory=dict)

    async def find_sent(self, message: OutboxMessage, since: datetime) -> list[Receipt]:
        found = self.took.get(message.id)
        return [] if found is None else [found]


async def test_a_page_whose_hand_over_was_lost_is_looked_for_then_sent_at_its_next_attempt(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a page written claimed whose process died before or after sending it is
    in doubt: not due before its next attempt, then looked for at the provider; the one
    the provider took is settled without a second text, the other is sent."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test drives its own relay with its own SMS channel
        texts = ProviderLog()
        relay = OutboxRelay(server.engine, server.desk, clock, {"sms": texts})
        courier = LostCourier(relay)
        server.desk.page_courier = courier
        await publish_events(
            broker.host,
            broker.port,
            topic_prefix,
            [("H0010", "CB-H0010", "p1"), ("H0011", "CB-H0011", "p1")],
        )

        async def both_paged() -> bool:
            return len(courier.handed) == 2

        await eventually(both_paged, what="two pages handed over")
        first, second = courier.handed
        for page in (first, second):
            assert await _row(server, page) == (m.OutboxState.PENDING, 1, True)
        assert await relay.drain() == 0  # claimed: not due before its next attempt
        texts.took[first] = Receipt("SM-first", "queued")
        clock.advance(timedelta(seconds=5))
        assert await relay.drain() == 2
        assert [message.id for message in texts.sent] == [second]
        assert await _row(server, first) == (m.OutboxState.SENT, 2, False)
        assert await _row(server, second) == (m.OutboxState.SENT, 2, False)
        refs = await rows(server, select(m.OutboxItem.provider_ref).where(m.OutboxItem.id == first))
        assert refs == [("SM-first",)]


class PageMarksHeld(MarkHook):
    """A relay whose marks of dispatch pages as sent wait until ``let_go``."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.let_go = asyncio.Event()
        self.before_mark = self.let_go.wait

    def hooked(self, message: OutboxMessage) -> bool:
        return message.carer_id is not None


@dataclass
class HeldPages(TextMessages):
    """An SMS channel on which dispatch pages hang until ``let_go``."""

    let_go: asyncio.Event = field(default_factory=asyncio.Event)
    out: int = 0

    async def send(self, message: OutboxMessage) -> str:
        self.out += 1
        try:
            if message.carer_id is not None:
                await self.let_go.wait()
            return await super().send(message)
        finally:
            self.out -= 1


async def test_a_page_due_again_while_its_mark_is_written_is_not_sent_twice(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a page handed over whose send outlasts its claim, and whose mark as sent
    is still being written when the send ends, is not claimed and sent again by the
    relay's pass that found it due meanwhile: the pass waits for its phone's turn, then
    for the mark, and finds the page sent."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test runs its own relay with its own SMS channel
        texts = HeldPages()
        relay = PageMarksHeld(server.engine, server.desk, clock, {"sms": texts})
        running = asyncio.create_task(relay.run())
        try:
            await _paged_call(server, broker, topic_prefix)
            page = await scalar(server, select(func.max(m.OutboxItem.id)))

            async def page_out() -> bool:
                return texts.out == 1

            await eventually(page_out, within_s=5, what="the page being sent")
            clock.advance(timedelta(seconds=6))  # its claim runs out mid-send
            await asyncio.sleep(0.3)  # the relay's pass finds it due, waits for the turn
            texts.let_go.set()  # the send ends; its mark is held
            await asyncio.sleep(0.5)
            assert [t.id for t in texts.sent] == [page]
            relay.let_go.set()
            await eventually(lambda: _marked(server, page), within_s=5, what="the mark")
            await asyncio.sleep(0.3)
            assert [t.id for t in texts.sent] == [page]
            assert await _row(server, page) == (m.OutboxState.SENT, 1, False)
        finally:
            texts.let_go.set()
            relay.let_go.set()
            relay.stop()
            await asyncio.wait_for(running, 10)


class LinkBackHeld(OutboxRelay):
    """A relay whose taking up of a link back waits until let go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taking_up = asyncio.Event()
        self.let_go = asyncio.Event()

    async def channel_back(self, channel: str) -> None:
        self.taking_up.set()
        await self.let_go.wait()
        await super().channel_back(channel)


async def test_a_relay_stopped_while_it_takes_up_a_link_back_ends(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a stop() that comes while the relay makes a returned link's rows due ends
    the relay at once: the stop's wake-up is not cleared behind it (on a clock that does
    not move, as in the tests, the relay then slept for ever and the server's shutdown
    with it)."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()  # this test runs its own relay
        relay = LinkBackHeld(server.engine, server.desk, clock, {"sms": TextMessages()})
        relay.link_back("sms")
        running = asyncio.create_task(relay.run())
        try:
            await asyncio.wait_for(relay.taking_up.wait(), 5)
            relay.stop()
            relay.let_go.set()
            await asyncio.wait_for(running, 5)
        finally:
            relay.let_go.set()
            relay.stop()
            if not running.done():
                running.cancel()
