"""The wallboard (dashboards/wall/): the day's service levels against their targets and
the desk's load right now, in type large enough to read across the room.

It is the supervisors' screen, like the reports: served to signed-in supervisors and
administrators; an operator is told why not (their own board shows them every call). The
page reads nothing of its own: it follows the board's feed (``/api/board/feed``), whose
snapshot carries the service levels of ``GET /api/service-levels``, so the figures on the
wall are the board's, computed in one place (web/service_levels.py over
domain/response_times.py).
"""

from __future__ import annotations

from aiohttp import web

from callcenter.store import models as m
from callcenter.web.assets import WALL_PAGE
from callcenter.web.pages import page_for_role

WALL_PATH = "/wall"

routes = web.RouteTableDef()


@routes.get(WALL_PATH)
async def wall_page(request: web.Request) -> web.StreamResponse:
    """The wallboard, for signed-in supervisors and administrators; others see why not,
    someone not signed in goes to the sign-in page."""
    return await page_for_role(
        request,
        WALL_PAGE,
        m.OperatorRole.SUPERVISOR,
        "the wallboard is for supervisors and administrators; "
        "your board shows every call. 大屏仅供主管和管理员使用，您的值班台上有全部呼叫。",
    )
