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
    # Answers to a carer's SMS reply (see domain/replies.py), sent back at once.
    REPLY_ACCEPTED = "reply_accepted"
    REPLY_DECLINED = "reply_declined"
    REPLY_ON_THE_WAY = "reply_on_the_way"
    REPLY_ON_SCENE = "reply_on_scene"
    REPLY_RESOLVED = "reply_resolved"
    REPLY_CLOSED = "reply_closed"  # refused: the call is over
    REPLY_TAKEN = "reply_taken"  # refused: another carer took it
    REPLY_PASSED_ON = "reply_passed_on"  # refused: the carer was replaced
    REPLY_NOT_YOURS = "reply_not_yours"  # refused: the carer was never on it
    REPLY_REFUSED = "reply_refused"  # refused by the desk's rules, with its reason
    REPLY_NO_OPEN_CALL = "reply_no_open_call"  # a bare code with nothing to answer
    REPLY_NOT_UNDERSTOOD = "reply_not_understood"
    REPLY_UNKNOWN_SENDER = "reply_unknown_sender"
    REPLY_OPTED_OUT = "reply_opted_out"
    REPLY_OPTED_IN = "reply_opted_in"


@dataclass(frozen=True)
class Message:
    """What to say; ``facts`` fills the template."""

    kind: MessageKind
    facts: dict[str, str] = field(default_factory=dict)


_TEMPLATES: dict[str, dict[MessageKind, str]] = {
    "en": {
        MessageKind.DISPATCH: (
            "Call {call_ref} {call_type}: {household} {residents}, {address}. {access} "
            "Reply {call_ref}a accept, {call_ref}d decline, {call_ref}s on scene, "
            "{call_ref}r done."
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
        MessageKind.REPLY_ACCEPTED: (
            "Accepted call {call_ref} for {household}. Reply {call_ref}s on scene, "
            "{call_ref}r when done."
        ),
        MessageKind.REPLY_DECLINED: (
            "Declined call {call_ref} for {household}; someone else is being asked."
        ),
        MessageKind.REPLY_ON_THE_WAY: (
            "Call {call_ref}: on the way to {household}, noted. Reply {call_ref}s on scene."
        ),
        MessageKind.REPLY_ON_SCENE: (
            "Call {call_ref}: on scene at {household}, noted. Reply {call_ref}r when done."
        ),
        MessageKind.REPLY_RESOLVED: (
            "Call {call_ref} for {household} closed: helped at home. Thank you."
        ),
        MessageKind.REPLY_CLOSED: "Call {call_ref} is closed; nothing was changed.",
        MessageKind.REPLY_TAKEN: (
            "Call {call_ref} was already taken by {carer}; nothing was changed."
        ),
        MessageKind.REPLY_PASSED_ON: (
            "Call {call_ref} has been passed to {carer}; you are no longer on it."
        ),
        MessageKind.REPLY_NOT_YOURS: "Call {call_ref} is not yours; nothing was changed.",
        MessageKind.REPLY_REFUSED: "Call {call_ref}: not done, {why}.",
        MessageKind.REPLY_NO_OPEN_CALL: (
            "You have no open call to answer. Reply with the call number and a letter, e.g. 12a."
        ),
        MessageKind.REPLY_NOT_UNDERSTOOD: (
            "Not understood. Reply the call number and a letter: {call_ref}a accept, "
            "{call_ref}d decline, {call_ref}o on the way, {call_ref}s on scene, "
            "{call_ref}r done."
        ),
        MessageKind.REPLY_UNKNOWN_SENDER: (
            "This number is not registered with the call centre. Please ring your station."
        ),
        MessageKind.REPLY_OPTED_OUT: (
            "You will get no more texts from the call centre, dispatches included. "
            "Reply START to get them again."
        ),
        MessageKind.REPLY_OPTED_IN: "Texts from the call centre are back on.",
    },
    "zh": {
        MessageKind.DISPATCH: (
            "呼叫{call_ref}（{call_type}）：{household} {residents}，{address}。{access} "
            "回复 {call_ref}a 接单，{call_ref}d 拒绝，{call_ref}s 到达，{call_ref}r 完成。"
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
        MessageKind.REPLY_ACCEPTED: (
            "已接单：呼叫{call_ref}（{household}）。到达回复{call_ref}s，完成回复{call_ref}r。"
        ),
        MessageKind.REPLY_DECLINED: "已拒绝呼叫{call_ref}（{household}），将另派他人。",
        MessageKind.REPLY_ON_THE_WAY: (
            "呼叫{call_ref}：已记录您正前往{household}。到达回复{call_ref}s。"
        ),
        MessageKind.REPLY_ON_SCENE: (
            "呼叫{call_ref}：已记录您到达{household}。完成回复{call_ref}r。"
        ),
        MessageKind.REPLY_RESOLVED: "呼叫{call_ref}（{household}）已结案：居家处理。谢谢！",
        MessageKind.REPLY_CLOSED: "呼叫{call_ref}已结束，未作更改。",
        MessageKind.REPLY_TAKEN: "呼叫{call_ref}已由{carer}接单，未作更改。",
        MessageKind.REPLY_PASSED_ON: "呼叫{call_ref}已转派给{carer}，您无需前往。",
        MessageKind.REPLY_NOT_YOURS: "呼叫{call_ref}不是派给您的，未作更改。",
        MessageKind.REPLY_REFUSED: "呼叫{call_ref}：未执行（{why}）。",
        MessageKind.REPLY_NO_OPEN_CALL: "您目前没有待处理的呼叫。请回复呼叫编号加字母，如12a。",
        MessageKind.REPLY_NOT_UNDERSTOOD: (
            "无法识别。请回复呼叫编号加字母：{call_ref}a 接单，{call_ref}d 拒绝，"
            "{call_ref}o 出发，{call_ref}s 到达，{call_ref}r 完成。"
        ),
        MessageKind.REPLY_UNKNOWN_SENDER: "此号码未在呼叫中心登记，请致电您的服务站。",
        MessageKind.REPLY_OPTED_OUT: "您将不再收到呼叫中心的短信（包括派单）。回复START恢复。",
        MessageKind.REPLY_OPTED_IN: "已恢复接收呼叫中心的短信。",
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
