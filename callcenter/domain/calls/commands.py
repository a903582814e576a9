"""What the call engine is told and what it asks for: the situation a decision reads,
the commands it applies, the effects it asks the adapters to carry out, and the errors
raised by a command that does not fit the call.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from callcenter.domain.call_types import CallType
from callcenter.domain.calls.model import SYSTEM, Actor, CancelReason, Outcome
from callcenter.domain.dispatch import Candidate
from callcenter.domain.messages import Message, ResidentNote
from callcenter.domain.policy import Milestone
from callcenter.domain.scripts import ScriptAnswer

# --- what the engine is told -------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """Someone the call centre may text: a family member, a station lead, a supervisor."""

    label: str  # e.g. "family:1", "carer:C003", "operator:li.na"
    name: str
    phone: str
    language: str = "zh"


# Labels of supervisors (operators with a phone) start with this.
SUPERVISOR_RECIPIENT = "operator:"


@dataclass(frozen=True)
class Situation:
    """Everything a decision may depend on besides the call itself."""

    now: datetime
    household_code: str = ""
    address: str = ""
    access_notes: str = ""
    residents: str = ""  # names, for texts that only name them
    # Age, mobility and care notes of each resident, for the dispatch page.
    resident_notes: tuple[ResidentNote, ...] = ()
    desk_phone: str = ""
    # Free carers, ranked best first (see dispatch.rank_carers; a dispatch.Ranking works
    # them out only as far as they are read).
    candidates: Iterable[Candidate] = ()
    # Carers on this call (to stand them down), the household's station leads, its
    # family in calling order, and the supervisors on duty.
    assigned: tuple[Person, ...] = ()
    station_leads: tuple[Person, ...] = ()
    family: tuple[Person, ...] = ()
    supervisors: tuple[Person, ...] = ()
    # Whether the phone calls a decision asks for are placed ([voice] enabled).
    rings: bool = True


class CarerReport(enum.StrEnum):
    """What a carer (or an operator on the carer's behalf) reports."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    ON_THE_WAY = "on_the_way"
    ON_SCENE = "on_scene"


@dataclass(frozen=True)
class Press:
    """A device event for a household that already has an open call of this kind."""

    call_type: CallType
    device: str


@dataclass(frozen=True)
class DeviceCancel:
    """The resident pressed cancel on the device."""

    device: str


@dataclass(frozen=True)
class DeviceNote:
    """Something about the device worth keeping on the call (back online, battery)."""

    device: str
    what: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Acknowledge:
    by: Actor


@dataclass(frozen=True)
class AutoDispatch:
    """Page as many of the situation's best candidates as the call still needs."""

    by: Actor = SYSTEM


@dataclass(frozen=True)
class Dispatch:
    """Send this particular carer (an operator's choice or override)."""

    by: Actor
    carer: Candidate


@dataclass(frozen=True)
class Report:
    """A carer's answer or progress, from the carer or an operator on their behalf."""

    by: Actor
    carer_id: int
    report: CarerReport


@dataclass(frozen=True)
class StandDown:
    """Release a carer from the call (an operator's override); the gap is re-filled."""

    by: Actor
    carer_id: int
    why: str = ""


@dataclass(frozen=True)
class Resolve:
    by: Actor
    outcome: Outcome
    note: str = ""
    # Why no carer reached the door, when the outcome needs one (model.reason_needed).
    reason: str = ""


@dataclass(frozen=True)
class AnswerScript:
    """An answer to a question of the call type's handling script (domain/scripts.py)."""

    by: Actor
    question: str
    answer: ScriptAnswer


@dataclass(frozen=True)
class Cancel:
    by: Actor
    reason: CancelReason
    note: str = ""


@dataclass(frozen=True)
class AddNote:
    by: Actor
    text: str


@dataclass(frozen=True)
class Unreachable:
    """A carer's page could not be delivered (invalid number, opted out, undelivered):
    move on at once rather than wait out their time to accept."""

    carer_id: int
    why: str


@dataclass(frozen=True)
class TextFailed:
    """A text to someone other than a paged carer (station lead, family, supervisor)
    could not be delivered: written on the call, and the supervisors are told, since
    whoever it was meant for does not know."""

    recipient: str  # as the outbox names it, e.g. "family:12:1"
    phone: str
    why: str


@dataclass(frozen=True)
class RingUnanswered:
    """The carer rung about their page did not pick up (``status``: Twilio's busy,
    no-answer, failed or canceled): released as a page's silence is, the next carer paged."""

    carer_id: int
    status: str


@dataclass(frozen=True)
class RingNoted:
    """How a phone call the desk placed went (ringing, answered, busy, no answer, failed,
    completed with its duration, a key pressed), kept in the call's history."""

    to: str  # the recipient's label, e.g. "carer:C012"
    purpose: VoicePurpose
    status: str
    duration_s: int | None = None
    key: str = ""
    # A household's number rung by a bridge (click-to-call), and which of its numbers
    # in the order tried (1 first); "all-unanswered" has no number: none answered.
    number: str = ""
    attempt: int = 0


@dataclass(frozen=True)
class RingHousehold:
    """An operator calls the household from the board (click-to-call): their own phone
    rings, and once they pick up the household's numbers are dialled in order."""

    by: Actor
    operator: Person  # the operator as a phone to ring


class InboundStep(enum.StrEnum):
    """How a call to the centre's number went (docs/voice.md, "Inbound calls")."""

    CALLED = "called"  # someone rang in about this call (it opened, or was open)
    OPERATORS_RUNG = "operators_rung"  # the operators on duty with a phone, at once
    ANSWERED = "answered"  # picked up by ``by`` (the first to answer owns the call)
    SUPERVISORS_RUNG = "supervisors_rung"  # no operator picked up in time
    NOBODY = "nobody"  # nobody picked up: the recorded message, and the call escalates
    ENDED = "ended"  # the caller's line ended (``status``, ``duration_s``)


@dataclass(frozen=True)
class InboundNoted:
    """A step of a call to the centre's number, kept in the call's history; ``NOBODY``
    also escalates the call at once, as its unanswered steps would."""

    step: InboundStep
    caller: str  # the caller's number
    call_sid: str
    rung: tuple[str, ...] = ()  # labels of those rung, e.g. "operator:li.na"
    by: str = ""  # who picked up
    status: str = ""
    duration_s: int | None = None


@dataclass(frozen=True)
class FamilyHeard:
    """A family contact rung about the call (``to``: their label, "family:7:1") pressed 1:
    they heard it, and no one else of the family is rung."""

    to: str


@dataclass(frozen=True)
class FamilyRingOver:
    """A ring to a family contact ended (``status``: Twilio's final status, "completed"
    after a pick-up); without their confirmation the next contact is rung."""

    to: str
    status: str


@dataclass(frozen=True)
class StepDue:
    """An escalation timer fell due; ``carer_id`` for steps counted from a dispatch."""

    step: str
    carer_id: int | None = None


Command = (
    Press
    | DeviceCancel
    | DeviceNote
    | Acknowledge
    | AutoDispatch
    | Dispatch
    | Report
    | StandDown
    | Resolve
    | Cancel
    | AddNote
    | AnswerScript
    | StepDue
    | Unreachable
    | TextFailed
    | RingUnanswered
    | RingNoted
    | InboundNoted
    | FamilyHeard
    | FamilyRingOver
    | RingHousehold
)


# --- what the engine is asked to do ------------------------------------------------


@dataclass(frozen=True)
class SendSms:
    """Text someone. ``carer_id`` set: only while that carer's assignment is active;
    ``unless`` set: only while the call has not reached that milestone."""

    to: Person
    message: Message
    carer_id: int | None = None
    unless: Milestone | None = None


class VoicePurpose(enum.StrEnum):
    """Why the desk rings someone; it decides what they hear and which keys mean what."""

    PAGE = "page"  # a carer rung about a page not accepted: 1 accepts, 2 declines
    BRIDGE = "bridge"  # an operator's phone, then the household's (click-to-call)
    FAMILY = "family"  # a family contact told help is late: 1 confirms
    INBOUND = "inbound"  # someone ringing the centre's number


@dataclass(frozen=True)
class PlaceCall:
    """Ring someone. Guarded as ``SendSms`` is: ``carer_id`` set, only while that carer's
    assignment is active; ``unless`` set, only while the call has not reached it."""

    to: Person
    purpose: VoicePurpose
    message: Message
    carer_id: int | None = None
    unless: Milestone | None = None


@dataclass(frozen=True)
class DeviceCommand:
    """A prompt for the household's devices, e.g. "help is on the way"."""

    command: str


@dataclass(frozen=True)
class AlertDesk:
    """Sound the alarm on every operator's board."""

    step: str
    why: str


@dataclass(frozen=True)
class ArmTimer:
    step: str
    due_at: datetime
    carer_id: int | None = None


@dataclass(frozen=True)
class CancelTimers:
    """Cancel the call's pending timers for these steps (only this carer's, if given)."""

    steps: frozenset[str]
    carer_id: int | None = None


Effect = SendSms | PlaceCall | DeviceCommand | AlertDesk | ArmTimer | CancelTimers


# --- errors ------------------------------------------------------------------------


class CallError(Exception):
    """A command that cannot be applied to this call; the message says why."""

    def __init__(self, call_id: int, message: str) -> None:
        self.call_id = call_id
        super().__init__(message)


class IllegalTransitionError(CallError):
    """The command does not fit the call's current state."""


class AlreadyOwnedError(CallError):
    """Another operator acknowledged the call first (first-responder rule)."""

    def __init__(self, call_id: int, owner: str) -> None:
        self.owner = owner
        super().__init__(call_id, f"call {call_id} is already owned by {owner}")


class NotPossibleError(CallError):
    """The command fits the call's state but not what it says (an outcome that needs a
    reason given none, a question the call's script does not have); ``code`` names it."""

    def __init__(self, call_id: int, code: str, message: str) -> None:
        self.code = code
        super().__init__(call_id, message)


class NotOwnerError(CallError):
    """Only the operator who owns the call (or a supervisor) may do this."""

    def __init__(self, call_id: int, owner: str, actor: str) -> None:
        self.owner = owner
        super().__init__(
            call_id,
            f"call {call_id} is owned by {owner}; {actor} may not act on it "
            "(ask the owner or a supervisor)",
        )
