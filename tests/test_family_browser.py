"""The family portal in headless Chromium against the whole server: a relative asks for a
code, reads it from the fake Twilio, signs in, sees the household's history and the live
status of an open call (updated while they watch), in Chinese and English, and gets 404
for every other household's URL. Screenshot: test-artifacts/family.png."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from callcenter.store import models as m
from tests.api_support import Api
from tests.desk_support import scalar
from tests.fixtures.browser import OpenTab
from tests.ingest_support import eventually
from tests.sms_support import paged, sms
from tests.test_family_portal import contact_phone, texted_code

PHONE_VIEWPORT = (390, 844)


@pytest.mark.page
async def test_a_relative_signs_in_with_the_texted_code_and_follows_an_open_call(
    api: Api, open_tab: OpenTab
) -> None:
    """Test the family's path on a phone-sized screen: sign-in page, code from the fake
    SMS, the household's closed and open calls with district times, the live line naming
    the carer on the way with minutes left, its change to "arrived" by itself, the
    English switch, and 404 from every URL of another household."""
    done, _, done_phone = await paged(api, "H0001")
    # An operator takes it, so the carer's done closes it (an emergency nobody at the desk
    # took would wait for an operator's review).
    taken = await api.post(f"/api/calls/{done}/acknowledge", {})
    assert taken.status == 200, taken
    for answer in ("a", "s", "r"):
        await sms(api, done_phone, answer)

    async def closed() -> bool:
        return (await api.call(done))["closed_at"] is not None

    await eventually(closed, what="the first call closed")
    open_call, carer, carer_phone = await paged(api, "H0001")
    await sms(api, carer_phone, "a")
    carer_name = await scalar(api.server, select(m.Carer.name).where(m.Carer.code == carer))
    other_call = await api.press("H0002")
    phone = await contact_phone(api, "H0001")

    base = api.server.web_url
    tab = await open_tab(viewport=PHONE_VIEWPORT)
    page = tab.page
    await page.goto(base + "/family")
    await expect(page).to_have_url(base + "/family/login")
    await page.fill("#phone", phone.removeprefix("+86"))
    await page.click("#phone-form button[type=submit]")
    await expect(page.locator("#code-sent")).to_contain_text("验证码已发送")
    await page.fill("#code", await texted_code(api, phone))
    await page.click("#code-form button[type=submit]")
    await expect(page).to_have_url(base + "/family")

    calls = page.locator(".household[data-household=H0001] .call")
    await expect(calls).to_have_count(2)
    live = page.locator(f'.call[data-call-id="{open_call}"] .live')
    await expect(live).to_have_text(re.compile(rf"护理员 {carer_name} 正在赶来，约 \d+ 分钟"))
    finished = page.locator(f'.call[data-call-id="{done}"]')
    await expect(finished).to_contain_text(carer_name)
    await expect(finished.locator(".live")).to_have_count(0)
    # 02:00 UTC is 10:00 in the district (Asia/Shanghai), though the browser is on UTC.
    await expect(finished.locator(".when")).to_contain_text("10:00")
    await tab.screenshot("family")

    await sms(api, carer_phone, "s")  # the page polls every 10 s while a call is open
    await expect(live).to_have_text(
        f"护理员 {carer_name} 已到达，正在照顾您的家人。", timeout=15_000
    )

    await page.click("#language")
    await expect(live).to_have_text(f"Carer {carer_name} has arrived and is with your relative.")
    await expect(page.locator("#sign-out")).to_have_text("Sign out")

    for path in (
        "/family/api/households/H0002/calls",
        f"/family/api/households/H0002/calls/{other_call}",
        f"/family/api/households/H0001/calls/{other_call}",
        f"/family/api/households/H0002/calls/{open_call}",
    ):
        reply = await page.request.get(base + path)
        assert reply.status == 404, path
    own = await page.request.get(f"{base}/family/api/households/H0001/calls/{open_call}")
    assert own.status == 200

    await page.click("#sign-out")
    await expect(page).to_have_url(base + "/family/login")
    assert (await page.request.get(base + "/family/api/households")).status == 401
    assert tab.errors == []
