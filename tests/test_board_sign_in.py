"""Signing in to the board: the sign-in page, sessions in cookies, CSRF on every change,
roles, and nothing but the sign-in page for anyone not signed in; against the whole
server on a real broker and database (the browser itself is in test_board_browser.py)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import event
from yarl import URL

from callcenter.web.sessions import CSRF_HEADER, LOGIN_CSRF_COOKIE, SESSION_COOKIE
from tests.api_support import PASSWORD, Api, reconfigure, set_password
from tests.board_support import browser
from tests.server_support import run_cli


def _cookie(reply: aiohttp.ClientResponse, name: str) -> Any:
    return reply.cookies[name]


async def test_someone_not_signed_in_sees_only_the_sign_in_page(api: Api) -> None:
    """Test that every page and file sends a stranger to /login, the API says 401, and
    the sign-in page itself is served with its form token in a cookie."""
    async with browser(api) as stranger:
        for path in ("/", "/board", "/static/board/board.js", "/static/vendor/leaflet/leaflet.js"):
            reply = await stranger.get(path)
            assert reply.status == 303, path
            assert reply.headers["Location"] in ("/board", "/login"), path
        assert (await stranger.get("/board")).headers["Location"] == "/login"
        for path in ("/api/calls", "/api/carers", "/api/me", "/api/users"):
            reply = await stranger.get(path)
            assert reply.status == 401, path
        page = await stranger.get("/login")
        assert page.status == 200 and "<form" in await page.text()
        cookie = _cookie(page, LOGIN_CSRF_COOKIE)
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie.value in await page.text()


async def test_an_operator_signs_in_works_with_the_csrf_token_and_signs_out(api: Api) -> None:
    """Test the whole session: the right password gives an HttpOnly, SameSite=Strict
    cookie and the board; /api/me hands the CSRF token; a change without it, with a
    wrong one, or from another site is refused; signing out ends the session."""
    await set_password(api.server, "li.na")
    call_id = await api.press("H0001")
    async with browser(api) as li:
        reply = await li.sign_in("li.na")
        assert (reply.status, reply.headers["Location"]) == (303, "/board")
        cookie = _cookie(reply, SESSION_COOKIE)
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
        assert (await li.get("/board")).status in (200, 404)  # 404 until the page exists
        me = await li.http.get("/api/me")
        body = await me.json()
        assert (body["username"], body["role"], body["language"]) == ("li.na", "operator", "zh")
        assert body["timezone"] == api.server.config.district.timezone and body["csrf_token"]

        acknowledge = f"/api/calls/{call_id}/acknowledge"
        assert (await li.post(acknowledge, csrf=False)).status == 403
        wrong = await li.post(acknowledge, csrf=False, headers={CSRF_HEADER: "x" * 43})
        assert wrong.status == 403
        elsewhere = await li.post(acknowledge, headers={"Origin": "https://evil.example"})
        assert elsewhere.status == 403
        assert (await api.call(call_id))["owner"] is None
        assert (await li.post(acknowledge)).status == 200
        assert (await api.call(call_id))["owner"] == "operator:li.na"

        language = await li.post("/api/me/language", json={"language": "en"})
        assert language.status == 200
        assert (await (await li.http.get("/api/me")).json())["language"] == "en"
        assert (await li.post("/api/me/language", json={"language": "fr"})).status == 400

        assert (await li.post("/logout", csrf=False)).status == 403
        out = await li.post("/logout")
        assert (out.status, out.headers["Location"]) == (303, "/login")
        assert (await li.get("/api/me")).status == 401
        assert (await li.get("/board")).headers["Location"] == "/login"


async def test_a_websocket_from_another_site_is_refused(api: Api) -> None:
    """Test that the cookie does not let another site's page open a connection to the
    API (cross-site WebSocket hijacking): an Origin naming another host gets 403."""
    await set_password(api.server, "li.na")
    async with browser(api) as li:
        await li.sign_in("li.na")
        reply = await li.get("/api/me", headers={"Origin": "https://evil.example"})
        assert reply.status == 403
        same = await li.get("/api/me", headers={"Origin": api.server.web_url})
        assert same.status == 200


async def test_wrong_passwords_are_refused_and_guessing_is_paused(api: Api) -> None:
    """Test that a wrong password or unknown user gets the page again with an error and
    no session, the form without its token is refused, and after a handful of failures
    even the right password waits (more in test_sign_in_limits.py)."""
    await set_password(api.server, "wang.wei")
    async with browser(api) as guesser:
        wrong = await guesser.sign_in("wang.wei", "not-the-password")
        assert wrong.status == 401 and SESSION_COOKIE not in wrong.cookies
        assert "用户名或密码错误" in await wrong.text()
        assert (await guesser.sign_in("nobody.here", PASSWORD)).status == 401
        no_token = await guesser.post(
            "/login", csrf=False, data={"username": "wang.wei", "password": PASSWORD}
        )
        assert no_token.status == 403
        per_user_and_source = api.server.config.web.sign_in_failures_per_user_source
        for _ in range(per_user_and_source - 1):  # one wrong already, above
            await guesser.sign_in("wang.wei", "still-wrong-1")
        paused = await guesser.sign_in("wang.wei", PASSWORD)
        assert paused.status == 429 and "尝试次数过多" in await paused.text()


async def test_switched_off_operators_and_idle_sessions_are_signed_out(api: Api) -> None:
    """Test that a switched-off operator cannot sign in and their open session ends, and
    that a session unused for longer than web.session_idle_hours ends."""
    await set_password(api.server, "zhao.min")
    await set_password(api.server, "wang.wei")
    async with browser(api) as zhao, browser(api) as admin:
        assert (await zhao.sign_in("zhao.min")).status == 303
        await set_password(api.server, "sun.admin")
        assert (await admin.sign_in("sun.admin")).status == 303
        off = await admin.post("/api/users/zhao.min/active", json={"active": False})
        assert off.status == 200
        assert (await zhao.get("/api/me")).status == 401
        refused = await zhao.sign_in("zhao.min")
        assert refused.status == 401 and "用户名或密码错误" in await refused.text()
    async with browser(api) as wang:
        assert (await wang.sign_in("wang.wei")).status == 303
        idle = api.server.config.web.session_idle_hours
        api.clock.advance(timedelta(hours=idle - 0.5))
        assert (await wang.get("/api/me")).status == 200  # in use: kept alive
        api.clock.advance(timedelta(hours=idle + 0.1))
        assert (await wang.get("/api/me")).status == 401


@pytest.mark.sqlite_only("PostgreSQL lets a transaction that has read go on to write")
async def test_keeping_a_session_alive_survives_another_writer_committing(api: Api) -> None:
    """Test that a board request whose session is due to be kept alive (last seen over a
    minute ago) is answered even when another writer commits between the read that finds
    the session and the write that keeps it alive: SQLite refuses a read's transaction
    that upgrade ("database is locked", a 503 on a busy desk), so the write must be a
    transaction of its own."""
    database = api.server.engine.url.database
    assert database is not None
    await set_password(api.server, "li.na")
    wrote_between: list[str] = []

    def another_writer(*args: Any) -> None:
        statement: str = args[2]
        if wrote_between or "FROM web_sessions" not in statement:
            return
        # Another process's write (ingest, another server), committed the moment the
        # session has been read.
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as other, other:
            other.execute("UPDATE operators SET language = 'en' WHERE username = 'wang.wei'")
        wrote_between.append(statement)

    async with browser(api) as li:
        assert (await li.sign_in("li.na")).status == 303
        api.clock.advance(timedelta(minutes=2))
        event.listen(api.server.engine.sync_engine, "after_cursor_execute", another_writer)
        try:
            reply = await li.get("/api/me")
        finally:
            event.remove(api.server.engine.sync_engine, "after_cursor_execute", another_writer)
        assert wrote_between, "no read of the session happened"
        assert reply.status == 200
        # Kept alive all the same: still signed in just short of the idle limit after it.
        idle = api.server.config.web.session_idle_hours
        api.clock.advance(timedelta(hours=idle - 0.1))
        assert (await li.get("/api/me")).status == 200


async def test_roles_limit_what_each_may_do(api: Api) -> None:
    """Test that only an administrator manages accounts (operators and supervisors get
    403), that an account made from the board can sign in, and that an operator cannot
    work another operator's call while a supervisor can."""
    for username in ("li.na", "wang.wei", "zhao.min", "sun.admin"):
        await set_password(api.server, username)
    call_id = await api.press("H0002")
    async with (
        browser(api) as li,
        browser(api) as wang,
        browser(api) as zhao,
        browser(api) as admin,
    ):
        for who, name in ((li, "li.na"), (wang, "wang.wei"), (zhao, "zhao.min")):
            await who.sign_in(name)
            assert (await who.get("/api/users")).status == 403
            made = await who.post(
                "/api/users",
                json={"username": "x.y", "name": "X", "role": "admin", "password": PASSWORD},
            )
            assert made.status == 403
        await admin.sign_in("sun.admin")
        listed = await admin.http.get("/api/users")
        users = {u["username"]: u for u in (await listed.json())["users"]}
        assert users["sun.admin"]["role"] == "admin" and users["li.na"]["can_sign_in"]
        made = await admin.post(
            "/api/users",
            json={"username": "qian.bo", "name": "钱博", "role": "operator", "password": PASSWORD},
        )
        assert made.status == 201
        again = await admin.post(
            "/api/users",
            json={"username": "qian.bo", "name": "钱博", "password": PASSWORD},
        )
        assert again.status == 409
        short = await admin.post(
            "/api/users", json={"username": "zhou.yi", "name": "周一", "password": "short"}
        )
        assert short.status == 400
        async with browser(api) as qian:
            assert (await qian.sign_in("qian.bo")).status == 303

        assert (await li.post(f"/api/calls/{call_id}/acknowledge")).status == 200
        resolve = f"/api/calls/{call_id}/resolve"
        taken = await wang.post(resolve, json={"outcome": "false_alarm"})
        assert taken.status == 409
        assert "li.na" in (await taken.json())["message"]
        by_supervisor = await zhao.post(
            resolve, json={"outcome": "false_alarm", "reason": "rang back: pressed in error"}
        )
        assert by_supervisor.status == 200


async def test_static_files_never_leave_the_dashboards(api: Api) -> None:
    """Test that a signed-in operator gets our files but nothing outside dashboards/ nor
    npm's own folder, however the path is written."""
    await set_password(api.server, "li.na")
    async with browser(api) as li:
        await li.sign_in("li.na")
        login = await li.get("/static/login.html")
        assert login.status == 200 and login.headers["Cache-Control"] == "no-cache"
        for path in (
            "/static/../pyproject.toml",
            "/static/%2e%2e/pyproject.toml",
            "/static/node_modules/leaflet/package.json",
            "/static/vendor/leaflet/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
            "/static/no-such-file.js",
        ):
            async with li.http.get(URL(path, encoded=True), allow_redirects=False) as reply:
                assert reply.status == 404, path


@pytest.mark.parametrize("secure", [True, False])
async def test_the_cookie_is_secure_when_configured(api: Api, secure: bool) -> None:
    """Test that web.secure_cookies marks both cookies Secure (the board behind HTTPS);
    the form's cookie is sent back by hand, as a browser would only over HTTPS."""
    web_config = api.server.config.web.model_copy(update={"secure_cookies": secure})
    reconfigure(api, api.server.config.model_copy(update={"web": web_config}))
    await set_password(api.server, "li.na")
    async with browser(api) as li:
        page = await li.get("/login")
        form_cookie = _cookie(page, LOGIN_CSRF_COOKIE)
        assert bool(form_cookie["secure"]) is secure
        reply = await li.post(
            "/login",
            csrf=False,
            data={"username": "li.na", "password": PASSWORD, "csrf": form_cookie.value},
            headers={"Cookie": f"{LOGIN_CSRF_COOKIE}={form_cookie.value}"},
        )
        assert reply.status == 303
        assert bool(_cookie(reply, SESSION_COOKIE)["secure"]) is secure


async def test_the_users_command_adds_an_administrator_who_can_sign_in(
    api: Api, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test the first-administrator bootstrap: `callcenter users add --role admin` with
    the password on stdin, `users list`, `users password`, and the mistakes."""
    config = tmp_path / "callcenter.toml"
    config.write_text(f'[database]\nurl = "{seeded_database_url}"\n')
    added = await run_cli(
        config, "users", "add", "first.admin", "--name", "管理员", "--role", "admin",
        "--password-stdin", stdin="a-long-password-1\n",
    )  # fmt: skip
    assert added.code == 0, added.err
    listed = await run_cli(config, "users", "list")
    assert re.search(r"^first\.admin\t管理员\tadmin\t-\tactive\tpassword$", listed.out, re.M)
    async with browser(api) as admin:
        assert (await admin.sign_in("first.admin", "a-long-password-1")).status == 303
        assert (await admin.get("/api/users")).status == 200
    changed = await run_cli(
        config, "users", "password", "first.admin", "--password-stdin", stdin="another-one-22\n"
    )
    assert changed.code == 0, changed.err
    async with browser(api) as admin:
        assert (await admin.sign_in("first.admin", "a-long-password-1")).status == 401
    async with browser(api) as admin:
        assert (await admin.sign_in("first.admin", "another-one-22")).status == 303
    short = await run_cli(
        config, "users", "add", "x.y", "--name", "X", "--password-stdin", stdin="short\n"
    )
    assert short.code == 2 and "at least 10 characters" in short.err
    unknown = await run_cli(
        config, "users", "password", "nobody", "--password-stdin", stdin="long-enough-1\n"
    )
    assert unknown.code == 2 and "no operator 'nobody'" in unknown.err
