"""PostgreSQL clusters of a test's own: a primary and its synchronous streaming replica
on free ports, made with the server binaries on this machine; the primary killed and the
replica promoted, as a failover manager would do it.

The binaries are looked for in ``CALLCENTER_TEST_PG_BIN`` if set, then where Debian puts
them (``/usr/lib/postgresql/<version>/bin``, the newest first), then on PATH. initdb
refuses to run as root, so as root every server command runs as the ``postgres`` user
(through ``runuser``) on a directory that user owns. ``unavailable()`` says why no
cluster can be made here, for a test to skip with.

Every setting the pair runs with is here, so what a test shows can be read off it:
``synchronous_commit`` on (PostgreSQL's default) with the replica named in
``synchronous_standby_names``, so the primary answers a COMMIT only once the replica has
the transaction's WAL on its disk. ``fsync`` is off to keep the clusters quick: the tests
kill processes, never the machine, and what a killed process wrote is still in the
kernel's page cache for the next one to read.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callcenter.broker import free_port

PG_BIN_ENV = "CALLCENTER_TEST_PG_BIN"
_TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres", "psql")
_OS_USER = "postgres"  # who runs the clusters when the tests run as root
# The replica's name in the primary's synchronous_standby_names.
REPLICA_NAME = "replica"
_SETTINGS = """
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 4
hot_standby = on
fsync = off
shared_buffers = 32MB
max_connections = 60
log_min_messages = warning
"""


def _version(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def _bin_dir() -> Path | None:
    """The first directory holding every tool a pair needs."""
    named = os.environ.get(PG_BIN_ENV)
    candidates = [Path(named)] if named else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in _TOOLS):
            return candidate
    return None


@dataclass(frozen=True)
class Tools:
    """The server binaries, and the OS user they run as (None: whoever runs the tests)."""

    bin_dir: Path
    user: str | None

    def command(self, tool: str, *args: str) -> list[str]:
        line = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", self.user, "--", *line] if self.user else line

    def run(self, tool: str, *args: str, timeout_s: float = 60.0) -> str:
        """Run ``tool``; its output, or an error carrying what it said."""
        done = subprocess.run(
            self.command(tool, *args),
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd="/",
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def own(self, path: Path) -> None:
        """Give ``path`` to the clusters' user."""
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def tools() -> Tools | str:
    """The tools to make clusters with, or why there are none (a skip's reason)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        return (
            "no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup, postgres, psql) in "
            f"${PG_BIN_ENV}, /usr/lib/postgresql/*/bin or on PATH: install the server "
            "(Debian: apt-get install postgresql) to run the failover tests"
        )
    if os.geteuid() != 0:
        return Tools(bin_dir, None)
    try:
        pwd.getpwnam(_OS_USER)
    except KeyError:
        return (
            f"running as root, which initdb refuses, and there is no {_OS_USER!r} user to run it as"
        )
    if shutil.which("runuser") is None:
        return f"running as root, which initdb refuses, and no runuser to run it as {_OS_USER!r}"
    return Tools(bin_dir, _OS_USER)


def unavailable() -> str | None:
    """Why no cluster can be made here, or None."""
    found = tools()
    return found if isinstance(found, str) else None


@dataclass
class Node:
    """One cluster: its data directory, port and log."""

    name: str
    data: Path
    port: int
    tools: Tools
    running: bool = False

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def dsn(self, database: str = "postgres") -> str:
        """An asyncpg/libpq URL of ``database`` on this node alone."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.tools.run(
            "pg_ctl",
            *("-D", str(self.data), "-l", str(self.log), "-w", "-t", "30"),
            *("-o", f"-p {self.port}", "start"),
        )
        self.running = True

    def sql(self, query: str, database: str = "postgres") -> str:
        """What ``query`` returns, unaligned (psql -At), as the clusters' user."""
        return self.tools.run(
            "psql",
            *("-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port)),
            *("-U", "postgres", "-d", database, "-c", query),
            timeout_s=30,
        ).strip()

    def in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()") == "t"

    def processes(self) -> list[int]:
        """The postmaster and every process it started; none once it is gone (the pid
        its file still names may by then be another process's)."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
            command = Path(f"/proc/{postmaster}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return []
        if str(self.data).encode() not in command:
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The command may hold spaces and brackets: the fields after its ")" count.
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def kill(self) -> None:
        """SIGKILL the postmaster and all its processes at once, as a machine that dies
        takes them all: each is stopped first, so none does anything more while the
        others are being killed."""
        if not self.running:
            return
        pids = self.processes()
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        self.running = False
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop at once; killed if pg_ctl cannot stop it."""
        if not self.running:
            return
        try:
            self.tools.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            self.kill()
        self.running = False


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie left for its parent to reap does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class SynchronousPair:
    """A primary and the replica it commits synchronously to."""

    primary: Node
    replica: Node
    events: list[str] = field(default_factory=list)

    def url(self, database: str, *, target: str = "read-write") -> str:
        """The server's SQLAlchemy URL of ``database`` on both nodes, primary first: the
        driver takes the first that is writable (``target_session_attrs``)."""
        hosts = "&".join(f"host=127.0.0.1:{node.port}" for node in (self.primary, self.replica))
        return f"postgresql+asyncpg://postgres@/{database}?{hosts}&target_session_attrs={target}"

    def create_database(self, name: str) -> None:
        self.primary.sql(f'CREATE DATABASE "{name}"')

    def replication_state(self) -> str:
        """The replica's sync_state as the primary sees it ('' while not connected)."""
        return self.primary.sql(
            f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{REPLICA_NAME}'"
        )

    def fail_over(self) -> float:
        """Kill the primary, then promote the replica; seconds until it takes writes."""
        started = time.monotonic()
        self.primary.kill()
        self.promote()
        return time.monotonic() - started

    def promote(self) -> None:
        """Promote the replica and wait until it is out of recovery."""
        self.primary.tools.run("pg_ctl", "-D", str(self.replica.data), "-w", "-t", "30", "promote")
        deadline = time.monotonic() + 30
        while self.replica.in_recovery():
            if time.monotonic() > deadline:
                raise RuntimeError("the promoted replica is still in recovery after 30 s")
            time.sleep(0.05)


@contextlib.contextmanager
def synchronous_pair() -> Iterator[SynchronousPair]:
    """A primary and its synchronous streaming replica, both running, on free ports;
    stopped and removed at the end whatever happened."""
    found = tools()
    if isinstance(found, str):
        raise RuntimeError(found)
    # Not under pytest's tmp_path: its directories are the test user's alone (0700),
    # and the clusters' user must reach its own.
    base = Path(tempfile.mkdtemp(prefix="callcenter-pg-"))
    found.own(base)
    primary = Node("primary", base / "primary", free_port(), found)
    replica = Node("replica", base / "replica", free_port(), found)
    watcher = _cleaning_up_after_us(base, [primary, replica])
    try:
        found.run(
            "initdb",
            *("-D", str(primary.data), "-U", "postgres", "-A", "trust"),
            *("-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"),
        )
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS)
        primary.start()
        found.run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            *("-D", str(replica.data), "-X", "stream", "-c", "fast", "--no-sync"),
        )
        # The replica's own connection to its primary, under the name the primary waits for.
        conninfo = (
            f"host=127.0.0.1 port={primary.port} user=postgres application_name={REPLICA_NAME}"
        )
        with (replica.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")
        (replica.data / "standby.signal").touch()
        found.own(replica.data / "standby.signal")
        replica.start()
        # Only now, and only on the primary (ALTER SYSTEM writes its own auto.conf, which
        # the base backup above did not copy): the promoted replica must not wait for a
        # standby it does not have.
        primary.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{REPLICA_NAME}'")
        primary.sql("SELECT pg_reload_conf()")
        pair = SynchronousPair(primary, replica)
        deadline = time.monotonic() + 30
        while pair.replication_state() != "sync":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica never became synchronous:\n{_logs(base)}")
            time.sleep(0.05)
        yield pair
    finally:
        for node in (replica, primary):
            node.stop()
        shutil.rmtree(base, ignore_errors=True)
        watcher.kill()
        watcher.wait()


def _cleaning_up_after_us(base: Path, nodes: list[Node]) -> subprocess.Popen[bytes]:
    """A watcher, in a session of its own, that stops the clusters and removes ``base``
    should this process die without doing it (SIGKILL, or a CI job out of time): a
    postmaster belongs to no process of ours once pg_ctl has started it."""
    stops = "; ".join(
        shlex.join(node.tools.command("pg_ctl", "-D", str(node.data), "-m", "immediate", "stop"))
        for node in nodes
    )
    script = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
        f"{stops}; rm -rf {shlex.quote(str(base))}"
    )
    return subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _logs(base: Path) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in base.glob("*.log")
    )
