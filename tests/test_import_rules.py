"""Test that the packages import each other only as docs/architecture.md says: the
simulator depends on the server, never the other way round, and inside the server the
layers point one way.

Every module of callcenter/ and device_sim/ is parsed (not imported) and every import
statement counts, at any depth: inside functions, under ``if TYPE_CHECKING``, in
``try``. A ``from package import name`` counts as an import of ``package.name`` when that
is a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("callcenter", "device_sim")


@dataclass(frozen=True)
class Rule:
    """Modules under ``importer`` (a package or module) import nothing under ``forbidden``
    (or, with ``only``, nothing of ours outside ``only``); modules under ``unless`` are
    the importers the rule leaves out."""

    importer: str
    forbidden: tuple[str, ...]
    why: str
    unless: tuple[str, ...] = ()
    only: tuple[str, ...] = ()


# What may import what. docs/architecture.md quotes this table.
RULES = (
    Rule(
        "callcenter",
        ("device_sim",),
        "the server never needs the simulator: the simulator adds its commands "
        "(demo, seed --demo) through the callcenter.commands entry points",
    ),
    Rule(
        "callcenter.domain",
        (),
        "the rules are plain functions over dataclasses: no database, broker, clock "
        "source, configuration or web",
        only=("callcenter.domain",),
    ),
    Rule(
        "callcenter.store",
        (
            "callcenter.app",
            "callcenter.cli",
            "callcenter.engine",
            "callcenter.fake_twilio",
            "callcenter.ingest",
            "callcenter.notify",
            "callcenter.web",
        ),
        "the database's tables and migrations know nothing of who uses them",
    ),
    Rule(
        "callcenter.engine",
        ("callcenter.app", "callcenter.cli", "callcenter.fake_twilio", "callcenter.web"),
        "the desk's services are called by the web, never the other way round",
    ),
    Rule(
        "callcenter.web",
        ("callcenter.app",),
        "handlers get their services through web/state.py's keys, never the running "
        "server; only the web's composition (web/app.py, web/server.py) sees it",
        unless=("callcenter.web.app", "callcenter.web.server"),
    ),
    Rule(
        "callcenter",
        ("callcenter.fake_twilio",),
        "the fake Twilio is started by the composition root (an embedded default, as the "
        "broker is); the rest of the server speaks to Twilio only",
        unless=("callcenter.app", "callcenter.cli", "callcenter.fake_twilio"),
    ),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in TOP_LEVEL:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every module of ours that ``module`` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            names = [source]
            names += [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] in TOP_LEVEL)


IMPORTS = {module: sorted(set(_imported(module, path))) for module, path in MODULES.items()}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _broken(rule: Rule) -> list[str]:
    return [
        f"{importer} imports {imported}"
        for importer, imported_modules in IMPORTS.items()
        if _under(importer, rule.importer)
        and not any(_under(importer, allowed) for allowed in rule.unless)
        for imported in imported_modules
        if any(_under(imported, forbidden) for forbidden in rule.forbidden)
        or (rule.only and not any(_under(imported, allowed) for allowed in rule.only))
    ]


def test_every_module_is_read() -> None:
    """Test that the table is checked against the real tree: both packages and their
    layers are found, and the checker sees imports made inside functions."""
    for package in (
        *TOP_LEVEL,
        "callcenter.domain",
        "callcenter.store",
        "callcenter.engine",
        "callcenter.web",
        "callcenter.fake_twilio",
    ):
        assert any(_under(module, package) for module in MODULES), package
    assert "callcenter.fake_twilio" in IMPORTS["callcenter.cli"]  # imported in a function


def test_no_cycle_between_top_level_packages() -> None:
    """Test that no top-level package imports one that imports it back, directly or
    through others: the simulator depends on the server, never the other way round."""
    edges = {package: set[str]() for package in TOP_LEVEL}
    for importer, imported_modules in IMPORTS.items():
        for imported in imported_modules:
            source, target = importer.split(".")[0], imported.split(".")[0]
            if source != target:
                edges[source].add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for step in edges[start] - seen:
            if step == goal or reaches(step, goal, seen | {step}):
                return True
        return False

    cycles = [package for package in TOP_LEVEL if reaches(package, package, set())]
    assert cycles == [], f"import cycle through {cycles}: {edges}"


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: f"{rule.importer}:{rule.why[:24]}")
def test_layers_import_only_what_they_may(rule: Rule) -> None:
    """Test that each rule of the table holds for every module it covers."""
    assert _broken(rule) == [], rule.why


def test_a_server_starts_without_importing_what_only_rare_work_needs() -> None:
    """Test that importing the server does not import openpyxl (the register's
    workbooks), which costs about a second of every start, restart and takeover."""
    found = subprocess.run(
        [sys.executable, "-c", "import sys, callcenter.app; print('openpyxl' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert found.stdout.strip() == "False"
