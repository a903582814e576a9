"""Every page in Chinese, with real data, in headless Chromium: not one English word or
code of the server's (``nobody_to_send``, ``on_the_way``, ``system:engine``) may show.

The data is made the way a night makes it: a call whose first carer declined, whose
escalations fired (operators' alarm, supervisors' and the station lead's texts, a second
carer who never answered); a call a carer resolved; a call cancelled; a note. Then the
board as an operator and as a supervisor with that call's detail and history open, the
reports, the carer's page from their link, the family page and the sign-in page are
each read as a person sees them (``innerText``, placeholders and titles of controls) and
fail on any word with three lowercase Latin letters or any snake_case code.

The browser runs in another time zone than the district's (America/Los_Angeles against
Asia/Shanghai): every time and day must still be the district's. Screenshots go to
test-artifacts/zh-walk-*.png.
"""

from __future__ import annotations

import ast
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, Page, expect

from callcenter.domain import calls as calls_package
from callcenter.domain.calls.escalation import NOBODY_TO_SEND
from callcenter.domain.calls.lifecycle import _CARER_PROGRESS as CARER_PROGRESS
from callcenter.domain.events import NOTED_ON
from callcenter.domain.policy import Action
from callcenter.notify import links
from tests.api_support import Api, set_password
from tests.fixtures.browser import ARTIFACTS, Tab
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.sms_support import paged, phone_of, sms
from tests.test_board_browser import card, sign_in
from tests.test_carer_page import _dispatch_link
from tests.test_family_portal import contact_phone, texted_code

DISTRICT = ZoneInfo("Asia/Shanghai")
# Not the district's zone: on the server's Monday 10:00 in Shanghai it is still Sunday here.
BROWSER_ZONE = "America/Los_Angeles"

# A Latin identifier a person should not meet on a Chinese page: snake_case, or a word
# with three lowercase letters in a row ("nobody", "Accepted", "engine").
LATIN = re.compile(r"\b[A-Za-z]*[a-z]{3,}[A-Za-z]*(?:_[A-Za-z]+)*\b|\b[a-z]+_[a-z_]+\b")
# Words that may show in Chinese: the switch to English (named in its own language), the
# map library's credit, and units. Carer,
# household and device codes (C012, H0001, CB-H0001) and "SMS" have no three lowercase
# letters and need no entry.
ALLOWED = {"English", "Leaflet", "OpenStreetMap", "km"}

# What a person reads: the page's rendered text, and the words on controls that are not
# in it (placeholders, a field's value).
VISIBLE_TEXT = """() => {
  const parts = [document.title, document.body.innerText];
  for (const el of document.querySelectorAll("input, textarea")) {
    if (el.checkVisibility && !el.checkVisibility()) continue;
    if (el.placeholder) parts.push(el.placeholder);
    const shown = !["hidden", "password", "date"].includes(el.type);
    if (shown && el.value) parts.push(el.value);
  }
  return parts.join("\\n");
}"""


def latin_words(text: str, also_allowed: set[str]) -> list[str]:
    return sorted({w for w in LATIN.findall(text) if w not in ALLOWED and w not in also_allowed})


async def no_latin(page: Page, where: str, also_allowed: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """Fail on any Latin identifier the page shows; returns the text read."""
    text: str = await page.evaluate(VISIBLE_TEXT)
    found = latin_words(text, set(also_allowed))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"zh-walk-{where}.txt").write_text(text)
    assert not found, f"{where} shows Latin words in Chinese: {found}\n--- page text ---\n{text}"
    return text


async def tab_in(browser: Browser, *, viewport: tuple[int, int] = (1400, 900)) -> Tab:
    context = await browser.new_context(
        locale="zh-CN",
        viewport={"width": viewport[0], "height": viewport[1]},
        timezone_id=BROWSER_ZONE,
    )
    context.set_default_timeout(10_000)
    page = await context.new_page()
    tab = Tab(page, context)
    page.on("pageerror", lambda error: tab.errors.append(f"script: {error}"))
    return tab


def test_the_latin_check_catches_codes_and_english_and_spares_codes_of_the_desk() -> None:
    """Test the check itself: it fails on the server's codes and English words, and lets
    carer, household and device codes, SMS and Chinese through."""
    caught = latin_words(
        "呼叫 5 nobody_to_send · system:engine alert_supervisor · carer C039 is on_the_way"
        " · Accepted",
        set(),
    )
    assert caught == sorted(
        {
            "nobody_to_send",
            "system",
            "engine",
            "alert_supervisor",
            "carer",
            "is",
            "on_the_way",
            "Accepted",
        }
        - {"is"}
    )
    assert latin_words("护理员 C039 王芳 · H0001 · CB-H0001 · SMS · 90秒 · 1.2 km", set()) == []


async def _night(api: Api) -> dict[str, object]:
    """A night's data: (1) a call whose first carer declined and whose escalations all
    fired, (2) a call a carer resolved, (3) a call an operator cancelled."""
    escalating, first, first_phone = await paged(api, "H0001")
    await sms(api, first_phone, "d")

    async def repaged() -> bool:
        return len((await api.call(escalating))["assignments"]) >= 2

    await eventually(repaged, what="the next carer paged after a decline")
    second = (await api.call(escalating))["assignments"][-1]["carer"]
    note = await api.post(f"/api/calls/{escalating}/notes", {"text": "女儿在路上"}, who="zhao.min")
    assert note.status == 200, note
    # 31 s: nobody has taken it (board alarm, supervisors texted); 125 s more: the second
    # carer never accepted (the station lead told, a third carer paged).
    api.clock.advance(timedelta(seconds=31))

    async def escalated() -> bool:
        return any(
            h["action"] == "alert_operators" for h in (await api.call(escalating))["history"]
        )

    await eventually(escalated, what="the unacknowledged step")
    api.clock.advance(timedelta(seconds=125))

    async def no_answer() -> bool:
        return any(h["action"] == "no_answer" for h in (await api.call(escalating))["history"])

    await eventually(no_answer, what="the unaccepted step")
    # The station lead is texted, in Chinese, which carer did not answer (code and name).
    silent = next(a for a in (await api.call(escalating))["assignments"] if a["carer"] == second)
    fake = fake_of(api.server)

    async def lead_told() -> bool:
        return any(f"所派护理员{second} " in m.body for m in fake.messages)

    await eventually(lead_told, what="the station lead's text")
    (lead,) = [m.body for m in fake.messages if f"所派护理员{second} " in m.body]
    assert f"所派护理员{second} {silent['name']}未及时接单" in lead, lead
    assert not latin_words(lead, set()), lead

    resolved, _, phone = await paged(api, "H0002")
    # An operator takes it, so the carer's done closes it (an emergency nobody at the desk
    # took would wait for an operator's review).
    taken = await api.post(f"/api/calls/{resolved}/acknowledge", {})
    assert taken.status == 200, taken
    for answer in ("a", "o", "s", "r"):
        await sms(api, phone, answer)

    async def closed() -> bool:
        return (await api.call(resolved))["state"] == "resolved"

    await eventually(closed, what="the carer's resolution")

    cancelled = await api.press("H0003")
    reply = await api.post(f"/api/calls/{cancelled}/cancel", {"reason": "duplicate"})
    assert reply.status == 200, reply
    return {"escalating": escalating, "first": first, "second": second, "resolved": resolved}


@pytest.mark.page
async def test_every_page_in_chinese_shows_no_latin_identifier(api: Api, browser: Browser) -> None:
    """Test the zh walk: the board as operator and supervisor with the escalated call's
    detail and history open, the reports, the wallboard, the carer page, the family page
    and the sign-in page, each free of English words and the server's codes, every time in
    the district's zone although the browser is in another."""
    night = await _night(api)
    escalating = int(night["escalating"])  # type: ignore[call-overload]
    base = api.server.web_url
    for username in ("li.na", "zhao.min"):
        await set_password(api.server, username)
    usernames = {"zhao", "min"}  # an operator's own sign-in name is shown beside theirs
    ARTIFACTS.mkdir(exist_ok=True)

    # The sign-in page.
    signing = await tab_in(browser)
    await signing.page.goto(base + "/login")
    await no_latin(signing.page, "sign-in")

    # The board, as an operator and as a supervisor, the escalated call's detail open.
    for username, role in (("li.na", "operator"), ("zhao.min", "supervisor")):
        tab = await tab_in(browser)
        await sign_in(tab, base, username)
        page = tab.page
        await card(page, escalating).click()
        history = page.locator("#detail .history li")
        await expect(history.first).to_be_visible()
        if role == "supervisor":
            # A refused action's banner in words: a carer busy on another call, picked by
            # hand (it used to read "carer C039 is dispatched on call 4; …").
            _, busy, _ = await paged(api, "H0004")
            await page.fill("#pick-carer", busy)
            await page.click('#detail [data-action="dispatch-pick"]')
            banner = page.locator("#conflict-banner")
            await expect(banner).to_be_visible()
            await expect(banner).to_contain_text(f"护理员 {busy} 正在处理呼叫")
            await expect(banner).to_contain_text("已派单")
        text = await no_latin(page, f"board-{role}", usernames)
        # The history says who did what in words, and why.
        for words in (
            "系统",
            "拒绝了派单",
            "已短信通知值班主管",
            "已过31秒仍无接线员接听",
            "未及时接单",
            "备注：女儿在路上",
        ):
            assert words in text, f"{words!r} missing from the {role}'s board"
        # "Nobody has taken it" (owner) and the escalation step are different words.
        if role == "operator":
            # An untaken alarm's row says so in its badge (no empty owner beside it).
            await expect(card(page, escalating).locator(".flag")).to_have_text("未接听")
            await expect(card(page, escalating).locator(".owner")).to_have_count(0)
            await expect(card(page, escalating).locator(".alerts")).to_contain_text("超时无人接听")
        await tab.screenshot(f"zh-walk-board-{role}")
        # Times on the board are the district's: the call opened at 10:00 in Shanghai.
        assert "10:00:" in text, text
        assert tab.errors == [], tab.errors
        if role == "supervisor":
            supervisor = tab
        else:
            await tab.context.close()

    # The reports, opened on the district's current week (Monday 23 November, although
    # the browser's own day is still Sunday the 22nd), reasons in words.
    page = supervisor.page
    await page.goto(base + "/reports")
    await expect(page.locator("body")).to_have_attribute("data-state", "shown")
    await expect(page.locator("#from")).to_have_value("2026-11-23")
    await expect(page.locator("#to")).to_have_value("2026-11-23")
    await expect(page.locator("#escalations tbody tr").first).to_be_visible()
    text = await no_latin(page, "reports", usernames)
    for words in ("超时无人接听", "无接线员接听", "护理员未接单", "护理员未及时接单"):
        assert words in text, f"{words!r} missing from the reports"
    await supervisor.screenshot("zh-walk-reports")
    assert supervisor.errors == [], supervisor.errors

    # The wallboard, for the supervisor's wall screen: its figures, the district's date.
    await page.goto(base + "/wall")
    await expect(page.locator("body")).to_have_attribute("data-connection", "live")
    await expect(page.locator("#wall-operators")).to_be_visible()
    text = await no_latin(page, "wall", usernames)
    for words in ("服务大屏", "等待接手的呼叫", "空闲接线员", "15分钟内到达现场", "2026年11月23日"):
        assert words in text, f"{words!r} missing from the wallboard"
    await supervisor.screenshot("zh-walk-wall")
    assert supervisor.errors == [], supervisor.errors

    # The administration page: as the supervisor, the rota with a day opened and the
    # policies (step names are codes the supervisor types; each shows its words beside
    # it); as an administrator, a household open with its residents and devices, and the
    # audit with a change opened.
    await page.goto(base + "/admin")
    await expect(page.locator("#rota-grid")).to_be_visible()
    await page.locator('#rota-grid tr[data-station="S01"] td.rota-cell').first.click()
    await expect(page.locator("#rota-detail")).to_be_visible()
    await no_latin(page, "admin-rota", usernames)
    await supervisor.screenshot("zh-walk-admin-rota")
    await page.click("#tab-policies")
    await expect(page.locator("form.policy-form")).to_be_visible()
    steps = {
        s["name"]
        for p in (await api.get("/api/register/policies", who="zhao.min")).body["policies"]
        for s in p["policy"]["steps"]
    }
    step_words = {w for name in steps for w in LATIN.findall(name)}
    await no_latin(page, "admin-policies", usernames | step_words)
    await supervisor.screenshot("zh-walk-admin-policies")
    assert supervisor.errors == [], supervisor.errors
    await set_password(api.server, "sun.admin")
    admin = await tab_in(browser)
    await sign_in(admin, base, "sun.admin")
    changed = await api.request(
        "PUT",
        "/api/register/households/H0001",
        who="sun.admin",
        json={
            **(await api.get("/api/register/households/H0001", who="sun.admin")).body["household"],
            "access_notes": "钥匙在邻居处",
        },
    )
    assert changed.status == 200, changed
    await admin.page.goto(base + "/admin#households")
    await admin.page.click('#households-list tr[data-code="H0001"]')
    await expect(admin.page.locator(".household-devices tbody tr").first).to_be_visible()
    admin_names = {"sun", "admin"}
    await no_latin(admin.page, "admin-household", admin_names)
    await admin.screenshot("zh-walk-admin-household")
    await admin.page.click("#tab-audit")
    await admin.page.locator("table.audit tbody tr.change").first.locator("button.expand").click()
    await expect(admin.page.locator("table.diff")).to_be_visible()
    await no_latin(admin.page, "admin-audit", admin_names)
    await admin.screenshot("zh-walk-admin-audit")
    assert admin.errors == [], admin.errors

    # The carer page, from the third carer's dispatch text, on a phone.
    third = (await api.call(escalating))["assignments"][-1]
    carer_phone = await phone_of(api, third["carer"])
    fake = fake_of(api.server)

    async def page_sent() -> bool:
        return any("/c/" in msg.body for msg in fake.sent_to(carer_phone))

    await eventually(page_sent, what="the third carer's dispatch text")
    link = await _dispatch_link(api, fake, carer_phone)
    carer = await tab_in(browser, viewport=(390, 844))
    await carer.page.goto(link)
    await expect(carer.page.locator("#foot")).not_to_be_empty()
    text = await no_latin(carer.page, "carer")
    # The link's expiry in the district's time, not the browser's.
    dispatched = datetime.fromisoformat(third["dispatched_at"].replace("Z", "+00:00"))
    expires = (dispatched + links.LINK_LIFETIME).astimezone(DISTRICT)
    assert expires.strftime("%H:%M") in text, (expires, text)
    browser_time = (dispatched + links.LINK_LIFETIME).astimezone(ZoneInfo(BROWSER_ZONE))
    assert browser_time.strftime("%H:%M") not in text
    await carer.screenshot("zh-walk-carer")
    assert carer.errors == [], carer.errors

    # The family page of the escalated household, on a phone.
    relative = await contact_phone(api, "H0001")
    family = await tab_in(browser, viewport=(390, 844))
    await family.page.goto(base + "/family")
    await no_latin(family.page, "family-sign-in")
    await family.page.fill("#phone", relative.removeprefix("+86"))
    await family.page.click("#phone-form button[type=submit]")
    await family.page.fill("#code", await texted_code(api, relative))
    await family.page.click("#code-form button[type=submit]")
    await expect(
        family.page.locator(".household[data-household=H0001] .call").first
    ).to_be_visible()
    text = await no_latin(family.page, "family")
    # The call opened at 10:00 in the district (02:00 UTC; 18:00 the day before here).
    assert "2026年11月23日 10:00" in text, text
    await family.screenshot("zh-walk-family")
    assert family.errors == [], family.errors


async def test_the_sign_in_page_speaks_one_language_and_switches(api: Api) -> None:
    """Test that the sign-in page is Chinese by default, English for a browser that
    prefers English or when asked (its link), and that a refusal keeps the language."""
    zh = await api.get("/login", who=None)
    assert zh.status == 200 and "用户名" in zh.body and "Username" not in zh.body
    assert 'href="/login?lang=en"' in zh.body
    en = await api.request("GET", "/login", who=None, headers={"Accept-Language": "en-GB,en"})
    assert "Username" in en.body and "用户名" not in en.body
    asked = await api.get("/login?lang=en", who=None)
    assert "Password" in asked.body and "密码" not in asked.body


# The history actions the domain makes from a value: Action values, a carer's report
# (target), a device's note (command.what), a closing's (action), a _release's (action),
# and the board alert's name.
MADE_FROM_VALUES = [
    "action.value",
    "action.value",
    "action",
    "action",
    "action",
    "NOBODY_TO_SEND",  # escalation._nobody: no carer free, no contact to tell or ring
    "command.what",
    "target.value",
]


def _history_actions() -> set[str]:
    """Every action the domain writes into a call's history: the literal ones, read from
    the source of domain/calls (each ``_entry(..., action, ...)`` and ``HistoryEntry``),
    and the ones made from a value (an escalation action, a carer's report, a device's
    note, a closing)."""
    found: set[str] = set()
    dynamic: list[str] = []
    for source in sorted(Path(calls_package.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            index = {"_entry": 4, "HistoryEntry": 2, "_release": 5}.get(node.func.id)
            if index is None or len(node.args) <= index:
                continue
            action = node.args[index]
            if isinstance(action, ast.Constant) and isinstance(action.value, str):
                found.add(action.value)
            else:
                dynamic.append(ast.unparse(action))
    # The actions made from values, each from its own source of truth.
    found |= {a.value for a in Action if a is not Action.REDISPATCH}
    found |= {s.value for s in CARER_PROGRESS}
    found |= {what for _, what in NOTED_ON.values()}
    found |= {NOBODY_TO_SEND, "resolved", "cancelled"}
    # Each made from a value is one of the sets above; a new one must be added there.
    assert sorted(dynamic) == sorted(MADE_FROM_VALUES), dynamic
    return found


def test_every_history_action_the_server_writes_has_words_in_both_languages() -> None:
    """Test that each history action of the domain has its ``history.<action>`` string in
    zh and in en in the board's i18n.js (contract 3 of issue 19)."""
    text = (Path(__file__).parents[1] / "dashboards" / "board" / "i18n.js").read_text()
    zh, en = text.split("\n  en: {", 1)
    actions = _history_actions()
    assert {"raised", "dispatched", "escalated", "alert_supervisor", "door_opened"} <= actions
    for action in sorted(actions):
        for language, block in (("zh", zh), ("en", en)):
            assert f'"history.{action}":' in block, f"history.{action} has no {language} words"
