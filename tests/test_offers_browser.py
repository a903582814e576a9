"""Offers on the board in headless Chromium (docs/calls.md, "Offers"): two operators
signed in through the form (which puts them on duty), an alarm offered on the offered
operator's board and taken with its Accept button; the pause switch in the top bar
moving an offer on at once. Screenshots to test-artifacts/ (board-offer-zh.png,
board-offer-en.png, board-offer-to-all-paused-zh.png)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from callcenter.broker import EmbeddedBroker
from tests.api_support import Api, running_api
from tests.fixtures.browser import OpenTab
from tests.test_board_browser import card, passwords, sign_in


@pytest.fixture
async def offering(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> AsyncIterator[Api]:
    async with running_api(broker, topic_prefix, seeded_database_url, offers=True) as api:
        yield api


async def test_an_offer_shows_on_the_offered_board_and_accept_takes_it(
    offering: Api, open_tab: OpenTab
) -> None:
    """Test that signing in puts both operators on duty, that an emergency is offered
    on li.na's board only (large, with Accept), that Accept takes the call, and that
    wang.wei's pause moves the next offer to li.na... and that both boards list the
    operators live."""
    api = offering
    await passwords(api, "li.na", "wang.wei")
    first, second = await open_tab(viewport=(1400, 900)), await open_tab(viewport=(1400, 900))
    base = api.server.web_url
    await sign_in(first, base, "li.na")
    await sign_in(second, base, "wang.wei")
    li, wang = first.page, second.page
    for page in (li, wang):
        await expect(page.locator("#duty .duty-state")).to_have_attribute("data-duty", "on_duty")
        await expect(page.locator('#operators li[data-actor="operator:li.na"]')).to_be_visible()
        await expect(page.locator('#operators li[data-actor="operator:wang.wei"]')).to_be_visible()

    call_id = await api.press("H0001")
    offer = li.locator(f'.offer.mine[data-call-id="{call_id}"]')
    await expect(offer).to_be_visible()
    await expect(offer).to_contain_text("分配给您的呼叫")
    await expect(offer.locator(".offer-left")).to_contain_text("剩余")
    await expect(wang.locator(".offer.mine")).to_have_count(0)
    await expect(
        wang.locator('#operators li[data-actor="operator:li.na"] .holding')
    ).to_contain_text(str(call_id))
    await first.screenshot("board-offer-zh")
    # The same in English, for people to look at.
    await li.click("#lang-toggle")
    await expect(offer).to_contain_text("Call offered to you")
    await first.screenshot("board-offer-en")
    await li.click("#lang-toggle")

    await offer.locator('[data-action="accept-offer"]').click()
    await expect(li.locator(".offer.mine")).to_have_count(0)
    await expect(card(wang, call_id).locator(".owner")).to_contain_text("li.na")
    assert (await api.call(call_id))["owner"] == "operator:li.na"

    # wang.wei pauses from the top bar; the next alarm cannot go to him, and li.na owns one.
    await wang.click("#duty button")
    await expect(wang.locator("#duty .duty-state")).to_have_attribute("data-duty", "paused")
    second_call = await api.press("H0002")
    everyone = wang.locator(f'.offer.to-all[data-call-id="{second_call}"]')
    await expect(everyone).to_be_visible()
    await expect(li.locator(f'.offer.to-all[data-call-id="{second_call}"]')).to_be_visible()
    await second.screenshot("board-offer-to-all-paused-zh")
    await wang.click("#duty button")
    await expect(wang.locator("#duty .duty-state")).to_have_attribute("data-duty", "on_duty")
    assert first.errors == [] and second.errors == []
