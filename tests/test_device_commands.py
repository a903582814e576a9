"""Commands to residents' devices ("help is on the way", "call closed") over the server's
own MQTT link, through a broker restart: the link comes back by itself, and a command
that could not go while it was down waits and goes once it is back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.app import Running, assembled_server
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.domain.calls import Actor, ActorKind, Cancel, CancelReason
from callcenter.engine import repository
from callcenter.engine.outbox import OutboxMessage
from callcenter.ingest.commands import DeviceCommandSender
from callcenter.store import models as m
from tests.desk_support import (
    MONDAY_MORNING,
    base_unit,
    desk_config,
    press_for_call,
    rows,
    running_desk,
)
from tests.ingest_support import eventually, ingest_config

OPERATOR = Actor(ActorKind.OPERATOR, "li.na")


async def command_rows(
    server: Running, channel: str | None = repository.DEVICE_COMMAND
) -> list[m.OutboxItem]:
    """The outbox's rows (of ``channel``, when given), oldest first."""
    query = select(m.OutboxItem).order_by(m.OutboxItem.id)
    if channel is not None:
        query = query.where(m.OutboxItem.channel == channel)
    found = await rows(server, query)
    return [row for (row,) in found]


async def test_a_command_decided_while_the_broker_is_down_reaches_the_device_once_it_is_back(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that when the broker restarts, the command link reconnects by itself; that a
    command whose publish failed while the link was down is not counted as sent but waits,
    pending; and that it reaches the device as soon as the link is back (the server's
    clock stands still here: no retry timer brings it, only the link coming back)."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    async with running_desk(config, ManualClock(MONDAY_MORNING)) as server:
        call_id = await press_for_call(server, broker.host, broker.port, topic_prefix, "H0006")
        async with base_unit(broker, topic_prefix, "H0006"):
            pass  # subscribed; the broker keeps the session while the unit is away

        await broker.stop()
        await server.desk.command(call_id, Cancel(OPERATOR, CancelReason.ENTERED_IN_ERROR))

        async def tried() -> bool:
            return any(row.attempts >= 1 for row in await command_rows(server))

        await eventually(
            tried, within_s=15, what="the command to be tried while the broker is down"
        )
        [row] = await command_rows(server)
        assert row.state == m.OutboxState.PENDING, "a failed publish must not count as sent"
        assert "broker" in row.last_error or "connected" in row.last_error, row.last_error

        await broker.start()
        async with base_unit(broker, topic_prefix, "H0006") as device:
            async with asyncio.timeout(15):
                message = await anext(aiter(device.messages))
        payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        assert (payload["command"], payload["call"]) == ("call_closed", call_id)

        async def settled() -> bool:
            [row] = await command_rows(server)
            return row.state == m.OutboxState.SENT

        await eventually(settled, what="the command marked sent")


async def test_the_link_coming_back_hurries_only_commands_that_wait_for_it(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that when the command link is back, the commands that failed and wait for
    their retry are due at once, while a command being sent at that moment (claimed, in
    flight), a text, and rows already settled keep their times, so nothing is claimed and
    sent twice."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    clock = ManualClock(MONDAY_MORNING)
    now = clock.now()
    later = now + timedelta(minutes=5)
    rows_made = {
        "waiting": (repository.DEVICE_COMMAND, m.OutboxState.PENDING, None),
        "in_flight": (repository.DEVICE_COMMAND, m.OutboxState.PENDING, now),
        "text": (repository.SMS, m.OutboxState.PENDING, None),
        "sent": (repository.DEVICE_COMMAND, m.OutboxState.SENT, None),
    }
    async with assembled_server(config, clock) as (server, _loops):
        async with AsyncSession(server.engine) as session, session.begin():
            ids = {
                name: (
                    await session.execute(
                        insert(m.OutboxItem)
                        .values(
                            channel=channel,
                            recipient="device:BU-H0001",
                            address=f"{topic_prefix}/v1/H0001/BU-H0001/command",
                            body='{"command": "call_closed", "call": 1}',
                            guard={},
                            state=state,
                            attempts=1,
                            created_at=now,
                            next_attempt_at=later,
                            last_error="no connection to the broker",
                            sending_since=since,
                        )
                        .returning(m.OutboxItem.id)
                    )
                ).scalar_one()
                for name, (channel, state, since) in rows_made.items()
            }
        await server.relay.channel_back(repository.DEVICE_COMMAND)
        due = {row.id: row.next_attempt_at for row in await command_rows(server, channel=None)}
    assert due[ids["waiting"]] == now
    assert [due[ids[name]] for name in ("in_flight", "text", "sent")] == [later] * 3


async def test_a_command_published_as_the_link_stops_is_acknowledged_before_it_closes(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that stopping the command link (the server shutting down) lets a command it
    has just published get the broker's acknowledgement before the link closes: the send
    succeeds, instead of waiting out its publish timeout (and the shutdown with it) and
    then counting as failed, to be sent again at the next start. The broker is paused
    around the stop, so its acknowledgement can only come after it."""
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    link = DeviceCommandSender(
        config.broker, brokers=config.broker.addresses, clock=ManualClock(MONDAY_MORNING)
    )
    running = asyncio.create_task(link.run())

    async def connected() -> bool:
        return link.connected

    await eventually(connected, what="the command link connected")
    command = OutboxMessage(
        id=1,
        call_id=1,
        channel=repository.DEVICE_COMMAND,
        recipient="device:BU-H0001",
        address=f"{topic_prefix}/v1/H0001/BU-H0001/command",
        body='{"command": "call_closed", "call": 1}',
        attempt=1,
    )
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        sending = asyncio.create_task(link.send(command))
        await asyncio.sleep(0)  # published; the acknowledgement is what it waits for
        link.stop()
        # Time enough for a link that did not wait to have said goodbye and closed.
        await asyncio.sleep(0.5)
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    await sending
    await running
