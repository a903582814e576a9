"""Handling scripts (domain/scripts.py) and closing a call (domain/calls/model.py,
``reason_needed``): every call type has its script in both languages, answers move the
recommendation, answers are desk work kept in the history, and an alarm no carer reached
closes only with a reason for the outcomes that need one.

Pure, like test_domain_calls.py: calls are built by hand on a virtual timeline.
"""

from __future__ import annotations

import re

import pytest

from callcenter.domain.call_types import ALARM_TYPES, CallType
from callcenter.domain.calls import (
    CONFIRMED_OUTCOMES,
    AnswerScript,
    CallState,
    CarerReport,
    IllegalTransitionError,
    NotOwnerError,
    NotPossibleError,
    Outcome,
    Resolve,
    reason_needed,
)
from callcenter.domain.scripts import (
    ACTION_TEXT,
    ANSWER_TEXT,
    SCRIPTS,
    NextAction,
    ScriptAnswer,
    answered,
    recommend,
)
from callcenter.web.views import script_view
from tests.calls_support import (
    OPERATOR,
    OTHER_OPERATOR,
    SUPERVISOR,
    accept,
    call_in,
    open_,
    report,
    step,
)

YES, NO, UNKNOWN = ScriptAnswer.YES, ScriptAnswer.NO, ScriptAnswer.UNKNOWN
_HAN = re.compile(r"[\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


# --- the scripts as data -----------------------------------------------------------------


@pytest.mark.parametrize("call_type", list(CallType))
def test_every_call_type_has_a_script_in_both_languages(call_type: CallType) -> None:
    """Test that each call type has a script with questions, each worded in Chinese (no
    Latin word in it) and in English, with unique ids, and a usual next action."""
    script = SCRIPTS.get(call_type)
    assert script is not None, f"{call_type} has no handling script"
    assert script.call_type is call_type
    assert script.usual, f"{call_type} has no usual next action"
    assert len(script.questions) >= 3
    ids = [q.id for q in script.questions]
    assert len(set(ids)) == len(ids), ids
    for question in script.questions:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", question.id)
        assert _HAN.search(question.text.zh) and not _LATIN_WORD.search(question.text.zh)
        assert question.text.en.strip() and not _HAN.search(question.text.en)


def test_every_action_and_answer_has_words_in_both_languages() -> None:
    """Test that every next action and every answer can be shown in zh and in en."""
    for table, members in ((ACTION_TEXT, list(NextAction)), (ANSWER_TEXT, list(ScriptAnswer))):
        assert set(table) == set(members)
        for words in table.values():
            assert _HAN.search(words.zh) and not _LATIN_WORD.search(words.zh)
            assert words.en.strip() and not _HAN.search(words.en)


@pytest.mark.parametrize("call_type", [CallType.EMERGENCY, CallType.FALL])
def test_alarm_scripts_ask_what_a_district_desk_asks(call_type: CallType) -> None:
    """Test that the alarm scripts ask about consciousness, breathing, bleeding, company
    and getting in, and that a fall asks about getting up and the head."""
    ids = {q.id for q in SCRIPTS[call_type].questions}
    assert {"conscious", "breathing", "bleeding", "someone_with", "door_access"} <= ids
    if call_type is CallType.FALL:
        assert {"can_get_up", "head_injury"} <= ids


# --- the recommendation ------------------------------------------------------------------


def test_a_fall_means_two_carers_until_an_answer_calls_for_120() -> None:
    """Test that a fall recommends two carers, that a head injury puts 120 first (with
    why), and that taking the answer back (no) drops it again."""
    assert recommend(CallType.FALL, {}).actions == (NextAction.SEND_TWO_CARERS,)
    calm = recommend(CallType.FALL, {"conscious": YES, "can_get_up": NO, "head_injury": NO})
    assert calm.actions == (NextAction.SEND_TWO_CARERS,)
    hurt = recommend(CallType.FALL, {"conscious": YES, "head_injury": YES})
    assert hurt.first is NextAction.CALL_120
    assert hurt.actions == (NextAction.CALL_120, NextAction.SEND_TWO_CARERS)
    assert hurt.why[NextAction.CALL_120] == ("head_injury",)


def test_answers_raise_actions_most_serious_first() -> None:
    """Test that an emergency not breathing and alone, whose door is unknown, recommends
    120, the carer, getting in and staying on the line, in that order."""
    got = recommend(
        CallType.EMERGENCY,
        {"breathing": NO, "someone_with": NO, "door_access": UNKNOWN, "conscious": NO},
    )
    assert got.actions == (
        NextAction.CALL_120,
        NextAction.SEND_CARER,
        NextAction.ARRANGE_ENTRY,
        NextAction.STAY_ON_LINE,
    )
    assert got.why[NextAction.CALL_120] == ("conscious", "breathing")


def test_a_service_request_with_a_fall_asks_for_two_carers_not_one() -> None:
    """Test that a service request whose resident has fallen recommends two carers and no
    longer one, and keeps the question that asked for it."""
    got = recommend(CallType.SERVICE_REQUEST, {"has_fallen": YES})
    assert got.actions == (NextAction.SEND_TWO_CARERS,)
    assert got.why[NextAction.SEND_TWO_CARERS] == ("has_fallen",)


def test_the_latest_answer_counts_and_strangers_are_skipped() -> None:
    """Test that the history's latest answer to a question is the one used, and answers
    that are no answer (or to a question no longer asked) change nothing."""
    answers = answered(
        [("head_injury", "yes"), ("head_injury", "no"), ("ghost", "yes"), ("conscious", "maybe")]
    )
    assert answers == {"head_injury": NO, "ghost": YES}
    view = script_view(CallType.FALL, answers)
    assert [r["action"] for r in view["recommendation"]] == ["send_two_carers"]  # type: ignore[index]
    questions = {q["id"]: q["answer"] for q in view["questions"]}  # type: ignore[index,union-attr]
    assert questions["head_injury"] == "no" and questions["conscious"] is None
    assert "ghost" not in questions


# --- answering: desk work kept in the history ----------------------------------------------


def test_an_answer_is_kept_in_the_history_with_its_words() -> None:
    """Test that an answer takes the unowned call for its operator and is written with
    the question's words in both languages and the action it raises."""
    call = open_(CallType.FALL).call
    decision = step(call, AnswerScript(OPERATOR, "head_injury", YES), 30)
    assert decision.call.owner == str(OPERATOR)
    assert [e.action for e in decision.history] == ["acknowledged", "script_answer"]
    detail = decision.history[-1].detail
    assert detail == {
        "question": "head_injury",
        "answer": "yes",
        "question_zh": "是否有头部撞击？",
        "question_en": "Did they hit their head?",
        "answer_zh": "是",
        "answer_en": "yes",
        "raises": "call_120",
        "raises_zh": ACTION_TEXT[NextAction.CALL_120].zh,
        "raises_en": ACTION_TEXT[NextAction.CALL_120].en,
    }
    quiet = step(decision.call, AnswerScript(OPERATOR, "can_get_up", UNKNOWN), 40)
    assert "raises" not in quiet.history[-1].detail
    assert quiet.call == decision.call  # an answer changes nothing but the history


def test_an_answer_by_another_operator_is_refused_a_supervisor_may() -> None:
    """Test that answering is the owner's work: another operator gets not-owner, a
    supervisor may step in."""
    call = step(open_(CallType.FALL).call, AnswerScript(OPERATOR, "conscious", YES), 30).call
    with pytest.raises(NotOwnerError):
        step(call, AnswerScript(OTHER_OPERATOR, "conscious", NO), 40)
    stepped_in = step(call, AnswerScript(SUPERVISOR, "conscious", NO), 50)
    assert stepped_in.history[-1].actor == str(SUPERVISOR)


def test_an_unknown_question_or_a_closed_call_is_refused() -> None:
    """Test that a question the call type's script does not have is refused naming the
    ones it has, and a closed call takes no more answers."""
    call = open_(CallType.LOW_BATTERY).call
    with pytest.raises(NotPossibleError) as refused:
        step(call, AnswerScript(OPERATOR, "head_injury", YES), 30)
    assert refused.value.code == "unknown_question"
    assert "can_charge" in str(refused.value)
    with pytest.raises(IllegalTransitionError):
        step(call_in(CallState.RESOLVED), AnswerScript(OPERATOR, "conscious", YES), 900)


# --- closing: outcomes that need a reason --------------------------------------------------


def test_which_outcomes_need_a_reason() -> None:
    """Test the rule: alarm calls no carer reached need a reason for every outcome but
    "family attended"; device calls and calls a carer reached never do; hospital, 120
    and false alarm are the outcomes confirmed on the board."""
    for call_type in CallType:
        for outcome in Outcome:
            assert not reason_needed(call_type, outcome, carer_at_door=True)
            expected = call_type in ALARM_TYPES and outcome is not Outcome.FAMILY_ATTENDED
            assert reason_needed(call_type, outcome, carer_at_door=False) is expected
    confirmed = {Outcome.TAKEN_TO_HOSPITAL, Outcome.EMERGENCY_SERVICES, Outcome.FALSE_ALARM}
    assert confirmed == CONFIRMED_OUTCOMES


@pytest.mark.parametrize(
    "outcome",
    [Outcome.TAKEN_TO_HOSPITAL, Outcome.HELPED_AT_HOME, Outcome.FALSE_ALARM, Outcome.OTHER],
)
@pytest.mark.parametrize("state", [CallState.DISPATCHED, CallState.ON_THE_WAY])
def test_an_alarm_nobody_reached_needs_a_reason(outcome: Outcome, state: CallState) -> None:
    """Test that the desk cannot close an alarm no carer reached without a reason (blank
    counts as none), and with one the reason is in the history."""
    call = call_in(state)
    for reason in ("", "   "):
        with pytest.raises(NotPossibleError) as refused:
            step(call, Resolve(OPERATOR, outcome, reason=reason), 600)
        assert refused.value.code == "reason_needed"
        assert outcome.value in str(refused.value) and "reason" in str(refused.value)
    closed = step(call, Resolve(OPERATOR, outcome, reason=" 120 took her to Ruijin "), 600)
    assert closed.call.outcome is outcome
    assert closed.history[-1].detail["reason"] == "120 took her to Ruijin"


def test_allowed_without_a_reason() -> None:
    """Test that a reason is not asked for once a carer is (or was) at the door, for the
    family attending, or on a device call."""
    on_scene = call_in(CallState.ON_SCENE)
    done = step(on_scene, Resolve(OPERATOR, Outcome.TAKEN_TO_HOSPITAL), 900)
    assert done.call.state is CallState.RESOLVED and "reason" not in done.history[-1].detail
    family = step(call_in(CallState.DISPATCHED), Resolve(OPERATOR, Outcome.FAMILY_ATTENDED), 900)
    assert family.call.state is CallState.RESOLVED
    battery = open_(CallType.LOW_BATTERY).call
    fixed = step(battery, Resolve(OPERATOR, Outcome.DEVICE_FIXED), 900)
    assert fixed.call.state is CallState.RESOLVED


def test_reaching_the_door_means_on_scene_or_finished() -> None:
    """Test that a carer on the way has not reached the door, one on scene has, and
    still counts once the call closes (their assignment finished)."""
    call = open_().call
    call = step(call, accept(1), 20).call
    call = step(call, report(1, CarerReport.ON_THE_WAY), 30).call
    assert not call.carer_at_door
    arrived = step(call, report(1, CarerReport.ON_SCENE), 300).call
    assert arrived.carer_at_door
    closed = step(arrived, Resolve(OPERATOR, Outcome.EMERGENCY_SERVICES), 900).call
    assert closed.carer_at_door  # finished, still counted
