"""The family rung when help is late (the ``ring_family`` action, domain/calls/escalation.py):
the household's contacts rung one after another in their order until one presses 1.

Pure: calls and situations are built by hand (tests/calls_support.py).
"""

from __future__ import annotations

from dataclasses import replace

from callcenter.domain.calls import (
    NOBODY_TO_SEND,
    CallState,
    CarerReport,
    Decision,
    FamilyHeard,
    FamilyRingOver,
    FamilyRound,
    Person,
    PlaceCall,
    SendSms,
    StepDue,
    VoicePurpose,
)
from callcenter.domain.messages import Message, MessageKind, render
from callcenter.domain.policy import Action, Milestone, Policy, Step
from callcenter.domain.replies import Answer, family_no_longer_needed, goodbye, key_answer
from tests.calls_support import FAMILY, SUPERVISORS, actions, call_in, of_type, report, step

LATE = 15 * 60
THIRD = Person("family:3", "Niece", "+8613900000022", "zh")
FAMILY3 = (*FAMILY, THIRD)


def _rings(decision: Decision) -> list[PlaceCall]:
    return of_type(decision, PlaceCall)


def _late(**situation: object) -> Decision:
    """The default not_on_scene step, run on a call whose carer is on the way."""
    return step(call_in(CallState.ON_THE_WAY), StepDue("not_on_scene"), LATE, **situation)


def test_help_late_rings_the_first_family_contact_in_their_language() -> None:
    """Test that the not_on_scene step rings the first contact with who, what, how far help
    has got and "按1确认收到", guarded by the step's milestone, and keeps the round."""
    decision = _late()
    (ring,) = _rings(decision)
    assert ring.to == FAMILY[0]
    assert (ring.purpose, ring.unless, ring.carer_id) == (
        VoicePurpose.FAMILY,
        Milestone.ON_SCENE,
        None,
    )
    assert ring.message.kind is MessageKind.VOICE_FAMILY
    zh = render(ring.message, "zh")
    assert zh.startswith(
        "您好，这里是呼叫中心。H0007，Mrs Li (86)，12 Garden Lane，发出了紧急呼叫报警。"
    )
    assert "护理员已在路上，但已过15分钟仍未到达" in zh
    assert "请致电+862155550000" in zh
    assert zh.endswith("按1确认收到。")
    en = render(ring.message, "en")
    assert "A carer is on the way but has not arrived after 15 min." in en
    assert en.endswith("Press 1 to confirm you heard this.")
    assert decision.call.family_round == FamilyRound("not_on_scene", "family:1")
    entry = next(e for e in decision.history if e.action == "ring_family")
    assert entry.detail == {
        "to": "family:1",
        "name": "Daughter",
        "step": "not_on_scene",
        "because": {"reason": "not_on_scene", "waited_s": "900"},
    }


def test_no_carer_accepted_says_help_is_late() -> None:
    """Test that with no carer on the way the family hears that nobody has taken it yet."""
    decision = step(call_in(CallState.DISPATCHED), StepDue("not_on_scene"), LATE)
    (ring,) = _rings(decision)
    assert "已过15分钟仍无护理员接单" in render(ring.message, "zh")
    assert "no carer has taken it after 15 min" in render(ring.message, "en")


def test_contacts_are_rung_in_order_until_one_presses_1() -> None:
    """Test that a contact who does not pick up (or hangs up without 1) passes the ring to
    the next in order, and that a 1 stops it: nobody further is rung."""
    decision = _late(family=FAMILY3)
    first = decision.call
    missed = step(first, FamilyRingOver("family:1", "no-answer"), LATE + 30, family=FAMILY3)
    (ring,) = _rings(missed)
    assert ring.to == FAMILY3[1]
    assert ring.to.language == "en"
    assert actions(missed) == ["ring_family"]
    assert missed.history[0].detail["to"] == "family:2"
    assert missed.call.family_round == FamilyRound("not_on_scene", "family:2")
    # A late report about the first ring changes nothing.
    again = step(missed.call, FamilyRingOver("family:1", "no-answer"), LATE + 40, family=FAMILY3)
    assert again == Decision(missed.call)
    heard = step(missed.call, FamilyHeard("family:2"), LATE + 50, family=FAMILY3)
    assert actions(heard) == ["family_heard"]
    assert heard.history[0].detail == {"to": "family:2", "name": "Son", "step": "not_on_scene"}
    assert heard.effects == ()
    assert heard.call.family_round == FamilyRound("not_on_scene", "family:2", "family:2")
    # Their call then completes: nobody else is rung.
    over = step(heard.call, FamilyRingOver("family:2", "completed"), LATE + 60, family=FAMILY3)
    assert over == Decision(heard.call)


def test_every_contact_tried_without_a_1_is_written_and_supervisors_told() -> None:
    """Test that once the last contact's ring ends without a 1, the history says nobody
    confirmed, the supervisors are texted why, and nobody is rung again."""
    call = _late().call
    call = step(call, FamilyRingOver("family:1", "busy"), LATE + 10).call
    last = step(call, FamilyRingOver("family:2", "completed"), LATE + 70)
    assert _rings(last) == []
    assert actions(last) == ["family_unconfirmed"]
    assert last.history[0].detail["because"] == {
        "reason": "family_unconfirmed",
        "contacts": "2",
    }
    assert last.history[0].detail["last"] == "family:2"
    sms = of_type(last, SendSms)
    assert [s.to for s in sms] == list(SUPERVISORS)
    assert {s.unless for s in sms} == {Milestone.ON_SCENE}
    assert "已致电家属（2位），无人按1确认收到" in render(sms[0].message, "zh")
    assert "nobody confirmed hearing it" in render(sms[1].message, "en")
    assert last.call.family_round == FamilyRound("not_on_scene", None)
    assert last.call.family_round.over
    # Nothing more happens on a further report.
    assert step(last.call, FamilyRingOver("family:2", "completed"), LATE + 80) == Decision(
        last.call
    )


def test_contacts_without_a_number_are_passed_over() -> None:
    """Test that a contact with no number is not rung: the next one with a number is."""
    blank = (Person("family:1", "Daughter", "", "zh"), FAMILY[1])
    (ring,) = _rings(_late(family=blank))
    assert ring.to == FAMILY[1]


def test_no_family_to_ring_is_written_as_nobody_reached() -> None:
    """Test that a household without family numbers writes "nobody to send" for the action,
    like notify_family, and that phone calls turned off do the same with their reason."""
    decision = _late(family=())
    assert _rings(decision) == []
    missing = [e for e in decision.history if e.action == NOBODY_TO_SEND]
    assert [e.detail["because"] for e in missing] == [
        {"reason": "no_contact", "action": "notify_family"},
        {"reason": "no_contact", "action": "ring_family"},
    ]
    assert decision.call.family_round is None
    off = _late(rings=False)
    assert _rings(off) == []
    (line,) = [e for e in off.history if e.action == NOBODY_TO_SEND]
    assert line.detail["because"] == {"reason": "voice_off", "action": "ring_family"}
    assert line.detail["why"] == "ring_family: phone calls are off"


def test_a_step_with_only_ring_family_hands_over_when_it_rings_nobody() -> None:
    """Test the step's reached-nobody rule: ringing a contact reaches someone (no hand-over);
    no contact to ring hands over to the next step at once, as for the other actions."""
    policy = Policy(
        auto_dispatch=False,
        steps=(
            Step("family", 60, Milestone.ON_SCENE, (Action.RING_FAMILY,)),
            Step("lead", 600, Milestone.ON_SCENE, (Action.NOTIFY_STATION_LEAD,)),
        ),
    )
    call = replace(call_in(CallState.ON_THE_WAY), policy=policy)
    rung = step(call, StepDue("family"), 60)
    assert actions(rung) == ["escalated", "ring_family"]
    nobody = step(call, StepDue("family"), 60, family=())
    assert actions(nobody) == [
        "escalated",
        NOBODY_TO_SEND,
        "escalated",
        "notify_station_lead",
    ]


def test_a_round_is_not_begun_twice() -> None:
    """Test that a second ring_family step while the family is being rung, or after one
    confirmed, rings nobody new and says why in the history."""
    policy = Policy(
        auto_dispatch=False,
        steps=(
            Step("first", 60, Milestone.ON_SCENE, (Action.RING_FAMILY,)),
            Step("second", 120, Milestone.ON_SCENE, (Action.RING_FAMILY,)),
        ),
    )
    call = step(replace(call_in(CallState.ON_THE_WAY), policy=policy), StepDue("first"), 60).call
    ringing = step(call, StepDue("second"), 120)
    assert _rings(ringing) == []
    assert ringing.history[-1].detail == {"step": "second", "ringing": "family:1"}
    heard = step(call, FamilyHeard("family:1"), 90).call
    after = step(heard, StepDue("second"), 120)
    assert _rings(after) == []
    assert after.history[-1].detail == {"step": "second", "heard_by": "family:1"}
    # A round in which nobody confirmed may be followed by another from a later step.
    tried = step(call, FamilyRingOver("family:1", "no-answer"), 70).call
    tried = step(tried, FamilyRingOver("family:2", "no-answer"), 100).call
    (ring,) = _rings(step(tried, StepDue("second"), 120))
    assert ring.to == FAMILY[0]


def test_the_carer_arriving_ends_the_round() -> None:
    """Test that once a carer is on scene the next contact is not rung."""
    call = _late().call
    arrived = step(call, report(1, CarerReport.ON_SCENE), LATE + 20).call
    over = step(arrived, FamilyRingOver("family:1", "no-answer"), LATE + 30)
    assert _rings(over) == []
    assert over.history == ()
    assert over.call.family_round == FamilyRound("not_on_scene", None)


def test_the_family_key_and_goodbye() -> None:
    """Test that 1 on a family ring is "heard" and other keys mean nothing, and that the
    family's goodbye is its own."""
    assert key_answer(VoicePurpose.FAMILY, "1") is Answer.HEARD
    assert key_answer(VoicePurpose.FAMILY, "2") is None
    assert key_answer(VoicePurpose.PAGE, "1") is Answer.ACCEPT
    assert (
        render(goodbye(VoicePurpose.FAMILY), "zh") == "没有收到按键。呼叫中心将联系其他家属。再见。"
    )
    assert goodbye(VoicePurpose.PAGE).kind is MessageKind.VOICE_GOODBYE
    assert render(Message(MessageKind.VOICE_FAMILY_HEARD), "zh") == "谢谢，已确认收到。再见。"


def test_a_family_ring_picked_up_once_help_arrived_says_so() -> None:
    """Test that a contact picking up once a carer is at the door (or the call closed)
    is told nothing is needed, and one picking up while help is still late is not."""
    call = _late().call
    assert family_no_longer_needed(call, Milestone.ON_SCENE) is None
    arrived = step(call, report(1, CarerReport.ON_SCENE), LATE + 20).call
    said = family_no_longer_needed(arrived, Milestone.ON_SCENE)
    assert said is not None and said.kind is MessageKind.VOICE_FAMILY_NOT_NEEDED
    assert "无需您处理" in render(said, "zh")
