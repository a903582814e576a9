"""Where the page files lie, for every module that serves one.

The pages are the package ``callcenter.dashboards``: ``dashboards/`` at the top of the
repository, mapped into the package by setup.py, with the Leaflet npm installed there. They
are found through importlib.resources, so a checkout, an editable install and a wheel
installed anywhere serve the same files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _pages() -> Path:
    try:
        found = resources.files("callcenter.dashboards")
    except ModuleNotFoundError:
        # An editable install made before setup.py mapped dashboards/ does not know it.
        raise RuntimeError(
            "the pages (package callcenter.dashboards) are not installed: "
            "reinstall the project (scripts/dev setup, or pip install -e .)"
        ) from None
    # aiohttp sends a page from a file on disk: pip installs packages as files, and a
    # zipped copy could not be served.
    if not isinstance(found, Path):
        raise RuntimeError(f"the pages must be files on disk, found {found!r}")
    return found


PAGES = _pages()
LOGIN_PAGE = PAGES / "login.html"
# The sign-in page's style, for people not signed in yet.
LOGIN_STYLE = PAGES / "login.css"
BOARD_PAGE = PAGES / "board" / "index.html"
REPORTS_PAGE = PAGES / "reports" / "index.html"
WALL_PAGE = PAGES / "wall" / "index.html"
ADMIN_PAGE = PAGES / "admin" / "index.html"
CARER_PAGES = PAGES / "carer"
FAMILY_PAGES = PAGES / "family"
# Leaflet as npm installed it (scripts/dev setup); a wheel carries its dist/.
LEAFLET = PAGES / "node_modules" / "leaflet" / "dist"
# Leaflet.markercluster (the board's map groups calls when zoomed out), the same way.
MARKERCLUSTER = PAGES / "node_modules" / "leaflet.markercluster" / "dist"
# What /static/vendor/<name>/ serves: each npm package's dist/, by the name it has there.
VENDOR = {"leaflet": LEAFLET, "leaflet.markercluster": MARKERCLUSTER}
