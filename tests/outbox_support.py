"""A sender whose process "dies" mid-send, and one whose provider's list cannot be read:
for the tests of sends in doubt (tests/test_sms_reconcile.py, tests/test_voice_reconcile.py).

"Killing" the sender: it does the real send and then raises a BaseException, which nothing
in the relay catches, so the claim (attempt counted, ``sending_since`` set) is committed
and the settle never runs, just as when the process dies between the provider's answer
and our commit of "sent".
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from callcenter.engine.outbox import OutboxMessage, Receipt


class ProcessKilled(BaseException):
    """Stands for the process dying: the relay catches Exception, never this."""


class ProviderSender(Protocol):
    """A real sender that can also look for what its provider took (TwilioSms, TwilioVoice)."""

    channel: str

    async def send(self, message: OutboxMessage) -> Receipt: ...

    async def find_sent(self, message: OutboxMessage, since: datetime) -> Sequence[Receipt]: ...


@dataclass
class KilledMidSend:
    """Sends through the real ``sender`` (unless ``before_request``), then the process
    "dies" before the relay can record the outcome. (Not a Reconciler itself: the relay
    that dies never gets as far as asking.)"""

    sender: ProviderSender
    before_request: bool = False

    @property
    def channel(self) -> str:
        return self.sender.channel

    async def send(self, message: OutboxMessage) -> Receipt:
        if not self.before_request:
            await self.sender.send(message)
        raise ProcessKilled


@dataclass
class ListUnreachable:
    """Sends through one real sender and reads the provider's list through another that
    points at a closed port, so the reconciliation question cannot be answered."""

    sender: ProviderSender
    nowhere: ProviderSender

    @property
    def channel(self) -> str:
        return self.sender.channel

    async def send(self, message: OutboxMessage) -> Receipt:
        return await self.sender.send(message)

    async def find_sent(self, message: OutboxMessage, since: datetime) -> Sequence[Receipt]:
        return await self.nowhere.find_sent(message, since)


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
