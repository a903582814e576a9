"""What the fake's Messages and Calls resources answer alike: Twilio's error JSON, its
basic-auth check, and its page format (newest first, ``PageToken`` naming the last item
of the previous page, so items arriving meanwhile do not shift later pages)."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000
ERROR_MESSAGES = {
    20001: "Invalid parameter",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21201: "No 'To' number is specified",
    21205: "Url is not a valid URL.",
    21211: "The 'To' number is not a valid phone number.",
    21213: "No 'From' number is specified",
    21220: "Call is not in-progress. Cannot redirect.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
}


class Listed(Protocol):
    """A resource a list pages through: known by its sid, shown as Twilio's JSON."""

    @property
    def sid(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


def error(status: int, code: int, message: str | None = None) -> web.Response:
    """Twilio's error answer, which the library raises as TwilioRestException."""
    return web.json_response(
        {
            "code": code,
            "message": message or ERROR_MESSAGES.get(code, "Error"),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


def refusal(request: web.Request, account_sid: str, auth_token: str) -> web.Response | None:
    """A 401 unless the request carries this account's credentials; 404 for another account."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, _, password = decoded.partition(":")
    authentic = (
        scheme.lower() == "basic"
        and secrets.compare_digest(user, account_sid)
        and secrets.compare_digest(password, auth_token)
    )
    if not authentic:
        return error(401, 20003)
    if request.match_info["account_sid"] != account_sid:
        return error(404, 20404)
    return None


def listing(
    newest_first: Sequence[Listed],
    matches: Callable[[Any, Any], bool],
    query: Any,
    path: str,
    key: str,
) -> web.Response:
    """One page of ``newest_first`` filtered by ``matches(item, query)``, in Twilio's page
    format under ``key`` ("messages", "calls"); ``path`` is the list's own path."""
    try:
        matching = [item for item in newest_first if matches(item, query)]
        page_size = min(int(query.get("PageSize", DEFAULT_PAGE_SIZE)), _MAX_PAGE_SIZE)
        page = int(query.get("Page", 0))
    except ValueError as wrong:
        return error(400, 20001, f"Invalid parameter: {wrong}")
    if page_size < 1:
        return error(400, 20001, "PageSize must be at least 1")
    start = 0
    token = query.get("PageToken", "")
    if token.startswith("PA"):
        sids = [item.sid for item in matching]
        start = sids.index(token[2:]) + 1 if token[2:] in sids else len(matching)
    chunk = matching[start : start + page_size]
    filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

    def page_uri(number: int, page_token: str | None) -> str:
        params = {**filters, "PageSize": str(page_size), "Page": str(number)}
        if page_token is not None:
            params["PageToken"] = page_token
        return f"{path}?{urlencode(params)}"

    has_more = start + page_size < len(matching)
    return web.json_response(
        {
            key: [item.to_json() for item in chunk],
            "end": start + len(chunk) - 1 if chunk else 0,
            "first_page_uri": page_uri(0, None),
            "next_page_uri": page_uri(page + 1, "PA" + chunk[-1].sid) if has_more else None,
            "previous_page_uri": None,
            "page": page,
            "page_size": page_size,
            "start": start,
            "uri": page_uri(page, token or None),
        }
    )


def _parse_moment(text: str) -> datetime | date:
    """A date filter's value: ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    if "T" in text:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return date.fromisoformat(text)


def within_bounds(moment: datetime, name: str, query: Any) -> bool:
    """Whether ``moment`` passes the list's date filters on ``name`` ("DateSent",
    "StartTime", "EndTime"): ``name`` (that day or moment), ``name>`` and ``name<`` (on or
    after, on or before). ValueError for a value that is not a date."""
    moment = moment.astimezone(UTC)
    for key, raw in query.items():
        if not key.startswith(name):
            continue
        op, value = key.removeprefix(name), raw
        # The library sends date_sent_after as "DateSent>"; Twilio reads it as "on or after".
        # The documented spelling "DateSent=>=YYYY-MM-DD" is accepted too.
        if value[:1] in ("<", ">"):
            op, value = value[:1], value[1:].removeprefix("=")
        bound = _parse_moment(value)
        seen: datetime | date = moment if isinstance(bound, datetime) else moment.date()
        if op == ">" and seen < bound:
            return False
        if op == "<" and seen > bound:
            return False
        if op == "" and seen != bound:
            return False
    return True


class RefusedError(Exception):
    """A request the fake answers with Twilio's error JSON."""

    def __init__(self, status: int, code: int, message: str | None = None) -> None:
        super().__init__(message or ERROR_MESSAGES.get(code, "Error"))
        self.status, self.code = status, code

    def response(self) -> web.Response:
        return error(self.status, self.code, str(self))
