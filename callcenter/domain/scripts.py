"""The handling script of each call type: what the operator asks the resident (or whoever
answers the phone), what they check, and the next action the answers point to.

A script is data, kept here beside the call types and written in zh and en as a district
call centre's desk card would read. It is not configurable: a centre that wants other
questions changes this table (one entry per call type, checked by
``tests/test_domain_scripts.py``). The answers are written to the call's history
(``script_answer``, see ``domain/calls``), and ``recommend`` works the recommendation out
from them again whenever the call is shown, so the history is the only record.

Each question is answered with one click: yes, no, or unknown (nobody could say). An
answer may raise an action (no breathing: ring 120); the recommendation is the call
type's usual action and every action raised, the most serious first.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from callcenter.domain.call_types import CallType


class ScriptAnswer(enum.StrEnum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"  # nobody could say (no answer on the phone, the caller does not know)


class NextAction(enum.StrEnum):
    """What the desk should do next, most serious first (the order ``recommend`` sorts by)."""

    CALL_120 = "call_120"  # ring emergency services now
    SEND_TWO_CARERS = "send_two_carers"  # two carers: one cannot lift a fallen resident
    SEND_CARER = "send_carer"
    ARRANGE_ENTRY = "arrange_entry"  # the carer cannot get in: key box, family, neighbour
    CALL_FAMILY = "call_family"
    STAY_ON_LINE = "stay_on_line"  # alone and frightened: keep talking until help is there
    BOOK_DEVICE_VISIT = "book_device_visit"  # a technician or carer fixes the device
    RING_HOUSEHOLD = "ring_household"  # ring the resident to check they are well


SERIOUSNESS: tuple[NextAction, ...] = tuple(NextAction)


@dataclass(frozen=True)
class Text:
    zh: str
    en: str

    def as_dict(self) -> dict[str, str]:
        return {"zh": self.zh, "en": self.en}


# What each action is called on the desk card.
ACTION_TEXT: dict[NextAction, Text] = {
    NextAction.CALL_120: Text("立即拨打120急救电话", "Ring 120 (ambulance) now"),
    NextAction.SEND_TWO_CARERS: Text(
        "派两名护理员上门（一人无法扶起）", "Send two carers (one cannot lift the resident)"
    ),
    NextAction.SEND_CARER: Text("派护理员上门", "Send a carer to the door"),
    NextAction.ARRANGE_ENTRY: Text(
        "安排开门：钥匙箱、家属或邻居、物业",
        "Arrange entry: key box, family or neighbour, caretaker",
    ),
    NextAction.CALL_FAMILY: Text("通知家属", "Call the family"),
    NextAction.STAY_ON_LINE: Text(
        "保持通话，直到护理员到达", "Stay on the line until the carer arrives"
    ),
    NextAction.BOOK_DEVICE_VISIT: Text("安排上门检修设备", "Book a visit to fix the device"),
    NextAction.RING_HOUSEHOLD: Text(
        "致电住户，确认平安", "Ring the resident to check they are well"
    ),
}

ANSWER_TEXT: dict[ScriptAnswer, Text] = {
    ScriptAnswer.YES: Text("是", "yes"),
    ScriptAnswer.NO: Text("否", "no"),
    ScriptAnswer.UNKNOWN: Text("不清楚", "unknown"),
}


class Kind(enum.StrEnum):
    ASK = "ask"  # asked of the resident or whoever answers
    CHECK = "check"  # the operator checks or does it


@dataclass(frozen=True)
class Question:
    id: str
    text: Text
    kind: Kind = Kind.ASK
    # The action an answer raises (an answer not listed raises none).
    raises: Mapping[ScriptAnswer, NextAction] = field(default_factory=dict)


@dataclass(frozen=True)
class Script:
    call_type: CallType
    usual: tuple[NextAction, ...]  # the recommendation before any answer
    questions: tuple[Question, ...]

    def question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)


_YES, _NO, _UNKNOWN = ScriptAnswer.YES, ScriptAnswer.NO, ScriptAnswer.UNKNOWN
_A = NextAction

# The same questions in several scripts, asked the same way.
_ANSWERS_PHONE = Question(
    "answers_phone",
    Text("住户是否接听电话或对讲、能回应？", "Does the resident answer the phone or speaker?"),
    raises={_NO: _A.CALL_FAMILY, _UNKNOWN: _A.CALL_FAMILY},
)
_CONSCIOUS = Question(
    "conscious",
    Text("是否神志清楚、能正常对答？", "Are they conscious and making sense?"),
    raises={_NO: _A.CALL_120},
)
_BREATHING = Question(
    "breathing",
    Text("呼吸是否正常？", "Are they breathing normally?"),
    raises={_NO: _A.CALL_120},
)
_BLEEDING = Question(
    "bleeding",
    Text("是否有大量出血？", "Is there heavy bleeding?"),
    raises={_YES: _A.CALL_120},
)
_SOMEONE_WITH = Question(
    "someone_with",
    Text("身边是否有人陪同？", "Is anyone with them?"),
    raises={_NO: _A.STAY_ON_LINE},
)
_DOOR_ACCESS = Question(
    "door_access",
    Text(
        "护理员到达后能否进门（住户能开门、有钥匙箱或邻居有钥匙）？",
        "Can the carer get in (resident opens, key box, neighbour with a key)?",
    ),
    raises={_NO: _A.ARRANGE_ENTRY, _UNKNOWN: _A.ARRANGE_ENTRY},
)
_CARE_NOTES = Question(
    "care_notes_read",
    Text("是否已查看住户的病史和护理备注？", "Have you read the resident's care notes?"),
    kind=Kind.CHECK,
)


SCRIPTS: dict[CallType, Script] = {
    CallType.EMERGENCY: Script(
        CallType.EMERGENCY,
        usual=(_A.SEND_CARER,),
        questions=(
            _ANSWERS_PHONE,
            _CONSCIOUS,
            _BREATHING,
            Question(
                "chest_or_stroke",
                Text(
                    "是否胸痛胸闷，或突然口齿不清、一侧手脚无力？",
                    "Chest pain, or sudden slurred speech or weakness on one side?",
                ),
                raises={_YES: _A.CALL_120},
            ),
            _BLEEDING,
            _SOMEONE_WITH,
            _DOOR_ACCESS,
            _CARE_NOTES,
        ),
    ),
    CallType.FALL: Script(
        CallType.FALL,
        usual=(_A.SEND_TWO_CARERS,),
        questions=(
            _ANSWERS_PHONE,
            _CONSCIOUS,
            Question(
                "head_injury",
                Text("是否有头部撞击？", "Did they hit their head?"),
                raises={_YES: _A.CALL_120},
            ),
            _BREATHING,
            Question(
                "severe_pain",
                Text(
                    "是否剧痛或肢体变形（疑似骨折）？",
                    "Severe pain or a limb out of shape (a possible fracture)?",
                ),
                raises={_YES: _A.CALL_120},
            ),
            _BLEEDING,
            Question(
                "can_get_up",
                Text("是否能自己起身？", "Can they get up by themselves?"),
            ),
            _SOMEONE_WITH,
            _DOOR_ACCESS,
            Question(
                "told_stay_still",
                Text(
                    "是否已告知住户不要勉强起身、注意保暖、等待护理员？",
                    "Told them not to force themselves up, keep warm and wait for the carers?",
                ),
                kind=Kind.CHECK,
            ),
        ),
    ),
    CallType.SERVICE_REQUEST: Script(
        CallType.SERVICE_REQUEST,
        usual=(_A.SEND_CARER,),
        questions=(
            _ANSWERS_PHONE,
            Question(
                "urgent_health",
                Text(
                    "是否有紧急的身体问题（胸痛、呼吸困难、大量出血）？",
                    "Is there an urgent health problem (chest pain, breathing, heavy bleeding)?",
                ),
                raises={_YES: _A.CALL_120},
            ),
            Question(
                "has_fallen",
                Text("是否摔倒或站不起来？", "Have they fallen, or can they not stand up?"),
                raises={_YES: _A.SEND_TWO_CARERS},
            ),
            _DOOR_ACCESS,
            Question(
                "need_noted",
                Text(
                    "是否已把住户的需求（取药、送餐、如厕协助等）写进备注？",
                    "Have you noted what they need (medicine, meals, help to the toilet)?",
                ),
                kind=Kind.CHECK,
            ),
        ),
    ),
    CallType.DEVICE_OFFLINE: Script(
        CallType.DEVICE_OFFLINE,
        usual=(_A.RING_HOUSEHOLD,),
        questions=(
            Question(
                "resident_well",
                Text("电话能否接通、住户是否平安？", "Did the resident answer, and are they well?"),
                raises={_NO: _A.SEND_CARER, _UNKNOWN: _A.SEND_CARER},
            ),
            Question(
                "power_on",
                Text(
                    "基站是否插着电、指示灯亮着？", "Is the base unit plugged in with its light on?"
                ),
                raises={_NO: _A.BOOK_DEVICE_VISIT},
            ),
            Question(
                "power_cut",
                Text("家中是否停电或断网？", "Is the power or the internet off at home?"),
                raises={_YES: _A.CALL_FAMILY},
            ),
            Question(
                "back_online",
                Text("设备是否已恢复在线？", "Is the device back online?"),
                kind=Kind.CHECK,
                raises={_NO: _A.BOOK_DEVICE_VISIT},
            ),
        ),
    ),
    CallType.LOW_BATTERY: Script(
        CallType.LOW_BATTERY,
        usual=(_A.RING_HOUSEHOLD,),
        questions=(
            Question(
                "resident_well",
                Text("电话能否接通、住户是否平安？", "Did the resident answer, and are they well?"),
                raises={_NO: _A.CALL_FAMILY, _UNKNOWN: _A.CALL_FAMILY},
            ),
            Question(
                "can_charge",
                Text(
                    "住户能否自己充电或更换电池？",
                    "Can the resident charge it or change the battery themselves?",
                ),
                raises={_NO: _A.BOOK_DEVICE_VISIT, _UNKNOWN: _A.BOOK_DEVICE_VISIT},
            ),
            Question(
                "charging_now",
                Text("设备是否已开始充电？", "Is the device charging now?"),
                kind=Kind.CHECK,
                raises={_NO: _A.BOOK_DEVICE_VISIT},
            ),
        ),
    ),
    CallType.DEVICE_CLOCK: Script(
        CallType.DEVICE_CLOCK,
        usual=(_A.RING_HOUSEHOLD,),
        questions=(
            Question(
                "resident_well",
                Text("电话能否接通、住户是否平安？", "Did the resident answer, and are they well?"),
                raises={_NO: _A.SEND_CARER, _UNKNOWN: _A.SEND_CARER},
            ),
            Question(
                "restarted",
                Text(
                    "基站是否已断电重启（拔下电源十秒再插上）？",
                    "Has the base unit been restarted (unplugged for ten seconds)?",
                ),
                raises={_NO: _A.BOOK_DEVICE_VISIT, _UNKNOWN: _A.BOOK_DEVICE_VISIT},
            ),
            Question(
                "clock_right",
                Text("重启后设备时间是否正确？", "Is the device's clock right after the restart?"),
                kind=Kind.CHECK,
                raises={_NO: _A.BOOK_DEVICE_VISIT},
            ),
        ),
    ),
    # Someone rang the centre's number: the operator is on the line with them already.
    CallType.VOICE: Script(
        CallType.VOICE,
        usual=(),
        questions=(
            Question(
                "caller_noted",
                Text(
                    "是否已记下来电人是谁、为何来电（住户、家属、邻居）？",
                    "Have you noted who is calling and why (resident, family, neighbour)?",
                ),
                kind=Kind.CHECK,
            ),
            Question(
                "urgent_health",
                Text(
                    "是否有紧急的身体问题（胸痛、呼吸困难、大量出血）？",
                    "Is there an urgent health problem (chest pain, breathing, heavy bleeding)?",
                ),
                raises={_YES: _A.CALL_120},
            ),
            Question(
                "has_fallen",
                Text("是否有人摔倒或站不起来？", "Has someone fallen, or can they not stand up?"),
                raises={_YES: _A.SEND_TWO_CARERS},
            ),
            Question(
                "needs_visit",
                Text("是否需要护理员上门？", "Does someone need a carer at the door?"),
                raises={_YES: _A.SEND_CARER},
            ),
        ),
    ),
}


@dataclass(frozen=True)
class Recommendation:
    """The next actions, most serious first; ``why`` names the questions that raised each
    (empty for the call type's usual action)."""

    actions: tuple[NextAction, ...]
    why: Mapping[NextAction, tuple[str, ...]]

    @property
    def first(self) -> NextAction:
        return self.actions[0]


def recommend(call_type: CallType, answers: Mapping[str, ScriptAnswer]) -> Recommendation:
    """What the answers so far point to (answers to unknown questions are ignored)."""
    script = SCRIPTS[call_type]
    raised: dict[NextAction, list[str]] = {action: [] for action in script.usual}
    for question in script.questions:
        answer = answers.get(question.id)
        action = None if answer is None else question.raises.get(answer)
        if action is not None:
            raised.setdefault(action, []).append(question.id)
    if NextAction.SEND_TWO_CARERS in raised and NextAction.SEND_CARER in raised:
        # Two carers include the one; the questions that asked for one still count.
        raised[NextAction.SEND_TWO_CARERS] += raised.pop(NextAction.SEND_CARER)
    actions = tuple(sorted(raised, key=SERIOUSNESS.index))
    return Recommendation(actions, {a: tuple(raised[a]) for a in actions})


_ANSWER_CODES = frozenset(a.value for a in ScriptAnswer)


def answered(history: list[tuple[str, str]]) -> dict[str, ScriptAnswer]:
    """The latest answer to each question, from ``(question, answer)`` pairs in the order
    they were recorded; pairs that are not answers (an old script's) are skipped."""
    latest: dict[str, ScriptAnswer] = {}
    for question, answer in history:
        if answer in _ANSWER_CODES:
            latest[question] = ScriptAnswer(answer)
    return latest
