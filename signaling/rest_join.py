"""``POST /api/v1/join/info``: what a join link is for, shown on the device-check page before joining.

The join token carries ids only (names stay out of URLs); the page asks here,
with the token in the body, for the participant's name, role and site and the
hearing's case number, title, kind and window. A token that does not verify
gets the same named 401 the WebSocket would close with.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from rooms.errors import NotFound
from rooms.model import HearingKind, HearingState, Role
from signaling.keys import STORE_KEY, TOKENS_KEY
from signaling.problems import Problem
from signaling.routing import ROUTES_KEY, RouteSpec, read_body, respond
from signaling.tokens import TokenError


class JoinInfoRequest(BaseModel):
    """Body of ``POST /join/info``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=4096, description="The join token from the link (?t=...).")


class JoinParticipant(BaseModel):
    """Who the link is for."""

    id: str
    name: str
    role: Role
    site_id: str
    site_name: str


class JoinHearing(BaseModel):
    """Which hearing the link opens."""

    id: str
    case_number: str
    title: str
    kind: HearingKind
    state: HearingState
    starts_at: datetime
    ends_at: datetime
    courtroom_name: str


class JoinInfo(BaseModel):
    """Answer of ``POST /join/info``."""

    participant: JoinParticipant
    hearing: JoinHearing


async def join_info(request: web.Request) -> web.StreamResponse:
    """The participant and hearing a valid join token stands for."""
    body = await read_body(request, JoinInfoRequest)
    store = request.app[STORE_KEY]
    try:
        claims = await request.app[TOKENS_KEY].verify(body.token)
    except TokenError as exc:
        raise Problem(401, exc.code, "This link does not work", exc.detail) from None
    hearing = await store.get_hearing(claims.hearing_id)
    participant = hearing.participant(claims.participant_id)
    if participant is None:
        raise Problem(401, "revoked", "This link does not work", "the participant of this link is not booked")
    try:
        site_name = (await store.get_site(participant.site_id)).name
    except NotFound:
        site_name = participant.site_id
    try:
        courtroom_name = (await store.get_courtroom(hearing.courtroom_id)).name
    except NotFound:
        courtroom_name = hearing.courtroom_id
    return respond(
        JoinInfo(
            participant=JoinParticipant(
                id=participant.id,
                name=participant.name,
                role=participant.role,
                site_id=participant.site_id,
                site_name=site_name,
            ),
            hearing=JoinHearing(
                id=hearing.id,
                case_number=hearing.case_number,
                title=hearing.title,
                kind=hearing.kind,
                state=hearing.state,
                starts_at=hearing.starts_at,
                ends_at=hearing.ends_at,
                courtroom_name=courtroom_name,
            ),
        )
    )


def register(app: web.Application) -> None:
    """Add ``POST /api/v1/join/info`` (authenticated by the join token in the body, not an API key)."""
    app[ROUTES_KEY].add(
        app.router,
        RouteSpec("POST", "/api/v1/join/info", "What a join link is for (device-check page)", "joinInfo", "join",
                  body=JoinInfoRequest, response=JoinInfo, errors=(400, 401, 422)),
        join_info,
    )  # fmt: skip
