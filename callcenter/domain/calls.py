"""The call lifecycle as a pure state machine.

``decide(call, command, situation)`` returns the call's new state, the history entries
that explain the change and the effects to carry out (SMS, device commands, timers). It
never does I/O and never reads a clock: the time is ``situation.now``.

A call's *state* says how far help has got: raised, acknowledged, dispatched, accepted,
on the way, on scene, then resolved or cancelled. It is derived from the call's facts
(owner, carers and their answers, closure), so it can never contradict them.
Acknowledgement (an operator taking ownership) is kept beside the progress: the first
carer is paged automatically the moment an alarm arrives, usually before any operator has
picked the call up, and the call then shows "dispatched" while still unowned.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from callcenter.domain.call_types import PRIORITY, CallType
from callcenter.domain.dispatch import Candidate
from callcenter.domain.messages import Message, MessageKind, ResidentNote, Trip
from callcenter.domain.policy import Action, CountedFrom, Milestone, Policy, Step

# Presses closer together than this are counted but not each written to the history,
# so a stuck or chattering button cannot flood it.
PRESS_NOTE_INTERVAL = timedelta(seconds=30)
# The board alert raised when every escalation step has run and still nobody can go.
NOBODY_TO_SEND = "nobody_to_send"


class CallState(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    ON_THE_WAY = "on_the_way"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


OPEN_STATES = frozenset(set(CallState) - {CallState.RESOLVED, CallState.CANCELLED})


class Outcome(enum.StrEnum):
    """How a resolved call ended."""

    HELPED_AT_HOME = "helped_at_home"
    TAKEN_TO_HOSPITAL = "taken_to_hospital"
    FALSE_ALARM = "false_alarm"
    NO_ACCESS = "no_access"  # nobody could get in; handed to emergency services or family
    FAMILY_ATTENDED = "family_attended"
    DEVICE_FIXED = "device_fixed"
    OTHER = "other"


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


class CarerReport(enum.StrEnum):
    """What a carer (or an operator on the carer's behalf) reports."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    ON_THE_WAY = "on_the_way"
    ON_SCENE = "on_scene"


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
    household_id: int
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

    @property
    def state(self) -> CallState:
        """How far help has got, derived from the facts."""
        if self.closed_at is not None:
            return CallState.RESOLVED if self.outcome is not None else CallState.CANCELLED
        states = {a.state for a in self.assignments}
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
            return self.accepted_count >= self.policy.carers_required or not self.is_open
        if milestone is Milestone.ON_SCENE:
            return not self.is_open or any(
                a.state in (AssignmentState.ON_SCENE, AssignmentState.FINISHED)
                for a in self.assignments
            )
        return not self.is_open

    @property
    def carers_wanted(self) -> int:
        """How many more carers must be paged to have enough on the call."""
        return max(0, self.policy.carers_required - len(self.active_assignments))


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
    | StepDue
    | Unreachable
    | TextFailed
)


# --- what the engine is asked to do ------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a call's append-only history."""

    at: datetime
    actor: str
    action: str
    from_state: CallState | None
    to_state: CallState
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendSms:
    """Text someone. ``carer_id`` set: only while that carer's assignment is active;
    ``unless`` set: only while the call has not reached that milestone."""

    to: Person
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


Effect = SendSms | DeviceCommand | AlertDesk | ArmTimer | CancelTimers


@dataclass(frozen=True)
class Decision:
    call: Call
    history: tuple[HistoryEntry, ...] = ()
    effects: tuple[Effect, ...] = ()


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


class NotOwnerError(CallError):
    """Only the operator who owns the call (or a supervisor) may do this."""

    def __init__(self, call_id: int, owner: str, actor: str) -> None:
        self.owner = owner
        super().__init__(
            call_id,
            f"call {call_id} is owned by {owner}; {actor} may not act on it "
            "(ask the owner or a supervisor)",
        )


# --- opening -----------------------------------------------------------------------


def open_call(
    call_id: int,
    household_id: int,
    call_type: CallType,
    policy: Policy,
    device: str,
    situation: Situation,
) -> Decision:
    """A new call: history, escalation timers, and the first dispatch when the policy
    sends carers automatically."""
    now = situation.now
    call = Call(
        id=call_id,
        household_id=household_id,
        type=call_type,
        priority=PRIORITY[call_type],
        opened_at=now,
        policy=policy,
        last_press_at=now,
        press_noted_at=now,
    )
    raised = HistoryEntry(
        now,
        f"device:{device}",
        "raised",
        None,
        call.state,
        {"call_type": call_type.value, "priority": call.priority},
    )
    timers = tuple(
        ArmTimer(step.name, now + timedelta(seconds=step.after_s))
        for step in policy.steps
        if step.counted_from is CountedFrom.OPENED
    )
    decision = Decision(call, (raised,), timers)
    if policy.auto_dispatch:
        decision = _then(decision, _auto_dispatch(decision.call, situation, SYSTEM))
    return decision


# --- deciding ----------------------------------------------------------------------


def decide(call: Call, command: Command, situation: Situation) -> Decision:
    """Apply ``command`` to ``call``; raises a CallError when it does not fit."""
    if isinstance(command, AddNote):
        return _note(call, command, situation)
    if isinstance(command, DeviceNote):
        entry = _entry(call, call, situation, f"device:{command.device}", command.what)
        return Decision(call, (replace(entry, detail=command.detail),))
    if isinstance(command, TextFailed):
        return _text_failed(call, command, situation)
    if not call.is_open:
        if isinstance(command, StepDue):
            return Decision(call)  # a closed call has nothing left to escalate
        raise IllegalTransitionError(call.id, f"call {call.id} is already {call.state.value}")
    if isinstance(command, Press):
        return _press(call, command, situation)
    if isinstance(command, DeviceCancel):
        return _device_cancel(call, command, situation)
    if isinstance(command, Acknowledge):
        return _acknowledge(call, command.by, situation)
    if isinstance(command, StepDue):
        return _step_due(call, command, situation)
    if isinstance(command, Unreachable):
        return _unreachable(call, command, situation)
    if isinstance(command, Report) and command.by.kind is ActorKind.CARER:
        return _report(call, command, situation)
    if isinstance(command, AutoDispatch) and command.by.kind is ActorKind.SYSTEM:
        return _auto_dispatch(call, situation, command.by)
    if isinstance(command, Resolve) and command.by.kind is ActorKind.CARER:
        return _carer_resolves(call, command, situation)
    # Everything else is desk work: the first operator to touch the call owns it.
    decision = _take_ownership(call, command.by, situation)
    call = decision.call
    if isinstance(command, AutoDispatch):
        return _then(decision, _auto_dispatch(call, situation, command.by))
    if isinstance(command, Dispatch):
        return _then(decision, _dispatch(call, command, situation))
    if isinstance(command, Report):
        return _then(decision, _report(call, command, situation))
    if isinstance(command, StandDown):
        return _then(decision, _stand_down(call, command, situation))
    if isinstance(command, Resolve):
        return _then(
            decision,
            _close(call, command.by, situation, outcome=command.outcome, note=command.note),
        )
    return _then(
        decision, _close(call, command.by, situation, reason=command.reason, note=command.note)
    )


def _unreachable(call: Call, command: Unreachable, situation: Situation) -> Decision:
    assignment = call.assignment(command.carer_id)
    # Re-checked under the call's lock: a carer who answered anyway is left alone.
    if assignment is None or assignment.state is not AssignmentState.DISPATCHED:
        return Decision(call)
    decision = _release(
        call,
        assignment,
        AssignmentState.UNREACHABLE,
        SYSTEM,
        situation,
        "unreachable",
        why=command.why,
    )
    told = _tell_supervisors(
        call, situation, f"carer {assignment.carer_code} cannot be reached ({command.why})"
    )
    return Decision(decision.call, decision.history, decision.effects + told)


def _tell_supervisors(call: Call, situation: Situation, why: str) -> tuple[SendSms, ...]:
    message = _message(MessageKind.SUPERVISOR, call, situation, why=why)
    return tuple(SendSms(p, message) for p in situation.supervisors)


def _text_failed(call: Call, command: TextFailed, situation: Situation) -> Decision:
    entry = _entry(
        call,
        call,
        situation,
        SYSTEM,
        "text_failed",
        to=command.recipient,
        phone=command.phone,
        why=command.why,
    )
    # Supervisors are not texted about their own failed texts, nor about closed calls.
    if not call.is_open or command.recipient.startswith(SUPERVISOR_RECIPIENT):
        return Decision(call, (entry,))
    why = f"text to {command.recipient} ({command.phone}) not delivered: {command.why}"
    return Decision(call, (entry,), _tell_supervisors(call, situation, why))


def _carer_resolves(call: Call, command: Resolve, situation: Situation) -> Decision:
    """A carer at the door may close the call they are on; nobody else in the field may."""
    on_scene = [
        a
        for a in call.assignments
        if a.carer_code == command.by.name and a.state is AssignmentState.ON_SCENE
    ]
    if not on_scene:
        raise IllegalTransitionError(
            call.id,
            f"{command.by} can resolve call {call.id} only once on scene there; "
            "report on_scene first, or ask the desk",
        )
    return _close(call, command.by, situation, outcome=command.outcome, note=command.note)


def _entry(
    before: Call,
    after: Call,
    situation: Situation,
    actor: Actor | str,
    action: str,
    **detail: Any,
) -> HistoryEntry:
    return HistoryEntry(situation.now, str(actor), action, before.state, after.state, detail)


def _then(first: Decision, second: Decision) -> Decision:
    """``first`` followed by ``second`` (which was decided on first's call)."""
    return Decision(second.call, first.history + second.history, first.effects + second.effects)


def _note(call: Call, command: AddNote, situation: Situation) -> Decision:
    text = command.text.strip()
    if not text:
        raise IllegalTransitionError(call.id, "a note needs some text")
    return Decision(call, (_entry(call, call, situation, command.by, "note", text=text),))


def _press(call: Call, command: Press, situation: Situation) -> Decision:
    now = situation.now
    priority = min(call.priority, PRIORITY[command.call_type])
    noted = call.press_noted_at
    note_it = (
        call.presses == 1  # the first repeat says the resident is still there, pressing
        or noted is None
        or now - noted >= PRESS_NOTE_INTERVAL
        or priority < call.priority
    )
    after = replace(
        call,
        presses=call.presses + 1,
        priority=priority,
        last_press_at=now,
        press_noted_at=now if note_it else noted,
    )
    if not note_it:
        return Decision(after)
    entry = _entry(
        call,
        after,
        situation,
        f"device:{command.device}",
        "pressed_again",
        presses=after.presses,
        call_type=command.call_type.value,
        priority=priority,
    )
    return Decision(after, (entry,))


def _device_cancel(call: Call, command: DeviceCancel, situation: Situation) -> Decision:
    actor = f"device:{command.device}"
    grace = timedelta(seconds=call.policy.cancel_grace_s)
    if situation.now - call.opened_at > grace or call.reached(Milestone.ON_SCENE):
        # Too late to be a slip of the finger: somebody must still look.
        entry = _entry(call, call, situation, actor, "cancel_ignored", grace_s=grace.seconds)
        return Decision(call, (entry,))
    return _close(
        call,
        Actor(ActorKind.DEVICE, command.device),
        situation,
        reason=CancelReason.RESIDENT_CANCELLED,
        note="cancelled on the device within the grace window",
    )


def _acknowledge(call: Call, by: Actor, situation: Situation) -> Decision:
    if not by.is_desk:
        raise IllegalTransitionError(call.id, f"{by} cannot acknowledge a call; operators do")
    if call.owner is not None:
        if call.owner == str(by):
            raise IllegalTransitionError(call.id, f"call {call.id} is already yours")
        raise AlreadyOwnedError(call.id, call.owner)
    return _take_ownership(call, by, situation)


def _take_ownership(call: Call, by: Actor, situation: Situation) -> Decision:
    if not by.is_desk:
        raise IllegalTransitionError(call.id, f"{by} cannot do that; it is desk work")
    if call.owner is not None:
        if call.owner != str(by) and by.kind is not ActorKind.SUPERVISOR:
            raise NotOwnerError(call.id, call.owner, str(by))
        return Decision(call)
    after = replace(call, owner=str(by), acknowledged_at=situation.now)
    after = _clear_alerts(after)
    return Decision(
        after,
        (_entry(call, after, situation, by, "acknowledged"),),
        _cancel_steps(after, Milestone.ACKNOWLEDGED),
    )


def _cancel_steps(
    call: Call, milestone: Milestone, carer_id: int | None = None
) -> tuple[Effect, ...]:
    steps = frozenset(s.name for s in call.policy.steps if s.unless is milestone)
    return (CancelTimers(steps, carer_id),) if steps else ()


def _clear_alerts(call: Call) -> Call:
    """Drop alerts whose step is now satisfied; "nobody to send" stays until closure."""
    steps = {s.name: s for s in call.policy.steps}
    still = frozenset(
        name for name in call.alerts if name not in steps or not call.reached(steps[name].unless)
    )
    return replace(call, alerts=still)


def _page(call: Call, candidate: Candidate, by: Actor, situation: Situation) -> Decision:
    carer = candidate.carer
    assignment = Assignment(
        carer_id=carer.id,
        carer_code=carer.code,
        state=AssignmentState.DISPATCHED,
        dispatched_at=situation.now,
        dispatched_by=str(by),
        travel_s=round(candidate.travel_s, 1),
        changed_at=situation.now,
    )
    after = replace(call, assignments=(*call.assignments, assignment))
    entry = _entry(
        call,
        after,
        situation,
        by,
        "dispatched",
        carer=carer.code,
        carer_name=carer.name,
        travel_min=round(candidate.travel_s / 60, 1),
        tier=candidate.tier.name.lower(),
        within_circle=candidate.within_circle,
    )
    effects: list[Effect] = [
        SendSms(
            Person(f"carer:{carer.code}", carer.name, carer.phone, carer.language),
            replace(
                _message(MessageKind.DISPATCH, call, situation),
                residents=tuple(r.aged(situation.now.year) for r in situation.resident_notes),
                trip=Trip(candidate.distance_m, candidate.travel_s),
            ),
            carer_id=carer.id,
        )
    ]
    effects += [
        ArmTimer(step.name, situation.now + timedelta(seconds=step.after_s), carer.id)
        for step in call.policy.steps
        if step.counted_from is CountedFrom.DISPATCHED
    ]
    return Decision(after, (entry,), tuple(effects))


def _auto_dispatch(call: Call, situation: Situation, by: Actor) -> Decision:
    """Page the best candidates the call still needs; nobody to send escalates at once."""
    decision = Decision(call)
    tried = {a.carer_id for a in call.assignments}
    for candidate in situation.candidates:
        if decision.call.carers_wanted == 0:
            break
        if candidate.carer.id in tried:
            continue  # declined, did not answer, or already on this call
        if call.policy.skills and not set(call.policy.skills) <= candidate.carer.skills:
            continue
        decision = _then(decision, _page(decision.call, candidate, by, situation))
    if decision.call.carers_wanted > 0:
        decision = _then(
            decision,
            _nobody_to_send(
                decision.call,
                situation,
                "no free carer on shift"
                + (f" with {', '.join(call.policy.skills)}" if call.policy.skills else ""),
                wanted=decision.call.carers_wanted,
            ),
        )
    return decision


def _dispatch(call: Call, command: Dispatch, situation: Situation) -> Decision:
    carer = command.carer.carer
    current = call.assignment(carer.id)
    if current is not None and current.active:
        raise IllegalTransitionError(call.id, f"carer {carer.code} is already on call {call.id}")
    return _page(call, command.carer, command.by, situation)


def _report(call: Call, command: Report, situation: Situation) -> Decision:
    assignment = call.assignment(command.carer_id)
    if assignment is None or not assignment.active:
        raise IllegalTransitionError(
            call.id, f"carer #{command.carer_id} is not on call {call.id}; dispatch them first"
        )
    if command.by.kind is ActorKind.CARER and command.by.name != assignment.carer_code:
        raise IllegalTransitionError(
            call.id, f"{command.by} cannot report for carer {assignment.carer_code}"
        )
    if command.report is CarerReport.DECLINED:
        if assignment.state is not AssignmentState.DISPATCHED:
            raise IllegalTransitionError(
                call.id,
                f"carer {assignment.carer_code} has already accepted call {call.id}; "
                "an operator can stand them down",
            )
        return _release(
            call, assignment, AssignmentState.DECLINED, command.by, situation, "declined"
        )
    target = AssignmentState(command.report.value)
    if _CARER_PROGRESS.index(target) <= _CARER_PROGRESS.index(assignment.state):
        raise IllegalTransitionError(
            call.id,
            f"carer {assignment.carer_code} is already {assignment.state.value} on call "
            f"{call.id}; cannot go back to {target.value}",
        )
    after = _with_assignment(call, replace(assignment, state=target, changed_at=situation.now))
    after = _clear_alerts(after)
    effects: list[Effect] = [CancelTimers(_dispatch_steps(call), assignment.carer_id)]
    if call.reached(Milestone.ACCEPTED) is False and after.reached(Milestone.ACCEPTED):
        effects += _cancel_steps(after, Milestone.ACCEPTED)
    if not any(a.state in _ACCEPTED_OR_LATER for a in call.assignments):
        effects.append(DeviceCommand("help_on_the_way"))
    if not call.reached(Milestone.ON_SCENE) and after.reached(Milestone.ON_SCENE):
        effects += _cancel_steps(after, Milestone.ON_SCENE)
    entry = _entry(call, after, situation, command.by, target.value, carer=assignment.carer_code)
    return Decision(after, (entry,), tuple(effects))


def _dispatch_steps(call: Call) -> frozenset[str]:
    return frozenset(s.name for s in call.policy.steps if s.counted_from is CountedFrom.DISPATCHED)


def _with_assignment(call: Call, changed: Assignment) -> Call:
    """``call`` with the carer's active assignment replaced by ``changed``."""
    assignments = list(call.assignments)
    for index in range(len(assignments) - 1, -1, -1):
        if assignments[index].carer_id == changed.carer_id and assignments[index].active:
            assignments[index] = changed
            break
    return replace(call, assignments=tuple(assignments))


def _release(
    call: Call,
    assignment: Assignment,
    state: AssignmentState,
    by: Actor | str,
    situation: Situation,
    action: str,
    *,
    refill: bool = True,
    **detail: Any,
) -> Decision:
    """Take a carer off the call, then (``refill``) page someone else if it is now short."""
    after = _with_assignment(call, replace(assignment, state=state, changed_at=situation.now))
    entry = _entry(call, after, situation, by, action, carer=assignment.carer_code, **detail)
    effects: tuple[Effect, ...] = (CancelTimers(_dispatch_steps(call), assignment.carer_id),)
    decision = Decision(after, (entry,), effects)
    if refill and after.carers_wanted > 0:
        decision = _then(decision, _auto_dispatch(after, situation, SYSTEM))
    return decision


def _stand_down(call: Call, command: StandDown, situation: Situation) -> Decision:
    assignment = call.assignment(command.carer_id)
    if assignment is None or not assignment.active:
        raise IllegalTransitionError(call.id, f"carer #{command.carer_id} is not on call {call.id}")
    decision = _release(
        call,
        assignment,
        AssignmentState.STOOD_DOWN,
        command.by,
        situation,
        "stood_down",
        why=command.why,
    )
    sms = _stand_down_sms(call, assignment, situation, command.why or "stood down by the desk")
    return Decision(decision.call, decision.history, (*decision.effects, *sms))


def _stand_down_sms(
    call: Call, assignment: Assignment, situation: Situation, why: str
) -> tuple[SendSms, ...]:
    person = _carer_contact(assignment, situation)
    if person is None:
        return ()
    return (SendSms(person, _message(MessageKind.STAND_DOWN, call, situation, why=why)),)


def _carer_contact(assignment: Assignment, situation: Situation) -> Person | None:
    label = f"carer:{assignment.carer_code}"
    return next((p for p in situation.assigned if p.label == label), None)


def _close(
    call: Call,
    by: Actor,
    situation: Situation,
    *,
    outcome: Outcome | None = None,
    reason: CancelReason | None = None,
    note: str = "",
) -> Decision:
    now = situation.now
    released: list[Assignment] = []
    assignments = []
    for a in call.assignments:
        if a.state is AssignmentState.ON_SCENE:
            assignments.append(replace(a, state=AssignmentState.FINISHED, changed_at=now))
        elif a.active:
            released.append(a)
            assignments.append(replace(a, state=AssignmentState.STOOD_DOWN, changed_at=now))
        else:
            assignments.append(a)
    after = replace(
        call,
        assignments=tuple(assignments),
        closed_at=now,
        outcome=outcome,
        cancel_reason=reason,
        alerts=frozenset(),
    )
    action = "resolved" if outcome is not None else "cancelled"
    detail: dict[str, Any] = {"outcome": outcome.value} if outcome else {"reason": str(reason)}
    if note:
        detail["note"] = note
    entry = _entry(call, after, situation, by, action, **detail)
    why = f"call {action}"
    effects: list[Effect] = [CancelTimers(frozenset(s.name for s in call.policy.steps))]
    effects += [
        SendSms(person, _message(MessageKind.STAND_DOWN, call, situation, why=why))
        for a in released
        if (person := _carer_contact(a, situation)) is not None
    ]
    effects.append(DeviceCommand("call_closed"))
    return Decision(after, (entry,), tuple(effects))


# --- escalation --------------------------------------------------------------------


def _step_due(call: Call, command: StepDue, situation: Situation) -> Decision:
    try:
        step = call.policy.step(command.step)
    except KeyError:
        raise IllegalTransitionError(
            call.id, f"call {call.id} has no step {command.step!r}"
        ) from None
    if step.counted_from is CountedFrom.DISPATCHED:
        if command.carer_id is None:
            raise IllegalTransitionError(call.id, f"step {step.name!r} needs a carer")
        assignment = call.assignment(command.carer_id)
        # Re-checked here, under the call's lock: a carer who accepted is left alone.
        if assignment is None or assignment.state is not AssignmentState.DISPATCHED:
            return Decision(call)
        decision = _release(
            call,
            assignment,
            AssignmentState.NO_ANSWER,
            SYSTEM,
            situation,
            "no_answer",
            refill=Action.REDISPATCH in step.actions,
            step=step.name,
            waited_s=step.after_s,
        )
        rest = tuple(a for a in step.actions if a is not Action.REDISPATCH)
        sms = _stand_down_sms(call, assignment, situation, "no answer in time")
        alerts = decision.call.alerts
        if not decision.call.reached(step.unless):  # an extra carer's silence is no alarm
            alerts |= {step.name}
        flagged = replace(decision.call, alerts=alerts)
        decision = Decision(flagged, decision.history, decision.effects + sms)
        # The refill above paged someone, or found nobody and escalated by itself: a
        # missing station lead must not hand over to the next step as well.
        paged = Action.REDISPATCH in step.actions
        return _then(decision, _run_actions(decision.call, step, rest, situation, reached=paged))
    if step.name in call.fired_steps or call.reached(step.unless):
        return Decision(call)
    return _escalate(call, step, situation)


def _escalate(
    call: Call, step: Step, situation: Situation, *, early: str | None = None
) -> Decision:
    """Run one step (counted from the call's opening) now; ``early`` says why it runs
    before its time."""
    after = replace(
        call, fired_steps=call.fired_steps | {step.name}, alerts=call.alerts | {step.name}
    )
    entry = _entry(
        call,
        after,
        situation,
        SYSTEM,
        "escalated",
        step=step.name,
        waited_for=step.unless.value,
        actions=[a.value for a in step.actions],
        **({"early": early} if early else {}),
    )
    decision = Decision(after, (entry,), (CancelTimers(frozenset({step.name})),))
    return _then(decision, _run_actions(after, step, step.actions, situation, early=early))


def _run_actions(
    call: Call,
    step: Step,
    actions: Sequence[Action],
    situation: Situation,
    *,
    reached: bool = False,
    early: str | None = None,
) -> Decision:
    """Carry out a step's actions. A missing contact number is recorded; a step that
    reached nobody at all (``reached``: somebody already was) hands over to the next step."""
    decision = Decision(call)
    why = early or _why(step, call, situation)
    for action in actions:
        current = decision.call
        if action is Action.ALERT_OPERATORS:
            entry = _entry(current, current, situation, SYSTEM, action.value, why=why)
            alarm = AlertDesk(step.name, why)
            decision = Decision(current, (*decision.history, entry), (*decision.effects, alarm))
            reached = True
            continue
        if action is Action.REDISPATCH:
            if current.carers_wanted > 0:
                # Finding nobody to page escalates by itself (see _auto_dispatch).
                decision = _then(decision, _auto_dispatch(current, situation, SYSTEM))
            reached = True
            continue
        if action is Action.EMERGENCY_SERVICES:
            # Whoever else is told, every board sounds: someone must ring 120 now.
            alarm = AlertDesk(step.name, f"{why}: ring emergency services (120) now")
            decision = Decision(current, decision.history, (*decision.effects, alarm))
            reached = True
        people, kind = {
            Action.ALERT_SUPERVISOR: (situation.supervisors, MessageKind.SUPERVISOR),
            Action.NOTIFY_STATION_LEAD: (situation.station_leads, MessageKind.STATION_LEAD),
            Action.NOTIFY_FAMILY: (situation.family[:1], MessageKind.FAMILY_DELAYED),
            Action.EMERGENCY_SERVICES: (situation.supervisors, MessageKind.EMERGENCY_SERVICES),
        }[action]
        if not people:
            entry = _entry(
                current,
                current,
                situation,
                SYSTEM,
                NOBODY_TO_SEND,
                why=f"{action.value}: no contact number",
            )
            decision = Decision(current, (*decision.history, entry), decision.effects)
            continue
        message = _message(kind, current, situation, why=why)
        sms = tuple(SendSms(p, message, unless=step.unless) for p in people)
        entry = _entry(
            current, current, situation, SYSTEM, action.value, to=[p.label for p in people]
        )
        decision = Decision(current, (*decision.history, entry), decision.effects + sms)
        reached = True
    if actions and not reached:
        decision = _then(
            decision, _next_step(decision.call, situation, f"step {step.name} reached nobody")
        )
    return decision


def _nobody_to_send(call: Call, situation: Situation, why: str, **detail: Any) -> Decision:
    """Record that nobody could be sent, then run the next escalation step at once."""
    entry = _entry(call, call, situation, SYSTEM, NOBODY_TO_SEND, why=why, **detail)
    return _then(Decision(call, (entry,)), _next_step(call, situation, f"nobody to send: {why}"))


def _next_step(call: Call, situation: Situation, because: str) -> Decision:
    """Run the earliest step that has not fired yet, now; with none left, raise the
    "nobody to send" alert for the desk to find someone by hand."""
    upcoming = sorted(
        (
            s
            for s in call.policy.steps
            if s.counted_from is CountedFrom.OPENED
            and s.name not in call.fired_steps
            and not call.reached(s.unless)
        ),
        key=lambda s: s.after_s,
    )
    if upcoming:
        return _escalate(call, upcoming[0], situation, early=because)
    return Decision(replace(call, alerts=call.alerts | {NOBODY_TO_SEND}))


def _why(step: Step, call: Call, situation: Situation) -> str:
    waited = (situation.now - call.opened_at).total_seconds()
    after = f"{round(waited)} s" if waited < 120 else f"{round(waited / 60)} min"
    return {
        Milestone.ACKNOWLEDGED: f"no operator has taken it after {after}",
        Milestone.ACCEPTED: "the paged carer did not accept in time",
        Milestone.ON_SCENE: f"no carer on scene after {after}",
        Milestone.CLOSED: f"still open after {after}",
    }[step.unless]


def _message(kind: MessageKind, call: Call, situation: Situation, **extra: str) -> Message:
    residents = situation.residents
    facts = {
        "call_ref": str(call.id),
        "call_type": call.type.value,
        "household": situation.household_code,
        "address": situation.address,
        "access": situation.access_notes,
        "residents": residents,
        "desk_phone": situation.desk_phone,
        "minutes": str(round((situation.now - call.opened_at).total_seconds() / 60)),
        **extra,
    }
    return Message(kind, facts)
