"""A carer is never rung twice for one step because of a crash: a ring whose outcome is
unknown (the process died between Twilio taking the call and our commit of it) is looked
for in Twilio's call list before it is placed again. The real twilio library places
calls at the fake Twilio the running server uses, on a real broker and database, on
virtual time; the test drives its own OutboxRelay, as a restarted process would.

"Killing" the sender: as in tests/test_sms_reconcile.py, a sender (tests/outbox_support.py)
that places the call through the real TwilioVoice and then raises a BaseException, which
nothing in the relay catches, so the claim is committed and the settle never runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from callcenter.app import Running
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.engine.outbox import OutboxRelay
from callcenter.fake_twilio import FakeTwilio
from callcenter.notify.voice import TwilioVoice, VoiceLine
from callcenter.store import models as m
from tests.desk_support import MONDAY_MORNING, desk_config, rows, running_desk, scalar
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually, publish_events
from tests.outbox_support import KilledMidSend, ListUnreachable, ProcessKilled, closed_port
from tests.voice_support import RING_AFTER


def _voice(server: Running, base_url: str | None = None) -> TwilioVoice:
    """A sender of calls as the server's own: its account, public address and line."""
    account = replace(
        server.sms_account,
        public_url=server.web_url,
        api_base_url=base_url or server.sms_account.api_base_url,
        timeout_s=5.0,
    )
    return TwilioVoice(account, VoiceLine.from_config(server.config.voice, account))


async def _die_placing(server: Running, clock: ManualClock, *, before_request: bool) -> None:
    """A relay that places the ring (or, ``before_request``, not even that), then dies."""
    async with _voice(server) as calls:
        dying = OutboxRelay(
            server.engine,
            server.desk,
            clock,
            {"voice": KilledMidSend(calls, before_request=before_request)},
        )
        with pytest.raises(ProcessKilled):
            await dying.drain()


async def _restarted(server: Running, clock: ManualClock) -> int:
    """A restarted process's relay goes through what is due; the rows it settled."""
    async with _voice(server) as calls:
        return await OutboxRelay(server.engine, server.desk, clock, {"voice": calls}).drain()


@contextlib.asynccontextmanager
async def _ringing(
    broker: EmbeddedBroker, prefix: str, database_url: str, household: str
) -> AsyncIterator[tuple[Running, ManualClock, FakeTwilio, m.OutboxItem]]:
    """The server, its relay stopped (the test drives its own, as a restarted process
    would), with a ring due for ``household``'s paged carer: the server, its clock, its
    fake Twilio and the ring's row."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=prefix, database_url=database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        server.relay.stop()
        row = await _ring_row(server, broker, prefix, clock, household)
        yield server, clock, fake_of(server), row


async def _ring_row(
    server: Running, broker: EmbeddedBroker, prefix: str, clock: ManualClock, household: str
) -> m.OutboxItem:
    """Press in ``household`` and let the page's minute run out: the ring's voice row,
    written and not yet sent (the server's own relay is stopped)."""
    await publish_events(broker.host, broker.port, prefix, [(household, f"CB-{household}", "p1")])

    async def paged() -> bool:
        return await scalar(server, select(m.OutboxItem.id)) is not None

    await eventually(paged, what="a carer paged")
    clock.advance(RING_AFTER + timedelta(seconds=1))

    async def ring_written() -> bool:
        voice = await rows(server, select(m.OutboxItem.id).where(m.OutboxItem.channel == "voice"))
        return bool(voice)

    await eventually(ring_written, what="the ring's voice row")
    return await _row(server)


async def _row(server: Running) -> m.OutboxItem:
    row = await scalar(server, select(m.OutboxItem).where(m.OutboxItem.channel == "voice"))
    assert isinstance(row, m.OutboxItem)
    return row


async def test_a_ring_placed_before_the_process_died_is_found_not_placed_again(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test the Must-show: the call Twilio took just before the process died is found in
    Twilio's call list after the restart; the row is settled with that CallSid, and the
    carer's phone was rung exactly once."""
    async with _ringing(broker, topic_prefix, seeded_database_url, "H0011") as rung_at:
        server, clock, fake, row = rung_at
        await _die_placing(server, clock, before_request=False)
        (rung,) = fake.calls_to(row.address)
        row = await _row(server)
        assert (row.state, row.attempts, row.provider_ref) == ("pending", 1, None)
        assert row.sending_since is not None  # in doubt

        clock.advance(timedelta(seconds=10))  # its retry is due, the carer still paged
        assert await _restarted(server, clock) == 1
        row = await _row(server)
        assert (row.state, row.provider_ref, row.sending_since) == ("sent", rung.sid, None)
        assert fake.calls_to(row.address) == [rung]


async def test_a_ring_the_process_died_before_placing_is_placed_once(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a ring in doubt that never reached Twilio (not in its call list) is
    placed at the next attempt, once."""
    async with _ringing(broker, topic_prefix, seeded_database_url, "H0012") as rung_at:
        server, clock, fake, row = rung_at
        await _die_placing(server, clock, before_request=True)
        assert fake.calls_to(row.address) == []
        clock.advance(timedelta(seconds=10))
        assert await _restarted(server, clock) == 1
        (rung,) = fake.calls_to(row.address)
        row = await _row(server)
        assert (row.state, row.provider_ref) == ("sent", rung.sid)


async def test_a_ring_in_doubt_is_not_placed_again_while_the_call_list_cannot_be_read(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that, unlike a dispatch text, a ring in doubt is never repeated blind: while
    Twilio's call list cannot be read, the row waits, still in doubt, and the phone has
    been rung once."""
    async with _ringing(broker, topic_prefix, seeded_database_url, "H0013") as rung_at:
        server, clock, fake, row = rung_at
        await _die_placing(server, clock, before_request=False)
        clock.advance(timedelta(seconds=10))
        nowhere_url = f"http://127.0.0.1:{closed_port()}"
        async with _voice(server) as calls, _voice(server, nowhere_url) as nowhere:
            blind = OutboxRelay(
                server.engine, server.desk, clock, {"voice": ListUnreachable(calls, nowhere)}
            )
            assert await blind.drain() == 0
        row = await _row(server)
        assert row.state == "pending" and row.sending_since is not None
        assert "could not be checked" in row.last_error
        assert len(fake.calls_to(row.address)) == 1
