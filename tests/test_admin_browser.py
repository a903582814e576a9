"""The administration page (/admin) in headless Chromium, against the whole server: an
administrator adds a household with two residents and a device through the page, the
device's first press opens a call whose detail on the board shows the new record, with
no restart; each change is in the audit tab with its before and after; a refused form
shows each field's message beside it in zh and in en; a supervisor sees the rota and the
policies and nothing else; a holiday's gap shows in the rota before it comes; an
operator is refused.

Screenshots for people to look at go to test-artifacts/ (admin-*.png), or to the folder
named by ADMIN_SHOTS (e.g. /tmp/shots), at 1400x900.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, Route, expect

from tests.api_support import Api, set_password, token_of
from tests.fixtures.browser import ARTIFACTS, OpenTab, Tab
from tests.ingest_support import publish_events
from tests.test_board_browser import sign_in

pytestmark = pytest.mark.page

ADMIN = "sun.admin"
SUPERVISOR = "zhao.min"
OPERATOR = "li.na"
DESK_SCREEN = (1400, 900)
SHOTS = Path(os.environ.get("ADMIN_SHOTS", str(ARTIFACTS)))


async def shot(tab: Tab, name: str) -> None:
    """Save the page as SHOTS/admin-NAME.png (Playwright makes the folder)."""
    await tab.page.screenshot(path=str(SHOTS / f"admin-{name}.png"))


def script_errors(tab: Tab) -> list[str]:
    """The tab's errors but the browser's own line for each refusal the test asked for
    (a 400 or 422 answer to a form)."""
    return [
        e
        for e in tab.errors
        if not ("Failed to load resource" in e and ("(Bad Request)" in e or "(Unprocessable" in e))
    ]


async def sign_in_to_admin(tab: Tab, api: Api, username: str) -> Page:
    """Sign in through the form, then open /admin."""
    await set_password(api.server, username)
    base = api.server.web_url
    await sign_in(tab, base, username)
    await tab.page.goto(base + "/admin")
    await expect(tab.page.locator("body")).to_have_attribute("data-state", "ready")
    return tab.page


def problem(page: Page, name: str) -> Locator:
    return page.locator(f'.field[data-for="{name}"] > .problem')


async def pick_on_map(page: Page) -> None:
    """Click the map a little off its centre: the fields take the place clicked."""
    box = await page.locator("#pick-map").bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.45)
    await expect(page.locator("#f-lat")).not_to_have_value("")
    await expect(page.locator("#f-lon")).not_to_have_value("")
    await expect(page.locator("#pick-map .home-mark")).to_have_count(1)


async def with_login(route: Route) -> None:
    """The real server's answer to adding a device, with a login as a broker that takes
    per-device logins would issue one (the test broker takes none: ``login`` is null;
    the answer's shape is the API's, web/register.py DeviceAnswer)."""
    answer = await route.fetch()
    body = await answer.json()
    if answer.status in (200, 201):
        body["login"] = {"username": body["device"]["serial"], "password": "s3cret-shown-once"}
    await route.fulfill(response=answer, body=json.dumps(body))


async def test_an_administrator_adds_a_household_whose_first_press_shows_its_record(
    api: Api, open_tab: OpenTab
) -> None:
    """Test the must-show: an administrator adds a household with two residents, two
    contacts (the second moved up) and a number through the page, picking its place on
    the map, then its device (its login shown once); the device's first press opens a
    call whose detail on the board shows the new record (allergies, do not resuscitate,
    medicines, doctor, hospital, hearing, the key holder and their hours), with no
    restart; then each change, and a later edit, is in the audit tab with before and
    after."""
    tab = await open_tab(viewport=DESK_SCREEN)
    base = api.server.web_url
    page = await sign_in_to_admin(tab, api, ADMIN)
    await expect(page.locator("#tabs .tab")).to_have_count(9)
    await expect(page.locator("#households-list tbody tr").first).to_be_visible()

    await page.click("#household-new")
    await page.fill('[data-field="code"]', "H9101")
    await page.fill('[data-field="address"]', "城中区南山路 90 号 2 单元 301")
    await page.select_option('[data-field="home_station"]', "S01")
    await page.select_option('[data-field="backup_station"]', "S02")
    await pick_on_map(page)
    # The fields move the mark: type a place, the mark follows.
    await page.fill("#f-lat", "36.6121")
    await page.fill("#f-lon", "101.7862")
    await page.fill('[data-field="access_notes"]', "钥匙在楼下 101 邻居处")
    r1 = "residents.1"
    await page.fill(f'[data-field="{r1}.name"]', "吴秀珍")
    await page.fill(f'[data-field="{r1}.birth_date"]', "1937-05-09")
    await page.select_option(f'[data-field="{r1}.sex"]', "female")
    await page.select_option(f'[data-field="{r1}.mobility"]', "walking_aid")
    await page.fill(f'[data-field="{r1}.allergies"]', "青霉素\n磺胺类")
    await page.fill(f'[data-field="{r1}.medicines"]', "华法林 3mg 每晚")
    await page.fill(f'[data-field="{r1}.conditions"]', "房颤")
    await page.fill(f'[data-field="{r1}.doctor"]', "马医生")
    await page.fill(f'[data-field="{r1}.clinic"]', "南山社区卫生服务站")
    await page.fill(f'[data-field="{r1}.clinic_phone"]', "+8697187650000")
    await page.fill(f'[data-field="{r1}.hospital"]', "青海大学附属医院")
    await page.fill(f'[data-field="{r1}.speaks"]', "青海话")
    await page.select_option(f'[data-field="{r1}.hearing"]', "impaired")
    await page.check(f'[data-field="{r1}.do_not_resuscitate"]')
    await page.click("#add-resident")
    # What was typed stays when a row is added.
    await expect(page.locator(f'[data-field="{r1}.name"]')).to_have_value("吴秀珍")
    await page.fill('[data-field="residents.2.name"]', "吴建国")
    await page.fill('[data-field="residents.2.birth_year"]', "1935")
    await page.click("#add-contact")
    await page.fill('[data-field="contacts.1.name"]', "马刚")
    await page.fill('[data-field="contacts.1.relation"]', "邻居")
    await page.fill('[data-field="contacts.1.phone"]', "+8613800009102")
    await page.click("#add-contact")
    await page.fill('[data-field="contacts.2.name"]', "吴丽")
    await page.fill('[data-field="contacts.2.relation"]', "女儿")
    await page.fill('[data-field="contacts.2.phone"]', "+8613800009101")
    await page.check('[data-field="contacts.2.holds_key"]')
    await page.fill('[data-field="contacts.2.call_from"]', "07:00")
    await page.fill('[data-field="contacts.2.call_until"]', "22:00")
    # The daughter is to be called first.
    await page.click('.contact[data-position="2"] [data-action="up"]')
    await expect(page.locator('[data-field="contacts.1.name"]')).to_have_value("吴丽")
    await expect(page.locator('[data-field="contacts.1.holds_key"]')).to_be_checked()
    await page.click("#add-phone")
    await page.select_option('[data-field="phones.1.kind"]', "landline")
    await page.fill('[data-field="phones.1.number"]', "+8697112340000")
    await page.click("#household-save")
    await expect(page.locator("form.household-form .form-problem.saved")).to_be_visible()
    await expect(page.locator("form.household-form h2")).to_contain_text("H9101")
    await expect(page.locator('#households-list tr[data-code="H9101"]')).to_be_visible()

    # The device, with its login shown once.
    await page.route("**/api/register/devices", with_login)
    await page.fill('.household-devices [data-field="serial"]', "CB-H9101")
    await page.click('.household-devices button[type="submit"]')
    dialog = page.locator(".login-once")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#login-password")).to_have_text("s3cret-shown-once")
    await expect(dialog.locator(".once-warning")).to_contain_text("只显示这一次")
    await shot(tab, "device-login-zh")
    await page.click("#login-done")
    await expect(dialog).to_have_count(0)
    row = page.locator('.household-devices tr[data-serial="CB-H9101"]')
    await expect(row).to_be_visible()

    saved = (await api.get("/api/register/households/H9101", who=ADMIN)).body["household"]
    assert [r["name"] for r in saved["residents"]] == ["吴秀珍", "吴建国"]
    assert [c["name"] for c in saved["contacts"]] == ["吴丽", "马刚"]
    assert saved["residents"][0]["allergies"] == ["青霉素", "磺胺类"]
    assert (saved["lat"], saved["lon"]) == (36.6121, 101.7862)

    # The device's first press: a call, on the board at once, showing the new record.
    await publish_events(
        api.broker.host, api.broker.port, api.prefix, [("H9101", "CB-H9101", "admin-1")]
    )
    await page.goto(base + "/board")
    card = page.locator('.call-card[data-household="H9101"]')
    await expect(card).to_be_visible(timeout=15_000)
    await card.click()
    resident = page.locator("#detail .resident-card")
    await expect(resident).to_contain_text("吴秀珍")
    # Under the address, before any button: who must not be resuscitated, who is allergic.
    top = page.locator("#detail .record-alerts.top")
    await expect(top).to_contain_text("吴秀珍")
    await expect(top).to_contain_text("不做心肺复苏")
    await expect(top).to_contain_text("青霉素、磺胺类")
    await expect(resident.locator('[data-record="allergies"]').first).to_contain_text("青霉素")
    await expect(resident.locator('[data-record="dnr"]')).to_have_text("不做心肺复苏")
    for words in (
        "华法林 3mg 每晚",
        "房颤",
        "马医生",
        "+8697187650000",
        "青海大学附属医院",
        "青海话",
        "听力差",
    ):
        await expect(resident).to_contain_text(words)
    first_contact = resident.locator("ol.family li").first
    await expect(first_contact).to_contain_text("吴丽")
    await expect(first_contact).to_contain_text("有钥匙")
    await expect(first_contact).to_contain_text("可呼叫 07:00–22:00")
    await shot(tab, "board-detail-zh")
    await resident.scroll_into_view_if_needed()
    await resident.screenshot(path=str(SHOTS / "admin-board-resident-zh.png"))

    # A later edit: the access notes and the second resident's mobility.
    await page.goto(base + "/admin#households")
    await page.fill("#households-search", "南山路 90")
    await page.click('#households-bar button[type="submit"]')
    await page.click('#households-list tr[data-code="H9101"]')
    await page.fill('[data-field="access_notes"]', "钥匙在女儿处")
    await page.select_option('[data-field="residents.2.mobility"]', "wheelchair")
    await page.click("#household-save")
    await expect(page.locator("form.household-form .form-problem.saved")).to_be_visible()

    # Each change in the audit, with its before and after.
    await page.click("#tab-audit")
    await page.fill("#audit-household", "H9101")
    await page.click('#audit-filters button[type="submit"]')
    rows = page.locator("table.audit tbody tr.change")
    await expect(rows).to_have_count(3)
    actions = [await r.get_attribute("data-action") for r in await rows.all()]
    assert actions == ["change_household", "add_device", "add_household"], actions
    await rows.nth(0).locator("button.expand").click()
    diff = page.locator("table.diff").first
    await expect(diff.locator('tr[data-field="access_notes"] .before')).to_have_text(
        "钥匙在楼下 101 邻居处"
    )
    await expect(diff.locator('tr[data-field="access_notes"] .after')).to_have_text("钥匙在女儿处")
    await expect(diff.locator('tr[data-field="residents.2.mobility"] .before')).to_have_text(
        "能自理"
    )
    await expect(diff.locator('tr[data-field="residents.2.mobility"] .after')).to_have_text("轮椅")
    # Only what changed is listed.
    await expect(diff.locator("tbody tr")).to_have_count(2)
    await page.locator("table.audit tbody tr.change").nth(2).locator("button.expand").click()
    added = page.locator("table.diff").nth(1)
    await expect(added.locator('tr[data-field="residents.1.allergies"] .after')).to_have_text(
        "青霉素、磺胺类"
    )
    await expect(added.locator('tr[data-field="residents.1.allergies"] .before')).to_have_text(
        "（新增）"
    )
    # The person filter: nobody else changed it.
    await page.fill("#audit-actor", "operator:li.na")
    await page.click('#audit-filters button[type="submit"]')
    await expect(page.locator("table.audit tbody tr")).to_have_count(0)
    await expect(page.locator("#main .empty")).to_be_visible()
    await screens(tab, api)
    assert tab.errors == [], tab.errors


async def screens(tab: Tab, api: Api) -> None:
    """The households tab with H9101 open, the policies and the audit of H9101 with its
    last change opened, in zh and in en, saved for people to look at."""
    page = tab.page
    for language in ("zh", "en"):
        if language == "en":
            async with page.expect_response("**/api/me/language"):
                await page.click("#lang-toggle")
        await page.click("#tab-households")
        await page.click('#households-list tr[data-code="H9101"]')
        await expect(page.locator("form.household-form h2")).to_contain_text("H9101")
        await expect(page.locator("#pick-map .station-dot").first).to_be_attached()
        await page.evaluate("window.scrollTo(0, 0)")
        await shot(tab, f"households-{language}")
        await page.click("#tab-policies")
        await expect(page.locator("form.policy-form")).to_be_visible()
        await shot(tab, f"policies-{language}")
        await page.click("#tab-audit")
        await page.fill("#audit-actor", "")
        await page.fill("#audit-household", "H9101")
        await page.click('#audit-filters button[type="submit"]')
        latest = page.locator("table.audit tbody tr.change").first
        await expect(latest).to_have_attribute("data-action", "change_household")
        await latest.locator("button.expand").click()
        await expect(page.locator("table.diff")).to_be_visible()
        await shot(tab, f"audit-{language}")


async def test_a_refused_household_says_each_problem_beside_its_field_in_zh_and_en(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that the rules' refusals are shown beside their fields, in the server's words
    in the signed-in person's language: Chinese, then English after the switch."""
    tab = await open_tab(viewport=DESK_SCREEN)
    page = await sign_in_to_admin(tab, api, ADMIN)
    await page.click("#household-new")
    await page.fill('[data-field="code"]', "H 9102")
    await page.fill('[data-field="address"]', "城东区")
    await page.select_option('[data-field="home_station"]', "S01")
    await page.select_option('[data-field="backup_station"]', "S01")
    await pick_on_map(page)
    await page.fill('[data-field="residents.1.clinic_phone"]', "0971-8765")
    await page.click("#add-contact")
    await page.fill('[data-field="contacts.1.name"]', "吴丽")
    await page.fill('[data-field="contacts.1.relation"]', "女儿")
    await page.fill('[data-field="contacts.1.phone"]', "13800009101")
    await page.fill('[data-field="contacts.1.call_from"]', "07:00")

    expected = {
        "zh": {
            "code": "只能用",
            "backup_station": "备用服务站不能与所属服务站相同",
            "residents.1.name": "必填",
            "residents.1.birth_year": "必填",
            "residents.1.clinic_phone": "不是国际格式的号码",
            "contacts.1.phone": "不是国际格式的号码",
            "contacts.1.call_from": "可呼叫时段须同时写开始和结束",
        },
        "en": {
            "code": "may hold only",
            "backup_station": "must differ from the home station",
            "residents.1.name": "is required",
            "residents.1.birth_year": "is required",
            "residents.1.clinic_phone": "is not a phone number in international form",
            "contacts.1.phone": "is not a phone number in international form",
            "contacts.1.call_from": "give both ends of the hours",
        },
    }
    for language in ("zh", "en"):
        if language == "en":
            async with page.expect_response("**/api/me/language"):
                await page.click("#lang-toggle")
        await page.click("#household-save")
        summary = page.locator("form.household-form .form-problem")
        await expect(summary).to_be_visible()
        for name, words in expected[language].items():
            await expect(problem(page, name)).to_contain_text(words)
            await expect(page.locator(f'.field[data-for="{name}"]')).to_have_class("field refused")
        await shot(tab, f"refused-{language}")
    assert (await api.get("/api/register/households/H 9102", who=ADMIN)).status in (400, 404)
    assert script_errors(tab) == [], tab.errors


async def test_a_supervisor_keeps_the_policies_and_an_operator_is_refused(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that a supervisor sees only the policies tab; that a step breaking the
    domain's rules is refused with the server's words beside it; that a change is
    saved, shown as edited, previewed as a timeline, and reset to the configured
    policy; and that an operator is refused the page."""
    base = api.server.web_url
    tab = await open_tab(viewport=DESK_SCREEN)
    page = await sign_in_to_admin(tab, api, SUPERVISOR)
    tabs = page.locator("#tabs .tab")
    await expect(tabs).to_have_count(3)
    assert [await t.get_attribute("id") for t in await tabs.all()] == [
        "tab-rota",
        "tab-shifts",
        "tab-policies",
    ]
    assert await page.locator("#tab-households").count() == 0
    # The board links here for supervisors.
    await page.goto(base + "/board")
    await expect(page.locator("#admin-link")).to_be_visible()
    await page.click("#admin-link")
    await expect(page.locator("body")).to_have_attribute("data-tab", "rota")
    await page.click("#tab-policies")
    await expect(page.locator("body")).to_have_attribute("data-tab", "policies")

    await page.click('.policy-type[data-call-type="fall"]')
    form = page.locator('form.policy-form[data-call-type="fall"]')
    await expect(form).to_be_visible()
    steps = form.locator(".step-row")
    count = await steps.count()
    assert count >= 1
    await expect(form.locator(".timeline .lane-steps li")).to_have_count(count)
    await shot(tab, "policies-zh")
    await form.locator(".preview").screenshot(path=str(SHOTS / "admin-policy-preview-zh.png"))

    # A step counted from a dispatch must wait for the carer's acceptance.
    await page.click("#add-step")
    n = count + 1
    await page.fill(f'[data-field="steps.{n}.name"]', "late_check")
    await page.fill(f'[data-field="steps.{n}.after_s"]', "400")
    await page.select_option(f'[data-field="steps.{n}.counted_from"]', "dispatched")
    await page.select_option(f'[data-field="steps.{n}.unless"]', "on_scene")
    # The timeline follows what is typed.
    await expect(
        page.locator('.lane[data-from="dispatched"] li[data-step="late_check"]')
    ).to_be_visible()
    await page.click("#policy-save")
    await expect(page.locator(f'.step-row[data-for="steps.{n}"] > .problem')).to_contain_text(
        "unless = 'accepted'"
    )
    await page.select_option(f'[data-field="steps.{n}.unless"]', "accepted")
    await page.click("#policy-save")
    await expect(page.locator("form.policy-form .form-problem.saved")).to_be_visible()
    await expect(page.locator('.policy-type[data-call-type="fall"] .source')).to_contain_text(
        "已修改"
    )
    policies = (await api.get("/api/register/policies", who=SUPERVISOR)).body["policies"]
    fall = next(p for p in policies if p["call_type"] == "fall")
    assert fall["source"] == "edited"
    assert any(s["name"] == "late_check" for s in fall["policy"]["steps"])

    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#policy-reset")
    await expect(page.locator('.policy-type[data-call-type="fall"] .source')).to_contain_text(
        "按配置文件"
    )
    assert script_errors(tab) == [], tab.errors

    operator = await open_tab(viewport=DESK_SCREEN)
    await operator.page.goto(base + "/admin")
    await expect(operator.page).to_have_url(base + "/login")
    await set_password(api.server, OPERATOR)
    await sign_in(operator, base, OPERATOR)
    await expect(operator.page.locator("#admin-link")).to_be_hidden()
    refused = await operator.page.goto(base + "/admin")
    assert refused is not None and refused.status == 403
    await expect(operator.page.locator("body")).to_contain_text("管理页面仅供管理员和值班主管使用")


async def test_devices_stations_and_carers_are_kept_from_their_tabs(
    api: Api, open_tab: OpenTab
) -> None:
    """Test the other tabs an administrator keeps: a device moved to another household
    (its new login shown once), given a new login, and retired, found by the filter; a
    station's phone refused beside its field, then changed; a carer added, then taken off
    and listed only when asked for; and each of these in the audit."""
    tab = await open_tab(viewport=DESK_SCREEN)
    page = await sign_in_to_admin(tab, api, ADMIN)

    await page.click("#tab-devices")
    await page.fill("#devices-filter", "CB-H0003")
    rows = page.locator(".device-list tbody tr")
    await expect(rows).to_have_count(1)
    await page.route("**/api/register/devices/*/move", with_login)
    await rows.locator('[data-field="household"]').fill("H0004")
    await rows.locator('[data-action="move"]').click()
    await expect(page.locator("#login-username")).to_have_text("CB-H0003")
    await page.click("#login-done")
    await expect(rows.locator("td").nth(2)).to_have_text("H0004")
    await page.route("**/api/register/devices/*/login", with_login)
    page.once("dialog", lambda dialog: dialog.accept())
    await rows.locator('[data-action="login"]').click()
    await expect(page.locator("#login-username")).to_have_text("CB-H0003")
    await page.click("#login-done")
    page.once("dialog", lambda dialog: dialog.accept())
    await rows.locator('[data-action="retire"]').click()
    await expect(rows).to_have_attribute("data-retired", "yes")
    await expect(rows.locator(".retired")).to_contain_text("已停用")
    await shot(tab, "devices-zh")

    await page.click("#tab-stations")
    await page.click('table.stations tr[data-code="S03"]')
    await page.fill('[data-field="phone"]', "8123")
    await page.click("#stations-save")
    await expect(problem(page, "phone")).to_contain_text("不是国际格式的号码")
    await page.fill('[data-field="phone"]', "+8697100000003")
    await page.click("#stations-save")
    await expect(page.locator("form.record-form .form-problem.saved")).to_be_visible()
    await expect(page.locator('table.stations tr[data-code="S03"]')).to_contain_text(
        "+8697100000003"
    )

    await page.click("#tab-carers")
    await page.click("#carers-new")
    await page.fill('[data-field="code"]', "C901")
    await page.fill('[data-field="name"]', "林晓")
    await page.fill('[data-field="phone"]', "+8613900009901")
    await page.select_option('[data-field="station"]', "S03")
    pattern = (
        await page.locator('[data-field="shift_pattern"] option').nth(1).get_attribute("value")
    )
    assert pattern
    await page.select_option('[data-field="shift_pattern"]', pattern)
    await page.select_option('[data-field="transport"]', "ebike")
    await page.fill('[data-field="skills"]', "lift\nfirst_aid")
    await page.click("#carers-save")
    await expect(page.locator("form.record-form .form-problem.saved")).to_be_visible()
    carer = page.locator('table.carers tr[data-code="C901"]')
    await expect(carer).to_contain_text("电动车")
    await page.uncheck('[data-field="active"]')
    await page.click("#carers-save")
    await expect(page.locator("form.record-form .form-problem.saved")).to_be_visible()
    await expect(carer).to_have_count(0)
    await page.check("#carers-inactive")
    await expect(carer).to_contain_text("已停用")
    await shot(tab, "carers-zh")

    await page.click("#tab-audit")
    await page.click('#audit-filters button[type="submit"]')
    done = page.locator("table.audit tbody tr.change")
    await expect(done.first).to_have_attribute("data-action", "change_carer")
    actions = {await r.get_attribute("data-action") for r in await done.all()}
    assert {"move_device", "retire_device", "change_station", "add_carer"} <= actions, actions
    assert script_errors(tab) == [], tab.errors


async def test_a_holiday_gap_shows_in_the_rota_before_it_comes_and_a_duty_fills_it(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that when every carer of a station has a day off three days ahead, the
    supervisor's rota shows that day's gap among the gaps to come and in the station's
    cell, as the API (and so the watchdog) has it; that the day's detail names it; and
    that a duty set from the page's form is kept and shrinks the gap."""
    day = (date.today() + timedelta(days=3)).isoformat()
    carers = (await api.get("/api/register/carers", who=SUPERVISOR)).body["records"]
    s09 = sorted(c["code"] for c in carers if c["station"] == "S09" and c["active"])
    for code in s09:
        reply = await api.request(
            "PUT",
            f"/api/register/roster/{code}/{day}",
            who=SUPERVISOR,
            json={"on_duty": False, "note": "假期"},
        )
        assert reply.status == 200, reply
    rota = (await api.get(f"/api/register/rota?first={day}&last={day}", who=SUPERVISOR)).body
    gaps = next(st["gaps"] for st in rota["stations"] if st["code"] == "S09")
    assert gaps

    tab = await open_tab(viewport=DESK_SCREEN)
    page = await sign_in_to_admin(tab, api, SUPERVISOR)
    await expect(page.locator("body")).to_have_attribute("data-tab", "rota")
    await page.fill("#rota-first", day)
    await page.locator("#rota-first").dispatch_event("change")
    coming = page.locator('#rota-coming li[data-station="S09"]')
    await expect(coming).to_have_count(len(gaps))
    cell = page.locator(f'#rota-grid tr[data-station="S09"] td[data-day="{day}"]')
    await expect(cell).to_have_attribute("data-gaps", str(len(gaps)))
    await shot(tab, "rota-zh")
    await cell.click()
    await expect(page.locator("#rota-detail .rota-gaps li")).to_have_count(len(gaps))

    await page.select_option('#roster-form [data-field="carer"]', s09[0])
    await page.check('#roster-form [data-field="on_duty"]')
    await page.fill('#roster-form [data-field="note"]', "节日加班")
    await page.click("#roster-save")
    await expect(page.locator("#roster-form .form-problem.saved")).to_be_visible()
    await expect(page.locator("#roster-entries")).to_contain_text("节日加班")
    after = (await api.get(f"/api/register/rota?first={day}&last={day}", who=SUPERVISOR)).body
    s09_after = next(st for st in after["stations"] if st["code"] == "S09")
    assert any(x["carer"] == s09[0] and x["rostered"] for x in s09_after["shifts"])
    covered = sum(
        datetime.fromisoformat(g["end"]).timestamp()
        - datetime.fromisoformat(g["start"]).timestamp()
        for g in s09_after["gaps"]
    )
    before = sum(
        datetime.fromisoformat(g["end"]).timestamp()
        - datetime.fromisoformat(g["start"]).timestamp()
        for g in gaps
    )
    assert covered < before

    await page.click("#lang-toggle")
    await expect(page.locator("#tab-rota")).to_have_text("Rota")
    await shot(tab, "rota-en")
    assert script_errors(tab) == [], tab.errors


async def test_a_supervisor_adds_a_shift_pattern_and_a_refused_one_says_why(
    api: Api, open_tab: OpenTab
) -> None:
    """Test the shifts tab: a pattern with no weekdays is refused beside that field; with
    them it is added, listed with its days in words, and in the API."""
    tab = await open_tab(viewport=DESK_SCREEN)
    page = await sign_in_to_admin(tab, api, SUPERVISOR)
    await page.click("#tab-shifts")
    await page.click("#shift-patterns-new")
    await page.fill('[data-field="code"]', "HOL")
    await page.fill('[data-field="name"]', "节日白班")
    await page.fill('[data-field="starts_at"]', "08:00")
    await page.fill('[data-field="duration_minutes"]', "600")
    await page.click("#shift-patterns-save")
    await expect(problem(page, "weekdays")).to_contain_text("至少要有一天")
    await page.fill('[data-field="weekdays"]', "6,7")
    await page.click("#shift-patterns-save")
    await expect(page.locator("form.record-form .form-problem.saved")).to_be_visible()
    row = page.locator('table.shift-patterns tr[data-code="HOL"]')
    await expect(row).to_contain_text("六 日")
    await expect(row).to_contain_text("10 小时")
    patterns = (await api.get("/api/register/shift-patterns", who=SUPERVISOR)).body["records"]
    assert {
        "code": "HOL",
        "name": "节日白班",
        "starts_at": "08:00",
        "duration_minutes": 600,
        "weekdays": [6, 7],
    } in patterns
    await shot(tab, "shifts-zh")
    assert script_errors(tab) == [], tab.errors


async def test_an_administrator_checks_a_file_then_imports_it_from_the_page(
    api: Api, open_tab: OpenTab
) -> None:
    """Test the import tab: a file that is no register is refused with its problems
    listed and nothing written; the register's own export checks clean (every record
    unchanged) and then imports, said on the page."""
    async with api.http.get(
        "/api/register/export?format=xlsx",
        headers={"Authorization": f"Bearer {token_of(ADMIN)}"},
    ) as reply:
        assert reply.status == 200
        exported = await reply.read()
    tab = await open_tab(viewport=DESK_SCREEN)
    page = await sign_in_to_admin(tab, api, ADMIN)
    await page.click("#tab-files")
    await expect(page.locator("#files-template")).to_have_attribute(
        "href", "/api/register/template?format=xlsx"
    )
    await page.set_input_files(
        "#files-input",
        files=[{"name": "wrong.xlsx", "mimeType": "application/octet-stream", "buffer": b"no"}],
    )
    await page.click("#files-check")
    outcome = page.locator("#files-outcome")
    await expect(outcome).to_have_attribute("data-written", "no")
    await expect(page.locator("#files-problems tbody tr").first).to_be_visible()
    await expect(outcome).to_contain_text("什么都没有写入")
    await expect(page.locator("#files-import")).to_be_disabled()

    await page.set_input_files(
        "#files-input",
        files=[
            {"name": "register.xlsx", "mimeType": "application/octet-stream", "buffer": exported}
        ],
    )
    await page.click("#files-check")
    await expect(outcome).to_have_attribute("data-problems", "0")
    await expect(page.locator('.files-counts tr[data-kind="households"]')).to_contain_text("900")
    await page.click("#files-import")
    await expect(outcome).to_have_attribute("data-written", "yes")
    await expect(outcome).to_contain_text("已导入")
    await shot(tab, "files-zh")
    assert script_errors(tab) == [], tab.errors
