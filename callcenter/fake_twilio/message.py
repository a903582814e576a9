"""What the fake Twilio keeps of each text: the message as Twilio would store it, and an
error planned for a coming create call."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

API_VERSION = "2010-04-01"
# Twilio's directions: what we send through the API, what a phone texts to our number,
# and what Twilio sends back from a webhook's TwiML answer.
OUTBOUND_API = "outbound-api"
INBOUND = "inbound"
OUTBOUND_REPLY = "outbound-reply"


def rfc2822(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment.astimezone(UTC), usegmt=True)


def segments(body: str) -> int:
    """How many parts Twilio splits ``body`` into (and bills)."""
    # Approximation: ASCII counts as GSM-7 (160, or 153 per part), anything else UCS-2 (70/67).
    single, part = (160, 153) if body.isascii() else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // part)


@dataclass
class FakeMessage:
    """One message the fake accepted, as Twilio would store it."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    status_callback: str | None
    date_created: datetime
    status: str = "queued"
    date_sent: datetime | None = None
    form: dict[str, str] = field(default_factory=dict)
    direction: str = OUTBOUND_API
    # Arrival order across everything the fake saw: the page's "newest first" (on a test's
    # ManualClock many messages share one time).
    order: int = 0
    # What became of a reply on its way to the call centre, when it did not go well.
    note: str = ""

    @property
    def uri(self) -> str:
        """The message's path, as Twilio reports it."""
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    def to_json(self) -> dict[str, Any]:
        """The message resource JSON, with the fields ``MessageInstance`` reads."""
        prefix = self.uri.removesuffix(".json")
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": rfc2822(self.date_created),
            "date_sent": rfc2822(self.date_sent),
            "date_updated": rfc2822(self.date_sent or self.date_created),
            "direction": self.direction,
            "error_code": None,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {
                "media": f"{prefix}/Media.json",
                "feedback": f"{prefix}/Feedback.json",
            },
            "to": self.to,
            "uri": self.uri,
        }


@dataclass(frozen=True)
class PlannedFailure:
    """An error the fake returns to one coming create call instead of accepting it."""

    status: int
    code: int
    message: str
