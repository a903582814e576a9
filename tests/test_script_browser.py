"""Guided handling on the board in headless Chromium, against the whole server: a fall's
handling script answered with one click a question, the recommendation moving to 120 on a
head injury, and "taken to hospital" resolved through the page's own confirmation with
the reason the server asks for when no carer reached the door.

Screenshots at 1400x900 go to test-artifacts/ (script-zh.png, script-confirm-zh.png,
script-en.png, script-confirm-en.png).
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from callcenter.domain.events import EventKind
from tests.api_support import Api
from tests.fixtures.browser import OpenTab
from tests.ingest_support import publish_events
from tests.test_board_browser import card, passwords, sign_in

pytestmark = pytest.mark.page


async def _answer(page: Page, question: str, answer: str) -> None:
    row = page.locator(f'#detail .script-questions li[data-question="{question}"]')
    await row.locator(f'[data-answer="{answer}"]').click()
    await expect(row).to_have_attribute("data-answer", answer)
    await expect(row.locator(f'[data-answer="{answer}"]')).to_have_attribute("aria-pressed", "true")


async def test_a_fall_is_guided_and_closed_as_taken_to_hospital_with_a_reason(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that a fall's detail shows its questions and two carers recommended; that
    answering (one click each) is kept in the history and a head injury puts "ring 120"
    first; that "taken to hospital" asks for a confirmation in the page with a reason (no
    carer reached the door), refuses to send without one, and closes the call with it."""
    await passwords(api, "li.na")
    tab = await open_tab(viewport=(1400, 900))
    page = tab.page
    await sign_in(tab, api.server.web_url, "li.na")
    await publish_events(
        api.broker.host,
        api.broker.port,
        api.prefix,
        [("H0001", "CB-H0001", "script-fall-1")],
        EventKind.FALL_DETECTED,
    )
    await page.wait_for_selector('.call-card[data-household="H0001"]')
    call_id = int(
        await page.locator('.call-card[data-household="H0001"]').get_attribute("data-call-id") or 0
    )
    await card(page, call_id).click()

    recommend = page.locator("#script-recommend")
    await expect(recommend).to_have_attribute("data-recommend", "send_two_carers")
    await expect(recommend).to_contain_text("派两名护理员")
    # Nobody owns it yet: the questions are folded so that "take" stays in view.
    questions = page.locator("#detail .script-details")
    await expect(questions).not_to_have_attribute("open", "")
    await expect(questions.locator("summary")).to_contain_text("0/10")
    await expect(page.locator('#detail [data-action="acknowledge"]')).to_be_in_viewport()
    await page.click('#detail [data-action="acknowledge"]')
    await expect(questions).to_have_attribute("open", "")
    await expect(page.locator("#detail .script-questions li")).to_have_count(10)
    await expect(page.locator("#detail .script")).to_contain_text("是否能自己起身？")

    await _answer(page, "conscious", "yes")
    await _answer(page, "can_get_up", "no")
    await expect(recommend).to_have_attribute("data-recommend", "send_two_carers")
    await _answer(page, "head_injury", "yes")
    await expect(recommend).to_have_attribute("data-recommend", "call_120")
    await expect(recommend).to_contain_text("120")
    await expect(recommend).to_contain_text("是否有头部撞击？")
    await expect(recommend).to_be_in_viewport()  # it stays in sight while answering
    head = page.locator('#detail .script-questions li[data-question="head_injury"]')
    await expect(head).to_have_attribute("data-raises", "true")
    await expect(questions.locator("summary")).to_contain_text("3/10")
    also = page.locator('#detail .recommend-more [data-recommend="send_two_carers"]')
    await expect(also).to_be_visible()
    detail = await api.call(call_id)
    answered = [
        (h["detail"]["question"], h["detail"]["answer"], h["actor"])
        for h in detail["history"]
        if h["action"] == "script_answer"
    ]
    assert answered == [
        ("conscious", "yes", "operator:li.na"),
        ("can_get_up", "no", "operator:li.na"),
        ("head_injury", "yes", "operator:li.na"),
    ]
    await tab.screenshot("script-zh")

    # Taken to hospital: the page asks first, and for a reason since no carer is there.
    await page.select_option("#outcome", "taken_to_hospital")
    await page.click('#detail [data-action="resolve"]')
    confirm = page.locator("#detail .confirm-resolve")
    await expect(confirm).to_be_visible()
    await expect(confirm).to_contain_text("送医")
    await expect(page.locator("#resolve-reason")).to_be_focused()
    await page.click('#detail [data-action="resolve-confirm"]')
    await expect(page.locator("#resolve-missing")).to_be_visible()
    assert (await api.call(call_id))["closed_at"] is None
    # "Back" leaves the call as it was; asking again brings the confirmation back.
    await page.click('#detail [data-action="resolve-back"]')
    await expect(confirm).to_have_count(0)
    await page.click('#detail [data-action="resolve"]')
    await expect(confirm).to_be_visible()
    await page.fill("#resolve-reason", "120先到，已送瑞金医院；两名护理员未到场")
    await confirm.scroll_into_view_if_needed()
    await tab.screenshot("script-confirm-zh")

    # The confirmation and what was typed survive the switch to English.
    await page.click("#lang-toggle")
    await expect(confirm).to_contain_text("Taken to hospital")
    await expect(recommend).to_contain_text("Ring 120")
    await expect(page.locator("#detail .script-details summary")).to_contain_text(
        "3 of 10 answered"
    )
    await recommend.scroll_into_view_if_needed()
    await tab.screenshot("script-en")
    await expect(page.locator("#resolve-reason")).to_have_value(
        "120先到，已送瑞金医院；两名护理员未到场"
    )
    await confirm.scroll_into_view_if_needed()
    await tab.screenshot("script-confirm-en")

    await page.click('#detail [data-action="resolve-confirm"]')
    await expect(page.locator("#detail-state")).to_have_attribute(
        "data-state", "resolved", timeout=15_000
    )
    detail = await api.call(call_id)
    assert detail["outcome"] == "taken_to_hospital"
    assert detail["history"][-1]["action"] == "resolved"
    assert detail["history"][-1]["detail"]["reason"] == "120先到，已送瑞金医院；两名护理员未到场"
    assert tab.errors == []


async def test_an_outcome_that_needs_no_confirmation_is_sent_at_once(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that "family attended" on an emergency closes it with one click (no
    confirmation, no reason), and that another operator sees the script but cannot
    answer it."""
    await passwords(api, "li.na", "wang.wei")
    mine, theirs = await open_tab(viewport=(1400, 900)), await open_tab(viewport=(1400, 900))
    await sign_in(mine, api.server.web_url, "li.na")
    await sign_in(theirs, api.server.web_url, "wang.wei")
    call_id = await api.press("H0002")
    await card(mine.page, call_id).click()
    await mine.page.click('#detail [data-action="acknowledge"]')
    await card(theirs.page, call_id).click()
    await expect(theirs.page.locator("#owned-by")).to_contain_text("李娜")
    answers = theirs.page.locator('#detail [data-action="script-answer"]')
    await expect(answers.first).to_be_disabled()

    await mine.page.select_option("#outcome", "family_attended")
    await mine.page.click('#detail [data-action="resolve"]')
    # Not a timing test: the resolve reads the call, sends, then reads it and its carers
    # again, which on a loaded two-core CI machine can take longer than the default 5 s.
    await expect(mine.page.locator("#detail-state")).to_have_attribute(
        "data-state", "resolved", timeout=15_000
    )
    assert (await api.call(call_id))["outcome"] == "family_attended"
    assert mine.errors == [] and theirs.errors == []
