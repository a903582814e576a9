"""An emergency or fall cannot end without an operator having owned it: a carer's "done"
on one nobody at the desk took leaves it awaiting review. And a carer who failed a call
(declined, did not answer, could not be reached) is not paged for it again unless an
operator picks them by hand."""

from __future__ import annotations

import pytest

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import (
    Acknowledge,
    AlertDesk,
    AssignmentState,
    AutoDispatch,
    CallState,
    CancelTimers,
    CarerReport,
    DeviceCommand,
    Dispatch,
    IllegalTransitionError,
    Outcome,
    Resolve,
    SendSms,
    StepDue,
    Unreachable,
)
from callcenter.domain.messages import MessageKind, Reason
from tests.calls_support import (
    OPERATOR,
    accept,
    actions,
    call_in,
    candidate,
    carer_actor,
    of_type,
    open_,
    report,
    states,
    step,
    texts,
)

DONE = Resolve(carer_actor(1), Outcome.HELPED_AT_HOME, "closed by SMS")


def test_a_carers_done_on_an_unowned_emergency_waits_for_an_operators_review() -> None:
    """Test that the carer's part ends, the call stays open awaiting review with what the
    carer reported, the device is not told the call closed, and only the steps waiting
    for an operator are left to run."""
    on_scene = call_in(CallState.ON_SCENE)
    decision = step(on_scene, DONE, 600)
    call = decision.call
    assert call.state is CallState.AWAITING_REVIEW
    assert call.is_open and call.owner is None
    assert (call.reported_outcome, call.reported_by) == (Outcome.HELPED_AT_HOME, "carer:C001")
    assert states(call) == {1: AssignmentState.FINISHED}
    assert actions(decision) == ["reported_done"]
    assert decision.history[0].detail == {
        "carer": "C001",
        "outcome": "helped_at_home",
        "note": "closed by SMS",
    }
    assert not of_type(decision, DeviceCommand)
    (cancelled,) = of_type(decision, CancelTimers)
    assert cancelled.steps == {"ring_carer", "unaccepted", "not_on_scene", "emergency_services"}
    # The "unacknowledged" step is still to come: nobody is texted yet.
    assert texts(decision) == []
    assert call.carers_wanted == 0


def test_awaiting_review_pages_nobody_but_still_alerts_when_no_operator_takes_it() -> None:
    """Test that the escalation timers page no carer for a call awaiting review, while
    the step waiting for an operator still sounds the boards and texts the supervisors."""
    call = step(call_in(CallState.ON_SCENE), DONE, 20).call
    for name, carer_id in [("unaccepted", 1), ("not_on_scene", None), ("emergency_services", None)]:
        assert step(call, StepDue(name, carer_id), 1800).call == call
    alarm = step(call, StepDue("unacknowledged"), 30)
    assert "dispatched" not in actions(alarm)
    assert actions(alarm)[:2] == ["escalated", "alert_operators"]
    assert of_type(alarm, AlertDesk)
    assert {kind for _, kind in texts(alarm)} == {MessageKind.SUPERVISOR}
    assert alarm.call.state is CallState.AWAITING_REVIEW


def test_a_done_after_the_desk_let_the_alarm_go_unanswered_tells_the_supervisors_now() -> None:
    """Test that when the operators' alarm has already sounded unanswered, the carer's
    done texts the supervisors at once: an operator must review it."""
    on_scene = call_in(CallState.ON_SCENE)
    sounded = step(on_scene, StepDue("unacknowledged"), 330).call
    decision = step(sounded, DONE, 600)
    assert decision.call.state is CallState.AWAITING_REVIEW
    supervisors = [t for t in texts(decision) if t[1] is MessageKind.SUPERVISOR]
    assert supervisors and all(label.startswith("operator:") for label, _ in supervisors)
    because = of_type(decision, SendSms)[-1].message.because
    assert because is not None and because.reason is Reason.AWAITING_REVIEW
    assert "C001" in because.text("en") and "review" in because.text("en")
    assert "C001" in because.text("zh") and "复核" in because.text("zh")
    # The operators' alarm stays on the card until an operator takes the call.
    assert "unacknowledged" in decision.call.alerts


def test_an_operator_reviews_then_resolves_and_only_then_it_ends() -> None:
    """Test that taking a call awaiting review keeps it awaiting review (now owned), and
    that the operator's resolve ends it with the operator as owner."""
    call = step(call_in(CallState.ON_SCENE), DONE, 600).call
    taken = step(call, Acknowledge(OPERATOR), 700)
    assert taken.call.state is CallState.AWAITING_REVIEW
    assert taken.call.owner == str(OPERATOR)
    assert CancelTimers(frozenset({"unacknowledged"})) in taken.effects
    resolved = step(taken.call, Resolve(OPERATOR, Outcome.TAKEN_TO_HOSPITAL), 800)
    assert resolved.call.state is CallState.RESOLVED
    assert resolved.call.outcome is Outcome.TAKEN_TO_HOSPITAL
    assert resolved.call.reported_outcome is Outcome.HELPED_AT_HOME  # what the carer said stays
    assert of_type(resolved, DeviceCommand) == [DeviceCommand("call_closed")]
    # The carer already reported: saying done again changes nothing.
    with pytest.raises(IllegalTransitionError):
        step(call, DONE, 650)


def test_a_call_an_operator_owned_closes_on_the_carers_done_as_before() -> None:
    """Test that an owned emergency, and a service request nobody owned, close on the
    carer's done."""
    owned = step(call_in(CallState.ON_SCENE), Acknowledge(OPERATOR), 400).call
    assert step(owned, DONE, 600).call.state is CallState.RESOLVED
    service = open_(CallType.SERVICE_REQUEST).call
    paged = service.assignments[0].carer_id
    there = step(service, report(paged, CarerReport.ON_SCENE), 300).call
    done = step(there, Resolve(carer_actor(paged), Outcome.HELPED_AT_HOME), 600)
    assert done.call.state is CallState.RESOLVED
    assert done.call.owner is None


def test_a_fall_done_by_one_carer_stands_the_other_down_and_pages_nobody() -> None:
    """Test that on a fall (two carers), one carer's done finishes their part, stands the
    other (still coming) down with a text, and pages nobody in their place."""
    fall = open_(CallType.FALL).call
    first, second = (a.carer_id for a in fall.assignments)
    fall = step(fall, report(first, CarerReport.ON_SCENE), 200).call
    fall = step(fall, accept(second), 210).call
    decision = step(fall, Resolve(carer_actor(first), Outcome.FALSE_ALARM), 400)
    assert decision.call.state is CallState.AWAITING_REVIEW
    assert states(decision.call) == {
        first: AssignmentState.FINISHED,
        second: AssignmentState.STOOD_DOWN,
    }
    assert texts(decision) == [(f"carer:C{second:03d}", MessageKind.STAND_DOWN)]
    assert "dispatched" not in actions(decision)


def test_the_reviewing_operator_may_still_send_someone() -> None:
    """Test that "send the best carer" on a call awaiting review pages one carer, not the
    one who reported it done, and the call is under way again until they are done."""
    call = step(call_in(CallState.ON_SCENE), DONE, 600).call
    decision = step(call, AutoDispatch(OPERATOR), 700)
    assert actions(decision) == ["acknowledged", "dispatched"]
    assert decision.call.state is CallState.DISPATCHED
    assert decision.call.assignments[-1].carer_id == 2
    # Nobody more is paged by itself meanwhile.
    assert decision.call.carers_wanted == 0


# --- carers who failed a call are not offered for it again -------------------------


@pytest.mark.parametrize("how", ["declined", "no_answer", "unreachable"])
def test_a_carer_who_failed_the_call_is_not_paged_for_it_again(how: str) -> None:
    """Test that after a carer declined, did not answer or could not be reached, the
    automatic paging skips them even when they are the best candidate left, and says
    nobody is left rather than paging them again."""
    call = call_in(CallState.DISPATCHED)
    failing = {
        "declined": report(1, CarerReport.DECLINED),
        "no_answer": StepDue("unaccepted", 1),
        "unreachable": Unreachable(1, "invalid number (21211)"),
    }[how]
    # Only carer 1 is free: they are first in the ranking, and the only one.
    decision = step(call, failing, 130, candidates=(1,))
    assert states(decision.call) == {1: AssignmentState(how)}
    assert "dispatched" not in actions(decision)
    assert "nobody_to_send" in actions(decision)
    assert decision.call.failed_carers == {1}
    again = step(decision.call, AutoDispatch(OPERATOR), 140, candidates=(1, 2))
    assert [a.carer_id for a in again.call.active_assignments] == [2]


def test_an_operator_may_pick_a_carer_who_failed_by_hand_and_the_history_says_so() -> None:
    """Test that a named dispatch of a carer who declined works and is written as picked
    by hand, with how they failed before; an ordinary pick says by hand only."""
    declined = step(call_in(CallState.DISPATCHED), report(1, CarerReport.DECLINED), 10).call
    again = step(declined, Dispatch(OPERATOR, candidate(1)), 20)
    entry = again.history[-1]
    assert entry.action == "dispatched"
    assert entry.detail["by_hand"] is True
    assert entry.detail["failed_before"] == "declined"
    fresh = step(declined, Dispatch(OPERATOR, candidate(4)), 20).history[-1]
    assert fresh.detail["by_hand"] is True and "failed_before" not in fresh.detail
    automatic = call_in(CallState.DISPATCHED).assignments[0]
    assert automatic.dispatched_by == "system:engine"
    opened = open_().history
    assert "by_hand" not in opened[-1].detail


def test_a_call_short_of_carers_after_failures_is_flagged_not_re_paged() -> None:
    """Test that a fall whose second carer failed, with only failed carers free, raises
    nobody-to-send rather than paging one of them again."""
    fall = open_(CallType.FALL, candidates=(1, 2)).call
    first, second = (a.carer_id for a in fall.assignments)
    decision = step(fall, report(second, CarerReport.DECLINED), 30, candidates=(second,))
    assert states(decision.call)[second] is AssignmentState.DECLINED
    assert [a.carer_id for a in decision.call.active_assignments] == [first]
    assert "nobody_to_send" in actions(decision)
    assert decision.call.failed_carers == {second}
