"""What the fake Twilio keeps of each phone call: the call as Twilio would store it and
what happened on it (what was said, the keys pressed, the leg it was bridged with), and
how a planned phone behaves when it is rung."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from callcenter.fake_twilio.message import API_VERSION, rfc2822

# A phone number as Twilio takes it: E.164.
E164 = re.compile(r"\+[1-9]\d{7,14}")
# Twilio's call statuses, in the order a call goes through them, and those that end it.
QUEUED = "queued"
INITIATED = "initiated"
RINGING = "ringing"
IN_PROGRESS = "in-progress"
COMPLETED = "completed"
BUSY = "busy"
NO_ANSWER = "no-answer"
FAILED = "failed"
CANCELED = "canceled"
FINAL = frozenset({COMPLETED, BUSY, NO_ANSWER, FAILED, CANCELED})
STATUSES = (QUEUED, INITIATED, RINGING, IN_PROGRESS, *sorted(FINAL))
# The StatusCallbackEvent values, and the status each is reported for ("completed"
# covers every way a call ends).
EVENTS = ("initiated", "ringing", "answered", "completed")
# Twilio's directions: placed through the API, rung by a <Dial> on another call (a leg),
# and a phone calling our number.
OUTBOUND_API = "outbound-api"
OUTBOUND_DIAL = "outbound-dial"
INBOUND = "inbound"
# What a dialled phone does, for ``FakeTwilio.plan_phone``.
BEHAVIOURS = ("ring", "answer", "answer_after:<seconds>", "busy", "fail", "no_answer")
# Twilio's default ring time for a call placed through the API.
DEFAULT_TIMEOUT_S = 60


def event_of(status: str) -> str:
    """The StatusCallbackEvent a status is reported under."""
    if status == IN_PROGRESS:
        return "answered"
    return "completed" if status in FINAL else status


@dataclass(frozen=True)
class PhonePlan:
    """How a phone behaves when it is rung: "ring" until a hook or the page answers it
    (no-answer after the call's Timeout), "answer" at once, "answer" after ``after``
    seconds, or "busy", "fail", "no_answer" at once."""

    kind: str = "ring"
    after: float = 0.0

    @classmethod
    def parse(cls, behaviour: str) -> PhonePlan:
        """A plan from "ring", "answer", "answer_after:2.5", "busy", "fail" or "no_answer";
        ValueError for anything else."""
        name, _, seconds = behaviour.partition(":")
        if name == "answer_after":
            try:
                after = float(seconds)
            except ValueError:
                after = -1.0
            if not after >= 0:
                raise ValueError(f"answer_after takes seconds (answer_after:3), not {behaviour!r}")
            return cls("answer", after)
        if behaviour not in ("ring", "answer", "busy", "fail", "no_answer"):
            known = ", ".join(BEHAVIOURS)
            raise ValueError(f"a phone's behaviour is one of {known}: {behaviour!r}")
        return cls(behaviour)


@dataclass(frozen=True)
class Spoken:
    """One <Say> heard on a call."""

    text: str
    language: str = "en-US"
    voice: str = ""


@dataclass(frozen=True)
class FakeRecording:
    """A recording a <Record>, or a <Dial record=...>, made on a call."""

    sid: str
    call_sid: str
    duration: int
    account_sid: str

    @property
    def url(self) -> str:
        """Where Twilio would serve it (the fake serves nothing there)."""
        return (
            f"https://api.twilio.com/{API_VERSION}/Accounts/{self.account_sid}"
            f"/Recordings/{self.sid}"
        )


@dataclass
class FakeCall:
    """One call the fake placed or took, as Twilio would store it, with what happened on
    it. ``statuses`` lists every status it went through, each once its status callback
    (when one was asked for) has been answered; ``status`` is the one it is in now, and
    ``reached`` when each status was reached (before its callback: when a phone began to
    ring, not when the centre heard of it; bench/voice.py times rings by it)."""

    sid: str
    account_sid: str
    to: str
    from_: str
    direction: str
    date_created: datetime
    parent_sid: str | None = None
    status: str = QUEUED
    statuses: list[str] = field(default_factory=list)
    reached: dict[str, datetime] = field(default_factory=dict)
    spoken: list[Spoken] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    bridged_with: str | None = None
    recordings: list[FakeRecording] = field(default_factory=list)
    # How it was asked for: where its TwiML comes from, and where its statuses go.
    url: str = ""
    method: str = "POST"
    twiml: str = ""
    status_callback: str = ""
    status_callback_method: str = "POST"
    status_callback_events: frozenset[str] = frozenset({"completed"})
    timeout: int = DEFAULT_TIMEOUT_S
    record: bool = False
    form: dict[str, str] = field(default_factory=dict)
    start_time: datetime | None = None
    answered_at: datetime | None = None
    end_time: datetime | None = None
    # The next status callback's SequenceNumber.
    sequence: int = 0
    # Creation order across every call (the page's and the list's "newest first").
    order: int = 0
    # What went wrong with its webhooks, when something did.
    note: str = ""

    @property
    def duration(self) -> int | None:
        """Whole seconds from answer to hang-up, once ended (0 for an unanswered call)."""
        if self.end_time is None:
            return None
        if self.answered_at is None:
            return 0
        return round((self.end_time - self.answered_at).total_seconds())

    @property
    def ended(self) -> bool:
        return self.status in FINAL

    @property
    def uri(self) -> str:
        """The call's path, as Twilio reports it."""
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json"

    def fields(self) -> dict[str, str]:
        """The form fields Twilio posts about this call to its webhooks."""
        fields = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self.sid,
            "CallStatus": self.status,
            "Called": self.to,
            "Caller": self.from_,
            "Direction": self.direction,
            "From": self.from_,
            "To": self.to,
        }
        if self.parent_sid:
            fields["ParentCallSid"] = self.parent_sid
        return fields

    def to_json(self) -> dict[str, Any]:
        """The call resource JSON, with the fields ``CallInstance`` reads."""
        prefix = self.uri.removesuffix(".json")
        duration = self.duration
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.end_time or self.answered_at or self.date_created),
            "direction": self.direction,
            "duration": None if duration is None else str(duration),
            "end_time": rfc2822(self.end_time),
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": self.from_,
            "group_sid": None,
            "parent_call_sid": self.parent_sid,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": self.sid,
            "start_time": rfc2822(self.start_time),
            "status": self.status,
            "subresource_uris": {
                "recordings": f"{prefix}/Recordings.json",
                "notifications": f"{prefix}/Notifications.json",
                "events": f"{prefix}/Events.json",
            },
            "to": self.to,
            "to_formatted": self.to,
            "trunk_sid": None,
            "uri": self.uri,
        }
