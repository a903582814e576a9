"""The call lifecycle (domain/calls/): transitions, coalescing, invariants.

Pure: calls and situations are built by hand and every test runs on a virtual timeline
(``Situation(now=...)``); no loop, no database, no clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.domain.call_types import PRIORITY, REVIEWED_TYPES, CallType
from callcenter.domain.calls import (
    NOBODY_TO_SEND,
    PRESS_NOTE_INTERVAL,
    SYSTEM,
    Acknowledge,
    Actor,
    AddNote,
    AlreadyOwnedError,
    ArmTimer,
    AssignmentState,
    AutoDispatch,
    Call,
    CallError,
    CallState,
    Cancel,
    CancelReason,
    CancelTimers,
    CarerReport,
    Command,
    Decision,
    DeviceCancel,
    DeviceCommand,
    DeviceNote,
    Dispatch,
    IllegalTransitionError,
    NotOwnerError,
    Outcome,
    Person,
    Press,
    Report,
    Resolve,
    SendSms,
    StandDown,
    StepDue,
    TextFailed,
    Unreachable,
    decide,
)
from callcenter.domain.messages import MessageKind, render
from callcenter.domain.policy import (
    DEFAULT_POLICIES,
    Action,
    CountedFrom,
    Milestone,
    Step,
)
from tests.calls_support import (
    ALL_STEPS,
    CALL_ID,
    CARER_IDS,
    CLOSED,
    DEVICE,
    DEVICE_ACTOR,
    DISPATCH_STEPS,
    EMERGENCY,
    HOUSEHOLD_ID,
    OPEN,
    OPERATOR,
    OTHER_OPERATOR,
    SUPERVISOR,
    SUPERVISORS,
    T0,
    accept,
    actions,
    at,
    call_in,
    candidate,
    carer_actor,
    check_history,
    of_type,
    open_,
    report,
    situation,
    states,
    step,
    texts,
)

# --- opening -----------------------------------------------------------------------


def test_open_emergency_pages_the_best_carer_and_arms_the_ladder() -> None:
    """Test that an emergency opens raised, pages the first candidate and arms every timer."""
    decision = open_()
    call = decision.call
    assert call.state is CallState.DISPATCHED
    assert (call.id, call.household_id, call.type, call.priority) == (
        CALL_ID,
        HOUSEHOLD_ID,
        CallType.EMERGENCY,
        1,
    )
    assert call.presses == 1
    assert call.owner is None
    assert call.opened_at == call.last_press_at == call.press_noted_at == T0
    assert actions(decision) == ["raised", "dispatched"]
    raised, dispatched = decision.history
    assert raised.actor == f"device:{DEVICE}"
    assert (raised.from_state, raised.to_state) == (None, CallState.RAISED)
    assert raised.detail == {"call_type": "emergency", "priority": 1}
    assert dispatched.actor == "system:engine"
    assert (dispatched.from_state, dispatched.to_state) == (CallState.RAISED, CallState.DISPATCHED)
    assert dispatched.detail["carer"] == "C001"
    assert dispatched.detail["tier"] == "home"
    assert dispatched.detail["within_circle"] is True
    assert states(call) == {1: AssignmentState.DISPATCHED}
    assert call.assignments[0].dispatched_by == "system:engine"
    assert call.assignments[0].travel_s == 201.0
    timers = {(t.step, t.due_at, t.carer_id) for t in of_type(decision, ArmTimer)}
    assert timers == {
        ("unacknowledged", at(30), None),
        ("not_on_scene", at(15 * 60), None),
        ("emergency_services", at(30 * 60), None),
        ("ring_carer", at(60), 1),
        ("unaccepted", at(120), 1),
    }
    (sms,) = of_type(decision, SendSms)
    assert sms.to == Person("carer:C001", "Carer 1", "+8613800000001", "zh")
    assert sms.carer_id == 1
    assert sms.message.kind is MessageKind.DISPATCH
    text = render(sms.message, "en")
    assert "Call 41 EMERGENCY: H0007 Mrs Li (86), 12 Garden Lane. Key box 1234." in text
    assert "About 3 min away" in text  # candidate 1: 201 s
    assert "41a accept" in text


@pytest.mark.parametrize("call_type", list(CallType))
def test_open_arms_a_timer_for_every_step_counted_from_opening(call_type: CallType) -> None:
    """Test that opening arms one carer-less timer per step counted from "opened"."""
    policy = DEFAULT_POLICIES[call_type]
    decision = open_(call_type)
    assert decision.call.priority == PRIORITY[call_type]
    opened = {(t.step, t.due_at) for t in of_type(decision, ArmTimer) if t.carer_id is None}
    assert opened == {
        (s.name, at(s.after_s)) for s in policy.steps if s.counted_from is CountedFrom.OPENED
    }
    paged = [t for t in of_type(decision, ArmTimer) if t.carer_id is not None]
    per_carer = sum(1 for s in policy.steps if s.counted_from is CountedFrom.DISPATCHED)
    assert len(paged) == (policy.carers_required * per_carer if policy.auto_dispatch else 0)


@pytest.mark.parametrize("call_type", [CallType.DEVICE_OFFLINE, CallType.LOW_BATTERY])
def test_open_without_auto_dispatch_waits_raised(call_type: CallType) -> None:
    """Test that a device-health call pages nobody and waits, raised, for an operator."""
    decision = open_(call_type)
    assert decision.call.state is CallState.RAISED
    assert actions(decision) == ["raised"]
    assert not decision.call.assignments
    assert not of_type(decision, SendSms)


def test_open_fall_pages_two_carers_who_can_lift() -> None:
    """Test that a fall pages the two best candidates with the "lift" skill, nobody else."""
    candidates = (candidate(1, skills=()), candidate(2), candidate(3, skills=("lift", "nurse")))
    decision = open_(CallType.FALL, candidates=candidates)
    call = decision.call
    assert states(call) == {2: AssignmentState.DISPATCHED, 3: AssignmentState.DISPATCHED}
    assert actions(decision) == ["raised", "dispatched", "dispatched"]
    assert [s.carer_id for s in of_type(decision, SendSms)] == [2, 3]
    assert {t.carer_id for t in of_type(decision, ArmTimer) if t.step == "unaccepted"} == {2, 3}
    assert call.state is CallState.DISPATCHED
    one = step(call, accept(2), 30)
    assert one.call.state is CallState.DISPATCHED  # one of two is not enough
    assert of_type(one, DeviceCommand) == [DeviceCommand("help_on_the_way")]
    both = step(one.call, accept(3), 40)
    assert both.call.state is CallState.ACCEPTED
    assert not of_type(both, DeviceCommand)  # the device was told once


def test_open_fall_short_of_lifters_records_nobody_to_send() -> None:
    """Test that a fall with one lifter pages them and records the missing second carer."""
    decision = open_(CallType.FALL, candidates=(candidate(1, skills=()), candidate(2)))
    assert states(decision.call) == {2: AssignmentState.DISPATCHED}
    assert actions(decision)[:3] == ["raised", "dispatched", "nobody_to_send"]
    nobody = decision.history[2]
    assert nobody.detail["wanted"] == 1
    assert "lift" in nobody.detail["why"]


# --- the transition table ----------------------------------------------------------


S = CallState
CR = CarerReport


def row(
    name: str, before: CallState, command: Command, seconds: float, after: CallState, *written: str
) -> Any:
    """One line of the transition table: from ``before``, ``command`` at ``seconds`` leads
    to ``after`` and writes the ``written`` history actions."""
    return pytest.param(before, command, seconds, after, list(written), id=name)


# fmt: off
TRANSITIONS = [
    row("raised-acknowledge", S.RAISED, Acknowledge(OPERATOR), 20, S.ACKNOWLEDGED,
        "acknowledged"),
    row("raised-acknowledge-by-supervisor", S.RAISED, Acknowledge(SUPERVISOR), 20,
        S.ACKNOWLEDGED, "acknowledged"),
    row("raised-dispatch-takes-ownership", S.RAISED, Dispatch(OPERATOR, candidate(2)), 20,
        S.DISPATCHED, "acknowledged", "dispatched"),
    row("raised-autodispatch", S.RAISED, AutoDispatch(OPERATOR), 20, S.DISPATCHED,
        "acknowledged", "dispatched"),
    row("raised-press", S.RAISED, Press(CallType.EMERGENCY, DEVICE), 40, S.RAISED,
        "pressed_again"),
    row("raised-device-cancel", S.RAISED, DeviceCancel(DEVICE), 20, S.CANCELLED, "cancelled"),
    row("raised-note", S.RAISED, AddNote(OPERATOR, "rang the daughter"), 20, S.RAISED, "note"),
    row("raised-device-note", S.RAISED, DeviceNote(DEVICE, "battery_low", {"level": 9}), 20,
        S.RAISED, "battery_low"),
    row("raised-unacknowledged-due", S.RAISED, StepDue("unacknowledged"), 30, S.RAISED,
        "escalated", "alert_operators", "alert_supervisor"),
    row("acknowledged-dispatch", S.ACKNOWLEDGED, Dispatch(OPERATOR, candidate(2)), 20,
        S.DISPATCHED, "dispatched"),
    row("acknowledged-autodispatch", S.ACKNOWLEDGED, AutoDispatch(OPERATOR), 20, S.DISPATCHED,
        "dispatched"),
    row("acknowledged-unacknowledged-due-is-moot", S.ACKNOWLEDGED, StepDue("unacknowledged"),
        30, S.ACKNOWLEDGED),
    row("dispatched-acknowledge", S.DISPATCHED, Acknowledge(OPERATOR), 20, S.DISPATCHED,
        "acknowledged"),
    row("dispatched-autodispatch-has-enough", S.DISPATCHED, AutoDispatch(OPERATOR), 20,
        S.DISPATCHED, "acknowledged"),
    row("dispatched-accepted", S.DISPATCHED, accept(1), 20, S.ACCEPTED, "accepted"),
    row("dispatched-skip-to-on-the-way", S.DISPATCHED, report(1, CR.ON_THE_WAY), 20,
        S.ON_THE_WAY, "on_the_way"),
    row("dispatched-skip-to-on-scene", S.DISPATCHED, report(1, CR.ON_SCENE), 20, S.ON_SCENE,
        "on_scene"),
    row("dispatched-declined-refills", S.DISPATCHED, report(1, CR.DECLINED), 20, S.DISPATCHED,
        "declined", "dispatched"),
    row("dispatched-accepted-by-operator-for-carer", S.DISPATCHED,
        Report(OPERATOR, 1, CR.ACCEPTED), 20, S.ACCEPTED, "acknowledged", "accepted"),
    row("dispatched-stand-down-refills", S.DISPATCHED, StandDown(OPERATOR, 1, "wrong carer"),
        20, S.DISPATCHED, "acknowledged", "stood_down", "dispatched"),
    row("dispatched-second-carer", S.DISPATCHED, Dispatch(OPERATOR, candidate(2)), 20,
        S.DISPATCHED, "acknowledged", "dispatched"),
    row("dispatched-unaccepted-due", S.DISPATCHED, StepDue("unaccepted", 1), 120, S.DISPATCHED,
        "no_answer", "dispatched", "notify_station_lead"),
    row("accepted-on-the-way", S.ACCEPTED, report(1, CR.ON_THE_WAY), 30, S.ON_THE_WAY,
        "on_the_way"),
    row("accepted-skip-to-on-scene", S.ACCEPTED, report(1, CR.ON_SCENE), 30, S.ON_SCENE,
        "on_scene"),
    row("accepted-unaccepted-due-is-moot", S.ACCEPTED, StepDue("unaccepted", 1), 120,
        S.ACCEPTED),
    row("on-the-way-on-scene", S.ON_THE_WAY, report(1, CR.ON_SCENE), 30, S.ON_SCENE,
        "on_scene"),
    row("on-the-way-not-on-scene-due", S.ON_THE_WAY, StepDue("not_on_scene"), 900,
        S.ON_THE_WAY, "escalated", "alert_supervisor", "notify_family", "ring_family"),
    row("on-scene-not-on-scene-due-is-moot", S.ON_SCENE, StepDue("not_on_scene"), 900,
        S.ON_SCENE),
    row("on-scene-device-cancel-ignored", S.ON_SCENE, DeviceCancel(DEVICE), 320, S.ON_SCENE,
        "cancel_ignored"),
    row("on-scene-press", S.ON_SCENE, Press(CallType.SERVICE_REQUEST, DEVICE), 320,
        S.ON_SCENE, "pressed_again"),
    row("resolved-note", S.RESOLVED, AddNote(OPERATOR, "family thanked us"), 700, S.RESOLVED,
        "note"),
    row("resolved-device-note", S.RESOLVED, DeviceNote(DEVICE, "back_online"), 700,
        S.RESOLVED, "back_online"),
    row("resolved-step-due-is-a-no-op", S.RESOLVED, StepDue("emergency_services"), 1800,
        S.RESOLVED),
    row("cancelled-note-by-anyone", S.CANCELLED, AddNote(OTHER_OPERATOR, "it was the cat"),
        700, S.CANCELLED, "note"),
    row("cancelled-step-due-is-a-no-op", S.CANCELLED, StepDue("unacknowledged"), 30,
        S.CANCELLED),
]
# fmt: on


@pytest.mark.parametrize(("before", "command", "seconds", "after", "written"), TRANSITIONS)
def test_legal_transitions(
    before: CallState, command: Command, seconds: float, after: CallState, written: list[str]
) -> None:
    """Test that each legal command moves the call to the expected state with its history."""
    call = call_in(before)
    decision = step(call, command, seconds)
    assert decision.call.state is after
    assert actions(decision) == written
    for entry in decision.history:
        assert entry.at == at(seconds)
    if not written:
        assert decision.call == call
        assert not decision.effects


@pytest.mark.parametrize("before", OPEN)
@pytest.mark.parametrize(
    ("command", "after"),
    [
        (
            Resolve(OPERATOR, Outcome.FALSE_ALARM, "resident fine", reason="rang her: a slip"),
            CallState.RESOLVED,
        ),
        (Cancel(OPERATOR, CancelReason.ENTERED_IN_ERROR, "wrong house"), CallState.CANCELLED),
    ],
)
def test_every_open_state_can_be_resolved_or_cancelled(
    before: CallState, command: Resolve | Cancel, after: CallState
) -> None:
    """Test that resolve and cancel close the call from every open state and tidy up."""
    call = call_in(before)
    decision = step(call, command, 700)
    closed = decision.call
    assert closed.state is after
    assert not closed.is_open
    assert closed.closed_at == at(700)
    assert not closed.active_assignments
    assert not closed.alerts
    last = decision.history[-1]
    assert last.action == after.value
    assert last.actor == str(OPERATOR)
    if isinstance(command, Resolve):
        assert (closed.outcome, closed.cancel_reason) == (Outcome.FALSE_ALARM, None)
        assert last.detail == {
            "outcome": "false_alarm",
            "note": "resident fine",
            "reason": "rang her: a slip",
        }
    else:
        assert (closed.outcome, closed.cancel_reason) == (None, CancelReason.ENTERED_IN_ERROR)
        assert last.detail == {"reason": "entered_in_error", "note": "wrong house"}
    # The device stops its "help is coming" prompt however the call ended (docs/protocol.md).
    assert of_type(decision, DeviceCommand) == [DeviceCommand("call_closed")]
    if call.owner is None:
        assert actions(decision) == ["acknowledged", after.value]
    assert CancelTimers(frozenset(ALL_STEPS)) in decision.effects
    # A carer at the door finished the job; one still coming is told to stand down.
    was = states(call).get(1)
    # (Awaiting review, the carer's part had ended already: finished.)
    if was in (AssignmentState.ON_SCENE, AssignmentState.FINISHED):
        assert states(closed) == {1: AssignmentState.FINISHED}
        assert texts(decision) == []
    elif was is not None:
        assert states(closed) == {1: AssignmentState.STOOD_DOWN}
        assert texts(decision) == [("carer:C001", MessageKind.STAND_DOWN)]
        (sms,) = of_type(decision, SendSms)
        assert render(sms.message, "en").endswith(f"(call {after.value}).")
        assert render(sms.message, "zh").endswith("）。")


def test_resolve_by_supervisor_on_another_operators_call() -> None:
    """Test that a supervisor may close a call an operator owns, without taking it over."""
    call = call_in(CallState.ACKNOWLEDGED)
    decision = step(call, Resolve(SUPERVISOR, Outcome.FAMILY_ATTENDED), 100)
    assert decision.call.state is CallState.RESOLVED
    assert decision.call.owner == str(OPERATOR)
    assert actions(decision) == ["resolved"]
    assert decision.history[0].actor == "supervisor:zhao.min"


REFUSED = IllegalTransitionError  # the usual refusal, short enough for one-line rows

# fmt: off
ILLEGAL = [
    pytest.param(S.RAISED, Acknowledge(carer_actor(1)), REFUSED, id="carer-cannot-acknowledge"),
    pytest.param(S.RAISED, Acknowledge(DEVICE_ACTOR), REFUSED, id="device-cannot-acknowledge"),
    pytest.param(S.RAISED, Acknowledge(SYSTEM), REFUSED, id="system-cannot-acknowledge"),
    pytest.param(S.ACKNOWLEDGED, Acknowledge(OPERATOR), REFUSED,
                 id="same-operator-acknowledges-twice"),
    pytest.param(S.ACKNOWLEDGED, Acknowledge(OTHER_OPERATOR), AlreadyOwnedError,
                 id="second-operator-acknowledges"),
    pytest.param(S.ACKNOWLEDGED, Acknowledge(SUPERVISOR), AlreadyOwnedError,
                 id="supervisor-acknowledges-owned-call"),
    pytest.param(S.RAISED, Resolve(carer_actor(1), Outcome.HELPED_AT_HOME), REFUSED,
                 id="carer-cannot-resolve"),
    pytest.param(S.RAISED, Cancel(DEVICE_ACTOR, CancelReason.DUPLICATE), REFUSED,
                 id="device-actor-cannot-cancel-as-desk"),
    pytest.param(S.RAISED, Dispatch(carer_actor(1), candidate(2)), REFUSED,
                 id="carer-cannot-dispatch"),
    pytest.param(S.RAISED, AddNote(OPERATOR, "   "), REFUSED, id="note-needs-text"),
    pytest.param(S.RAISED, StepDue("no_such_step"), REFUSED, id="unknown-step"),
    pytest.param(S.DISPATCHED, StepDue("unaccepted"), REFUSED, id="dispatch-step-needs-carer"),
    pytest.param(S.DISPATCHED, Dispatch(OPERATOR, candidate(1)), REFUSED,
                 id="carer-already-on-call"),
    pytest.param(S.DISPATCHED, accept(2), REFUSED, id="report-for-carer-not-on-call"),
    pytest.param(S.DISPATCHED, Report(OPERATOR, 2, CR.ON_SCENE), REFUSED,
                 id="operator-report-for-carer-not-on-call"),
    pytest.param(S.DISPATCHED, StandDown(OPERATOR, 2), REFUSED,
                 id="stand-down-carer-not-on-call"),
    pytest.param(S.ACCEPTED, accept(1), REFUSED, id="accepted-twice"),
    pytest.param(S.ACCEPTED, report(1, CR.DECLINED), REFUSED, id="decline-after-accepting"),
    pytest.param(S.ON_THE_WAY, accept(1), REFUSED, id="on-the-way-back-to-accepted"),
    pytest.param(S.ON_THE_WAY, report(1, CR.DECLINED), REFUSED, id="decline-on-the-way"),
    pytest.param(S.ON_SCENE, report(1, CR.ON_THE_WAY), REFUSED,
                 id="on-scene-back-to-on-the-way"),
    pytest.param(S.ON_SCENE, accept(1), REFUSED, id="on-scene-back-to-accepted"),
    pytest.param(S.ON_SCENE, report(1, CR.ON_SCENE), REFUSED, id="on-scene-twice"),
    pytest.param(S.ON_SCENE, Dispatch(OPERATOR, candidate(1)), REFUSED,
                 id="dispatch-carer-on-scene"),
]
# fmt: on


@pytest.mark.parametrize(("before", "command", "error"), ILLEGAL)
def test_illegal_transitions_are_refused(
    before: CallState, command: Command, error: type[CallError]
) -> None:
    """Test that a command that does not fit raises the specific error with the call id."""
    call = call_in(before)
    with pytest.raises(CallError) as caught:
        decide(call, command, situation(700))
    assert type(caught.value) is error
    assert caught.value.call_id == CALL_ID
    assert str(caught.value)


CLOSED_REFUSES: list[Command] = [
    Press(CallType.EMERGENCY, DEVICE),
    DeviceCancel(DEVICE),
    Acknowledge(OTHER_OPERATOR),
    AutoDispatch(OPERATOR),
    Dispatch(OPERATOR, candidate(2)),
    accept(1),
    Report(OPERATOR, 1, CarerReport.ON_SCENE),
    StandDown(OPERATOR, 1),
    Resolve(OPERATOR, Outcome.OTHER),
    Cancel(OPERATOR, CancelReason.DUPLICATE),
]


@pytest.mark.parametrize("closed", CLOSED)
@pytest.mark.parametrize("command", CLOSED_REFUSES, ids=lambda c: type(c).__name__)
def test_closed_call_refuses_everything_but_notes_and_timers(
    closed: CallState, command: Command
) -> None:
    """Test that a resolved or cancelled call refuses every command except notes and StepDue."""
    call = call_in(closed)
    with pytest.raises(IllegalTransitionError, match=f"already {closed.value}"):
        decide(call, command, situation(900))


# --- acknowledgement and ownership -------------------------------------------------


def test_first_responder_owns_the_call() -> None:
    """Test that the first operator to acknowledge owns the call; the second is refused."""
    decision = step(call_in(CallState.DISPATCHED), Acknowledge(OPERATOR), 12)
    call = decision.call
    assert call.owner == "operator:li.na"
    assert call.acknowledged_at == at(12)
    entry = decision.history[0]
    assert (entry.actor, entry.action) == ("operator:li.na", "acknowledged")
    assert (entry.from_state, entry.to_state) == (CallState.DISPATCHED, CallState.DISPATCHED)
    assert decision.effects == (CancelTimers(frozenset({"unacknowledged"})),)
    with pytest.raises(AlreadyOwnedError) as caught:
        decide(call, Acknowledge(OTHER_OPERATOR), situation(13))
    assert caught.value.owner == "operator:li.na"
    assert "operator:li.na" in str(caught.value)
    with pytest.raises(IllegalTransitionError, match="already yours"):
        decide(call, Acknowledge(OPERATOR), situation(14))


def owned_dispatched() -> Call:
    """A fall call (two carers wanted) acknowledged by OPERATOR, who sent carer 1 by hand."""
    fall = replace(DEFAULT_POLICIES[CallType.FALL], auto_dispatch=False)
    call = step(open_(CallType.FALL, policy=fall).call, Acknowledge(OPERATOR), 5).call
    call = step(call, Dispatch(OPERATOR, candidate(1)), 8).call
    assert call.state is CallState.DISPATCHED
    assert call.carers_wanted == 1
    return call


DESK_COMMANDS: list[Command] = [
    AutoDispatch(OTHER_OPERATOR),
    Dispatch(OTHER_OPERATOR, candidate(2)),
    Report(OTHER_OPERATOR, 1, CarerReport.ACCEPTED),
    StandDown(OTHER_OPERATOR, 1, "closer carer free"),
    Resolve(OTHER_OPERATOR, Outcome.OTHER, reason="handled on the phone"),
    Cancel(OTHER_OPERATOR, CancelReason.DUPLICATE),
]


@pytest.mark.parametrize("command", DESK_COMMANDS, ids=lambda c: type(c).__name__)
def test_desk_work_by_a_non_owner_is_refused(command: Command) -> None:
    """Test that another operator may not do desk work on a call somebody owns."""
    call = owned_dispatched()
    with pytest.raises(NotOwnerError) as caught:
        decide(call, command, situation(20))
    assert caught.value.owner == "operator:li.na"
    assert "operator:wang.wei" in str(caught.value)


@pytest.mark.parametrize("command", DESK_COMMANDS, ids=lambda c: type(c).__name__)
def test_desk_work_by_a_supervisor_is_allowed(command: Command) -> None:
    """Test that a supervisor may do any desk work on an owned call, leaving the owner."""
    call = owned_dispatched()
    as_supervisor = replace(command, by=SUPERVISOR)  # type: ignore[type-var]
    decision = step(call, as_supervisor, 20)
    assert decision.call.owner == "operator:li.na"
    assert "acknowledged" not in actions(decision)
    assert decision.history[0].actor == "supervisor:zhao.min"


def test_carer_reports_need_no_ownership() -> None:
    """Test that a carer's own report is accepted on a call an operator owns."""
    decision = step(owned_dispatched(), accept(1), 20)
    assert states(decision.call) == {1: AssignmentState.ACCEPTED}
    assert decision.history[0].actor == "carer:C001"


def test_desk_command_on_unowned_call_takes_ownership() -> None:
    """Test that the first desk command on an unowned call acknowledges it implicitly."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, Dispatch(OTHER_OPERATOR, candidate(3)), 9)
    assert decision.call.owner == "operator:wang.wei"
    assert decision.call.acknowledged_at == at(9)
    assert actions(decision) == ["acknowledged", "dispatched"]
    assert CancelTimers(frozenset({"unacknowledged"})) in decision.effects
    assert decision.history[1].detail["carer"] == "C003"
    assert decision.call.assignments[-1].dispatched_by == "operator:wang.wei"


# --- dispatching and carer reports -------------------------------------------------


def test_dispatch_again_after_decline_is_allowed() -> None:
    """Test that an operator may re-page a carer who declined earlier (a new assignment)."""
    declined = step(call_in(CallState.DISPATCHED), report(1, CarerReport.DECLINED), 10).call
    decision = step(declined, Dispatch(OPERATOR, candidate(1)), 20)
    mine = [a.state for a in decision.call.assignments if a.carer_id == 1]
    assert mine == [AssignmentState.DECLINED, AssignmentState.DISPATCHED]
    assert decision.call.assignment(1) is not None
    assert decision.call.assignment(1).state is AssignmentState.DISPATCHED  # type: ignore[union-attr]


def test_carer_progress_skipping_ahead_and_device_told_once() -> None:
    """Test that accepted -> on the way -> on scene tells the device once, at acceptance."""
    call = call_in(CallState.DISPATCHED)
    accepted = step(call, accept(1), 20)
    assert accepted.call.state is CallState.ACCEPTED
    assert of_type(accepted, DeviceCommand) == [DeviceCommand("help_on_the_way")]
    assert CancelTimers(DISPATCH_STEPS, 1) in accepted.effects
    assert CancelTimers(DISPATCH_STEPS) in accepted.effects
    way = step(accepted.call, report(1, CarerReport.ON_THE_WAY), 30)
    assert way.call.state is CallState.ON_THE_WAY
    assert not of_type(way, DeviceCommand)
    scene = step(way.call, report(1, CarerReport.ON_SCENE), 400)
    assert scene.call.state is CallState.ON_SCENE
    assert not of_type(scene, DeviceCommand)
    assert CancelTimers(frozenset({"not_on_scene", "emergency_services"})) in scene.effects
    assert scene.history[0].detail == {"carer": "C001"}
    assert scene.call.assignments[0].changed_at == at(400)


def test_skipping_straight_to_on_scene_reaches_every_milestone() -> None:
    """Test that "on scene" from "dispatched" tells the device and cancels both ladders."""
    decision = step(call_in(CallState.DISPATCHED), report(1, CarerReport.ON_SCENE), 50)
    assert of_type(decision, DeviceCommand) == [DeviceCommand("help_on_the_way")]
    cancelled = {(c.steps, c.carer_id) for c in of_type(decision, CancelTimers)}
    assert cancelled == {
        (DISPATCH_STEPS, 1),
        (DISPATCH_STEPS, None),
        (frozenset({"not_on_scene", "emergency_services"}), None),
    }


def test_decline_refills_with_next_untried_candidate() -> None:
    """Test that each decline pages the next candidate nobody has tried, until none is left."""
    call = call_in(CallState.DISPATCHED)
    first = step(call, report(1, CarerReport.DECLINED), 10)
    assert states(first.call) == {1: AssignmentState.DECLINED, 2: AssignmentState.DISPATCHED}
    assert CancelTimers(DISPATCH_STEPS, 1) in first.effects
    assert {t.carer_id for t in of_type(first, ArmTimer)} == {2}
    assert texts(first) == [("carer:C002", MessageKind.DISPATCH)]
    assert first.history[0].detail == {"carer": "C001"}
    assert first.history[1].actor == "system:engine"
    # Carer 1 shows as free again, but has already said no to this call.
    second = step(first.call, report(2, CarerReport.DECLINED), 20, candidates=(1, 2, 3))
    assert states(second.call)[3] is AssignmentState.DISPATCHED
    third = step(second.call, report(3, CarerReport.DECLINED), 30, candidates=(1, 2, 3))
    assert actions(third)[:2] == ["declined", "nobody_to_send"]
    assert not third.call.active_assignments
    assert third.call.state is CallState.RAISED


def test_operator_stand_down_texts_the_carer_and_refills() -> None:
    """Test that standing a carer down texts them why and pages the next candidate."""
    decision = step(call_in(CallState.ACCEPTED), StandDown(OPERATOR, 1, "car broke down"), 40)
    assert states(decision.call) == {1: AssignmentState.STOOD_DOWN, 2: AssignmentState.DISPATCHED}
    assert decision.call.state is CallState.DISPATCHED
    assert texts(decision) == [
        ("carer:C002", MessageKind.DISPATCH),
        ("carer:C001", MessageKind.STAND_DOWN),
    ]
    stand_down = of_type(decision, SendSms)[-1]
    assert stand_down.message.facts["why"] == "car broke down"
    assert decision.history[1].detail == {"carer": "C001", "why": "car broke down"}


# --- coalescing presses and the device's cancel button -----------------------------


def test_press_on_open_call_counts_and_notes() -> None:
    """Test that a press after the note interval is counted and written to the history."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, Press(CallType.EMERGENCY, DEVICE), 45)
    assert decision.call.presses == 2
    assert decision.call.last_press_at == decision.call.press_noted_at == at(45)
    assert decision.call.priority == 1
    (entry,) = decision.history
    assert (entry.actor, entry.action) == (f"device:{DEVICE}", "pressed_again")
    assert entry.detail == {"presses": 2, "call_type": "emergency", "priority": 1}
    assert not decision.effects


def test_press_within_note_interval_is_counted_silently() -> None:
    """Test that the first repeat press is written down, and a press soon after the last
    noted one is counted without a history line."""
    first = step(call_in(CallState.DISPATCHED), Press(CallType.EMERGENCY, DEVICE), 5)
    assert actions(first) == ["pressed_again"]
    decision = step(first.call, Press(CallType.EMERGENCY, DEVICE), 10)
    assert decision.call.presses == 3
    assert decision.call.last_press_at == at(10)
    assert decision.call.press_noted_at == at(5)
    assert not decision.history


def test_emergency_press_raises_a_service_request() -> None:
    """Test that an emergency press on a service request raises it to priority 1 at once."""
    call = open_(CallType.SERVICE_REQUEST).call
    assert call.priority == 2
    decision = step(call, Press(CallType.EMERGENCY, DEVICE), 3)  # inside the note interval
    assert decision.call.priority == 1
    assert decision.call.type is CallType.SERVICE_REQUEST
    assert actions(decision) == ["pressed_again"]
    assert decision.history[0].detail["priority"] == 1
    calmer = step(decision.call, Press(CallType.SERVICE_REQUEST, DEVICE), 100)
    assert calmer.call.priority == 1  # priority never drops


def test_chattering_button_writes_one_line_per_interval() -> None:
    """Test that 1000 presses within 10 s make one history line but count every press."""
    call = call_in(CallState.DISPATCHED)
    lines = 0
    for n in range(1000):
        decision = step(call, Press(CallType.EMERGENCY, DEVICE), 60 + n / 100)
        lines += len(decision.history)
        call = decision.call
    assert lines == 1
    assert call.presses == 1001
    assert call.last_press_at == at(60 + 999 / 100)
    assert PRESS_NOTE_INTERVAL.total_seconds() == 30
    # Once the interval has passed the next press is noted again.
    assert len(step(call, Press(CallType.EMERGENCY, DEVICE), 90).history) == 1


@pytest.mark.parametrize("seconds", [0, 20, 59.9, 60])
def test_device_cancel_within_grace_cancels(seconds: float) -> None:
    """Test that cancel on the device within the grace window closes the call cleanly."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, DeviceCancel(DEVICE), seconds)
    closed = decision.call
    assert closed.state is CallState.CANCELLED
    assert closed.cancel_reason is CancelReason.RESIDENT_CANCELLED
    assert closed.owner is None
    (entry,) = decision.history
    assert (entry.actor, entry.action) == (f"device:{DEVICE}", "cancelled")
    assert entry.detail["reason"] == "resident_cancelled"
    assert states(closed) == {1: AssignmentState.STOOD_DOWN}
    assert texts(decision) == [("carer:C001", MessageKind.STAND_DOWN)]
    assert CancelTimers(frozenset(ALL_STEPS)) in decision.effects
    assert DeviceCommand("call_closed") in decision.effects


@pytest.mark.parametrize("seconds", [60.5, 61, 300])
def test_device_cancel_after_grace_is_ignored(seconds: float) -> None:
    """Test that a late cancel is only recorded: somebody must still look."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, DeviceCancel(DEVICE), seconds)
    assert decision.call == call
    assert actions(decision) == ["cancel_ignored"]
    assert decision.history[0].detail == {"grace_s": 60}
    assert not decision.effects


def test_device_cancel_with_carer_on_scene_is_ignored() -> None:
    """Test that cancel is ignored inside the grace window once a carer is at the door."""
    call = step(call_in(CallState.DISPATCHED), report(1, CarerReport.ON_SCENE), 20).call
    decision = step(call, DeviceCancel(DEVICE), 30)
    assert actions(decision) == ["cancel_ignored"]
    assert decision.call.is_open


def test_device_cancel_uses_the_calls_own_grace() -> None:
    """Test that the grace window comes from the policy copied onto the call."""
    policy = replace(EMERGENCY, cancel_grace_s=10)
    call = open_(policy=policy).call
    assert actions(step(call, DeviceCancel(DEVICE), 15)) == ["cancel_ignored"]
    assert step(call, DeviceCancel(DEVICE), 10).call.state is CallState.CANCELLED


def test_device_cancel_without_carer_phone_sends_no_stand_down() -> None:
    """Test that a carer whose phone the situation lacks is stood down without a text."""
    decision = step(call_in(CallState.DISPATCHED), DeviceCancel(DEVICE), 5, assigned=())
    assert states(decision.call) == {1: AssignmentState.STOOD_DOWN}
    assert texts(decision) == []


# --- invariants --------------------------------------------------------------------


# Mostly the owner, so that sequences get somewhere; the others mostly probe refusals.
ACTORS = st.sampled_from(
    [OPERATOR] * 6
    + [OTHER_OPERATOR, SUPERVISOR, DEVICE_ACTOR, SYSTEM, carer_actor(1), carer_actor(2)]
)
CARER = st.integers(min_value=1, max_value=4)
STEP_NAMES = sorted({s.name for p in DEFAULT_POLICIES.values() for s in p.steps} | {"no_such_step"})


def _report(carer_id: int, what: CarerReport, own: bool, by: Actor) -> Report:
    return Report(carer_actor(carer_id) if own else by, carer_id, what)


CARER_REPORTS = st.builds(_report, CARER, st.sampled_from(list(CarerReport)), st.booleans(), ACTORS)
DISPATCHES = st.builds(lambda by, i: Dispatch(by, candidate(i)), ACTORS, CARER)
TIMERS = st.builds(StepDue, st.sampled_from(STEP_NAMES), st.one_of(st.none(), CARER))
CLOSERS = st.one_of(
    st.just(DeviceCancel(DEVICE)),
    st.builds(Resolve, ACTORS, st.sampled_from(list(Outcome))),
    st.builds(Cancel, ACTORS, st.sampled_from(list(CancelReason))),
)
# Progress (reports, pages, timers) is drawn far more often than closing, so that random
# scripts reach the later states before a Resolve or Cancel ends them.
COMMANDS: st.SearchStrategy[Command] = st.sampled_from(
    [CARER_REPORTS] * 6
    + [DISPATCHES] * 2
    + [TIMERS] * 4
    + [
        st.builds(Acknowledge, ACTORS),
        st.builds(AutoDispatch, ACTORS),
        st.builds(StandDown, ACTORS, CARER),
        st.builds(Press, st.sampled_from(list(CallType)), st.just(DEVICE)),
        st.builds(AddNote, ACTORS, st.sampled_from(["", "rang the son"])),
        st.builds(DeviceNote, st.just(DEVICE), st.sampled_from(["back_online", "battery_low"])),
        CLOSERS,
    ]
).flatmap(lambda strategy: strategy)


def check_consistent(call: Call) -> None:
    """The derived state agrees with the facts it is derived from."""
    active = Counter(a.carer_id for a in call.assignments if a.active)
    assert all(n == 1 for n in active.values()), call.assignments
    kinds = {a.state for a in call.assignments}
    if not call.is_open:
        assert call.state in CLOSED
        assert (call.state is CallState.RESOLVED) == (call.outcome is not None)
        assert (call.state is CallState.CANCELLED) == (call.cancel_reason is not None)
        assert not active
        assert not call.alerts
        # An emergency or fall never ends resolved without an operator having owned it.
        if call.state is CallState.RESOLVED and call.type in REVIEWED_TYPES:
            assert call.owner is not None, call
        return
    assert call.state in OPEN
    assert call.outcome is None and call.cancel_reason is None
    reported = call.reported_outcome is not None
    # Only a carer's "done" on an alarm nobody at the desk owned ends a part on an open call.
    assert (AssignmentState.FINISHED in kinds) == reported
    if reported:
        assert call.type in REVIEWED_TYPES
        assert call.carers_wanted == 0
        assert (call.state is CallState.AWAITING_REVIEW) == (not active)
    else:
        assert call.state is not CallState.AWAITING_REVIEW
    assert (call.state is CallState.ON_SCENE) == (AssignmentState.ON_SCENE in kinds)
    assert call.reached(Milestone.ON_SCENE) == (call.state is CallState.ON_SCENE or reported)
    assert call.reached(Milestone.ACKNOWLEDGED) == (call.owner is not None)
    if call.state is CallState.RAISED:
        assert call.owner is None and not active
    if call.state is CallState.ACKNOWLEDGED:
        assert call.owner is not None and not active
    if call.state is CallState.DISPATCHED:
        assert active and call.accepted_count < call.policy.carers_required
    if call.state is CallState.ACCEPTED:
        assert call.accepted_count >= call.policy.carers_required
        assert not kinds & {AssignmentState.ON_THE_WAY, AssignmentState.ON_SCENE}
    if call.state is CallState.ON_THE_WAY:
        assert AssignmentState.ON_THE_WAY in kinds
    steps = {s.name: s for s in call.policy.steps}
    for alert in call.alerts:
        if alert in steps:
            assert not call.reached(steps[alert].unless), (alert, call)
        else:
            assert alert == NOBODY_TO_SEND


def check_step(before: Call, command: Command, decision: Decision) -> None:
    """What no single decision may break."""
    after = decision.call
    check_history(before.state, decision)
    check_consistent(after)
    if not before.is_open:
        assert not after.is_open
        assert (after.closed_at, after.outcome, after.cancel_reason) == (
            before.closed_at,
            before.outcome,
            before.cancel_reason,
        )
        assert after.assignments == before.assignments
        if isinstance(command, StepDue):
            assert decision == Decision(before)
    if before.owner is not None:
        assert after.owner == before.owner
    assert after.presses >= before.presses
    assert after.priority <= before.priority
    assert after.fired_steps >= before.fired_steps
    # Assignments are only appended; a finished one (declined, no answer...) never changes.
    assert len(after.assignments) >= len(before.assignments)
    for old, new in zip(before.assignments, after.assignments, strict=False):
        assert (new.carer_id, new.dispatched_at) == (old.carer_id, old.dispatched_at)
        if not old.active and old.state is not AssignmentState.ON_SCENE:
            assert new == old
    for timer in of_type(decision, ArmTimer):
        if timer.carer_id is not None:
            paged = after.assignment(timer.carer_id)
            assert paged is not None and paged.state is AssignmentState.DISPATCHED


@settings(max_examples=300, deadline=None)
@given(
    call_type=st.sampled_from(list(CallType)),
    free=st.lists(CARER, unique=True, max_size=4),
    contacts=st.booleans(),
    script=st.lists(st.tuples(COMMANDS, st.integers(0, 400)), max_size=30),
)
def test_random_commands_keep_the_call_consistent(
    call_type: CallType, free: list[int], contacts: bool, script: list[tuple[Command, int]]
) -> None:
    """Test that any sequence of commands, legal or not, keeps every invariant."""
    people: dict[str, Any] = {} if contacts else {"supervisors": (), "family": ()}
    lifters = tuple(candidate(i, skills=("lift",) if i % 2 else ()) for i in free)
    decision = open_(call_type, candidates=lifters, **people)
    call = decision.call
    check_consistent(call)
    seconds = 0
    for command, wait in script:
        seconds += wait
        try:
            decision = decide(call, command, situation(seconds, candidates=lifters, **people))
        except CallError as error:
            assert error.call_id == CALL_ID
            continue
        check_step(call, command, decision)
        call = decision.call


@settings(max_examples=200, deadline=None)
@given(
    first=st.sampled_from(list(CallType)),
    presses=st.lists(
        st.tuples(st.floats(0, 60, allow_nan=False), st.sampled_from(list(CallType))),
        max_size=60,
    ),
)
def test_presses_are_all_counted_and_notes_spaced_out(
    first: CallType, presses: list[tuple[float, CallType]]
) -> None:
    """Test that every press counts, priority only rises, and a press is written to the
    history exactly when it is the first repeat, the note interval has passed, or it
    raised the priority."""
    call = open_(first, policy=replace(DEFAULT_POLICIES[first], auto_dispatch=False)).call
    seconds = 0.0
    last_noted = T0
    for gap, kind in presses:
        seconds += gap
        decision = step(call, Press(kind, DEVICE), seconds)
        raised = PRIORITY[kind] < call.priority
        assert decision.call.priority == min(call.priority, PRIORITY[kind])
        due = at(seconds) - last_noted >= PRESS_NOTE_INTERVAL
        first_repeat = call.presses == 1
        assert len(decision.history) == (1 if due or raised or first_repeat else 0)
        if decision.history:
            last_noted = at(seconds)
        assert decision.call.press_noted_at == last_noted
        assert decision.call.last_press_at == at(seconds)
        assert not decision.effects
        call = decision.call
    assert call.presses == 1 + len(presses)
    assert call.priority == min([PRIORITY[first], *(PRIORITY[k] for _, k in presses)])


def test_policy_steps_are_what_the_ladder_tests_assume() -> None:
    """Test that the default emergency ladder is the one the timeline tests are written for."""
    assert [(s.name, s.after_s, s.unless, s.counted_from) for s in EMERGENCY.steps] == [
        ("unacknowledged", 30, Milestone.ACKNOWLEDGED, CountedFrom.OPENED),
        ("ring_carer", 60, Milestone.ACCEPTED, CountedFrom.DISPATCHED),
        ("unaccepted", 120, Milestone.ACCEPTED, CountedFrom.DISPATCHED),
        ("not_on_scene", 900, Milestone.ON_SCENE, CountedFrom.OPENED),
        ("emergency_services", 1800, Milestone.ON_SCENE, CountedFrom.OPENED),
    ]
    assert EMERGENCY.step("unaccepted").actions == (Action.REDISPATCH, Action.NOTIFY_STATION_LEAD)
    assert EMERGENCY.step("ring_carer").actions == (Action.RING_CARER,)
    assert EMERGENCY.step("not_on_scene").actions == (
        Action.ALERT_SUPERVISOR,
        Action.NOTIFY_FAMILY,
        Action.RING_FAMILY,
    )
    assert isinstance(EMERGENCY.step("unacknowledged"), Step)


def test_a_carer_reports_only_for_themselves() -> None:
    """Test that a carer cannot accept (or arrive) on another carer's behalf."""
    call = call_in(CallState.DISPATCHED)
    paged = call.assignments[0].carer_id
    other = next(c for c in CARER_IDS if c != paged)
    with pytest.raises(IllegalTransitionError, match="cannot report for carer"):
        step(call, Report(carer_actor(other), paged, CarerReport.ACCEPTED), 20)
    accepted = step(call, Report(carer_actor(paged), paged, CarerReport.ACCEPTED), 20)
    assert accepted.call.state is CallState.ACCEPTED


def test_the_engine_may_page_without_owning_the_call() -> None:
    """Test that an automatic dispatch by the system pages a carer without taking
    ownership, while an operator's dispatch takes it."""
    call = open_(policy=replace(EMERGENCY, auto_dispatch=False)).call
    by_system = step(call, AutoDispatch(), 5)
    assert by_system.call.owner is None
    assert by_system.call.state is CallState.DISPATCHED
    by_operator = step(call, AutoDispatch(OPERATOR), 5)
    assert by_operator.call.owner == str(OPERATOR)


def test_a_carer_on_scene_may_resolve_the_call_and_nobody_else_in_the_field() -> None:
    """Test that the carer at the door can close their call, while a carer still on the
    way, or not on the call at all, is refused."""
    call = call_in(CallState.DISPATCHED)
    paged = call.assignments[0].carer_id
    carer = carer_actor(paged)
    other = carer_actor(next(c for c in CARER_IDS if c != paged))
    on_the_way = step(call, Report(carer, paged, CarerReport.ON_THE_WAY), 60).call
    with pytest.raises(IllegalTransitionError, match="only once on scene"):
        step(on_the_way, Resolve(carer, Outcome.HELPED_AT_HOME), 90)
    on_scene = step(on_the_way, Report(carer, paged, CarerReport.ON_SCENE), 300).call
    with pytest.raises(IllegalTransitionError, match="only once on scene"):
        step(on_scene, Resolve(other, Outcome.HELPED_AT_HOME), 400)
    owned = step(on_scene, Acknowledge(OPERATOR), 400).call
    resolved = step(owned, Resolve(carer, Outcome.HELPED_AT_HOME), 900)
    assert resolved.call.state is CallState.RESOLVED
    assert resolved.call.owner == str(OPERATOR)  # the carer took no ownership
    assert resolved.history[-1].actor == str(carer)


def test_an_undeliverable_page_moves_on_at_once_and_tells_the_supervisors() -> None:
    """Test that a page that cannot be delivered releases the carer as unreachable, pages
    the next carer without waiting for the two-minute step, and texts the supervisors;
    and that a carer who answered anyway is left alone."""
    call = call_in(CallState.DISPATCHED)
    paged = call.assignments[0]
    decision = step(call, Unreachable(paged.carer_id, "invalid number (21211)"), 5)
    assert actions(decision)[:2] == ["unreachable", "dispatched"]
    assert decision.call.assignments[0].state is AssignmentState.UNREACHABLE
    assert decision.call.assignments[-1].carer_id != paged.carer_id
    assert CancelTimers(DISPATCH_STEPS, paged.carer_id) in decision.effects
    supervisor_texts = [t for t in texts(decision) if t[1] is MessageKind.SUPERVISOR]
    assert supervisor_texts and all(r.startswith("operator:") for r, _ in supervisor_texts)
    accepted = step(
        call, Report(carer_actor(paged.carer_id), paged.carer_id, CarerReport.ACCEPTED), 3
    )
    assert step(accepted.call, Unreachable(paged.carer_id, "undelivered"), 5) == Decision(
        accepted.call
    )


# --- texts that did not arrive -----------------------------------------------------


def test_a_failed_family_text_is_written_on_the_call_and_told_to_supervisors() -> None:
    """Test that a text to the family that cannot arrive is a history line naming whom and
    why, and the supervisors are texted, since the family does not know."""
    call = open_().call
    decision = decide(call, TextFailed("family:7:1", "+8613700000001", "invalid"), situation(60))
    (entry,) = decision.history
    assert (entry.action, entry.actor) == ("text_failed", "system:engine")
    assert entry.detail == {"to": "family:7:1", "phone": "+8613700000001", "why": "invalid"}
    assert decision.call == call
    told = of_type(decision, SendSms)
    assert [s.to for s in told] == list(SUPERVISORS)
    assert "+8613700000001" in render(told[0].message, "en")


def test_a_failed_supervisor_text_or_one_on_a_closed_call_is_only_written_down() -> None:
    """Test that supervisors are not texted about their own failed text, nor about a call
    that is over."""
    call = open_().call
    own = decide(call, TextFailed("operator:zhao", "+8613900000001", "off"), situation(60))
    assert [h.action for h in own.history] == ["text_failed"] and not own.effects
    closed = decide(call, Cancel(OPERATOR, CancelReason.ENTERED_IN_ERROR), situation(70)).call
    late = decide(closed, TextFailed("family:7:1", "+8613700000001", "off"), situation(80))
    assert [h.action for h in late.history] == ["text_failed"] and not late.effects
