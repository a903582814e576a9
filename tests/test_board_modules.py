"""The board's ES modules as the browser loads them, without a build step: every import
is a relative path to a file the server serves from the same folder, every module is
reached from board.js, and the imports go one way (board.js wires; nothing imports it,
and no two modules import each other round a circle). See docs/board.md, "Files"."""

from __future__ import annotations

import re

from callcenter.web.assets import PAGES

BOARD = PAGES / "board"
WIRING = "board.js"
# `import { a, b } from "./x.js";` and `import "./x.js";`, each at the start of a line.
_IMPORT = re.compile(r'^import\s+(?:[^;"]*?\sfrom\s+)?"([^"]+)";', re.MULTILINE)


def _imports() -> dict[str, list[str]]:
    return {
        path.name: _IMPORT.findall(path.read_text(encoding="utf-8"))
        for path in sorted(BOARD.glob("*.js"))
    }


def test_every_import_is_a_file_beside_it_and_every_module_is_loaded() -> None:
    """Test that each module imports only "./<file>.js" files present in dashboards/board/
    (the browser asks /static/board/<file>, nothing is bundled) and that every module
    there is reached from board.js, the one the page loads."""
    imports = _imports()
    for module, specifiers in imports.items():
        for specifier in specifiers:
            assert specifier.startswith("./"), f"{module} imports {specifier!r}"
            assert specifier[2:] in imports, f"{module} imports {specifier}, not in {BOARD}"
    reached, waiting = set(), [WIRING]
    while waiting:
        module = waiting.pop()
        if module not in reached:
            reached.add(module)
            waiting.extend(specifier[2:] for specifier in imports[module])
    assert reached == set(imports), f"not loaded by the board: {set(imports) - reached}"


def test_imports_go_one_way_from_the_wiring_down() -> None:
    """Test that no module imports board.js and that no module reaches itself through
    its imports."""
    imports = {module: [s[2:] for s in specifiers] for module, specifiers in _imports().items()}
    for module, needs in imports.items():
        assert WIRING not in needs, f"{module} imports the wiring ({WIRING})"

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for need in imports[start]:
            if need == target or (need not in seen and reaches(need, target, seen | {need})):
                return True
        return False

    circles = [module for module in imports if reaches(module, module, {module})]
    assert circles == [], f"modules that import themselves round a circle: {circles}"


ADMIN = PAGES / "admin"


def test_the_administration_pages_modules_load_from_beside_it_or_the_boards() -> None:
    """Test that each module of dashboards/admin/ imports only "./<file>.js" beside it or
    "../board/<file>.js" (the board's api, dom, i18n and others, served as
    /static/board/<file>), that every such file exists, that every admin module is
    reached from admin.js, and that no board module imports the admin page's."""
    imports = {
        path.name: _IMPORT.findall(path.read_text(encoding="utf-8"))
        for path in sorted(ADMIN.glob("*.js"))
    }
    for module, specifiers in imports.items():
        for specifier in specifiers:
            folder, _, name = specifier.rpartition("/")
            assert folder in (".", "../board"), f"{module} imports {specifier!r}"
            where = ADMIN if folder == "." else BOARD
            assert (where / name).is_file(), f"{module} imports {specifier}, not in {where}"
    reached, waiting = set(), ["admin.js"]
    while waiting:
        module = waiting.pop()
        if module not in reached:
            reached.add(module)
            waiting.extend(s[2:] for s in imports[module] if s.startswith("./"))
    assert reached == set(imports), f"not loaded by admin.js: {set(imports) - reached}"
    for module, specifiers in _imports().items():
        assert not any("admin" in s for s in specifiers), f"board/{module} imports {specifiers}"
