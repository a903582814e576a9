"""An open board closes when its sign-in ends, whatever ended it and on whichever server:
signing out, being switched off, a new password, the session running out, a replaced
API token; within a second, with a close code the board's page reads as "signed out".
Real WebSockets against the whole server, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import pytest
import sqlalchemy
from playwright.async_api import Route, expect
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from callcenter.engine import accounts
from callcenter.web.board_watch import SIGNED_OUT_CODE, Ended
from callcenter.web.sessions import CSRF_HEADER, SESSION_COOKIE
from tests.api_support import Api, another_instance, set_password, token_of, trust_local_proxy
from tests.board_support import Browser, browser
from tests.fixtures.browser import OpenTab
from tests.ingest_support import eventually
from tests.test_board_browser import card, sign_in

FEED = "/api/board/feed"
# What "within a second" allows: the check runs every web.board_session_check_s (0.5 s).
WITHIN_S = 1.0
# A guard against a hung test only (a board left open gets a message every 10 s).
WAIT_S = 5.0


@dataclass
class OpenBoard:
    ws: aiohttp.ClientWebSocketResponse

    async def closed(self) -> tuple[int | None, str, float]:
        """Wait for the close: (code, reason, seconds waited); other messages skipped."""
        started = time.monotonic()
        async with asyncio.timeout(WAIT_S):
            while True:
                message = await self.ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    waited = time.monotonic() - started
                    return self.ws.close_code, str(message.extra or ""), waited


@contextlib.asynccontextmanager
async def board_of(client: Browser, address: str | None = None) -> AsyncIterator[OpenBoard]:
    """The board's feed, opened with the client's sign-in cookie (from ``address``
    through a trusted proxy, if given), its snapshot read."""
    headers = {} if address is None else {"X-Forwarded-For": address}
    async with client.http.ws_connect(FEED, autoclose=False, headers=headers) as ws:
        first = await asyncio.wait_for(ws.receive(), WAIT_S)
        assert json.loads(first.data)["type"] == "snapshot"
        yield OpenBoard(ws)


@contextlib.asynccontextmanager
async def token_board(api: Api, who: str) -> AsyncIterator[OpenBoard]:
    headers = {"Authorization": f"Bearer {token_of(who)}"}
    async with api.http.ws_connect(FEED, headers=headers, autoclose=False) as ws:
        first = await asyncio.wait_for(ws.receive(), WAIT_S)
        assert json.loads(first.data)["type"] == "snapshot"
        yield OpenBoard(ws)


async def signed_in(api: Api, client: Browser, username: str) -> None:
    await set_password(api.server, username)
    assert (await client.sign_in(username)).status == 303


async def assert_closed(board: OpenBoard, why: Ended) -> None:
    code, reason, waited = await board.closed()
    assert (code, reason) == (SIGNED_OUT_CODE, why.value)
    assert waited <= WITHIN_S, f"closed after {waited:.2f} s"


async def test_signing_out_closes_the_board_and_only_its_own(api: Api) -> None:
    """Test that POST /logout closes the session's open board within a second, saying
    "signed out", while the same person's board in another browser (here behind a
    proxy) stays open and live."""
    trust_local_proxy(api)
    async with browser(api) as desk, browser(api) as office:
        await signed_in(api, desk, "li.na")
        assert (await office.sign_in("li.na", address="198.51.100.7")).status == 303
        async with board_of(desk) as board, board_of(office, "198.51.100.7") as other:
            assert (await desk.post("/logout")).status == 303
            await assert_closed(board, Ended.SIGNED_OUT)
            assert not other.ws.closed
            await api.press("H0001")
            message = await asyncio.wait_for(other.ws.receive(), WAIT_S)
            assert message.type is aiohttp.WSMsgType.TEXT


async def test_switching_someone_off_or_a_new_password_closes_their_boards(api: Api) -> None:
    """Test that an administrator switching an operator off closes that operator's
    board ("switched off"), and that setting a new password closes it ("signed out")."""
    async with browser(api) as admin, browser(api) as li, browser(api) as wang:
        await signed_in(api, admin, "sun.admin")
        await signed_in(api, li, "li.na")
        await signed_in(api, wang, "wang.wei")
        async with board_of(li) as li_board, board_of(wang) as wang_board:
            off = await admin.post("/api/users/li.na/active", json={"active": False})
            assert off.status == 200
            await assert_closed(li_board, Ended.SWITCHED_OFF)
            new = await admin.post(
                "/api/users/wang.wei/password", json={"password": "a-new-password-1"}
            )
            assert new.status == 200
            await assert_closed(wang_board, Ended.SIGNED_OUT)


async def test_a_session_that_runs_out_closes_its_board(api: Api) -> None:
    """Test that a board whose session passes web.session_idle_hours unused closes
    ("expired"), although its socket stays connected."""
    async with browser(api) as li:
        await signed_in(api, li, "li.na")
        async with board_of(li) as board:
            api.clock.advance(timedelta(hours=api.server.config.web.session_idle_hours + 0.1))
            await assert_closed(board, Ended.EXPIRED)


async def test_a_board_on_an_api_token_closes_when_the_token_is_replaced(api: Api) -> None:
    """Test that a feed opened with a bearer token closes when the token is replaced,
    and one opened by a person switched off from the command line closes too."""
    async with token_board(api, "li.na") as li_board, token_board(api, "wang.wei") as wang:
        await accounts.issue_token(api.server.engine, "li.na")
        await assert_closed(li_board, Ended.TOKEN_REPLACED)
        await accounts.set_active(api.server.engine, "wang.wei", False)
        await assert_closed(wang, Ended.SWITCHED_OFF)


async def test_a_sign_in_ended_on_another_server_closes_the_board_here(api: Api) -> None:
    """Test that with two servers on one database, signing out through the second
    closes the board open on the first, and switching someone off through the second
    closes their board on the first, each within a second."""
    async with another_instance(api) as other, browser(api) as here, browser(other) as admin:
        await signed_in(api, here, "li.na")
        await signed_in(other, admin, "sun.admin")
        async with board_of(here) as board:
            # The same session, used through the other server.
            cookie = here.http.cookie_jar.filter_cookies(URL(api.server.web_url))
            sent = {"Cookie": f"{SESSION_COOKIE}={cookie[SESSION_COOKIE].value}"}
            sent[CSRF_HEADER] = here.csrf
            async with (
                aiohttp.ClientSession(
                    base_url=other.server.web_url, cookie_jar=aiohttp.DummyCookieJar()
                ) as http,
                http.post("/logout", headers=sent, allow_redirects=False) as out,
            ):
                assert out.status == 303
            await assert_closed(board, Ended.SIGNED_OUT)
        async with browser(api) as wang:
            await signed_in(api, wang, "wang.wei")
            async with board_of(wang) as board:
                off = await admin.post("/api/users/wang.wei/active", json={"active": False})
                assert off.status == 200
                await assert_closed(board, Ended.SWITCHED_OFF)


@pytest.mark.page
async def test_the_board_page_says_its_operator_is_signed_out(api: Api, open_tab: OpenTab) -> None:
    """Test in Chromium that a board whose sign-in ends clears the calls from the
    screen, stops, and says why with a link to sign in again, in the operator's
    language, instead of quietly reconnecting."""
    await set_password(api.server, "li.na")
    await set_password(api.server, "wang.wei")
    assert (await api.post("/api/me/language", {"language": "en"}, who="wang.wei")).status == 200
    li, wang = await open_tab(viewport=(1400, 900)), await open_tab(viewport=(1400, 900))
    await sign_in(li, api.server.web_url, "li.na")
    await sign_in(wang, api.server.web_url, "wang.wei")
    call_id = await api.press("H0001")
    for tab in (li, wang):
        await expect(card(tab.page, call_id)).to_be_visible()
    off = await api.post("/api/users/li.na/active", {"active": False}, who="sun.admin")
    new = await api.post(
        "/api/users/wang.wei/password", {"password": "a-new-password-1"}, who="sun.admin"
    )
    assert off.status == new.status == 200
    for tab, text in (
        (li, "您的账号已被停用"),
        (wang, "You are signed out"),
    ):
        page = tab.page
        await expect(page.locator("body")).to_have_attribute("data-connection", "signed_out")
        await expect(page.locator("#signed-out-banner")).to_be_visible()
        await expect(page.locator("#signed-out-text")).to_contain_text(text)
        await expect(page.locator("#signed-out-link")).to_have_attribute("href", "/login")
        await expect(page.locator(".call-card")).to_have_count(0)
        # Nor a duty switch: a signed-out operator cannot go on duty from here.
        await expect(page.locator("#duty")).to_be_hidden()
        assert page.url == api.server.web_url + "/board"
    await li.screenshot("board-signed-out-zh")
    await wang.screenshot("board-signed-out-en")
    # It stays that way: nothing reconnects behind the operator's back.
    await asyncio.sleep(1.0)  # a reconnect would come after 0.5 s
    assert li.page.url == api.server.web_url + "/board"
    await expect(li.page.locator("body")).to_have_attribute("data-connection", "signed_out")
    assert not li.errors and not wang.errors, li.errors + wang.errors


@pytest.mark.page
async def test_a_request_refused_before_the_feed_closes_signs_the_board_out_in_place(
    api: Api, open_tab: OpenTab
) -> None:
    """Test in Chromium that when one of the board's own requests is answered 401 before
    the feed's close says the sign-in ended (a refresh that falls between the two), the
    board shows the same signed-out screen, with the general reason, and stops its feed;
    it does not leave for the login page."""
    await set_password(api.server, "li.na")
    tab = await open_tab(viewport=(1400, 900))
    await sign_in(tab, api.server.web_url, "li.na")
    call_id = await api.press("H0001")
    page = tab.page
    await expect(card(page, call_id)).to_be_visible()

    async def refused(route: Route) -> None:
        await route.fulfill(
            status=401, content_type="application/json", body='{"error": "unauthorised"}'
        )

    await page.route(f"**/api/calls/{call_id}", refused)
    await card(page, call_id).click()
    await expect(page.locator("body")).to_have_attribute("data-connection", "signed_out")
    await expect(page.locator("#signed-out-text")).to_contain_text("您已退出登录")
    await expect(page.locator(".call-card")).to_have_count(0)
    # The feed is closed: a new alarm does not reach a board that is signed out.
    await api.press("H0006")
    await asyncio.sleep(1.0)
    await expect(page.locator(".call-card")).to_have_count(0)
    assert page.url == api.server.web_url + "/board"
    assert tab.errors_but_signed_out() == [], tab.errors


async def test_checks_failing_while_the_database_is_down_are_logged_once(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that while the open boards' sign-ins cannot be checked (here their table is
    gone for a few checks), the failure is logged once with its traceback, not at every
    check, and one line says when the checks work again; the board stays open."""
    caplog.set_level(logging.INFO, logger="callcenter.board")
    checks = api.server.config.web.board_session_check_s

    async def rename(old: str, new: str) -> None:
        async with AsyncSession(api.server.engine) as session, session.begin():
            await session.execute(sqlalchemy.text(f"ALTER TABLE {old} RENAME TO {new}"))

    def said(words: str) -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == "callcenter.board" and words in r.getMessage()
        ]

    async def failed() -> bool:
        return bool(said("sign-ins failed"))

    async def works_again() -> bool:
        return bool(said("works again"))

    async with browser(api) as li:
        await signed_in(api, li, "li.na")
        async with board_of(li) as board:
            await rename("web_sessions", "web_sessions_away")
            try:
                await eventually(failed, within_s=WAIT_S, what="the failure logged")
                await asyncio.sleep(4 * checks)
            finally:
                await rename("web_sessions_away", "web_sessions")
            await eventually(works_again, within_s=WAIT_S, what="the recovery logged")
            assert not board.ws.closed
    failures = said("sign-ins failed")
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert len(said("works again")) == 1
