"""The family portal on a phone, in Chinese and English: nothing squeezed. In English
the labels of a call's facts ("Time to carer accepting") are long; the page must still
leave the values room to read and never run wider than the screen. Screenshots:
test-artifacts/family-phone-*.png."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import select

from callcenter.store import models as m
from tests.api_support import Api
from tests.desk_support import scalar
from tests.fixtures.browser import OpenTab
from tests.ingest_support import eventually
from tests.sms_support import paged, sms
from tests.test_family_portal import contact_phone, texted_code

pytestmark = pytest.mark.page

PHONES = ((390, 844), (360, 740))
# A value narrower than this share of its list, or a value's text cut into words of one
# or two letters a line, is what a squeezed page looks like.
LEAST_VALUE_SHARE = 0.45

_MEASURE = """() => {
  const facts = [...document.querySelectorAll('.call dl')].map((dl) => {
    const width = dl.getBoundingClientRect().width;
    return [...dl.querySelectorAll('dd')].map((dd) => ({
      text: dd.textContent,
      share: dd.getBoundingClientRect().width / width,
      lines: Math.round(dd.getBoundingClientRect().height /
                        parseFloat(getComputedStyle(dd).lineHeight)),
    }));
  }).flat();
  const overflowing = [...document.querySelectorAll('body *')]
    .filter((el) => el.getClientRects().length &&
                    el.getBoundingClientRect().right > innerWidth + 0.5)
    .map((el) => el.tagName + '.' + el.className + ': ' + (el.textContent || '').slice(0, 40));
  return { facts, overflowing, scroll: document.documentElement.scrollWidth, width: innerWidth };
}"""


async def _measured(page: Page) -> dict[str, Any]:
    measured: dict[str, Any] = await page.evaluate(_MEASURE)
    return measured


def _squeezed(measured: dict[str, Any]) -> list[str]:
    found = [
        f"{fact['text']!r} has {fact['share']:.0%} of its list's width"
        for fact in measured["facts"]
        if fact["share"] < LEAST_VALUE_SHARE
    ]
    found += [
        f"{fact['text']!r} takes {fact['lines']} lines"
        for fact in measured["facts"]
        if fact["lines"] > 2
    ]
    found += [f"wider than the screen: {what}" for what in measured["overflowing"]]
    if measured["scroll"] > measured["width"]:
        found.append(f"the page scrolls sideways ({measured['scroll']} > {measured['width']})")
    return found


async def test_the_family_page_is_not_squeezed_on_a_phone_in_english_or_chinese(
    api: Api, open_tab: OpenTab
) -> None:
    """Test the sign-in page at 360x740 and the signed-in family page with a closed and
    an open call at 390x844 and 360x740, in zh and en: each fact's value has at least 45%
    of its list's width and at most two lines, and nothing is wider than the screen."""
    done, _, done_phone = await paged(api, "H0001")
    # Taken at the desk, so the carer's done closes it rather than awaiting review.
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
    phone = await contact_phone(api, "H0001")

    base = api.server.web_url
    tab = await open_tab(viewport=PHONES[0])
    page = tab.page
    await page.goto(base + "/family")
    problems: list[str] = []
    # The sign-in page, in both languages, at the smaller phone.
    await page.set_viewport_size({"width": PHONES[1][0], "height": PHONES[1][1]})
    for language in ("zh", "en"):
        await expect(page.locator("#phone-form button[type=submit]")).to_be_visible()
        await tab.screenshot(f"family-phone-sign-in-{language}-{PHONES[1][0]}x{PHONES[1][1]}")
        problems += [f"sign-in {language}: {p}" for p in _squeezed(await _measured(page))]
        await page.click("#language")
    await expect(page.locator("#language")).to_have_text("English")
    await page.set_viewport_size({"width": PHONES[0][0], "height": PHONES[0][1]})
    await page.fill("#phone", phone.removeprefix("+86"))
    await page.click("#phone-form button[type=submit]")
    await page.fill("#code", await texted_code(api, phone))
    await page.click("#code-form button[type=submit]")
    await expect(page).to_have_url(base + "/family")
    await expect(page.locator(f'.call[data-call-id="{open_call}"] .live')).to_contain_text(
        carer_name
    )

    for language, switch_to in (("zh", None), ("en", "中文")):
        if switch_to is not None:
            await page.click("#language")
            await expect(page.locator("#language")).to_have_text(switch_to)
            await expect(page.locator(".call dt").first).to_have_text("Answered by")
        for width, height in PHONES:
            await page.set_viewport_size({"width": width, "height": height})
            await page.evaluate("window.scrollTo(0, document.body.scrollHeight / 3)")
            await tab.screenshot(f"family-phone-{language}-{width}x{height}")
            problems += [
                f"{language} {width}x{height}: {problem}"
                for problem in _squeezed(await _measured(page))
            ]
    assert problems == [], "\n".join(problems)
    assert tab.errors == []
