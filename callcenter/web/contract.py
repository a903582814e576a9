"""What each route takes and answers, declared on its handler.

``@contract(...)`` names the models of a route's path and query parameters, its JSON or
form body and every answer it gives. The same declaration does three things, so the
published description cannot drift from the code:

- path and query parameters are checked against their models before the handler runs
  (a 400 naming the parameter otherwise), and the handler reads them back parsed with
  ``path_of`` / ``query_of``; ``read_body`` refuses to read a body model the route does
  not declare;
- every JSON answer is checked against the model declared for its status before it
  leaves (a mismatch is a fault of ours: 500, logged with the field);
- ``/api/openapi.json`` is built from the declarations (callcenter/web/openapi.py), and
  a test fails for any route that has none.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from callcenter.store.models import OperatorRole
from callcenter.web.errors import ApiError, bad_request
from callcenter.web.state import CONTRACT, OPERATOR, STRICT_ANSWERS

if TYPE_CHECKING:
    from callcenter.web.auth import DeskOperator

log = logging.getLogger("callcenter.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_M = TypeVar("_M", bound=BaseModel)

# Largest id a BIGINT column holds; a larger one names nothing.
MAX_ID = 2**63 - 1
# The days a person may ask about: wide enough for any real question, narrow enough
# that a day before or after it (a period's bounds) is still a date.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)


DAY_WORDS = f"a date written YYYY-MM-DD such as 2026-11-23 ({FIRST_DAY} to {LAST_DAY})"


def written_day(raw: str) -> date | None:
    """``raw`` as a date if it is written YYYY-MM-DD (``date.fromisoformat`` alone would
    also take 20261123 and 2026-W48-1) and falls from FIRST_DAY to LAST_DAY, else None."""
    if len(raw) != 10:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        return None
    return day if FIRST_DAY <= day <= LAST_DAY else None


def _written_day(raw: Any) -> Any:
    """A query's day only as ``written_day`` reads it."""
    if isinstance(raw, str):
        day = written_day(raw)
        if day is None:
            raise ValueError(DAY_WORDS)
        return day
    return raw


def whole_number(raw: str) -> int | None:
    """``raw`` as a whole number if it is written in ASCII digits, else None (int() would
    also take " 5", "+5", "5_000"). One with more digits than any id has reads as
    MAX_ID + 1, past every id and every limit, without ``int()`` on it (which refuses
    texts of over 4300 digits)."""
    if not raw.isascii() or not raw.isdigit():
        return None
    digits = raw.lstrip("0") or "0"
    return MAX_ID + 1 if len(digits) > len(str(MAX_ID)) else int(digits)


# Path and query types shared by the routes.
def _digits(raw: Any) -> Any:
    """A parameter's number only as ``whole_number`` reads it."""
    if isinstance(raw, str):
        number = whole_number(raw)
        if number is None:
            raise ValueError("not a whole number")
        return number
    return raw


# Any whole number: one no row can have (0, past BIGINT) names nothing, and is a 404.
# The bounds come before the validator: after it, pydantic cannot put them on the integer
# and the description would show them as "ge"/"le", which JSON Schema does not know.
Id = Annotated[
    int, Field(ge=0, description="a whole number", examples=[1]), BeforeValidator(_digits)
]
Day = Annotated[
    date,
    BeforeValidator(_written_day),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date",
            "pattern": r"^\d{4}-\d{2}-\d{2}$",
            "description": DAY_WORDS,
        }
    ),
    Field(description=DAY_WORDS),
]
HouseholdCode = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="a household code such as H0001",
        examples=["H0001"],
    ),
]
Limit = Annotated[
    int, Field(ge=1, le=1000, description="a whole number from 1 to 1000"), BeforeValidator(_digits)
]


class Parameters(BaseModel):
    """Path or query parameters: strings in, typed values out."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Access(StrEnum):
    """Who may call a route, and how they prove it (the description's security)."""

    DESK = "desk"  # an operator's bearer token or board session (CSRF header on changes)
    FAMILY = "family"  # a family member's session cookie (CSRF header on changes)
    FAMILY_SIGN_IN = "family_sign_in"  # the sign-in page's double-submitted CSRF token
    TWILIO = "twilio"  # X-Twilio-Signature over the URL and the form
    CARER_LINK = "carer_link"  # the signed token in the path is the credential
    PUBLIC = "public"  # nothing to prove: reveals no personal data


@dataclass(frozen=True)
class Reply:
    """One answer a route gives: what it means, and its body's model and media type."""

    description: str
    model: Any = None  # a pydantic model or type; None: no JSON body to check
    media: str = "application/json"
    # Other media types the same answer may come in (a file in one format or another).
    more_media: tuple[str, ...] = ()


@dataclass(frozen=True)
class Contract:
    """Everything a route declares about itself."""

    summary: str
    description: str
    access: Access
    answers: Mapping[int, Reply]
    path: type[Parameters] | None = None
    query: type[Parameters] | None = None
    body: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    # A file sent as the body, in any of these media types (read by the handler itself).
    upload: tuple[str, ...] = ()
    role: OperatorRole | None = None
    tag: str = ""
    _adapters: dict[int, TypeAdapter[Any]] = field(default_factory=dict, compare=False)

    def adapter(self, status: int) -> TypeAdapter[Any] | None:
        """The validator of the JSON answer declared for ``status``, if any."""
        answer = self.answers.get(status)
        if answer is None or answer.model is None or answer.media != "application/json":
            return None
        if status not in self._adapters:
            self._adapters[status] = TypeAdapter(answer.model)
        return self._adapters[status]


_CONTRACTS: dict[Callable[..., Any], Contract] = {}


def contract_of(handler: Callable[..., Any]) -> Contract | None:
    """The contract a route's handler was declared with, or None."""
    return _CONTRACTS.get(handler)


def _answers(answers: Mapping[int, Any]) -> dict[int, Reply]:
    """``{200: Model, 404: "no such call"}`` as Replies: a string describes an error
    (the project's error body), anything else is the model of a success."""
    made: dict[int, Reply] = {}
    for status, given in answers.items():
        if isinstance(given, Reply):
            made[status] = given
        elif isinstance(given, str):
            made[status] = Reply(given, ErrorBody if status >= 400 else None)
        else:
            made[status] = Reply(_described(given), given)
    return made


def _usual_errors(
    access: Access, role: OperatorRole | None, parameters: object, body: object
) -> dict[int, str]:
    """The errors every route of its kind may answer, besides its own."""
    usual: dict[int, str] = {}
    if parameters is not None or body is not None:
        usual[400] = "a parameter or the body is not right; the message and problems say which"
    if body is not None:
        usual[413] = "too_large: the body is over 64 KiB"
    if access is Access.DESK:
        usual[401] = "unauthorised: no token or board session, or one that has ended"
        usual[403] = "forbidden: switched off, another site, no CSRF token on a change" + (
            f", or not a {role.value} or above" if role is not None else ""
        )
    if access is not Access.PUBLIC:
        usual[503] = "unavailable: the database is not answering; try again"
    return usual


def _described(model: Any) -> str:
    doc = getattr(model, "__doc__", None) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ") or "done"


def contract(
    *,
    answers: Mapping[int, Any],
    access: Access = Access.DESK,
    role: OperatorRole | None = None,
    path: type[Parameters] | None = None,
    query: type[Parameters] | None = None,
    body: type[BaseModel] | None = None,
    form: type[BaseModel] | None = None,
    upload: tuple[str, ...] = (),
    tag: str = "",
) -> Callable[[Handler], Handler]:
    """Declare a route's parameters, body and answers (see the module's docstring).

    The handler's docstring gives the summary (first line) and description."""

    def declare(handler: Handler) -> Handler:
        doc = (handler.__doc__ or handler.__name__.replace("_", " ")).strip()
        summary, _, rest = doc.partition("\n")
        declared = Contract(
            summary=summary.strip().rstrip("."),
            description=" ".join(rest.split()),
            access=access,
            answers={
                **_answers(_usual_errors(access, role, path or query, body or form)),
                **_answers(answers),
            },
            path=path,
            query=query,
            body=body,
            form=form,
            upload=upload,
            role=role,
            tag=tag,
        )

        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            request[CONTRACT] = declared
            if role is not None:
                require_role(request, role)
            if path is not None:
                request[PATH] = parse_parameters(path, request.match_info, "path")
            if query is not None:
                request[QUERY] = parse_parameters(query, request.query, "query")
            response = await handler(request)
            _check_answer(declared, request, response)
            return response

        _CONTRACTS[checked] = declared
        return checked

    return declare


PATH: web.RequestKey[Parameters] = web.RequestKey("callcenter.path")
QUERY: web.RequestKey[Parameters] = web.RequestKey("callcenter.query")


def path_of(request: web.Request, model: type[_M]) -> _M:
    """The request's path parameters, parsed by the route's declared ``model``."""
    return _declared(request, PATH, model)


def query_of(request: web.Request, model: type[_M]) -> _M:
    """The request's query parameters, parsed by the route's declared ``model``."""
    return _declared(request, QUERY, model)


def _declared(request: web.Request, key: web.RequestKey[Parameters], model: type[_M]) -> _M:
    found = request.get(key)
    if not isinstance(found, model):
        raise RuntimeError(f"{request.method} {request.path}: {model.__name__} is not declared")
    return found


def require_role(request: web.Request, role: OperatorRole) -> DeskOperator:
    """The signed-in operator, if their role allows what ``role`` may; else 403."""
    operator = request[OPERATOR]
    if not operator.may(role):
        raise ApiError(
            403,
            "forbidden",
            f"only a {role.value} or above may do this; {operator.username} is "
            f"{'an' if operator.role is OperatorRole.OPERATOR else 'a'} {operator.role.value}",
        )
    return operator


def allowed_values(model: type[BaseModel], name: str) -> list[str] | None:
    """Every value a field of choices takes, for messages that list them."""
    info = model.model_fields.get(name)
    annotation = info.annotation if info is not None else None
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return [str(member.value) for member in candidate]
    return None


def problems_of(
    model: type[BaseModel], error: ValidationError, raw: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Each problem with a model's input: the field, a message a person can act on and,
    for a choice, every allowed value. With ``raw`` (parameters, all strings) the
    message says what the field must be, from its description, and what was sent."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in item["loc"]) or "(body)"
        problem: dict[str, Any] = {"field": name, "message": item["msg"]}
        allowed = allowed_values(model, name)
        info = model.model_fields.get(name)
        if allowed is not None:
            problem["allowed"] = allowed
            choices = ", ".join(allowed)
            problem["message"] = (
                f"{item['msg']} (one of: {choices})"
                if item["type"] == "missing"
                else f"must be one of: {choices}"
            )
        elif raw is not None and info is not None and info.description:
            sent = raw.get(name)
            problem["message"] = (
                f"must be {info.description}"
                if sent is None
                else f"must be {info.description}, not {str(sent)[:40]!r}"
            )
        problems.append(problem)
    return problems


def parse_parameters(model: type[_M], values: Mapping[str, str], where: str) -> _M:
    """Path or query ``values`` as ``model``; a 400 naming each bad one otherwise. A
    repeated query parameter counts with its first value."""
    raw = {name: values[name] for name in values}
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = problems_of(model, error, raw)
        summary = "; ".join(f"{p['field']} {p['message']}" for p in problems)
        first = problems[0]
        detail: dict[str, Any] = {"field": first["field"], "problems": problems}
        if "allowed" in first:
            detail["allowed"] = first["allowed"]
        raise bad_request(f"the {where} is not right: {summary}", **detail) from None


def _check_answer(declared: Contract, request: web.Request, response: web.StreamResponse) -> None:
    """A JSON answer must match the model declared for its status: a mismatch is ours.
    With ``web.strict_answers`` (the tests; and an app that does not say) it is a 500;
    otherwise the answer goes out as it is and the mismatch is logged, so that a fault of
    ours never keeps a call from the desk."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return
    fault = None
    if response.status not in declared.answers:
        fault = f"{request.method} {request.path}: {response.status} is not declared"
    else:
        adapter = declared.adapter(response.status)
        if adapter is None or not isinstance(response.body, bytes):
            return
        try:
            adapter.validate_json(response.body)
        except ValidationError as error:
            fault = (
                f"{request.method} {request.path}: the {response.status} answer does not "
                f"match its declaration: {error}"
            )
    if fault is None:
        return
    if request.app.get(STRICT_ANSWERS, True):
        raise RuntimeError(fault)
    log.error("%s (sent as it is)", fault)


class ErrorBody(BaseModel):
    """The project's error body: a code, a message a person can act on, and sometimes
    more (the field at fault, the allowed values, the owner of a call)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="what went wrong, as a code: bad_request, not_found, ...")
    message: str = Field(description="what went wrong and what to do, for a person")
    field: str | None = Field(None, description="the parameter or body field at fault")
    problems: list[dict[str, Any]] | None = Field(
        None, description="each problem with the request: field, message, allowed values"
    )
    allowed: list[str] | None = None
    owner: str | None = Field(None, description="who owns the call (409 already_owned)")


class CallPath(Parameters):
    call_id: Id
