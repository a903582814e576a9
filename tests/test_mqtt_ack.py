"""The ack-after-commit mechanism, shown against a real mosquitto."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import time

import aiomqtt
import pytest
from paho.mqtt import publish

from callcenter.broker import EmbeddedBroker
from callcenter.config import BrokerConfig
from callcenter.ingest import mqtt
from callcenter.ingest.mqtt import (
    AckAfterCommit,
    _paho,
    _ReadAhead,
    backoff_delays,
    ingest_client,
)


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


async def test_a_bounded_wait_ends_empty_when_quiet_and_fails_when_the_session_is_taken(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that next_batch_within returns nothing after a quiet wait, takes what comes
    after it (nothing was dropped by the wait that ended), and raises once another client
    connects with the same client id (how adopting a session learns it was taken back)."""
    topic = f"{topic_prefix}/events"
    await _session_start(broker, "ingest-w", topic)
    client = ingest_client(_config("ingest-w"), host=broker.host, port=broker.port)
    async with client:
        await client.subscribe(topic, qos=1)
        session = AckAfterCommit(client)
        assert await session.next_batch_within(10, 0.3) == []
        bodies = [f"{i:03d}".encode() for i in range(3)]
        await _publish(broker, topic, bodies)
        got: list[aiomqtt.Message] = []
        async with asyncio.timeout(5):
            while len(got) < 3:
                got.extend(await session.next_batch_within(10, 0.3))
        session.acknowledge(got)
        assert [m.payload for m in got] == bodies
        with pytest.raises(aiomqtt.MqttError):
            async with ingest_client(_config("ingest-w"), host=broker.host, port=broker.port):
                async with asyncio.timeout(10):
                    while True:
                        await session.next_batch_within(10, 0.3)


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    """Test that reconnect delays grow exponentially, stay under the cap and vary."""
    delays = backoff_delays(first_s=0.5, cap_s=8.0)
    # Enough draws that "grown past 2 s" cannot fail by chance: each draw after the sixth
    # is uniform over 0.25-8 s, so 54 of them all under 2 s has odds below 1e-30.
    samples = [next(delays) for _ in range(60)]
    assert all(0.25 <= d <= 8.0 for d in samples)
    assert max(samples[6:]) > 2.0
    assert len({round(d, 6) for d in samples}) > 6


def _bytes_waiting(sock: socket.socket) -> int:
    """How many bytes the socket holds that nobody has read."""
    waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    count: int = struct.unpack("i", waiting)[0]
    return count


def _publish_holding_the_loop(
    broker: EmbeddedBroker, topic: str, bodies: list[bytes], sock: socket.socket
) -> None:
    """Publish ``bodies`` with the event loop held (as a commit on SQLite holds it), until
    the broker has sent every one of them to the ingest client's socket ``sock``."""
    publish.multiple(
        [(topic, body, 1, False) for body in bodies], hostname=broker.host, port=broker.port
    )
    # A QoS 1 PUBLISH: fixed header (2), topic length (2) and topic, id (2), payload.
    expected = sum(2 + 2 + len(topic) + 2 + len(body) for body in bodies)
    deadline = time.monotonic() + 30
    while _bytes_waiting(sock) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _bytes_waiting(sock) >= expected


async def test_a_batch_takes_what_the_socket_holds(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that one batch takes every message that has reached the socket, not only
    what aiomqtt had read off it: messages that arrive while the event loop is busy
    (committing the batch before) are one batch, not one each, and come in order."""
    topic = f"{topic_prefix}/events"
    await _session_start(broker, "ingest-d", topic)
    bodies = [f"{i:03d}".encode() for i in range(60)]
    client = ingest_client(_config("ingest-d"), host=broker.host, port=broker.port)
    async with client:
        session = AckAfterCommit(client)
        sock = _paho(client).socket()
        _publish_holding_the_loop(broker, topic, bodies, sock)
        async with asyncio.timeout(5):
            batch = await session.next_batch(100)
        assert [m.payload for m in batch] == bodies
        session.acknowledge(batch)
        await asyncio.sleep(0.2)
    client = ingest_client(_config("ingest-d"), host=broker.host, port=broker.port)
    async with client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await AckAfterCommit(client).next_batch(10)


async def test_the_ingest_socket_sends_at_once(broker: EmbeddedBroker) -> None:
    """Test that the ingest client's socket has TCP_NODELAY, so acknowledgements are
    not held back (aiomqtt sets its socket options only on a plain socket)."""
    client = ingest_client(_config("ingest-e"), host=broker.host, port=broker.port)
    async with client:
        sock = _paho(client).socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_reading_ahead_hands_paho_the_bytes_as_asked() -> None:
    """Test that the read-ahead socket gives back exactly the bytes sent, in the sizes
    asked for, tells what it holds (nothing while ingest has enough waiting), and passes
    on an empty socket and a closed one."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        room = [True]
        reader = _ReadAhead(ours, lambda: room[0])
        with pytest.raises(BlockingIOError):
            reader.recv(1)
        theirs.sendall(b"\x30\x05hello\x40\x02\x00\x01")
        deadline = time.monotonic() + 10
        while _bytes_waiting(ours) < 11 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.recv(1) == b"\x30"
        assert reader.pending() == 10
        room[0] = False  # ingest has enough waiting: aiomqtt's reader is to read no more
        assert reader.pending() == 0
        room[0] = True
        assert [reader.recv(1), reader.recv(5), reader.recv(100)] == [
            b"\x05",
            b"hello",
            b"\x40\x02\x00\x01",
        ]
        assert reader.pending() == 0
        with pytest.raises(BlockingIOError):
            reader.recv(1)
        theirs.close()
        assert reader.recv(1) == b""
    finally:
        ours.close()


async def test_what_is_read_ahead_is_taken_though_the_socket_has_nothing_more(
    broker: EmbeddedBroker, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that messages read off the socket but not yet taken (aiomqtt's reader stops
    reading ahead once enough wait) come in the next batches, though the socket, empty
    by then, never becomes readable again to wake anyone."""
    monkeypatch.setattr(mqtt, "_QUEUED_AT_MOST", 3)
    topic = f"{topic_prefix}/events"
    await _session_start(broker, "ingest-f", topic)
    bodies = [f"{i:03d}".encode() for i in range(40)]
    client = ingest_client(_config("ingest-f"), host=broker.host, port=broker.port)
    async with client:
        session = AckAfterCommit(client)
        sock = _paho(client).socket()
        _publish_holding_the_loop(broker, topic, bodies, sock)
        await asyncio.sleep(0.2)  # aiomqtt's reader takes its few and stops
        got: list[bytes] = []
        async with asyncio.timeout(10):
            while len(got) < len(bodies):
                batch = await session.next_batch(7)
                assert 1 <= len(batch) <= 7
                got.extend(bytes(m.payload) for m in batch)
                session.acknowledge(batch)
        assert got == bodies
