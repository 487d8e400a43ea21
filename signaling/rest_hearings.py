"""``/api/v1/hearings``: book, list, read, reschedule, cancel, manage participants and their links.

Every change goes through the store's atomic ``book`` or ``mutate_hearing``,
so conflicts are checked and the audit event (actor ``key:<name>``, in the
hearing's own stream) is written in the same step as the change, or neither is.
Mutations given to the store are pure: fresh ids are drawn before the call.
After a change the hearing's live room (if this process has one) follows it
at once: removed participants and reissued links are disconnected, a
cancelled hearing ends its session (:meth:`SessionHub.hearing_changed`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

import structlog
from aiohttp import web
from pydantic import Field

from protocol.cluster import Placement
from rooms import lifecycle
from rooms.audit import verify_chain
from rooms.errors import Collision, DomainError, InvalidTransition, NotFound, ScheduleConflict
from rooms.model import (
    CLIENT_ROLES,
    PRESIDING_ROLES,
    Courtroom,
    Hearing,
    HearingState,
    Participant,
    Role,
    identity_of,
    new_id,
)
from rooms.store import HearingFilter, Trace
from signaling.config import KeyScope
from signaling.ics import CONTENT_TYPE as ICS_CONTENT_TYPE
from signaling.ics import hearing_calendar
from signaling.keys import CONFIG_KEY, METRICS_KEY, PRINCIPAL_KEY, STORE_KEY, TOKENS_KEY
from signaling.problems import Problem, invalid_field
from signaling.rest_catalog import link_budget_of
from signaling.routing import ROUTES_KEY, RouteSpec, read_body, read_patch, read_query, respond
from signaling.schemas import (
    AddedParticipant,
    AuditLog,
    BookedHearing,
    ChainVerification,
    HearingChanged,
    HearingCreate,
    HearingList,
    HearingPatch,
    HearingQuery,
    HearingView,
    ParticipantAdd,
    ParticipantFields,
    ParticipantLink,
    ParticipantView,
    window_problem,
)
from signaling.ws import HUB_KEY

API = "/api/v1"


class PlacementReader(Protocol):
    """Where the hearing details read a hearing's home media node (``signaling.node_pool.NodePool``)."""

    async def placement(self, hearing_id: str) -> Placement | None:
        """The hearing's placement, or None while it has no home node."""
        ...


PLACEMENTS_KEY = web.AppKey("placements", PlacementReader)
"""Set by the wiring when hearings are placed on media nodes; without it the details show ``placement`` null."""


class HearingDetails(HearingView):
    """Answer of ``GET /hearings/{id}``: the hearing, and where its media runs."""

    placement: Placement | None = Field(
        default=None,
        description="The hearing's home media node (node id, region, why it was chosen, when, the node a failover "
        "moved it from); null while its live room needs no media node.",
    )


log = structlog.get_logger("signaling.rest")


def _participant(body: ParticipantFields, represents: tuple[str, ...] = ()) -> Participant:
    return Participant(
        id=new_id("prt"),
        name=body.name,
        role=body.role,
        site_id=body.site_id,
        identity=body.identity or identity_of(body.name, body.site_id),
        token_id=new_id("tok"),
        represents=represents,
        presiding=body.presiding,
    )


def _participant_data(p: Participant) -> dict[str, Any]:
    # Audit data names who was booked; the token id stays out of the log.
    data: dict[str, Any] = {"id": p.id, "name": p.name, "role": p.role.value, "site_id": p.site_id}
    data["identity"] = p.identity
    if p.represents:
        data["represents"] = list(p.represents)
    if p.presiding:
        data["presiding"] = True
    return data


def _check_roles(loc: list[str | int], body: ParticipantFields, represents: int) -> None:
    """Only counsel represents; only a judge or a chair presides (422 naming the field otherwise)."""
    if represents and body.role is not Role.counsel:
        raise invalid_field([*loc, "represents"], f"only counsel may represent other participants, not a {body.role}")
    if body.presiding and body.role not in PRESIDING_ROLES:
        raise invalid_field([*loc, "presiding"], f"only a judge or a chair may preside, not a {body.role}")


def _client_problem(role: Role | None, ref: str) -> str | None:
    """Why the participant ``ref`` (of ``role``, None when there is none) cannot be represented by counsel."""
    if role is None:
        return f"{ref} is not a participant of this hearing"
    if role not in CLIENT_ROLES:
        return f"{ref} is a {role.value}; counsel represents only a defendant or a party"
    return None


def _booked_participants(body: HearingCreate) -> list[Participant]:
    """The participants of a booking request, with ``represents`` indexes turned into participant ids."""
    ids = [new_id("prt") for _ in body.participants]
    out: list[Participant] = []
    for index, p in enumerate(body.participants):
        loc: list[str | int] = ["participants", index]
        _check_roles(loc, p, len(p.represents))
        for k, j in enumerate(p.represents):
            role = body.participants[j].role if j < len(body.participants) else None
            problem = _client_problem(role, f"participant {j}")
            if problem is not None:
                raise invalid_field([*loc, "represents", k], problem)
        represents = tuple(dict.fromkeys(ids[j] for j in p.represents))
        out.append(_participant(p, represents).model_copy(update={"id": ids[index]}))
    presiding = [i for i, p in enumerate(body.participants) if p.presiding]
    if len(presiding) > 1:
        raise invalid_field(["participants", presiding[1], "presiding"], "only one participant may preside")
    return out


def _base_url(request: web.Request) -> str:
    configured = request.app[CONFIG_KEY].public_base_url
    return configured if configured else f"{request.scheme}://{request.host}"


def _link(request: web.Request, hearing: Hearing, participant: Participant) -> ParticipantLink:
    token = request.app[TOKENS_KEY].issue(hearing, participant)
    return ParticipantLink(
        **ParticipantView.of(participant, presiding=participant.id == hearing.presiding_id).model_dump(),
        join_url=f"{_base_url(request)}/join?t={token}",
        token=token,
    )


def _editable(hearing: Hearing, what: str) -> None:
    if not lifecycle.is_editable(hearing.state):
        raise InvalidTransition(f"cannot {what} a hearing that is {hearing.state.value}")


def _hearing_id(request: web.Request) -> str:
    return request.match_info["hearing_id"]


async def _live_room_follows(request: web.Request, stored: Hearing) -> None:
    """Tell the WebSocket hub (when the app has one) that ``stored`` changed; the change is stored either way."""
    hub = request.app.get(HUB_KEY)
    if hub is None:
        return
    if hub.owners is not None:
        # Several signaling processes: the room's owner may be another one; it refreshes from the store.
        try:
            await hub.owners.publish_changed(stored, actor=request[PRINCIPAL_KEY].actor)
        except Exception:
            log.exception("hearing_change_publish_failed", hearing_id=stored.id)
    try:
        await hub.hearing_changed(stored, actor=request[PRINCIPAL_KEY].actor)
    except Exception:
        # The booking change is stored and audited; a failure of the live room must not turn it into a 500.
        log.exception("live_room_refresh_failed", hearing_id=stored.id)


async def book_hearing(request: web.Request) -> web.StreamResponse:
    """Book a hearing: conflicts are checked atomically; 201 with one join link per participant."""
    metrics = request.app[METRICS_KEY]
    try:
        body = await read_body(request, HearingCreate)
    except Problem:
        metrics.bookings.labels("invalid").inc()
        raise
    identities: dict[str, int] = {}
    try:
        participants = _booked_participants(body)
    except Problem:
        metrics.bookings.labels("invalid").inc()
        raise
    for index, p in enumerate(participants):
        if p.identity in identities:
            metrics.bookings.labels("invalid").inc()
            raise invalid_field(
                ["participants", index],
                f"{p.name} ({p.identity}) is booked twice; participant {identities[p.identity]} is the same person",
            )
        identities[p.identity] = index
    hearing = Hearing(
        id=new_id("hrg"),
        case_number=body.case_number,
        title=body.title,
        kind=body.kind,
        courtroom_id=body.courtroom_id,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        participants=tuple(participants),
    )
    actor = request[PRINCIPAL_KEY].actor
    data = {
        "case_number": hearing.case_number,
        "title": hearing.title,
        "kind": hearing.kind.value,
        "courtroom_id": hearing.courtroom_id,
        "starts_at": hearing.starts_at.isoformat(),
        "ends_at": hearing.ends_at.isoformat(),
        "participants": [_participant_data(p) for p in participants],
    }
    try:
        stored = await request.app[STORE_KEY].book(hearing, Trace(actor, "hearing_booked", data))
    except ScheduleConflict:
        metrics.bookings.labels("conflict").inc()
        raise
    except DomainError:
        metrics.bookings.labels("invalid").inc()
        raise
    metrics.bookings.labels("booked").inc()
    log.info("hearing_booked", hearing_id=stored.id, courtroom_id=stored.courtroom_id, actor=actor)
    view = HearingView.of(stored)
    booked = BookedHearing(
        **view.model_dump(exclude={"participants"}),
        participants=[_link(request, stored, p) for p in stored.participants],
        link_budget=await link_budget_of(request, stored),
    )
    return respond(booked, 201, {"Location": f"{API}/hearings/{stored.id}"})


async def list_hearings(request: web.Request) -> web.StreamResponse:
    """Hearings filtered by courtroom, site and window."""
    query = read_query(request, HearingQuery)
    if query.starts_from is not None and query.ends_to is not None and query.ends_to <= query.starts_from:
        raise Problem(
            422,
            "validation_error",
            "Invalid query",
            "to: must be after from",
            errors=[{"loc": ["to"], "msg": "must be after from", "type": "value_error"}],
        )
    flt = HearingFilter(
        courtroom_id=query.courtroom_id,
        site_id=query.site_id,
        starts_from=query.starts_from,
        ends_to=query.ends_to,
        limit=query.limit,
    )
    hearings = await request.app[STORE_KEY].list_hearings(flt)
    return respond(HearingList(items=[HearingView.of(h) for h in hearings]))


async def get_hearing(request: web.Request) -> web.StreamResponse:
    """One hearing."""
    hearing = await request.app[STORE_KEY].get_hearing(_hearing_id(request))
    placements = request.app.get(PLACEMENTS_KEY)
    placement = await placements.placement(hearing.id) if placements is not None else None
    return respond(HearingDetails.of(hearing).model_copy(update={"placement": placement}))


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return value.value if isinstance(value, Enum) else value


async def patch_hearing(request: web.Request) -> web.StreamResponse:
    """Reschedule or edit: the changed hearing is re-checked for conflicts; nothing changes on refusal."""
    changes = await read_patch(request, HearingPatch)
    actor = request[PRINCIPAL_KEY].actor

    def mutation(current: Hearing) -> tuple[Hearing, Trace]:
        _editable(current, "edit")
        starts = changes.get("starts_at", current.starts_at)
        ends = changes.get("ends_at", current.ends_at)
        if ends <= starts:
            field = "ends_at" if "ends_at" in changes else "starts_at"
            raise invalid_field([field], f"ends_at ({ends.isoformat()}) must be after starts_at ({starts.isoformat()})")
        too_long = window_problem(starts, ends)
        if too_long is not None:
            raise invalid_field(["ends_at" if "ends_at" in changes else "starts_at"], too_long)
        updated = Hearing.model_validate({**current.model_dump(), **changes})
        before = {k: _json_value(getattr(current, k)) for k in changes}
        after = {k: _json_value(v) for k, v in changes.items()}
        moved = any(k in changes for k in ("starts_at", "ends_at", "courtroom_id"))
        return updated, Trace(
            actor, "hearing_rescheduled" if moved else "hearing_edited", {"from": before, "to": after}
        )

    stored = await request.app[STORE_KEY].mutate_hearing(_hearing_id(request), mutation)
    request.app[METRICS_KEY].hearing_changes.labels("edit").inc()
    log.info("hearing_changed", hearing_id=stored.id, fields=sorted(changes), actor=actor)
    await _live_room_follows(request, stored)
    changed = HearingChanged(**HearingView.of(stored).model_dump(), link_budget=await link_budget_of(request, stored))
    return respond(changed)


async def cancel_hearing(request: web.Request) -> web.StreamResponse:
    """Cancel: the hearing stops blocking its courtroom, sites and people; its links stop working."""
    actor = request[PRINCIPAL_KEY].actor

    def mutation(current: Hearing) -> tuple[Hearing, Trace]:
        state = lifecycle.cancel(current.state)
        return current.model_copy(update={"state": state}), Trace(
            actor, "hearing_cancelled", {"from_state": current.state.value}
        )

    stored = await request.app[STORE_KEY].mutate_hearing(_hearing_id(request), mutation)
    request.app[METRICS_KEY].hearing_changes.labels("cancel").inc()
    log.info("hearing_cancelled", hearing_id=stored.id, actor=actor)
    await _live_room_follows(request, stored)
    return respond(HearingView.of(stored))


async def add_participant(request: web.Request) -> web.StreamResponse:
    """Add a participant (conflicts re-checked); 201 with their join link."""
    body = await read_body(request, ParticipantAdd)
    _check_roles([], body, len(body.represents))
    newcomer = _participant(body, tuple(dict.fromkeys(body.represents)))
    actor = request[PRINCIPAL_KEY].actor

    def mutation(current: Hearing) -> tuple[Hearing, Trace]:
        _editable(current, "add participants to")
        for k, client_id in enumerate(body.represents):
            client = current.participant(client_id)
            problem = _client_problem(client.role if client is not None else None, repr(client_id))
            if problem is not None:
                raise invalid_field(["represents", k], problem)
        if newcomer.presiding and any(p.presiding for p in current.participants):
            raise invalid_field(["presiding"], "another participant presides over this hearing already")
        twin = next((p for p in current.participants if p.identity == newcomer.identity), None)
        if twin is not None:
            raise ScheduleConflict(
                [
                    Collision(
                        "participant",
                        current.id,
                        f"{newcomer.name} ({newcomer.identity}) is already in hearing {current.id!r} as {twin.id!r}",
                        newcomer.identity,
                    )
                ]
            )
        updated = current.model_copy(update={"participants": (*current.participants, newcomer)})
        return updated, Trace(actor, "participant_added", _participant_data(newcomer))

    stored = await request.app[STORE_KEY].mutate_hearing(_hearing_id(request), mutation)
    request.app[METRICS_KEY].hearing_changes.labels("add_participant").inc()
    log.info("participant_added", hearing_id=stored.id, participant_id=newcomer.id, actor=actor)
    await _live_room_follows(request, stored)
    stored_newcomer = stored.participant(newcomer.id) or newcomer
    link = _link(request, stored, stored_newcomer)
    added = AddedParticipant(**link.model_dump(), link_budget=await link_budget_of(request, stored))
    return respond(added, 201, {"Location": f"{API}/hearings/{stored.id}/participants/{newcomer.id}"})


async def remove_participant(request: web.Request) -> web.StreamResponse:
    """Remove a participant; their link stops working."""
    pid = request.match_info["participant_id"]
    actor = request[PRINCIPAL_KEY].actor

    def mutation(current: Hearing) -> tuple[Hearing, Trace]:
        gone = current.participant(pid)
        if gone is None:
            raise NotFound("participant", pid)
        _editable(current, "remove participants from")
        # Counsel no longer represent someone who is not in the hearing.
        rest = tuple(
            p.model_copy(update={"represents": tuple(c for c in p.represents if c != pid)})
            if pid in p.represents
            else p
            for p in current.participants
            if p.id != pid
        )
        return current.model_copy(update={"participants": rest}), Trace(
            actor, "participant_removed", _participant_data(gone)
        )

    stored = await request.app[STORE_KEY].mutate_hearing(_hearing_id(request), mutation)
    request.app[METRICS_KEY].hearing_changes.labels("remove_participant").inc()
    log.info("participant_removed", hearing_id=stored.id, participant_id=pid, actor=actor)
    await _live_room_follows(request, stored)
    return respond(HearingView.of(stored))


async def reissue_link(request: web.Request) -> web.StreamResponse:
    """Issue a new join link; every earlier link of this participant stops working."""
    pid = request.match_info["participant_id"]
    token_id = new_id("tok")
    actor = request[PRINCIPAL_KEY].actor

    def mutation(current: Hearing) -> tuple[Hearing, Trace]:
        target = current.participant(pid)
        if target is None:
            raise NotFound("participant", pid)
        if current.state in (HearingState.cancelled, HearingState.adjourned):
            raise InvalidTransition(f"cannot issue a join link for a hearing that is {current.state.value}")
        fresh = target.model_copy(update={"token_id": token_id})
        participants = tuple(fresh if p.id == pid else p for p in current.participants)
        return current.model_copy(update={"participants": participants}), Trace(
            actor, "participant_link_reissued", {"participant_id": pid}
        )

    stored = await request.app[STORE_KEY].mutate_hearing(_hearing_id(request), mutation)
    request.app[METRICS_KEY].hearing_changes.labels("reissue_link").inc()
    log.info("participant_link_reissued", hearing_id=stored.id, participant_id=pid, actor=actor)
    await _live_room_follows(request, stored)
    participant = stored.participant(pid)
    if participant is None:  # the mutation above guarantees it; keep mypy and the reader honest
        raise NotFound("participant", pid)
    return respond(_link(request, stored, participant))


async def hearing_audit(request: web.Request) -> web.StreamResponse:
    """The hearing's hash-chained audit log and whether it verifies."""
    store = request.app[STORE_KEY]
    hearing = await store.get_hearing(_hearing_id(request))
    events = list(await store.audit_log(hearing.id))
    # Hashing the whole log is CPU work: off the event loop so other requests keep being served.
    broken = await asyncio.to_thread(verify_chain, events)
    verified = (
        ChainVerification(ok=True)
        if broken is None
        else ChainVerification(ok=False, first_bad_seq=broken.seq, reason=broken.reason)
    )
    return respond(AuditLog(stream=hearing.id, events=events, verified=verified))


async def hearing_calendar_ics(request: web.Request) -> web.StreamResponse:
    """The booking as an iCalendar event."""
    store = request.app[STORE_KEY]
    hearing = await store.get_hearing(_hearing_id(request))
    courtroom: Courtroom | None
    try:
        courtroom = await store.get_courtroom(hearing.courtroom_id)
    except NotFound:
        courtroom = None
    return web.Response(
        body=hearing_calendar(hearing, courtroom),
        content_type=ICS_CONTENT_TYPE,
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{hearing.id}.ics"'},
    )


def register(app: web.Application) -> None:
    """Add the hearing routes to ``app``."""
    routes = app[ROUTES_KEY]
    clerk = KeyScope.clerk
    one = f"{API}/hearings/{{hearing_id}}"
    who = f"{one}/participants/{{participant_id}}"
    body_errors = (400, 401, 403, 404, 409, 413, 415, 422)
    specs = [
        (RouteSpec("POST", f"{API}/hearings", "Book a hearing", "bookHearing", "hearings", clerk, HearingCreate, None,
                   BookedHearing, 201, errors=(400, 401, 403, 409, 413, 415, 422)), book_hearing),
        (RouteSpec("GET", f"{API}/hearings", "List hearings", "listHearings", "hearings", clerk, None, HearingQuery,
                   HearingList, errors=(401, 422)), list_hearings),
        (RouteSpec("GET", one, "Read a hearing", "getHearing", "hearings", clerk, response=HearingDetails,
                   errors=(401, 404)), get_hearing),
        (RouteSpec("PATCH", one, "Reschedule or edit a hearing", "patchHearing", "hearings", clerk, HearingPatch,
                   None, HearingChanged, errors=body_errors), patch_hearing),
        (RouteSpec("DELETE", one, "Cancel a hearing", "cancelHearing", "hearings", clerk, response=HearingView,
                   errors=(401, 404, 409)), cancel_hearing),
        (RouteSpec("POST", f"{one}/participants", "Add a participant", "addParticipant", "participants", clerk,
                   ParticipantAdd, None, AddedParticipant, 201, errors=body_errors), add_participant),
        (RouteSpec("DELETE", who, "Remove a participant", "removeParticipant", "participants", clerk,
                   response=HearingView, errors=(401, 404, 409)),
         remove_participant),
        (RouteSpec("POST", f"{who}/link", "Reissue a join link (the old one stops working)", "reissueLink",
                   "participants", clerk, response=ParticipantLink, errors=(401, 404, 409)), reissue_link),
        (RouteSpec("GET", f"{one}/audit", "The hearing's audit log, verified", "hearingAudit", "hearings", clerk,
                   response=AuditLog, errors=(401, 404)), hearing_audit),
        (RouteSpec("GET", f"{one}/calendar.ics", "The booking as an iCalendar event", "hearingCalendar", "hearings",
                   clerk, content_type=ICS_CONTENT_TYPE, errors=(401, 404)),
         hearing_calendar_ics),
    ]  # fmt: skip
    for spec, handler in specs:
        routes.add(app.router, spec, handler)
