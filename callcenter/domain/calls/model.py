"""What a call is: its states, the carers assigned to it, and who acts on it.

A call's *state* says how far help has got: raised, acknowledged, dispatched, accepted,
on the way, on scene, then resolved or cancelled; an emergency or fall a carer reported
done while no operator had ever owned it is awaiting review until an operator resolves
it. It is derived from the call's facts (owner, carers and their answers, what a carer
reported, closure), so it can never contradict them.
Acknowledgement (an operator taking ownership) is kept beside the progress: the first
carer is paged automatically the moment an alarm arrives, usually before any operator has
picked the call up, and the call then shows "dispatched" while still unowned.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from callcenter.domain.call_types import ALARM_TYPES, CallType
from callcenter.domain.policy import Milestone, Policy


class CallState(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    ON_THE_WAY = "on_the_way"
    ON_SCENE = "on_scene"
    # A carer reported an emergency or fall done that no operator ever owned: it stays
    # open until an operator reviews and resolves it.
    AWAITING_REVIEW = "awaiting_review"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


OPEN_STATES = frozenset(set(CallState) - {CallState.RESOLVED, CallState.CANCELLED})


class Outcome(enum.StrEnum):
    """How a resolved call ended."""

    HELPED_AT_HOME = "helped_at_home"
    TAKEN_TO_HOSPITAL = "taken_to_hospital"
    EMERGENCY_SERVICES = "emergency_services"  # 120 called: handed to the ambulance
    FALSE_ALARM = "false_alarm"
    NO_ACCESS = "no_access"  # nobody could get in; handed to emergency services or family
    FAMILY_ATTENDED = "family_attended"
    DEVICE_FIXED = "device_fixed"
    OTHER = "other"


# --- closing an alarm (issue 19: outcomes that matter are confirmed and explained) ---

# Outcomes the board asks the operator to confirm before the call closes.
CONFIRMED_OUTCOMES = frozenset(
    {Outcome.TAKEN_TO_HOSPITAL, Outcome.EMERGENCY_SERVICES, Outcome.FALSE_ALARM}
)

# An alarm call closed with one of these while no carer ever reached the door needs a
# reason (who helped, who took them, how the operator knows it was a false alarm). Only
# "family attended" names who went instead.
NEEDS_REASON_WITHOUT_CARER = frozenset(set(Outcome) - {Outcome.FAMILY_ATTENDED})


def reason_needed(call_type: CallType, outcome: Outcome, carer_at_door: bool) -> bool:
    """Whether closing a call of ``call_type`` as ``outcome`` needs a reason."""
    return call_type in ALARM_TYPES and not carer_at_door and outcome in NEEDS_REASON_WITHOUT_CARER


class CancelReason(enum.StrEnum):
    RESIDENT_CANCELLED = "resident_cancelled"
    DUPLICATE = "duplicate"
    ENTERED_IN_ERROR = "entered_in_error"


class AssignmentState(enum.StrEnum):
    """One carer's part in one call."""

    DISPATCHED = "dispatched"  # paged, no answer yet
    ACCEPTED = "accepted"
    ON_THE_WAY = "on_the_way"
    ON_SCENE = "on_scene"
    DECLINED = "declined"
    NO_ANSWER = "no_answer"  # did not accept in time; the next carer was paged
    UNREACHABLE = "unreachable"  # the page could not be delivered; the next carer was paged
    STOOD_DOWN = "stood_down"  # released before arriving (call closed or carer replaced)
    FINISHED = "finished"  # was on scene when the call closed


ACTIVE_ASSIGNMENT = frozenset(
    {
        AssignmentState.DISPATCHED,
        AssignmentState.ACCEPTED,
        AssignmentState.ON_THE_WAY,
        AssignmentState.ON_SCENE,
    }
)


_ACCEPTED_OR_LATER = frozenset(
    {AssignmentState.ACCEPTED, AssignmentState.ON_THE_WAY, AssignmentState.ON_SCENE}
)


# The order a carer moves through; a report may skip ahead but never go back.
_CARER_PROGRESS = (
    AssignmentState.DISPATCHED,
    AssignmentState.ACCEPTED,
    AssignmentState.ON_THE_WAY,
    AssignmentState.ON_SCENE,
)

# A carer who failed the call this way is not offered for it again, unless an operator
# picks them by hand.
FAILED_ASSIGNMENT = frozenset(
    {AssignmentState.DECLINED, AssignmentState.NO_ANSWER, AssignmentState.UNREACHABLE}
)


class ActorKind(enum.StrEnum):
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    CARER = "carer"
    DEVICE = "device"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    """Who did something: shown in the history as ``kind:name``."""

    kind: ActorKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"

    @property
    def is_desk(self) -> bool:
        """Operators and supervisors work the desk; ownership rules apply to them."""
        return self.kind in (ActorKind.OPERATOR, ActorKind.SUPERVISOR)


SYSTEM = Actor(ActorKind.SYSTEM, "engine")


@dataclass(frozen=True)
class Assignment:
    """A carer sent to a call, and how far they have got."""

    carer_id: int
    carer_code: str
    state: AssignmentState
    dispatched_at: datetime
    dispatched_by: str
    travel_s: float | None
    changed_at: datetime

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_ASSIGNMENT


@dataclass(frozen=True)
class Call:
    """One call, from the first press to its closure."""

    id: int
    # None: a call to the centre's number from a number the register does not know.
    household_id: int | None
    type: CallType
    priority: int
    opened_at: datetime
    policy: Policy
    presses: int = 1
    last_press_at: datetime | None = None
    press_noted_at: datetime | None = None
    owner: str | None = None
    acknowledged_at: datetime | None = None
    assignments: tuple[Assignment, ...] = ()
    fired_steps: frozenset[str] = frozenset()
    alerts: frozenset[str] = frozenset()
    closed_at: datetime | None = None
    outcome: Outcome | None = None
    cancel_reason: CancelReason | None = None
    # What a carer reported when they said "done" on a call no operator had owned
    # (REVIEWED_TYPES): the outcome, who said it and when. The call stays open for review.
    reported_outcome: Outcome | None = None
    reported_by: str | None = None
    reported_at: datetime | None = None

    @property
    def state(self) -> CallState:
        """How far help has got, derived from the facts."""
        if self.closed_at is not None:
            return CallState.RESOLVED if self.outcome is not None else CallState.CANCELLED
        states = {a.state for a in self.assignments}
        if self.reported_outcome is not None and not states & ACTIVE_ASSIGNMENT:
            return CallState.AWAITING_REVIEW
        if AssignmentState.ON_SCENE in states:
            return CallState.ON_SCENE
        if AssignmentState.ON_THE_WAY in states:
            return CallState.ON_THE_WAY
        if self.accepted_count >= self.policy.carers_required:
            return CallState.ACCEPTED
        if states & ACTIVE_ASSIGNMENT:
            return CallState.DISPATCHED
        return CallState.ACKNOWLEDGED if self.owner else CallState.RAISED

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def accepted_count(self) -> int:
        return sum(1 for a in self.assignments if a.state in _ACCEPTED_OR_LATER)

    @property
    def failed_carers(self) -> frozenset[int]:
        """The carers who declined, did not answer or could not be reached on this call."""
        return frozenset(a.carer_id for a in self.assignments if a.state in FAILED_ASSIGNMENT)

    @property
    def carer_at_door(self) -> bool:
        """Whether a carer has reached the door (and is there, or was when it closed)."""
        return any(
            a.state in (AssignmentState.ON_SCENE, AssignmentState.FINISHED)
            for a in self.assignments
        )

    @property
    def active_assignments(self) -> tuple[Assignment, ...]:
        return tuple(a for a in self.assignments if a.active)

    def assignment(self, carer_id: int) -> Assignment | None:
        """The carer's active assignment on this call, else their latest one."""
        mine = [a for a in self.assignments if a.carer_id == carer_id]
        active = [a for a in mine if a.active]
        chosen = active or mine
        return chosen[-1] if chosen else None

    def reached(self, milestone: Milestone) -> bool:
        """True once the call has got as far as ``milestone``."""
        if milestone is Milestone.ACKNOWLEDGED:
            return self.owner is not None or not self.is_open
        if milestone is Milestone.ACCEPTED:
            return (
                self.accepted_count >= self.policy.carers_required
                or not self.is_open
                or self.reported_outcome is not None
            )
        if milestone is Milestone.ON_SCENE:
            return not self.is_open or any(
                a.state in (AssignmentState.ON_SCENE, AssignmentState.FINISHED)
                for a in self.assignments
            )
        return not self.is_open

    @property
    def carers_wanted(self) -> int:
        """How many more carers must be paged to have enough on the call: none once a
        carer has reported it done (the desk reviews it; nobody is paged by itself)."""
        if self.reported_outcome is not None:
            return 0
        return max(0, self.policy.carers_required - len(self.active_assignments))
