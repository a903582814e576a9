"""The district on virtual time: a whole simulated week checked against the ground truth,
every named scenario against its own expectations, and the household model's rhythm."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.rest import Client

from callcenter.clock import SystemClock
from callcenter.engine.voice import VoiceScript
from callcenter.fake_twilio import FakeTwilio
from callcenter.store import models as m
from callcenter.store.db import create_engine
from device_sim import cli
from device_sim.commands import week_report
from device_sim.demo_district import build_demo_district
from device_sim.field import FieldProfile, answer_pages, district_field, read_text
from device_sim.households import PROFILES, Happening, Home, plan_household_events
from device_sim.scenarios import SCENARIOS, run_scenario
from device_sim.week import WeekOptions, run_week

ZONE = ZoneInfo("Asia/Shanghai")


def _homes(count: int) -> list[Home]:
    return [Home(f"H{i:04d}", 36.6, 101.78, f"BU-H{i:04d}", f"CB-H{i:04d}") for i in range(count)]


def test_the_household_plan_is_the_same_for_a_seed_and_follows_the_daily_rhythm() -> None:
    start = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)  # Monday 00:00 in Xining
    end = start + timedelta(days=28)
    first = plan_household_events(PROFILES["district"], _homes(900), start, end, seed=7, zone=ZONE)
    again = plan_household_events(PROFILES["district"], _homes(900), start, end, seed=7, zone=ZONE)
    other = plan_household_events(PROFILES["district"], _homes(900), start, end, seed=8, zone=ZONE)
    assert first == again
    assert first != other
    assert [p.at for p in first] == sorted(p.at for p in first)
    presses = [p for p in first if p.happening is Happening.EMERGENCY]
    per_day = len(presses) / 28
    assert 900 * 0.045 * 0.8 < per_day < 900 * 0.045 * 1.2
    by_hour = [0] * 24
    for press in presses:
        by_hour[press.at.astimezone(ZONE).hour] += 1
    assert sum(by_hour[7:10]) > 3 * sum(by_hour[1:4])  # the morning peak over the night
    # Every accidental press is followed by its cancel from the same button.
    accidental = [p for p in first if p.happening is Happening.ACCIDENTAL]
    assert accidental and len(accidental) % 2 == 0
    assert {p.kind.value for p in accidental if p.kind} == {"emergency_press", "cancel"}


def test_a_carer_reads_pages_and_stand_downs_in_either_language() -> None:
    english = (
        "Call 12 emergency: H0042 Wang (81), 1 Road. Key under mat. 1.2 km, about 6 min "
        "by e-bike. Reply 12a accept, 12d decline, 12s on scene, 12r done. http://x/c/abc"
    )
    pages, stand_downs = read_text(english)
    assert [(p.call_id, p.household) for p in pages] == [(12, "H0042")]
    assert stand_downs == []
    chinese = "呼叫7（紧急）：H0900 李（85），某路。回复 7a 接单，7d 拒绝，7s 到达，7r 完成。"
    assert [(p.call_id, p.household) for p in read_text(chinese)[0]] == [(7, "H0900")]
    assert read_text("呼叫7：无需前往（已取消）。")[1] == [7]
    assert read_text("Call 9: stand down, you are no longer needed (cancelled).")[1] == [9]


@pytest.mark.slow
async def test_a_simulated_week_accounts_for_every_event_and_every_call(tmp_path: Path) -> None:
    result = await run_week(WeekOptions(work_dir=tmp_path))
    events, calls = result.events, result.calls
    # Ground truth against the log: each event the devices sent is there exactly once.
    assert events.generated > 600
    assert events.lost == 0 and events.doubled == 0 and events.pending == 0
    assert events.stored_once == events.generated
    # Read the log independently of the simulator's own accounting.
    engine = create_engine(result.database_url)
    try:
        async with AsyncSession(engine) as session:
            logged = await session.scalar(select(func.count()).select_from(m.DeviceEvent))
            repeated = (
                await session.execute(
                    select(m.DeviceEvent.device_id, m.DeviceEvent.event_id)
                    .group_by(m.DeviceEvent.device_id, m.DeviceEvent.event_id)
                    .having(func.count() > 1)
                )
            ).all()
            open_calls = (
                await session.scalars(select(m.Call).where(m.Call.closed_at.is_(None)))
            ).all()
            # The rings the outbox placed: carers about pages, family contacts, the
            # operators' own phones for click-to-call.
            rings = Counter(
                VoiceScript.read(body).purpose.value
                for body in (
                    await session.scalars(
                        select(m.OutboxItem.body).where(m.OutboxItem.channel == "voice")
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    assert logged is not None and logged >= events.generated  # plus the server's own
    assert repeated == []  # no device event id twice in the log
    # Every press landed on a call; every call ended or was escalated.
    assert calls["presses_stored"] == calls["alarm_presses_on_calls"]
    assert calls["open_unescalated"] == 0
    assert len(open_calls) == calls["open"]
    assert calls["overdue_timers"] == 0
    # The service-level report came out, with figures a district can act on.
    summary = result.summary()
    assert summary["answered_60s_share"] is not None and summary["answered_60s_share"] > 0.9
    assert summary["on_scene_15min_share"] is not None and summary["on_scene_15min_share"] > 0.8
    assert set(summary["utilisation"]) == {f"S0{i}" for i in range(1, 10)}
    assert all(0 < share < 1 for share in summary["utilisation"].values())
    assert result.field["accepted"] > 300 and result.field["texts_sent"] > 900
    # The phones: every emergency and fall picked up rang its household, and someone
    # there spoke with the desk; carers who had not accepted a page by text were rung.
    voice = summary["voice"]
    spoken = voice["spoken_within_60s"]
    assert voice["operator_rings"] == rings["bridge"] > 250
    assert spoken["of"] > 250 and spoken["share"] > 0.9
    assert voice["households_spoken_with"] >= spoken["count"]
    assert 0 < voice["operator_phone_minutes"] < voice["operator_rings"] * 3
    assert voice["carers_rung"] == rings["page"] > 20
    assert 0 < voice["carers_accepted_by_voice"] <= voice["carers_picked_up"]
    assert voice["carers_picked_up"] < voice["carers_rung"]  # some never pick up
    assert voice["family_rung"] == rings["family"] > 0
    said = "\n".join(week_report(result))
    assert f"operators rang {voice['operator_rings']} households" in said
    assert f"carers rung about a page not accepted by text: {voice['carers_rung']}," in said
    # Seven days and the time the last calls took to close.
    assert result.ended_at - result.started_at >= timedelta(days=7)


async def test_the_same_seed_runs_the_same_day_whoever_watches(tmp_path: Path) -> None:
    """A seed is a run: the same calls, texts and figures, with or without progress
    lines (looking in must not move the clock differently)."""
    start = datetime(2026, 11, 24, 6, 0)
    first = await run_week(
        WeekOptions(start=start, days=0.5, settle_s=1800, work_dir=tmp_path / "a")
    )
    lines: list[str] = []
    again = await run_week(
        WeekOptions(
            start=start,
            days=0.5,
            settle_s=1800,
            work_dir=tmp_path / "b",
            progress=lines.append,
            progress_every_s=900,
        )
    )
    assert len(lines) > 40
    assert first.events.generated == again.events.generated > 0
    assert first.calls == again.calls
    assert first.field == again.field
    untimed = [
        {k: v for k, v in r.summary().items() if k != "week_seconds"} for r in (first, again)
    ]
    assert untimed[0] == untimed[1]


def test_device_sim_scenario_runs_a_scenario_and_says_what_it_checked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["scenario", "quiet_night", "--quick"]) == 0
    out, err = capsys.readouterr()
    assert "scenario quiet_night (quick): PASSED" in err
    assert "[ok] expected every device event in the log exactly once" in err
    (report,) = json.loads(out.strip().splitlines()[-1])
    assert report["scenario"] == "quiet_night" and report["passed"] is True
    with pytest.raises(SystemExit) as refused:
        cli.main(["scenario", "no_such_scenario"])
    assert refused.value.code == 2
    assert "invalid choice: 'no_such_scenario'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_each_named_scenario_meets_its_own_expectations(name: str, tmp_path: Path) -> None:
    report, _result = await run_scenario(name, quick=True, work_dir=tmp_path)
    assert report.passed, "\n".join(report.lines())


async def test_carers_on_the_wall_clock_answer_what_the_fake_twilio_took(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """The demo's carers: a page sent through the real twilio client is read off the
    fake and answered through it, to the call centre's inbound webhook."""
    answers: list[dict[str, str]] = []
    answered = asyncio.Event()

    async def inbound(request: web.Request) -> web.Response:
        answers.append({k: str(v) for k, v in (await request.post()).items()})
        answered.set()
        return web.Response(text="<Response/>", content_type="application/xml")

    app = web.Application()
    app.router.add_post("/sms/inbound", inbound)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake_twilio.inbound_url = f"http://127.0.0.1:{port}/sms/inbound"
    district = build_demo_district()
    carer, home = district.carers[5], district.households[10]
    quick = FieldProfile(answer_median_s=0.3, no_answer_share=0.0, tells_on_the_way_share=0.0)
    field = district_field(district, quick, seed=1)
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(answer_pages(fake_twilio, field, SystemClock(), stop))
            await twilio_client.messages.create_async(
                to=carer.phone,
                from_=fake_twilio.number,
                body=f"Call 31 emergency: {home.code} ... Reply 31a accept, 31d decline.",
            )
            async with asyncio.timeout(10):
                await answered.wait()
            stop.set()
    finally:
        await runner.cleanup()
    assert answers[0]["From"] == carer.phone
    assert answers[0]["Body"] == "31a"
    assert field.by_phone[carer.phone].on_call == 31
