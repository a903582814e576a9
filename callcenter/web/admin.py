"""The administration page (dashboards/admin/): the register kept by hand, and the audit.

Administrators keep households with their residents, contacts and numbers, devices,
stations and carers, and read the audit; supervisors keep the escalation policies (and
the rota). The page is served to both; it shows each only the tabs their role may use,
and the API (web/register.py, web/audit.py) refuses the rest whatever the page shows. An
operator is told why not; someone not signed in goes to the sign-in page.
"""

from __future__ import annotations

from aiohttp import web

from callcenter.store import models as m
from callcenter.web.assets import ADMIN_PAGE
from callcenter.web.pages import page_for_role

ADMIN_PATH = "/admin"

routes = web.RouteTableDef()


@routes.get(ADMIN_PATH)
async def admin_page(request: web.Request) -> web.StreamResponse:
    """The administration page, for signed-in administrators and supervisors."""
    return await page_for_role(
        request,
        ADMIN_PAGE,
        m.OperatorRole.SUPERVISOR,
        "the administration page is for administrators and supervisors. "
        "管理页面仅供管理员和值班主管使用。",
    )
