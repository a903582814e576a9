"""Who is asked to help, and who next: paging the best free carers, paging again when one
declines, stays silent or cannot be reached, and running the policy's escalation steps
(operators' alarm, supervisors, station lead, family, emergency services) when a
milestone is missed or nobody can be sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from callcenter.domain.calls.commands import (
    AlertDesk,
    ArmTimer,
    CancelTimers,
    Effect,
    IllegalTransitionError,
    Person,
    PlaceCall,
    RingUnanswered,
    SendSms,
    Situation,
    StepDue,
    VoicePurpose,
)
from callcenter.domain.calls.decisions import (
    Decision,
    HistoryEntry,
    _carer_contact,
    _dispatch_steps,
    _entry,
    _message,
    _stand_down_sms,
    _then,
    _with_assignment,
)
from callcenter.domain.calls.model import SYSTEM, Actor, Assignment, AssignmentState, Call
from callcenter.domain.dispatch import Candidate
from callcenter.domain.messages import Because, MessageKind, Reason, Trip
from callcenter.domain.policy import Action, CountedFrom, Milestone, Step

# The board alert raised when every escalation step has run and still nobody can go.
NOBODY_TO_SEND = "nobody_to_send"


def _page(
    call: Call, candidate: Candidate, by: Actor, situation: Situation, **detail: Any
) -> Decision:
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
        **detail,
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
    # Declined, did not answer, could not be reached, or already on this call: a carer
    # who failed it is offered again only when an operator picks them by hand.
    tried = {a.carer_id for a in call.assignments}
    for candidate in situation.candidates:
        if _wanted(decision.call, by) == 0:
            break
        if candidate.carer.id in tried:
            continue
        if call.policy.skills and not set(call.policy.skills) <= candidate.carer.skills:
            continue
        decision = _then(decision, _page(decision.call, candidate, by, situation))
    if _wanted(decision.call, by) > 0:
        decision = _then(
            decision,
            _nobody_to_send(
                decision.call,
                situation,
                Because(
                    Reason.NO_FREE_CARER,
                    {"skills": ", ".join(call.policy.skills)} if call.policy.skills else {},
                ),
                wanted=_wanted(decision.call, by),
            ),
        )
    return decision


@dataclass(frozen=True)
class DispatchResult:
    """What a dispatch did, for whoever asked for it: the carers paged (codes), whether
    some were wanted but nobody free could go, and the escalation steps that ran at once
    because of it."""

    sent: tuple[str, ...]
    nobody_free: bool
    escalated: tuple[str, ...]


def dispatch_result(decision: Decision) -> DispatchResult:
    """Read a dispatch's decision: the pages it wrote, and the "nobody to send" that
    ``_auto_dispatch`` writes (with the number still ``wanted``) when nobody could go."""
    history = decision.history
    return DispatchResult(
        sent=tuple(e.detail["carer"] for e in history if e.action == "dispatched"),
        nobody_free=any(e.action == NOBODY_TO_SEND and "wanted" in e.detail for e in history),
        escalated=tuple(e.detail["step"] for e in history if e.action == "escalated"),
    )


def _wanted(call: Call, by: Actor) -> int:
    """How many carers a dispatch by ``by`` still pages. A call a carer reported done
    wants nobody by itself; an operator reviewing it who asks for the best carer gets one."""
    if call.reported_outcome is not None and by.is_desk and not call.active_assignments:
        return 1
    return call.carers_wanted


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
        if Action.RING_CARER in step.actions:
            return _ring_carer(call, assignment, step, situation)
        silent = _carer_contact(assignment, situation)
        named = f"{assignment.carer_code} {silent.name}" if silent else assignment.carer_code
        return _carer_silent(
            call,
            assignment,
            step,
            situation,
            Because(Reason.NOT_ACCEPTED, {"carers": named}),
            waited_s=step.after_s,
        )
    if step.name in call.fired_steps or call.reached(step.unless):
        return Decision(call)
    return _escalate(call, step, situation)


def _carer_silent(
    call: Call,
    assignment: Assignment,
    step: Step,
    situation: Situation,
    why: Because,
    **detail: Any,
) -> Decision:
    """Release a paged carer who did not answer (``step``, counted from their dispatch,
    ran out, or its ring went unanswered), stand them down, and run the step's other
    actions; ``why`` is the reason, in the actions' texts."""
    decision = _release(
        call,
        assignment,
        AssignmentState.NO_ANSWER,
        SYSTEM,
        situation,
        "no_answer",
        refill=Action.REDISPATCH in step.actions,
        step=step.name,
        **detail,
    )
    rest = tuple(a for a in step.actions if a is not Action.REDISPATCH)
    sms = _stand_down_sms(call, assignment, situation, Because(Reason.NO_ANSWER_IN_TIME))
    alerts = decision.call.alerts
    if not decision.call.reached(step.unless):  # an extra carer's silence is no alarm
        alerts |= {step.name}
    flagged = replace(decision.call, alerts=alerts)
    decision = Decision(flagged, decision.history, decision.effects + sms)
    # The refill above paged someone, or found nobody and escalated by itself: a
    # missing station lead must not hand over to the next step as well.
    paged = Action.REDISPATCH in step.actions
    return _then(
        decision,
        _run_actions(decision.call, step, rest, situation, reached=paged, because=why),
    )


def _ring_carer(call: Call, assignment: Assignment, step: Step, situation: Situation) -> Decision:
    """Ring a paged carer who has not accepted yet: the page's summary is spoken, and a
    key pressed answers as the text's code would (domain/replies.py). The carer stays on
    the call; the step counted from the dispatch that releases them still runs."""
    person = _carer_contact(assignment, situation)
    if person is None:
        missing = Because(Reason.NO_CONTACT, {"action": Action.RING_CARER.value})
        return Decision(call, (_nobody(call, situation, missing),))
    message = replace(
        _message(MessageKind.VOICE_PAGE, call, situation),
        residents=tuple(r.aged(situation.now.year) for r in situation.resident_notes),
    )
    ring = PlaceCall(person, VoicePurpose.PAGE, message, carer_id=assignment.carer_id)
    entry = _entry(
        call,
        call,
        situation,
        SYSTEM,
        "ring_carer",
        carer=assignment.carer_code,
        to=person.label,
        step=step.name,
        waited_s=step.after_s,
    )
    return Decision(call, (entry,), (ring,))


def _ring_unanswered(call: Call, command: RingUnanswered, situation: Situation) -> Decision:
    """The carer rung about their page did not pick up: released as if the step counted
    from their dispatch that releases them (``unaccepted`` by default) ran out now."""
    assignment = call.assignment(command.carer_id)
    # Re-checked under the call's lock: a carer who answered meanwhile is left alone.
    if assignment is None or assignment.state is not AssignmentState.DISPATCHED:
        return Decision(call)
    releasing = sorted(
        (
            s
            for s in call.policy.steps
            if s.counted_from is CountedFrom.DISPATCHED and Action.RING_CARER not in s.actions
        ),
        key=lambda s: s.after_s,
    )
    silent = _carer_contact(assignment, situation)
    named = f"{assignment.carer_code} {silent.name}" if silent else assignment.carer_code
    because = Because(Reason.RING_UNANSWERED, {"carer": named, "status": command.status})
    waited = round((situation.now - assignment.dispatched_at).total_seconds())
    detail: dict[str, Any] = {
        "waited_s": waited,
        "ring": command.status,
        "because": because.as_detail(),
    }
    if releasing:
        return _carer_silent(call, assignment, releasing[0], situation, because, **detail)
    return _release(
        call, assignment, AssignmentState.NO_ANSWER, SYSTEM, situation, "no_answer", **detail
    )


def _escalate(
    call: Call, step: Step, situation: Situation, *, early: Because | None = None
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
        **({"early": early.text("en"), "because": early.as_detail()} if early else {}),
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
    early: Because | None = None,
    because: Because | None = None,
) -> Decision:
    """Carry out a step's actions. A missing contact number is recorded; a step that
    reached nobody at all (``reached``: somebody already was) hands over to the next step.
    ``because`` (else ``early``, else the step's missed milestone) is why, in every
    text in its recipient's language and in the history as ``detail.because``."""
    decision = Decision(call)
    because = because or early or _why(step, call, situation)
    why = because.text("en")
    for action in actions:
        current = decision.call
        if action is Action.ALERT_OPERATORS:
            entry = _entry(
                current,
                current,
                situation,
                SYSTEM,
                action.value,
                why=why,
                because=because.as_detail(),
            )
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
            missing = Because(Reason.NO_CONTACT, {"action": action.value})
            entry = _nobody(current, situation, missing)
            decision = Decision(current, (*decision.history, entry), decision.effects)
            continue
        message = replace(_message(kind, current, situation), because=because)
        sms = tuple(SendSms(p, message, unless=step.unless) for p in people)
        entry = _entry(
            current,
            current,
            situation,
            SYSTEM,
            action.value,
            to=[p.label for p in people],
            because=because.as_detail(),
        )
        decision = Decision(current, (*decision.history, entry), decision.effects + sms)
        reached = True
    if actions and not reached:
        nobody = Because(Reason.REACHED_NOBODY, {"step": step.name})
        decision = _then(decision, _next_step(decision.call, situation, nobody))
    return decision


def _nobody(call: Call, situation: Situation, why: Because, **detail: Any) -> HistoryEntry:
    """The history line saying that nobody could be sent or told, and ``why``."""
    return _entry(
        call,
        call,
        situation,
        SYSTEM,
        NOBODY_TO_SEND,
        why=why.text("en"),
        because=why.as_detail(),
        **detail,
    )


def _nobody_to_send(call: Call, situation: Situation, why: Because, **detail: Any) -> Decision:
    """Record that nobody could be sent, then run the next escalation step at once."""
    entry = _nobody(call, situation, why, **detail)
    return _then(Decision(call, (entry,)), _next_step(call, situation, why))


def _next_step(call: Call, situation: Situation, because: Because) -> Decision:
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


def _nobody_picked_up(call: Call, situation: Situation) -> Decision:
    """Nobody at the desk picked up a call to the centre's number: the steps that wait
    for an operator to own the call run now, as on an alarm nobody took."""
    due = [
        s
        for s in call.policy.steps
        if s.counted_from is CountedFrom.OPENED
        and s.unless is Milestone.ACKNOWLEDGED
        and s.name not in call.fired_steps
        and not call.reached(s.unless)
    ]
    decision = Decision(call)
    for step in sorted(due, key=lambda s: s.after_s):
        decision = _then(decision, _escalate(decision.call, step, situation))
    return decision


def _why(step: Step, call: Call, situation: Situation) -> Because:
    """Why a step counted from the call's opening runs on time: the milestone it waited
    for, how long the call has waited, and for acceptance the carers paged in vain."""
    waited = {"waited_s": str(round((situation.now - call.opened_at).total_seconds()))}
    if step.unless is Milestone.ACCEPTED:
        silent = [
            f"{a.carer_code} {p.name}" if (p := _carer_contact(a, situation)) else a.carer_code
            for a in call.assignments
            if a.state is AssignmentState.DISPATCHED
        ]
        if silent:
            return Because(Reason.NOT_ACCEPTED, {"carers": ", ".join(silent)})
        return Because(Reason.NOBODY_ACCEPTED, waited)
    return Because(
        {
            Milestone.ACKNOWLEDGED: Reason.NOT_TAKEN,
            Milestone.ON_SCENE: Reason.NOT_ON_SCENE,
            Milestone.CLOSED: Reason.STILL_OPEN,
        }[step.unless],
        waited,
    )
