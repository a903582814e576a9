"""Shared fixtures live in tests/fixtures/, one module per real part."""

import pytest

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.database",
    "tests.fixtures.api",
    "tests.fixtures.fake_twilio",
    "tests.fixtures.browser",
]


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
