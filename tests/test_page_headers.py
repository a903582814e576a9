"""The headers every answer carries, and every page working under its
Content-Security-Policy in headless Chromium: no page loads or runs anything the policy
refuses (a violation fails the test), in Chinese and English, on a desk's screen and, for
the carer's and the family's pages, on a phone's. Screenshots: test-artifacts/csp-*.png.
"""

from __future__ import annotations

import re

import aiohttp
import pytest
from playwright.async_api import expect
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import models as m
from tests.api_support import PASSWORD, Api, reconfigure, set_password
from tests.board_support import browser
from tests.fixtures.browser import OpenTab, Tab
from tests.fixtures.fake_twilio import fake_of
from tests.sms_support import paged
from tests.test_family_portal import contact_phone, texted_code

DESK_SCREEN = (1400, 900)
PHONE_SCREEN = (390, 844)
# What the policy of every page must not allow: inline code, eval, other sites.
_LOOSE = ("'unsafe-inline'", "'unsafe-eval'", " * ", " http:", " https:", "data: *")


def _policy_parts(policy: str) -> dict[str, str]:
    parts = {}
    for directive in policy.split(";"):
        name, _, value = directive.strip().partition(" ")
        parts[name] = value
    return parts


async def _link_of(api: Api, phone: str) -> str:
    fake = fake_of(api.server)
    for _ in range(50):
        pages = [msg.body for msg in fake.sent_to(phone) if "/c/" in msg.body]
        if pages:
            found = re.search(r"/c/[A-Za-z0-9_=-]+", pages[-1])
            assert found is not None
            return found.group(0)
        await fake.next_message()
    raise AssertionError(f"no carer link texted to {phone}")


async def test_every_answer_has_the_headers_its_kind_needs(api: Api) -> None:
    """Test that pages carry a strict Content-Security-Policy (nothing from elsewhere, no
    inline code, no framing), that every answer says nosniff and a Server without a
    version (even aiohttp's own answer to a request it cannot read), and that the API's
    and the family API's answers, refusals included, are never stored by a cache."""
    await set_password(api.server, "zhao.min")
    call_id, _, phone = await paged(api, "H0001")
    link = await _link_of(api, phone)
    async with browser(api) as client:
        assert (await client.sign_in("zhao.min")).status == 303
        answers = {
            path: await client.get(path)
            for path in (
                "/login",
                "/board",
                "/reports",
                "/wall",
                "/admin",
                "/family/login",
                link,
                "/c/AAAA",
                "/static/board/board.js",
                "/api/me",
                f"/api/calls/{call_id}",
                "/api/no-such-thing",
                "/family/api/me",
                "/family/api/sign-in",
                "/healthz",
            )
        }
    for path, answer in answers.items():
        headers = answer.headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Server"] == "callcenter", (path, headers["Server"])
        policy = headers["Content-Security-Policy"]
        parts = _policy_parts(policy)
        assert parts["default-src"] == "'none'", (path, policy)
        assert parts["script-src"] == "'self'" and parts["style-src"] == "'self'", policy
        assert parts["frame-ancestors"] == "'none'" and parts["base-uri"] == "'none'", policy
        assert not any(loose in f" {policy} " for loose in _LOOSE), policy
        if path.startswith(("/api/", "/family/api/")):
            assert headers["Cache-Control"] == "no-store", (path, answer.status)
    assert answers["/api/no-such-thing"].status == 404
    assert answers["/family/api/me"].status == 401

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api.server.web_url}/api/calls?household={'x' * 9000}") as unreadable,
    ):
        assert unreadable.status == 400
        assert unreadable.headers["Server"] == "callcenter"


async def test_map_tiles_from_the_configured_server_are_allowed_and_only_they(
    api: Api,
) -> None:
    """Test that with [web] map_tiles_url set, the policy lets the board load images from
    that tile server (its {s} subdomains too) and from nowhere else."""
    web_config = api.server.config.web
    try:
        reconfigure(
            api,
            api.server.config.model_copy(
                update={
                    "web": web_config.model_copy(
                        update={"map_tiles_url": "https://{s}.tiles.example.org/{z}/{x}/{y}.png"}
                    )
                }
            ),
        )
        policy = (await api.get("/api/me")).headers["Content-Security-Policy"]
    finally:
        reconfigure(api, api.server.config.model_copy(update={"web": web_config}))
    images = _policy_parts(policy)["img-src"].split()
    assert images == ["'self'", "data:", "https://*.tiles.example.org"], policy


async def _violations(tab: Tab) -> list[str]:
    found: list[str] = await tab.page.evaluate("window.__cspViolations || []")
    return found


async def _watch(tab: Tab) -> Tab:
    """Every Content-Security-Policy violation on the tab's pages, kept where the test
    reads it (the browser also prints each as a console error, which the tab keeps)."""
    await tab.page.add_init_script(
        """
        window.__cspViolations = [];
        document.addEventListener("securitypolicyviolation", (e) => {
          window.__cspViolations.push(
            `${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
        });
        """
    )
    return tab


async def _clean(tab: Tab, what: str) -> None:
    await tab.page.wait_for_load_state("networkidle")
    assert await _violations(tab) == [], what
    assert tab.errors == [], what


@pytest.mark.page
async def test_every_page_works_under_its_policy_in_chromium(api: Api, open_tab: OpenTab) -> None:
    """Test the sign-in page, the board with a call and the map, the reports, the
    wallboard, the family portal (signed in, a call on it), the carer page and its
    refusal, and the fake Twilio's page, in zh and en at 1400x900 (carer and family also
    at 390x844): each loads and works with no policy violation and no script error."""
    base = api.server.web_url
    for username in ("li.na", "zhao.min"):
        await set_password(api.server, username)
    call_id, carer, phone = await paged(api, "H0001")
    link = await _link_of(api, phone)
    await api.press("H0002")

    for language, locale in (("zh", "zh-CN"), ("en", "en-US")):
        tab = await _watch(await open_tab(locale=locale, viewport=DESK_SCREEN))
        page = tab.page
        await page.goto(base + "/login")
        await expect(page.locator("#password")).to_be_visible()
        await _clean(tab, f"sign-in page {language}")
        await tab.screenshot(f"csp-login-{language}")
        await page.fill("#username", "zhao.min")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await expect(page.locator("body")).to_have_attribute("data-connection", "live")
        if language == "en":
            await page.click("#lang-toggle")
        await page.locator(f'.call-card[data-call-id="{call_id}"]').click()
        await expect(page.locator("#detail .resident-card")).to_be_visible()
        await _clean(tab, f"board {language}")
        await tab.screenshot(f"csp-board-{language}")

        await page.goto(base + "/reports")
        await expect(page.locator("#csv-station")).to_be_visible()
        await _clean(tab, f"reports {language}")
        await tab.screenshot(f"csp-reports-{language}")

        await page.goto(base + "/wall")
        await expect(page.locator("body")).to_have_attribute("data-connection", "live")
        if language == "en":
            await page.click("#lang-toggle")
            await expect(page.locator("#title")).to_have_text("Wallboard")
        await expect(page.locator("#wall-alarms .value")).to_have_text(re.compile(r"^\d+$"))
        await _clean(tab, f"wallboard {language}")
        await tab.screenshot(f"csp-wall-{language}")

        # The administration page, as a supervisor: the rota (their first tab), then the
        # policies and their timeline.
        await page.goto(base + "/admin")
        await expect(page.locator("#rota-grid")).to_be_visible()
        await page.goto(base + "/admin#policies")
        await expect(page.locator("body")).to_have_attribute("data-state", "ready")
        await expect(page.locator(".timeline .lane").first).to_be_visible()
        await _clean(tab, f"administration {language}")
        await tab.screenshot(f"csp-admin-{language}")

    family_phone = await contact_phone(api, "H0001")
    for codes, (language, locale) in enumerate((("zh", "zh-CN"), ("en", "en-US")), 1):
        tab = await _watch(await open_tab(locale=locale, viewport=PHONE_SCREEN))
        page = tab.page
        await page.goto(base + "/family/login")
        await expect(page.locator("#phone")).to_be_visible()
        await _clean(tab, f"family sign-in {language}")
        await page.fill("#phone", family_phone.removeprefix("+86"))
        await page.click("#phone-form button[type=submit]")
        await page.fill("#code", await texted_code(api, family_phone, codes))
        await page.click("#code-form button[type=submit]")
        await expect(page.locator(f'.call[data-call-id="{call_id}"]')).to_be_visible()
        if language == "en":  # the portal speaks the contact's language until switched
            await page.click("#language")
            await expect(page.locator("#sign-out")).to_have_text("Sign out")
        for width, height in (PHONE_SCREEN, DESK_SCREEN):
            await page.set_viewport_size({"width": width, "height": height})
            await _clean(tab, f"family portal {language} {width}")
            await tab.screenshot(f"csp-family-{language}-{width}x{height}")

    for language in ("zh", "en"):
        async with AsyncSession(api.server.engine) as session, session.begin():
            await session.execute(
                update(m.Carer).where(m.Carer.code == carer).values(language=language)
            )
        api.server.desk.district.invalidate()
        for width, height in (PHONE_SCREEN, DESK_SCREEN):
            tab = await _watch(await open_tab(viewport=(width, height)))
            page = tab.page
            await page.goto(base + link)
            await expect(page.locator("button[data-answer=accept]")).to_be_visible()
            await _clean(tab, f"carer page {language} {width}")
            await tab.screenshot(f"csp-carer-{language}-{width}x{height}")
    refused = await page.goto(base + "/c/AAAA")
    assert refused is not None and refused.status == 404
    # The browser notes the refusal's own 404; nothing else may be said.
    tab.errors[:] = [e for e in tab.errors if not e.endswith("/c/AAAA)")]
    await _clean(tab, "carer refusal page")
    await tab.screenshot("csp-carer-refused")

    fake = fake_of(api.server)
    tab = await _watch(await open_tab(viewport=DESK_SCREEN))
    await tab.page.goto(fake.page_url)
    await expect(tab.page.locator("form input[name=Body]").first).to_be_visible()
    await _clean(tab, "fake Twilio page")
    await tab.screenshot("csp-fake-twilio")
