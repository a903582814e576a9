"""`callcenter demo` as a newcomer starts it: the lines it prints say what is true for
the options given; the sign-in box is shown again until somebody signs in, then no more;
the calm load and a storm are what the demo says they are, measured as the presses the
server stored; and --fresh starts from an empty database, the demo's own only."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from device_sim.demo import ensure_demo_operators, issue_demo_passwords
from device_sim.demo_fresh import NotTheDemosDatabaseError, remove_demo_database
from device_sim.demo_load import OnShift, calm_load, given_load, real_per_hour, visit_s
from device_sim.demo_notice import signed_in_since
from tests.api_support import Api
from tests.board_support import browser

SAYS_WITHIN_S = 90.0
# The devices come online only once the demo has issued each its broker login, which
# for the 1,800 devices takes 25-35 s on a quiet 2-core machine and over 90 s on one
# running the suite besides (docs/operations.md, "Broker logins").
ONLINE_WITHIN_S = 240.0
BOX_TITLE = "callcenter demo: sign in to the call board"
DEMO_ACCOUNTS = {"demo.operator", "demo.supervisor"}


class Demo:
    """`callcenter demo ARGS` running in ``directory``, its output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[tuple[float, str]] = []

    @classmethod
    async def start(
        cls, directory: Path, *args: str, typed: bool = False, env: dict[str, str] | None = None
    ) -> Demo:
        """Start the demo; ``typed``: with a pipe to type into as standard input; ``env``:
        more environment (configuration) for it."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callcenter.cli",
            "demo",
            *args,
            cwd=directory,
            env={**os.environ, "CALLCENTER_WEB__PORT": "0", **(env or {})},
            stdin=asyncio.subprocess.PIPE if typed else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(process)

    @property
    def text(self) -> str:
        return "".join(line for _, line in self.seen)

    async def line_with(self, words: str, within_s: float = SAYS_WITHIN_S) -> str:
        """The next line containing ``words`` (AssertionError if the demo ends first)."""
        assert self.process.stdout is not None

        async def read() -> str:
            assert self.process.stdout is not None
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"the demo ended before saying {words!r}:\n{self.text}")
                line = raw.decode(errors="replace")
                self.seen.append((time.monotonic(), line))
                if words in line:
                    return line

        try:
            return await asyncio.wait_for(read(), within_s)
        except TimeoutError:
            raise AssertionError(
                f"the demo did not say {words!r} within {within_s} s:\n{self.text[-6000:]}"
            ) from None

    async def lines_for(self, seconds: float) -> list[str]:
        """Every line the demo prints in the next ``seconds``."""
        assert self.process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), left)
            except TimeoutError:
                break
            if not raw:
                break
            line = raw.decode(errors="replace")
            self.seen.append((time.monotonic(), line))
            lines.append(line)
        return lines

    async def stop(self) -> str:
        """Ctrl-C; the rest of the output. Asserts a clean stop."""
        assert self.process.stdout is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        # Read on to the end, so a full pipe never holds the demo up while it stops.
        rest = (await asyncio.wait_for(self.process.stdout.read(), 60)).decode(errors="replace")
        code = await asyncio.wait_for(self.process.wait(), 10)
        assert code == 0, self.text[-4000:] + rest[-4000:]
        return rest

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()


def _presses_an_hour(load_line: str) -> float:
    found = re.search(r"load: ([\d.]+) presses an hour", load_line)
    assert found is not None, load_line
    return float(found.group(1))


def _stored(households_line: str) -> int:
    found = re.search(r"(\d+) stored by the server", households_line)
    assert found is not None, households_line
    return int(found.group(1))


async def test_the_sign_in_box_repeats_until_somebody_signs_in(tmp_path: Path) -> None:
    """Test that the sign-in lines come in a box (board URL, both demo accounts and their
    passwords), shown again every --remind-every seconds, and no more once somebody
    has signed in to the board with the password in it; and that the default demo says
    what is true for it: a calm load worked out from the carers on shift (between a few
    presses an hour and a few a minute), simulated carers answering texts, and carers,
    households and family contacts the phone, how to get a storm,
    and that typing storm starts one."""
    demo = await Demo.start(tmp_path, "--remind-every", "2", typed=True)
    try:
        load = await demo.line_with("load: ")
        assert "calm: a third of" in load and "carers on shift" in load, load
        assert 2 <= _presses_an_hour(load) <= 180, load
        texts = await demo.line_with("SMS a carer would get")
        assert "simulated carers answer them" in texts, texts
        phones = await demo.line_with("phone calls the desk places: http://")
        assert "simulated carers, households and family contacts answer them" in phones, phones
        await demo.line_with(BOX_TITLE)
        url = (await demo.line_with("/board ")).strip("| \n")
        operator = await demo.line_with("|   user demo.operator ")
        password = re.search(r"password (\S+)", operator)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/board"), url
        assert password is not None, operator
        await demo.line_with("|   user demo.supervisor ")
        await demo.line_with("simulated carers answer them")
        await demo.line_with("|   carers, households and family contacts answer them")
        await demo.line_with("| Load: calm, ")
        await demo.line_with("| For a storm: callcenter demo --storm")
        await demo.line_with("| Type storm and Enter here for a storm now")
        await demo.line_with("shown again every 2 s")
        # Not signed in: the box comes again, with the same lines.
        await demo.line_with(BOX_TITLE + " (repeated)", 20)
        assert (await demo.line_with("|   user demo.operator ")) == operator

        base = url.removesuffix("/board")
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http:
            async with http.get("/login") as form:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text())
            assert csrf is not None
            async with http.post(
                "/login",
                data={"username": "demo.operator", "password": password.group(1), "csrf": csrf[1]},
                allow_redirects=False,
            ) as signed:
                assert signed.status == 303, await signed.text()
        await demo.line_with("somebody signed in to the call board", 20)
        later = await demo.lines_for(6)  # three times the interval
        assert not [line for line in later if BOX_TITLE in line], "".join(later)
        await demo.type("storm")
        await demo.line_with("storm: ", 10)
    finally:
        await demo.stop()
    assert "--fresh" not in demo.text.replace("start over with --fresh", "")


async def test_runs_keep_the_database_a_storm_presses_as_it_says_and_fresh_starts_over(
    tmp_path: Path,
) -> None:
    """Test three runs in one directory, each saying what is true for its options:
    `--no-carers --press-interval 1` (nobody but you answers the texts or the carers'
    phones, in the log and the box; the load set by the option); then `--storm`, which
    says the database is kept with the calls the first run left, and presses as many
    times as it says within its minute, measured as the presses the server stored
    (acknowledged after the commit), far above the calm rate it states; then `--fresh`,
    which removes the demo's database, says so and seeds anew: none of the earlier calls
    are left."""
    first = await Demo.start(tmp_path, "--no-carers", "--press-interval", "1")
    try:
        await first.line_with("demo district seeded")
        load = await first.line_with("load: ")
        assert "(one every 1 s), set by --press-interval" in load, load
        line = await first.line_with("SMS a carer would get")
        assert "nobody answers them but you (--no-carers)" in line, line
        assert "simulated carers" not in line, line
        phones = await first.line_with("phone calls the desk places")
        assert "carers' phones ring until you answer them there (--no-carers)" in phones, phones
        assert "simulated carers" not in phones, phones
        await first.line_with("until somebody signs in to the board.", 30)
        box = first.text[first.text.rindex(BOX_TITLE) :]
        assert "nobody answers them but you (--no-carers)" in box, box
        assert "carers' phones are yours to answer there (--no-carers)" in box, box
        assert "simulated carers" not in box, box
        assert "Load: 3600.0 presses an hour, set by --press-interval" in box, box
        # Its broker takes no device without its own login: the demo issues them, and a
        # call raised shows the devices connected with them.
        issued = await first.line_with("devices their broker logins in", ONLINE_WITHIN_S)
        assert "issued 1800 devices" in issued, issued
        await first.line_with(": raised by device:", ONLINE_WITHIN_S)  # a call opened
    finally:
        await first.stop()
    database = tmp_path / "var" / "callcenter.db"
    with sqlite3.connect(database) as connection:
        calls = connection.execute("SELECT count(*) FROM calls").fetchone()[0]
    assert calls >= 1

    # The storm's rate is what this run measures; the devices' logins were the first
    # run's. Without them its devices are online at once, not after a minute or two.
    storm = await Demo.start(
        tmp_path,
        "--storm",
        "--remind-every",
        "600",
        env={"CALLCENTER_BROKER__DEVICE_LOGINS": "none"},
    )
    try:
        kept = await storm.line_with("kept from an earlier run")
        assert f"{database}" in kept and "start over with --fresh" in kept, kept
        assert re.search(rf"\b{calls} calls", kept), kept
        calm_rate = _presses_an_hour(await storm.line_with("load: "))
        await storm.line_with("| Storm (--storm): ", 30)
        started = await storm.line_with("storm: ")
        began = time.monotonic()
        said = re.search(
            r"storm: (\d+) emergency presses from \d+ households over (\d+) s", started
        )
        assert said is not None, started
        presses, seconds = int(said.group(1)), float(said.group(2))
        stored = 0
        # A quarter of the storm is enough to measure its rate (and keeps the suite short).
        while stored < presses // 4:
            stored = _stored(await storm.line_with("stored by the server", seconds))
        took = time.monotonic() - began
    finally:
        await storm.stop()
    storm_rate = stored / took * 3600
    assert storm_rate >= 0.5 * presses / seconds * 3600, (stored, took)
    assert storm_rate >= 20 * calm_rate, (storm_rate, calm_rate)

    fresh = await Demo.start(tmp_path, "--fresh", "--remind-every", "600")
    try:
        removed = await fresh.line_with("--fresh: removed the demo's database")
        assert str(database) in removed, removed
        assert "the embedded broker's queued messages" in removed, removed
        await fresh.line_with("demo district seeded", 30)
        await fresh.line_with("call board at", 30)
    finally:
        await fresh.stop()
    assert "kept from an earlier run" not in fresh.text
    # Stopped before its households were online: none of the earlier calls, no new one.
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM calls").fetchone()[0] == 0


def test_fresh_leaves_a_database_that_is_not_the_demos_alone(tmp_path: Path) -> None:
    """Test that --fresh refuses, saying why, a SQLite file with somebody else's account
    or no operators table at all, and a PostgreSQL database, and removes nothing."""
    shared = tmp_path / "shared.db"
    with sqlite3.connect(shared) as connection:
        connection.execute("CREATE TABLE operators (username TEXT)")
        connection.executemany("INSERT INTO operators VALUES (?)", [("demo.operator",), ("li.na",)])
    broker_store = tmp_path / "mosquitto.db"
    broker_store.write_bytes(b"queued")
    with pytest.raises(NotTheDemosDatabaseError, match=r"accounts the demo did not make \(li.na\)"):
        remove_demo_database(f"sqlite+aiosqlite:///{shared}", DEMO_ACCOUNTS, broker_store)
    assert shared.exists() and broker_store.exists()

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(NotTheDemosDatabaseError, match="no operators table"):
        remove_demo_database(f"sqlite+aiosqlite:///{other}", DEMO_ACCOUNTS)
    assert other.exists()

    with pytest.raises(NotTheDemosDatabaseError, match="only the demo's own SQLite file"):
        remove_demo_database("postgresql+asyncpg://postgres:secret@db/callcenter", DEMO_ACCOUNTS)


def test_the_calm_load_follows_the_carers_on_shift_and_never_falls_below_the_households() -> None:
    """Test the calm load's arithmetic: a third of the calls the carers on shift can take
    (each keeping a carer as long as the simulated carers take), more carers more presses;
    with nobody on shift, what the district's households press at this hour; and the
    rhythm: an evening hour presses more than a night hour."""
    night = calm_load(900, OnShift(15, 15, ("NIGHT",)), local_hour=3)
    day = calm_load(900, OnShift(30, 30, ("EARLY", "DAY")), local_hour=10)
    assert night.carry_per_hour == pytest.approx(15 * 3600 / visit_s())
    assert night.presses_per_hour == pytest.approx(night.carry_per_hour / 3)
    assert day.presses_per_hour == pytest.approx(2 * night.presses_per_hour)
    nobody = calm_load(900, OnShift(0, 0, ()), local_hour=19)
    assert nobody.presses_per_hour == pytest.approx(real_per_hour(900, 19))
    assert nobody.presses_per_hour > 0
    assert real_per_hour(900, 19) > real_per_hour(900, 3)
    assert night.storm_presses == 30 and nobody.storm_presses == 10
    given = given_load(900, OnShift(15, 15, ("NIGHT",)), 3, interval_s=5)
    assert given.presses_per_hour == 720 and given.given
    assert "set by --press-interval" in given.describe()


async def test_the_box_knows_a_sign_in_from_the_boards_own_record(api: Api) -> None:
    """Test the one query the sign-in box asks before it is shown again, on each
    database: a wrong password is no sign-in, a right one is, and a sign-in before the
    demo started does not count."""
    await ensure_demo_operators(api.server.engine, api.clock.now())
    passwords = await issue_demo_passwords(api.server.engine)
    started = api.clock.now()
    async with browser(api) as tab:
        assert (await tab.sign_in("demo.operator", "not-the-password")).status == 401
    assert not await signed_in_since(api.server.engine, started)
    async with browser(api) as tab:
        assert (await tab.sign_in("demo.operator", passwords["demo.operator"])).status == 303
    assert await signed_in_since(api.server.engine, started)
    later = api.clock.now() + timedelta(seconds=1)
    assert not await signed_in_since(api.server.engine, later)
