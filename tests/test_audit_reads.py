"""Every answer that carries a household's data leaves an audit row: a walk over every
operator route, each checked for its row, and a census of the API's routes so that a new
one must be put on one list or the other. Family and carer pages are walked in
test_family_portal.py and test_carer_page.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from callcenter.web.app import build_app
from tests.api_support import Api, token_of
from tests.ingest_support import eventually

ACTOR = "operator:li.na"

# Every operator route that answers with a household's data, and the audit action it
# writes (method, route as aiohttp names it).
AUDITED = {
    ("GET", "/api/calls"): "list_calls",
    ("GET", "/api/calls/{call_id}"): "read_call",
    ("POST", "/api/calls/{call_id}/acknowledge"): "read_call",
    ("POST", "/api/calls/{call_id}/dispatch"): "read_call",
    ("POST", "/api/calls/{call_id}/carers/{code}/status"): "read_call",
    ("POST", "/api/calls/{call_id}/carers/{code}/stand-down"): "read_call",
    ("POST", "/api/calls/{call_id}/notes"): "read_call",
    ("POST", "/api/calls/{call_id}/resolve"): "read_call",
    ("POST", "/api/calls/{call_id}/script-answers"): "read_call",
    ("POST", "/api/calls/{call_id}/cancel"): "read_call",
    ("GET", "/api/calls/{call_id}/candidates"): "read_candidates",
    ("GET", "/api/board"): "read_board",
    ("GET", "/api/board/feed"): "read_board",
    ("GET", "/api/welfare"): "read_welfare_list",
    ("POST", "/api/welfare/{welfare_id}"): "record_welfare_call",
    ("POST", "/api/calls/{call_id}/call-household"): "read_call",
    ("POST", "/api/welfare/{welfare_id}/ring"): "ring_welfare",
    # The register (tests/test_register_api.py walks them): reads, and changes whose row
    # keeps the record before and after.
    ("GET", "/api/register/households"): "read_register",
    ("GET", "/api/register/households/{code}"): "read_household",
    ("POST", "/api/register/households"): "add_household",
    ("PUT", "/api/register/households/{code}"): "change_household",
    ("GET", "/api/register/devices"): "read_devices",
    ("POST", "/api/register/devices"): "add_device",
    ("POST", "/api/register/devices/{serial}/move"): "move_device",
    ("POST", "/api/register/devices/{serial}/retire"): "retire_device",
    ("POST", "/api/register/devices/{serial}/login"): "renew_login",
    ("GET", "/api/register/export"): "export_register",
}
# Operator routes whose answers carry no household's data, and why.
NOT_HOUSEHOLD_DATA = {
    ("GET", "/api/me"): "the signed-in operator",
    ("POST", "/api/me/language"): "the operator's language",
    ("GET", "/api/carers"): "carers' own state and position, a call's id at most",
    ("GET", "/api/service-levels"): "counts and times",
    ("GET", "/api/reports"): "counts and times per station and carer",
    ("GET", "/api/reports.csv"): "counts and times per station and carer",
    ("GET", "/api/users"): "operators' accounts",
    ("POST", "/api/users"): "operators' accounts",
    ("POST", "/api/users/{username}/password"): "operators' accounts",
    ("POST", "/api/users/{username}/active"): "operators' accounts",
    ("GET", "/api/audit"): "the audit log itself (administrators only)",
    ("GET", "/api/openapi.json"): "the API's description, no data",
    ("GET", "/api/operators/duty"): "operators' duty, a call's id at most",
    ("POST", "/api/desk/duty"): "the operator's own duty",
    ("GET", "/api/register/stations"): "stations",
    ("POST", "/api/register/stations"): "stations (the change is audited)",
    ("PUT", "/api/register/stations/{code}"): "stations (the change is audited)",
    ("GET", "/api/register/carers"): "carers",
    ("POST", "/api/register/carers"): "carers (the change is audited)",
    ("PUT", "/api/register/carers/{code}"): "carers (the change is audited)",
    ("GET", "/api/register/shift-patterns"): "shift patterns",
    ("POST", "/api/register/shift-patterns"): "shift patterns (the change is audited)",
    ("PUT", "/api/register/shift-patterns/{code}"): "shift patterns (the change is audited)",
    ("GET", "/api/register/roster"): "carers' duty",
    ("PUT", "/api/register/roster/{carer}/{day}"): "carers' duty (the change is audited)",
    ("DELETE", "/api/register/roster/{carer}/{day}"): "carers' duty (the change is audited)",
    ("GET", "/api/register/rota"): "carers' shifts and stations' gaps",
    ("GET", "/api/register/policies"): "escalation policies",
    ("PUT", "/api/register/policies/{call_type}"): "escalation policies (audited)",
    ("DELETE", "/api/register/policies/{call_type}"): "escalation policies (audited)",
    ("GET", "/api/register/template"): "the template's example rows, no one's data",
    ("POST", "/api/register/import"): "counts and the file's own problems; each record it "
    "changes gets an audit row with its before and after",
}


def test_every_operator_route_is_audited_or_carries_no_household_data(api: Api) -> None:
    """Test that each /api route is on exactly one of the two lists above: a new route
    that answers with a household's data cannot slip in unaudited."""
    app = build_app(api.server)
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }
    assert routes == set(AUDITED) | set(NOT_HOUSEHOLD_DATA)
    assert not set(AUDITED) & set(NOT_HOUSEHOLD_DATA)
    assert isinstance(app, web.Application)


async def newest(api: Api) -> dict[str, Any]:
    """The newest audit row of li.na."""
    reply = await api.get(f"/api/audit?actor={ACTOR}&limit=1", who="sun.admin")
    assert reply.status == 200, reply
    (entry,) = reply.body["entries"]
    found: dict[str, Any] = entry
    return found


async def audited(
    api: Api, method: str, path: str, body: Any, action: str, household: str | None
) -> dict[str, Any]:
    """Make the request as li.na (200 expected) and return the audit row it left."""
    before = (await api.get(f"/api/audit?actor={ACTOR}", who="sun.admin")).body["entries"]
    reply = await api.request(method, path, json=body)
    assert reply.status == 200, (path, reply)
    entries = (await api.get(f"/api/audit?actor={ACTOR}", who="sun.admin")).body["entries"]
    assert len(entries) == len(before) + 1, (path, entries[: len(entries) - len(before)])
    row: dict[str, Any] = entries[0]
    assert (row["action"], row["household"], row["path"]) == (action, household, path)
    return row


async def test_every_answer_with_a_households_data_is_audited(api: Api) -> None:
    """Test that the call detail, the answer of every command on a call (a note on a
    closed call included), the call list, the board, a call's candidates and the
    welfare list each write one audit row naming the household (or, for a list, the
    households it showed)."""
    call_id = await api.press("H0001")
    detail = (await api.get(f"/api/calls/{call_id}")).body
    carer = detail["assignments"][0]["carer"]
    on_call = f"/api/calls/{call_id}"
    for method, path, body in (
        ("GET", on_call, None),
        ("POST", f"{on_call}/acknowledge", {}),
        ("POST", f"{on_call}/carers/{carer}/status", {"status": "accepted"}),
        ("POST", f"{on_call}/carers/{carer}/stand-down", {"why": "另派一位更近的护理员"}),
        ("POST", f"{on_call}/dispatch", {}),
        ("POST", f"{on_call}/notes", {"text": "女儿正在赶来"}),
        ("POST", f"{on_call}/script-answers", {"question": "breathing", "answer": "yes"}),
        ("POST", f"{on_call}/resolve", {"outcome": "helped_at_home", "reason": "邻居扶起"}),
        ("POST", f"{on_call}/notes", {"text": "事后补记：家属已确认平安"}),
    ):
        row = await audited(api, method, path, body, "read_call", "H0001")
        assert row["detail"]["call_id"] == call_id
    closed_note = await newest(api)
    assert closed_note["detail"]["closed"] is True

    other = await api.press("H0002")
    await audited(
        api, "POST", f"/api/calls/{other}/cancel", {"reason": "duplicate"}, "read_call", "H0002"
    )

    one_home = await audited(
        api, "GET", "/api/calls?state=all&household=H0001", None, "list_calls", "H0001"
    )
    assert one_home["detail"]["households"] == ["H0001"]
    third = await api.press("H0003")
    listed = await audited(api, "GET", "/api/calls", None, "list_calls", None)
    assert listed["detail"]["households"] == ["H0003"]
    board = await audited(api, "GET", "/api/board", None, "read_board", None)
    assert board["detail"]["households"] == ["H0003"]
    await audited(api, "GET", f"/api/calls/{third}/candidates", None, "read_candidates", "H0003")
    welfare = await audited(api, "GET", "/api/welfare", None, "read_welfare_list", None)
    assert welfare["detail"]["households"]


async def test_the_board_feed_is_audited_for_each_household_it_shows(api: Api) -> None:
    """Test that an open feed writes a row for the households of its snapshot, and one
    for each household it shows later, once per feed, and that the audit log finds them
    by household."""
    await api.press("H0004")
    headers = {"Authorization": f"Bearer {token_of('li.na')}"}
    async with api.http.ws_connect("/api/board/feed", headers=headers) as ws:
        snapshot = json.loads((await ws.receive()).data)
        assert snapshot["type"] == "snapshot"

        async def rows_of(code: str) -> list[dict[str, Any]]:
            reply = await api.get(f"/api/audit?actor={ACTOR}&household={code}", who="sun.admin")
            return [e for e in reply.body["entries"] if e["path"] == "/api/board/feed"]

        async def shown(code: str) -> bool:
            return len(await rows_of(code)) == 1

        await eventually(lambda: shown("H0004"), what="the snapshot's audit row")
        call_id = await api.press("H0005")
        await eventually(lambda: shown("H0005"), what="the new call's audit row")
        await api.post(f"/api/calls/{call_id}/acknowledge")
        await asyncio.sleep(1.5)  # rows are written each second: none more must come
        assert len(await rows_of("H0005")) == 1
