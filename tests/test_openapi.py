"""The API's OpenAPI description: every route declared or listed as a page, served at
/api/openapi.json, and the declarations enforced on what goes in and out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import schemathesis
from aiohttp import web
from pydantic import BaseModel

from callcenter.web import openapi
from callcenter.web.bodies import NoteBody, PasswordBody, read_body
from callcenter.web.contract import Access, CallPath, contract
from callcenter.web.errors import json_errors
from callcenter.web.openapi import NOT_DESCRIBED, OPENAPI_PATH, described_routes, openapi_document
from callcenter.web.responses import json_reply
from callcenter.web.state import STRICT_ANSWERS
from tests.api_support import Api


def _app_of(api: Api) -> web.Application:
    assert api.server.web is not None
    return api.server.web.app


async def test_every_route_is_declared_or_listed_as_a_page(api: Api) -> None:
    """Test that every route of the running server has a contract, or is one of the
    pages and files listed with a reason, and that the list names no route that is gone
    or that is declared after all."""
    undeclared = []
    seen = set()
    for method, path, declared in described_routes(_app_of(api)):
        seen.add((method, path))
        if declared is None and (method, path) not in NOT_DESCRIBED:
            undeclared.append(f"{method} {path}")
        if declared is not None and (method, path) in NOT_DESCRIBED:
            undeclared.append(f"{method} {path} is declared and listed as a page")
    assert not undeclared, (
        "routes without @contract (declare their models, or list them in "
        f"callcenter/web/openapi.py NOT_DESCRIBED with why): {undeclared}"
    )
    assert set(NOT_DESCRIBED) <= seen, f"listed but gone: {set(NOT_DESCRIBED) - seen}"


async def test_the_description_is_served_and_names_every_declared_route(api: Api) -> None:
    """Test that /api/openapi.json is OpenAPI 3.1 that schemathesis loads, with one
    operation per declared route, and that it needs a sign-in like the rest of /api/."""
    assert (await api.get(OPENAPI_PATH, who=None)).status == 401
    reply = await api.get(OPENAPI_PATH)
    assert reply.status == 200, reply
    document: dict[str, Any] = reply.body
    assert document["openapi"] == "3.1.0"
    declared = {
        (method.lower(), path)
        for method, path, found in described_routes(_app_of(api))
        if found is not None
    }
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert described == declared
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(declared)
    detail = document["paths"]["/api/calls/{call_id}"]["get"]
    assert detail["parameters"][0]["schema"]["type"] == "integer"
    assert set(detail["responses"]) >= {"200", "400", "401", "403", "404", "503"}
    users = document["paths"]["/api/users"]["post"]
    assert users["x-role"] == "admin"
    assert users["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/NewUserBody"
    )


async def test_the_description_is_built_once_and_served_from_then_on(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that /api/openapi.json is built on its first request only (building it holds
    the loop for tens of milliseconds) and each later request gets the same copy."""
    built = []

    def counted(app: web.Application) -> dict[str, Any]:
        built.append(app)
        return openapi_document(app)

    monkeypatch.setattr(openapi, "openapi_document", counted)
    first = await api.get(OPENAPI_PATH)
    again = await api.get(OPENAPI_PATH, who="sun.admin")
    assert (first.status, again.status) == (200, 200)
    assert first.body == again.body
    assert built == [_app_of(api)]


# --- the declarations are enforced: a small app of its own --------------------------


class _Wrong(BaseModel):
    """An answer with a field the handler does not send."""

    missing: str


async def _reads_an_undeclared_body(request: web.Request) -> web.Response:
    await read_body(request, PasswordBody)
    return json_reply({})


async def _answers_off_its_declaration(request: web.Request) -> web.Response:
    return json_reply({"something": "else"})


async def _answers_an_undeclared_status(request: web.Request) -> web.Response:
    return json_reply({"text": "x"}, status=202)


@contextlib.asynccontextmanager
async def _serving(
    *routes: tuple[str, Any], strict: bool = True
) -> AsyncIterator[aiohttp.ClientSession]:
    app = web.Application(middlewares=[json_errors])
    app[STRICT_ANSWERS] = strict
    for path, handler in routes:
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            yield http
    finally:
        await runner.cleanup()


async def test_a_handler_cannot_read_or_answer_other_than_it_declares(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test that a body model the route does not declare, an answer off its model and a
    status it does not declare are each a 500 (a fault of ours, logged), and that a path
    parameter off its model is a 400 naming it before the handler runs."""
    public = {"access": Access.PUBLIC}
    async with _serving(
        (
            "/body",
            contract(body=NoteBody, answers={200: _Wrong}, **public)(_reads_an_undeclared_body),
        ),
        ("/answer", contract(answers={200: _Wrong}, **public)(_answers_off_its_declaration)),
        ("/status", contract(answers={200: NoteBody}, **public)(_answers_an_undeclared_status)),
        (
            "/calls/{call_id}",
            contract(path=CallPath, answers={200: _Wrong}, **public)(_answers_off_its_declaration),
        ),
    ) as http:
        for path in ("/body", "/answer", "/status"):
            async with http.post(path, json={}) as reply:
                assert reply.status == 500, path
                assert (await reply.json())["error"] == "internal_error"
        async with http.post("/calls/12x") as reply:
            assert reply.status == 400
            body = await reply.json()
            assert body["field"] == "call_id"
            assert "whole number" in body["message"]
    logged = caplog.text
    assert "PasswordBody is not declared" in logged
    assert "does not match its declaration" in logged
    assert "202 is not declared" in logged


async def test_a_method_an_address_does_not_take_is_a_405_naming_those_it_does(api: Api) -> None:
    """Test that a 405 says which methods the address takes in its Allow header, as HTTP
    requires, as well as in the JSON body (schemathesis found the header missing)."""
    reply = await api.request("DELETE", "/api/calls/1")
    assert reply.status == 405
    assert reply.body["allowed"] == ["GET", "HEAD"]
    assert reply.headers.get("Allow") == "GET, HEAD"
    trace = await api.request("TRACE", "/api/me/language")
    assert trace.status == 405
    assert trace.headers.get("Allow") == "POST"


async def test_an_answer_that_is_not_a_word_is_refused_on_the_carer_page(api: Api) -> None:
    """Test that a carer page answer whose ``answer`` is an object or a list is a 400,
    not a 500 (schemathesis found it: the word was looked up in a dict unchecked)."""
    for answer in ({}, [], None):
        reply = await api.request("POST", "/c/anything/answer", json={"answer": answer}, who=None)
        assert reply.status == 400, reply
        assert reply.body["error"] == "bad_request"


async def test_switching_an_account_needs_a_true_or_false(api: Api) -> None:
    """Test that ``active`` must be true or false: 0, 1 or "off" are refused, not read as
    a switch (schemathesis found 0 switching an account off)."""
    for sent in (0, 1, "off", "true", None):
        reply = await api.post("/api/users/wang.wei/active", {"active": sent}, who="sun.admin")
        assert reply.status == 400, (sent, reply)
        assert reply.body["problems"][0]["field"] == "active"
    users = (await api.get("/api/users", who="sun.admin")).body["users"]
    assert next(u for u in users if u["username"] == "wang.wei")["active"] is True


@pytest.mark.parametrize("path", ["/sms/inbound", "/sms/status"])
async def test_a_webhook_post_that_is_no_form_is_refused(api: Api, path: str) -> None:
    """Test that a webhook post whose body is not the form Twilio posts (multipart without
    a boundary) is a 415 with the project's error body, signed or not, not a 500
    (schemathesis found it)."""
    reply = await api.request(
        "POST",
        path,
        who=None,
        data=b"Body=hi&From=%2B8613800138000&MessageSid=SM1",
        headers={"Content-Type": "multipart/form-data", "X-Twilio-Signature": "x"},
    )
    assert reply.status == 415, reply
    assert reply.body["error"] == "unsupported_media_type"


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
async def test_a_day_at_the_ends_of_the_calendar_is_a_400(api: Api, day: str) -> None:
    """Test that service levels of the first or last day Python knows (whose next day or
    time-zone bounds do not exist) are a 400 naming ``day``, not a 500."""
    reply = await api.get(f"/api/service-levels?day={day}")
    assert reply.status == 400, reply
    assert reply.body["field"] == "day"


async def test_a_welfare_call_id_past_bigint_is_not_found(api: Api) -> None:
    """Test that recording a welfare call whose id no database column can hold is a 404,
    as for a call, not a 500."""
    reply = await api.post(f"/api/welfare/{2**63}", {"outcome": "well"})
    assert reply.status == 404, reply


async def test_a_live_desk_sends_an_answer_off_its_declaration_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test that without ``web.strict_answers`` an answer that does not match its model
    goes out as it is (an operator must still see the call) with an ERROR naming it."""
    handler = contract(answers={200: _Wrong}, access=Access.PUBLIC)(_answers_off_its_declaration)
    async with (
        _serving(("/answer", handler), strict=False) as http,
        http.post("/answer", json={}) as reply,
    ):
        assert reply.status == 200
        assert await reply.json() == {"something": "else"}
    assert "does not match its declaration" in caplog.text
    assert "(sent as it is)" in caplog.text
