"""Shared fixtures live in tests/fixtures/, one module per real part."""

import pytest

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.database",
    "tests.fixtures.api",
    "tests.fixtures.fake_twilio",
    "tests.fixtures.browser",
]


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
