"""Operator accounts: the `callcenter operator` command and the demo's desk accounts,
checked against a running API."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import models as m
from device_sim.demo import (
    DEMO_OPERATOR,
    DEMO_SUPERVISOR,
    ensure_demo_operators,
    issue_demo_passwords,
)
from tests.api_support import Api
from tests.board_support import browser
from tests.server_support import run_cli


async def _me(api: Api, token: str) -> int:
    reply = await api.request(
        "GET", "/api/me", who=None, headers={"Authorization": f"Bearer {token}"}
    )
    return reply.status


async def test_operator_command_adds_reissues_lists_and_switches_off_operators(
    api: Api, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that `callcenter operator add` prints a working token once, `token` replaces
    it, `list` shows operators without tokens, `deactivate`/`activate` refuse and allow
    them, and mistakes exit 2 with a message."""
    config = tmp_path / "callcenter.toml"
    config.write_text(f'[database]\nurl = "{seeded_database_url}"\n')

    added = await run_cli(
        config, "operator", "add", "sun.li", "--name", "孙丽", "--role", "supervisor",
        "--phone", "+8613912345678",
    )  # fmt: skip
    assert added.code == 0, added.err
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", added.token)
    assert await _me(api, added.token) == 200
    me = await api.request(
        "GET", "/api/me", who=None, headers={"Authorization": f"Bearer {added.token}"}
    )
    assert me.body["actor"] == "supervisor:sun.li"

    reissued = await run_cli(config, "operator", "token", "sun.li")
    assert reissued.code == 0, reissued.err
    assert reissued.token != added.token
    assert await _me(api, added.token) == 401
    assert await _me(api, reissued.token) == 200

    listed = await run_cli(config, "operator", "list")
    assert listed.code == 0
    assert re.search(r"^sun\.li\t孙丽\tsupervisor\t\+8613912345678\tactive$", listed.out, re.M)
    assert reissued.token not in listed.out

    assert (await run_cli(config, "operator", "deactivate", "sun.li")).code == 0
    assert await _me(api, reissued.token) == 403
    assert (await run_cli(config, "operator", "activate", "sun.li")).code == 0
    assert await _me(api, reissued.token) == 200

    mistakes = [
        (("add", "sun.li", "--name", "Sun Li"), "already an operator 'sun.li'"),
        (("add", "Sun Li", "--name", "Sun Li"), "username 'Sun Li' is not allowed"),
        (("add", "qian.bo", "--name", "Qian Bo", "--phone", "139 1234"), "E.164"),
        (("add", "qian.bo", "--name", "  "), "needs a name"),
        (("token", "nobody"), "no operator 'nobody'"),
        (("deactivate", "nobody"), "no operator 'nobody'"),
    ]
    for args, words in mistakes:
        ran = await run_cli(config, "operator", *args)
        assert ran.code == 2, (args, ran.out, ran.err)
        assert words in ran.err, (args, ran.err)
        assert ran.out == ""


async def test_demo_desk_has_an_operator_and_a_supervisor_with_a_fresh_token(
    api: Api,
) -> None:
    """Test that the demo's accounts are made once, the supervisor has a phone number to
    be texted on, and every call issues a new working token for the demo operator."""
    first = await ensure_demo_operators(api.server.engine, api.clock.now())
    assert await _me(api, first) == 200
    second = await ensure_demo_operators(api.server.engine, api.clock.now())
    assert await _me(api, second) == 200
    assert await _me(api, first) == 401

    async with AsyncSession(api.server.engine) as session:
        rows = {
            o.username: o
            for o in (
                await session.scalars(
                    select(m.Operator).where(
                        m.Operator.username.in_([DEMO_OPERATOR, DEMO_SUPERVISOR])
                    )
                )
            ).all()
        }
    assert rows[DEMO_OPERATOR].role == "operator"
    assert rows[DEMO_SUPERVISOR].role == "supervisor"
    assert re.fullmatch(r"\+861[3-9][0-9]{9}", rows[DEMO_SUPERVISOR].phone or "")
    assert all(o.active for o in rows.values())


async def test_demo_accounts_get_fresh_board_passwords_on_every_start(api: Api) -> None:
    """Test that the demo's operator and supervisor can sign in to the board with the
    passwords the demo logs, and that the next start's passwords replace them."""
    await ensure_demo_operators(api.server.engine, api.clock.now())
    first = await issue_demo_passwords(api.server.engine)
    assert set(first) == {DEMO_OPERATOR, DEMO_SUPERVISOR}
    assert all(len(password) >= 10 for password in first.values())
    async with browser(api) as demo:
        assert (await demo.sign_in(DEMO_OPERATOR, first[DEMO_OPERATOR])).status == 303
    second = await issue_demo_passwords(api.server.engine)
    assert second[DEMO_OPERATOR] != first[DEMO_OPERATOR]
    async with browser(api) as demo:
        assert (await demo.sign_in(DEMO_SUPERVISOR, first[DEMO_SUPERVISOR])).status == 401
    async with browser(api) as demo:
        assert (await demo.sign_in(DEMO_SUPERVISOR, second[DEMO_SUPERVISOR])).status == 303


async def test_reading_a_call_is_audited_and_only_administrators_read_the_audit(
    api: Api,
) -> None:
    """Test that an operator's read of a call's detail (the household's data) is written
    to the audit log with who, which household and what, that administrators can query it
    by household and actor, and that nobody else may."""
    call_id = await api.press("H0005")
    assert (await api.get(f"/api/calls/{call_id}", who="wang.wei")).status == 200
    assert (await api.get("/api/audit", who="zhao.min")).status == 403
    assert (await api.get("/api/audit", who="li.na")).status == 403
    found = await api.get("/api/audit?household=H0005", who="sun.admin")
    assert found.status == 200
    # api.press watched GET /api/calls as li.na: those lists are audited too.
    (entry,) = [e for e in found.body["entries"] if e["action"] == "read_call"]
    assert (entry["actor"], entry["household"], entry["action"]) == (
        "operator:wang.wei",
        "H0005",
        "read_call",
    )
    assert entry["detail"] == {"call_id": call_id, "closed": False}
    assert entry["path"] == f"/api/calls/{call_id}"
    by_actor = await api.get("/api/audit?actor=operator:li.na", who="sun.admin")
    assert {e["action"] for e in by_actor.body["entries"]} == {"list_calls"}
    assert (await api.get("/api/audit?since=yesterday", who="sun.admin")).status == 400
    assert (await api.get("/api/audit?limit=0", who="sun.admin")).status == 400
