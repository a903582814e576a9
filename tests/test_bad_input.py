"""Every route of the server against what a careless person or an intruder types: huge
and odd numbers and NUL bytes in the path, out-of-range dates and huge numbers in the
query, bodies that are not UTF-8, JSON nested too deep, NUL bytes in JSON strings.

Each must be answered with a 4xx, with the project's JSON error body on the API, the
family API and the webhooks, and must leave no error (and so no traceback) in the log.
The routes are read from the running application, so a new route is tried too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from yarl import URL

from callcenter.store import models as m
from callcenter.web.sessions import CSRF_HEADER
from tests.api_support import Api, set_password
from tests.board_support import Browser, browser
from tests.desk_support import scalar
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually

# A value of each path parameter that names something real, so that the other
# parameter's bad value is what the route meets. Users: one whose changes harm no test.
_GOOD = {
    "call_id": "1",
    "welfare_id": "1",
    "code": "H0001",
    "username": "old.hand",
    "name": "family.js",
    "path": "board/board.js",
    "package": "leaflet",
    "token": "AAAAAQAAAAEAAAAA",
    "outbox_id": "1",
    "operator_id": "1",
    "serial": "BU-H0001",
    "carer": "C001",
    "day": "2026-12-07",
    "call_type": "emergency",
}
# A body each command takes, so that a bad path value is what it meets.
_GOOD_BODY: dict[str, Any] = {
    "/api/calls/{call_id}/cancel": {"reason": "entered_in_error"},
    "/api/calls/{call_id}/carers/{code}/stand-down": {"why": "not needed"},
    "/api/calls/{call_id}/carers/{code}/status": {"status": "on_scene"},
    "/api/calls/{call_id}/notes": {"text": "rang the daughter"},
    "/api/calls/{call_id}/resolve": {"outcome": "helped_at_home"},
    "/api/calls/{call_id}/dispatch": {"carer": "C001"},
    "/api/me/language": {"language": "en"},
    "/api/users": {
        "username": "new.hand",
        "name": "新人",
        "role": "operator",
        "password": "a-long-enough-password",
        "phone": "+8613800000009",
        "language": "en",
    },
    "/family/api/code": {"phone": "+8613800000000"},
    "/family/api/verify": {"phone": "+8613800000000", "code": "123456"},
    "/api/users/{username}/active": {"active": False},
    # Too short: refused before Argon2 hashes it (a second per request); the username in
    # the path meets the same lookup through /active.
    "/api/users/{username}/password": {"password": "short"},
    "/api/welfare/{welfare_id}": {"outcome": "well"},
    "/c/{token}/answer": {"answer": "accept"},
    # The register's: refused by its rules (a 422) when the path is good, so a bad path
    # value is what the route meets and nothing is changed.
    "/api/register/households": {
        "code": "H0001",
        "address": "x",
        "lat": 0,
        "lon": 0,
        "home_station": "S01",
        "backup_station": "S01",
    },
    "/api/register/devices": {"serial": "BU-H0001", "kind": "base_unit", "household": "H0001"},
    "/api/register/devices/{serial}/move": {"household": "H0001"},
    "/api/register/stations": {
        "code": "S01",
        "name": "x",
        "address": "x",
        "lat": 0,
        "lon": 0,
        "phone": "+8613800000000",
    },
    "/api/register/carers": {
        "code": "C001",
        "name": "x",
        "phone": "+8613800000000",
        "station": "S01",
        "shift_pattern": "X",
    },
    "/api/register/shift-patterns": {
        "code": "X",
        "name": "x",
        "starts_at": "07:00",
        "duration_minutes": 0,
        "weekdays": [],
    },
}
# Bad values for a path parameter (written as they go on the wire).
_BAD_IN_PATH = [
    "9223372036854775808",  # 2**63: past every integer column
    "9223372036854775807",  # 2**63 - 1: past a 32-bit integer column
    "2147483648",
    "99999999999999999999999999999999999999",
    "9" * 5000,  # past the 4300 digits Python's int() reads from text
    "-1",
    "0",
    "%EF%BC%91%EF%BC%92",  # full-width "12": digits to str.isdigit
    "%00",
    "1%00",
    "%0A",
    "%FF%FE",  # not UTF-8 once decoded
    "..%2F..%2Fetc%2Fpasswd",
    "x" * 3000,
]
_DATE_PARAMETERS = ("day", "from", "to", "since", "week")
_BAD_DATES = [
    "9999-12-31",
    "0001-01-01",
    "10000-01-01",
    "2026-02-30",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "%00",
]
_OTHER_PARAMETERS = ("limit", "household", "actor", "state", "by")
# All at once in one query, within the 8 KiB a request line may have (past it, see
# test_a_request_too_long_to_read_is_one_warning).
_BAD_VALUES = ["9223372036854775808", "-1", "%00", "%0A", "%FF", "x" * 1000]
# Past the 4300 digits Python's int() reads from text; one parameter at a time.
_LONG_NUMBER = "9" * 4400
# Nested far deeper than Python's recursion limit, yet inside the 64 KiB a body may have.
_DEEP = b"[" * 30_000 + b"]" * 30_000


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # e.g. /api/calls/{call_id}/notes

    @property
    def parameters(self) -> list[str]:
        return re.findall(r"\{(\w+)(?::[^}]*)?\}", self.template)

    def path(self, **values: str) -> str:
        filled = {name: values.get(name, _GOOD[name]) for name in self.parameters}
        return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: filled[m.group(1)], self.template)

    @property
    def json_errors(self) -> bool:
        """Whether its refusals are the project's JSON error body."""
        return self.template.startswith(("/api/", "/family/api/", "/sms/"))


def routes_of(api: Api) -> list[Route]:
    """Every route the running server answers, with the ways it is asked."""
    assert api.server.web is not None
    found = []
    for resource in api.server.web.app.router.resources():
        template = resource.canonical
        for route in resource:
            if route.method in ("GET", "POST"):
                found.append(Route(route.method, template))
    return found


@dataclass
class Asker:
    """A signed-in administrator on the board and a signed-in family member, in one
    cookie jar; each request carries the CSRF token of the session it goes to."""

    client: Browser
    family_csrf: str

    async def ask(
        self, route: Route, path: str, *, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes, str]:
        token = self.family_csrf if path.startswith("/family/") else self.client.csrf
        headers = {CSRF_HEADER: token}
        if content_type:
            headers["Content-Type"] = content_type
        async with self.client.http.request(
            route.method,
            URL(self.client.api.server.web_url + path, encoded=True),
            data=body,
            headers=headers,
            allow_redirects=False,
        ) as reply:
            return reply.status, await reply.read(), reply.content_type


async def _family_csrf(api: Api, client: Browser) -> str:
    """Sign the jar in to the family portal as a contact of H0001: its CSRF token."""
    phone: str = await scalar(
        api.server,
        select(m.FamilyContact.phone)
        .join(m.Household, m.Household.id == m.FamilyContact.household_id)
        .where(m.Household.code == "H0001")
        .limit(1),
    )
    start = await client.get("/family/api/sign-in")
    headers = {CSRF_HEADER: (await start.json())["csrf_token"]}
    asked = await client.post(
        "/family/api/code", json={"phone": phone}, headers=headers, csrf=False
    )
    assert asked.status == 202
    fake = fake_of(api.server)

    async def texted() -> bool:
        return bool(fake.sent_to(phone))

    await eventually(texted, what="the family sign-in code")
    code = re.search(r"\b(\d{6})\b", fake.sent_to(phone)[-1].body)
    assert code is not None
    verified = await client.post(
        "/family/api/verify",
        json={"phone": phone, "code": code.group(1)},
        headers=headers,
        csrf=False,
    )
    assert verified.status == 200
    csrf: str = (await verified.json())["csrf_token"]
    return csrf


# Routes that read a form, not JSON.
_FORMS = frozenset({"/login", "/sms/inbound", "/sms/status"})


def _signs_out(route: Route) -> bool:
    return route.template in ("/logout", "/family/api/logout")


def bad_requests(routes: list[Route]) -> Iterator[tuple[Route, str, bytes | None, str]]:
    """(route, path, body, content type) for every bad input tried."""
    for route in routes:
        body = None
        if route.method == "POST":
            body = json.dumps(_GOOD_BODY.get(route.template, {})).encode()
        for name in route.parameters:
            for value in _BAD_IN_PATH:
                yield route, route.path(**{name: value}), body, "application/json"
        if route.method == "GET" and route.json_errors:  # pages and files read no query
            # Every parameter at once: a route meets the bad value in whichever it reads.
            for names, values in ((_DATE_PARAMETERS, _BAD_DATES), (_OTHER_PARAMETERS, _BAD_VALUES)):
                for value in values:
                    query = "&".join(f"{name}={value}" for name in names)
                    yield route, f"{route.path()}?{query}", None, ""
            for name in _OTHER_PARAMETERS:
                yield route, f"{route.path()}?{name}={_LONG_NUMBER}", None, ""
        elif route.method == "POST" and not _signs_out(route):
            path = route.path()
            yield route, path, b'{"text": "\xff\xfe"}', "application/json"
            yield route, path, _DEEP, "application/json"
            yield route, path, b"Body=\xff\xfe&From=%FF", "application/x-www-form-urlencoded"
            yield route, path, b"Body=a%00&username=%00", "application/x-www-form-urlencoded"
            yield route, path, b"\xff\xfe", "application/x-www-form-urlencoded; charset=nonsense"
            yield route, path, b"\xff\xfe", "text/plain"


_BAD_FIELD_VALUES: list[Any] = ["a\u0000b", 10**30, 1e308, -(2**63) - 1, [], {"a": 1}, None]


def _json_bodies(route: Route) -> Iterator[bytes]:
    """The route's good body with each field in turn given each bad value; then bodies
    JSON itself allows but Python reads as non-finite numbers."""
    good = _GOOD_BODY.get(route.template, {"text": "x"})
    for field in good:
        for bad in _BAD_FIELD_VALUES:
            yield json.dumps({**good, field: bad}).encode()
    yield json.dumps({"\u0000": 1, **good}).encode()
    yield b'{"text": NaN}'
    yield b'{"text": Infinity}'
    yield b'{"text": 1e99999}'


def _refusal_problem(route: Route, status: int, body: bytes, content_type: str) -> str | None:
    """What is wrong with this answer to bad input, if anything."""
    if status >= 500:
        return f"status {status}"
    if status < 400 or not route.json_errors:
        return None
    if content_type != "application/json":
        return f"{status} as {content_type}, not the JSON error body"
    error: Any = json.loads(body)
    if not (isinstance(error, dict) and "error" in error and "message" in error):
        return f"{status} without the JSON error body: {body[:200]!r}"
    return None


async def test_no_bad_input_on_any_route_gets_a_500_or_a_traceback(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that every route, asked with each bad path value, bad date and number in the
    query, body that is not UTF-8, is not a form, is nested too deep or carries NUL
    bytes and huge numbers in every field, answers a 4xx (or a 2xx/3xx where the input
    is harmless), with the JSON error body on the API, and logs no error."""
    await set_password(api.server, "sun.admin")
    caplog.set_level(logging.ERROR, logger="callcenter")
    await api.press("H0001")  # call 1, so that commands on it reach their bodies
    routes = routes_of(api)
    assert len(routes) > 45
    problems: list[str] = []
    async with browser(api) as client:
        assert (await client.sign_in("sun.admin")).status == 303
        asker = Asker(client, await _family_csrf(api, client))
        tried = 0
        for route, path, body, content_type in bad_requests(routes):
            status, answer, kind = await asker.ask(
                route, path, body=body, content_type=content_type
            )
            tried += 1
            problem = _refusal_problem(route, status, answer, kind)
            if problem is not None:
                problems.append(f"{route.method} {path[:80]} ({content_type}): {problem}")
        for route in routes:
            if route.method != "POST" or _signs_out(route) or route.template in _FORMS:
                continue
            for body in _json_bodies(route):
                status, answer, kind = await asker.ask(
                    route, route.path(), body=body, content_type="application/json"
                )
                tried += 1
                problem = _refusal_problem(route, status, answer, kind)
                if problem is not None:
                    problems.append(f"{route.method} {route.path()} {body[:60]!r}: {problem}")
    errors = [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.ERROR]
    assert problems == [], "\n".join(sorted(set(problems)))
    assert errors == []
    assert tried > 900


async def test_the_five_inputs_the_issue_names_get_a_4xx(api: Api) -> None:
    """Test the examples issue 17 found: service levels for 9999-12-31 and 0001-01-01, a
    welfare id of 2**63, a deeply nested body, a NUL in a board file's name, and an
    unsigned SMS webhook whose form is not UTF-8."""
    await set_password(api.server, "sun.admin")
    async with browser(api) as client:
        assert (await client.sign_in("sun.admin")).status == 303
        base = api.server.web_url
        answers = []
        for day in ("9999-12-31", "0001-01-01"):
            answers.append(await client.get(f"/api/service-levels?day={day}"))
        answers.append(
            await client.post("/api/welfare/9223372036854775808", json={"outcome": "well"})
        )
        answers.append(
            await client.post(
                "/api/me/language", data=_DEEP, headers={"Content-Type": "application/json"}
            )
        )
        async with client.http.get(URL(base + "/static/board/%00.js", encoded=True)) as nul:
            answers.append(nul)
        webhook_errors = []
        for signature in ({}, {"X-Twilio-Signature": "c2lnbmVk"}):
            async with (
                aiohttp.ClientSession() as anonymous,
                anonymous.post(
                    base + "/sms/inbound",
                    data=b"Body=\xff&From=%2B8613800000000",
                    headers={"Content-Type": "application/x-www-form-urlencoded", **signature},
                ) as webhook,
            ):
                answers.append(webhook)
                webhook_errors.append((await webhook.json())["error"])
        assert [a.status // 100 for a in answers] == [4] * 7, [a.status for a in answers]
        # Unsigned: refused before its body is read. Signed: a body no signature can be
        # checked over.
        assert webhook_errors == ["forbidden", "bad_request"]


async def test_a_request_too_long_to_read_is_one_warning(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that a request line or a header past aiohttp's 8 KiB gets a 400 and one
    warning line in the log, not an error with the parser's traceback."""
    caplog.set_level(logging.INFO)
    base = api.server.web_url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/calls?household={'x' * 9000}") as long_line:
            assert long_line.status == 400
        async with http.get(f"{base}/api/calls", headers={"X-Long": "x" * 9000}) as long_header:
            assert long_header.status == 400
    unreadable = [r for r in caplog.records if "not readable HTTP" in r.getMessage()]
    assert [r.levelno for r in unreadable] == [logging.WARNING] * 2
    assert all(r.exc_info is None and r.exc_text is None for r in unreadable)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_request_without_a_sign_in_is_refused_before_its_input_is_read(
    api: Api,
) -> None:
    """Test that an /api request with no credentials is a 401 whatever it carries, a NUL
    included: nothing it sends is read before it has signed in (schemathesis found a
    400 for the NUL first)."""
    for path in ("/api/service-levels?day=%00", "/api/calls?household=H%000001"):
        reply = await api.get(path, who=None)
        assert reply.status == 401, (path, reply)
    signed_in = await api.get("/api/service-levels?day=%00")
    assert signed_in.status == 400, signed_in
