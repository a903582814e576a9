"""The board's banners say what an action did, in headless Chromium against the whole
server: "send the best carer" with nobody free is not a green "done"; a carer sent is
named; a carer who failed the call is shown as not offered again; a call a carer
reported done with no operator having taken it waits for review on the board.

Screenshots go to test-artifacts/ (review-*.png).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from callcenter.domain.calls import Actor, ActorKind, CarerReport, Outcome, Report, Resolve
from callcenter.store import models as m
from device_sim.demo_district import build_demo_district
from tests.api_support import Api
from tests.desk_support import MONDAY_MORNING
from tests.fixtures.browser import OpenTab
from tests.test_board_browser import card, passwords, sign_in

pytestmark = pytest.mark.page


async def test_send_the_best_carer_with_nobody_free_says_so_and_is_not_green(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that with nobody on shift, "send the best carer" shows an amber banner that
    says nobody was free and what escalated, never the green "done: carer sent"; that
    sending a named carer says who was sent, in green; and that standing down the last
    carer with nobody free to send instead says so, in amber. The call's detail lists the
    numbers that reach the household in order, each a tel: link, in zh and en."""
    await passwords(api, "li.na")
    tab = await open_tab(viewport=(1400, 900))
    await sign_in(tab, api.server.web_url, "li.na")
    page = tab.page
    sent_call = await api.press("H0012")
    await card(page, sent_call).click()
    numbers = build_demo_district().households[11].phones
    assert [n.kind for n in numbers] == ["unit", "landline", "mobile"]
    listed = page.locator("#detail .phones li")
    await expect(listed).to_have_count(3)
    await expect(listed.nth(0)).to_contain_text(f"主机（免提） {numbers[0].number}")
    await expect(listed.nth(1)).to_contain_text(f"座机 {numbers[1].number}")
    await expect(listed.nth(2)).to_contain_text(f"手机 · {numbers[2].label} {numbers[2].number}")
    links = [await a.get_attribute("href") for a in await page.locator("#detail .phones a").all()]
    assert links == [f"tel:{n.number}" for n in numbers]
    await listed.last.scroll_into_view_if_needed()
    await tab.screenshot("numbers-zh")
    await page.click("#lang-toggle")
    await expect(page.locator("#detail")).to_contain_text("Numbers to ring, in order")
    await expect(listed.nth(0)).to_contain_text(f"Base unit (hands-free) {numbers[0].number}")
    await expect(listed.nth(2)).to_contain_text(f"Mobile · {numbers[2].label}")
    await tab.screenshot("numbers-en")
    await page.click("#lang-toggle")
    free = next(c for c in await api.carers() if c["state"] == "free")
    await page.fill("#pick-carer", free["code"])
    await page.click('#detail [data-action="dispatch-pick"]')
    notice = page.locator("#notice")
    await expect(notice).to_have_attribute("data-tone", "ok")
    await expect(notice).to_contain_text(f"已派出 {free['code']} {free['name']}")

    async with api.server.desk.transaction() as session:
        for carer_id in (await session.scalars(select(m.Carer.id))).all():
            session.add(m.DutyRoster(carer_id=carer_id, day=MONDAY_MORNING.date(), on_duty=False))
    api.server.desk.district.invalidate()
    api.clock.advance(timedelta(minutes=1))
    call_id = await api.press("H0013")
    await card(page, call_id).click()
    await expect(page.locator("#detail .actions .hint")).to_contain_text("目前没有可派的护理员")
    await page.click('#detail [data-action="dispatch-best"]')
    await expect(notice).to_be_visible()
    await expect(notice).to_have_attribute("data-tone", "warn")
    await expect(notice).to_contain_text("没有空闲的护理员，未派出任何人")
    await expect(notice).to_contain_text("已立即升级：未到达现场。请手动选择护理员")
    assert "已完成" not in (await notice.inner_text())
    color = await notice.evaluate("(n) => getComputedStyle(n).backgroundColor")
    assert color != "rgb(31, 90, 61)", color  # not the green of an action done
    await expect(card(page, call_id).locator(".carers")).to_contain_text("尚未派人")
    await tab.screenshot("review-nobody-free-zh")
    await page.click("#lang-toggle")
    await page.click('#detail [data-action="dispatch-best"]')
    await expect(notice).to_contain_text("Nobody free: no carer was sent.")
    await tab.screenshot("review-nobody-free-en")
    await page.click("#lang-toggle")

    # Standing down the one carer on a call with nobody free to replace them says so.
    await card(page, sent_call).click()
    on_call = [a["carer"] for a in (await api.call(sent_call))["assignments"] if a["active"]]
    for index, code in enumerate(on_call):
        row = page.locator(f'#detail .assignments tr[data-carer="{code}"]')
        await row.locator('[data-action="stand-down"]').click()
        await expect(row).to_have_attribute("data-state", "stood_down")
        if index < len(on_call) - 1:  # another carer is still on it: done as asked
            await expect(notice).to_have_attribute("data-tone", "ok")
            await expect(notice).to_contain_text(f"已撤回 {code}")
    await expect(notice).to_have_attribute("data-tone", "warn")
    await expect(notice).to_contain_text(f"已撤回 {on_call[-1]}")
    await expect(notice).to_contain_text("没有空闲护理员可补派")
    assert tab.errors == []


async def test_a_call_awaiting_review_and_a_carer_passed_over_show_on_the_board(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that a carer who declined is listed as not offered again, and that a carer's
    done on an emergency nobody took leaves it on the board awaiting review with what the
    carer reported, until the operator resolves it."""
    await passwords(api, "li.na")
    tab = await open_tab(viewport=(1400, 900))
    await sign_in(tab, api.server.web_url, "li.na")
    page = tab.page
    call_id = await api.press("H0014")
    first = (await api.call(call_id))["assignments"][0]["carer"]
    declined = await api.post(
        f"/api/calls/{call_id}/carers/{first}/status", {"status": "declined"}, who="li.na"
    )
    assert declined.status == 200, declined
    assert [a["carer"] for a in declined.body["assignments"] if a["active"]] != [first]
    await card(page, call_id).click()
    await expect(page.locator("#passed-over")).to_contain_text(first)
    await expect(page.locator("#passed-over")).to_contain_text("拒绝")
    ranked = page.locator("#detail .candidates tr")
    assert first not in [await r.get_attribute("data-carer") for r in await ranked.all()]

    # Reporting for the carer made li.na the owner of that call: now one nobody took.
    other = await api.press("H0016")
    code = (await api.call(other))["assignments"][0]["carer"]
    async with api.server.desk.transaction() as session:
        carer_id = await session.scalar(select(m.Carer.id).where(m.Carer.code == code))
    assert carer_id is not None
    carer = Actor(ActorKind.CARER, code)
    await api.server.desk.command(other, Report(carer, carer_id, CarerReport.ON_SCENE))
    await api.server.desk.command(other, Resolve(carer, Outcome.FALSE_ALARM, "by SMS"))
    badge = card(page, other).locator(".state-badge")
    await expect(badge).to_have_attribute("data-state", "awaiting_review")
    await expect(badge).to_have_text("待接线员复核")
    await expect(card(page, other).locator(".carers")).to_contain_text(code)
    await card(page, other).click()
    await expect(page.locator("#review-box")).to_contain_text(code)
    await expect(page.locator("#review-box")).to_contain_text("误报")
    await expect(page.locator("#outcome")).to_have_value("false_alarm")
    await tab.screenshot("review-awaiting-zh")
    await page.click("#lang-toggle")
    await expect(badge).to_have_text("Awaiting operator review")
    await tab.screenshot("review-awaiting-en")
    await page.click("#lang-toggle")
    # Taking it says so, and does not close it: it still awaits the review.
    await page.click('#detail [data-action="acknowledge"]')
    await expect(page.locator("#notice")).to_contain_text(f"已接手呼叫 {other}")
    await expect(page.locator("#notice")).to_have_attribute("data-tone", "ok")
    await expect(badge).to_have_attribute("data-state", "awaiting_review")
    await page.click('#detail [data-action="resolve"]')
    # A false alarm is confirmed in the page; the carer reached the door, so no reason.
    await expect(page.locator("#resolve-reason")).to_have_count(0)
    await page.click('#detail [data-action="resolve-confirm"]')
    await expect(page.locator("#notice")).to_contain_text(f"呼叫 {other} 已结案：误报")
    await expect(card(page, other)).to_have_count(0)
    assert tab.errors == []
