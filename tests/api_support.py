"""The whole server with its operator API, on a virtual clock, and an HTTP client for it."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.app import Running
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.config import Config
from callcenter.domain.events import EventKind
from callcenter.engine import accounts
from callcenter.engine.accounts import token_digest
from callcenter.store import models as m
from callcenter.web.state import CONFIG
from tests.desk_support import MONDAY_MORNING, desk_config, running_desk
from tests.ingest_support import eventually, publish_events

# username -> (name, role, active); each gets the token "token-<username>".
OPERATORS = {
    "li.na": ("李娜", m.OperatorRole.OPERATOR, True),
    "wang.wei": ("王伟", m.OperatorRole.OPERATOR, True),
    "zhao.min": ("赵敏", m.OperatorRole.SUPERVISOR, True),
    "old.hand": ("马德明", m.OperatorRole.OPERATOR, False),
    "sun.admin": ("孙立", m.OperatorRole.ADMIN, True),
}
# A board password for tests that sign in through the page (set with set_password).
PASSWORD = "night-shift-2026"


async def set_password(server: Running, username: str, password: str = PASSWORD) -> None:
    """Give a test operator a board password, as `callcenter users password` does."""
    await accounts.set_password(server.engine, username, password)


def token_of(username: str) -> str:
    return f"token-{username}-0123456789"


async def add_test_operators(server: Running) -> None:
    """The operators above, written straight into the server's database."""
    await write_test_operators(server.engine)
    # Written behind the server's back: its registry (supervisors to text) reads them anew.
    server.desk.district.invalidate()


async def write_test_operators(engine: AsyncEngine) -> None:
    """The operators above, written straight into the database (of a server in another
    process, or not started yet)."""
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(
            insert(m.Operator),
            [
                {
                    "username": username,
                    "name": name,
                    "role": role.value,
                    "phone": "+8613900000001" if role is m.OperatorRole.SUPERVISOR else None,
                    "language": "zh",
                    "token_sha256": token_digest(token_of(username)),
                    "active": active,
                    "created_at": datetime(2026, 11, 1, tzinfo=UTC),
                }
                for username, (name, role, active) in OPERATORS.items()
            ],
        )


def api_config(
    broker: EmbeddedBroker, prefix: str, database_url: str, *, offers: bool = False
) -> Config:
    """The desk's test configuration. Presses are stamped with the real time while the
    desk runs on MONDAY_MORNING: their clocks are not to be called wrong. ``offers``:
    alarm calls are offered to the operators on duty (desk_support.desk_config)."""
    config = desk_config(
        host=broker.host,
        port=broker.port,
        prefix=prefix,
        database_url=database_url,
        offers=offers,
    )
    ingest = config.ingest.model_copy(
        update={"max_clock_skew_s": 100 * 365 * 86400.0, "max_clock_lag_s": 100 * 365 * 86400.0}
    )
    return config.model_copy(update={"ingest": ingest})


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Api:
    """A running server and an HTTP client signed in as whoever a request names."""

    server: Running
    clock: ManualClock
    http: aiohttp.ClientSession
    broker: EmbeddedBroker
    prefix: str
    _presses: int = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "li.na",
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if who is not None:
            sent["Authorization"] = f"Bearer {token_of(who)}"
        async with self.http.request(method, path, json=json, data=data, headers=sent) as reply:
            body = (
                await reply.json()
                if reply.content_type == "application/json"
                else await reply.text()
            )
            return Reply(reply.status, body, dict(reply.headers))

    async def get(self, path: str, *, who: str | None = "li.na") -> Reply:
        return await self.request("GET", path, who=who)

    async def post(self, path: str, json: Any = None, *, who: str | None = "li.na") -> Reply:
        return await self.request("POST", path, who=who, json={} if json is None else json)

    async def press(
        self, household: str, kind: EventKind = EventKind.EMERGENCY_PRESS, times: int = 1
    ) -> int:
        """Press the household's call button; the id of the open call it raised."""
        events = []
        for _ in range(times):
            self._presses += 1
            events.append((household, f"CB-{household}", f"api-{self._presses}"))
        await publish_events(self.broker.host, self.broker.port, self.prefix, events, kind)
        found: list[int] = []

        async def raised() -> bool:
            calls = (await self.get("/api/calls")).body["calls"]
            mine = [c for c in calls if c["household"]["code"] == household]
            found[:] = [c["id"] for c in mine if c["presses"] >= times]
            return bool(found)

        await eventually(raised, what=f"an open call for {household}")
        return found[0]

    async def call(self, call_id: int) -> dict[str, Any]:
        reply = await self.get(f"/api/calls/{call_id}")
        assert reply.status == 200, reply
        detail: dict[str, Any] = reply.body
        return detail

    async def carers(self) -> list[dict[str, Any]]:
        reply = await self.get("/api/carers")
        assert reply.status == 200, reply
        carers: list[dict[str, Any]] = reply.body["carers"]
        return carers


@contextlib.asynccontextmanager
async def running_api(
    broker: EmbeddedBroker,
    prefix: str,
    database_url: str,
    *,
    offers: bool = False,
    clock: ManualClock | None = None,
    operators_added: bool = False,
) -> AsyncIterator[Api]:
    """The server on MONDAY_MORNING (or ``clock``) with the test operators (unless
    ``operators_added`` before, as on a restart), and a client for its API."""
    clock = clock or ManualClock(MONDAY_MORNING)
    config = api_config(broker, prefix, database_url, offers=offers)
    async with running_desk(config, clock) as server:
        if not operators_added:
            await add_test_operators(server)
        async with aiohttp.ClientSession(base_url=server.web_url) as http:
            yield Api(server, clock, http, broker, prefix)


@contextlib.asynccontextmanager
async def another_instance(api: Api) -> AsyncIterator[Api]:
    """A second server on the same database and clock, as another machine of a centre
    that runs several would be; it listens on devices under a topic prefix of its own,
    so the events the first one ingests are not ingested twice."""
    config = api_config(api.broker, f"{api.prefix}-b", api.server.config.database_url)
    config = config.model_copy(
        update={"web": api.server.config.web, "desk": api.server.config.desk}
    )
    async with (
        running_desk(config, api.clock, leading=False) as server,
        aiohttp.ClientSession(base_url=server.web_url) as http,
    ):
        yield Api(server, api.clock, http, api.broker, api.prefix)


def reconfigure(api: Api, config: Config) -> None:
    """Serve the API with ``config`` from the next request on: a test's change of
    configuration while the server runs (its API is handed its configuration once, as it
    starts, and otherwise never changes it)."""
    api.server.config = config
    assert api.server.web is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the app has started
        api.server.web.app[CONFIG] = config


def trust_local_proxy(api: Api) -> None:
    """Take the address in X-Forwarded-For from requests that come from 127.0.0.1, as
    behind a reverse proxy on the same machine: tests then sign in "from" any address."""
    web_config = api.server.config.web.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    reconfigure(api, api.server.config.model_copy(update={"web": web_config}))
