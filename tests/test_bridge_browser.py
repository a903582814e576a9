"""Click-to-call on the board in headless Chromium, against the whole server and the fake
Twilio it runs: the operator presses "call the household" on a call (then the C key on
another), their own phone rings at the fake, and once they pick up the household's first
number (busy) and then its second (answered) are dialled; the history says each attempt
in Chinese and in English.

Screenshots at 1400x900 go to test-artifacts/ (bridge-zh.png, bridge-en.png,
bridge-welfare-zh.png).
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.api_support import Api
from tests.fixtures.browser import OpenTab
from tests.fixtures.fake_twilio import fake_of
from tests.test_board_browser import card, passwords, sign_in
from tests.test_voice_bridge import OPERATOR_PHONE, give_phone, planned_bridge
from tests.test_voice_welfare import welfare_with_own_mobile

pytestmark = pytest.mark.page


async def show_history(page: Page) -> None:
    """Scroll the detail panel to the history (in one go: the panel redraws live, and a
    redraw keeps where it was scrolled to)."""
    await page.evaluate("document.querySelector('#detail .history')?.scrollIntoView()")


async def test_the_call_household_button_bridges_the_operator_and_the_household(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that the detail's "call the household" button rings the operator's phone and
    says so, that the bridge falls from a busy first number to the second, and that the
    history shows each attempt in zh and en; the C key does the same."""
    fake = fake_of(api.server)
    await passwords(api, "li.na")
    household, first, second = await planned_bridge(api)
    tab = await open_tab(viewport=(1400, 900))
    page = tab.page
    await sign_in(tab, api.server.web_url, "li.na")
    call_id = await api.press(household)
    await card(page, call_id).click()

    button = page.locator('#detail [data-action="call-household"]')
    await expect(button).to_contain_text("拨打住户电话")
    await button.click()
    await expect(page.locator("#notice")).to_contain_text(f"正在拨打您的电话 {OPERATOR_PHONE}")
    ring = await fake.next_call(timeout=10)
    assert ring.to == OPERATOR_PHONE
    await fake.next_call(timeout=10)  # the first number: busy
    answered = await fake.next_call(timeout=10)
    assert answered.to == second
    await fake.wait_for_bridge(ring.sid)
    await fake.hang_up(answered.sid)
    await fake.wait_for_status(ring.sid, "completed")

    history = page.locator("#detail .history")
    await expect(history).to_contain_text(f"住户 {household} 第1个号码 {first} 的电话占线")
    await expect(history).to_contain_text(f"住户 {household} 第2个号码 {second} 接听了电话")
    await expect(history).to_contain_text("拨打住户电话：先拨打 接线员 李娜")
    await expect(history).to_contain_text("接线员 李娜 (li.na) 接听了电话")
    await show_history(page)
    await tab.screenshot("bridge-zh")

    await page.click("#lang-toggle")
    await expect(page.locator("#notice")).to_be_hidden(timeout=10_000)  # said in zh
    await expect(history).to_contain_text(f"household {household} number 1 {first}")
    await expect(button).to_contain_text("Call the household")
    await show_history(page)
    await tab.screenshot("bridge-en")

    # The C key presses the same button.
    await page.keyboard.press("c")
    await expect(page.locator("#notice")).to_contain_text("Ringing your phone")
    again = await fake.next_call(timeout=10)
    assert again.to == OPERATOR_PHONE


async def test_the_welfare_panel_rings_the_resident(api: Api, open_tab: OpenTab) -> None:
    """Test that a welfare call's "ring" button rings the operator's phone, then the
    resident's own mobile, and that the panel says how the ring went (in zh and en)."""
    fake = fake_of(api.server)
    await passwords(api, "li.na")
    await give_phone(api)
    welfare_id, mobile, _ = await welfare_with_own_mobile(api)
    fake.plan_phone(OPERATOR_PHONE, "answer")
    fake.plan_phone(mobile, "answer")
    tab = await open_tab(viewport=(1400, 900))
    page = tab.page
    await sign_in(tab, api.server.web_url, "li.na")
    await page.click("#welfare-panel summary")
    item = page.locator(f'.welfare-call[data-welfare-id="{welfare_id}"]')
    await item.locator('[data-action="ring-welfare"]').click()
    await expect(page.locator("#notice")).to_contain_text(f"正在拨打您的电话 {OPERATOR_PHONE}")
    ring = await fake.next_call(timeout=10)
    leg = await fake.next_call(timeout=10)
    assert (ring.to, leg.to) == (OPERATOR_PHONE, mobile)
    await fake.wait_for_bridge(ring.sid)
    await expect(item.locator(".welfare-rung")).to_have_text("第1次拨打中")
    await item.scroll_into_view_if_needed()
    await tab.screenshot("bridge-welfare-zh")
    await fake.hang_up(leg.sid)
    await fake.wait_for_status(ring.sid, "completed")
    await page.click("#lang-toggle")
    await expect(item.locator(".welfare-ring")).to_contain_text("Ring")
