"""Reading carers' SMS replies and explaining refusals (domain/replies.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import Assignment, AssignmentState, Call, Outcome, VoicePurpose
from callcenter.domain.messages import Message, MessageKind, render
from callcenter.domain.policy import DEFAULT_POLICIES
from callcenter.domain.replies import (
    KEYS,
    SPOKEN_CONFIRMATIONS,
    Answer,
    Reply,
    ReplyError,
    key_answer,
    parse_reply,
    refusal,
    ring_no_longer_wanted,
)

A, D, W, S, R = (
    Answer.ACCEPT,
    Answer.DECLINE,
    Answer.ON_THE_WAY,
    Answer.ON_SCENE,
    Answer.RESOLVED,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12a", Reply(A, 12)),
        ("12d", Reply(D, 12)),
        ("12o", Reply(W, 12)),
        ("12s", Reply(S, 12)),
        ("12r", Reply(R, 12)),
        ("12A", Reply(A, 12)),
        ("12 A", Reply(A, 12)),
        (" 12a ", Reply(A, 12)),
        ("1 2 a", Reply(A, 12)),
        ("12a.", Reply(A, 12)),
        ("12a!", Reply(A, 12)),
        ("12a\n", Reply(A, 12)),
        ("１２ａ", Reply(A, 12)),  # full-width, as Chinese keyboards type it
        ("12 Ａ。", Reply(A, 12)),
        ("7s", Reply(S, 7)),
        ("123456789r", Reply(R, 123456789)),
        ("a", Reply(A)),
        ("S", Reply(S)),
        (" r ", Reply(R)),
        ("接", Reply(A)),
        ("接单", Reply(A)),
        ("同意", Reply(A)),
        ("拒", Reply(D)),
        ("拒绝", Reply(D)),
        ("出发", Reply(W)),
        ("在路上", Reply(W)),
        ("到", Reply(S)),
        ("已到", Reply(S)),
        ("到达", Reply(S)),
        ("完成", Reply(R)),
        ("结束", Reply(R)),
        ("12接", Reply(A, 12)),
        ("12 接单", Reply(A, 12)),
        ("接单12", Reply(A, 12)),
        ("12拒绝", Reply(D, 12)),
        ("12出发", Reply(W, 12)),
        ("12已到", Reply(S, 12)),
        ("12到达。", Reply(S, 12)),
        ("12完成！", Reply(R, 12)),
        ("１２完成", Reply(R, 12)),
        ("STOP", Reply(Answer.STOP)),
        ("stop", Reply(Answer.STOP)),
        (" Stop ", Reply(Answer.STOP)),
        ("UNSUBSCRIBE", Reply(Answer.STOP)),
        ("退订", Reply(Answer.STOP)),
        ("START", Reply(Answer.START)),
        ("unstop", Reply(Answer.START)),
        ("订阅", Reply(Answer.START)),
    ],
)
def test_reply_codes_are_read(text: str, expected: Reply) -> None:
    """Test that every accepted way of writing a reply reads as the intended answer."""
    assert parse_reply(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("。", "empty"),
        ("12x", "not a reply code"),
        ("12", "not a reply code"),
        ("x", "not a reply code"),
        ("yes 12", "not a reply code"),
        ("no", "not a reply code"),
        ("12ab", "not a reply code"),
        ("a12", "not a reply code"),
        ("12a13", "not a reply code"),
        ("-12a", "not a reply code"),
        ("12.5a", "not a reply code"),
        ("1234567890a", "not a reply code"),
        ("0a", "no call 0"),
        ("00接", "no call 0"),
        ("12接13", "two call numbers"),
        ("我到了吗", "not a reply code"),
        ("hello, I am on my way", "not a reply code"),
        ("stop please", "not a reply code"),
        ("<Response>", "not a reply code"),
        ("a" * 500, "not a reply code"),
    ],
)
def test_garbage_is_not_a_reply(text: str, reason: str) -> None:
    """Test that a text that is no reply code is a ReplyError saying why, never an answer
    and never an exception."""
    result = parse_reply(text)
    assert isinstance(result, ReplyError)
    assert reason in result.reason
    assert len(result.text) <= 40


# --- refusals ------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _assignment(carer_id: int, state: AssignmentState) -> Assignment:
    return Assignment(carer_id, f"C00{carer_id}", state, NOW, "system:engine", 300.0, NOW)


def _call(*assignments: Assignment) -> Call:
    policy = DEFAULT_POLICIES[CallType.EMERGENCY]
    return Call(12, 1, CallType.EMERGENCY, 1, NOW, policy, assignments=assignments)


@pytest.mark.parametrize(
    ("call", "kind", "carer"),
    [
        (
            replace(
                _call(_assignment(1, AssignmentState.FINISHED)),
                closed_at=NOW,
                outcome=Outcome.HELPED_AT_HOME,
            ),
            MessageKind.REPLY_CLOSED,
            "",
        ),
        (_call(_assignment(2, AssignmentState.DISPATCHED)), MessageKind.REPLY_NOT_YOURS, ""),
        (
            _call(
                _assignment(1, AssignmentState.NO_ANSWER), _assignment(3, AssignmentState.ACCEPTED)
            ),
            MessageKind.REPLY_TAKEN,
            "C003",
        ),
        (
            _call(
                _assignment(1, AssignmentState.NO_ANSWER),
                _assignment(3, AssignmentState.DISPATCHED),
            ),
            MessageKind.REPLY_PASSED_ON,
            "C003",
        ),
        (_call(_assignment(1, AssignmentState.DECLINED)), MessageKind.REPLY_NOT_YOURS, ""),
        (_call(_assignment(1, AssignmentState.ACCEPTED)), MessageKind.REPLY_REFUSED, ""),
    ],
)
def test_a_refusal_says_why(call: Call, kind: MessageKind, carer: str) -> None:
    """Test that a refused reply is explained: the call is closed, another carer took it,
    it was passed on, it was never the carer's, or the desk's own reason."""
    message = refusal(call, 1, "H0001", "cannot go back")
    assert message.kind is kind
    assert message.facts["call_ref"] == "12"
    assert message.facts.get("carer", "") == carer
    text = render(message, "en")
    assert "12" in text
    if kind is MessageKind.REPLY_REFUSED:
        assert "cannot go back" in text
        # In Chinese, the carer's part on the call, not the desk's English reason.
        zh = render(message, "zh")
        assert "“已接单”" in zh and "cannot" not in zh, zh


@pytest.mark.parametrize(
    ("purpose", "digits", "answer"),
    [
        (VoicePurpose.PAGE, "1", Answer.ACCEPT),
        (VoicePurpose.PAGE, "2", Answer.DECLINE),
        (VoicePurpose.PAGE, " 1", Answer.ACCEPT),
        (VoicePurpose.PAGE, "3", None),
        (VoicePurpose.PAGE, "", None),
        (VoicePurpose.PAGE, "12", None),
        (VoicePurpose.BRIDGE, "1", None),
    ],
)
def test_keys_pressed_are_the_answers_of_the_text_codes(
    purpose: VoicePurpose, digits: str, answer: Answer | None
) -> None:
    """Test that 1 and 2 on a carer's ring are the same answers as "a" and "d" by text."""
    assert key_answer(purpose, digits) == answer
    if answer is not None:
        assert parse_reply({Answer.ACCEPT: "a", Answer.DECLINE: "d"}[answer]) == Reply(answer)


def test_every_key_answer_has_a_spoken_confirmation_in_both_languages() -> None:
    """Test that each answer a key gives is confirmed by voice in zh and en; a carer's
    names the call (a family contact's does not: they know no call numbers)."""
    for purpose, keys in KEYS.items():
        for answer in keys.values():
            kind = SPOKEN_CONFIRMATIONS[answer]
            said = {
                language: render(Message(kind, {"call_ref": "12", "household": "H0001"}), language)
                for language in ("zh", "en")
            }
            assert said["zh"] != said["en"]
            assert all("12" in s for s in said.values()) == (purpose is VoicePurpose.PAGE)


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (_call(_assignment(1, AssignmentState.DISPATCHED)), None),
        (_call(_assignment(1, AssignmentState.ACCEPTED)), MessageKind.VOICE_ALREADY_YOURS),
        (_call(_assignment(1, AssignmentState.ON_THE_WAY)), MessageKind.VOICE_ALREADY_YOURS),
        (_call(_assignment(1, AssignmentState.NO_ANSWER)), MessageKind.VOICE_NOT_NEEDED),
        (_call(_assignment(1, AssignmentState.DECLINED)), MessageKind.VOICE_NOT_NEEDED),
        (_call(_assignment(2, AssignmentState.DISPATCHED)), MessageKind.VOICE_NOT_NEEDED),
        (
            replace(_call(_assignment(1, AssignmentState.DISPATCHED)), closed_at=NOW),
            MessageKind.VOICE_NOT_NEEDED,
        ),
    ],
)
def test_a_ring_picked_up_once_the_page_no_longer_waits_says_so(
    call: Call, kind: MessageKind | None
) -> None:
    """Test that carer 1, rung about their page, is asked for a key only while the page
    still waits for them; else they hear that it is theirs already, or not needed."""
    said = ring_no_longer_wanted(call, 1)
    assert (said.kind if said else None) == kind
