"""Several brokers, tried in turn (callcenter/brokers.py): the rule, then the server's
clients and the simulator's devices against two real mosquittos, one of them down.

Two separate mosquittos share nothing: each keeps its own sessions. These tests show
what that means (a message queued on the broker the server left waits there until the
server comes back to it), as docs/operations.md ("The broker tier") says. A cluster
sharing sessions (EMQX) is not tested here."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select

from callcenter.broker import EmbeddedBroker
from callcenter.brokers import BrokerAddress, Rotation, describe, parse_address
from callcenter.clock import ManualClock
from callcenter.config import Config
from callcenter.domain.calls import Actor, ActorKind, Cancel, CancelReason
from callcenter.ingest.protocol import subscription
from callcenter.store import models as m
from device_sim.district import district_devices
from device_sim.groundtruth import read_ground_truth
from device_sim.settings import SimulationSettings, SimulatorConfigError, parse_brokers
from device_sim.simulation import Simulation
from tests.desk_support import (
    MONDAY_MORNING,
    base_unit,
    count,
    desk_config,
    running_desk,
    scalar,
)
from tests.ingest_support import (
    eventually,
    ingest_config,
    publish_events,
    running_ingest,
    stored_event_keys,
)

pytestmark = pytest.mark.sqlite_only("the brokers are what is tested here, not the database")

OPERATOR = Actor(ActorKind.OPERATOR, "li.na")

# --- the rule ---------------------------------------------------------------------------


def _counting() -> Iterator[float]:
    """Waits 1, 2, 3, ... so a test sees which one a rotation drew."""
    return (float(n) for n in itertools.count(1))


A, B, C = BrokerAddress("a", 1883), BrokerAddress("b", 1883), BrokerAddress("c", 1884)


def test_a_client_goes_on_to_the_next_broker_and_waits_only_after_a_whole_round() -> None:
    """Test that each failure moves on to the next broker at once, that the backoff is
    drawn only once every broker has failed in turn, and that a connection made starts
    the waits again from the first (and the next round from the broker it was on)."""
    rotation = Rotation((A, B, C), _counting)
    assert rotation.current == A
    assert [rotation.failed(), rotation.failed(), rotation.failed()] == [0.0, 0.0, 1.0]
    assert rotation.current == A
    assert [rotation.failed(), rotation.failed(), rotation.failed()] == [0.0, 0.0, 2.0]
    rotation.failed()  # A refused again; B takes the connection
    assert rotation.current == B
    rotation.connected()
    # B is lost: C at once, then A, and only after A (the round from B) a wait, the first.
    assert [rotation.failed(), rotation.failed(), rotation.failed()] == [0.0, 0.0, 1.0]
    assert rotation.current == B


def test_one_broker_waits_after_every_failure_as_before() -> None:
    """Test that with one broker every failure draws the next wait, as a single broker's
    reconnects always did, and that a connection starts them again."""
    rotation = Rotation((A,), _counting)
    assert [rotation.failed(), rotation.failed()] == [1.0, 2.0]
    rotation.connected()
    assert rotation.failed() == 1.0
    assert rotation.current == A
    assert rotation.next_try(1.0) == "reconnecting in 1.0 s"


def test_a_restarted_client_begins_again_at_the_first_broker() -> None:
    """Test that start_over (a device's power back) goes back to the first broker with
    fresh waits, wherever the client was."""
    rotation = Rotation((A, B), _counting)
    rotation.failed()
    rotation.connected()
    assert rotation.current == B
    rotation.start_over()
    assert rotation.current == A
    assert [rotation.failed(), rotation.failed()] == [0.0, 1.0]


def test_the_log_and_health_say_where_a_client_goes_next() -> None:
    """Test the words a failure's log line and /healthz use."""
    rotation = Rotation((A, B), _counting)
    assert rotation.next_try(rotation.failed()) == "trying b:1883 now"
    assert rotation.next_try(rotation.failed()) == (
        "every broker failed in turn; trying a:1883 in 1.0 s"
    )
    assert describe((A,)) == "the broker a:1883"
    assert describe((A, C)) == "any of the brokers a:1883, c:1884"


def test_an_address_is_read_with_its_port_or_the_default() -> None:
    """Test host, host:port and [IPv6]:port, and that spaces around an entry go."""
    assert parse_address(" mqtt1 ", 1883) == BrokerAddress("mqtt1", 1883)
    assert parse_address("10.0.0.7:1884", 1883) == BrokerAddress("10.0.0.7", 1884)
    assert parse_address("[::1]:1885", 1883) == BrokerAddress("::1", 1885)
    assert parse_address("[::1]", 1883) == BrokerAddress("::1", 1883)
    with pytest.raises(ValueError, match="not host or host:port"):
        parse_address("[::1]1885", 1883)


def test_the_simulators_broker_option_takes_a_list() -> None:
    """Test that --broker-host takes several brokers, each with --broker-port unless it
    says its own, and refuses a bad list with the option's name."""
    assert parse_brokers("mqtt1,mqtt2:1884", 1883) == (
        BrokerAddress("mqtt1", 1883),
        BrokerAddress("mqtt2", 1884),
    )
    for bad, said in (
        ("mqtt1,,mqtt2", "empty broker entry"),
        ("mqtt1,mqtt1:1883", "names the same broker"),
        ("mqtt1:0", "not a TCP port"),
    ):
        with pytest.raises(SimulatorConfigError, match=said) as caught:
            parse_brokers(bad, 1883)
        assert "--broker-host" in caught.value.detail
    with pytest.raises(SimulatorConfigError, match="broker port 70000"):
        parse_brokers("mqtt1", 70000)


# --- against real mosquittos --------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_brokers(tmp_path: Path, *, first_up: bool) -> AsyncIterator[tuple[Any, Any]]:
    """Two mosquittos of the test's own on free ports, the first started only when
    ``first_up``; both stopped at the end, whatever the test did to them."""
    first = EmbeddedBroker(tmp_path / "first")
    second = EmbeddedBroker(tmp_path / "second")
    try:
        if first_up:
            await first.start()
        await second.start()
        yield first, second
    finally:
        await first.stop()
        await second.stop()


def hosts(*brokers: EmbeddedBroker) -> list[str]:
    return [f"{broker.host}:{broker.port}" for broker in brokers]


def where(broker: EmbeddedBroker) -> str:
    return f"{broker.host}:{broker.port}"


@pytest.mark.parametrize("own_process", [False, True], ids=["ingest_here", "ingest_own_process"])
async def test_a_server_goes_on_through_whichever_of_its_brokers_is_up(
    tmp_path: Path, topic_prefix: str, seeded_database_url: str, own_process: bool
) -> None:
    """Test that a server given two brokers, the first down at its start, ingests through
    the second and names it in /healthz; that when the broker it is on is killed, ingest
    (here or in its own process) and the command link both move to the other at once and
    go on: a press published there opens a call, and a command reaches a device there."""
    async with two_brokers(tmp_path, first_up=False) as (first, second):
        config = desk_config(
            host="",
            port=1883,
            hosts=hosts(first, second),
            prefix=topic_prefix,
            database_url=seeded_database_url,
        )
        config = config.model_copy(
            update={"ingest": config.ingest.model_copy(update={"own_process": own_process})}
        )
        async with running_desk(config, ManualClock(MONDAY_MORNING)) as server:
            await publish_events(
                second.host, second.port, topic_prefix, [("H0006", "CB-H0006", "p1")]
            )

            async def calls(wanted: int) -> bool:
                return await count(server, m.Call) == wanted

            await eventually(lambda: calls(1), what="the press on the second broker's call")

            async def on(broker: EmbeddedBroker) -> bool:
                report = await server.health.check()
                ingest, commands = report.part("ingest"), report.part("device_commands")
                return (ingest.facts["broker"], commands.facts["broker"]) == (where(broker),) * 2

            await eventually(lambda: on(second), what="ingest and the command link on the second")
            report = await server.health.check()
            assert report.part("ingest").detail.startswith(
                f"subscribed to the broker {where(second)}"
            )

            await first.start()
            second.kill()
            await eventually(lambda: on(first), within_s=15, what="both clients on the first")
            await publish_events(
                first.host, first.port, topic_prefix, [("H0007", "CB-H0007", "p1")]
            )
            await eventually(lambda: calls(2), what="the press on the first broker's call")

            call_id = await scalar(server, select(m.Call.id).order_by(m.Call.id).limit(1))
            async with base_unit(first, topic_prefix, "H0006") as device:
                await server.desk.command(call_id, Cancel(OPERATOR, CancelReason.ENTERED_IN_ERROR))
                async with asyncio.timeout(15):
                    message = await anext(aiter(device.messages))
            assert message.topic.value == f"{topic_prefix}/v1/H0006/BU-H0006/command"


async def test_a_message_queued_on_the_broker_the_server_left_waits_there_for_it(
    tmp_path: Path, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test what two separate mosquittos mean for a persistent session: ingest that moved
    to the second broker does not get a press a device published to the first meanwhile
    (the first keeps it in ingest's session there); it gets it, once, when it comes back
    to the first because the second went away."""
    async with two_brokers(tmp_path, first_up=True) as (first, second):
        config = ingest_config(host="", port=1883, hosts=hosts(first, second), prefix=topic_prefix)
        async with running_ingest(config, seeded_database_url) as ingest:
            assert ingest.stats.broker == where(first)
            await first.stop()  # SIGTERM: it saves ingest's session with its subscription

            async def on(broker: EmbeddedBroker) -> bool:
                return ingest.stats.broker == where(broker)

            await eventually(lambda: on(second), what="ingest on the second broker")
            await first.start()
            await publish_events(first.host, first.port, topic_prefix, [("H0006", "CB-H0006", "a")])
            await publish_events(
                second.host, second.port, topic_prefix, [("H0007", "CB-H0007", "b")]
            )

            async def stored(*keys: tuple[str, str]) -> bool:
                return set(await stored_event_keys(seeded_database_url)) == set(keys)

            await eventually(lambda: stored(("CB-H0007", "b")), what="the press on the second")
            await asyncio.sleep(1.0)
            assert await stored(("CB-H0007", "b")), "ingest is not on the first broker"

            await second.stop()
            await eventually(lambda: on(first), what="ingest back on the first broker")
            await eventually(
                lambda: stored(("CB-H0007", "b"), ("CB-H0006", "a")),
                what="the press that waited on the first broker",
            )


async def hold_session(broker: EmbeddedBroker, config: Config) -> None:
    """Give ingest's client id a persistent session with its subscription on ``broker``,
    as docs/operations.md says to do once on every broker ("The broker tier"): connect,
    subscribe, leave. The broker then keeps what arrives for the server."""
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=config.broker.client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=False,
    ) as client:
        await client.subscribe(subscription(config.broker.topic_prefix), qos=1)


async def test_a_press_on_a_broker_where_the_server_never_subscribed_is_lost(
    tmp_path: Path, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test why every broker must hold the server's session before devices come to it:
    a press published to a broker on which ingest has never subscribed is delivered to
    nobody (mosquitto keeps nothing for a client it does not know), although the device
    was acknowledged; one published after ingest arrived there is stored."""
    async with two_brokers(tmp_path, first_up=False) as (first, second):
        config = ingest_config(host="", port=1883, hosts=hosts(first, second), prefix=topic_prefix)
        async with running_ingest(config, seeded_database_url) as ingest:
            assert ingest.stats.broker == where(second)
            await first.start()
            early, late = ("CB-H0006", "before"), ("CB-H0007", "after")
            await publish_events(first.host, first.port, topic_prefix, [("H0006", *early)])
            await second.stop()

            async def on_first() -> bool:
                return ingest.stats.broker == where(first)

            await eventually(on_first, what="ingest on the first broker")
            await publish_events(first.host, first.port, topic_prefix, [("H0007", *late)])

            async def stored_late() -> bool:
                return late in await stored_event_keys(seeded_database_url)

            await eventually(stored_late, what="the press after ingest came")
            assert early not in await stored_event_keys(seeded_database_url)


async def test_devices_and_ingest_move_between_brokers_and_nothing_is_lost(
    tmp_path: Path, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that simulated devices try their brokers in turn as the server does: the
    first down at the start, every device connects to the second; the second stopped
    mid-stream with the first back, devices and ingest move to the first and the stream
    goes on; and once ingest has been back to the second for what waited there, every
    event the brokers acknowledged is in the log exactly once. The first holds ingest's
    session from before (hold_session): devices that reach it before ingest does are
    kept for it."""
    truth_file = tmp_path / "truth.jsonl"
    async with two_brokers(tmp_path, first_up=True) as (first, second):
        brokers = hosts(first, second)
        config = ingest_config(host="", port=1883, hosts=brokers, prefix=topic_prefix)
        await hold_session(first, config)
        await first.stop()  # SIGTERM: it saves the session
        settings = SimulationSettings(
            brokers=parse_brokers(",".join(brokers), 1883),
            prefix=topic_prefix,
            ground_truth=truth_file,
            press_rate=100.0,
            max_events=600,
            heartbeat_interval_s=0,
            drain_timeout_s=60.0,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
            timeout_s=5.0,
            seed=7,
        )
        simulation = Simulation(settings, district_devices(30))

        async def stored_with(*keys: tuple[str, str]) -> bool:
            return set(keys) <= set(await stored_event_keys(seeded_database_url))

        async def stored_at_least(wanted: int) -> bool:
            return len(await stored_event_keys(seeded_database_url)) >= wanted

        async def on(broker: EmbeddedBroker) -> bool:
            return ingest.stats.broker == where(broker)

        async with running_ingest(config, seeded_database_url) as ingest:
            assert ingest.stats.broker == where(second)
            run = asyncio.create_task(simulation.run())
            await eventually(lambda: stored_at_least(150), within_s=60, what="150 events")
            await first.start()
            await second.stop()
            summary = await asyncio.wait_for(run, 120)
            await eventually(lambda: on(first), what="ingest subscribed on the first")
            counters = summary.as_dict()
            # Each of the 60 devices tried the first broker (down) before the second,
            # and lost the second mid-stream.
            assert counters["connect_failures"] >= 60
            assert counters["connection_losses"] >= 60

            # Everything the first took reaches ingest before a press published after
            # it (one subscriber, one queue, in order): then the first may go.
            marker = ("CB-H0031", "after-the-run")
            await publish_events(first.host, first.port, topic_prefix, [("H0031", *marker)])
            await eventually(lambda: stored_with(marker), what="the first broker drained")
            # What the second had taken and not yet handed over waits in ingest's
            # session there: bring it back, and send ingest to it.
            await second.start()
            await first.stop()
            truth = read_ground_truth(truth_file)
            assert truth.pending == 0, f"{truth.pending} events never acknowledged by a broker"
            await eventually(
                lambda: stored_with(*truth.sent), within_s=60, what="every event in the log"
            )
            # The backlog of a resumed session comes before its SUBACK: ingest names the
            # broker once subscribed.
            await eventually(lambda: on(second), what="ingest subscribed on the second")
    stored = await stored_event_keys(seeded_database_url)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(stored) - {marker} == set(truth.sent)
