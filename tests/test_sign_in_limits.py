"""Pausing password guessing at the board's sign-in without locking people out: limits
per address, per person and address, and (loosely) per person; counted in the database,
so they hold across restarts, across instances and under simultaneous attempts, on both
databases. Addresses other than 127.0.0.1 come through X-Forwarded-For from a trusted
local proxy (``web.trusted_proxies``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from callcenter.config import WebConfig
from callcenter.store import models as m
from callcenter.web.client_address import client_address, source_of
from callcenter.web.sessions import LOGIN_CSRF_COOKIE
from tests.api_support import (
    PASSWORD,
    Api,
    another_instance,
    reconfigure,
    set_password,
    trust_local_proxy,
)
from tests.board_support import browser
from tests.desk_support import count

# Small limits, set in the configuration, keep the tests quick: each judged attempt
# costs an Argon2 check (about 0.4 s on a busy 2-core machine).
PER_USER_AND_SOURCE = 2
PER_SOURCE = 4
PER_USER = 3
ATTACKER = "203.0.113.5"
DESK = "198.51.100.7"
WRONG = "not-the-password"


def small_limits(api: Api, *, behind_proxy: bool = True) -> None:
    """The limits above, and (``behind_proxy``) X-Forwarded-For believed from 127.0.0.1."""
    if behind_proxy:
        trust_local_proxy(api)
    web_config = api.server.config.web.model_copy(
        update={
            "sign_in_failures_per_user_source": PER_USER_AND_SOURCE,
            "sign_in_failures_per_source": PER_SOURCE,
            "sign_in_failures_per_user": PER_USER,
        }
    )
    reconfigure(api, api.server.config.model_copy(update={"web": web_config}))


def test_the_limits_are_as_documented() -> None:
    """Test the defaults docs/accounts.md states: 5 per person and address, 20 per
    address, 100 per person, over 15 minutes."""
    web_config = WebConfig()
    assert web_config.sign_in_failures_per_user_source == 5
    assert web_config.sign_in_failures_per_source == 20
    assert web_config.sign_in_failures_per_user == 100
    assert web_config.sign_in_window_min == 15.0


class Attempts:
    """Sign-in attempts that may overlap: one form token, sent back by hand as cookie
    and field (a cookie jar would take the fresh token each answer sets)."""

    def __init__(self, http: aiohttp.ClientSession, token: str) -> None:
        self._http = http
        self._token = token

    async def __call__(self, username: str, password: str, address: str) -> int:
        async with self._http.post(
            "/login",
            data={"username": username, "password": password, "csrf": self._token},
            headers={"X-Forwarded-For": address, "Cookie": f"{LOGIN_CSRF_COOKIE}={self._token}"},
            allow_redirects=False,
        ) as reply:
            await reply.read()
            return reply.status


@contextlib.asynccontextmanager
async def attempts(api: Api) -> AsyncIterator[Attempts]:
    jar = aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(base_url=api.server.web_url, cookie_jar=jar) as http:
        async with http.get("/login") as page:
            found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert found is not None
        yield Attempts(http, found.group(1))


async def test_a_switched_off_account_answers_as_a_wrong_password_does(api: Api) -> None:
    """Test that the right password of a switched-off account gets exactly the answer a
    wrong one gets, so it confirms nothing, and counts as a failure."""
    small_limits(api)
    await set_password(api.server, "old.hand")
    async with browser(api) as someone:
        right = await someone.sign_in("old.hand", PASSWORD)
        wrong = await someone.sign_in("old.hand", WRONG)
        assert right.status == wrong.status == 401
        assert "switched off" not in await right.text()
        assert "用户名或密码错误" in await right.text()
    failed = await count(api.server, m.SignInAttempt, m.SignInAttempt.outcome == "failed")
    assert failed == 2


async def test_guessing_from_one_address_pauses_that_address_not_the_person(api: Api) -> None:
    """Test that wrong passwords for a person from one address pause that person there,
    while they still sign in from the desk; and that more wrong passwords from one
    address, whatever the names, pause that address for everyone, and nobody else."""
    small_limits(api)
    await set_password(api.server, "wang.wei")
    await set_password(api.server, "li.na")
    async with browser(api) as attacker:
        for _ in range(PER_USER_AND_SOURCE):
            assert (await attacker.sign_in("wang.wei", WRONG, address=ATTACKER)).status == 401
        paused = await attacker.sign_in("wang.wei", PASSWORD, address=ATTACKER)
        assert paused.status == 429 and "尝试次数过多" in await paused.text()
        for n in range(PER_SOURCE - PER_USER_AND_SOURCE):
            assert (await attacker.sign_in(f"guess.{n}", WRONG, address=ATTACKER)).status == 401
        assert (await attacker.sign_in("li.na", PASSWORD, address=ATTACKER)).status == 429
    async with browser(api) as wang, browser(api) as li:
        assert (await wang.sign_in("wang.wei", PASSWORD, address=DESK)).status == 303
        assert (await li.sign_in("li.na", PASSWORD, address=DESK)).status == 303


async def test_a_person_attacked_from_many_addresses_still_signs_in_at_the_desk(
    api: Api,
) -> None:
    """Test the loose per-person limit: once a person's failures from everywhere reach
    it, addresses they have not signed in from are paused for them, but the desk, where
    they signed in before, is not."""
    small_limits(api)
    await set_password(api.server, "li.na")
    async with browser(api) as li:
        assert (await li.sign_in("li.na", PASSWORD, address=DESK)).status == 303
    async with attempts(api) as attempt:
        for n in range(PER_USER):
            assert await attempt("li.na", WRONG, f"192.0.2.{n + 1}") == 401
        assert await attempt("li.na", PASSWORD, "192.0.2.99") == 429
    async with browser(api) as li:
        assert (await li.sign_in("li.na", PASSWORD, address=DESK)).status == 303


async def test_failures_are_kept_in_the_database_for_every_instance(api: Api) -> None:
    """Test that failures counted on one server pause sign-in on another server on the
    same database (and so after a restart too)."""
    small_limits(api)
    await set_password(api.server, "wang.wei")
    async with browser(api) as guesser:
        for _ in range(PER_USER_AND_SOURCE):
            assert (await guesser.sign_in("wang.wei", WRONG)).status == 401
    async with another_instance(api) as other, browser(other) as guesser:
        assert (await guesser.sign_in("wang.wei", PASSWORD)).status == 429


async def test_simultaneous_wrong_passwords_are_judged_only_as_often_as_allowed(
    api: Api,
) -> None:
    """Test that attempts arriving at the same moment are counted one after another:
    60 wrong passwords for one person from one address, 100 from one address over many
    names, and 40 from 40 addresses for one person get exactly as many answers as the
    limit of each allows; the rest 429."""
    small_limits(api)
    async with attempts(api) as attempt:
        one_person = await asyncio.gather(
            *(attempt("wang.wei", WRONG, ATTACKER) for _ in range(60))
        )
        many_names = await asyncio.gather(
            *(attempt(f"guess.{n}", WRONG, "203.0.113.6") for n in range(100))
        )
        many_addresses = await asyncio.gather(
            *(attempt("zhao.min", WRONG, f"192.0.2.{n + 1}") for n in range(40))
        )
    assert Counter(one_person) == {401: PER_USER_AND_SOURCE, 429: 60 - PER_USER_AND_SOURCE}
    assert Counter(many_names) == {401: PER_SOURCE, 429: 100 - PER_SOURCE}
    assert Counter(many_addresses) == {401: PER_USER, 429: 40 - PER_USER}


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        # No trusted proxy: the header proves nothing, whoever sends it.
        ("203.0.113.5", ["198.51.100.7"], (), "203.0.113.5"),
        # A proxy we trust names the client.
        ("10.0.0.5", ["198.51.100.7"], ("10.0.0.5",), "198.51.100.7"),
        # A client that writes the header itself is to the left of what the proxy added.
        ("10.0.0.5", ["1.2.3.4, 198.51.100.7"], ("10.0.0.0/24",), "198.51.100.7"),
        # Two proxies of ours, one after the other; headers given twice read as one list.
        ("10.0.0.5", ["198.51.100.7, 10.0.0.6", "10.0.0.7"], ("10.0.0.0/24",), "198.51.100.7"),
        # A connection from elsewhere cannot claim to be behind our proxy.
        ("203.0.113.5", ["10.0.0.5"], ("10.0.0.0/24",), "203.0.113.5"),
        # Something that is no address, where our proxy writes: the proxy is all we know.
        ("10.0.0.5", ["not-an-address"], ("10.0.0.5",), "10.0.0.5"),
        ("10.0.0.5", [], ("10.0.0.5",), "10.0.0.5"),
        ("::1", ["2001:db8::1"], ("::1",), "2001:db8::1"),
    ],
)
def test_the_client_address_is_read_only_from_trusted_proxies(
    peer: str, forwarded: list[str], trusted: tuple[str, ...], client: str
) -> None:
    """Test which address a request is taken to come from, behind proxies or not."""
    assert client_address(peer, forwarded, trusted) == client


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        (None, "?"),
    ],
)
def test_an_ipv6_client_counts_as_its_64_network(address: str | None, source: str) -> None:
    """Test that limits count an IPv6 client by its /64, so walking through the
    addresses of one subscriber's network does not escape them."""
    assert source_of(address) == source


async def test_without_a_trusted_proxy_x_forwarded_for_changes_nothing(api: Api) -> None:
    """Test that a client cannot escape the per-address limit by naming other addresses
    in X-Forwarded-For when no proxy is trusted."""
    small_limits(api, behind_proxy=False)
    async with attempts(api) as attempt:
        for n in range(PER_USER_AND_SOURCE):
            assert await attempt("wang.wei", WRONG, f"192.0.2.{n + 1}") == 401
        assert await attempt("wang.wei", WRONG, "192.0.2.99") == 429


async def test_garbage_usernames_are_wrong_usernames(api: Api) -> None:
    """Test that a username with control characters, a very long one and one in another
    script are answered as wrong usernames (401), never a 5xx, and counted like any other
    failure; one with a NUL byte is refused before sign-in like any request holding one
    (400, docs/api.md "Errors"), with no password checked."""
    small_limits(api)
    async with attempts(api) as attempt:
        for n, username in enumerate(("li.na\r\nadmin", "\u202eanil", "x" * 500, "管理员")):
            assert await attempt(username, WRONG, f"192.0.2.{n + 1}") == 401, repr(username)
        assert await attempt("li\x00na", WRONG, "192.0.2.9") == 400
    failed = await count(api.server, m.SignInAttempt, m.SignInAttempt.outcome == "failed")
    assert failed == 4
