"""The forms Twilio posts to our webhooks, read so that a signed form cannot be re-cut.

Twilio signs the URL followed by every field's name and value run together, sorted by
name (``AccountSidAC…ApiVersion2010-04-01Body12aFrom+86…MessageSidSM…NumMedia0…``), and
counts a value repeated under one name once. So whoever holds one signed request can cut
that same string into other fields and keep the signature: ``MessageSid`` with the next
field glued on (``SM…NumMedia0``) is a new MessageSid that the duplicate check has never
seen, and ``Body`` posted twice is still signed. What stops that here is the shape of
each field: every field appears once, every Twilio id has its exact form (two letters and
32 lower-case hex digits), the account is ours, numbers are E.164, counts and statuses
are what Twilio sends. Any glued field breaks one of these (an id becomes too long, a
number gains letters, a field that must be there goes missing), so a re-cut form is
refused, and a form whose cut is Twilio's own has the MessageSid it was first seen with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiDict

from callcenter.domain.phones import E164
from callcenter.web import bodies
from callcenter.web.errors import ApiError

# Twilio's longest message body.
MAX_BODY_CHARS = 1600


@dataclass(frozen=True)
class Shape:
    """What one field must look like, and how to say it."""

    pattern: re.Pattern[str]
    says: str


def _shape(pattern: str, says: str) -> Shape:
    return Shape(re.compile(pattern, re.ASCII), says)


_MESSAGE_SID = _shape(r"(SM|MM)[0-9a-f]{32}", "SM or MM and 32 lower-case hex digits")
# Numbers follow the desk's one rule (domain/phones.py).
_NUMBER = Shape(E164, 'an E.164 number: "+" and 6 to 15 digits, the first not 0')
_COUNT = _shape(r"[0-9]{1,3}", "a count of at most 3 digits")
_STATUS = _shape(r"[a-z_]{1,20}", "a status word in lower case")
# A call's statuses and directions have dashes: "in-progress", "no-answer", "outbound-api".
_CALL_WORD = _shape(r"[a-z-]{1,20}", "a status word in lower case, with dashes")
# Every field of Twilio's message webhooks that has a fixed form. A field named here is
# checked whenever it is posted, read or not: nothing glued onto it goes unnoticed.
SHAPES: dict[str, Shape] = {
    "AccountSid": _shape(r"AC[0-9a-f]{32}", "AC and 32 lower-case hex digits"),
    "MessageSid": _MESSAGE_SID,
    "SmsSid": _MESSAGE_SID,
    "SmsMessageSid": _MESSAGE_SID,
    "MessagingServiceSid": _shape(r"MG[0-9a-f]{32}", "MG and 32 lower-case hex digits"),
    # Voice webhooks (web/voice_webhooks.py).
    "CallSid": _shape(r"CA[0-9a-f]{32}", "CA and 32 lower-case hex digits"),
    "CallStatus": _CALL_WORD,
    "DialCallStatus": _CALL_WORD,
    "Direction": _CALL_WORD,
    "SequenceNumber": _shape(r"[0-9]{1,4}", "a number of at most 4 digits"),
    "CallDuration": _shape(r"[0-9]{1,6}", "seconds, at most 6 digits"),
    "Digits": _shape(r"[0-9*#]{0,20}", "keys pressed: 0-9, * and #, at most 20"),
    "From": _NUMBER,
    "To": _NUMBER,
    "NumMedia": _COUNT,
    "NumSegments": _COUNT,
    "MessageStatus": _STATUS,
    "SmsStatus": _STATUS,
    # Empty is taken: nothing glued onto it is, and a report without a code reads as one.
    "ErrorCode": _shape(r"[0-9]{0,6}", "a number of at most 6 digits"),
    "ApiVersion": _shape(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "a date, YYYY-MM-DD"),
}
# Any other Twilio id (a field named ...Sid): two capitals and 32 lower-case hex digits.
_OTHER_SID = _shape(r"[A-Z]{2}[0-9a-f]{32}", "two capital letters and 32 lower-case hex digits")
# The older names of MessageSid, which Twilio still posts: the same id, or a forgery.
_SAME_AS_MESSAGE_SID = ("SmsSid", "SmsMessageSid")


class FormRefusedError(Exception):
    """A signed form that Twilio would not have posted: ``field`` and why."""

    def __init__(self, field: str, why: str) -> None:
        self.field = field
        self.why = why
        super().__init__(f"{field} {why}")


async def read_form(request: web.Request) -> MultiDict[str]:
    """The posted form's fields, in order and with repeats; 415 for another kind of body,
    400 for one that is not UTF-8 or not a form. A NUL is left for ``checked``, after the
    signature."""
    if request.content_type != bodies.FORM_TYPE:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Twilio posts {bodies.FORM_TYPE}, not {request.content_type or 'an untyped body'}",
        )
    return await bodies.read_form(request, refuse_nul=False)


def checked(form: MultiDict[str], *, account_sid: str, required: Iterable[str]) -> dict[str, str]:
    """The form's fields once its signature is known good, if their shapes are Twilio's:
    each field once, ``required`` present, every known field in its form, the account
    ``account_sid``. Fields we do not know are let through unread (Twilio adds some,
    FromCity and the like). ``FormRefusedError`` naming the first field that is not."""
    fields: dict[str, str] = {}
    for name, value in form.items():
        if "\x00" in name or "\x00" in value:
            raise FormRefusedError(name, "holds a NUL character")
    for name in form:
        values = form.getall(name)
        if len(values) != 1:
            raise FormRefusedError(name, f"is posted {len(values)} times; Twilio posts it once")
        fields[name] = values[0]
    for name in required:
        if name not in fields:
            raise FormRefusedError(name, "is missing")
    for name, value in fields.items():
        shape = SHAPES.get(name) or (_OTHER_SID if name.endswith("Sid") else None)
        if shape is not None and not shape.pattern.fullmatch(value):
            raise FormRefusedError(name, f"is not {shape.says}")
    if "AccountSid" in fields and fields["AccountSid"] != account_sid:
        raise FormRefusedError("AccountSid", "is not this server's Twilio account")
    for alias in _SAME_AS_MESSAGE_SID:
        if alias in fields and fields[alias] != fields.get("MessageSid"):
            raise FormRefusedError(alias, "is not the same as MessageSid")
    if len(fields.get("Body", "")) > MAX_BODY_CHARS:
        raise FormRefusedError("Body", f"is longer than Twilio's {MAX_BODY_CHARS} characters")
    return fields
