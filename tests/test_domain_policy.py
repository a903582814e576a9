"""Escalation policies (domain/policy.py) and message rendering (domain/messages.py)."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.domain.call_types import ALARM_TYPES, PRIORITY, CallType
from callcenter.domain.events import RAISED_BY
from callcenter.domain.messages import (
    CALL_TYPE_NAMES,
    CARE_NOTES_IN_SMS,
    Message,
    MessageKind,
    ResidentNote,
    Trip,
    render,
)
from callcenter.domain.policy import (
    DEFAULT_POLICIES,
    Action,
    CountedFrom,
    Milestone,
    Policy,
    PolicyBook,
    Step,
)

# --- policies ----------------------------------------------------------------------


@pytest.mark.parametrize("call_type", list(CallType))
def test_every_call_type_has_a_default_policy_and_priority(call_type: CallType) -> None:
    """Test that every kind of call has a default policy and a priority from 1 to 3."""
    assert isinstance(DEFAULT_POLICIES[call_type], Policy)
    assert PRIORITY[call_type] in (1, 2, 3)
    # A voice call is raised by a call to the centre's number, not by a device.
    assert call_type in RAISED_BY.values() or call_type is CallType.VOICE


def test_alarm_types_are_the_ones_people_raise() -> None:
    """Test that presses of emergencies, falls and service requests are alarm calls."""
    alarms = {CallType.EMERGENCY, CallType.FALL, CallType.SERVICE_REQUEST}
    assert alarms == ALARM_TYPES
    assert RAISED_BY["emergency_press"] is CallType.EMERGENCY


@pytest.mark.parametrize("call_type", list(CallType))
def test_policy_json_round_trip(call_type: CallType) -> None:
    """Test that every default policy survives to_json, real JSON text and from_json."""
    policy = DEFAULT_POLICIES[call_type]
    stored = json.loads(json.dumps(policy.to_json()))
    assert Policy.from_json(stored) == policy
    assert Policy.from_json(stored).to_json() == policy.to_json()


def test_policy_json_shape() -> None:
    """Test that the stored JSON names every field in plain values."""
    stored = DEFAULT_POLICIES[CallType.FALL].to_json()
    assert stored["carers_required"] == 2
    assert stored["skills"] == ["lift"]
    assert stored["auto_dispatch"] is True
    assert stored["cancel_grace_s"] == 60.0
    assert stored["steps"][2] == {
        "name": "unaccepted",
        "after_s": 120,
        "unless": "accepted",
        "counted_from": "dispatched",
        "actions": ["redispatch", "notify_station_lead"],
    }


def test_custom_policy_round_trip() -> None:
    """Test that a hand-written policy with every action and milestone round-trips."""
    policy = Policy(
        auto_dispatch=False,
        carers_required=3,
        skills=("lift", "nurse"),
        cancel_grace_s=12.5,
        steps=(
            Step(
                "a",
                0,
                Milestone.ACKNOWLEDGED,
                tuple(a for a in Action if a is not Action.RING_CARER),
            ),
            Step("b", 1.5, Milestone.ACCEPTED, (Action.REDISPATCH,), CountedFrom.DISPATCHED),
            Step("r", 0.5, Milestone.ACCEPTED, (Action.RING_CARER,), CountedFrom.DISPATCHED),
            Step("c", 60, Milestone.ON_SCENE, ()),
            Step("d", 3600, Milestone.CLOSED, (Action.NOTIFY_FAMILY,)),
        ),
    )
    assert Policy.from_json(json.loads(json.dumps(policy.to_json()))) == policy


def step_json(**changes: Any) -> dict[str, Any]:
    """One valid stored step, with ``changes``."""
    return {
        "name": "unacknowledged",
        "after_s": 30,
        "unless": "acknowledged",
        "counted_from": "opened",
        "actions": ["alert_operators"],
        **changes,
    }


def policy_json(steps: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """A valid stored policy with these steps, with ``changes``."""
    return {
        "auto_dispatch": True,
        "carers_required": 1,
        "skills": [],
        "cancel_grace_s": 60,
        "steps": steps,
        **changes,
    }


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(
            lambda: Step("late", -1, Milestone.ON_SCENE, ()),
            "must not be negative",
            id="negative-after",
        ),
        pytest.param(
            lambda: Step(
                "late", 60, Milestone.ON_SCENE, (Action.REDISPATCH,), CountedFrom.DISPATCHED
            ),
            "unless = 'accepted'",
            id="dispatched-step-not-waiting-for-accepted",
        ),
        pytest.param(
            lambda: Policy(
                auto_dispatch=True,
                steps=(
                    Step("same", 10, Milestone.ACKNOWLEDGED, ()),
                    Step("same", 20, Milestone.ON_SCENE, ()),
                ),
            ),
            "unique",
            id="duplicate-step-names",
        ),
        pytest.param(
            lambda: Policy(auto_dispatch=True, steps=(), carers_required=0),
            "at least 1",
            id="no-carers-required",
        ),
        pytest.param(
            lambda: Policy(auto_dispatch=True, steps=(), carers_required=-2),
            "at least 1",
            id="negative-carers-required",
        ),
        pytest.param(
            lambda: Policy.from_json(policy_json([step_json(after_s=-5)])),
            "must not be negative",
            id="stored-negative-after",
        ),
        pytest.param(
            lambda: Policy.from_json(
                policy_json([step_json(counted_from="dispatched", unless="on_scene")])
            ),
            "unless = 'accepted'",
            id="stored-dispatched-step",
        ),
        pytest.param(
            lambda: Policy.from_json(policy_json([step_json(), step_json()])),
            "unique",
            id="stored-duplicate-names",
        ),
        pytest.param(
            lambda: Policy.from_json(policy_json([], carers_required=0)),
            "at least 1",
            id="stored-no-carers",
        ),
        pytest.param(
            lambda: Policy.from_json(policy_json([step_json(unless="tea_time")])),
            "tea_time",
            id="stored-unknown-milestone",
        ),
        pytest.param(
            lambda: Policy.from_json(policy_json([step_json(actions=["ring_the_bell"])])),
            "ring_the_bell",
            id="stored-unknown-action",
        ),
    ],
)
def test_invalid_policies_are_refused(build: Any, message: str) -> None:
    """Test that an invalid step or policy raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        build()


def test_step_lookup() -> None:
    """Test that a policy finds its steps by name and raises KeyError for others."""
    policy = DEFAULT_POLICIES[CallType.EMERGENCY]
    assert policy.step("not_on_scene").after_s == 15 * 60
    with pytest.raises(KeyError):
        policy.step("tea_time")


@pytest.mark.parametrize(
    ("counted_from", "actions"),
    [
        (CountedFrom.OPENED, (Action.RING_CARER,)),
        (CountedFrom.DISPATCHED, (Action.RING_CARER, Action.NOTIFY_STATION_LEAD)),
    ],
)
def test_ring_carer_is_alone_in_a_step_counted_from_a_dispatch(
    counted_from: CountedFrom, actions: tuple[Action, ...]
) -> None:
    """Test that ring_carer is refused outside a step counted from a dispatch, or beside
    other actions (it neither releases the carer nor tells anyone else)."""
    with pytest.raises(ValueError, match="ring_carer rings the carer of one dispatch"):
        Step("ring", 60, Milestone.ACCEPTED, actions, counted_from)


def test_policy_book_overrides_and_falls_back() -> None:
    """Test that the book uses a district's own policy where set and the default elsewhere."""
    gentle = Policy(auto_dispatch=False, steps=())
    book = PolicyBook({CallType.LOW_BATTERY: gentle})
    assert book.for_type(CallType.LOW_BATTERY) is gentle
    assert book.for_type(CallType.EMERGENCY) is DEFAULT_POLICIES[CallType.EMERGENCY]
    assert PolicyBook().for_type(CallType.FALL) is DEFAULT_POLICIES[CallType.FALL]


# --- messages ----------------------------------------------------------------------


FACTS = {
    "call_ref": "812",
    "carer": "C003",
    "call_type": "fall",
    "household": "H0042",
    "residents": "Mrs Wang (91)",
    "resident": "Mrs Wang",
    "address": "3 Lotus Road",
    "access": "Key with neighbour.",
    "why": "no carer on scene after 15 min",
    "desk_phone": "+862155550000",
    "minutes": "30",
    "outcome": "helped_at_home",
    "link": "https://desk.example.org/c/AAAAAQAAAAJpJFaAx3yGGAuxNk7B",
}

EXPECTED = {
    ("en", MessageKind.DISPATCH): (
        "Call 812 FALL: H0042 Mrs Wang (91), 3 Lotus Road. Key with neighbour. "
        "Reply 812a accept, 812d decline, 812s on scene, 812r done. "
        "https://desk.example.org/c/AAAAAQAAAAJpJFaAx3yGGAuxNk7B"
    ),
    ("en", MessageKind.STAND_DOWN): (
        "Call 812: stand down, you are no longer needed (no carer on scene after 15 min)."
    ),
    ("en", MessageKind.STATION_LEAD): "Call 812 FALL at H0042: no carer on scene after 15 min.",
    ("en", MessageKind.SUPERVISOR): "Call 812 FALL at H0042: no carer on scene after 15 min.",
    ("en", MessageKind.FAMILY_DELAYED): (
        "The call centre is handling an alarm from H0042; help is taking longer than planned. "
        "Please ring +862155550000 if you can go or call."
    ),
    ("en", MessageKind.EMERGENCY_SERVICES): (
        "Call 812 FALL at H0042, 3 Lotus Road: no carer on scene after 30 min. "
        "Ring emergency services (120) now."
    ),
    ("en", MessageKind.REPLY_ACCEPTED): (
        "Accepted call 812 for H0042. Reply 812s on scene, 812r when done."
    ),
    ("en", MessageKind.REPLY_DECLINED): (
        "Declined call 812 for H0042; someone else is being asked."
    ),
    ("en", MessageKind.REPLY_ON_THE_WAY): (
        "Call 812: on the way to H0042, noted. Reply 812s on scene."
    ),
    ("en", MessageKind.REPLY_ON_SCENE): "Call 812: on scene at H0042, noted. Reply 812r when done.",
    ("en", MessageKind.REPLY_RESOLVED): "Call 812 for H0042 closed: helped at home. Thank you.",
    ("en", MessageKind.REPLY_REVIEW): (
        "Call 812 for H0042: reported done (helped at home); the desk will review it. Thank you."
    ),
    ("en", MessageKind.REPLY_CLOSED): "Call 812 is closed; nothing was changed.",
    ("en", MessageKind.REPLY_TAKEN): "Call 812 was already taken by C003; nothing was changed.",
    ("en", MessageKind.REPLY_PASSED_ON): (
        "Call 812 has been passed to C003; you are no longer on it."
    ),
    ("en", MessageKind.REPLY_NOT_YOURS): "Call 812 is not yours; nothing was changed.",
    ("en", MessageKind.REPLY_REFUSED): "Call 812: not done, no carer on scene after 15 min.",
    ("en", MessageKind.REPLY_NO_OPEN_CALL): (
        "You have no open call to answer. Reply with the call number and a letter, e.g. 12a."
    ),
    ("en", MessageKind.REPLY_NOT_UNDERSTOOD): (
        "Not understood. Reply the call number and a letter: 812a accept, 812d decline, "
        "812o on the way, 812s on scene, 812r done."
    ),
    ("en", MessageKind.REPLY_UNKNOWN_SENDER): (
        "This number is not registered with the call centre. Please ring your station."
    ),
    ("en", MessageKind.REPLY_OPTED_OUT): (
        "You will get no more texts from the call centre, dispatches included. "
        "Reply START to get them again."
    ),
    ("en", MessageKind.REPLY_OPTED_IN): "Texts from the call centre are back on.",
    ("en", MessageKind.VOICE_PAGE): (
        "This is the call centre. Call 812, FALL, at H0042: Mrs Wang (91), 3 Lotus Road. "
        "Key with neighbour. Press 1 to accept, press 2 to decline."
    ),
    ("en", MessageKind.VOICE_ACCEPTED): (
        "Call 812 accepted. Please go to H0042 now. Thank you, goodbye."
    ),
    ("en", MessageKind.VOICE_DECLINED): (
        "Call 812 declined; someone else is being asked. Goodbye."
    ),
    ("en", MessageKind.VOICE_NO_KEY): "No answer was pressed.",
    ("en", MessageKind.VOICE_GOODBYE): (
        "No answer was pressed. Please answer the text message or ring the desk. Goodbye."
    ),
    ("en", MessageKind.VOICE_ALREADY_YOURS): (
        "You have accepted call 812 already. Thank you, goodbye."
    ),
    ("en", MessageKind.VOICE_NOT_NEEDED): (
        "Call 812 no longer needs you; nothing to do. Thank you, goodbye."
    ),
    ("en", MessageKind.INBOUND_WHISPER): "Call 812: H0042 is calling the centre.",
    ("en", MessageKind.INBOUND_TAKEN): "Call 812 was picked up by . Goodbye.",
    ("en", MessageKind.INBOUND_NOBODY): (
        "This is the call centre. Nobody can take your call right now; the desk has "
        "your call and will ring you back. In an emergency, call 120."
    ),
    ("en", MessageKind.VOICE_FAMILY): (
        "Hello, this is the call centre. FALL alarm from H0042, Mrs Wang (91), 3 Lotus Road. "
        "If you can go or call them, please ring +862155550000. "
        "Press 1 to confirm you heard this."
    ),
    ("en", MessageKind.VOICE_FAMILY_HEARD): "Thank you, your confirmation is noted. Goodbye.",
    ("en", MessageKind.VOICE_FAMILY_GOODBYE): (
        "No key was pressed. The call centre will try another family contact. Goodbye."
    ),
    ("en", MessageKind.VOICE_FAMILY_NOT_NEEDED): (
        "This is the call centre. Help has reached your relative, or the alarm is over; "
        "nothing to do. Thank you, goodbye."
    ),
    ("en", MessageKind.VOICE_BRIDGE): "Call 812: ringing household H0042, please hold.",
    ("en", MessageKind.VOICE_BRIDGE_NONE): (
        "None of the numbers of household H0042 answered. Goodbye."
    ),
    ("en", MessageKind.VOICE_BRIDGE_WELFARE): (
        "Welfare call: ringing Mrs Wang at household H0042, please hold."
    ),
}


@pytest.mark.parametrize("kind", list(MessageKind))
def test_render_english(kind: MessageKind) -> None:
    """Test that every kind of message renders in English from its facts."""
    assert render(Message(kind, FACTS), "en") == EXPECTED[("en", kind)]


@pytest.mark.parametrize(
    ("kind", "pieces"),
    [
        (
            MessageKind.DISPATCH,
            [
                "呼叫812",
                "跌倒",
                "H0042",
                "3 Lotus Road",
                "812a",
                "812d",
                "812r",
                "完成。https://desk.example.org/c/",
            ],
        ),
        (MessageKind.STAND_DOWN, ["呼叫812", "无需前往", "no carer on scene after 15 min"]),
        (MessageKind.STATION_LEAD, ["呼叫812", "跌倒", "H0042"]),
        (MessageKind.SUPERVISOR, ["呼叫812", "跌倒", "H0042"]),
        (MessageKind.FAMILY_DELAYED, ["H0042", "+862155550000"]),
        (MessageKind.EMERGENCY_SERVICES, ["呼叫812", "跌倒", "30分钟", "120"]),
        (MessageKind.REPLY_ACCEPTED, ["已接单", "呼叫812", "H0042", "812s", "812r"]),
        (MessageKind.REPLY_DECLINED, ["已拒绝", "呼叫812", "H0042"]),
        (MessageKind.REPLY_ON_THE_WAY, ["呼叫812", "前往", "H0042"]),
        (MessageKind.REPLY_ON_SCENE, ["呼叫812", "到达", "H0042", "812r"]),
        (MessageKind.REPLY_RESOLVED, ["呼叫812", "H0042", "结案：居家处理"]),
        (MessageKind.REPLY_REVIEW, ["呼叫812", "H0042", "已报告完成（居家处理）", "复核"]),
        (MessageKind.REPLY_CLOSED, ["呼叫812", "已结束"]),
        (MessageKind.REPLY_TAKEN, ["呼叫812", "C003", "接单"]),
        (MessageKind.REPLY_PASSED_ON, ["呼叫812", "C003", "转派"]),
        (MessageKind.REPLY_NOT_YOURS, ["呼叫812", "不是派给您的"]),
        (MessageKind.REPLY_REFUSED, ["呼叫812", "未执行", "no carer on scene after 15 min"]),
        (MessageKind.REPLY_NO_OPEN_CALL, ["没有待处理的呼叫", "12a"]),
        (MessageKind.REPLY_NOT_UNDERSTOOD, ["无法识别", "812a", "812d", "812o", "812s", "812r"]),
        (MessageKind.REPLY_UNKNOWN_SENDER, ["未在呼叫中心登记"]),
        (MessageKind.REPLY_OPTED_OUT, ["不再收到", "START"]),
        (MessageKind.REPLY_OPTED_IN, ["恢复"]),
        (MessageKind.VOICE_FAMILY, ["H0042", "跌倒报警", "请致电+862155550000", "按1确认收到"]),
        (MessageKind.VOICE_FAMILY_HEARD, ["已确认收到"]),
        (MessageKind.VOICE_FAMILY_GOODBYE, ["没有收到按键", "其他家属"]),
        (MessageKind.VOICE_FAMILY_NOT_NEEDED, ["护理员已到达", "无需您处理"]),
        (MessageKind.VOICE_BRIDGE, ["呼叫812", "正在拨打住户H0042", "请稍候"]),
        (MessageKind.VOICE_BRIDGE_NONE, ["住户H0042的电话都无人接听"]),
        (MessageKind.VOICE_BRIDGE_WELFARE, ["关怀电话", "住户H0042的Mrs Wang"]),
    ],
)
def test_render_chinese(kind: MessageKind, pieces: list[str]) -> None:
    """Test that every kind of message renders in Chinese with the facts and the zh type."""
    text = render(Message(kind, FACTS), "zh")
    for piece in pieces:
        assert piece in text
    assert "FALL" not in text
    assert "{" not in text and "}" not in text
    assert text != render(Message(kind, FACTS), "en")


RESIDENTS = (
    ResidentNote("王秀英", "wheelchair", "糖尿病，胰岛素在冰箱", birth_year=1938).aged(2026),
    ResidentNote("李建国", "independent", "", birth_year=1940).aged(2026),
)


def test_dispatch_page_names_age_mobility_care_and_trip_in_english() -> None:
    """Test that a page tells the carer each resident's age, mobility and care notes, and
    how far away they are, besides the address and how to answer."""
    message = Message(MessageKind.DISPATCH, FACTS, RESIDENTS, Trip(1234.0, 370.0))
    assert render(message, "en") == (
        "Call 812 FALL: H0042 王秀英 (88, wheelchair; 糖尿病，胰岛素在冰箱); 李建国 (86), "
        "3 Lotus Road. Key with neighbour. About 6 min away (1.2 km). "
        "Reply 812a accept, 812d decline, 812s on scene, 812r done. "
        "https://desk.example.org/c/AAAAAQAAAAJpJFaAx3yGGAuxNk7B"
    )


def test_dispatch_page_in_chinese() -> None:
    """Test the Chinese page: ages in 岁, mobility in Chinese, distance and minutes."""
    message = Message(MessageKind.DISPATCH, FACTS, RESIDENTS, Trip(1234.0, 370.0))
    text = render(message, "zh")
    assert "王秀英（88岁，坐轮椅；糖尿病，胰岛素在冰箱）；李建国（86岁）" in text
    assert "距您约1.2公里，约6分钟。" in text
    assert "wheelchair" not in text


def test_long_care_notes_are_cut_in_the_page() -> None:
    """Test that a long care note is shortened with an ellipsis, keeping the page short."""
    note = ResidentNote("Mrs Wang", "bedbound", "x" * 200)
    text = render(Message(MessageKind.DISPATCH, FACTS, (note,)), "en")
    assert "Mrs Wang (bedbound; " + "x" * (CARE_NOTES_IN_SMS - 1) + "…)" in text
    assert "x" * CARE_NOTES_IN_SMS not in text


def test_unknown_birth_year_or_mobility_leaves_them_out() -> None:
    """Test that a resident without a known age or mobility is named alone."""
    assert ResidentNote("Mr Li", birth_year=None).aged(2026).age is None
    assert ResidentNote("Mr Li", birth_year=2030).aged(2026).age is None
    note = ResidentNote("Mr Li", "unknown_value")
    assert "Mr Li," in render(Message(MessageKind.DISPATCH, FACTS, (note,)), "en")


def test_a_nearby_carer_is_at_least_one_minute_away() -> None:
    """Test that a very short trip reads "about 1 min", never "0 min"."""
    text = render(Message(MessageKind.DISPATCH, FACTS, trip=Trip(20.0, 5.0)), "en")
    assert "About 1 min away (0.0 km)." in text


@pytest.mark.parametrize("kind", list(MessageKind))
@pytest.mark.parametrize("language", ["fr", "", "EN", "zh-Hant"])
def test_unknown_language_falls_back_to_english(kind: MessageKind, language: str) -> None:
    """Test that a language we have no templates for gets the English text."""
    assert render(Message(kind, FACTS), language) == EXPECTED[("en", kind)]


@pytest.mark.parametrize(
    ("kind", "language", "expected"),
    [
        (MessageKind.STAND_DOWN, "en", "Call : stand down, you are no longer needed ()."),
        (MessageKind.STATION_LEAD, "en", "Call at : ."),
        (MessageKind.STAND_DOWN, "zh", "呼叫：无需前往（）。"),
        (
            MessageKind.DISPATCH,
            "en",
            "Call : , . Reply a accept, d decline, s on scene, r done.",
        ),
    ],
)
def test_missing_facts_render_empty(kind: MessageKind, language: str, expected: str) -> None:
    """Test that a message with no facts renders the fixed text, never failing a send."""
    assert render(Message(kind), language) == expected


def test_missing_access_notes_leave_no_double_space() -> None:
    """Test that an empty fact does not leave a run of spaces in the text."""
    facts = {**FACTS, "access": ""}
    text = render(Message(MessageKind.DISPATCH, facts), "en")
    assert "  " not in text
    assert "3 Lotus Road. Reply 812a" in text


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("call_type", list(CallType))
def test_call_types_have_names_in_each_language(language: str, call_type: CallType) -> None:
    """Test that every call type is named in the message language, not by its code."""
    name = CALL_TYPE_NAMES[language][call_type.value]
    text = render(Message(MessageKind.SUPERVISOR, {"call_type": call_type.value}), language)
    assert name in text


def test_unknown_call_type_is_shown_as_given() -> None:
    """Test that a call type with no name in the table is shown as it came."""
    text = render(Message(MessageKind.SUPERVISOR, {"call_type": "smoke_alarm"}), "en")
    assert "smoke_alarm" in text


def test_render_does_not_change_the_message() -> None:
    """Test that rendering leaves the message's facts as they were (they are stored)."""
    message = Message(MessageKind.SUPERVISOR, dict(FACTS))
    render(message, "zh")
    assert message.facts == FACTS


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(list(MessageKind)),
    language=st.sampled_from(["en", "zh", "xx"]),
    facts=st.dictionaries(
        st.sampled_from([*FACTS, "unused"]),
        st.text(alphabet=string.ascii_letters + string.digits + " {}:", max_size=20),
    ),
)
def test_render_never_fails(kind: MessageKind, language: str, facts: dict[str, str]) -> None:
    """Test that any subset of facts, even with braces in them, renders without error."""
    text = render(Message(kind, facts), language)
    assert text == text.strip()
    assert "  " not in text
    shows_why = {MessageKind.STAND_DOWN, MessageKind.STATION_LEAD, MessageKind.SUPERVISOR}
    if kind in shows_why and "why" in facts:
        assert " ".join(facts["why"].split()) in text


@pytest.mark.parametrize(
    ("language", "outcome", "said"),
    [
        ("en", "taken_to_hospital", "closed: taken to hospital."),
        ("zh", "false_alarm", "已结案：误报。"),
        ("en", "something_new", "closed: something_new."),
    ],
)
def test_a_closing_confirmation_names_the_outcome(language: str, outcome: str, said: str) -> None:
    """Test that the carer's confirmation of a closed call says the outcome they chose,
    in their language (a code we have no name for is shown as it is)."""
    text = render(Message(MessageKind.REPLY_RESOLVED, {**FACTS, "outcome": outcome}), language)
    assert said in text
