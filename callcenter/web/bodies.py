"""Request bodies: what each command accepts, checked before the desk sees it.

Malformed JSON (or JSON nested past Python's recursion limit), a missing or unknown
field, or a value outside its list is a 400 whose message names the field and, for a
choice, every allowed value. A form that is not UTF-8 is a 400 too, and so is a NUL
character in any string of a body or form.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
)

from callcenter.domain.calls import CancelReason, CarerReport, Outcome
from callcenter.domain.offers import Duty
from callcenter.domain.scripts import ScriptAnswer
from callcenter.store.models import OperatorRole
from callcenter.web.contract import problems_of
from callcenter.web.errors import bad_request
from callcenter.web.state import CONTRACT

# A carer code as the district writes them (C001); also guards the database lookup.
CarerCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class Language(StrEnum):
    """Languages the board and the texts speak."""

    ZH = "zh"
    EN = "en"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# For bodies declared beside their routes (web/register.py: the register's records).
Body = _Body


class DutyBody(_Body):
    """An operator's own duty (web/duty.py)."""

    duty: Duty = Field(description="on_duty, paused or off_duty")


class NoBody(_Body):
    """Commands that need nothing more than the call (acknowledge): ``{}`` or no body."""


class DispatchBody(_Body):
    carer: CarerCode | None = Field(
        None, description="the carer to send, e.g. C012; leave out for the best free carer"
    )


class StatusBody(_Body):
    status: CarerReport = Field(description="what the carer reports")


class StandDownBody(_Body):
    why: Text = Field(description="why the carer is released; they are texted this")


class NoteBody(_Body):
    text: Text


class ResolveBody(_Body):
    outcome: Outcome
    note: Note = ""
    reason: Note = Field(
        "",
        description="why no carer reached the door: needed for an alarm call closed "
        "without one, unless the family attended (docs/calls.md, 'Closing a call')",
    )


class ScriptAnswerBody(_Body):
    question: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
    ] = Field(description="a question's id from the call's script, e.g. head_injury")
    answer: ScriptAnswer = Field(description="yes, no or unknown (nobody could say)")


class CancelBody(_Body):
    reason: CancelReason
    note: Note = ""


class LanguageBody(_Body):
    language: Language


class NewUserBody(_Body):
    username: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=64)]
    name: Text
    role: OperatorRole = OperatorRole.OPERATOR
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = None
    language: Language = Language.ZH


class ActiveBody(_Body):
    # Strict: 0, "off" or "no" are not read as a switch someone meant to throw.
    active: StrictBool


class PasswordBody(_Body):
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


# Any pydantic model: the register reads a policy in the configuration file's own form.
_B = TypeVar("_B", bound=BaseModel)

# PostgreSQL's text cannot hold a NUL, and nobody types one.
NUL_REFUSED = "the request has a NUL character (\\u0000 or %00), which nothing here takes"


def _has_nul(data: Any) -> bool:
    """Whether any string in parsed JSON (a key or a value, at any depth) has a NUL."""
    if isinstance(data, str):
        return "\x00" in data
    if isinstance(data, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in data.items())
    if isinstance(data, list):
        return any(_has_nul(item) for item in data)
    return False


async def read_body(request: web.Request, model: type[_B]) -> _B:
    """The request's JSON body as ``model``; an empty body counts as ``{}``."""
    declared = request.get(CONTRACT)
    if declared is not None and declared.body is not model:
        # A body read that its route does not declare would be missing from the API's
        # description; refuse it loudly (a fault of ours, caught by any test of the route).
        raise RuntimeError(f"{request.method} {request.path}: {model.__name__} is not declared")
    raw = await request.read()
    data: Any = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise bad_request(f"the body is not valid JSON: {error}") from None
        except RecursionError:
            raise bad_request("the body is nested too deep to be one of ours") from None
        if _has_nul(data):
            raise bad_request(NUL_REFUSED)
    if not isinstance(data, dict):
        raise bad_request(f"the body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = problems_of(model, error)
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise bad_request(f"the body is not right: {summary}", problems=problems) from None


FORM_TYPE = "application/x-www-form-urlencoded"
# No form of ours or Twilio's has more fields than this.
_MAX_FORM_FIELDS = 100


async def read_form(request: web.Request, *, refuse_nul: bool = True) -> MultiDict[str]:
    """A posted form's fields, in order and with repeats; no fields when the body is not
    a form. 400 for a form that is not UTF-8 (whatever charset it claims) or has too
    many fields: ``request.post()`` would trust the claimed charset and fail on bad bytes.
    And for a NUL in a field, unless the caller refuses it itself (``refuse_nul``: a
    webhook checks its signature first)."""
    if request.content_type != FORM_TYPE:
        return MultiDict()
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise bad_request(f"forms are read as UTF-8, not {charset[:20]!r}")
    raw = await request.read()
    try:
        fields = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise bad_request("the form is not UTF-8 text") from None
    except ValueError as error:  # too many fields
        raise bad_request(f"the form is not one of ours: {error}") from None
    if refuse_nul and any("\x00" in name or "\x00" in value for name, value in fields):
        raise bad_request(NUL_REFUSED)
    return MultiDict(fields)
