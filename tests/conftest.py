"""Shared fixtures live in tests/fixtures/, one module per real part."""

import gc
from collections.abc import Iterator

import aiohttp.web_app
import pytest

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.database",
    "tests.fixtures.api",
    "tests.fixtures.fake_twilio",
    "tests.fixtures.browser",
]


@pytest.fixture(autouse=True)
def _forget_the_servers_web_app() -> Iterator[None]:
    """Empty aiohttp's process-wide cache of middleware chains after each test. It is
    keyed on the Application (up to 1,024 entries), so it kept every test's stopped
    server alive, registry and all: a worker's heap grew to millions of objects, and
    every full garbage collection walked them all (seconds each, late in the run). A
    server made once per process, as in production, never meets this. The cache is
    aiohttp's private detail, hence getattr (home-assistant/supervisor#7196 does the
    same)."""
    yield
    cache = getattr(aiohttp.web_app, "_cached_build_middleware", None)
    if cache is not None:
        cache.cache_clear()


def pytest_configure(config: pytest.Config) -> None:
    """Collect young garbage every 50,000 allocations rather than Python's 700. Every test
    starts a server whose registry is a hundred thousand objects or more, each of which
    a young collection walks again until it is old: at 700 the collector took about an
    eighth of a worker's time (23 of 179 s in a run of eight server-heavy files; 8 s at
    50,000, and the run 20 s shorter). What a collection finds is the same, found later."""
    gc.set_threshold(50_000, 10, 10)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once every test module is imported, move what is there (modules, classes,
    functions: hundreds of thousands of objects that live as long as the process) out of
    the collector's sight, as `callcenter serve` does after start-up: full collections
    then walk only what the tests made."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests marked ``page`` once, on SQLite: a page looks and behaves the same
    whatever database is behind the server, and the suite must stay under 15 minutes on
    two cores. What such a test drives on the server has its own tests on both databases.
    Tests marked ``sqlite_only`` (for the reason the marker gives) are left out on
    PostgreSQL here too, rather than skipped once their server and database are up."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_backend") if callspec else None
        once = any(item.get_closest_marker(name) for name in ("page", "sqlite_only"))
        (dropped if once and backend == "postgresql" else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the schemathesis run's summary line (tests/test_api_fuzz.py) at the end of
    every run that includes it, xdist workers' too (they send user_properties back)."""
    lines = [
        str(value)
        for kind in ("passed", "failed")
        for report in terminalreporter.stats.get(kind, [])
        for name, value in getattr(report, "user_properties", ())
        if name == "schemathesis"
    ]
    if lines:
        terminalreporter.section("schemathesis")
        for line in lines:
            terminalreporter.write_line(line)
