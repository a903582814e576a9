"""Text messages the call centre sends, rendered from a kind and its facts.

Rendering is pure and table-tested; the outbox stores the rendered text, so what was
sent is exactly what the history shows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class MessageKind(enum.StrEnum):
    DISPATCH = "dispatch"  # to a carer: go to this household
    STAND_DOWN = "stand_down"  # to a carer: you are no longer needed on this call
    STATION_LEAD = "station_lead"  # to a station lead: a call of yours is escalating
    SUPERVISOR = "supervisor"  # to supervisors: a call is escalating
    FAMILY_DELAYED = "family_delayed"  # to the family: help is taking longer than it should
    EMERGENCY_SERVICES = "emergency_services"  # to supervisors: ring emergency services


@dataclass(frozen=True)
class Message:
    """What to say; ``facts`` fills the template."""

    kind: MessageKind
    facts: dict[str, str] = field(default_factory=dict)


_TEMPLATES: dict[str, dict[MessageKind, str]] = {
    "en": {
        MessageKind.DISPATCH: (
            "Call {call_ref} {call_type}: {household} {residents}, {address}. {access} "
            "Reply YES {call_ref} to accept, NO {call_ref} to decline."
        ),
        MessageKind.STAND_DOWN: "Call {call_ref}: stand down, you are no longer needed ({why}).",
        MessageKind.STATION_LEAD: "Call {call_ref} {call_type} at {household}: {why}.",
        MessageKind.SUPERVISOR: "Call {call_ref} {call_type} at {household}: {why}.",
        MessageKind.FAMILY_DELAYED: (
            "The call centre is handling an alarm from {household}; help is taking longer "
            "than planned. Please ring {desk_phone} if you can go or call."
        ),
        MessageKind.EMERGENCY_SERVICES: (
            "Call {call_ref} {call_type} at {household}, {address}: no carer on scene after "
            "{minutes} min. Ring emergency services (120) now."
        ),
    },
    "zh": {
        MessageKind.DISPATCH: (
            "呼叫{call_ref}（{call_type}）：{household} {residents}，{address}。{access} "
            "回复 YES {call_ref} 接单，NO {call_ref} 拒绝。"
        ),
        MessageKind.STAND_DOWN: "呼叫{call_ref}：无需前往（{why}）。",
        MessageKind.STATION_LEAD: "呼叫{call_ref}（{call_type}）{household}：{why}。",
        MessageKind.SUPERVISOR: "呼叫{call_ref}（{call_type}）{household}：{why}。",
        MessageKind.FAMILY_DELAYED: (
            "呼叫中心正在处理{household}的报警，救助比预期慢。如您能前往或联系老人，"
            "请致电{desk_phone}。"
        ),
        MessageKind.EMERGENCY_SERVICES: (
            "呼叫{call_ref}（{call_type}）{household}，{address}：{minutes}分钟仍无护理员到场，"
            "请立即拨打120。"
        ),
    },
}

CALL_TYPE_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "emergency": "EMERGENCY",
        "fall": "FALL",
        "service_request": "service request",
        "device_offline": "device offline",
        "low_battery": "low battery",
    },
    "zh": {
        "emergency": "紧急呼叫",
        "fall": "跌倒",
        "service_request": "服务请求",
        "device_offline": "设备离线",
        "low_battery": "电量低",
    },
}


class _Facts(dict[str, str]):
    # A missing fact renders as an empty string rather than failing a send at 3 a.m.
    def __missing__(self, key: str) -> str:
        return ""


def render(message: Message, language: str) -> str:
    """The text of ``message`` in ``language`` (English when we have no such language)."""
    templates = _TEMPLATES.get(language, _TEMPLATES["en"])
    names = CALL_TYPE_NAMES.get(language, CALL_TYPE_NAMES["en"])
    facts = _Facts(message.facts)
    if "call_type" in facts:
        facts["call_type"] = names.get(facts["call_type"], facts["call_type"])
    return " ".join(templates[message.kind].format_map(facts).split())
