"""Text messages the call centre sends, rendered from a kind and its facts.

Rendering is pure and table-tested; the outbox stores the rendered text, so what was
sent is exactly what the history shows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


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
    # done on an emergency or fall no operator owned: the desk reviews it before it ends
    REPLY_REVIEW = "reply_review"
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
    # Spoken on a phone call the desk places (docs/voice.md): a carer rung about a page.
    VOICE_PAGE = "voice_page"  # the call's summary and the keys
    VOICE_ACCEPTED = "voice_accepted"  # 1 pressed and taken
    VOICE_DECLINED = "voice_declined"  # 2 pressed and taken
    VOICE_NO_KEY = "voice_no_key"  # nothing (or another key) pressed: said before the repeat
    VOICE_GOODBYE = "voice_goodbye"  # still nothing after the repeat
    VOICE_ALREADY_YOURS = "voice_already_yours"  # picked up after accepting by text
    VOICE_NOT_NEEDED = "voice_not_needed"  # picked up after being released or the call closed
    # Someone rang the centre's number (docs/voice.md, "Inbound calls").
    INBOUND_WHISPER = "inbound_whisper"  # to the operator who picks up, before the bridge
    INBOUND_TAKEN = "inbound_taken"  # to an operator who picked up after another took it
    INBOUND_NOBODY = "inbound_nobody"  # to the caller: nobody at the desk picked up
    # A family contact rung because help is late: what happened, and 1 to confirm.
    VOICE_FAMILY = "voice_family"
    VOICE_FAMILY_HEARD = "voice_family_heard"  # 1 pressed
    VOICE_FAMILY_GOODBYE = "voice_family_goodbye"  # still no key after the repeat
    # picked up once a carer reached the door or the call closed: nothing to confirm
    VOICE_FAMILY_NOT_NEEDED = "voice_family_not_needed"
    # An operator's phone, rung to call the household (click-to-call, docs/voice.md).
    VOICE_BRIDGE = "voice_bridge"  # said to the operator while the household is dialled
    VOICE_BRIDGE_NONE = "voice_bridge_none"  # none of the household's numbers answered
    VOICE_BRIDGE_WELFARE = "voice_bridge_welfare"  # a welfare call: the resident is rung


@dataclass(frozen=True)
class ResidentNote:
    """What a carer on the way should know about one resident."""

    name: str
    mobility: str = "independent"  # independent, walking_aid, wheelchair, bedbound
    care_notes: str = ""
    birth_year: int | None = None
    age: int | None = None  # filled in from birth_year when the page is written

    def aged(self, year: int) -> ResidentNote:
        """This note with the resident's age in ``year``."""
        if self.birth_year is None or not 0 < self.birth_year <= year:
            return self
        return replace(self, age=year - self.birth_year)


@dataclass(frozen=True)
class Trip:
    """How far the paged carer is from the door, as the ranking estimated it."""

    distance_m: float
    travel_s: float


class Reason(enum.StrEnum):
    """Why the desk escalates, tells someone, or stands a carer down: a code the texts
    render in the recipient's language and the history keeps (``detail.because``), so
    every page can say it in its own language too. Its facts are listed beside each."""

    NOT_TAKEN = "not_taken"  # waited_s: no operator has taken the call
    NOT_ACCEPTED = "not_accepted"  # carers ("C039 王芳, C040 李强"): paged, never accepted
    NOBODY_ACCEPTED = "nobody_accepted"  # waited_s: no carer has accepted (none paged now)
    NOT_ON_SCENE = "not_on_scene"  # waited_s
    STILL_OPEN = "still_open"  # waited_s
    NO_FREE_CARER = "no_free_carer"  # skills (may be empty)
    NO_CONTACT = "no_contact"  # action: a step's action had no number to text
    REACHED_NOBODY = "reached_nobody"  # step: a step that told nobody hands over
    UNREACHABLE = "unreachable"  # carer, detail: a page that cannot be delivered
    TEXT_FAILED = "text_failed"  # to, phone, detail: a text that was not delivered
    NO_ANSWER_IN_TIME = "no_answer_in_time"  # to a carer stood down for their silence
    STOOD_DOWN = "stood_down"  # by the desk, no reason typed
    CALL_RESOLVED = "call_resolved"
    CALL_CANCELLED = "call_cancelled"
    # carer, outcome: a carer reported an alarm nobody at the desk took done (to the others)
    REPORTED_DONE = "reported_done"
    # carer, outcome: ... and no operator has taken it yet (to the supervisors)
    AWAITING_REVIEW = "awaiting_review"
    # state, detail (the desk's own reason, in English): a carer's answer the desk refused
    ANSWER_DOES_NOT_APPLY = "answer_does_not_apply"
    # carer, status (Twilio's busy, no-answer, failed, canceled): rung about a page, no pick-up
    RING_UNANSWERED = "ring_unanswered"
    # contacts (how many were rung): ring_family tried every contact, none pressed 1
    FAMILY_UNCONFIRMED = "family_unconfirmed"
    # action: a step's phone call when phone calls are off ([voice] enabled = false)
    VOICE_OFF = "voice_off"


@dataclass(frozen=True)
class Because:
    """A reason and its facts, e.g. ``Because(Reason.NOT_TAKEN, {"waited_s": "45"})``."""

    reason: Reason
    facts: dict[str, str] = field(default_factory=dict)

    def text(self, language: str) -> str:
        """The reason in words, in ``language`` (English when we have no such language)."""
        return reason_text(self, language)

    def as_detail(self) -> dict[str, str]:
        """The history's ``detail.because``: ``{"reason": code, **facts}``."""
        return {"reason": self.reason.value, **self.facts}


@dataclass(frozen=True)
class Message:
    """What to say; ``facts`` fills the template. A dispatch page also carries the
    residents (age, mobility, care notes) and the carer's trip, rendered per language.
    ``because``, when set, is the ``{why}`` in the recipient's language."""

    kind: MessageKind
    facts: dict[str, str] = field(default_factory=dict)
    residents: tuple[ResidentNote, ...] = ()
    trip: Trip | None = None
    because: Because | None = None


_TEMPLATES: dict[str, dict[MessageKind, str]] = {
    "en": {
        MessageKind.DISPATCH: (
            "Call {call_ref} {call_type}: {household} {residents}, {address}. {access} {trip} "
            "Reply {call_ref}a accept, {call_ref}d decline, {call_ref}s on scene, "
            "{call_ref}r done. {link}"
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
            "{waited}. Ring emergency services (120) now."
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
            "Call {call_ref} for {household} closed: {outcome}. Thank you."
        ),
        MessageKind.REPLY_REVIEW: (
            "Call {call_ref} for {household}: reported done ({outcome}); "
            "the desk will review it. Thank you."
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
        MessageKind.VOICE_PAGE: (
            "This is the call centre. Call {call_ref}, {call_type}, at {household}: "
            "{residents}, {address}. {access} Press 1 to accept, press 2 to decline."
        ),
        MessageKind.VOICE_ACCEPTED: (
            "Call {call_ref} accepted. Please go to {household} now. Thank you, goodbye."
        ),
        MessageKind.VOICE_DECLINED: (
            "Call {call_ref} declined; someone else is being asked. Goodbye."
        ),
        MessageKind.VOICE_NO_KEY: "No answer was pressed.",
        MessageKind.VOICE_GOODBYE: (
            "No answer was pressed. Please answer the text message or ring the desk. Goodbye."
        ),
        MessageKind.VOICE_ALREADY_YOURS: (
            "You have accepted call {call_ref} already. Thank you, goodbye."
        ),
        MessageKind.VOICE_NOT_NEEDED: (
            "Call {call_ref} no longer needs you; nothing to do. Thank you, goodbye."
        ),
        MessageKind.INBOUND_WHISPER: "Call {call_ref}: {household} is calling the centre.",
        MessageKind.INBOUND_TAKEN: "Call {call_ref} was picked up by {owner}. Goodbye.",
        MessageKind.INBOUND_NOBODY: (
            "This is the call centre. Nobody can take your call right now; the desk has "
            "your call and will ring you back. In an emergency, call 120."
        ),
        MessageKind.VOICE_FAMILY: (
            "Hello, this is the call centre. {call_type} alarm from {household}, "
            "{residents}, {address}. {help} If you can go or call them, please ring "
            "{desk_phone}. Press 1 to confirm you heard this."
        ),
        MessageKind.VOICE_FAMILY_HEARD: "Thank you, your confirmation is noted. Goodbye.",
        MessageKind.VOICE_FAMILY_GOODBYE: (
            "No key was pressed. The call centre will try another family contact. Goodbye."
        ),
        MessageKind.VOICE_FAMILY_NOT_NEEDED: (
            "This is the call centre. Help has reached your relative, or the alarm is over; "
            "nothing to do. Thank you, goodbye."
        ),
        MessageKind.VOICE_BRIDGE: "Call {call_ref}: ringing household {household}, please hold.",
        MessageKind.VOICE_BRIDGE_NONE: (
            "None of the numbers of household {household} answered. Goodbye."
        ),
        MessageKind.VOICE_BRIDGE_WELFARE: (
            "Welfare call: ringing {resident} at household {household}, please hold."
        ),
    },
    "zh": {
        MessageKind.DISPATCH: (
            "呼叫{call_ref}（{call_type}）：{household} {residents}，{address}。{access} {trip} "
            "回复 {call_ref}a 接单，{call_ref}d 拒绝，{call_ref}s 到达，{call_ref}r 完成。{link}"
        ),
        MessageKind.STAND_DOWN: "呼叫{call_ref}：无需前往（{why}）。",
        MessageKind.STATION_LEAD: "呼叫{call_ref}（{call_type}）{household}：{why}。",
        MessageKind.SUPERVISOR: "呼叫{call_ref}（{call_type}）{household}：{why}。",
        MessageKind.FAMILY_DELAYED: (
            "呼叫中心正在处理{household}的报警，救助比预期慢。如您能前往或联系老人，"
            "请致电{desk_phone}。"
        ),
        MessageKind.EMERGENCY_SERVICES: (
            "呼叫{call_ref}（{call_type}）{household}，{address}：已过{waited}仍无护理员到场，"
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
        MessageKind.REPLY_RESOLVED: "呼叫{call_ref}（{household}）已结案：{outcome}。谢谢！",
        MessageKind.REPLY_REVIEW: (
            "呼叫{call_ref}（{household}）已报告完成（{outcome}），待接线员复核。谢谢！"
        ),
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
        MessageKind.VOICE_PAGE: (
            "这里是呼叫中心。呼叫{call_ref}，{call_type}，{household}，{residents}，{address}。"
            "{access} 按1接单，按2拒绝。"
        ),
        MessageKind.VOICE_ACCEPTED: "已接单，呼叫{call_ref}。请尽快前往{household}。谢谢，再见。",
        MessageKind.VOICE_DECLINED: "已拒绝呼叫{call_ref}，将另派他人。再见。",
        MessageKind.VOICE_NO_KEY: "没有收到按键。",
        MessageKind.VOICE_GOODBYE: "没有收到按键。请回复短信或致电值班台。再见。",
        MessageKind.VOICE_ALREADY_YOURS: "您已接单呼叫{call_ref}。谢谢，再见。",
        MessageKind.VOICE_NOT_NEEDED: "呼叫{call_ref}已无需您前往。谢谢，再见。",
        MessageKind.INBOUND_WHISPER: "呼叫{call_ref}：{household}来电。",
        MessageKind.INBOUND_TAKEN: "呼叫{call_ref}已由{owner}接听。再见。",
        MessageKind.INBOUND_NOBODY: (
            "这里是呼叫中心。值班员暂时无法接听，我们已收到您的来电，会尽快回电。"
            "如有紧急情况，请拨打120。"
        ),
        MessageKind.VOICE_FAMILY: (
            "您好，这里是呼叫中心。{household}，{residents}，{address}，发出了{call_type}报警。"
            "{help}如您能前往或联系老人，请致电{desk_phone}。按1确认收到。"
        ),
        MessageKind.VOICE_FAMILY_HEARD: "谢谢，已确认收到。再见。",
        MessageKind.VOICE_FAMILY_GOODBYE: "没有收到按键。呼叫中心将联系其他家属。再见。",
        MessageKind.VOICE_FAMILY_NOT_NEEDED: (
            "这里是呼叫中心。护理员已到达您的家人身边，或报警已处理完毕，无需您处理。谢谢，再见。"
        ),
        MessageKind.VOICE_BRIDGE: "呼叫{call_ref}：正在拨打住户{household}，请稍候。",
        MessageKind.VOICE_BRIDGE_NONE: "住户{household}的电话都无人接听。再见。",
        MessageKind.VOICE_BRIDGE_WELFARE: "关怀电话：正在拨打住户{household}的{resident}，请稍候。",
    },
}

CALL_TYPE_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "emergency": "EMERGENCY",
        "fall": "FALL",
        "service_request": "service request",
        "device_offline": "device offline",
        "low_battery": "low battery",
        "device_clock": "device clock wrong",
        "voice": "phone call in",
    },
    "zh": {
        "emergency": "紧急呼叫",
        "fall": "跌倒",
        "service_request": "服务请求",
        "device_offline": "设备离线",
        "low_battery": "电量低",
        "device_clock": "设备时钟错误",
        "voice": "来电",
    },
}

# How a call ended (domain.calls.Outcome), as a carer's confirmation names it.
OUTCOME_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "helped_at_home": "helped at home",
        "taken_to_hospital": "taken to hospital",
        "emergency_services": "120 called, handed to the ambulance",
        "false_alarm": "false alarm",
        "no_access": "no access",
        "family_attended": "family attended",
        "device_fixed": "device fixed",
        "other": "other",
    },
    "zh": {
        "helped_at_home": "居家处理",
        "taken_to_hospital": "送医",
        "emergency_services": "已呼叫120，交由急救人员",
        "false_alarm": "误报",
        "no_access": "无法入户",
        "family_attended": "家属已到场",
        "device_fixed": "设备已修复",
        "other": "其他",
    },
}

MOBILITY_NAMES: dict[str, dict[str, str]] = {
    "en": {"walking_aid": "walking aid", "wheelchair": "wheelchair", "bedbound": "bedbound"},
    "zh": {"walking_aid": "需助行器", "wheelchair": "坐轮椅", "bedbound": "卧床"},
}

# How far help has got, as a family contact rung about a late call is told (the fact
# "help": "on_the_way" a carer accepted, "late" none has yet).
HELP_PHRASES: dict[str, dict[str, str]] = {
    "en": {
        "on_the_way": "A carer is on the way but has not arrived after {waited}.",
        "late": "Help is late: no carer has taken it after {waited}.",
    },
    "zh": {
        "on_the_way": "护理员已在路上，但已过{waited}仍未到达。",
        "late": "救助比预期慢，已过{waited}仍无护理员接单。",
    },
}

# Care notes longer than this are cut in the SMS; the whole note is on the call's card.
CARE_NOTES_IN_SMS = 60


def _resident(note: ResidentNote, language: str) -> str:
    """ "王秀英 (86, wheelchair; diabetic)" / "王秀英（86岁，坐轮椅；糖尿病）"."""
    mobility = MOBILITY_NAMES.get(language, MOBILITY_NAMES["en"]).get(note.mobility, "")
    care = note.care_notes.strip()
    if len(care) > CARE_NOTES_IN_SMS:
        care = care[: CARE_NOTES_IN_SMS - 1] + "…"
    if language == "zh":
        about = "，".join(p for p in (f"{note.age}岁" if note.age else "", mobility) if p)
        about = "；".join(p for p in (about, care) if p)
        return f"{note.name}（{about}）" if about else note.name
    about = ", ".join(p for p in (str(note.age) if note.age else "", mobility) if p)
    about = "; ".join(p for p in (about, care) if p)
    return f"{note.name} ({about})" if about else note.name


def _trip(trip: Trip, language: str) -> str:
    """ "About 6 min away (1.2 km)." / "距您约1.2公里，约6分钟。"."""
    minutes = max(1, round(trip.travel_s / 60))
    km = f"{trip.distance_m / 1000:.1f}"
    if language == "zh":
        return f"距您约{km}公里，约{minutes}分钟。"
    return f"About {minutes} min away ({km} km)."


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
    if "outcome" in facts:
        outcomes = OUTCOME_NAMES.get(language, OUTCOME_NAMES["en"])
        facts["outcome"] = outcomes.get(facts["outcome"], facts["outcome"])
    language = language if language in _TEMPLATES else "en"
    if message.because is not None:
        facts["why"] = reason_text(message.because, language)
    waited = facts.get("waited_s") or (
        str(int(facts["minutes"]) * 60) if facts.get("minutes", "").isdigit() else ""
    )
    if waited:
        facts["waited"] = duration(float(waited), language)
    if message.residents:
        joiner = "；" if language == "zh" else "; "
        facts["residents"] = joiner.join(_resident(r, language) for r in message.residents)
    if message.trip is not None:
        facts["trip"] = _trip(message.trip, language)
    if "help" in facts:
        facts["help"] = HELP_PHRASES[language].get(facts["help"], "").format_map(facts)
    return " ".join(templates[message.kind].format_map(facts).split())


def duration(seconds: float, language: str) -> str:
    """A time waited, to the second, as a person says it: under two minutes in seconds
    ("90 s" / "90秒"); then minutes and seconds, a zero part left out ("2 min 30 s" /
    "2分30秒", "15 min" / "15分钟"); from an hour, hours and minutes and seconds ("1 h 5 min"
    / "1小时5分钟"). Never rounded to a minute it was not: 90 s is not "2 min"."""
    total = max(0, round(seconds))
    if total < 120:
        return f"{total}秒" if language == "zh" else f"{total} s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if language == "zh":
        parts = [f"{hours}小时" if hours else "", f"{minutes}分" if minutes else ""]
        if secs:
            parts.append(f"{secs}秒")
        elif minutes:
            parts[1] = f"{minutes}分钟"
        return "".join(parts)
    en = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    en.append(f"{secs} s" if secs else "")
    return " ".join(p for p in en if p)


_REASONS: dict[str, dict[Reason, str]] = {
    "en": {
        Reason.NOT_TAKEN: "no operator has taken it after {waited}",
        Reason.NOT_ACCEPTED: "the paged carer {carers} did not accept in time",
        Reason.NOBODY_ACCEPTED: "no carer has accepted after {waited}",
        Reason.NOT_ON_SCENE: "no carer on scene after {waited}",
        Reason.STILL_OPEN: "still open after {waited}",
        Reason.NO_FREE_CARER: "no free carer on shift",
        Reason.NO_CONTACT: "{action}: no contact number",
        Reason.REACHED_NOBODY: "step {step} reached nobody",
        Reason.UNREACHABLE: "carer {carer} cannot be reached ({detail})",
        Reason.TEXT_FAILED: "text to {to} ({phone}) not delivered: {detail}",
        Reason.NO_ANSWER_IN_TIME: "no answer in time",
        Reason.STOOD_DOWN: "stood down by the desk",
        Reason.CALL_RESOLVED: "call resolved",
        Reason.CALL_CANCELLED: "call cancelled",
        Reason.REPORTED_DONE: "carer {carer} reported it done ({outcome})",
        Reason.AWAITING_REVIEW: (
            "carer {carer} reported it done ({outcome}) and no operator has taken it: "
            "an operator must review it"
        ),
        Reason.ANSWER_DOES_NOT_APPLY: "{detail}",
        Reason.RING_UNANSWERED: "carer {carer} did not pick up the phone ({status})",
        Reason.FAMILY_UNCONFIRMED: (
            "the family was rung ({contacts} contacts) and nobody confirmed hearing it"
        ),
        Reason.VOICE_OFF: "{action}: phone calls are off",
    },
    "zh": {
        Reason.NOT_TAKEN: "已过{waited}仍无接线员接听",
        Reason.NOT_ACCEPTED: "所派护理员{carers}未及时接单",
        Reason.NOBODY_ACCEPTED: "已过{waited}仍无护理员接单",
        Reason.NOT_ON_SCENE: "已过{waited}仍无护理员到场",
        Reason.STILL_OPEN: "已过{waited}仍未结案",
        Reason.NO_FREE_CARER: "在班护理员中无人空闲",
        Reason.NO_CONTACT: "{action}：没有联系电话",
        Reason.REACHED_NOBODY: "升级步骤“{step}”未能通知到任何人",
        # The provider's own words (English) stay in the history and the log.
        Reason.UNREACHABLE: "联系不上护理员{carer}（短信无法送达）",
        Reason.TEXT_FAILED: "发给{to}（{phone}）的短信未送达",
        Reason.NO_ANSWER_IN_TIME: "未及时回复",
        Reason.STOOD_DOWN: "值班台已撤回",
        Reason.CALL_RESOLVED: "呼叫已结案",
        Reason.CALL_CANCELLED: "呼叫已取消",
        Reason.REPORTED_DONE: "护理员{carer}已报告完成（{outcome}）",
        Reason.AWAITING_REVIEW: (
            "护理员{carer}已报告完成（{outcome}），但没有接线员接手此呼叫：须由接线员复核"
        ),
        Reason.ANSWER_DOES_NOT_APPLY: (
            "您在此呼叫的状态是“{state}”，这个回复不适用（接单后不能拒绝，到达后才能结案，"
            "状态不能倒退）；如需更改请致电值班台"
        ),
        Reason.RING_UNANSWERED: "护理员{carer}未接电话（{status}）",
        Reason.FAMILY_UNCONFIRMED: "已致电家属（{contacts}位），无人按1确认收到",
        Reason.VOICE_OFF: "{action}：电话呼叫已关闭",
    },
}

# The names of escalation steps and actions inside a reason ("notify_family: no contact
# number"), per language; a name not listed (a district's own step) is said as it is.
STEP_NAMES: dict[str, dict[str, str]] = {
    "en": {},
    "zh": {
        "unacknowledged": "无人接听",
        "unaccepted": "护理员未接单",
        "not_on_scene": "未到达现场",
        "emergency_services": "拨打120",
        "still_open": "仍未结案",
        "alert_operators": "提醒接线员",
        "alert_supervisor": "通知值班主管",
        "notify_station_lead": "通知站长",
        "notify_family": "通知家属",
        "redispatch": "改派护理员",
        "ring_carer": "致电护理员",
        "ring_family": "致电家属",
    },
}


# A carer's part on a call (domain.calls.AssignmentState), as a refusal names it.
CARER_STATE_NAMES: dict[str, dict[str, str]] = {
    "en": {},
    "zh": {
        "dispatched": "已派单、待接单",
        "accepted": "已接单",
        "on_the_way": "在路上",
        "on_scene": "已到达",
    },
}


# How a phone call the desk placed ended without a pick-up (Twilio's CallStatus).
RING_STATUS_NAMES: dict[str, dict[str, str]] = {
    "en": {"no-answer": "no answer"},
    "zh": {"busy": "占线", "no-answer": "无人接听", "failed": "呼叫失败", "canceled": "已取消"},
}


def _recipient_zh(label: str) -> str:
    """A text's recipient label ("family:7:1", "operator:li.na", "carer:C012") in Chinese."""
    kind, _, rest = label.partition(":")
    if kind == "carer":
        return f"护理员{rest}"
    return {"family": "家属", "operator": "值班主管"}.get(kind, label)


def reason_text(because: Because, language: str) -> str:
    """``because`` in words, in ``language``."""
    language = language if language in _REASONS else "en"
    facts = _Facts(because.facts)
    if "state" in facts:
        facts["state"] = CARER_STATE_NAMES[language].get(facts["state"], facts["state"])
    if "to" in facts and language == "zh":
        facts["to"] = _recipient_zh(facts["to"])
    if "waited_s" in facts:
        facts["waited"] = duration(float(facts["waited_s"]), language)
    if "outcome" in facts:
        facts["outcome"] = OUTCOME_NAMES[language].get(facts["outcome"], facts["outcome"])
    if "status" in facts:
        facts["status"] = RING_STATUS_NAMES[language].get(facts["status"], facts["status"])
    names = STEP_NAMES[language]
    for key in ("step", "action"):
        if key in facts:
            facts[key] = names.get(facts[key], facts[key])
    if because.reason is Reason.NO_FREE_CARER and facts.get("skills"):
        extra = "（需{skills}）" if language == "zh" else " with {skills}"
        return (_REASONS[language][because.reason] + extra).format_map(facts)
    return _REASONS[language][because.reason].format_map(facts)
