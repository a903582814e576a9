"""The supervisors' wallboard in headless Chromium, against the whole server: the day's
service levels as GET /api/service-levels gives them, against their targets; the calls
waiting, alarms, operators and carers free, live; Chinese first, English on the toggle;
the server's health banner; and no wallboard for an operator.

Screenshots for people to look at: test-artifacts/wall-zh.png, wall-en.png (1400x900),
wall-1920-zh.png, wall-health.png.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from playwright.async_api import Page, WebSocketRoute, expect

from callcenter.broker import EmbeddedBroker
from tests.api_support import Api
from tests.fixtures.browser import OpenTab, Tab
from tests.ingest_support import eventually
from tests.test_board_browser import NEW_CALL_POLL_S, passwords, sign_in

pytestmark = pytest.mark.page

LEVELS = {
    "wall-ack60": "acknowledged_within_60s",
    "wall-ack180": "acknowledged_within_180s",
    "wall-scene": "on_scene_within_15min_share",
    "wall-resolution": "resolution_rate",
}


async def open_wall(tab: Tab, base: str, username: str) -> Page:
    await sign_in(tab, base, username)
    page = tab.page
    await page.goto(base + "/wall")
    await expect(page.locator("body")).to_have_attribute("data-connection", "live")
    return page


async def post(api: Api, path: str, body: dict[str, Any] | None = None) -> None:
    reply = await api.post(path, body)
    assert reply.status == 200, reply.body


async def carer_reports(api: Api, call_id: int, status: str) -> None:
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    await post(api, f"/api/calls/{call_id}/carers/{carer}/status", {"status": status})


def percent(share: float | None) -> str:
    return "—" if share is None else f"{round(share * 100)}%"


async def test_the_wallboard_shows_the_days_service_levels_and_follows_calls_live(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that, for a day with three known calls, the wallboard shows each service level
    exactly as GET /api/service-levels gives it, marked against its target (green when
    met, red below it); counts the calls nobody has taken, the open alarms and the free
    carers as the board's data has them; shows "—" for the operators while the server
    sends none; a new call is on it within a second; all in Chinese, then English."""
    # Call A: taken at 20 s, accepted at 60 s, on scene and resolved at 300 s.
    a = await api.press("H0001")
    api.clock.advance(timedelta(seconds=20))
    await post(api, f"/api/calls/{a}/acknowledge")
    api.clock.advance(timedelta(seconds=40))
    await carer_reports(api, a, "accepted")
    api.clock.advance(timedelta(seconds=240))
    await carer_reports(api, a, "on_scene")
    await post(api, f"/api/calls/{a}/resolve", {"outcome": "helped_at_home"})
    # Calls B and C: nobody takes them for 90 s; then B is taken (late), C still waits.
    b = await api.press("H0002")
    c = await api.press("H0003")
    api.clock.advance(timedelta(seconds=90))

    async def alerted() -> bool:
        alerts = [(await api.call(i))["alerts"] for i in (b, c)]
        return all("unacknowledged" in a for a in alerts)

    await eventually(alerted, what="the unacknowledged alerts on both calls")
    await post(api, f"/api/calls/{b}/acknowledge")

    await passwords(api, "zhao.min")
    tab = await open_tab(viewport=(1400, 900))
    base = api.server.web_url
    page = await open_wall(tab, base, "zhao.min")
    await expect(page).to_have_title("服务大屏")
    await expect(page.locator("#title")).to_have_text("服务大屏")
    # District time (Asia/Shanghai: the server's 02:06 UTC is 10:06), not the browser's UTC.
    await expect(page.locator("#clock")).to_contain_text("10:06")

    levels = (await api.get("/api/service-levels", who="zhao.min")).body
    assert levels["calls"] == 3 and levels["resolution_rate"] == 1.0
    assert levels["acknowledged_within_60s"] == 0.3333
    for tile, key in LEVELS.items():
        shown = page.locator(f"#{tile}")
        await expect(shown.locator(".value")).to_have_text(percent(levels[key]))
        assert float(await shown.get_attribute("data-value") or "nan") == levels[key], tile
        target = levels["targets"][key]
        assert float(await shown.get_attribute("data-target") or "nan") == target, tile
        await expect(shown).to_have_attribute(
            "data-level", "ok" if levels[key] >= target else "below"
        )
        await expect(shown.locator(".note")).to_contain_text(f"目标 ≥ {percent(target)}")
    # 33 % taken within 60 s is far below its 90 % target.
    await expect(page.locator("#wall-ack60")).to_have_attribute("data-level", "below")
    await expect(page.locator("#wall-resolution .note")).to_contain_text("已结案 1 个，解决 1 个")
    await expect(page.locator("#today-calls")).to_have_text("今日呼叫 3 个，未结 2 个")

    # Now: C waits for an operator (an emergency); B and C are open alarms.
    await expect(page.locator("#wall-waiting .value")).to_have_text("1")
    await expect(page.locator("#wall-waiting")).to_have_attribute("data-level", "alarm")
    await expect(page.locator("#wall-alarms .value")).to_have_text("2")
    carers = await api.carers()
    on_shift = [c for c in carers if c["state"] != "off_shift"]
    free = [c for c in on_shift if c["state"] == "free"]
    await expect(page.locator("#wall-carers .value")).to_have_text(f"{len(free)} / {len(on_shift)}")
    board = (await api.get("/api/board", who="zhao.min")).body
    if "operators" not in board:
        await expect(page.locator("#wall-operators .value")).to_have_text("—")
    await tab.screenshot("wall-zh")

    # A new call is on the wall within a second, and the day's figures follow it.
    started = time.monotonic()
    d = await api.press("H0004")
    await expect(page.locator("#wall-waiting .value")).to_have_text(
        "2", timeout=NEW_CALL_POLL_S * 1000
    )
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.5, f"the call took {elapsed:.2f} s to reach the wall"
    await expect(page.locator("#wall-alarms .value")).to_have_text("3")
    await expect(page.locator("#today-calls")).to_have_text("今日呼叫 4 个，未结 3 个")
    # Taken on a board: it no longer waits.
    await post(api, f"/api/calls/{d}/acknowledge")
    await expect(page.locator("#wall-waiting .value")).to_have_text("1")

    await page.click("#lang-toggle")
    await expect(page).to_have_title("Wallboard")
    await expect(page.locator("#wall-ack60 .label")).to_have_text("Taken within 60 s")
    await expect(page.locator("#wall-ack60 .note")).to_contain_text("target ≥ 90%")
    await expect(page.locator("#wall-waiting .label")).to_have_text("Calls waiting")
    await tab.screenshot("wall-en")
    # The wall keeps its language when reloaded, whatever the account's.
    await page.reload()
    await expect(page.locator("#title")).to_have_text("Wallboard")
    await page.click("#lang-toggle")
    await expect(page.locator("#title")).to_have_text("服务大屏")
    assert tab.errors == []

    big = await open_tab(viewport=(1920, 1080))
    await open_wall(big, base, "zhao.min")
    await big.screenshot("wall-1920-zh")
    assert big.errors == []


async def test_the_wallboard_shows_a_stuck_part_of_the_server(
    api: Api, broker: EmbeddedBroker, open_tab: OpenTab
) -> None:
    """Test that with the broker stopped for longer than health.stuck_after_s the wall
    shows the board's red health banner, naming what does not work since when, and the
    tab title says so; and that it goes when the broker is back."""
    await passwords(api, "zhao.min")
    tab = await open_tab(viewport=(1400, 900))
    page = await open_wall(tab, api.server.web_url, "zhao.min")
    banner = page.locator("#health-banner")
    await expect(banner).to_be_hidden()
    await broker.stop()  # at 10:00 district time
    api.clock.advance(timedelta(seconds=35))
    await expect(banner).to_be_visible(timeout=10_000)
    await expect(banner.locator('[data-part="ingest"]')).to_have_text(
        "⚠自 10:00 起无法接收报警信号——请立即联系技术人员"
    )
    await expect(page).to_have_title("⚠ 系统故障 · 服务大屏")
    await tab.screenshot("wall-health")
    await broker.start()
    await expect(banner).to_be_hidden(timeout=30_000)
    await expect(page).to_have_title("服务大屏")
    assert tab.errors == []


async def test_an_operator_gets_no_wallboard(api: Api, open_tab: OpenTab) -> None:
    """Test that an operator signed in who opens /wall is told it is for supervisors,
    with a way back to the board, and sees no figures."""
    await passwords(api, "li.na")
    tab = await open_tab()
    base = api.server.web_url
    await sign_in(tab, base, "li.na")
    reply = await tab.page.goto(base + "/wall")
    assert reply is not None and reply.status == 403
    await expect(tab.page.locator("body")).to_contain_text("大屏仅供主管和管理员使用")
    assert await tab.page.locator("#wall-ack60").count() == 0
    await tab.page.click("a")
    await expect(tab.page).to_have_url(base + "/board")


def operator(username: str, duty: str, owned: int) -> dict[str, Any]:
    """One entry of the feed's `operators` list, as docs/board.md's contract gives it."""
    return {
        "actor": f"operator:{username}",
        "name": username,
        "role": "operator",
        "duty": duty,
        "since": "2026-11-23T01:00:00.000Z",
        "idle_since": None if owned else "2026-11-23T01:30:00.000Z",
        "owned": owned,
    }


async def test_the_wallboard_counts_operators_free_from_the_feeds_operators(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that the wall counts the operators on duty and those of them free (owning no
    call) from the `operators` list of the board's snapshot, and follows an `operators`
    message. Which operators are on duty is another part of the server: here the real
    feed passes through the browser, and the test adds that list to it as the feed's
    contract has it (renumbering the messages after the one it adds)."""
    # Messages added so far on this connection, and the number the wall last got.
    added, last = [0], [0]
    sockets: list[WebSocketRoute] = []

    async def feed_with_operators(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def passed_on(message: str | bytes) -> None:
            body = json.loads(message)
            if body["type"] == "snapshot":
                added[0] = 0
                body["operators"] = [
                    operator("li.na", "on_duty", 0),
                    operator("wang.wei", "on_duty", 2),
                    operator("ma.li", "paused", 0),
                    operator("old.hand", "off_duty", 0),
                    # A supervisor on duty is on the list but is never offered a call.
                    operator("zhao.min", "on_duty", 0)
                    | {"actor": "supervisor:zhao.min", "role": "supervisor"},
                ]
                sockets.append(ws)
            body["seq"] += added[0]
            last[0] = body["seq"]
            ws.send(json.dumps(body))

        server.on_message(passed_on)

    await passwords(api, "zhao.min")
    tab = await open_tab(viewport=(1400, 900))
    await tab.page.route_web_socket("**/api/board/feed", feed_with_operators)
    page = await open_wall(tab, api.server.web_url, "zhao.min")
    tile = page.locator("#wall-operators")
    await expect(tile.locator(".value")).to_have_text("1 / 2")
    await expect(tile.locator(".note")).to_have_text("在岗 2 人，暂停 1 人")
    await expect(tile).to_have_attribute("data-level", "ok")

    # Everyone on duty takes a call: nobody is free (red).
    added[0] += 1
    last[0] += 1
    taken = [operator("li.na", "on_duty", 1), operator("wang.wei", "on_duty", 2)]
    sockets[-1].send(json.dumps({"type": "operators", "seq": last[0], "operators": taken}))
    await expect(tile.locator(".value")).to_have_text("0 / 2")
    await expect(tile).to_have_attribute("data-level", "below")
    # The feed goes on after it, numbers and all: a new call still reaches the wall.
    await api.press("H0001")
    await expect(page.locator("#wall-alarms .value")).to_have_text("1")
    await expect(page.locator("body")).to_have_attribute("data-connection", "live")
    assert tab.errors == []
