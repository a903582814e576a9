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
import struct
from collections.abc import Callable, Iterator
from typing import Any

import aiomqtt
from paho.mqtt.client import PUBACK, MQTTMessage

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
    paho = _paho(client)
    paho.manual_ack_set(True)
    # paho's messages go to aiomqtt's queue as they are: aiomqtt would make each its own
    # Message, and its topic an object that checks the name, at a tenth of ingest's time.
    paho.on_message = _enqueue(_inbox(client))
    _read_ahead(client)
    return client


class _ReadAhead:
    """paho's socket, read in large pieces.

    paho reads a packet in three system calls at least (its first byte, its length a
    byte at a time, then the rest), which under a backlog cost more than anything else
    it does per message. This reads whatever the socket holds at once and hands it to
    paho as asked. ``pending()`` tells what is held: aiomqtt's reader, made for the TLS
    sockets that hold data the same way, reads on while there is any, so nothing held
    waits for the socket to become readable again."""

    def __init__(self, sock: Any, room: Callable[[], bool]) -> None:
        self._sock = sock
        self._room = room
        self._held = b""
        self._at = 0
        # Bytes handed to paho so far: whether a read went anywhere.
        self.taken = 0

    def recv(self, size: int) -> bytes:
        if self._at >= len(self._held):
            read: bytes = self._sock.recv(_READ_SIZE)  # raises BlockingIOError if empty
            if len(read) <= size:
                self.taken += len(read)
                return read  # all of it (or b"": the broker closed the connection)
            self._held, self._at = read, 0
        start = self._at
        self._at = min(start + size, len(self._held))
        self.taken += self._at - start
        return self._held[start : self._at]

    def pending(self) -> int:
        """What aiomqtt's reader should read on for: nothing once ingest has messages
        enough waiting (``room``), so that a backlog waits in the broker, not in memory;
        what is held then is read by the next batch (AckAfterCommit)."""
        if not self._room():
            return 0
        inner = getattr(self._sock, "pending", None)
        return len(self._held) - self._at + (inner() if inner is not None else 0)

    def send(self, data: bytes) -> int:
        sent: int = self._sock.send(data)
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_READ_SIZE = 65536
# aiomqtt's reader reads ahead only while fewer messages than this wait to be taken:
# read without a bound, a backlog of 100,000 came into memory as fast as the broker
# sent it, and the collector's time grew with it.
_QUEUED_AT_MOST = 1000


def _read_ahead(client: aiomqtt.Client) -> None:
    """Give paho each new connection's socket as a _ReadAhead, before it sends a byte.
    The client's socket options are set here too: aiomqtt sets them only on a plain
    socket, and would pass this one over."""
    paho = _paho(client)
    opened = paho.on_socket_open  # aiomqtt's: it starts watching the socket
    options = client._socket_options

    inbox = _inbox(client)

    def room() -> bool:
        return inbox.qsize() < _QUEUED_AT_MOST

    def on_socket_open(paho: Any, userdata: Any, sock: Any) -> None:
        for option in options:
            sock.setsockopt(*option)
        paho._sock = _ReadAhead(sock, room)
        opened(paho, userdata, paho._sock)

    paho.on_socket_open = on_socket_open


def _paho(client: aiomqtt.Client) -> Any:
    return client._client


def _inbox(client: aiomqtt.Client) -> asyncio.Queue[MQTTMessage]:
    # aiomqtt's queue, holding paho's messages (see _enqueue), not aiomqtt's own.
    queue: asyncio.Queue[MQTTMessage] = client._queue  # type: ignore[assignment]
    return queue


def _enqueue(inbox: asyncio.Queue[MQTTMessage]) -> Any:
    """paho's on_message for ingest: the message into aiomqtt's queue, as paho made it."""

    def on_message(_paho: Any, _userdata: Any, message: MQTTMessage) -> None:
        inbox.put_nowait(message)  # the queue has no bound

    return on_message


def _connection_broke(client: aiomqtt.Client, error: Exception) -> None:
    """What aiomqtt's own socket reader does when paho's read raises: the connection
    is lost, and whoever waits for messages hears it as an MqttError."""
    disconnected: asyncio.Future[None] = client._disconnected
    if not disconnected.done():
        disconnected.set_exception(error)


# A PUBACK: its type, its remaining length (2) and the message id.
_PUBACK = struct.Struct("!BBH")


class AckAfterCommit:
    """Reads messages in batches from a connected client and acknowledges them on request.

    Acknowledgements go out in the order the messages were received. A message read on
    one connection is never acknowledged on another: after a reconnect the broker
    redelivers it, and the (device, event id) key keeps the store free of doubles.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._paho = _paho(client)
        self._messages = client.messages
        self._inbox = _inbox(client)

    async def next_batch(self, limit: int) -> list[MQTTMessage]:
        """Wait for one message, then take whatever else has arrived, up to limit: what
        aiomqtt has queued and what the socket holds besides.

        aiomqtt reads one packet each time the event loop finds the socket readable, and
        ingest's writes on SQLite run on the loop's own thread without a pause
        (store/sqlite_calls.py), so between two batches the loop turns only a few times:
        a batch of only what was queued stayed at a few dozen messages under a backlog
        of thousands, and each paid a whole commit. The socket is read here until it has
        no whole message left, as aiomqtt's reader would over as many turns of the loop.

        Raises aiomqtt.MqttError when the connection is lost while waiting.
        """
        batch: list[MQTTMessage] = []
        # What is held already first: read ahead, it makes the socket readable no more.
        self._take(batch, limit)
        if not batch:
            first: MQTTMessage = await anext(self._messages)  # type: ignore[arg-type]
            batch.append(first)
            self._take(batch, limit)
        return batch

    async def next_batch_within(self, limit: int, seconds: float) -> list[MQTTMessage]:
        """Like next_batch, but waiting at most ``seconds`` for the first message: an
        empty list when none came. Cancelling next_batch could drop a message (the read
        inside aiomqtt's iterator is not cancelled with it); this never takes a message
        it does not return.

        Raises aiomqtt.MqttError when the connection is lost while waiting.
        """
        batch: list[MQTTMessage] = []
        self._take(batch, limit)
        if batch:
            return batch
        disconnected: asyncio.Future[None] = self._client._disconnected
        # asyncio.Queue.get leaves the message in the queue when it is cancelled.
        getter = asyncio.ensure_future(self._inbox.get())
        waiting: set[asyncio.Future[Any]] = {getter, disconnected}
        try:
            await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()
        try:
            batch = [await getter]
        except asyncio.CancelledError:
            if disconnected.done():
                raise aiomqtt.MqttError(
                    "disconnected while waiting for a message"
                ) from disconnected.exception()
            return []
        self._take(batch, limit)
        return batch

    def _take(self, batch: list[MQTTMessage], limit: int) -> None:
        inbox = self._inbox
        while len(batch) < limit:
            try:
                batch.append(inbox.get_nowait())
            except asyncio.QueueEmpty:
                if not self._read_one():
                    return

    def _read_one(self) -> bool:
        """Read one packet, or what there is of one; whether anything was read."""
        sock = self._paho._sock
        before = getattr(sock, "taken", None)
        queued = self._inbox.qsize()
        try:
            self._paho.loop_read()
        except Exception as error:
            # A lost connection is reported through the client (it raises on the next
            # wait for messages); what this batch holds is committed all the same.
            _connection_broke(self._client, error)
            return False
        if self._inbox.qsize() > queued:
            return True
        return before is not None and getattr(sock, "taken", None) != before

    def acknowledge(self, messages: list[MQTTMessage]) -> None:
        """Send PUBACK for each QoS 1 message, in order. Harmless after a disconnect.

        A batch's PUBACKs leave as one write (paho would send each in a packet of its
        own, a system call each, and the broker would read each on its own too)."""
        pubacks = bytearray()
        for message in messages:
            if message.qos == 1:
                pubacks += _PUBACK.pack(PUBACK, 2, message.mid)
            elif message.qos > 1:  # not subscribed to, but acknowledged as paho would
                self._queue_pubacks(pubacks)
                pubacks = bytearray()
                self._paho.ack(message.mid, message.qos)
        self._queue_pubacks(pubacks)

    def _queue_pubacks(self, pubacks: bytearray) -> None:
        if pubacks:
            # paho's own PUBACK is this packet, queued the same way; several together
            # are one write of back-to-back packets, which is all MQTT's stream is.
            self._paho._packet_queue(PUBACK, bytes(pubacks), 0, 0)


def backoff_delays(first_s: float = 0.5, cap_s: float = 30.0) -> Iterator[float]:
    """Reconnect waits: exponential up to cap, with full jitter so a fleet spreads out."""
    ceiling = first_s
    while True:
        yield random.uniform(first_s / 2, ceiling)
        ceiling = min(cap_s, ceiling * 2)
