"""The command link: device commands (docs/protocol.md, "command") published to the
devices over MQTT, as the outbox relay's sender for the "device_command" channel.

It lives beside ingest because it is the other half of the same protocol on the same
brokers: ingest reads what devices publish (and refuses the command topic from them),
this link publishes what the server tells them, with the same broker settings, the
same brokers tried in turn and the same reconnect backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Sequence
from datetime import datetime

import aiomqtt

from callcenter.brokers import BrokerAddress, Rotation, describe
from callcenter.clock import Clock
from callcenter.config import BrokerConfig
from callcenter.engine.outbox import OutboxMessage, SendError
from callcenter.engine.repository import DEVICE_COMMAND
from callcenter.ingest.mqtt import backoff_delays

log = logging.getLogger("callcenter.commands")


class DeviceCommandSender:
    """Publishes device commands (docs/protocol.md, "command") over its own MQTT link.

    The link is held until stop(), and made again with backoff whenever the broker drops
    it. While it is down a command is refused at once (nothing was published, so it is
    not in doubt) and waits in the outbox; each time the link comes up, whoever asked
    (``when_connected``; the relay, see ``OutboxRelay.link_back``) is told, so the
    commands that waited go out then rather than at their next retry."""

    channel = DEVICE_COMMAND

    def __init__(
        self, config: BrokerConfig, *, brokers: Sequence[BrokerAddress], clock: Clock
    ) -> None:
        self._config = config
        self._brokers = tuple(brokers)
        self._clock = clock
        self._client: aiomqtt.Client | None = None
        # The broker the link is on; None while it is down.
        self.broker: BrokerAddress | None = None
        self._stopping = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        # Commands published and not yet acknowledged by the broker; the link closes
        # only once there are none (see _hold).
        self._publishing = 0
        self._acknowledged = asyncio.Event()
        self._acknowledged.set()
        # When the link went down (at first: when this sender was made); None while up.
        self.down_since: datetime | None = clock.now()

    @property
    def connected(self) -> bool:
        """Whether the link to the broker is up."""
        return self._client is not None

    def when_connected(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` each time the link comes up (again), on the link's own task:
        it must return at once (the link's loss is noticed only once it has)."""
        self._listeners.append(listener)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Hold a connection to a broker until stop(): on to the next broker when it is
        lost, with backoff once each has failed in turn (brokers.py)."""
        cap_s = self._config.reconnect_max_s
        brokers = Rotation(self._brokers, lambda: backoff_delays(cap_s=cap_s))
        while not self._stopping.is_set():
            broker = brokers.current
            client = aiomqtt.Client(
                broker.host,
                broker.port,
                identifier=f"{self._config.client_id}-commands",
                username=self._config.username or None,
                password=self._config.password or None,
                protocol=aiomqtt.ProtocolVersion.V311,
                keepalive=self._config.keepalive_s,
                timeout=10,
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            )
            lost: aiomqtt.MqttError | None = None
            try:
                async with client:
                    self._client, self.broker = client, broker
                    self.down_since = None
                    brokers.connected()
                    log.info("command link connected to %s", broker)
                    self._tell_connected()
                    await self._hold(client)
            except aiomqtt.MqttError as error:
                lost = error
            finally:
                # At once, not after the wait below: a send meanwhile must know.
                if self._client is not None:
                    self.down_since = self._clock.now()
                self._client, self.broker = None, None
            if lost is None or self._stopping.is_set():
                continue
            wait = brokers.failed()
            log.warning(
                "command link to %s lost (%s); device commands wait; %s",
                broker,
                lost,
                brokers.next_try(wait),
            )
            await self._sleep_unless_stopping(wait)

    async def _hold(self, client: aiomqtt.Client) -> None:
        """Until stop() or until the broker drops the link (MqttError). aiomqtt tells of a
        lost connection only to whoever reads ``client.messages``; this link subscribes to
        nothing, so reading it is waiting for exactly that."""

        async def until_lost() -> None:
            async for _ in client.messages:
                pass

        lost = asyncio.create_task(until_lost(), name="callcenter.commands.link")
        stop = asyncio.create_task(self._stopping.wait(), name="callcenter.commands.stop")
        try:
            await asyncio.wait({lost, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (lost, stop):
                task.cancel()
            await asyncio.gather(lost, stop, return_exceptions=True)
        if not self._stopping.is_set() and lost.done() and not lost.cancelled():
            lost.result()  # the MqttError that ended the link
        # Stopping: the commands published a moment ago get their acknowledgement before
        # the link says goodbye. Closed under them, each would wait out its publish
        # timeout (holding the server's shutdown that long) and then count as failed, to
        # be sent again at the next start. No new one starts meanwhile (send refuses).
        await self._acknowledged.wait()

    def _tell_connected(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("telling %r that the command link is up failed", listener)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def send(self, message: OutboxMessage) -> None:
        """Publish the command at QoS 1; there is no provider reference."""
        if self._stopping.is_set():
            raise SendError("shutting down")
        client = self._client
        if client is None:
            # Refused at once: waiting here would hold one of the relay's lanes, which
            # carers' pages need.
            raise SendError(
                f"no connection to {describe(self._brokers)}; the command goes when the "
                "link is back"
            )
        body = json.loads(message.body)
        payload = {
            "v": 1,
            "id": f"cmd-{message.id}",
            "ts": int(self._clock.now().timestamp() * 1000),
            "command": body["command"],
            "call": body["call"],
        }
        self._publishing += 1
        self._acknowledged.clear()
        try:
            await client.publish(message.address, json.dumps(payload), qos=1, timeout=10)
        except aiomqtt.MqttError as error:
            raise SendError(f"publish failed: {error}") from None
        finally:
            self._publishing -= 1
            if not self._publishing:
                self._acknowledged.set()
