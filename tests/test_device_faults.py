"""Devices that misbehave are still heard: an event id used again for something else,
and a clock that is wrong (issue 17 D and E). The whole server, on both databases."""

from __future__ import annotations

from datetime import timedelta

import aiomqtt
from sqlalchemy import select

from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.config import Config
from callcenter.domain.call_types import CallType
from callcenter.domain.calls import Actor, ActorKind, Cancel, CancelReason
from callcenter.domain.events import EventKind
from callcenter.ingest.protocol import Channel, event_payload, heartbeat_payload, topic_for
from callcenter.store import models as m
from tests.desk_support import MONDAY_MORNING, count, desk_config, history, rows, running_desk
from tests.ingest_support import eventually

SUPERVISOR = Actor(ActorKind.SUPERVISOR, "sup")


def _config(broker: EmbeddedBroker, prefix: str, database_url: str) -> Config:
    """The desk's test configuration with ingest's own clock tolerances (5 min ahead, a
    day behind): the devices here stamp their messages by the desk's virtual time."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=prefix, database_url=database_url
    )
    ingest = config.ingest.model_copy(
        update={"max_clock_skew_s": 300.0, "max_clock_lag_s": 86400.0}
    )
    return config.model_copy(update={"ingest": ingest})


def _ms(clock: ManualClock, shift: timedelta = timedelta(0)) -> int:
    return int((clock.now() + shift).timestamp() * 1000)


async def _publish(broker: EmbeddedBroker, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, payload, qos=1)


async def _calls(server: object, household_id: int) -> list[m.Call]:
    found = await rows(
        server,  # type: ignore[arg-type]
        select(m.Call).where(m.Call.household_id == household_id).order_by(m.Call.id),
    )
    return [call for (call,) in found]


async def test_an_alarm_under_a_used_id_is_raised_and_the_conflict_kept(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a press whose id the device used before for another press (its counter
    started again) opens a call all the same, noted as a reused id; the conflict keeps
    both contents; a redelivery of it is stored once; and a cancel under a used id is
    recorded but closes nothing."""
    clock = ManualClock(MONDAY_MORNING)
    topic = topic_for(topic_prefix, "H0001", "CB-H0001", Channel.EVENT)
    async with running_desk(_config(broker, topic_prefix, seeded_database_url), clock) as server:
        await _publish(broker, topic, event_payload("e1", EventKind.EMERGENCY_PRESS, _ms(clock)))

        async def calls_opened(n: int) -> bool:
            return await count(server, m.Call) >= n

        await eventually(lambda: calls_opened(1), what="the first call")
        [first] = await _calls(server, 1)
        await server.desk.command(first.id, Cancel(SUPERVISOR, CancelReason.ENTERED_IN_ERROR))

        clock.advance(timedelta(hours=3))
        again = event_payload("e1", EventKind.EMERGENCY_PRESS, _ms(clock), data={"boot": 2})
        await _publish(broker, topic, again)
        await eventually(lambda: calls_opened(2), what="the second press's call")
        await _publish(broker, topic, again)  # the device re-sends it: stored once
        cancel = event_payload("e1", EventKind.CANCEL, _ms(clock))
        await _publish(broker, topic, cancel)

        async def settled() -> bool:
            # Not ingest's message count: it also counts the server's own device
            # commands (the first call's "call_closed"), heard back on its subscription.
            stats = server.ingest.stats
            return stats.conflicts >= 2 and stats.duplicates >= 1

        await eventually(settled, what="every message handled")
        calls = await _calls(server, 1)
        conflicts = [c for (c,) in await rows(server, select(m.EventConflict))]
        events = [
            e for (e,) in await rows(server, select(m.DeviceEvent).order_by(m.DeviceEvent.id))
        ]
        second_history = await history(server, calls[1].id)

    assert [call.call_type for call in calls] == [CallType.EMERGENCY, CallType.EMERGENCY]
    assert calls[0].closed_at is not None and calls[1].closed_at is None
    assert calls[1].opened_at == MONDAY_MORNING + timedelta(hours=3)
    assert sorted(c.kind for c in conflicts) == ["cancel", "emergency_press"]
    press = next(c for c in conflicts if c.kind == "emergency_press")
    assert press.data == {"boot": 2}
    assert press.device_time == MONDAY_MORNING + timedelta(hours=3)
    stored_first = next(e for e in events if e.id == press.stored_id)
    assert (stored_first.event_id, stored_first.data) == ("e1", {})
    raised = next(e for e in events if e.id == press.raised_id)
    assert raised.event_id.startswith("e1~") and raised.kind == "emergency_press"
    assert next(c for c in conflicts if c.kind == "cancel").raised_id is None
    noted = [h for h in second_history if h.action == "event_id_reused"]
    assert noted and noted[0].detail["event_id"] == "e1"
    assert noted[0].detail["first"]["kind"] == "emergency_press"
    assert server.ingest.stats.conflicts == 2
    assert server.ingest.stats.duplicates == 1


async def test_a_wrong_clock_is_kept_and_raises_one_device_fault(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that presses stamped in 2001 and ten days back are stored and open a call at
    the server's time, with their skew recorded, and that the wrong clock raises one
    device_clock fault for the household however many messages show it."""
    clock = ManualClock(MONDAY_MORNING)
    events = topic_for(topic_prefix, "H0002", "CB-H0002", Channel.EVENT)
    beats = topic_for(topic_prefix, "H0002", "CB-H0002", Channel.HEARTBEAT)
    async with running_desk(_config(broker, topic_prefix, seeded_database_url), clock) as server:
        await _publish(
            broker, events, event_payload("old", EventKind.EMERGENCY_PRESS, 978_307_200_000)
        )
        await _publish(
            broker,
            events,
            event_payload("late", EventKind.EMERGENCY_PRESS, _ms(clock, -timedelta(days=10))),
        )
        await _publish(broker, beats, heartbeat_payload(0))

        async def handled() -> bool:
            stats = server.ingest.stats
            seen = stats.messages - stats.own_commands
            return seen >= 3 and await count(server, m.Call) >= 2

        await eventually(handled, what="the presses and the fault handled")
        calls = await _calls(server, 2)
        stored = [
            e for (e,) in await rows(server, select(m.DeviceEvent).order_by(m.DeviceEvent.id))
        ]

    by_type = {call.call_type: call for call in calls}
    assert set(by_type) == {CallType.EMERGENCY, CallType.DEVICE_CLOCK}
    assert by_type[CallType.EMERGENCY].opened_at == MONDAY_MORNING
    presses = [e for e in stored if e.kind == "emergency_press"]
    assert [e.clock_skew_s for e in presses] == [
        978_307_200 - MONDAY_MORNING.timestamp(),
        -10 * 86400.0,
    ]
    faults = [e for e in stored if e.kind == "device_clock_wrong"]
    assert len(faults) == 1
    assert faults[0].data["skew_s"] == round(978_307_200 - MONDAY_MORNING.timestamp(), 3)
