"""Taking in a gone server's broker session (ingest/adopt.py), against a real mosquitto
and PostgreSQL: a server with a connection to the database is never counted gone, nor
one whose client id a newer server says; and a server alive on the broker after all
takes its session back, the holder gives up and does not try again at once, and
nothing is lost or stored twice."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from callcenter.broker import EmbeddedBroker
from callcenter.clock import SystemClock
from callcenter.config import Config
from callcenter.ingest import adopt
from callcenter.ingest.adopt import SessionAdoption
from callcenter.ingest.mqtt import ingest_client
from callcenter.ingest.service import ingest_topic
from callcenter.store.db import create_engine
from tests.ingest_support import (
    eventually,
    ingest_config,
    publish_events,
    running_ingest,
    stored_event_keys,
)

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True),
]


def _config(broker: EmbeddedBroker, prefix: str, client_id: str) -> Config:
    config = ingest_config(host=broker.host, port=broker.port, prefix=prefix, client_id=client_id)
    shared = config.broker.model_copy(update={"shared_group": "desk"})
    return config.model_copy(update={"broker": shared})


def _notice(holder: str, config: Config, broker: EmbeddedBroker) -> dict[str, Any]:
    """The ``session`` notice the server ``holder`` with ``config`` repeats."""
    return {
        "from": holder,
        "kind": adopt.NOTICE,
        "client_id": config.broker.client_id,
        "topic": ingest_topic(config),
        "broker": f"{broker.host}:{broker.port}",
    }


async def test_a_server_with_a_database_connection_or_a_successor_is_not_gone(
    broker: EmbeddedBroker,
    topic_prefix: str,
    seeded_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(adopt, "GONE_AFTER_S", 0.0)  # silent long enough already
    holder = _config(broker, topic_prefix, "desk-holder")
    engine = create_engine(seeded_database_url)
    alive_name = "callcenter:alive:1:aaaaaa"
    alive = create_engine(seeded_database_url, application_name=alive_name)
    try:
        adoption = SessionAdoption(holder, engine, SystemClock(), brokers=holder.broker.addresses)
        adoption.heard(_notice(alive_name, _config(broker, topic_prefix, "desk-alive"), broker))
        adoption.heard(_notice("callcenter:dead:2:bbbbbb", holder, broker))  # our own id
        dead = _config(broker, topic_prefix, "desk-dead")
        adoption.heard(_notice("callcenter:dead:3:cccccc", dead, broker))
        async with alive.connect():
            assert [s.client_id for s in await adoption.gone()] == ["desk-dead"]
        await alive.dispose()  # its last connection closes
        assert sorted(s.client_id for s in await adoption.gone()) == ["desk-alive", "desk-dead"]
        # desk-dead's server was started again: a new name, which says the same client id.
        adoption.heard(_notice(alive_name, dead, broker))
        # Say its session could not be taken in before (its /healthz fact): a server
        # with a connection again is alive, and nothing of it waits any more.
        adoption._failing[alive_name] = (datetime.now(UTC), "taken back")
        async with alive.connect():
            assert [s.client_id for s in await adoption.gone()] == []
        assert adoption.failing() == []
    finally:
        await alive.dispose()
        await engine.dispose()


async def test_a_server_alive_on_the_broker_takes_its_session_back_and_nothing_is_lost(
    broker: EmbeddedBroker,
    topic_prefix: str,
    seeded_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(adopt, "GONE_AFTER_S", 0.0)
    # The adoption stays on the session after taking in what it held, until it is taken.
    monkeypatch.setattr(adopt, "QUIET_S", 60.0)
    holder = _config(broker, topic_prefix, "desk-holder")
    peer = _config(broker, topic_prefix, "desk-peer")
    # The peer's session holds the subscription; the peer is away (cut off from the
    # database, say: silent, no connection), and the presses queue in its session.
    async with ingest_client(peer.broker, host=broker.host, port=broker.port) as client:
        await client.subscribe(ingest_topic(peer), qos=1)
    first = [(f"H{n:04d}", f"CB-H{n:04d}", f"alive-{n}") for n in range(600, 620)]
    await publish_events(broker.host, broker.port, topic_prefix, first)

    async def stored() -> list[tuple[str, str]]:
        keys = await stored_event_keys(seeded_database_url)
        return [key for key in keys if key[1].startswith("alive-")]

    engine = create_engine(seeded_database_url)
    adoption = SessionAdoption(holder, engine, SystemClock(), brokers=holder.broker.addresses)
    adoption.heard(_notice("callcenter:peer:4:dddddd", peer, broker))
    task = asyncio.create_task(adoption.run())
    try:
        with caplog.at_level(logging.INFO, logger="callcenter.ingest.adopt"):

            async def all_first() -> bool:
                return len(await stored()) == len(first)

            await eventually(all_first, within_s=30, what="the adopted session taken in")
            # The peer connects again, subscribing as ingest does on every connection.
            async with running_ingest(peer, seeded_database_url):

                async def gave_up() -> bool:
                    return any(
                        "lost the adopted session desk-peer" in r.message for r in caplog.records
                    )

                await eventually(gave_up, within_s=30, what="the holder giving the session up")
                assert await adoption.gone() == [], "not tried again at once"
                # /healthz says so: the peer's share waits in a session not taken in.
                (failing,) = adoption.failing()
                assert (failing.server, failing.client_id) == (
                    "callcenter:peer:4:dddddd",
                    "desk-peer",
                )
                assert failing.error and 0 < failing.next_try_in_s <= adopt.RETRY_FIRST_S
                assert adoption.released == 0
                later = [(f"H{n:04d}", f"CB-H{n:04d}", f"alive-{n}") for n in range(620, 630)]
                await publish_events(broker.host, broker.port, topic_prefix, later)

                async def all_later() -> bool:
                    return len(await stored()) == len(first) + len(later)

                await eventually(all_later, within_s=30, what="the peer storing its share again")
        keys = await stored()
        assert len(keys) == len(set(keys)) == len(first) + len(later)
        assert not any("released the broker session" in r.message for r in caplog.records)
    finally:
        adoption.stop()
        async with asyncio.timeout(15):
            await task
        await engine.dispose()
    # Stopped (the lease gone elsewhere), it says nothing is failing: the next holder does.
    assert adoption.failing() == []
