"""The ack-after-commit mechanism, shown against a real mosquitto."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from callcenter.broker import EmbeddedBroker
from callcenter.config import BrokerConfig
from callcenter.ingest.mqtt import AckAfterCommit, backoff_delays, ingest_client


def _config(client_id: str) -> BrokerConfig:
    return BrokerConfig(client_id=client_id)


async def _publish(broker: EmbeddedBroker, topic: str, bodies: list[bytes]) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as publisher:
        for body in bodies:
            await publisher.publish(topic, body, qos=1)


async def _read_all(
    broker: EmbeddedBroker, client_id: str, topic: str, *, acknowledge: bool, expect: int
) -> list[bytes]:
    """Connect the ingest session, read up to ``expect`` messages, optionally ack them,
    then drop the connection the way a crash would (no clean DISCONNECT matters here:
    the broker keeps the session either way)."""
    received: list[aiomqtt.Message] = []
    client = ingest_client(_config(client_id), host=broker.host, port=broker.port)
    async with client:
        await client.subscribe(topic, qos=1)
        session = AckAfterCommit(client)
        async with asyncio.timeout(5):
            while len(received) < expect:
                received.extend(await session.next_batch(100))
        if acknowledge:
            session.acknowledge(received)
        # Give the PUBACKs time to leave before the socket closes.
        await asyncio.sleep(0.2)
    return [bytes(m.payload) for m in received]  # type: ignore[arg-type]


async def _session_start(broker: EmbeddedBroker, client_id: str, topic: str) -> None:
    client = ingest_client(_config(client_id), host=broker.host, port=broker.port)
    async with client:
        await client.subscribe(topic, qos=1)


async def test_unacknowledged_messages_come_back_on_reconnect(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that messages read but not acknowledged are redelivered on the next connection,
    and once acknowledged are not delivered again."""
    topic = f"{topic_prefix}/events"
    await _session_start(broker, "ingest-a", topic)
    bodies = [f"event-{i}".encode() for i in range(5)]
    await _publish(broker, topic, bodies)

    first = await _read_all(broker, "ingest-a", topic, acknowledge=False, expect=5)
    assert first == bodies
    second = await _read_all(broker, "ingest-a", topic, acknowledge=True, expect=5)
    assert second == bodies, "the broker must redeliver what was never acknowledged"

    client = ingest_client(_config("ingest-a"), host=broker.host, port=broker.port)
    async with client:
        session = AckAfterCommit(client)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await session.next_batch(10)


async def test_plain_aiomqtt_would_lose_the_messages(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that without the shim aiomqtt acknowledges on receipt, so a crash before the
    commit loses the messages: the reason the shim exists."""
    topic = f"{topic_prefix}/events"
    identifier = "plain-ingest"

    def plain() -> aiomqtt.Client:
        return aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=identifier,
            clean_session=False,
        )

    async with plain() as client:
        await client.subscribe(topic, qos=1)
    await _publish(broker, topic, [b"one", b"two"])
    async with plain() as client:
        async with asyncio.timeout(5):
            got = [await anext(client.messages) for _ in range(2)]
        assert [m.payload for m in got] == [b"one", b"two"]
        await asyncio.sleep(0.2)
    # "Crashed" before storing anything: nothing comes back.
    async with plain() as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await anext(client.messages)


async def test_batches_take_what_is_waiting_in_order(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that next_batch returns queued messages in arrival order, capped at the limit."""
    topic = f"{topic_prefix}/events"
    await _session_start(broker, "ingest-b", topic)
    bodies = [f"{i:03d}".encode() for i in range(50)]
    await _publish(broker, topic, bodies)
    client = ingest_client(_config("ingest-b"), host=broker.host, port=broker.port)
    async with client:
        session = AckAfterCommit(client)
        got: list[aiomqtt.Message] = []
        async with asyncio.timeout(5):
            while len(got) < 50:
                batch = await session.next_batch(20)
                assert 1 <= len(batch) <= 20
                got.extend(batch)
        session.acknowledge(got)
    assert [m.payload for m in got] == bodies


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    """Test that reconnect delays grow exponentially, stay under the cap and vary."""
    delays = backoff_delays(first_s=0.5, cap_s=8.0)
    # Enough draws that "grown past 2 s" cannot fail by chance: each draw after the sixth
    # is uniform over 0.25-8 s, so 54 of them all under 2 s has odds below 1e-30.
    samples = [next(delays) for _ in range(60)]
    assert all(0.25 <= d <= 8.0 for d in samples)
    assert max(samples[6:]) > 2.0
    assert len({round(d, 6) for d in samples}) > 6
