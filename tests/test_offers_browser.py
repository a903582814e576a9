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
from callcenter.domain.events import EventKind
from tests.api_support import Api, running_api
from tests.fixtures.browser import OpenTab
from tests.test_board_browser import card, passwords, sign_in


@pytest.fixture
async def offering(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> AsyncIterator[Api]:
    async with running_api(broker, topic_prefix, seeded_database_url, offers=True) as api:
        yield api


@pytest.mark.page
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
    # More calls for everyone: one box above the list and a count, so the list stays in view.
    for household in ("H0003", "H0004"):
        await api.press(household)
    await expect(li.locator("#offers .offers-more")).to_contain_text("另有 2 个呼叫")
    await expect(li.locator("#offers .offer.to-all")).to_have_count(1)
    await expect(li.locator("#calls .call-card.alarm")).to_have_count(3)
    await wang.click("#duty button")
    await expect(wang.locator("#duty .duty-state")).to_have_attribute("data-duty", "on_duty")
    assert first.errors == [] and second.errors == []


@pytest.mark.page
async def test_a_call_offered_to_me_is_handled_from_offer_to_resolve_with_the_keyboard_alone(
    offering: Api, open_tab: OpenTab
) -> None:
    """Test the whole path with keys only, on a real offer: an emergency offered to the
    operator on duty; N opens it (the call offered to me comes first), A accepts it, D
    sends the best carer, M and Ctrl+Enter write a note, and once the carer is at the
    door R and Enter resolve it. No mouse, nothing set up behind the board's back but the
    press and the carer's arrival."""
    api = offering
    await passwords(api, "li.na")
    tab = await open_tab(viewport=(1400, 900))
    await sign_in(tab, api.server.web_url, "li.na")
    page = tab.page
    await expect(page.locator("#duty .duty-state")).to_have_attribute("data-duty", "on_duty")
    # A service request first: the offer, not the older call, is the next that needs me.
    await api.press("H0012", EventKind.SERVICE_REQUEST)
    call_id = await api.press("H0014")
    await expect(page.locator(f'.offer.mine[data-call-id="{call_id}"]')).to_be_visible()
    offered = (await api.call(call_id))["offer"]
    assert offered is not None and offered["operator"] == "operator:li.na"
    keyboard = page.keyboard

    await keyboard.press("n")
    detail = page.locator(f'#detail .detail[data-call-id="{call_id}"]')
    await expect(detail).to_be_visible()
    await keyboard.press("a")
    await expect(page.locator(".offer.mine")).to_have_count(0)
    taken = await api.call(call_id)
    assert taken["owner"] == "operator:li.na" and taken["offer"] is None
    # As an operator would: once the board shows the call as mine, its actions are there.
    await expect(detail.locator('[data-action="dispatch-best"]')).to_be_enabled()

    async with page.expect_response(
        lambda reply: (
            reply.url.endswith(f"/api/calls/{call_id}/dispatch") and reply.request.method == "POST"
        )
    ) as dispatched:
        await keyboard.press("d")
    assert (await dispatched.value).status == 200
    assert len((await api.call(call_id))["assignments"]) == 1
    # The banner says what the dispatch did, and the panel is ready again.
    await expect(page.locator("#notice")).to_be_visible()
    await expect(detail.locator('[data-action="dispatch-best"]')).to_be_enabled()

    await keyboard.press("m")
    await expect(page.locator("#note-text")).to_be_focused()
    await keyboard.type("resident answered, door code 2580")
    await keyboard.press("Control+Enter")
    await expect(detail.locator(".history")).to_contain_text("door code 2580")

    carer = (await api.call(call_id))["assignments"][0]["carer"]
    reply = await api.post(
        f"/api/calls/{call_id}/carers/{carer}/status", {"status": "on_scene"}, who="li.na"
    )
    assert reply.status == 200, reply
    await expect(
        page.locator(f'.call-card[data-call-id="{call_id}"] .state-badge')
    ).to_have_attribute("data-state", "on_scene")
    await keyboard.press("Escape")
    await keyboard.press("r")
    await expect(page.locator("#outcome")).to_be_focused()
    await keyboard.press("Enter")
    await expect(page.locator(f'.call-card[data-call-id="{call_id}"]')).to_have_count(0)
    resolved = await api.call(call_id)
    assert resolved["state"] == "resolved" and resolved["owner"] == "operator:li.na"
    actions = [h["action"] for h in resolved["history"]]
    assert actions.index("offered") < actions.index("offer_accepted") < actions.index("resolved")
    assert tab.errors == []
