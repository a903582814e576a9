"""Phone calls out through Twilio: the outbox relay's sender for the "voice" channel.

The same account and client as texts (notify/sms.py). A call is placed with the URLs of
its row: Twilio fetches what to say from ``/voice/answer/{outbox id}`` when the phone is
picked up, and posts each status to ``/voice/status/{outbox id}``
(web/voice_webhooks.py). A placing whose outcome is unknown (timeout, connection
broken) is looked for in Twilio's call list before the call is placed again, so a crash
between placing a call and recording it never rings anyone twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from twilio.base.exceptions import TwilioRestException  # type: ignore[import-untyped]

from callcenter.config import VoiceConfig
from callcenter.domain.calls import VoicePurpose
from callcenter.engine import repository
from callcenter.engine.outbox import OutboxMessage, Receipt, SendError
from callcenter.engine.voice import VoiceScript
from callcenter.notify.sms import RECONCILE_MARGIN, TwilioAccount, TwilioApi

log = logging.getLogger("callcenter.voice")

ANSWER_PATH = "/voice/answer/{outbox_id}"
GATHER_PATH = "/voice/gather/{outbox_id}"
STATUS_PATH = "/voice/status/{outbox_id}"
# Click-to-call (web/voice_bridge.py): the operator picked up, the household is dialled.
BRIDGE_PATH = "/voice/bridge/answer/{outbox_id}"
# The statuses of a call we place that are reported, the final one included; not
# "initiated": the create request's answer already said Twilio took the call, and each
# callback costs a request and a transaction (with it Twilio also waits for our answer
# before it rings the phone).
STATUS_EVENTS = ("ringing", "answered", "completed")
# How many of a number's latest calls are looked at when one is in doubt.
RECONCILE_LIMIT = 50


@dataclass(frozen=True)
class VoiceLine:
    """How calls are placed: the number they come from, how long a phone rings."""

    from_number: str
    ring_timeout_s: int = 25

    @classmethod
    def from_config(cls, config: VoiceConfig, account: TwilioAccount) -> VoiceLine:
        """The configured line; the account's SMS number when none is given."""
        return cls(config.from_number or account.from_number, config.ring_timeout_s)


class TwilioVoice(TwilioApi):
    """Places outbox phone calls through Twilio; an async context manager holding one
    client. ``account.public_url`` must be set before the first call (app.py sets it
    once the operator API listens): Twilio fetches what to say from there."""

    channel = repository.VOICE
    # A refused number may take texts and not calls (a data SIM): its texts go on.
    marks_phones = False

    def __init__(self, account: TwilioAccount, line: VoiceLine) -> None:
        super().__init__(account)
        self.line = line

    def url(self, path: str, outbox_id: int) -> str:
        """The public URL of one of a row's webhooks (``ANSWER_PATH``...)."""
        return self.account.public_url.rstrip("/") + path.format(outbox_id=outbox_id)

    async def send(self, message: OutboxMessage) -> Receipt:
        """Place one call; its CallSid, or SendError."""
        client = self.client()
        if not self.account.public_url:
            raise SendError("no public URL for Twilio to fetch what to say from yet")
        if not self.line.from_number:
            raise SendError(
                "no number to call from: set voice.from_number or sms.from_number",
                permanent=True,
            )
        placed = await self.handing_over(
            lambda: client.calls.create_async(
                to=message.address,
                from_=self.line.from_number,
                url=self.url(_answer_path(message), message.id),
                method="POST",
                status_callback=self.url(STATUS_PATH, message.id),
                status_callback_event=list(STATUS_EVENTS),
                status_callback_method="POST",
                timeout=self.line.ring_timeout_s,
            ),
            message,
            "voice call",
        )
        # The call's status is written by its status callbacks alone (web/voice_webhooks.py),
        # which may come before this answer does: "queued" here would overwrite them.
        return Receipt(str(placed.sid))

    async def delete_recording(self, sid: str) -> None:
        """Delete a bridge's recording at Twilio (engine/bridges.RecordingKeeper); one
        Twilio no longer has is no error."""
        try:
            await self.client().recordings(sid).delete_async()
        except TwilioRestException as error:
            if error.status != 404:
                raise

    async def find_sent(self, message: OutboxMessage, since: datetime) -> Sequence[Receipt]:
        """Calls Twilio took for ``message`` (same number, from our number) created since
        ``since``, newest first; SendError if it cannot tell. (Twilio's StartTime filter is
        not used: a call still queued has no start time yet.)"""
        client = self.client()
        listed = await self.listing(
            lambda: client.calls.list_async(
                to=message.address, from_=self.line.from_number, limit=RECONCILE_LIMIT
            ),
            "call list",
        )
        after = since - RECONCILE_MARGIN
        return [
            Receipt(str(found.sid), str(found.status) if found.status else None)
            for found in listed
            if found.date_created is None or found.date_created >= after
        ]


def _answer_path(message: OutboxMessage) -> str:
    """Where Twilio asks what to do once the phone is picked up: a bridge's own route
    (the household dialled), else the spoken message's."""
    try:
        purpose = VoiceScript.read(message.body).purpose
    except ValueError:
        return ANSWER_PATH
    return BRIDGE_PATH if purpose is VoicePurpose.BRIDGE else ANSWER_PATH
