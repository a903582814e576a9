"""The register kept through the API, on the running server, mosquitto and each
database: a household added with its residents and a device whose first press opens a
call showing the new record, with no restart; a device moved and retired; the rules'
refusals field by field in the asker's language; two administrators racing; roles; a
carer taken off and a policy edited, taking effect at once; every change audited with
its before and after."""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.ingest.protocol import Channel, DeadLetterReason, heartbeat_payload, topic_for
from callcenter.store import models as m
from callcenter.web.family.history import households_of
from callcenter.web.family.signin import contacts_of
from tests.api_support import Api
from tests.desk_support import scalar
from tests.ingest_support import eventually, publish_events

ADMIN = "sun.admin"
SUPERVISOR = "zhao.min"

HOUSEHOLD: dict[str, Any] = {
    "code": "H9001",
    "address": "城中区南山路 88 号 3 单元 502",
    "lat": 36.611,
    "lon": 101.785,
    "home_station": "S01",
    "backup_station": "S02",
    "access_notes": "钥匙在 501 邻居处",
    "phones": [{"kind": "landline", "number": "+8697112345678", "label": ""}],
    "residents": [
        {
            "name": "周桂兰",
            "birth_date": "1938-04-02",
            "sex": "female",
            "mobility": "walking_aid",
            "conditions": ["高血压", "糖尿病"],
            "medicines": ["二甲双胍 500mg 每日两次"],
            "allergies": ["青霉素"],
            "doctor": "王医生",
            "clinic": "南山社区卫生服务站",
            "clinic_phone": "+8697187654321",
            "do_not_resuscitate": True,
            "hospital": "青海省人民医院",
            "speaks": "青海话",
            "hearing": "impaired",
            "sight": "good",
        },
        {"name": "周德明", "birth_year": 1936, "mobility": "independent"},
    ],
    "contacts": [
        {
            "name": "周丽",
            "relation": "女儿",
            "phone": "+8613800009001",
            "holds_key": True,
            "call_from": "07:00",
            "call_until": "22:00",
        },
        {"name": "马刚", "relation": "邻居", "phone": "+8613800009002", "portal": False},
    ],
}


async def _audit(api: Api, household: str | None = None) -> list[dict[str, Any]]:
    query = f"/api/audit?actor=supervisor:{ADMIN}" + (
        f"&household={household}" if household else ""
    )
    reply = await api.get(query, who=ADMIN)
    assert reply.status == 200, reply
    entries: list[dict[str, Any]] = reply.body["entries"]
    return entries


async def _dead_letters(api: Api, reason: DeadLetterReason) -> int:
    return int(
        await scalar(
            api.server,
            select(func.count()).select_from(m.DeadLetter).where(m.DeadLetter.reason == reason),
        )
    )


async def test_a_household_added_through_the_api_raises_a_call_with_its_record(api: Api) -> None:
    """Test that an administrator adds a household with two residents, then its device;
    the device's first press opens a call whose detail shows the new record (medicines,
    allergies, advance wishes, the key holder), with no restart; and both changes are in
    the audit with their after."""
    added = await api.request("POST", "/api/register/households", who=ADMIN, json=HOUSEHOLD)
    assert added.status == 201, added
    saved = added.body["household"]
    assert [r["name"] for r in saved["residents"]] == ["周桂兰", "周德明"]
    assert saved["residents"][0]["birth_year"] == 1938
    assert saved["contacts"][1]["portal"] is False

    device = await api.request(
        "POST",
        "/api/register/devices",
        who=ADMIN,
        json={"serial": "CB-H9001", "kind": "call_button", "household": "H9001"},
    )
    assert device.status == 201, device
    assert device.body["device"]["household"] == "H9001"

    call_id = await api.press("H9001")
    detail = await api.call(call_id)
    resident = detail["household"]["residents"][0]
    assert resident["medicines"] == ["二甲双胍 500mg 每日两次"]
    assert resident["allergies"] == ["青霉素"]
    assert resident["do_not_resuscitate"] is True
    assert resident["hearing"] == "impaired"
    assert detail["household"]["family"][0]["holds_key"] is True
    assert detail["household"]["family"][0]["call_from"] == "07:00"
    assert detail["assignments"], "the new household's station sends a carer"

    rows = await _audit(api, "H9001")
    changes = {r["action"]: r for r in rows if r["action"] in ("add_household", "add_device")}
    assert changes["add_household"]["before"] is None
    assert changes["add_household"]["after"]["residents"][0]["allergies"] == ["青霉素"]
    assert changes["add_device"]["after"]["serial"] == "CB-H9001"


async def test_a_change_keeps_residents_by_id_and_is_audited_before_and_after(api: Api) -> None:
    """Test that changing a household keeps a resident named by id (and their welfare
    history), removes one left out, adds one without an id, and that the audit row holds
    the record before and after."""
    added = await api.request("POST", "/api/register/households", who=ADMIN, json=HOUSEHOLD)
    assert added.status == 201, added
    first, second = added.body["household"]["residents"]
    changed = copy.deepcopy(added.body["household"])
    changed["residents"] = [
        {**first, "medicines": [*first["medicines"], "阿司匹林"]},
        {"name": "周小红", "birth_year": 1960},
    ]
    changed["access_notes"] = "钥匙在女儿处"
    reply = await api.request("PUT", "/api/register/households/H9001", who=ADMIN, json=changed)
    assert reply.status == 200, reply
    residents = reply.body["household"]["residents"]
    assert residents[0]["id"] == first["id"]
    assert residents[0]["medicines"][-1] == "阿司匹林"
    assert residents[1]["name"] == "周小红"
    assert second["id"] not in {r["id"] for r in residents}

    (row,) = [r for r in await _audit(api, "H9001") if r["action"] == "change_household"]
    assert row["before"]["access_notes"] == "钥匙在 501 邻居处"
    assert row["after"]["access_notes"] == "钥匙在女儿处"
    assert [r["name"] for r in row["before"]["residents"]] == ["周桂兰", "周德明"]


async def test_the_rules_refuse_field_by_field_in_the_askers_language(api: Api) -> None:
    """Test that a household breaking several rules is refused whole with a 422 naming
    each field, in Chinese for a Chinese-speaking administrator and in English once they
    switch, and that nothing was written."""
    bad = copy.deepcopy(HOUSEHOLD)
    bad["code"] = "H 9001"
    bad["backup_station"] = "S01"
    bad["home_station"] = "S01"
    bad["residents"][0]["birth_date"] = "2099-01-01"
    bad["contacts"][0]["phone"] = "138-0000-9001"
    bad["contacts"][1]["call_from"] = "08:00"
    bad["phones"][0]["kind"] = "fax"
    households = await scalar(api.server, select(func.count()).select_from(m.Household))

    reply = await api.request("POST", "/api/register/households", who=ADMIN, json=bad)
    assert reply.status == 400, reply  # "fax" is not a kind of phone: the body's type
    bad["phones"] = []
    reply = await api.request("POST", "/api/register/households", who=ADMIN, json=bad)
    assert reply.status == 422, reply
    problems = {p["field"]: p for p in reply.body["problems"]}
    assert set(problems) == {
        "code",
        "backup_station",
        "residents.1.birth_date",
        "contacts.1.phone",
        "contacts.2.call_from",
    }
    assert problems["contacts.1.phone"]["code"] == "not_e164"
    assert "国际格式" in problems["contacts.1.phone"]["message"]

    assert (await api.post("/api/me/language", {"language": "en"}, who=ADMIN)).status == 200
    reply = await api.request("POST", "/api/register/households", who=ADMIN, json=bad)
    english = {p["field"]: p["message"] for p in reply.body["problems"]}
    assert english["backup_station"] == "must differ from the home station"
    assert english["residents.1.birth_date"] == "cannot be later than today"
    assert await scalar(api.server, select(func.count()).select_from(m.Household)) == households


async def test_two_administrators_adding_one_code_at_once_get_one_household(api: Api) -> None:
    """Test that two adds of the same household code racing each other end with one
    household and one refusal saying the code is taken (never a 500), on each database."""
    replies = await asyncio.gather(
        *(
            api.request("POST", "/api/register/households", who=ADMIN, json=HOUSEHOLD)
            for _ in range(4)
        )
    )
    assert sorted(r.status for r in replies) == [201, 422, 422, 422], replies
    for refused in (r for r in replies if r.status == 422):
        assert [p["code"] for p in refused.body["problems"]] == ["taken"]
    count = select(func.count()).select_from(m.Household).where(m.Household.code == "H9001")
    assert await scalar(api.server, count) == 1


async def test_a_device_moved_keeps_its_history_and_a_retired_one_is_refused(api: Api) -> None:
    """Test that a device moved to another household keeps its events, raises calls for
    the new household at once, and that a message under its old household is refused;
    once retired, its messages are an unknown device's and its events stay."""
    first = await api.press("H0001")
    events = select(func.count()).select_from(m.DeviceEvent).join(m.Device)
    of_button = events.where(m.Device.serial == "CB-H0001")
    before = await scalar(api.server, of_button)
    assert before >= 1
    await api.post(f"/api/calls/{first}/cancel", {"reason": "entered_in_error"})

    moved = await api.post("/api/register/devices/CB-H0001/move", {"household": "H0002"}, who=ADMIN)
    assert moved.status == 200, moved
    assert moved.body["device"]["household"] == "H0002"
    assert await scalar(api.server, of_button) == before

    mismatched = await _dead_letters(api, DeadLetterReason.HOUSEHOLD_MISMATCH)
    await publish_events(
        api.broker.host, api.broker.port, api.prefix, [("H0001", "CB-H0001", "after-move-1")]
    )
    await eventually(
        lambda: _is(_dead_letters(api, DeadLetterReason.HOUSEHOLD_MISMATCH), mismatched + 1),
        what="the old household's topic refused",
    )
    await publish_events(
        api.broker.host, api.broker.port, api.prefix, [("H0002", "CB-H0001", "after-move-2")]
    )

    async def raised_at_new_home() -> bool:
        calls = (await api.get("/api/calls")).body["calls"]
        return any(c["household"]["code"] == "H0002" for c in calls)

    await eventually(raised_at_new_home, what="a call at the new household")

    retired = await api.post("/api/register/devices/CB-H0001/retire", {}, who=ADMIN)
    assert retired.status == 200, retired
    assert retired.body["device"]["retired_at"] is not None
    unknown = await _dead_letters(api, DeadLetterReason.UNKNOWN_DEVICE)
    await publish_events(
        api.broker.host, api.broker.port, api.prefix, [("H0002", "CB-H0001", "after-retire")]
    )
    await eventually(
        lambda: _is(_dead_letters(api, DeadLetterReason.UNKNOWN_DEVICE), unknown + 1),
        what="the retired device refused",
    )
    assert await scalar(api.server, of_button) == before + 1  # the one under H0002

    rows = [r for r in await _audit(api, "H0001") if r["action"] == "move_device"]
    assert rows and rows[0]["detail"] == {"from": "H0001", "to": "H0002", "login": False}


async def _is(count: Any, wanted: int) -> bool:
    return bool(await count == wanted)


async def test_a_carer_taken_off_is_not_paged_and_a_policy_edit_applies_to_new_calls(
    api: Api,
) -> None:
    """Test that a carer switched off through the API is not sent to the next call,
    with no restart; that a supervisor's policy edit is the policy of calls opened after
    it while an open call keeps the one it opened with; and that resetting it brings
    the configured one back."""
    first = await api.press("H0001")
    sent = (await api.call(first))["assignments"][0]["carer"]
    carers = (await api.get("/api/register/carers", who=ADMIN)).body["records"]
    record = next(c for c in carers if c["code"] == sent)
    off = await api.request(
        "PUT", f"/api/register/carers/{sent}", who=ADMIN, json={**record, "active": False}
    )
    assert off.status == 200, off
    await api.post(f"/api/calls/{first}/cancel", {"reason": "entered_in_error"})

    policies = (await api.get("/api/register/policies", who=SUPERVISOR)).body["policies"]
    emergency = next(p for p in policies if p["call_type"] == "emergency")
    assert emergency["source"] == "configured"
    open_call = await api.press("H0003")
    edited = {
        "auto_dispatch": True,
        "steps": [
            {
                "name": "unacknowledged",
                "after_s": 20,
                "unless": "acknowledged",
                "actions": ["alert_operators", "alert_supervisor"],
            },
        ],
    }
    reply = await api.request(
        "PUT", "/api/register/policies/emergency", who=SUPERVISOR, json=edited
    )
    assert reply.status == 200, reply
    assert reply.body["source"] == "edited"
    assert reply.body["edited_by"] == f"supervisor:{SUPERVISOR}"

    second = await api.press("H0001")
    detail = await api.call(second)
    assert sent not in {a["carer"] for a in detail["assignments"]}
    assert [s["name"] for s in detail["policy"]["steps"]] == ["unacknowledged"]
    assert detail["policy"]["steps"][0]["after_s"] == 20
    kept = await api.call(open_call)
    assert len(kept["policy"]["steps"]) == len(emergency["policy"]["steps"])

    assert (
        await api.request("DELETE", "/api/register/policies/emergency", who=SUPERVISOR)
    ).status == 200
    third = await api.press("H0004")
    assert len((await api.call(third))["policy"]["steps"]) == len(emergency["policy"]["steps"])


async def test_each_role_keeps_its_part_of_the_register(api: Api) -> None:
    """Test that an operator may not read or change the register, a supervisor keeps the
    rota and the policies but not households, and a policy breaking the domain's rules
    is refused with the field named."""
    assert (await api.get("/api/register/households")).status == 403
    assert (await api.get("/api/register/policies")).status == 403
    assert (await api.get("/api/register/households", who=SUPERVISOR)).status == 403
    assert (
        await api.get("/api/register/roster?first=2026-12-01&last=2026-12-31", who=SUPERVISOR)
    ).status == 200
    day_off = await api.request(
        "PUT",
        "/api/register/roster/C001/2026-12-24",
        who=SUPERVISOR,
        json={"on_duty": False, "note": "平安夜请假"},
    )
    assert day_off.status == 200, day_off
    wrong = await api.request(
        "PUT",
        "/api/register/roster/C001/2026-12-25",
        who=SUPERVISOR,
        json={"on_duty": False, "shift_pattern": "EARLY"},
    )
    assert wrong.status == 422
    assert wrong.body["problems"][0]["field"] == "shift_pattern"
    bad_policy = {
        "auto_dispatch": True,
        "steps": [
            {
                "name": "x",
                "after_s": 10,
                "unless": "on_scene",
                "counted_from": "dispatched",
                "actions": ["redispatch"],
            }
        ],
    }
    refused = await api.request(
        "PUT", "/api/register/policies/fall", who=SUPERVISOR, json=bad_policy
    )
    assert refused.status == 400, refused
    (problem,) = refused.body["problems"]
    assert problem["field"] == "steps.0"
    assert "unless = 'accepted'" in problem["message"]


async def test_a_holiday_rota_gap_shows_before_it_starts_and_the_watchdog_agrees(
    api: Api,
) -> None:
    """Test that giving every carer of a station a day off two days ahead shows that
    day's gaps in the rota at once, with the B post named and whether it covers them;
    and that the watchdog, when the day comes, reports each station with nobody on shift
    exactly when the rota said it would, every half hour of the day, for every station."""
    day = "2026-11-25"  # Wednesday; the clock stands on Monday morning
    records = (await api.get("/api/register/carers", who=ADMIN)).body["records"]
    s09 = [c["code"] for c in records if c["station"] == "S09" and c["active"]]
    assert s09
    for code in s09:
        reply = await api.request(
            "PUT",
            f"/api/register/roster/{code}/{day}",
            who=SUPERVISOR,
            json={"on_duty": False, "note": "假期"},
        )
        assert reply.status == 200, reply

    rota = await api.get(f"/api/register/rota?first={day}&last={day}", who=SUPERVISOR)
    assert rota.status == 200, rota
    stations = {s["code"]: s for s in rota.body["stations"]}
    assert stations["S09"]["gaps"], "a whole station off leaves a gap"
    assert stations["S09"]["backup"]
    assert not any(shift["start"].startswith(day) for shift in stations["S09"]["shifts"]), (
        "nobody of S09 starts a shift that day"
    )

    def gap_at(code: str, moment: datetime) -> bool:
        return any(
            datetime.fromisoformat(g["start"]) <= moment < datetime.fromisoformat(g["end"])
            for g in stations[code]["gaps"]
        )

    start = datetime.fromisoformat(f"{day}T00:00:00+08:00")
    api.clock.advance(start - api.clock.now())
    disagreements = []
    for step in range(48):
        moment = start + timedelta(minutes=30 * step)
        api.clock.advance(moment - api.clock.now())
        report = await api.server.watchdog.check()
        uncovered = set(report.stations_without_free_carer)
        for code in stations:
            if gap_at(code, moment) != (code in uncovered):
                disagreements.append((moment.isoformat(), code, gap_at(code, moment)))
    assert not disagreements
    assert any(gap_at("S09", start + timedelta(hours=h)) for h in range(24))


async def test_a_contact_kept_off_the_portal_sees_no_household(api: Api) -> None:
    """Test that a contact the register keeps off the family portal (portal false) is
    no contact for the portal's sign-in or its households, while the one allowed is."""
    added = await api.request("POST", "/api/register/households", who=ADMIN, json=HOUSEHOLD)
    assert added.status == 201, added
    async with AsyncSession(api.server.engine) as session:
        allowed = await households_of(session, "+8613800009001")
        kept_off = await households_of(session, "+8613800009002")
        codes_for_kept_off = await contacts_of(session, "+8613800009002")
    assert [h.code for h in allowed] == ["H9001"]
    assert kept_off == [] and codes_for_kept_off == []


async def test_a_records_code_cannot_change(api: Api) -> None:
    """Test that a household's or carer's code is fixed once made: its devices' topics
    and the call histories go by it."""
    record = (await api.get("/api/register/households/H0001", who=ADMIN)).body["household"]
    reply = await api.request(
        "PUT", "/api/register/households/H0001", who=ADMIN, json={**record, "code": "H0001X"}
    )
    assert reply.status == 422, reply
    assert [(p["field"], p["code"]) for p in reply.body["problems"]] == [("code", "fixed")]
    carers = (await api.get("/api/register/carers", who=ADMIN)).body["records"]
    reply = await api.request(
        "PUT", "/api/register/carers/C001", who=ADMIN, json={**carers[0], "code": "C999"}
    )
    assert reply.status == 422, reply
    missing = await api.request("PUT", "/api/register/households/H9999", who=ADMIN, json=record)
    assert missing.status == 404, missing


async def test_a_devices_battery_and_signal_are_shown(api: Api) -> None:
    """Test that a heartbeat's battery and signal strength reach the register's device
    list (written with the device's liveness)."""
    async with aiomqtt.Client(api.broker.host, api.broker.port) as client:
        await client.publish(
            topic_for(api.prefix, "H0001", "BU-H0001", Channel.HEARTBEAT),
            heartbeat_payload(int(time.time() * 1000), battery=64, rssi=-87),
            qos=1,
        )

    async def shown() -> bool:
        devices = (await api.get("/api/register/devices?household=H0001", who=ADMIN)).body
        unit = next(d for d in devices["devices"] if d["serial"] == "BU-H0001")
        return bool(unit["battery_pct"] == 64 and unit["rssi_dbm"] == -87 and unit["online"])

    await eventually(shown, what="the base unit's battery and signal")


async def test_the_audit_filters_changes_and_a_time_window(api: Api) -> None:
    """Test that ``changes=true`` keeps only changes to the register (each with its
    after), that ``until`` ends the window before its moment and ``since`` starts it at
    its own, and that a window ending before it starts is refused with the field named."""
    added = await api.request("POST", "/api/register/households", who=ADMIN, json=HOUSEHOLD)
    assert added.status == 201, added
    read = await api.get("/api/register/households/H9001", who=ADMIN)
    assert read.status == 200
    at = (await _audit(api, "H9001"))[0]["at"]

    def query(**params: str) -> str:
        return "/api/audit?household=H9001&" + "&".join(f"{k}={v}" for k, v in params.items())

    every = (await api.get(query(), who=ADMIN)).body["entries"]
    assert {e["action"] for e in every} >= {"add_household", "read_household"}
    changes = (await api.get(query(changes="true"), who=ADMIN)).body["entries"]
    assert [e["action"] for e in changes] == ["add_household"]
    assert changes[0]["before"] is None and changes[0]["after"]["code"] == "H9001"
    moment = at.replace("+00:00", "Z")
    assert (await api.get(query(until=moment), who=ADMIN)).body["entries"] == []
    within = (await api.get(query(since=moment, until="2099-01-01T00:00:00Z"), who=ADMIN)).body
    assert len(within["entries"]) == len(every)
    reversed_window = await api.get(query(since=moment, until=moment), who=ADMIN)
    assert reversed_window.status == 400
    assert reversed_window.body["field"] == "until"
    no_zone = await api.get(query(until="2026-11-23T10:00:00"), who=ADMIN)
    assert no_zone.status == 400 and no_zone.body["field"] == "until"


async def test_a_position_left_empty_is_said_by_the_rules_in_the_askers_language(
    api: Api,
) -> None:
    """Test that a household whose latitude and longitude were left empty is refused by
    the register's rules (a 422 naming both, in Chinese), not by the body's types."""
    empty = {k: v for k, v in HOUSEHOLD.items() if k not in ("lat", "lon")}
    reply = await api.request("POST", "/api/register/households", who=ADMIN, json=empty)
    assert reply.status == 422, reply
    said = {p["field"]: (p["code"], p["message"]) for p in reply.body["problems"]}
    assert said == {"lat": ("required", "必填"), "lon": ("required", "必填")}
