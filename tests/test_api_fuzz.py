"""Schema-driven fuzzing of the whole API with schemathesis, against the running server.

The server runs as in every API test (real broker, SQLite database seeded with the demo
district, the local fake Twilio), with three open calls. Schemathesis reads the API's
own description (/api/openapi.json) and sends, for every operation, the examples,
the boundary and wrong values its coverage phase derives from each schema and a
bounded number of generated requests, in a fixed order from a fixed seed (the same
requests on every run). Every request carries its credentials as a client would:
an operator signed in to the board (session cookie, CSRF header), a supervisor's and an
administrator's bearer token, in turn, for the desk's API; a family member's session for
the family API; the sign-in page's token for the family sign-in; and, for Twilio's
webhooks, a signature computed like Twilio's with the fake Twilio's auth token. One
request in seven goes without any, and must be refused (401 or 403).

What every answer must show:

- no 5xx, whatever was sent;
- the status is one the operation declares, with the declared media type, and a JSON
  body matches the declared schema;
- a request the schema does not allow is refused with a 4xx;
- nothing changed on a 4xx: the rows of every table a request can write are counted
  (calls with their versions, history, carers sent, timers, outbox, inbound SMS, marked
  phones, welfare calls by state, accounts with their roles, passwords, tokens and
  languages, board and family sessions, family codes) before and after it, and must be
  the same. Two kinds of row are meant to be written by a refusal and are left out:
  a wrong family code's audit row and the code's attempt count (they are how guessing
  is cut off), and a session's last-seen time (any request touches it). Audit rows of
  reads are counted: a refused read must not leave one.

Only SQLite: what this test looks for is in the handlers and their schemas, which are
the same on both databases; the database-specific paths (locks, limits racing on
PostgreSQL) have tests of their own on both.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from multidict import MultiDict
from schemathesis.engine import events, from_schema
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from yarl import URL

from callcenter.broker import EmbeddedBroker
from callcenter.store import models as m
from callcenter.web.family.signin import CODE_WRONG, SIGN_IN_CSRF_COOKIE
from callcenter.web.openapi import OPENAPI_PATH
from callcenter.web.sessions import CSRF_HEADER, SESSION_COOKIE
from callcenter.web.twilio_form import SHAPES
from tests.api_support import Api, running_api, set_password, token_of, trust_local_proxy
from tests.board_support import browser
from tests.fixtures.database import SqliteTemplates
from tests.fixtures.fake_twilio import fake_of
from tests.test_family_portal import contact_phone, sign_in

SEED = 20261123
# Generated requests per operation, on top of the examples and the coverage phase's.
EXAMPLES_PER_OPERATION = 8
# Every this many requests, one goes without credentials.
WITHOUT_CREDENTIALS_EVERY = 7
# The accounts the run signs in with; the fuzzer's user commands are turned to SPARE.
OPERATOR, SUPERVISOR, ADMIN = "li.na", "zhao.min", "sun.admin"
SPARE = "wang.wei"


@dataclass
class Credentials:
    """What each kind of caller sends, and which requests went without."""

    base_url: str
    board_cookie: str
    board_csrf: str
    family_cookie: str
    family_csrf: str
    spare_family_cookie: str
    sign_in_cookie: str
    sign_in_csrf: str
    twilio_token: str
    twilio_account: str
    turn: itertools.count[int] = field(default_factory=itertools.count)
    # Which account a desk request goes as, and which address a sign-in comes from: by
    # counters, not by hash(case.id) (random ids, and str hashes salted per process),
    # so that the same requests go as the same callers on every run.
    desk_turn: itertools.count[int] = field(default_factory=itertools.count)
    address_turn: itertools.count[int] = field(default_factory=itertools.count)
    without: set[str] = field(default_factory=set)
    # Who each case was sent as: an account, "family", "sign-in", "twilio" or "nobody".
    sent_as: dict[str, str] = field(default_factory=dict)


_ACCOUNT_SID = SHAPES["AccountSid"].pattern


def _security(case: Any) -> str:
    schemes = [name for item in case.operation.definition.raw.get("security", []) for name in item]
    return schemes[0] if schemes else "none"


def _twilio_form(body: Any) -> MultiDict[str]:
    """The form as requests will send it and aiohttp will read it back."""
    form: MultiDict[str] = MultiDict()
    if isinstance(body, dict):
        for name, value in body.items():
            for one in value if isinstance(value, list) else [value]:
                if one is not None:
                    form.add(str(name), str(one))
    return form


def _credentials_hook(credentials: Credentials) -> Callable[..., None]:
    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        scheme = _security(case)
        if scheme == "none":
            return
        headers = case.headers if case.headers is not None else {}
        case.headers = headers
        if next(credentials.turn) % WITHOUT_CREDENTIALS_EVERY == 0:
            credentials.without.add(case.id)
            credentials.sent_as[case.id] = "nobody"
            return
        credentials.sent_as[case.id] = scheme
        if scheme in ("bearer", "boardSession"):
            credentials.sent_as[case.id] = _desk(credentials, case, headers)
        elif scheme == "familySession":
            logout = case.operation.path.endswith("/logout")
            cookie = credentials.spare_family_cookie if logout else credentials.family_cookie
            headers["Cookie"] = f"callcenter_family={cookie}"
            headers[CSRF_HEADER] = credentials.family_csrf
        elif scheme == "familySignIn":
            headers["Cookie"] = f"{SIGN_IN_CSRF_COOKIE}={credentials.sign_in_cookie}"
            headers[CSRF_HEADER] = credentials.sign_in_csrf
            # As from many relatives' phones (through the trusted local proxy): one
            # address would meet its limit of codes within the run, and which requests
            # get through before it would depend on the order they ran in.
            headers["X-Forwarded-For"] = f"198.51.100.{next(credentials.address_turn) % 250 + 1}"
        elif scheme == "twilioSignature":
            # Twilio posts its own account's webhooks: a well-shaped AccountSid becomes
            # ours (one of another shape stays, for the refusals the fuzzing looks for).
            if isinstance(case.body, dict) and _ACCOUNT_SID.fullmatch(
                str(case.body.get("AccountSid", ""))
            ):
                case.body["AccountSid"] = credentials.twilio_account
            url = credentials.base_url + case.formatted_path
            signature = RequestValidator(credentials.twilio_token).compute_signature(
                url, _twilio_form(case.body)
            )
            headers["X-Twilio-Signature"] = signature

    return before_call


def _desk(credentials: Credentials, case: Any, headers: dict[str, Any]) -> str:
    who = (OPERATOR, SUPERVISOR, ADMIN)[next(credentials.desk_turn) % 3]
    if case.path_parameters and case.path_parameters.get("username") in (
        OPERATOR,
        SUPERVISOR,
        ADMIN,
    ):
        # The run's own accounts keep their passwords and stay switched on.
        case.path_parameters["username"] = SPARE
    if who == OPERATOR:
        headers["Cookie"] = f"{SESSION_COOKIE}={credentials.board_cookie}"
        headers[CSRF_HEADER] = credentials.board_csrf
    else:
        headers["Authorization"] = f"Bearer {token_of(who)}"
    return who


# What a refused request must leave as it was (see the module's docstring): per table,
# its row count and what more tells of a row added or changed.
_COUNTED: dict[str, tuple[Any, ...]] = {
    "calls": (m.Call, func.max(m.Call.id), func.sum(m.Call.version)),
    "call_history": (m.CallHistory, func.max(m.CallHistory.id)),
    "call_assignments": (m.CallAssignment, func.max(m.CallAssignment.id)),
    "timers": (m.Timer, func.max(m.Timer.id)),
    "outbox": (m.OutboxItem, func.max(m.OutboxItem.id)),
    "inbound_sms": (m.InboundSms, func.max(m.InboundSms.id)),
    "broken_phones": (m.BrokenPhone,),
    "family_codes": (m.FamilyCode, func.max(m.FamilyCode.id), func.count(m.FamilyCode.used_at)),
    "family_sessions": (m.FamilySession, func.max(m.FamilySession.token_sha256)),
    "web_sessions": (m.WebSession, func.max(m.WebSession.token_sha256)),
    "welfare_calls": (
        m.WelfareCall,
        func.max(m.WelfareCall.id),
        func.count(m.WelfareCall.done_at),
    ),
}
# The fingerprint is read before every request and after every refusal, thousands of
# times a run: all the counts are one statement (a scalar subquery each), built once.
_COUNT_NAMES = [name for name, (_, *more) in _COUNTED.items() for _ in range(1 + len(more))]
_COUNTS = select(
    *(
        select(aggregate).select_from(model).scalar_subquery()
        for model, *more in _COUNTED.values()
        for aggregate in (func.count(), *more)
    ),
    select(func.count())
    .select_from(m.AuditEntry)
    .where(m.AuditEntry.action != CODE_WRONG)
    .scalar_subquery(),
)
_OPERATORS = select(
    m.Operator.username,
    m.Operator.role,
    m.Operator.active,
    m.Operator.language,
    m.Operator.password_hash,
    m.Operator.token_sha256,
)


async def fingerprint(api: Api) -> dict[str, Any]:
    """What a refused request must leave as it was (see the module's docstring)."""
    async with AsyncSession(api.server.engine) as session:
        *counts, audited = (await session.execute(_COUNTS)).one()
        operators = (await session.execute(_OPERATORS)).all()
    found: dict[str, Any] = {
        name: tuple(value for of, value in zip(_COUNT_NAMES, counts, strict=True) if of == name)
        for name in _COUNTED
    }
    found["audit_log"] = audited
    found["operators"] = sorted(tuple(row) for row in operators)
    return found


@dataclass
class _Run:
    """What the checks of the run under way compare against."""

    state: Callable[[], dict[str, Any]] = dict
    credentials: Credentials | None = None
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Answers to the cases' own requests, by "<security scheme> <status class>".
    answers: Counter[str] = field(default_factory=Counter)


_RUN = _Run()


@schemathesis.check
def nothing_changes_on_a_4xx(ctx: Any, response: Any, case: Any) -> bool | None:
    """A refused request leaves every counted row as it was."""
    if _RUN.credentials is not None and response.request.method == case.operation.method.upper():
        who = _RUN.credentials.sent_as.get(case.id, "public")
        _RUN.answers[f"{who} {response.status_code // 100}xx"] += 1
    before = _RUN.before.get(case.id)
    if before is not None and 400 <= response.status_code < 500:
        after = _RUN.state()
        changed = {k: (before[k], after[k]) for k in after if after[k] != before[k]}
        assert not changed, f"a {response.status_code} changed {sorted(changed)}: {changed}"
    return None


@schemathesis.check
def refused_without_credentials(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request sent without credentials is refused."""
    # Only the case's own request: the checks also see the same case sent with a method
    # the address does not take.
    asked = response.request.method == case.operation.method.upper()
    if asked and _RUN.credentials is not None and case.id in _RUN.credentials.without:
        assert response.status_code in (401, 403), (
            f"sent without credentials, answered {response.status_code}"
        )
    return None


@dataclass
class Report:
    operations: set[str] = field(default_factory=set)
    examples: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    without: int = 0


def _run(
    document: dict[str, Any],
    credentials: Credentials,
    state: Callable[[], dict[str, Any]],
) -> Report:
    """The schemathesis run, in this thread; ``state`` reads the fingerprint."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": credentials.base_url,
            "workers": 1,
            "generation": {
                "deterministic": True,
                "max-examples": EXAMPLES_PER_OPERATION,
                "with-security-parameters": False,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "positive_data_acceptance": {"enabled": False},
                "ignored_auth": {"enabled": False},
            },
            "request-timeout": 30,
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config)
    sign = _credentials_hook(credentials)

    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        sign(context, case, kwargs)
        _RUN.before[case.id] = state()

    _RUN.state = state
    _RUN.credentials = credentials
    _RUN.answers.clear()
    schemathesis.hook(before_call)
    try:
        report = _report(schema)
        report.answers = Counter(_RUN.answers)
        report.without = len(credentials.without)
        return report
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)
        _RUN.before.clear()
        _RUN.credentials = None


def _report(schema: Any) -> Report:
    report = Report()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            report.operations.add(event.recorder.label)
            report.examples += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        info = check.failure_info
                        report.failures.append(
                            f"{event.recorder.label}: {check.name}: {info.failure.title}: "
                            f"{info.failure.message[:400]} -- {info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
    return report


@pytest.fixture
async def fuzzed_api(
    broker: EmbeddedBroker, topic_prefix: str, sqlite_templates: SqliteTemplates, tmp_path: Path
) -> Any:
    database = tmp_path / "callcenter.db"
    shutil.copyfile(await sqlite_templates.path("seeded"), database)
    async with running_api(broker, topic_prefix, f"sqlite+aiosqlite:///{database}") as api:
        yield api


async def test_every_operation_holds_its_schema_under_fuzzing(
    fuzzed_api: Api, record_property: Callable[[str, object], None]
) -> None:
    """Test that schemathesis, over every operation of /api/openapi.json with a fixed
    seed, finds no 5xx, no answer off its schema, no wrong input accepted, no state
    changed by a 4xx and no request without credentials let through (see the module's
    docstring)."""
    api = fuzzed_api
    trust_local_proxy(api)
    for household in ("H0001", "H0002", "H0003"):
        await api.press(household)
    await set_password(api.server, OPERATOR)
    async with browser(api) as board, browser(api) as family, browser(api) as spare:
        assert (await board.sign_in(OPERATOR)).status == 303
        phone = await contact_phone(api, "H0001")
        await sign_in(api, family, phone)
        await sign_in(api, spare, phone)
        sign_in_token = await family.get("/family/api/sign-in")
        url = api.server.web_url
        family_api = URL(url) / "family" / "api" / ""
        cookies = {
            name: morsel.value
            for name, morsel in family.http.cookie_jar.filter_cookies(family_api).items()
        }
        board_cookie = board.http.cookie_jar.filter_cookies(URL(url) / "api" / "")[
            SESSION_COOKIE
        ].value
        spare_cookie = spare.http.cookie_jar.filter_cookies(family_api)["callcenter_family"].value
        credentials = Credentials(
            base_url=url,
            board_cookie=board_cookie,
            board_csrf=board.csrf,
            family_cookie=cookies["callcenter_family"],
            family_csrf=family.csrf,
            spare_family_cookie=spare_cookie,
            sign_in_cookie=cookies[SIGN_IN_CSRF_COOKIE],
            sign_in_csrf=(await sign_in_token.json())["csrf_token"],
            twilio_token=fake_of(api.server).auth_token,
            twilio_account=fake_of(api.server).account_sid,
        )
    # No phone is rung: a call the desk places (click-to-call from a supervisor with a
    # phone) reports its statuses later, into another example's window. Calling the
    # household has its own tests (test_voice_bridge.py); here it answers 422 voice_off.
    api.server.desk.rings = False
    document = (await api.get(OPENAPI_PATH)).body
    loop = asyncio.get_running_loop()

    def state() -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(fingerprint(api), loop).result(timeout=30)

    started = time.perf_counter()
    report = await asyncio.to_thread(_run, document, credentials, state)
    elapsed = time.perf_counter() - started
    summary = (
        f"schemathesis: {len(report.operations)} operations, {report.examples} examples, "
        f"failures: {len(report.failures)}, errors: {len(report.errors)}; "
        f"{sum(n for k, n in report.answers.items() if k.endswith('2xx'))} answered 2xx, "
        f"{sum(n for k, n in report.answers.items() if k.endswith('4xx'))} 4xx "
        f"(seed {SEED}, {elapsed:.0f} s)"
    )
    record_property("schemathesis", summary)
    print(summary)
    print(f"schemathesis answers: {dict(sorted(report.answers.items()))}")
    assert not report.errors, "\n".join(report.errors)
    assert not report.failures, "\n".join(report.failures)
    operations = {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }
    assert report.operations == operations, operations ^ report.operations
    # The credentials work: each kind of caller got through, and some went without.
    for who in (OPERATOR, SUPERVISOR, ADMIN, "familySession", "familySignIn", "twilioSignature"):
        assert report.answers[f"{who} 2xx"] > 0, (who, report.answers)
    assert report.answers["nobody 4xx"] > 0 and report.answers["public 2xx"] > 0
    assert urlsplit(url).hostname == "127.0.0.1"
