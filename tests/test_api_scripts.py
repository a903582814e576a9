"""Guided handling through the API, on SQLite and (with the DSN) PostgreSQL: the call's
handling script in its detail, answers recorded by its owner (POST
/api/calls/{id}/script-answers) and refused to anyone else, the recommendation that
follows them, and resolve's reason rule (422 reason_needed)."""

from __future__ import annotations

from typing import Any

from callcenter.domain.events import EventKind
from tests.api_support import Api


def _script(detail: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The call's answers by question, and its recommended actions in order."""
    script = detail["script"]
    answers = {q["id"]: q["answer"] for q in script["questions"]}
    return answers, [r["action"] for r in script["recommendation"]]


async def test_a_falls_script_is_answered_by_its_owner_and_moves_the_recommendation(
    api: Api,
) -> None:
    """Test that a fall's detail carries its script (two carers recommended, no answers),
    that its operator's answers are kept in the history and put 120 first after a head
    injury, that another operator is refused as for any desk work on a call they do not
    own, and a supervisor may answer."""
    call_id = await api.press("H0001", EventKind.FALL_DETECTED)
    detail = await api.call(call_id)
    answers, actions = _script(detail)
    assert {"conscious", "head_injury", "can_get_up", "breathing"} <= set(answers)
    assert set(answers.values()) == {None}
    assert actions == ["send_two_carers"]
    head = next(q for q in detail["script"]["questions"] if q["id"] == "head_injury")
    assert head["text"] == {"zh": "是否有头部撞击？", "en": "Did they hit their head?"}
    assert detail["closing"]["carer_at_door"] is False
    assert "taken_to_hospital" in detail["closing"]["reason_needed"]

    url = f"/api/calls/{call_id}/script-answers"
    first = await api.post(url, {"question": "conscious", "answer": "yes"})
    assert first.status == 200, first.body
    assert first.body["owner"] == "operator:li.na"  # desk work takes the unowned call
    hurt = await api.post(url, {"question": "head_injury", "answer": "yes"})
    assert hurt.status == 200, hurt.body
    entry = hurt.body["history"][-1]
    assert (entry["action"], entry["actor"]) == ("script_answer", "operator:li.na")
    assert entry["detail"]["question"] == "head_injury"
    assert entry["detail"]["answer"] == "yes"
    assert entry["detail"]["raises"] == "call_120"
    answers, actions = _script(hurt.body)
    assert answers["conscious"] == "yes" and answers["head_injury"] == "yes"
    assert actions == ["call_120", "send_two_carers"]

    refused = await api.post(url, {"question": "head_injury", "answer": "no"}, who="wang.wei")
    assert refused.status == 409, refused.body
    assert (refused.body["error"], refused.body["owner"]) == ("not_owner", "operator:li.na")
    after = await api.call(call_id)
    assert _script(after)[0]["head_injury"] == "yes"
    assert [h["action"] for h in after["history"]].count("script_answer") == 2

    corrected = await api.post(url, {"question": "head_injury", "answer": "no"}, who="zhao.min")
    assert corrected.status == 200, corrected.body
    assert corrected.body["history"][-1]["actor"] == "supervisor:zhao.min"
    assert _script(corrected.body)[1] == ["send_two_carers"]


async def test_bad_answers_are_refused_with_what_to_send(api: Api) -> None:
    """Test that a question the call type's script does not have is a 422 naming the
    questions it has, a wrong answer a 400 naming the answers, and a closed call a 409;
    nothing is written for any of them."""
    call_id = await api.press("H0002")
    url = f"/api/calls/{call_id}/script-answers"
    unknown = await api.post(url, {"question": "can_charge", "answer": "yes"})
    assert unknown.status == 422, unknown.body
    assert unknown.body["error"] == "unknown_question"
    assert "breathing" in unknown.body["message"]
    wrong = await api.post(url, {"question": "breathing", "answer": "maybe"})
    assert wrong.status == 400, wrong.body
    assert "yes" in wrong.body["message"] and "unknown" in wrong.body["message"]
    missing = await api.post(url, {"answer": "no"})
    assert missing.status == 400 and "question" in missing.body["message"]
    assert "script_answer" not in [h["action"] for h in (await api.call(call_id))["history"]]

    closed = await api.post(
        f"/api/calls/{call_id}/resolve", {"outcome": "family_attended", "note": "son is there"}
    )
    assert closed.status == 200, closed.body
    late = await api.post(url, {"question": "breathing", "answer": "yes"})
    assert late.status == 409, late.body


async def test_resolving_an_alarm_nobody_reached_needs_a_reason(api: Api) -> None:
    """Test that taking an emergency no carer reached to hospital, or calling it a false
    alarm, without a reason is a 422 saying what to do and leaves the call open; with a
    reason it closes and the reason is in the history; "family attended" needs none."""
    call_id = await api.press("H0003")
    url = f"/api/calls/{call_id}/resolve"
    for outcome in ("taken_to_hospital", "false_alarm", "emergency_services"):
        for body in ({"outcome": outcome}, {"outcome": outcome, "reason": "  "}):
            refused = await api.post(url, body)
            assert refused.status == 422, refused.body
            assert refused.body["error"] == "reason_needed"
            assert "give a reason" in refused.body["message"]
            assert outcome in refused.body["message"]
    detail = await api.call(call_id)
    assert detail["state"] != "resolved" and detail["closed_at"] is None

    done = await api.post(
        url, {"outcome": "taken_to_hospital", "reason": "120 came first and took him to Ruijin"}
    )
    assert done.status == 200, done.body
    assert done.body["outcome"] == "taken_to_hospital"
    assert done.body["history"][-1]["detail"] == {
        "outcome": "taken_to_hospital",
        "reason": "120 came first and took him to Ruijin",
    }

    family = await api.press("H0004")
    quiet = await api.post(f"/api/calls/{family}/resolve", {"outcome": "family_attended"})
    assert quiet.status == 200, quiet.body


async def test_a_carer_at_the_door_needs_no_reason(api: Api) -> None:
    """Test that once the paged carer is on scene the call closes as taken to hospital
    without a reason, and the detail said beforehand that none was needed."""
    call_id = await api.press("H0005")
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    for status in ("accepted", "on_the_way", "on_scene"):
        moved = await api.post(f"/api/calls/{call_id}/carers/{carer}/status", {"status": status})
        assert moved.status == 200, moved.body
    closing = moved.body["closing"]
    assert closing["carer_at_door"] is True and closing["reason_needed"] == []
    assert set(closing["confirm"]) == {"taken_to_hospital", "emergency_services", "false_alarm"}
    done = await api.post(f"/api/calls/{call_id}/resolve", {"outcome": "emergency_services"})
    assert done.status == 200, done.body
    assert done.body["outcome"] == "emergency_services"
