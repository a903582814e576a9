"""Welfare calls on the board in headless Chromium: an operator records an outcome from
the board, and after the week a supervisor sees the calls nobody made.

Screenshot for people to look at: test-artifacts/welfare.png.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.async_api import expect
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import models as m
from tests.api_support import Api
from tests.desk_support import count
from tests.fixtures.browser import OpenTab
from tests.ingest_support import eventually
from tests.test_board_browser import passwords, sign_in


@pytest.mark.page
async def test_an_operator_records_a_welfare_call_and_a_supervisor_sees_the_missed_ones(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that an operator opens this week's welfare calls on the board, records one
    with its outcome and note (it leaves the list, done by them), that operators see no
    missed list, and that after the week ends a supervisor's board counts and lists
    the calls left undone, in English too."""
    await passwords(api, "li.na", "zhao.min")
    week = (await api.get("/api/welfare")).body
    due = week["calls"]
    assert due
    base = api.server.web_url

    operator = await open_tab()
    await sign_in(operator, base, "li.na")
    page = operator.page
    await page.click("#welfare-panel summary")
    await expect(page.locator("#welfare-count")).to_have_text(f"· {len(due)} 个待打")
    first = page.locator(f'.welfare-call[data-welfare-id="{due[0]["id"]}"]')
    await expect(first).to_contain_text(due[0]["resident"]["name"])
    await expect(first).to_contain_text(due[0]["household"]["code"])
    await expect(page.locator("#welfare-missed-box")).to_be_hidden()

    await first.locator(".welfare-save").click()  # no outcome chosen yet
    await expect(page.locator("#conflict-text")).to_have_text("请先选择这通关怀电话的结果")
    await first.locator(".welfare-outcome").select_option("needs_visit")
    await first.locator(".welfare-note").fill("说膝盖疼，请护工明天上门")
    await first.locator(".welfare-save").click()
    await expect(page.locator("#notice")).to_contain_text(due[0]["resident"]["name"])
    await expect(first).to_have_count(0)
    await expect(page.locator("#welfare-count")).to_have_text(f"· {len(due) - 1} 个待打")
    async with AsyncSession(api.server.engine) as session:
        row = await session.get(m.WelfareCall, due[0]["id"])
    assert row is not None
    assert (row.state, row.outcome, row.done_by) == ("done", "needs_visit", "operator:li.na")
    assert row.note == "说膝盖疼，请护工明天上门"

    api.clock.advance(timedelta(days=7))

    async def missed() -> bool:
        where = m.WelfareCall.state == m.WelfareState.MISSED
        return await count(api.server, m.WelfareCall, where) == len(due) - 1

    await eventually(missed, what="last week's undone welfare calls becoming missed")
    supervisor = await open_tab()
    await sign_in(supervisor, base, "zhao.min")
    boss = supervisor.page
    await expect(boss.locator("#welfare-missed-box")).to_be_visible()
    await expect(boss.locator("#welfare-missed-count")).to_have_text(f"共 {len(due) - 1} 个")
    missed_items = boss.locator("#welfare-missed .welfare-call")
    await expect(missed_items).to_have_count(min(len(due) - 1, 200))
    if len(due) - 1 > 200:
        await expect(boss.locator("#welfare-missed .hint")).to_contain_text(
            f"另有 {len(due) - 201} 个"
        )
    await expect(missed_items.first).to_have_attribute("data-state", "missed")
    await expect(missed_items.first).to_contain_text("2026-11-23")
    assert await boss.locator(f'#welfare-missed [data-welfare-id="{due[0]["id"]}"]').count() == 0

    await boss.click("#lang-toggle")
    await expect(boss.locator("#welfare-missed-heading")).to_have_text(
        "Missed welfare calls (supervisor)"
    )
    await expect(boss.locator("#welfare-missed-count")).to_have_text(f"{len(due) - 1} in all")
    await boss.click("#welfare-panel summary")
    await expect(boss.locator("#welfare-count")).to_have_text(f"· {len(due)} to make")
    await boss.locator("#welfare-missed-heading").scroll_into_view_if_needed()
    await supervisor.screenshot("welfare")
    assert operator.errors == [] and supervisor.errors == []
