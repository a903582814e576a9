"""Shared fixtures live in tests/fixtures/, one module per real part."""

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.database",
    "tests.fixtures.api",
    "tests.fixtures.fake_twilio",
    "tests.fixtures.browser",
]
