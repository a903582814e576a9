"""A carer's SMS answer, read from its text, and why a refused answer was refused.

Carers type on ordinary phones, often in a hurry: "12a", "12 A", "１２ａ", "12接", "到",
"STOP". Reading is pure and table-tested; so is what each answer asks of the desk, how
it is confirmed, and which answers a carer may give at each point of their part in a
call. The webhook (web/sms_webhooks.py) and the carer page bind the answer to a call and apply it
through the desk.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass

from callcenter.domain.calls import (
    ACTIVE_ASSIGNMENT,
    Actor,
    AssignmentState,
    Call,
    CallState,
    CarerReport,
    Outcome,
    Report,
    Resolve,
    VoicePurpose,
)
from callcenter.domain.messages import Because, Message, MessageKind, Reason
from callcenter.domain.policy import Milestone


class Answer(enum.StrEnum):
    """What a carer's text asks for."""

    ACCEPT = "accept"
    DECLINE = "decline"
    ON_THE_WAY = "on_the_way"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"
    STOP = "stop"  # opt out of texts (Twilio blocks further sends by itself)
    START = "start"  # opt back in
    HEARD = "heard"  # a family contact's key on a ring about a late call: they heard it


# The carer's report for each answer that is one.
REPORTS: dict[Answer, CarerReport] = {
    Answer.ACCEPT: CarerReport.ACCEPTED,
    Answer.DECLINE: CarerReport.DECLINED,
    Answer.ON_THE_WAY: CarerReport.ON_THE_WAY,
    Answer.ON_SCENE: CarerReport.ON_SCENE,
}

# The confirmation each answer about a call gets once the desk has taken it.
CONFIRMATIONS: dict[Answer, MessageKind] = {
    Answer.ACCEPT: MessageKind.REPLY_ACCEPTED,
    Answer.DECLINE: MessageKind.REPLY_DECLINED,
    Answer.ON_THE_WAY: MessageKind.REPLY_ON_THE_WAY,
    Answer.ON_SCENE: MessageKind.REPLY_ON_SCENE,
    Answer.RESOLVED: MessageKind.REPLY_RESOLVED,
}

# A key pressed on a phone call the desk placed, by why it rang: the same answers as a
# text's codes, so a call moves the same way whichever the carer used.
KEYS: dict[VoicePurpose, dict[str, Answer]] = {
    VoicePurpose.PAGE: {"1": Answer.ACCEPT, "2": Answer.DECLINE},
    VoicePurpose.FAMILY: {"1": Answer.HEARD},
}

# What a ring says before hanging up when no key that means something was pressed twice.
GOODBYES: dict[VoicePurpose, MessageKind] = {
    VoicePurpose.FAMILY: MessageKind.VOICE_FAMILY_GOODBYE,
}

# The spoken confirmation of each answer a key gives, once the desk has taken it.
SPOKEN_CONFIRMATIONS: dict[Answer, MessageKind] = {
    Answer.ACCEPT: MessageKind.VOICE_ACCEPTED,
    Answer.DECLINE: MessageKind.VOICE_DECLINED,
    Answer.HEARD: MessageKind.VOICE_FAMILY_HEARD,
}

# What a carer may answer in each state of their part in a call (the carer page's buttons).
NEXT_ANSWERS: dict[AssignmentState, tuple[Answer, ...]] = {
    AssignmentState.DISPATCHED: (Answer.ACCEPT, Answer.DECLINE),
    AssignmentState.ACCEPTED: (Answer.ON_THE_WAY, Answer.ON_SCENE, Answer.DECLINE),
    AssignmentState.ON_THE_WAY: (Answer.ON_SCENE,),
    AssignmentState.ON_SCENE: (Answer.RESOLVED,),
}

LETTERS: dict[str, Answer] = {
    "a": Answer.ACCEPT,
    "d": Answer.DECLINE,
    "o": Answer.ON_THE_WAY,
    "s": Answer.ON_SCENE,
    "r": Answer.RESOLVED,
}

WORDS: dict[str, Answer] = {
    "接": Answer.ACCEPT,
    "接单": Answer.ACCEPT,
    "同意": Answer.ACCEPT,
    "拒": Answer.DECLINE,
    "拒绝": Answer.DECLINE,
    "出发": Answer.ON_THE_WAY,
    "在路上": Answer.ON_THE_WAY,
    "到": Answer.ON_SCENE,
    "已到": Answer.ON_SCENE,
    "到达": Answer.ON_SCENE,
    "完成": Answer.RESOLVED,
    "结束": Answer.RESOLVED,
}

# Twilio's own opt-out and opt-in keywords (it acts on them whatever we answer), and ours.
OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "退订"})
OPT_IN = frozenset({"start", "unstop", "订阅"})

# Call ids are database ids; nine digits is far beyond any district's lifetime.
_MAX_DIGITS = 9
_WORD = "|".join(sorted(map(re.escape, WORDS), key=len, reverse=True))
_CODE = re.compile(
    rf"(?P<id>\d{{1,{_MAX_DIGITS}}})?(?P<letter>[{''.join(LETTERS)}])"
    rf"|(?P<before>\d{{1,{_MAX_DIGITS}}})?(?P<word>{_WORD})(?P<after>\d{{1,{_MAX_DIGITS}}})?"
)
# Full stops, exclamation marks and the like that phones and people add at the end.
_TRAILING = ".。!！?？,，;；~～"
# How much of an unreadable text is kept in the error (and thus in the logs).
_QUOTE_LIMIT = 40


@dataclass(frozen=True)
class Reply:
    """An answer, for the call numbered ``call_id`` or (None) the carer's open dispatch."""

    answer: Answer
    call_id: int | None = None


@dataclass(frozen=True)
class ReplyError:
    """A text that is not an answer; ``reason`` says why, for the log."""

    text: str
    reason: str


def _normalised(text: str) -> str:
    # NFKC turns full-width "１２ａ" (common on Chinese keyboards) into "12a".
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(folded.split()).rstrip(_TRAILING)


def parse_reply(text: str) -> Reply | ReplyError:
    """Read a carer's text: "12a", "12 A", "a", "12接", "到", "STOP"; else a ReplyError."""
    code = _normalised(text)
    quoted = text.strip()[:_QUOTE_LIMIT]
    if not code:
        return ReplyError(quoted, "the message is empty")
    if code in OPT_OUT:
        return Reply(Answer.STOP)
    if code in OPT_IN:
        return Reply(Answer.START)
    match = _CODE.fullmatch(code)
    if match is None:
        return ReplyError(quoted, "not a reply code")
    if match["letter"]:
        number, answer = match["id"], LETTERS[match["letter"]]
    else:
        if match["before"] and match["after"]:
            return ReplyError(quoted, "two call numbers in one reply")
        number, answer = match["before"] or match["after"], WORDS[match["word"]]
    if number is None:
        return Reply(answer)
    call_id = int(number)
    if call_id == 0:
        return ReplyError(quoted, "there is no call 0")
    return Reply(answer, call_id)


def command_for(
    answer: Answer, actor: Actor, carer_id: int, outcome: Outcome, via: str
) -> Report | Resolve:
    """The desk command a carer's answer about a call stands for (``via``: how it came,
    e.g. "SMS", noted on a closing)."""
    if answer is Answer.RESOLVED:
        return Resolve(actor, outcome, note=f"closed by {via}")
    return Report(actor, carer_id, REPORTS[answer])


def key_answer(purpose: VoicePurpose, digits: str) -> Answer | None:
    """The answer ``digits`` pressed on a call rung for ``purpose`` stand for; None for
    no key or one that means nothing there."""
    return KEYS.get(purpose, {}).get(digits.strip())


def goodbye(purpose: VoicePurpose) -> Message:
    """What a ring rung for ``purpose`` says when no key that means something came."""
    return Message(GOODBYES.get(purpose, MessageKind.VOICE_GOODBYE))


def spoken_confirmation(answer: Answer, call: Call, household: str) -> Message:
    """What a carer hears once the desk took the answer their key gave."""
    return Message(SPOKEN_CONFIRMATIONS[answer], {"call_ref": str(call.id), "household": household})


def ring_no_longer_wanted(call: Call, carer_id: int) -> Message | None:
    """What a carer rung about their page hears on picking up once it no longer waits for
    them (accepted by text meanwhile, released, the call closed); None while it does."""
    mine = call.assignment(carer_id)
    if call.is_open and mine is not None and mine.state is AssignmentState.DISPATCHED:
        return None
    facts = {"call_ref": str(call.id)}
    if call.is_open and mine is not None and mine.active:
        return Message(MessageKind.VOICE_ALREADY_YOURS, facts)
    return Message(MessageKind.VOICE_NOT_NEEDED, facts)


def family_no_longer_needed(call: Call, unless: Milestone) -> Message | None:
    """What a family contact rung because help was late hears on picking up once the
    call reached ``unless`` (a carer at the door) or closed meanwhile; None while late."""
    if call.is_open and not call.reached(unless):
        return None
    return Message(MessageKind.VOICE_FAMILY_NOT_NEEDED, {"call_ref": str(call.id)})


def confirmation(answer: Answer, call: Call, household: str, outcome: Outcome) -> Message:
    """The confirmation of an answer the desk took, as ``call`` now is: a carer's done
    on an emergency or fall no operator owned says the desk will review it, since the
    call has not closed."""
    kind = CONFIRMATIONS[answer]
    if answer is Answer.RESOLVED and call.state is CallState.AWAITING_REVIEW:
        kind = MessageKind.REPLY_REVIEW
        outcome = call.reported_outcome or outcome
    return Message(kind, {"call_ref": str(call.id), "household": household, "outcome": outcome})


def refusal(call: Call, carer_id: int, household: str, why: str) -> Message:
    """Why ``call`` would not take the carer's answer, in the carer's terms: closed, taken
    by someone else, no longer theirs, or (``why``, the desk's reason) not possible now."""
    facts = {"call_ref": str(call.id), "household": household}
    if not call.is_open:
        return Message(MessageKind.REPLY_CLOSED, facts)
    mine = [a for a in call.assignments if a.carer_id == carer_id]
    if not mine:
        return Message(MessageKind.REPLY_NOT_YOURS, facts)
    if call.reported_outcome is not None and mine[-1].state is AssignmentState.FINISHED:
        # They reported it done already; it waits for the desk's review.
        return confirmation(Answer.RESOLVED, call, household, call.reported_outcome)
    if not any(a.active for a in mine):
        others = [
            a.carer_code
            for a in call.assignments
            if a.carer_id != carer_id and a.state in ACTIVE_ASSIGNMENT
        ]
        taken = [
            a.carer_code
            for a in call.assignments
            if a.carer_id != carer_id
            and a.state
            in (AssignmentState.ACCEPTED, AssignmentState.ON_THE_WAY, AssignmentState.ON_SCENE)
        ]
        if taken:
            return Message(MessageKind.REPLY_TAKEN, facts | {"carer": ", ".join(taken)})
        if others:
            return Message(MessageKind.REPLY_PASSED_ON, facts | {"carer": ", ".join(others)})
        return Message(MessageKind.REPLY_NOT_YOURS, facts)
    # The desk's reason is English and exact; a Chinese-speaking carer is told what their
    # part on the call is, and that the answer does not fit it.
    because = Because(
        Reason.ANSWER_DOES_NOT_APPLY,
        {"state": next(a for a in mine if a.active).state.value, "detail": why},
    )
    return Message(MessageKind.REPLY_REFUSED, facts | {"why": why}, because=because)
