"""The carer routes: who is on shift, who is busy on which call, and where they are."""

from __future__ import annotations

from aiohttp import web

from callcenter.web import views
from callcenter.web.contract import contract
from callcenter.web.responses import json_reply
from callcenter.web.state import DESK

routes = web.RouteTableDef()


@routes.get("/api/carers")
@contract(answers={200: views.CarerList}, tag="carers")
async def list_carers(request: web.Request) -> web.Response:
    """Every active carer: state (off_shift, free, dispatched, on_the_way, on_scene), the
    call they are on, and their last known position."""
    desk = request.app[DESK]
    snapshots = await desk.carer_snapshots()
    registry = await desk.district.registry()
    return json_reply({"carers": views.carers_view(snapshots, registry)})
