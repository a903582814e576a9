"""The voice TwiML the fake Twilio understands, read into verbs: Say, Pause, Gather (with
Say and Pause inside), Dial (Number children, or a number as its text), Redirect,
Hangup, Record and Reject, with the attributes the call centre uses and Twilio's
defaults. Anything else is a TwimlError, as Twilio answers a document it cannot run
with an application error."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urljoin

from callcenter.fake_twilio.calls import EVENTS


class TwimlError(ValueError):
    """A webhook's answer the fake cannot run as voice TwiML."""


@dataclass(frozen=True)
class Say:
    text: str
    language: str = "en-US"
    voice: str = ""
    loop: int = 1


@dataclass(frozen=True)
class Pause:
    length: float = 1.0


@dataclass(frozen=True)
class Gather:
    action: str
    method: str = "POST"
    num_digits: int | None = None
    timeout: float = 5.0
    finish_on_key: str = "#"
    action_on_empty_result: bool = False
    prompts: tuple[Say | Pause, ...] = ()


@dataclass(frozen=True)
class Number:
    number: str
    url: str = ""
    method: str = "POST"
    status_callback: str = ""
    status_callback_method: str = "POST"
    status_callback_events: frozenset[str] = frozenset({"completed"})


@dataclass(frozen=True)
class Dial:
    numbers: tuple[Number, ...]
    action: str = ""
    method: str = "POST"
    timeout: int = 30
    caller_id: str = ""
    record: bool = False
    recording_status_callback: str = ""


@dataclass(frozen=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Reject:
    reason: str = "rejected"


@dataclass(frozen=True)
class Record:
    action: str
    method: str = "POST"
    timeout: float = 5.0
    max_length: float = 3600.0
    finish_on_key: str = "1234567890*#"
    recording_status_callback: str = ""


Verb = Say | Pause | Gather | Dial | Redirect | Hangup | Reject | Record


def parse(text: str, document_url: str = "") -> list[Verb]:
    """The verbs of a ``<Response>``, in order; URLs in them made absolute against the
    document's own URL (an action left out is that URL, as with Twilio)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as wrong:
        raise TwimlError(f"the answer is not XML ({wrong}): {text[:200]!r}") from None
    if root.tag != "Response":
        raise TwimlError(f"the answer's root is <{root.tag}>, not <Response>")
    return [_verb(element, document_url) for element in root]


def _url(element: ET.Element, name: str, document_url: str) -> str:
    value = element.get(name, "")
    if not value:
        return document_url if name == "action" else ""
    return urljoin(document_url, value) if document_url else value


def _number(text: str | None, what: str) -> float:
    try:
        return float(text) if text is not None else 0.0
    except ValueError:
        raise TwimlError(f"{what} is not a number: {text!r}") from None


def _say(element: ET.Element) -> Say:
    loop = int(_number(element.get("loop", "1"), "<Say loop>"))
    return Say(
        text="".join(element.itertext()).strip(),
        language=element.get("language", "en-US"),
        voice=element.get("voice", ""),
        loop=max(loop, 1),
    )


def _pause(element: ET.Element) -> Pause:
    return Pause(_number(element.get("length", "1"), "<Pause length>"))


def _events(element: ET.Element) -> frozenset[str]:
    asked = frozenset(element.get("statusCallbackEvent", "completed").split())
    unknown = asked - set(EVENTS)
    if unknown:
        raise TwimlError(f"statusCallbackEvent {sorted(unknown)} is not one of {EVENTS}")
    return asked | {"completed"}


def _dial(element: ET.Element, document_url: str) -> Dial:
    numbers = tuple(
        Number(
            number="".join(child.itertext()).strip(),
            url=_url(child, "url", document_url),
            method=child.get("method", "POST"),
            status_callback=_url(child, "statusCallback", document_url),
            status_callback_method=child.get("statusCallbackMethod", "POST"),
            status_callback_events=_events(child),
        )
        for child in element
        if child.tag == "Number"
    )
    others = [child.tag for child in element if child.tag != "Number"]
    if others:
        raise TwimlError(f"the fake dials <Number> only, not {others}")
    if not numbers:
        text = (element.text or "").strip()
        if not text:
            raise TwimlError("<Dial> names no number")
        numbers = (Number(text),)
    return Dial(
        numbers=numbers,
        action=element.get("action", "") and _url(element, "action", document_url),
        method=element.get("method", "POST"),
        timeout=int(_number(element.get("timeout", "30"), "<Dial timeout>")),
        caller_id=element.get("callerId", ""),
        record=element.get("record", "do-not-record").startswith("record-from"),
        recording_status_callback=_url(element, "recordingStatusCallback", document_url),
    )


def _verb(element: ET.Element, document_url: str) -> Verb:
    tag = element.tag
    if tag == "Say":
        return _say(element)
    if tag == "Pause":
        return _pause(element)
    if tag == "Gather":
        prompts: list[Say | Pause] = []
        for child in element:
            if child.tag not in ("Say", "Pause"):
                raise TwimlError(f"the fake's <Gather> holds <Say> and <Pause>, not <{child.tag}>")
            prompts.append(_say(child) if child.tag == "Say" else _pause(child))
        num_digits = element.get("numDigits")
        return Gather(
            action=_url(element, "action", document_url),
            method=element.get("method", "POST"),
            num_digits=int(_number(num_digits, "numDigits")) if num_digits else None,
            timeout=_number(element.get("timeout", "5"), "<Gather timeout>"),
            finish_on_key=element.get("finishOnKey", "#"),
            action_on_empty_result=element.get("actionOnEmptyResult", "false") == "true",
            prompts=tuple(prompts),
        )
    if tag == "Dial":
        return _dial(element, document_url)
    if tag == "Redirect":
        target = (element.text or "").strip()
        if not target:
            raise TwimlError("<Redirect> names no URL")
        url = urljoin(document_url, target) if document_url else target
        return Redirect(url, element.get("method", "POST"))
    if tag == "Hangup":
        return Hangup()
    if tag == "Reject":
        return Reject(element.get("reason", "rejected"))
    if tag == "Record":
        return Record(
            action=_url(element, "action", document_url),
            method=element.get("method", "POST"),
            timeout=_number(element.get("timeout", "5"), "<Record timeout>"),
            max_length=_number(element.get("maxLength", "3600"), "<Record maxLength>"),
            finish_on_key=element.get("finishOnKey", "1234567890*#"),
            recording_status_callback=_url(element, "recordingStatusCallback", document_url),
        )
    raise TwimlError(f"the fake Twilio does not run <{tag}>")
