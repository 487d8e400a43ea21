"""``/api/v1/sites`` and ``/api/v1/courtrooms``: the places hearings are booked into and joined from.

Creating needs an admin key, listing a clerk key; every creation leaves an
audit event in the ``system`` stream.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from rooms.model import Courtroom, Site, new_id
from rooms.store import Trace
from signaling.config import KeyScope
from signaling.keys import PRINCIPAL_KEY, STORE_KEY
from signaling.routing import ROUTES_KEY, RouteSpec, read_body, respond
from signaling.schemas import CourtroomCreate, CourtroomList, SiteCreate, SiteList

API = "/api/v1"
log = structlog.get_logger("signaling.rest")


async def create_site(request: web.Request) -> web.StreamResponse:
    """Create a site (court, detention center, ...)."""
    body = await read_body(request, SiteCreate)
    actor = request[PRINCIPAL_KEY].actor
    site = Site(
        id=body.id or new_id("site"),
        name=body.name,
        kind=body.kind,
        region=body.region,
        terminals=body.terminals,
    )
    stored = await request.app[STORE_KEY].create_site(site, Trace(actor, "site_created", site.model_dump(mode="json")))
    log.info("site_created", site_id=stored.id, actor=actor)
    return respond(stored, 201, {"Location": f"{API}/sites/{stored.id}"})


async def list_sites(request: web.Request) -> web.StreamResponse:
    """Every site."""
    sites = await request.app[STORE_KEY].list_sites()
    return respond(SiteList(items=list(sites)))


async def create_courtroom(request: web.Request) -> web.StreamResponse:
    """Create a virtual courtroom at a site."""
    body = await read_body(request, CourtroomCreate)
    actor = request[PRINCIPAL_KEY].actor
    room = Courtroom(id=body.id or new_id("room"), name=body.name, site_id=body.site_id)
    stored = await request.app[STORE_KEY].create_courtroom(
        room, Trace(actor, "courtroom_created", room.model_dump(mode="json"))
    )
    log.info("courtroom_created", courtroom_id=stored.id, actor=actor)
    return respond(stored, 201, {"Location": f"{API}/courtrooms/{stored.id}"})


async def list_courtrooms(request: web.Request) -> web.StreamResponse:
    """Every courtroom."""
    rooms = await request.app[STORE_KEY].list_courtrooms()
    return respond(CourtroomList(items=list(rooms)))


def register(app: web.Application) -> None:
    """Add the site and courtroom routes to ``app``."""
    routes = app[ROUTES_KEY]
    admin, clerk = KeyScope.admin, KeyScope.clerk
    specs = [
        (
            RouteSpec(
                "POST", f"{API}/sites", "Create a site", "createSite", "sites", admin, SiteCreate, None, Site, 201,
                errors=(400, 401, 403, 409, 413, 415, 422),
            ),
            create_site,
        ),
        (
            RouteSpec("GET", f"{API}/sites", "List sites", "listSites", "sites", clerk, response=SiteList,
                      errors=(401,)),
            list_sites,
        ),
        (
            RouteSpec(
                "POST", f"{API}/courtrooms", "Create a virtual courtroom", "createCourtroom", "courtrooms", admin,
                CourtroomCreate, None, Courtroom, 201, errors=(400, 401, 403, 409, 413, 415, 422),
            ),
            create_courtroom,
        ),
        (
            RouteSpec(
                "GET", f"{API}/courtrooms", "List virtual courtrooms", "listCourtrooms", "courtrooms", clerk,
                response=CourtroomList, errors=(401,),
            ),
            list_courtrooms,
        ),
    ]  # fmt: skip
    for spec, handler in specs:
        routes.add(app.router, spec, handler)
