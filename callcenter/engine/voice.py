"""Phone calls the desk places, as the outbox keeps them: what a "voice" row carries, and
how a placed call's status moves.

A voice row is written by the decision that asked for the call (a ``PlaceCall`` effect),
like a text. Its body is what the answer webhook (web/voice_webhooks.py) needs once the
phone is picked up, which may be minutes later and in another process: why it rang, in
which language, and what to say. Twilio's status callbacks move the row's ``delivery``
forward only, as texts' delivery reports do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from callcenter.domain.calls import VoicePurpose


@dataclass(frozen=True)
class VoiceScript:
    """What a voice row says once the phone is picked up."""

    purpose: VoicePurpose
    language: str
    say: str

    def body(self) -> str:
        """The outbox row's body."""
        return json.dumps(
            {"purpose": self.purpose.value, "language": self.language, "say": self.say},
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def read(cls, body: str) -> VoiceScript:
        """The script a row's ``body`` holds; ValueError if it holds none."""
        try:
            data = json.loads(body)
            return cls(VoicePurpose(data["purpose"]), str(data["language"]), str(data["say"]))
        except (TypeError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"not a voice row's body: {error}") from None


# Twilio's call statuses in the order a call passes through them. A status is recorded
# only over one of lower rank, so a late "ringing" never undoes "completed".
CALL_STATUS_RANK = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "completed": 4,
    "busy": 4,
    "no-answer": 4,
    "failed": 4,
    "canceled": 4,
}
# The call ended without anyone picking up.
NOT_PICKED_UP = frozenset({"busy", "no-answer", "failed", "canceled"})
FINAL = NOT_PICKED_UP | {"completed"}


def not_over(status: str) -> frozenset[str]:
    """The call statuses a report of ``status`` must not replace."""
    rank = CALL_STATUS_RANK[status]
    return frozenset(s for s, r in CALL_STATUS_RANK.items() if r >= rank)
