"""The server's log as `callcenter serve` writes it: one line per record, whatever a
request carries, and no carer link token in any line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from callcenter.broker import EmbeddedBroker
from callcenter.store import models as m
from callcenter.store.db import create_engine
from callcenter.web.errors import json_errors
from callcenter.web.sessions import CSRF_HEADER
from tests.ingest_support import eventually, publish_events
from tests.server_support import server_process, subprocess_config

# What `callcenter` starts each record with; a line without it was started by something else.
_RECORD = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (DEBUG|INFO|WARNING|ERROR) ")
# Characters that end a line for some reader of the log: a terminal, `less`, Python's
# splitlines, an editor; and ESC, which rewrites a terminal.
_LINE_BREAKERS = ["%0a", "%0d", "%0d%0a", "%0b", "%0c", "%1c", "%c2%85", "%e2%80%a8", "%e2%80%a9"]
_OTHER_CONTROLS = ["%1b%5b2K%1b%5b1G", "%00", "%7f", "%e2%80%ae"]
# Where a request puts what it carries into a log line: the path (request log), a call
# id the API refuses, a query parameter, the household code a family's 404 quotes.
_PLACES = [
    "/api/calls/1{c}{mark}",
    "/nowhere/{c}{mark}?q={c}{mark}",
    "/family/api/households/H0001{c}{mark}/calls",
]


async def _texts(http: aiohttp.ClientSession, fake_url: str) -> list[dict[str, Any]]:
    async with http.get(fake_url + "/messages.json") as reply:
        listed: list[dict[str, Any]] = (await reply.json())["messages"]
    return listed


async def _sign_in_family(
    http: aiohttp.ClientSession, base: str, fake_url: str, phone: str
) -> None:
    """Sign in to the family portal as ``phone`` (the session's cookie in ``http``)."""
    async with http.get(base + "/family/api/sign-in") as reply:
        csrf = {CSRF_HEADER: (await reply.json())["csrf_token"]}
    async with http.post(base + "/family/api/code", json={"phone": phone}, headers=csrf) as asked:
        assert asked.status == 202, await asked.text()
    codes: list[str] = []

    async def texted() -> bool:
        codes[:] = [
            hit.group(1)
            for text in await _texts(http, fake_url)
            if text["to"] == phone and (hit := re.search(r"\b(\d{6})\b", text["body"]))
        ]
        return bool(codes)

    await eventually(texted, within_s=20, what=f"a sign-in code texted to {phone}")
    verify = {"phone": phone, "code": codes[0]}
    async with http.post(base + "/family/api/verify", json=verify, headers=csrf) as verified:
        assert verified.status == 200, await verified.text()


async def _carer_link(http: aiohttp.ClientSession, fake_url: str) -> str:
    """The link in the first dispatch page at the server's fake Twilio."""
    found: list[str] = []

    async def paged() -> bool:
        found[:] = [
            hit.group(0)
            for message in await _texts(http, fake_url)
            if (hit := re.search(r"http://\S+/c/[A-Za-z0-9_=-]+", message["body"]))
        ]
        return bool(found)

    await eventually(paged, within_s=20, what="a dispatch page with a carer link")
    return found[0]


@pytest.mark.sqlite_only("the subprocess variant runs on the SQLite default")
async def test_a_request_cannot_start_a_log_line_nor_put_a_carer_token_in_the_log(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that requests carrying CR, LF, the other characters some reader takes for a
    line break, ESC sequences and NUL in their path and query each leave exactly one log
    line, on the line of its own record, with none of those characters in it; and that
    a carer's link opened, answered and tampered with leaves its token in no line of
    the server's DEBUG log."""
    config_file = subprocess_config(tmp_path, seeded_database_url, broker, topic_prefix)
    engine = create_engine(seeded_database_url)
    async with AsyncSession(engine) as session:
        family_phone = await session.scalar(
            select(m.FamilyContact.phone)
            .join(m.Household, m.Household.id == m.FamilyContact.household_id)
            .where(m.Household.code == "H0001")
            .limit(1)
        )
    await engine.dispose()
    assert family_phone is not None
    marks: list[str] = []
    async with (
        server_process(config_file, "--log-level", "DEBUG") as server,
        # unsafe: cookies for a bare 127.0.0.1, as the family portal's
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = (await server.wait_for_line(r"operator API (http://\S+)")).group(1)
        fake_url = (await server.wait_for_line(r"local fake Twilio at (http://[^;\s]+)")).group(1)
        await server.wait_for_line("ingest subscribed")
        await publish_events(broker.host, broker.port, topic_prefix, [("H0001", "CB-H0001", "p1")])
        link = await _carer_link(http, fake_url)
        token = link.rsplit("/", 1)[1]
        path = URL(link).path
        async with http.get(base + path) as page:
            assert page.status == 200
        async with http.get(base + path[:-1] + ("A" if path[-1] != "A" else "B")) as tampered:
            assert tampered.status == 404
        async with http.post(base + path + "/answer", json={"answer": "accept"}) as answered:
            assert answered.status == 200, await answered.text()
        await _sign_in_family(http, base, fake_url, family_phone)
        async with http.get(base + "/family/api/sign-in") as reply:
            sign_in_csrf = {CSRF_HEADER: (await reply.json())["csrf_token"]}

        for n, control in enumerate(_LINE_BREAKERS + _OTHER_CONTROLS):
            for place in _PLACES:
                mark = f"FORGED{n:02d}x{len(marks)}"
                marks.append(mark)
                url = URL(base + place.format(c=control, mark=mark), encoded=True)
                async with http.get(url) as reply:
                    assert reply.status < 500, (place, control, reply.status)
            if control == "%00":
                continue  # a NUL anywhere in a body refuses it whole, naming no field
            # A field the body may not have is named in the 400's message.
            mark = f"FORGED{n:02d}x{len(marks)}"
            marks.append(mark)
            body = json.dumps({"phone": "1", "x" + unquote(control) + mark: 1})
            async with http.post(
                base + "/family/api/code",
                data=body.encode(),
                headers={**sign_in_csrf, "Content-Type": "application/json"},
            ) as reply:
                assert reply.status == 400, await reply.text()
        server.send(signal.SIGTERM)
        assert await server.wait() == 0

    log = "\n".join(server.lines)
    assert token not in log
    assert "/c/***" in log
    read_as_lines = log.splitlines()
    for mark in marks:
        carrying = [line for line in read_as_lines if mark in line]
        assert len(carrying) == 1, (mark, carrying)
        assert _RECORD.match(carrying[0]), carrying[0]
    for line in read_as_lines:
        assert all(ch.isprintable() or ch == "\t" for ch in line), json.dumps(line)


async def test_a_client_that_hangs_up_mid_request_is_logged_as_gone_not_as_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test that a request whose caller hangs up while its body is read is one INFO line
    ("the client went away"), not an ERROR blaming the database (a lost connection is
    an OSError, which the database's outages are too)."""

    async def reads_the_body(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    caplog.set_level(logging.INFO, logger="callcenter.web")
    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/api/reads", reads_the_body)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/reads HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

        async def told() -> bool:
            return any("the client went away" in r.getMessage() for r in caplog.records)

        await eventually(told, within_s=10, what="the hang-up logged")
    finally:
        await runner.cleanup()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
