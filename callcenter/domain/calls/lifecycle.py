"""The call lifecycle as a pure state machine.

``decide(call, command, situation)`` returns the call's new state, the history entries
that explain the change and the effects to carry out (SMS, device commands, timers). It
never does I/O and never reads a clock: the time is ``situation.now``. Paging and
escalation, which several commands end in, are decided in ``escalation``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from callcenter.domain.call_types import PRIORITY, REVIEWED_TYPES, CallType
from callcenter.domain.calls.commands import (
    SUPERVISOR_RECIPIENT,
    Acknowledge,
    AddNote,
    AlreadyOwnedError,
    AnswerScript,
    ArmTimer,
    AutoDispatch,
    CancelTimers,
    CarerReport,
    Command,
    DeviceCancel,
    DeviceCommand,
    DeviceNote,
    Dispatch,
    Effect,
    FamilyHeard,
    FamilyRingOver,
    IllegalTransitionError,
    InboundNoted,
    InboundStep,
    NotOwnerError,
    NotPossibleError,
    PlaceCall,
    Press,
    Report,
    Resolve,
    RingHousehold,
    RingNoted,
    RingUnanswered,
    SendSms,
    Situation,
    StandDown,
    StepDue,
    TextFailed,
    Unreachable,
    VoicePurpose,
)
from callcenter.domain.calls.decisions import (
    Decision,
    HistoryEntry,
    _carer_contact,
    _dispatch_steps,
    _entry,
    _message,
    _said,
    _stand_down_sms,
    _then,
    _with_assignment,
)
from callcenter.domain.calls.escalation import (
    _auto_dispatch,
    _family_heard,
    _family_ring_over,
    _nobody_picked_up,
    _page,
    _release,
    _ring_unanswered,
    _step_due,
)
from callcenter.domain.calls.model import (
    _ACCEPTED_OR_LATER,
    _CARER_PROGRESS,
    SYSTEM,
    Actor,
    ActorKind,
    Assignment,
    AssignmentState,
    Call,
    CancelReason,
    Outcome,
    reason_needed,
)
from callcenter.domain.messages import Because, MessageKind, Reason
from callcenter.domain.policy import CountedFrom, Milestone, Policy
from callcenter.domain.scripts import ACTION_TEXT, ANSWER_TEXT, SCRIPTS

# Presses closer together than this are counted but not each written to the history,
# so a stuck or chattering button cannot flood it.
PRESS_NOTE_INTERVAL = timedelta(seconds=30)


def open_call(
    call_id: int,
    household_id: int | None,
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


def decide(call: Call, command: Command, situation: Situation) -> Decision:
    """Apply ``command`` to ``call``; raises a CallError when it does not fit."""
    if isinstance(command, AddNote):
        return _note(call, command, situation)
    if isinstance(command, DeviceNote):
        entry = _entry(call, call, situation, f"device:{command.device}", command.what)
        return Decision(call, (replace(entry, detail=command.detail),))
    if isinstance(command, TextFailed):
        return _text_failed(call, command, situation)
    if isinstance(command, RingNoted):
        return _ring_noted(call, command, situation)
    if isinstance(command, InboundNoted):
        return _inbound_noted(call, command, situation)
    # A family's ringing is followed to its end, also once the call has closed.
    if isinstance(command, FamilyHeard):
        return _family_heard(call, command, situation)
    if isinstance(command, FamilyRingOver):
        return _family_ring_over(call, command, situation)
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
    if isinstance(command, RingUnanswered):
        return _ring_unanswered(call, command, situation)
    if isinstance(command, Report) and command.by.kind is ActorKind.CARER:
        return _report(call, command, situation)
    if isinstance(command, AutoDispatch) and command.by.kind is ActorKind.SYSTEM:
        return _auto_dispatch(call, situation, command.by)
    if isinstance(command, Resolve) and command.by.kind is ActorKind.CARER:
        return _carer_resolves(call, command, situation)
    if isinstance(command, Dispatch | AutoDispatch) and call.household_id is None:
        raise NotPossibleError(
            call.id,
            "no_household",
            f"call {call.id} belongs to no household (a number nobody registered rang): "
            "there is no door to send a carer to",
        )
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
    if isinstance(command, AnswerScript):
        return _then(decision, _answer_script(call, command, situation))
    if isinstance(command, Resolve):
        return _then(decision, _desk_resolves(call, command, situation))
    if isinstance(command, RingHousehold):
        return _then(decision, _ring_household(call, command, situation))
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
        call,
        situation,
        Because(Reason.UNREACHABLE, {"carer": assignment.carer_code, "detail": command.why}),
    )
    return Decision(decision.call, decision.history, decision.effects + told)


def _ring_noted(call: Call, command: RingNoted, situation: Situation) -> Decision:
    """A phone call's progress, kept on the call (also once the call has closed)."""
    detail: dict[str, Any] = {"to": command.to, "purpose": command.purpose.value}
    detail["status"] = command.status
    if command.duration_s is not None:
        detail["duration_s"] = command.duration_s
    if command.key:
        detail["key"] = command.key
    if command.number:
        detail["number"] = command.number
    if command.attempt:
        detail["attempt"] = command.attempt
    return Decision(call, (_entry(call, call, situation, SYSTEM, "ring", **detail),))


def _inbound_noted(call: Call, command: InboundNoted, situation: Situation) -> Decision:
    """A step of a call to the centre's number, kept on the call (also once it has
    closed); nobody picking up escalates an open call at once."""
    detail: dict[str, Any] = {
        "step": command.step.value,
        "from": command.caller,
        "call_sid": command.call_sid,
    }
    if command.rung:
        detail["rung"] = list(command.rung)
    if command.by:
        detail["by"] = command.by
    if command.status:
        detail["status"] = command.status
    if command.duration_s is not None:
        detail["duration_s"] = command.duration_s
    decision = Decision(call, (_entry(call, call, situation, SYSTEM, "inbound", **detail),))
    if command.step is InboundStep.NOBODY and call.is_open:
        return _then(decision, _nobody_picked_up(call, situation))
    return decision


def _ring_household(call: Call, command: RingHousehold, situation: Situation) -> Decision:
    """Click-to-call: the operator's own phone rings; once they pick up, they hear which
    household is being rung while its numbers are dialled in order (docs/voice.md)."""
    message = _message(MessageKind.VOICE_BRIDGE, call, situation)
    ring = PlaceCall(command.operator, VoicePurpose.BRIDGE, message)
    entry = _entry(call, call, situation, command.by, "call_household", to=command.operator.label)
    return Decision(call, (entry,), (ring,))


def _tell_supervisors(call: Call, situation: Situation, why: Because) -> tuple[SendSms, ...]:
    message = _said(MessageKind.SUPERVISOR, call, situation, why)
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
    why = Because(
        Reason.TEXT_FAILED,
        {"to": command.recipient, "phone": command.phone, "detail": command.why},
    )
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
    if call.type in REVIEWED_TYPES and call.owner is None:
        return _reported_done(call, command, situation)
    return _close(call, command.by, situation, outcome=command.outcome, note=command.note)


def _carers_leave(call: Call, now: datetime) -> tuple[tuple[Assignment, ...], list[Assignment]]:
    """The call's carers when their part ends: those at the door have finished, those
    still on their way are stood down (returned apart, to be told)."""
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
    return tuple(assignments), released


def _reported_done(call: Call, command: Resolve, situation: Situation) -> Decision:
    """A carer's "done" on an emergency or fall no operator has owned: their part ends
    (the others still on it are stood down) and the call waits for an operator's review,
    with what the carer reported. Nobody more is paged for it; the steps waiting for an
    operator to take it still run, and if they have all run already (the desk let the
    alarm go unanswered), the supervisors are told now."""
    now = situation.now
    assignments, released = _carers_leave(call, now)
    after = replace(
        call,
        assignments=assignments,
        reported_outcome=command.outcome,
        reported_by=str(command.by),
        reported_at=now,
    )
    after = _clear_alerts(after)
    detail: dict[str, Any] = {"carer": command.by.name, "outcome": command.outcome.value}
    if command.note:
        detail["note"] = command.note
    entry = _entry(call, after, situation, command.by, "reported_done", **detail)
    # Every step but those waiting for an operator (or for the call to close) is done with.
    waiting = frozenset(
        s.name
        for s in call.policy.steps
        if s.unless not in (Milestone.ACKNOWLEDGED, Milestone.CLOSED)
    )
    effects: list[Effect] = [CancelTimers(waiting)] if waiting else []
    done = Because(
        Reason.REPORTED_DONE, {"carer": command.by.name, "outcome": command.outcome.value}
    )
    effects += [
        SendSms(person, _said(MessageKind.STAND_DOWN, call, situation, done))
        for a in released
        if (person := _carer_contact(a, situation)) is not None
    ]
    unseen = [
        s
        for s in call.policy.steps
        if s.unless is Milestone.ACKNOWLEDGED and s.name not in call.fired_steps
    ]
    if not unseen:
        effects += _tell_supervisors(
            call,
            situation,
            Because(
                Reason.AWAITING_REVIEW,
                {"carer": command.by.name, "outcome": command.outcome.value},
            ),
        )
    return Decision(after, (entry,), tuple(effects))


def _desk_resolves(call: Call, command: Resolve, situation: Situation) -> Decision:
    """The desk closes the call; an outcome that needs a carer's visit, when no carer
    reached the door, needs a reason (model.reason_needed), kept in the history."""
    reason = command.reason.strip()
    if not reason and reason_needed(call.type, command.outcome, call.carer_at_door):
        raise NotPossibleError(
            call.id,
            "reason_needed",
            f"no carer has reached the door of call {call.id}: to close it as "
            f"{command.outcome.value}, give a reason (who helped, or why nobody was sent), "
            "or send a carer first",
        )
    return _close(
        call, command.by, situation, outcome=command.outcome, note=command.note, why=reason
    )


def _answer_script(call: Call, command: AnswerScript, situation: Situation) -> Decision:
    """One answer to the handling script, in the history with the words asked (so the
    history says what was asked even after the script changes) and what it raises."""
    question = SCRIPTS[call.type].question(command.question)
    if question is None:
        known = ", ".join(q.id for q in SCRIPTS[call.type].questions)
        raise NotPossibleError(
            call.id,
            "unknown_question",
            f"the {call.type.value} script has no question {command.question!r}; "
            f"its questions are: {known}",
        )
    answer = ANSWER_TEXT[command.answer]
    detail: dict[str, Any] = {
        "question": question.id,
        "answer": command.answer.value,
        "question_zh": question.text.zh,
        "question_en": question.text.en,
        "answer_zh": answer.zh,
        "answer_en": answer.en,
    }
    raised = question.raises.get(command.answer)
    if raised is not None:
        action = ACTION_TEXT[raised]
        detail |= {"raises": raised.value, "raises_zh": action.zh, "raises_en": action.en}
    return Decision(call, (_entry(call, call, situation, command.by, "script_answer", **detail),))


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


def _dispatch(call: Call, command: Dispatch, situation: Situation) -> Decision:
    carer = command.carer.carer
    current = call.assignment(carer.id)
    if current is not None and current.active:
        raise IllegalTransitionError(call.id, f"carer {carer.code} is already on call {call.id}")
    # Picked by hand: written so, with how the carer failed this call before, if they did.
    detail: dict[str, Any] = {"by_hand": True}
    if carer.id in call.failed_carers and current is not None:
        detail["failed_before"] = current.state.value
    return _page(call, command.carer, command.by, situation, **detail)


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
    sms = _stand_down_sms(call, assignment, situation, command.why or Because(Reason.STOOD_DOWN))
    return Decision(decision.call, decision.history, (*decision.effects, *sms))


def _close(
    call: Call,
    by: Actor,
    situation: Situation,
    *,
    outcome: Outcome | None = None,
    reason: CancelReason | None = None,
    note: str = "",
    why: str = "",
) -> Decision:
    now = situation.now
    assignments, released = _carers_leave(call, now)
    after = replace(
        call,
        assignments=assignments,
        closed_at=now,
        outcome=outcome,
        cancel_reason=reason,
        alerts=frozenset(),
    )
    action = "resolved" if outcome is not None else "cancelled"
    detail: dict[str, Any] = {"outcome": outcome.value} if outcome else {"reason": str(reason)}
    if note:
        detail["note"] = note
    if why:
        detail["reason"] = why
    entry = _entry(call, after, situation, by, action, **detail)
    closed = Because(Reason.CALL_RESOLVED if outcome is not None else Reason.CALL_CANCELLED)
    effects: list[Effect] = [CancelTimers(frozenset(s.name for s in call.policy.steps))]
    effects += [
        SendSms(person, _said(MessageKind.STAND_DOWN, call, situation, closed))
        for a in released
        if (person := _carer_contact(a, situation)) is not None
    ]
    effects.append(DeviceCommand("call_closed"))
    return Decision(after, (entry,), tuple(effects))
