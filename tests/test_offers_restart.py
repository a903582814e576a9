"""An offer through a crash (docs/calls.md, "Offers", "Never lost"): `callcenter serve`
killed with SIGKILL while an alarm is offered to one operator, its time running out
while the server is down; the restarted server moves it to the next operator as it
starts, exactly once."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from sqlalchemy import insert, select

from callcenter.broker import EmbeddedBroker
from callcenter.engine.accounts import token_digest
from callcenter.store import models as m
from callcenter.store.db import create_engine
from tests.api_support import token_of
from tests.ingest_support import eventually, publish_events
from tests.server_support import server_process, write_config

# Appended to the file's last table, [desk]: a short offer, so the test waits little.
_SHORT_OFFER = "offer_timeout_s = 3\n"


async def _add_operators(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(m.Operator),
                [
                    {
                        "username": username,
                        "name": username,
                        "role": m.OperatorRole.OPERATOR.value,
                        "language": "zh",
                        "token_sha256": token_digest(token_of(username)),
                        "active": True,
                        "created_at": datetime(2026, 11, 1, tzinfo=UTC),
                    }
                    for username in ("li.na", "wang.wei")
                ],
            )
    finally:
        await engine.dispose()


async def _history(url: str, call_id: int) -> list[tuple[str, dict[str, object]]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(m.CallHistory.action, m.CallHistory.detail)
                .where(m.CallHistory.call_id == call_id)
                .order_by(m.CallHistory.id)
            )
            return [(action, dict(detail)) for action, detail in rows.all()]
    finally:
        await engine.dispose()


def _as(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(who)}"}


async def test_an_offer_running_out_while_the_server_was_killed_moves_on_at_start(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that an offer whose time ran out while the server was dead (SIGKILL) is
    moved to the next operator by the restarted server as it starts (its durable timer),
    once, and that the call kept its offer meanwhile."""
    await _add_operators(seeded_database_url)
    config_file = write_config(
        tmp_path / "callcenter.toml",
        data_dir=tmp_path / "var",
        database_url=seeded_database_url,
        broker=broker,
        prefix=topic_prefix,
        offers=True,
        extra=_SHORT_OFFER,
    )
    async with server_process(config_file) as server:
        found = await server.wait_for_line(r"operator API (http://\S+)")
        url = found.group(1).rstrip(",")
        async with aiohttp.ClientSession(base_url=url) as http:
            for who in ("li.na", "wang.wei"):
                async with http.post(
                    "/api/desk/duty", json={"duty": "on_duty"}, headers=_as(who)
                ) as reply:
                    assert reply.status == 200, await reply.text()
            boards = [
                await http.ws_connect("/api/board/feed", headers=_as(who))
                for who in ("li.na", "wang.wei")
            ]
            await publish_events(
                broker.host, broker.port, topic_prefix, [("H0001", "CB-H0001", "press-1")]
            )
            offer: dict[str, object] = {}

            async def offered() -> bool:
                async with http.get("/api/calls", headers=_as("li.na")) as reply:
                    calls = (await reply.json())["calls"]
                if calls and calls[0]["offer"]:
                    offer.update(calls[0]["offer"], call_id=calls[0]["id"])
                return bool(offer)

            await eventually(offered, within_s=10, what="the call offered")
            assert offer["operator"] == "operator:li.na"
            server.send(signal.SIGKILL)
            assert await server.wait() == -signal.SIGKILL
            for ws in boards:
                await ws.close()
        call_id = int(str(offer["call_id"]))
        # Down for longer than the offer's 3 s: its timer falls due meanwhile.
        await eventually(
            lambda: _past(str(offer["expires_at"])), within_s=10, what="the offer's end"
        )
        assert [a for a, _ in await _history(seeded_database_url, call_id)].count("offered") == 1

        await server.start()
        found = await server.wait_for_line(r"operator API (http://\S+)")
        url = found.group(1).rstrip(",")

        async def moved() -> bool:
            done = await _history(seeded_database_url, call_id)
            return any(a == "offered" and d.get("operator") == "operator:wang.wei" for a, d in done)

        # The two operators are on duty and count as watching for the grace after a start.
        await eventually(moved, within_s=15, what="the offer moved to wang.wei")
        done = await _history(seeded_database_url, call_id)
        assert [a for a, _ in done].count("offer_expired") == 1
        assert ("offer_expired", {"operator": "operator:li.na", "why": "timeout"}) in done
        async with (
            aiohttp.ClientSession(base_url=url) as http,
            http.get(f"/api/calls/{call_id}", headers=_as("li.na")) as reply,
        ):
            assert (await reply.json())["offer"]["operator"] == "operator:wang.wei"
        server.send(signal.SIGTERM)
        assert await server.wait() == 0


async def _past(iso: str) -> bool:
    return datetime.now(UTC) > datetime.fromisoformat(iso.replace("Z", "+00:00"))
