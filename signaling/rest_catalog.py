"""``/api/v1/sites`` and ``/api/v1/courtrooms``: the places hearings are booked into and joined from.

Creating and changing need an admin key, listing and a site's link budget a
clerk key; every creation or change leaves an audit event in the ``system``
stream.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from rooms.errors import NotFound
from rooms.link_budget import SiteLinkBudget, booking_budget, site_link
from rooms.model import BOOKABLE_ROLES, Courtroom, Hearing, HearingKind, Participant, Role, Site, new_id
from rooms.store import HearingFilter, Store, Trace
from signaling.config import KeyScope
from signaling.keys import PRINCIPAL_KEY, STORE_KEY
from signaling.problems import Problem
from signaling.routing import ROUTES_KEY, RouteSpec, read_body, read_patch, read_query, respond
from signaling.schemas import (
    CourtroomCreate,
    CourtroomList,
    SiteCreate,
    SiteLinkQuery,
    SiteList,
    SitePatch,
    window_problem,
)

API = "/api/v1"
BOOKABLE_NAMES = frozenset(r.value for r in BOOKABLE_ROLES)
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]+")
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
        link_mbps=body.link_mbps,
    )
    stored = await request.app[STORE_KEY].create_site(site, Trace(actor, "site_created", site.model_dump(mode="json")))
    log.info("site_created", site_id=stored.id, actor=actor)
    return respond(stored, 201, {"Location": f"{API}/sites/{stored.id}"})


async def list_sites(request: web.Request) -> web.StreamResponse:
    """Every site."""
    sites = await request.app[STORE_KEY].list_sites()
    return respond(SiteList(items=list(sites)))


async def patch_site(request: web.Request) -> web.StreamResponse:
    """Change a site's name, region or link; omitted fields stay, ``link_mbps: null`` clears the link."""
    changes = await read_patch(request, SitePatch, nullable=frozenset({"link_mbps"}))
    actor = request[PRINCIPAL_KEY].actor
    site_id = request.match_info["site_id"]

    def mutation(current: Site) -> tuple[Site, Trace]:
        updated = Site.model_validate({**current.model_dump(), **changes})
        before: dict[str, Any] = {k: getattr(current, k) for k in changes}
        return updated, Trace(actor, "site_changed", {"site_id": site_id, "from": before, "to": changes})

    stored = await request.app[STORE_KEY].update_site(site_id, mutation)
    log.info("site_changed", site_id=stored.id, fields=sorted(changes), actor=actor)
    return respond(stored)


async def _hearings_on(store: Store, site_id: str, starts_at: datetime, ends_at: datetime) -> list[Hearing]:
    """The hearings that join ``site_id`` and overlap [starts_at, ends_at) (any state: the domain filters)."""
    return list(await store.list_hearings(HearingFilter(site_id=site_id, starts_from=starts_at, ends_to=ends_at)))


async def site_link_budget(request: web.Request) -> web.StreamResponse:
    """A site's link during a window: the hearings on it and what they are expected to need, before booking."""
    query = read_query(request, SiteLinkQuery)
    problem = window_problem(query.starts_at, query.ends_at)
    if problem is not None:
        raise Problem(
            422,
            "validation_error",
            "Invalid query",
            f"ends_at: {problem}",
            errors=[{"loc": ["ends_at"], "msg": problem, "type": "value_error"}],
        )
    planned = _planned(query) if query.participants is not None else None
    store = request.app[STORE_KEY]
    site = await store.get_site(request.match_info["site_id"])
    hearings = await _hearings_on(store, site.id, query.starts_at, query.ends_at)
    if planned is not None:
        hearings.append(planned)
    return respond(site_link(site, hearings, query.starts_at, query.ends_at))


PLANNED_ID = "new"
"""The id under which ``GET /sites/{id}/link?participants=...`` lists the hearing about to be booked."""

MAX_PLANNED = 200
"""At most this many participants in ``participants`` (as in a booking)."""


def _planned(query: SiteLinkQuery) -> Hearing:
    """The hearing about to be booked, from ``participants`` (``role@site_id,...``); 422 naming a bad entry."""
    entries = [e.strip() for e in (query.participants or "").split(",") if e.strip()]

    def refuse(msg: str) -> Problem:
        return Problem(
            422,
            "validation_error",
            "Invalid query",
            f"participants: {msg}",
            errors=[{"loc": ["participants"], "msg": msg, "type": "value_error"}],
        )

    if len(entries) > MAX_PLANNED:
        raise refuse(f"at most {MAX_PLANNED} participants")
    people: list[Participant] = []
    for i, entry in enumerate(entries):
        role_name, at, site_id = entry.partition("@")
        if not at or role_name not in BOOKABLE_NAMES or not IDENTIFIER.fullmatch(site_id) or len(site_id) > 64:
            raise refuse(f"entry {i} ({entry[:80]!r}) is not role@site_id with a bookable role and a site id")
        people.append(
            Participant(id=f"new{i}", name=f"new{i}", role=Role(role_name), site_id=site_id, identity=f"new{i}")
        )
    return Hearing(
        id=PLANNED_ID,
        case_number=PLANNED_ID,
        kind=HearingKind.trial,
        courtroom_id=PLANNED_ID,
        starts_at=query.starts_at,
        ends_at=query.ends_at,
        participants=tuple(people),
    )


async def link_budget_of(request: web.Request, hearing: Hearing) -> list[SiteLinkBudget]:
    """The link budget of each of ``hearing``'s sites that declares a link, for a booking's answer.

    Read after the booking is stored: the figures are a warning, so a failure here is logged and the answer
    carries no budget rather than turning a stored booking into an error.
    """
    store = request.app[STORE_KEY]
    try:
        sites: dict[str, Site] = {}
        around: dict[str, Hearing] = {}
        for site_id in sorted(hearing.site_ids()):
            try:
                site = await store.get_site(site_id)
            except NotFound:
                continue
            if site.link_mbps is None:
                continue
            sites[site_id] = site
            for h in await _hearings_on(store, site_id, hearing.starts_at, hearing.ends_at):
                around[h.id] = h
        budget = booking_budget(hearing, sites, around.values())
    except Exception:
        log.exception("link_budget_failed", hearing_id=hearing.id)
        return []
    for entry in budget:
        if entry.over:
            log.info(
                "site_link_over_budget",
                hearing_id=hearing.id,
                site_id=entry.site_id,
                link_mbps=entry.link_mbps,
                expected_mbps=entry.expected_mbps,
            )
    return budget


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
                "PATCH", f"{API}/sites/{{site_id}}", "Change a site's name, region or link", "patchSite", "sites",
                admin, SitePatch, None, Site, errors=(400, 401, 403, 404, 413, 415, 422),
            ),
            patch_site,
        ),
        (
            RouteSpec(
                "GET", f"{API}/sites/{{site_id}}/link", "A site's link budget during a window", "siteLinkBudget",
                "sites", clerk, None, SiteLinkQuery, SiteLinkBudget, errors=(401, 404, 422),
            ),
            site_link_budget,
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
