"""The server's own health on the operators' board, in headless Chromium: a part stuck
for longer than health.stuck_after_s puts a red banner at the top of every board, in
the reader's language, naming what does not work since when; it cannot be dismissed,
and it goes when the part works again.

Screenshots for people to look at: test-artifacts/board-health-zh.png, -en.png."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.async_api import expect

from callcenter.broker import EmbeddedBroker
from tests.api_support import Api
from tests.fixtures.browser import OpenTab
from tests.test_board_browser import card, passwords, sign_in

VIEWPORT = (1400, 900)


@pytest.mark.page
async def test_a_stuck_part_puts_a_banner_on_every_board_until_it_works_again(
    api: Api, broker: EmbeddedBroker, open_tab: OpenTab
) -> None:
    """Test that with the broker stopped (no alarm can come in) and a command waiting for
    it, an operator's and a supervisor's boards both show, once that has lasted longer
    than health.stuck_after_s, a banner at the top naming both failures and since when,
    with no way to close it, and the tab title says so; that a board whose sign-in ends
    meanwhile shows neither; and that it goes when the broker is back."""
    await passwords(api, "li.na", "zhao.min")
    operator, supervisor = await open_tab(viewport=VIEWPORT), await open_tab(viewport=VIEWPORT)
    base = api.server.web_url
    await sign_in(operator, base, "li.na")
    await sign_in(supervisor, base, "zhao.min")
    # The supervisor reads the board in English.
    await supervisor.page.click("#lang-toggle")
    open_call = await api.press("H0001")
    closing = await api.press("H0006")
    for tab in (operator, supervisor):
        await expect(card(tab.page, open_call)).to_be_visible()
        await expect(tab.page.locator("#health-banner")).to_be_hidden()

    await broker.stop()  # at 10:00 district time
    reply = await api.post(f"/api/calls/{closing}/cancel", {"reason": "duplicate"}, who="zhao.min")
    assert reply.status == 200, reply.body
    # Stuck, but not yet for long: no banner.
    api.clock.advance(timedelta(seconds=10))
    await operator.page.wait_for_timeout(2500)  # the server looks every 2 s
    await expect(operator.page.locator("#health-banner")).to_be_hidden()

    api.clock.advance(timedelta(seconds=25))
    banner, english = (tab.page.locator("#health-banner") for tab in (operator, supervisor))
    for shown in (banner, english):
        await expect(shown).to_be_visible(timeout=10_000)
        await expect(shown).to_have_attribute("data-parts", "ingest device_commands")
        await expect(shown.locator("button")).to_have_count(0)
        box = await shown.bounding_box()
        assert box is not None and box["y"] + box["height"] <= VIEWPORT[1] / 3, box
    await expect(banner.locator('[data-part="ingest"]')).to_have_text(
        "⚠自 10:00 起无法接收报警信号——请立即联系技术人员"
    )
    await expect(banner.locator('[data-part="device_commands"]')).to_contain_text(
        "无法告知住户“救援已在路上”"
    )
    await expect(english.locator('[data-part="ingest"]')).to_have_text(
        "⚠Alarms are not being received since 10:00 — call the technician now"
    )
    await expect(operator.page).to_have_title("⚠ 系统故障 · (1) 紧急 · 呼叫看板")
    await expect(supervisor.page).to_have_title("⚠ SYSTEM FAULT · (1) Emergency · Call board")
    await operator.screenshot("board-health-zh")
    await supervisor.screenshot("board-health-en")

    # The supervisor's sign-in ends: the board clears, the banner and the title's fault
    # with it (nothing the board shows any more can say the server is working again).
    new = await api.post(
        "/api/users/zhao.min/password", {"password": "a-new-password-1"}, who="sun.admin"
    )
    assert new.status == 200, new.body
    await expect(supervisor.page.locator("body")).to_have_attribute("data-connection", "signed_out")
    await expect(english).to_be_hidden()
    await expect(supervisor.page).to_have_title("Call board")

    await broker.start()
    for shown in (banner, english):
        await expect(shown).to_be_hidden(timeout=30_000)
    await expect(operator.page).to_have_title("(1) 紧急 · 呼叫看板")
    assert operator.errors == [] and supervisor.errors_but_signed_out() == [], supervisor.errors
