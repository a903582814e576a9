"""Escalation (domain/calls/escalation.py) on a virtual timeline: paging again, the
policy's steps, nobody to send.

Pure: calls and situations are built by hand (tests/calls_support.py); no loop, no
database, no clock.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import (
    NOBODY_TO_SEND,
    Acknowledge,
    AlertDesk,
    ArmTimer,
    AssignmentState,
    CallState,
    CancelTimers,
    CarerReport,
    Command,
    Decision,
    Dispatch,
    Outcome,
    PlaceCall,
    Resolve,
    RingNoted,
    RingUnanswered,
    SendSms,
    StepDue,
    VoicePurpose,
)
from callcenter.domain.messages import Because, MessageKind, Reason, duration, render
from callcenter.domain.policy import (
    Action,
    CountedFrom,
    Milestone,
    Policy,
    Step,
)
from tests.calls_support import (
    ALL_STEPS,
    DISPATCH_STEPS,
    OPENED_STEPS,
    OPERATOR,
    SUPERVISORS,
    accept,
    actions,
    at,
    call_in,
    candidate,
    of_type,
    open_,
    report,
    states,
    step,
    texts,
)

# --- escalation on a virtual timeline ----------------------------------------------


def test_unacknowledged_emergency_escalates_at_30_seconds() -> None:
    """Test that an emergency nobody has taken after 30 s alarms the desk and supervisors."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, StepDue("unacknowledged"), 30)
    after = decision.call
    assert actions(decision) == ["escalated", "alert_operators", "alert_supervisor"]
    escalated = decision.history[0]
    assert escalated.actor == "system:engine"
    assert escalated.detail == {
        "step": "unacknowledged",
        "waited_for": "acknowledged",
        "actions": ["alert_operators", "alert_supervisor"],
    }
    assert decision.history[2].detail == {
        "to": ["operator:zhao.min", "operator:chen.li"],
        "because": {"reason": "not_taken", "waited_s": "30"},
    }
    assert after.fired_steps == {"unacknowledged"}
    assert after.alerts == {"unacknowledged"}
    assert decision.effects[0] == CancelTimers(frozenset({"unacknowledged"}))
    (alarm,) = of_type(decision, AlertDesk)
    assert alarm.step == "unacknowledged"
    assert alarm.why.startswith("no operator has taken it")
    sms = of_type(decision, SendSms)
    assert [s.to for s in sms] == list(SUPERVISORS)
    assert {s.message.kind for s in sms} == {MessageKind.SUPERVISOR}
    assert {s.unless for s in sms} == {Milestone.ACKNOWLEDGED}
    assert "Call 41 EMERGENCY at H0007" in render(sms[0].message, "en")
    # The step fires once; acknowledging clears its alert.
    assert step(after, StepDue("unacknowledged"), 31) == Decision(after)
    acknowledged = step(after, Acknowledge(OPERATOR), 40)
    assert acknowledged.call.alerts == frozenset()


def test_a_page_not_accepted_in_a_minute_rings_the_carer_and_keeps_them() -> None:
    """Test that the ring_carer step rings the paged carer with the call's summary,
    guarded by their assignment, and neither releases them nor alarms anyone."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, StepDue("ring_carer", carer_id=1), 60)
    assert decision.call == call  # still paged, nothing fired, no alert
    assert actions(decision) == ["ring_carer"]
    assert decision.history[0].detail == {
        "carer": "C001",
        "to": "carer:C001",
        "step": "ring_carer",
        "waited_s": 60,
    }
    (ring,) = decision.effects
    assert isinstance(ring, PlaceCall)
    assert ring.to.label == "carer:C001"
    assert (ring.purpose, ring.carer_id, ring.unless) == (VoicePurpose.PAGE, 1, None)
    assert ring.message.kind is MessageKind.VOICE_PAGE
    spoken = render(ring.message, "zh")
    assert spoken.startswith("这里是呼叫中心。呼叫41，紧急呼叫，H0007")
    assert spoken.endswith("按1接单，按2拒绝。")
    # A carer who accepted before the minute was up is not rung.
    accepted = step(call, accept(1), 50).call
    assert step(accepted, StepDue("ring_carer", carer_id=1), 60) == Decision(accepted)


def test_a_carer_without_a_phone_is_not_rung_and_it_is_written() -> None:
    """Test that a ring step for a carer with no number writes why and rings nobody."""
    decision = step(call_in(CallState.DISPATCHED), StepDue("ring_carer", 1), 60, assigned=())
    assert actions(decision) == ["nobody_to_send"]
    assert decision.history[0].detail["because"] == {"reason": "no_contact", "action": "ring_carer"}
    assert decision.effects == ()


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled"])
def test_a_ring_not_picked_up_releases_the_carer_as_silence_does(status: str) -> None:
    """Test that a carer who does not pick up is released as by the unaccepted step (next
    carer paged, the carer stood down, the station lead told why) before its time."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, RingUnanswered(1, status), 75)
    after = decision.call
    assert states(after) == {1: AssignmentState.NO_ANSWER, 2: AssignmentState.DISPATCHED}
    assert actions(decision) == ["no_answer", "dispatched", "notify_station_lead"]
    assert decision.history[0].detail == {
        "carer": "C001",
        "step": "unaccepted",
        "waited_s": 75,
        "ring": status,
        "because": {"reason": "ring_unanswered", "carer": "C001 Carer 1", "status": status},
    }
    assert texts(decision) == [
        ("carer:C002", MessageKind.DISPATCH),
        ("carer:C001", MessageKind.STAND_DOWN),
        ("carer:L01", MessageKind.STATION_LEAD),
    ]
    lead = of_type(decision, SendSms)[-1]
    assert "did not pick up the phone" in render(lead.message, "en")
    assert "未接电话" in render(lead.message, "zh")
    assert CancelTimers(DISPATCH_STEPS, 1) in decision.effects
    assert ArmTimer("ring_carer", at(135), 2) in decision.effects
    # The unaccepted step for the released carer, had it not been cancelled, does nothing.
    assert step(after, StepDue("unaccepted", 1), 120).call == after


def test_a_ring_not_picked_up_after_the_carer_answered_changes_nothing() -> None:
    """Test that a late no-answer for a carer who accepted by text leaves them on it."""
    accepted = step(call_in(CallState.DISPATCHED), accept(1), 62).call
    assert step(accepted, RingUnanswered(1, "no-answer"), 90) == Decision(accepted)


def test_a_ring_not_picked_up_without_a_releasing_step_releases_and_refills() -> None:
    """Test that a policy whose only dispatch step rings still releases a carer who
    does not pick up, and pages the next."""
    ring_only = Policy(
        auto_dispatch=True,
        steps=(Step("ring", 30, Milestone.ACCEPTED, (Action.RING_CARER,), CountedFrom.DISPATCHED),),
    )
    call = open_(policy=ring_only).call
    decision = step(call, RingUnanswered(1, "busy"), 40)
    assert actions(decision) == ["no_answer", "dispatched"]
    assert states(decision.call)[1] is AssignmentState.NO_ANSWER


def test_how_a_ring_went_is_kept_on_the_call_even_once_closed() -> None:
    """Test that each ring's progress is a history line, on an open or a closed call."""
    call = call_in(CallState.DISPATCHED)
    rang = step(call, RingNoted("carer:C001", VoicePurpose.PAGE, "completed", 14, "1"), 80)
    assert rang.call == call
    assert actions(rang) == ["ring"]
    assert rang.history[0].detail == {
        "to": "carer:C001",
        "purpose": "page",
        "status": "completed",
        "duration_s": 14,
        "key": "1",
    }
    closed = step(
        call, Resolve(OPERATOR, Outcome.FALSE_ALARM, reason="pressed by mistake"), 90
    ).call
    late = step(closed, RingNoted("carer:C001", VoicePurpose.PAGE, "ringing"), 95)
    assert late.history[0].detail == {"to": "carer:C001", "purpose": "page", "status": "ringing"}


def test_unaccepted_carer_is_replaced_at_120_seconds() -> None:
    """Test that a carer who has not accepted after 120 s is replaced and the lead told."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, StepDue("unaccepted", carer_id=1), 120)
    after = decision.call
    assert states(after) == {1: AssignmentState.NO_ANSWER, 2: AssignmentState.DISPATCHED}
    assert after.alerts == {"unaccepted"}
    assert after.fired_steps == frozenset()  # counted per carer, not once per call
    assert actions(decision) == ["no_answer", "dispatched", "notify_station_lead"]
    assert decision.history[0].detail == {"carer": "C001", "step": "unaccepted", "waited_s": 120}
    assert texts(decision) == [
        ("carer:C002", MessageKind.DISPATCH),
        ("carer:C001", MessageKind.STAND_DOWN),
        ("carer:L01", MessageKind.STATION_LEAD),
    ]
    lead = of_type(decision, SendSms)[-1]
    assert lead.unless is Milestone.ACCEPTED
    assert "did not accept in time" in render(lead.message, "en")
    assert CancelTimers(DISPATCH_STEPS, 1) in decision.effects
    assert ArmTimer("unaccepted", at(240), 2) in decision.effects
    # Carer 2 accepts: the alert is satisfied and clears.
    accepted = step(after, accept(2), 150)
    assert accepted.call.alerts == frozenset()
    assert accepted.call.state is CallState.ACCEPTED


def test_unaccepted_without_carer_phone_sends_no_stand_down() -> None:
    """Test that the carer who did not answer is texted only when their phone is known."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, StepDue("unaccepted", carer_id=1), 120, assigned=())
    assert ("carer:C001", MessageKind.STAND_DOWN) not in texts(decision)
    assert ("carer:C002", MessageKind.DISPATCH) in texts(decision)


@pytest.mark.parametrize(
    "progress", [CarerReport.ACCEPTED, CarerReport.ON_THE_WAY, CarerReport.ON_SCENE]
)
def test_unaccepted_timer_after_acceptance_is_a_no_op(progress: CarerReport) -> None:
    """Test that a carer who answered before the timer fired is left alone."""
    call = step(call_in(CallState.DISPATCHED), report(1, progress), 119).call
    decision = step(call, StepDue("unaccepted", carer_id=1), 120)
    assert decision == Decision(call)


@pytest.mark.parametrize("gone", [CarerReport.DECLINED, None])
def test_unaccepted_timer_for_a_carer_no_longer_paged_is_a_no_op(
    gone: CarerReport | None,
) -> None:
    """Test that a timer for a carer who declined, or was never paged, does nothing."""
    call = call_in(CallState.DISPATCHED)
    if gone is not None:
        call = step(call, report(1, gone), 50).call
    decision = step(call, StepDue("unaccepted", carer_id=1 if gone else 5), 120)
    assert decision == Decision(call)


def test_not_on_scene_and_emergency_services_timeline() -> None:
    """Test that 15 min without a carer at the door tells supervisors and family (texted
    and rung), 30 min 120."""
    call = call_in(CallState.ON_THE_WAY)
    late = step(call, StepDue("not_on_scene"), 15 * 60)
    assert actions(late) == ["escalated", "alert_supervisor", "notify_family", "ring_family"]
    assert texts(late) == [
        ("operator:zhao.min", MessageKind.SUPERVISOR),
        ("operator:chen.li", MessageKind.SUPERVISOR),
        ("family:1", MessageKind.FAMILY_DELAYED),  # the first family contact only
    ]
    assert {s.unless for s in of_type(late, SendSms)} == {Milestone.ON_SCENE}
    family = of_type(late, SendSms)[-1]
    assert "+862155550000" in render(family.message, "en")
    assert "after 15 min." in render(of_type(late, SendSms)[0].message, "en")
    assert "已过15分钟仍无护理员到场" in render(of_type(late, SendSms)[0].message, "zh")
    assert late.call.alerts == {"not_on_scene"}
    very_late = step(late.call, StepDue("emergency_services"), 30 * 60)
    assert actions(very_late) == ["escalated", "emergency_services"]
    assert texts(very_late) == [
        ("operator:zhao.min", MessageKind.EMERGENCY_SERVICES),
        ("operator:chen.li", MessageKind.EMERGENCY_SERVICES),
    ]
    assert "after 30 min" in render(of_type(very_late, SendSms)[0].message, "en")
    assert very_late.call.alerts == {"not_on_scene", "emergency_services"}
    assert very_late.call.fired_steps == {"not_on_scene", "emergency_services"}
    # The carer arrives: both alerts clear, no more SMS for these steps.
    arrived = step(very_late.call, report(1, CarerReport.ON_SCENE), 31 * 60)
    assert arrived.call.alerts == frozenset()
    assert step(arrived.call, StepDue("not_on_scene"), 32 * 60) == Decision(arrived.call)


def test_nobody_to_send_at_open_runs_the_next_step_at_once() -> None:
    """Test that an emergency with no free carer records it and escalates immediately."""
    decision = open_(candidates=())
    call = decision.call
    assert call.state is CallState.RAISED
    assert actions(decision) == [
        "raised",
        "nobody_to_send",
        "escalated",
        "alert_operators",
        "alert_supervisor",
    ]
    assert decision.history[1].detail == {
        "why": "no free carer on shift",
        "because": {"reason": "no_free_carer"},
        "wanted": 1,
    }
    effects = list(decision.effects)
    armed = effects.index(ArmTimer("unacknowledged", at(30)))
    assert effects.index(CancelTimers(frozenset({"unacknowledged"}))) > armed
    assert of_type(decision, AlertDesk)[0].step == "unacknowledged"
    assert call.fired_steps == {"unacknowledged"}
    assert NOBODY_TO_SEND not in call.alerts  # there was still a step to run
    # Its own timer then falls due: it has already fired and does not fire twice.
    assert step(call, StepDue("unacknowledged"), 30) == Decision(call)


def test_nobody_to_send_walks_to_the_next_unfired_step() -> None:
    """Test that nobody to send skips steps already fired or satisfied."""
    call = step(call_in(CallState.DISPATCHED), StepDue("unacknowledged"), 30).call
    call = step(call, Acknowledge(OPERATOR), 40).call
    decision = step(call, report(1, CarerReport.DECLINED), 50, candidates=())
    assert actions(decision) == [
        "declined",
        "nobody_to_send",
        "escalated",
        "alert_supervisor",
        "notify_family",
        "ring_family",
    ]
    assert decision.history[2].detail["step"] == "not_on_scene"
    assert CancelTimers(frozenset({"not_on_scene"})) in decision.effects
    assert decision.call.fired_steps == {"unacknowledged", "not_on_scene"}


def test_nobody_to_send_with_no_step_left_raises_the_board_alert() -> None:
    """Test that when the ladder is used up the call carries the NOBODY_TO_SEND alert."""
    quiet = Policy(auto_dispatch=True, steps=())
    decision = open_(policy=quiet, candidates=())
    assert actions(decision) == ["raised", "nobody_to_send"]
    assert decision.call.alerts == {NOBODY_TO_SEND}
    # It survives acknowledgement and a later page; only closing the call clears it.
    call = step(decision.call, Dispatch(OPERATOR, candidate(4)), 60).call
    call = step(call, accept(4), 70).call
    assert NOBODY_TO_SEND in call.alerts
    closed = step(call, Resolve(OPERATOR, Outcome.FAMILY_ATTENDED), 900).call
    assert closed.alerts == frozenset()


def test_ladder_used_up_when_nobody_can_be_reached() -> None:
    """Test that with no carers and no contacts each step hands on until none is left."""
    empty = {"candidates": (), "supervisors": (), "station_leads": (), "family": ()}
    opened = open_(**empty)
    # The board alarm reached the desk, so the missing supervisor number is only noted.
    assert actions(opened) == [
        "raised",
        "nobody_to_send",
        "escalated",
        "alert_operators",
        "nobody_to_send",
    ]
    assert opened.history[-1].detail == {
        "why": "alert_supervisor: no contact number",
        "because": {"reason": "no_contact", "action": "alert_supervisor"},
    }
    # The step that ran before its time says why, and its messages say so too.
    assert opened.history[2].detail["early"] == "no free carer on shift"
    assert opened.history[2].detail["because"] == {"reason": "no_free_carer"}
    assert opened.history[3].detail["why"] == opened.history[2].detail["early"]
    assert opened.call.fired_steps == {"unacknowledged"}
    assert NOBODY_TO_SEND not in opened.call.alerts
    call = step(opened.call, Acknowledge(OPERATOR), 60, **empty).call
    # At 15 min nobody at all can be told, so the last step runs at once; then none is left.
    late = step(call, StepDue("not_on_scene"), 900, **empty)
    assert actions(late) == [
        "escalated",
        "nobody_to_send",
        "nobody_to_send",
        "nobody_to_send",
        "escalated",
        "nobody_to_send",
    ]
    assert late.history[4].detail["step"] == "emergency_services"
    assert late.call.fired_steps == OPENED_STEPS
    # The emergency-services step sounds every board, so it reached the desk at least.
    assert late.call.alerts == {"not_on_scene", "emergency_services"}
    assert [a.step for a in of_type(late, AlertDesk)] == ["emergency_services"]
    assert not of_type(late, SendSms)
    assert CancelTimers(frozenset({"emergency_services"})) in late.effects
    # The timer of the step that ran early then finds nothing to do.
    assert step(late.call, StepDue("emergency_services"), 1800) == Decision(late.call)


def test_notify_with_no_contact_number_records_nobody_to_send() -> None:
    """Test that an action whose people have no number is recorded; the step still counts
    because it reached someone else."""
    call = step(call_in(CallState.ON_THE_WAY), Acknowledge(OPERATOR), 26).call
    decision = step(call, StepDue("not_on_scene"), 900, family=())
    assert actions(decision) == [
        "escalated",
        "alert_supervisor",
        "nobody_to_send",
        "nobody_to_send",
    ]
    assert decision.history[3].detail["because"] == {
        "reason": "no_contact",
        "action": "ring_family",
    }
    assert decision.history[2].detail == {
        "why": "notify_family: no contact number",
        "because": {"reason": "no_contact", "action": "notify_family"},
    }
    assert decision.history[2].actor == "system:engine"
    assert texts(decision) == [
        ("operator:zhao.min", MessageKind.SUPERVISOR),
        ("operator:chen.li", MessageKind.SUPERVISOR),
    ]
    assert decision.call.fired_steps == {"not_on_scene"}
    assert NOBODY_TO_SEND not in decision.call.alerts


def test_step_that_reaches_nobody_hands_over_at_once() -> None:
    """Test that a step none of whose people has a number runs the next step immediately."""
    call = step(call_in(CallState.ON_THE_WAY), Acknowledge(OPERATOR), 26).call
    decision = step(call, StepDue("not_on_scene"), 900, supervisors=(), family=())
    assert actions(decision)[:5] == [
        "escalated",
        "nobody_to_send",
        "nobody_to_send",
        "nobody_to_send",
        "escalated",
    ]
    assert decision.history[4].detail["step"] == "emergency_services"
    assert decision.call.fired_steps == {"not_on_scene", "emergency_services"}
    # No supervisor to text, but every board is told to ring emergency services.
    assert NOBODY_TO_SEND not in decision.call.alerts
    assert [a.step for a in of_type(decision, AlertDesk)] == ["emergency_services"]


def test_station_lead_missing_on_unaccepted_records_nobody_to_send() -> None:
    """Test that an unanswered page with no station lead on file is recorded, and the next
    step does not run early: the next carer was paged, so the step reached someone."""
    call = step(call_in(CallState.DISPATCHED), Acknowledge(OPERATOR), 10).call
    decision = step(call, StepDue("unaccepted", 1), 120, station_leads=())
    assert actions(decision) == ["no_answer", "dispatched", "nobody_to_send"]
    assert decision.history[2].detail == {
        "why": "notify_station_lead: no contact number",
        "because": {"reason": "no_contact", "action": "notify_station_lead"},
    }
    assert decision.call.fired_steps == frozenset()
    assert texts(decision) == [
        ("carer:C002", MessageKind.DISPATCH),
        ("carer:C001", MessageKind.STAND_DOWN),
    ]


def test_unaccepted_with_nobody_to_page_and_no_lead_escalates_once() -> None:
    """Test that finding no carer and no station lead runs the next step once, not twice."""
    call = step(call_in(CallState.DISPATCHED), Acknowledge(OPERATOR), 10).call
    decision = step(call, StepDue("unaccepted", 1), 120, candidates=(), station_leads=())
    assert actions(decision) == [
        "no_answer",
        "nobody_to_send",
        "escalated",
        "alert_supervisor",
        "notify_family",
        "ring_family",
        "nobody_to_send",
    ]
    assert decision.call.fired_steps == {"not_on_scene"}


def test_unaccepted_step_without_redispatch_hands_over_when_nobody_told() -> None:
    """Test that a dispatch step that only tells the lead hands over when there is none."""
    lead_only = Policy(
        auto_dispatch=True,
        steps=(
            Step(
                "unaccepted",
                60,
                Milestone.ACCEPTED,
                (Action.NOTIFY_STATION_LEAD,),
                CountedFrom.DISPATCHED,
            ),
            Step("not_on_scene", 900, Milestone.ON_SCENE, (Action.ALERT_OPERATORS,)),
        ),
    )
    call = open_(policy=lead_only).call
    decision = step(call, StepDue("unaccepted", 1), 60, station_leads=())
    assert actions(decision) == [
        "no_answer",
        "nobody_to_send",
        "escalated",
        "alert_operators",
    ]
    assert states(decision.call) == {1: AssignmentState.NO_ANSWER}  # no refill asked for
    assert decision.call.alerts == {"unaccepted", "not_on_scene"}


def test_extra_carer_not_answering_raises_no_alert() -> None:
    """Test that a carer sent beyond what the call needs may stay silent without an alarm."""
    call = step(call_in(CallState.ACCEPTED), Dispatch(OPERATOR, candidate(2)), 30).call
    assert call.state is CallState.ACCEPTED
    decision = step(call, StepDue("unaccepted", 2), 150)
    assert states(decision.call) == {1: AssignmentState.ACCEPTED, 2: AssignmentState.NO_ANSWER}
    assert decision.call.alerts == frozenset()
    assert decision.call.state is CallState.ACCEPTED
    assert "dispatched" not in actions(decision)  # the call has all the carers it needs


@pytest.mark.parametrize(
    ("before", "command", "cancelled"),
    [
        (CallState.RAISED, Acknowledge(OPERATOR), {"unacknowledged"}),
        (CallState.DISPATCHED, accept(1), DISPATCH_STEPS),
        (
            CallState.ON_THE_WAY,
            report(1, CarerReport.ON_SCENE),
            {"not_on_scene", "emergency_services"},
        ),
        (
            CallState.ACKNOWLEDGED,
            Resolve(OPERATOR, Outcome.OTHER, reason="handled on the phone"),
            ALL_STEPS,
        ),
    ],
)
def test_reaching_a_milestone_cancels_the_steps_waiting_on_it(
    before: CallState, command: Command, cancelled: set[str]
) -> None:
    """Test that reaching a milestone emits CancelTimers for every step waiting on it."""
    decision = step(call_in(before), command, 50)
    assert CancelTimers(frozenset(cancelled)) in decision.effects


def test_service_request_ladder() -> None:
    """Test that a service request waits 2 min for an operator and tells only the desk."""
    call = open_(CallType.SERVICE_REQUEST).call
    decision = step(call, StepDue("unacknowledged"), 120)
    assert actions(decision) == ["escalated", "alert_operators"]
    assert not of_type(decision, SendSms)
    replaced = step(decision.call, StepDue("unaccepted", 1), 300)
    assert ArmTimer("unaccepted", at(600), 2) in replaced.effects


def test_full_emergency_timeline_nobody_answers() -> None:
    """Test a 30-minute timeline where three carers in turn never answer."""
    call = open_(candidates=(1, 2, 3)).call
    call = step(call, StepDue("unacknowledged"), 30, candidates=(2, 3)).call
    call = step(call, Acknowledge(OPERATOR), 45, candidates=(2, 3)).call
    call = step(call, StepDue("unaccepted", 1), 120, candidates=(2, 3)).call
    call = step(call, StepDue("unaccepted", 2), 240, candidates=(3,)).call
    last = step(call, StepDue("unaccepted", 3), 360, candidates=())
    call = last.call
    assert [a.state for a in call.assignments] == [AssignmentState.NO_ANSWER] * 3
    # Nobody left: the next unfired step (not on scene) ran early.
    assert "nobody_to_send" in actions(last)
    assert call.fired_steps == {"unacknowledged", "not_on_scene"}
    assert step(call, StepDue("not_on_scene"), 900) == Decision(call)
    final = step(call, StepDue("emergency_services"), 1800)
    assert actions(final) == ["escalated", "emergency_services"]
    assert final.call.state is CallState.ACKNOWLEDGED
    assert final.call.alerts >= {"not_on_scene", "emergency_services"}


# --- what the texts say, in each recipient's language ------------------------------


def test_station_lead_is_told_which_carer_did_not_answer_in_their_language() -> None:
    """Test that the station lead's text names the carer who let the page run out (code
    and name), in Chinese for a Chinese-speaking lead, with no English reason in it."""
    call = call_in(CallState.DISPATCHED)
    decision = step(call, StepDue("unaccepted", carer_id=1), 120)
    lead = of_type(decision, SendSms)[-1]
    assert lead.to.label == "carer:L01" and lead.to.language == "zh"
    zh = render(lead.message, lead.to.language)
    assert "C001 Carer 1" in zh and "未及时接单" in zh, zh
    assert "did not accept" not in zh and "paged" not in zh
    en = render(lead.message, "en")
    assert "the paged carer C001 Carer 1 did not accept in time" in en, en
    assert decision.history[-1].detail["because"] == {
        "reason": "not_accepted",
        "carers": "C001 Carer 1",
    }


def test_supervisors_texts_follow_each_supervisors_language() -> None:
    """Test that the same escalation is said in Chinese to a Chinese-speaking supervisor
    and in English to an English-speaking one, waited time included."""
    decision = step(call_in(CallState.DISPATCHED), StepDue("unacknowledged"), 30)
    by_person = {s.to.label: render(s.message, s.to.language) for s in of_type(decision, SendSms)}
    assert by_person["operator:zhao.min"].endswith("已过30秒仍无接线员接听。")
    assert "no operator" not in by_person["operator:zhao.min"]
    assert by_person["operator:chen.li"].endswith("no operator has taken it after 30 s.")


def test_a_90_second_wait_reads_90_seconds_not_2_minutes() -> None:
    """Test that a step that runs 90 s after the call opened says 90 s in both languages
    (it used to say "2 min" / "2分钟")."""
    decision = step(call_in(CallState.ON_THE_WAY), StepDue("not_on_scene"), 90)
    sms = of_type(decision, SendSms)[0]
    assert "已过90秒仍无护理员到场" in render(sms.message, "zh")
    assert "no carer on scene after 90 s" in render(sms.message, "en")
    assert "2分钟" not in render(sms.message, "zh")


def test_emergency_services_text_says_the_time_waited_to_the_second() -> None:
    """Test that the ring-120 text of a step that runs early, 90 s after the call opened,
    says 90 s (it rounded to "2分钟")."""
    policy = Policy(
        auto_dispatch=True,
        steps=(Step("emergency_services", 90, Milestone.ON_SCENE, (Action.EMERGENCY_SERVICES,)),),
    )
    call = replace(call_in(CallState.ON_THE_WAY), policy=policy)
    decision = step(call, StepDue("emergency_services"), 90)
    (sms, *_) = of_type(decision, SendSms)
    assert sms.message.kind is MessageKind.EMERGENCY_SERVICES
    assert "已过90秒仍无护理员到场" in render(sms.message, "zh")
    assert "no carer on scene after 90 s." in render(sms.message, "en")


@pytest.mark.parametrize(
    ("seconds", "zh", "en"),
    [
        (0, "0秒", "0 s"),
        (45, "45秒", "45 s"),
        (90, "90秒", "90 s"),
        (119.6, "2分钟", "2 min"),  # rounded to the second first
        (120, "2分钟", "2 min"),
        (150, "2分30秒", "2 min 30 s"),
        (900, "15分钟", "15 min"),
        (3600, "1小时", "1 h"),
        (3900, "1小时5分钟", "1 h 5 min"),
        (3661, "1小时1分1秒", "1 h 1 min 1 s"),
    ],
)
def test_durations_read_truthfully(seconds: float, zh: str, en: str) -> None:
    """Test the rule for a time waited: seconds under two minutes, then minutes and
    seconds with a zero part left out, never rounded to a whole minute."""
    assert duration(seconds, "zh") == zh
    assert duration(seconds, "en") == en


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_is_said_in_both_languages(reason: Reason) -> None:
    """Test that every reason has words in zh and en, and the zh words carry no English
    apart from the facts given."""
    facts = {
        "waited_s": "95",
        "carers": "C007 王芳",
        "skills": "lift",
        "action": "notify_family",
        "step": "not_on_scene",
        "carer": "C007",
        "detail": "21610",
        "to": "family:1",
        "phone": "+8613900000020",
    }
    because = Because(reason, facts)
    zh = because.text("zh")
    en = because.text("en")
    assert zh and en and zh != en
    given = {"lift", "family", "C007", "21610"}
    latin = set(re.findall(r"[A-Za-z]{3,}", zh)) - given
    assert not latin, zh


def test_a_failed_text_or_unreachable_carer_is_said_without_the_providers_english() -> None:
    """Test that a supervisor who reads Chinese is told whose text failed in words (家属,
    not "family:7:1") and that a carer cannot be reached, without the provider's English
    reason, which the English text and the history keep."""
    failed = Because(
        Reason.TEXT_FAILED,
        {"to": "family:7:1", "phone": "+8613900000020", "detail": "Twilio 30006: landline"},
    )
    assert failed.text("zh") == "发给家属（+8613900000020）的短信未送达"
    assert failed.text("en").endswith("not delivered: Twilio 30006: landline")
    lost = Because(Reason.UNREACHABLE, {"carer": "C012", "detail": "Twilio 30003: unreachable"})
    assert lost.text("zh") == "联系不上护理员C012（短信无法送达）"
    assert "Twilio 30003" in lost.text("en")
