"""MQTT connection for ingest: a persistent session whose messages are acknowledged
only after they are committed.

aiomqtt 2.x sends PUBACK as soon as paho hands it a message, before we have stored it;
a crash then would lose an alarm the broker believes delivered. paho-mqtt underneath
can leave acknowledgement to the application (``manual_ack_set`` / ``ack``), and
aiomqtt has no public API for that yet (aiomqtt issue #345, draft PR #346). This module
is the one place that reaches into aiomqtt's paho client for it, so the day aiomqtt
grows the API only this file changes. tests/test_mqtt_ack.py shows the mechanism holds.

Manual acknowledgement must be switched on before connecting: messages the broker
replays from the session on connect would otherwise be acknowledged at once.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator
from typing import Any

import aiomqtt

from callcenter.config import BrokerConfig


def ingest_client(config: BrokerConfig, *, host: str, port: int) -> aiomqtt.Client:
    """A new MQTT client for ingest: persistent session, manual acknowledgement on."""
    client = aiomqtt.Client(
        host,
        port,
        identifier=config.client_id,
        username=config.username or None,
        password=config.password or None,
        # MQTT 3.1.1, not 5: paho builds a properties object for every v5 PUBLISH,
        # which cost more than half of ingest's time per message (docs/ingest.md).
        protocol=aiomqtt.ProtocolVersion.V311,
        # Never a clean session: the broker's session holds whatever arrived while we
        # were away, and the messages we had not acknowledged before a crash.
        clean_session=False,
        keepalive=config.keepalive_s,
        timeout=10,
        # Acknowledgements are tiny packets; Nagle's algorithm would hold them back.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    _paho(client).manual_ack_set(True)
    return client


def _paho(client: aiomqtt.Client) -> Any:
    return client._client


def _inbox(client: aiomqtt.Client) -> asyncio.Queue[aiomqtt.Message]:
    queue: asyncio.Queue[aiomqtt.Message] = client._queue
    return queue


class AckAfterCommit:
    """Reads messages in batches from a connected client and acknowledges them on request.

    Acknowledgements go out in the order the messages were received. A message read on
    one connection is never acknowledged on another: after a reconnect the broker
    redelivers it, and the (device, event id) key keeps the store free of doubles.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._messages = client.messages
        self._inbox = _inbox(client)

    async def next_batch(self, limit: int) -> list[aiomqtt.Message]:
        """Wait for one message, then take whatever else is already queued, up to limit.

        Raises aiomqtt.MqttError when the connection is lost while waiting.
        """
        batch = [await anext(self._messages)]
        while len(batch) < limit:
            try:
                batch.append(self._inbox.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    def acknowledge(self, messages: list[aiomqtt.Message]) -> None:
        """Send PUBACK for each QoS 1 message, in order. Harmless after a disconnect."""
        paho = _paho(self._client)
        for message in messages:
            if message.qos > 0:
                paho.ack(message.mid, message.qos)


def backoff_delays(first_s: float = 0.5, cap_s: float = 30.0) -> Iterator[float]:
    """Reconnect waits: exponential up to cap, with full jitter so a fleet spreads out."""
    ceiling = first_s
    while True:
        yield random.uniform(first_s / 2, ceiling)
        ceiling = min(cap_s, ceiling * 2)
