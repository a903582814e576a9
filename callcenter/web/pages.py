"""The board's pages and their files, for signed-in operators only.

Someone not signed in sees nothing but the sign-in page (and its style sheet): ``/``,
``/board`` and every file under ``/static/`` send them to ``/login``. Files come from the
pages (``dashboards/``, found by assets.py) and, under ``/static/vendor/<package>/``, from
the dist/ of an npm package the pages load (Leaflet, Leaflet.markercluster) as npm
installed it (``dashboards/node_modules/<package>/dist``), never from anywhere else on
disk.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from callcenter.store import models as m
from callcenter.web import sessions
from callcenter.web.assets import BOARD_PAGE, LOGIN_STYLE, PAGES, VENDOR

# Our own files: everything under dashboards/ except what npm put there and the package's
# own Python.
_NOT_SERVED = frozenset({"node_modules", "__init__.py", "__pycache__"})

routes = web.RouteTableDef()


async def _require_sign_in(request: web.Request) -> None:
    if await sessions.session_of(request) is None:
        raise web.HTTPSeeOther(sessions.LOGIN_PATH)


def _within(root: Path, relative: str) -> Path:
    """``relative`` under ``root``, or 404: no way out of it (``..``, absolute paths), and
    no name the file system refuses (a NUL byte, a name too long) gets further."""
    try:
        wanted = (root / relative).resolve()
        found = wanted.is_relative_to(root.resolve()) and wanted.is_file()
    except (ValueError, OSError):
        found = False
    if not found:
        raise web.HTTPNotFound(text="no such file")
    return wanted


def refused_page(text: str) -> web.Response:
    """A 403 page for a signed-in person whose role may not open a page: ``text`` says
    why (in both languages), with a link back to the board."""
    return web.Response(
        status=403,
        content_type="text/html",
        charset="utf-8",
        text=(
            '<!doctype html><html><head><meta charset="utf-8"><title>403</title></head>'
            f"<body><p>{html.escape(text)}</p>"
            f'<p><a href="{sessions.HOME_PATH}">Board / 值班台</a></p></body></html>'
        ),
    )


async def page_for_role(
    request: web.Request, page: Path, least: m.OperatorRole, refusal: str
) -> web.StreamResponse:
    """A page for signed-in people of ``least`` role or above: someone not signed in goes
    to the sign-in page, anyone else gets a 403 page saying ``refusal`` after their
    username (in both languages)."""
    signed_in = await sessions.session_of(request)
    if signed_in is None:
        raise web.HTTPSeeOther(sessions.LOGIN_PATH)
    operator = signed_in.operator
    if m.ROLE_RANK[m.OperatorRole(operator.role)] < m.ROLE_RANK[least]:
        return refused_page(f"{operator.username}: {refusal}")
    return file_response(_present(page))


def _present(page: Path) -> Path:
    """``page``, or 404 saying it is missing (an install without the pages' files)."""
    if not page.is_file():
        raise web.HTTPNotFound(text=f"the page is missing: {page}")
    return page


def file_response(path: Path) -> web.FileResponse:
    """One of our page files, never cached stale (headers.py adds what every answer
    carries: nosniff, no framing)."""
    response = web.FileResponse(path)
    # The board is worked for hours: a new version must reach it on the next reload.
    response.headers["Cache-Control"] = "no-cache"
    return response


def listed_file(request: web.Request, folder: Path, listed: frozenset[str]) -> web.FileResponse:
    """The page file the route's ``{name}`` asks for, when ``listed`` (a page's own script
    and style) holds it; 404 for any other name."""
    name = request.match_info["name"]
    if name not in listed:
        raise web.HTTPNotFound(text=f"no such file: {name}")
    return file_response(folder / name)


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(sessions.HOME_PATH)


@routes.get(sessions.HOME_PATH)
async def board(request: web.Request) -> web.StreamResponse:
    """The live call board."""
    await _require_sign_in(request)
    if not BOARD_PAGE.is_file():
        raise web.HTTPNotFound(text=f"the board's page is missing: {BOARD_PAGE}")
    return file_response(BOARD_PAGE)


@routes.get("/login/static/login.css")
async def login_style(request: web.Request) -> web.StreamResponse:
    """The sign-in page's style sheet."""
    return file_response(LOGIN_STYLE)


@routes.get("/static/vendor/{package}/{path:.+}")
async def vendor(request: web.Request) -> web.StreamResponse:
    """An npm package's own files (Leaflet, Leaflet.markercluster), as npm installed them
    (scripts/dev setup); 404 for a package the pages do not load."""
    await _require_sign_in(request)
    package = request.match_info["package"]
    if package not in VENDOR:
        raise web.HTTPNotFound(text=f"no such package: {package}")
    return file_response(_within(VENDOR[package], request.match_info["path"]))


@routes.get("/static/{path:.+}")
async def static(request: web.Request) -> web.StreamResponse:
    """The board's scripts, styles and sounds from dashboards/."""
    await _require_sign_in(request)
    relative = request.match_info["path"]
    if relative.split("/", 1)[0] in _NOT_SERVED:
        raise web.HTTPNotFound(text=f"no such file: {relative}")
    return file_response(_within(PAGES, relative))
