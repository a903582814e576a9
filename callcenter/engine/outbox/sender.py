"""What passes between the relay and a channel's sender: the message it is given, the
receipt or SendError it answers with, the Sender and Reconciler protocols, and how
sending on a channel has gone lately (for /healthz).

A sender knows its provider (Twilio, the MQTT broker) and nothing of calls; the relay
knows calls and nothing of providers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

from callcenter.store.models import PhoneProblem


@dataclass(frozen=True)
class OutboxMessage:
    """One row, as a sender sees it."""

    id: int
    call_id: int | None
    channel: str
    recipient: str
    address: str
    body: str
    attempt: int
    household: str = ""  # the call's household code, for the logs
    carer_id: int | None = None  # set for a dispatch page to this carer (its guard)
    # When the earliest attempt with an unknown outcome began; None: nothing in doubt.
    in_doubt_since: datetime | None = None
    # Why it was not sent at all: the number is marked as unable to get texts. The row
    # is already failed by the claim; only moving the call on is left.
    blocked: str = ""

    @property
    def about(self) -> str:
        """Names the call and household for a log line, e.g. "call 12 household H0001"."""
        if self.call_id is None:
            return "no call"
        return f"call {self.call_id} household {self.household or '?'}"


class SendError(Exception):
    """A send did not go through. ``permanent``: retrying cannot help (bad number...);
    ``outcome_unknown``: it may have gone through after all (timeout, broken connection);
    ``phone_problem``: the number itself cannot get texts, so it is marked broken."""

    def __init__(
        self,
        detail: str,
        *,
        permanent: bool = False,
        outcome_unknown: bool = False,
        phone_problem: PhoneProblem | None = None,
    ) -> None:
        self.detail = detail
        self.permanent = permanent or phone_problem is not None
        self.outcome_unknown = outcome_unknown
        self.phone_problem = phone_problem
        super().__init__(detail)


class Receipt(NamedTuple):
    """What the provider said on taking a message: its reference and first status."""

    ref: str
    delivery: str | None = None  # e.g. Twilio's "queued"


class Sender(Protocol):
    """Carries out one channel's effects (SMS, device commands)."""

    channel: str

    async def send(self, message: OutboxMessage) -> str | Receipt | None:
        """Deliver ``message`` or raise SendError; the provider's reference, if it has one."""
        ...


@runtime_checkable
class Reconciler(Protocol):
    """A sender that can tell whether an earlier attempt of a message reached the provider."""

    async def find_sent(self, message: OutboxMessage, since: datetime) -> Sequence[Receipt]:
        """What the provider took for ``message`` since ``since``, newest first (SendError
        if it cannot tell)."""
        ...


@dataclass
class ChannelProgress:
    """How sending on one channel has gone lately, for /healthz."""

    # The provider last answered: took a message, or refused one for good (a bad
    # number: the channel itself works).
    answered_at: datetime | None = None
    # Every attempt since has failed without an answer (a fault, a timeout, no link).
    failing_since: datetime | None = None
    error: str = ""  # what the last failed attempt said

    def note(self, now: datetime, error: SendError | None) -> None:
        """Note one attempt's outcome."""
        if error is None or error.permanent:
            self.answered_at, self.failing_since, self.error = now, None, ""
        else:
            self.failing_since = self.failing_since or now
            self.error = error.detail
