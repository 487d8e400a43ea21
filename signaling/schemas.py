"""Request and response bodies of the REST API, validated once at the edge.

Request models refuse unknown fields (``extra="forbid"``); the OpenAPI
document in :mod:`signaling.openapi` is generated from these same classes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator

from rooms.audit import AuditEvent
from rooms.link_budget import SiteLinkBudget
from rooms.model import (
    BOOKABLE_ROLES,
    AwareDatetime,
    Courtroom,
    Hearing,
    HearingKind,
    HearingState,
    Identifier,
    LinkMbps,
    Name,
    Participant,
    Role,
    Site,
    SiteKind,
)


def _bookable(role: Role) -> Role:
    if role not in BOOKABLE_ROLES:
        raise ValueError(f"role {role.value!r} cannot be booked; use one of: {', '.join(sorted(BOOKABLE_ROLES))}")
    return role


BookableRole = Annotated[
    Role,
    AfterValidator(_bookable),
    WithJsonSchema({"type": "string", "enum": sorted(r.value for r in BOOKABLE_ROLES)}),
]
"""A role a clerk may put on a booking (every role but the hidden recorder)."""


class RequestBody(BaseModel):
    """Base of request bodies: unknown fields are refused, and values are not coerced.

    Strict: ``"5"`` or ``true`` is not the number 5 or 1, ``1`` is not a string;
    enum values and RFC 3339 times are given as JSON strings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class SiteCreate(RequestBody):
    """Body of ``POST /sites``."""

    id: Identifier | None = Field(default=None, description="Identifier; generated when omitted.")
    name: Name = Field(description="Human name.")
    kind: SiteKind = Field(description="What kind of place this is.")
    region: str = Field(default="", max_length=100, description="Region used for media-node placement.")
    terminals: int = Field(default=1, ge=1, le=1000, description="How many hearings the site can join at once.")
    link_mbps: LinkMbps | None = Field(
        default=None,
        description="The site's link to the court network, Mbit/s each way (above 0, at most 100000); "
        "bookings warn when the hearings on it are expected to need more. Null or omitted: unknown, not checked.",
    )


class SitePatch(RequestBody):
    """Body of ``PATCH /sites/{id}``: omitted fields stay as they are."""

    name: Name | None = Field(default=None, description="New human name.")
    region: str | None = Field(default=None, max_length=100, description="New region (media-node placement).")
    link_mbps: LinkMbps | None = Field(
        default=None,
        description="The site's link, Mbit/s each way (above 0, at most 100000); null clears it (not checked).",
    )


class CourtroomCreate(RequestBody):
    """Body of ``POST /courtrooms``."""

    id: Identifier | None = Field(default=None, description="Identifier; generated when omitted.")
    name: Name = Field(description="Human name.")
    site_id: Identifier = Field(description="The site that hosts this courtroom.")


MAX_REPRESENTED = 50
"""The most clients one counsel may be linked to in one hearing."""


class ParticipantFields(RequestBody):
    """What every booked participant input carries."""

    name: Name = Field(description="Display name.")
    role: BookableRole = Field(description="Role in the hearing (any role but recorder).")
    site_id: Identifier = Field(description="The site the participant joins from.")
    identity: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Key for 'the same person' across hearings (e.g. a bar number); default: name@site.",
    )
    presiding: bool = Field(
        default=False,
        description="Judge or chair only: this one presides (at most one per hearing; default: the first judge or "
        "chair booked). Only the presiding judge starts, recesses, resumes and adjourns, and acts on other judges.",
    )


class ParticipantCreate(ParticipantFields):
    """A participant in ``POST /hearings``."""

    represents: list[Annotated[int, Field(ge=0, le=199)]] = Field(
        default=[],
        max_length=MAX_REPRESENTED,
        description="Counsel only: the 0-based indexes, in this request's participants, of the defendants or parties "
        "this counsel represents (only they consult with this counsel in private).",
    )


class ParticipantAdd(ParticipantFields):
    """Body of ``POST /hearings/{id}/participants``."""

    represents: list[Identifier] = Field(
        default=[],
        max_length=MAX_REPRESENTED,
        description="Counsel only: ids of the booked defendants or parties this counsel represents.",
    )


MIN_BOOKING_YEAR = 2000
MAX_BOOKING_YEAR = 2100
"""Bookings fall in these years (UTC): anything else is a typo, and far dates overflow token expiry arithmetic."""

MAX_BOOKING_LENGTH = timedelta(hours=24)
"""The longest booking window: one sitting day. A multi-day trial is booked as one hearing per day."""


def _plausible_time(value: datetime) -> datetime:
    year = value.astimezone(UTC).year if value.utcoffset() is not None else value.year
    if not MIN_BOOKING_YEAR <= year <= MAX_BOOKING_YEAR:
        raise ValueError(f"must fall in the years {MIN_BOOKING_YEAR}-{MAX_BOOKING_YEAR}")
    return value


BookingTime = Annotated[AwareDatetime, AfterValidator(_plausible_time)]
"""A start or end of a booking window: timezone-aware, in the years 2000-2100."""


def window_problem(starts_at: datetime, ends_at: datetime) -> str | None:
    """Why ``[starts_at, ends_at)`` is not a bookable window, or None when it is."""
    if ends_at <= starts_at:
        return "ends_at must be after starts_at"
    if ends_at - starts_at > MAX_BOOKING_LENGTH:
        return f"the window may last at most {MAX_BOOKING_LENGTH.total_seconds() / 3600:g} hours"
    return None


def _window_ok(ends_at: datetime, info: ValidationInfo) -> datetime:
    starts_at = info.data.get("starts_at")
    if starts_at is not None:
        problem = window_problem(starts_at, ends_at)
        if problem is not None:
            raise ValueError(problem)
    return ends_at


class HearingCreate(RequestBody):
    """Body of ``POST /hearings``: a booking."""

    case_number: str = Field(min_length=1, max_length=100, description="The court's case number.")
    title: str = Field(default="", max_length=300, description="Short title shown to participants.")
    kind: HearingKind = Field(description="Kind of hearing.")
    courtroom_id: Identifier = Field(description="The virtual courtroom to book.")
    starts_at: BookingTime = Field(description="Start of the window, RFC 3339 with offset; years 2000-2100.")
    ends_at: BookingTime = Field(
        description="End of the window, RFC 3339 with offset; after starts_at, at most 24 hours later."
    )
    participants: list[ParticipantCreate] = Field(
        min_length=1, max_length=200, description="Who takes part; each gets a personal join link."
    )

    _check_window = field_validator("ends_at")(_window_ok)


class HearingPatch(RequestBody):
    """Body of ``PATCH /hearings/{id}``: reschedule or edit; omitted fields stay as they are."""

    case_number: str | None = Field(default=None, min_length=1, max_length=100, description="New case number.")
    title: str | None = Field(default=None, max_length=300, description="New title.")
    kind: HearingKind | None = Field(default=None, description="New kind.")
    courtroom_id: Identifier | None = Field(default=None, description="Move to another courtroom.")
    starts_at: BookingTime | None = Field(default=None, description="New start (years 2000-2100).")
    ends_at: BookingTime | None = Field(default=None, description="New end (at most 24 hours after the start).")

    _check_window = field_validator("ends_at")(_window_ok)


class HearingQuery(RequestBody):
    """Query of ``GET /hearings``: every filter is optional; windows overlap [from, to)."""

    courtroom_id: Identifier | None = Field(default=None, description="Only this courtroom.")
    site_id: Identifier | None = Field(default=None, description="Only hearings a participant joins from this site.")
    starts_from: AwareDatetime | None = Field(default=None, alias="from", description="Hearings ending after this.")
    ends_to: AwareDatetime | None = Field(default=None, alias="to", description="Hearings starting before this.")
    limit: int = Field(default=500, ge=1, le=500, description="At most this many hearings.")

    # Query values are all strings on the wire: "limit=5" must become 5, so the query stays lax.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False, strict=False)


class SiteLinkQuery(RequestBody):
    """Query of ``GET /sites/{id}/link``: the window to look at, [starts_at, ends_at)."""

    starts_at: BookingTime = Field(description="Start of the window, RFC 3339 with offset; years 2000-2100.")
    ends_at: BookingTime = Field(description="End of the window, after starts_at, at most 24 hours later.")
    participants: str | None = Field(
        default=None,
        max_length=20_000,
        description="The hearing about to be booked, counted on the link as if booked (id 'new'): its participants "
        "as role@site_id, separated by commas, at most 200, e.g. 'judge@court1,defendant@dc1'.",
    )

    # Query values are all strings on the wire, so the query stays lax (times are parsed from strings).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class ParticipantView(BaseModel):
    """A booked participant as the API shows it (never the token)."""

    id: str = Field(description="Participant identifier.")
    name: str = Field(description="Display name.")
    role: Role = Field(description="Role in the hearing.")
    site_id: str = Field(description="The site the participant joins from.")
    identity: str = Field(description="Key for 'the same person' across hearings.")
    represents: list[str] = Field(default=[], description="Counsel: ids of the participants they represent.")
    presiding: bool = Field(
        default=False, description="Presides over the hearing (marked so, or else the first judge or chair booked)."
    )

    @classmethod
    def of(cls, p: Participant, *, presiding: bool | None = None) -> ParticipantView:
        """The view of a domain participant; ``presiding`` as the hearing decides (default: as marked)."""
        return cls(
            id=p.id,
            name=p.name,
            role=p.role,
            site_id=p.site_id,
            identity=p.identity,
            represents=list(p.represents),
            presiding=p.presiding if presiding is None else presiding,
        )


class ParticipantLink(ParticipantView):
    """A participant with a freshly issued personal join link."""

    join_url: str = Field(description="Opens the web client: '{base}/join?t=TOKEN'.")
    token: str = Field(description="The signed join token inside join_url.")


class HearingView(BaseModel):
    """A hearing as the API shows it."""

    id: str = Field(description="Hearing identifier.")
    case_number: str = Field(description="The court's case number.")
    title: str = Field(description="Short title.")
    kind: HearingKind = Field(description="Kind of hearing.")
    courtroom_id: str = Field(description="The booked courtroom.")
    starts_at: AwareDatetime = Field(description="Start of the window.")
    ends_at: AwareDatetime = Field(description="End of the window.")
    state: HearingState = Field(description="Lifecycle state.")
    version: int = Field(description="Incremented on every change.")
    participants: list[ParticipantView] = Field(description="Booked participants.")

    @classmethod
    def of(cls, h: Hearing) -> HearingView:
        """The view of a domain hearing."""
        return cls(
            id=h.id,
            case_number=h.case_number,
            title=h.title,
            kind=h.kind,
            courtroom_id=h.courtroom_id,
            starts_at=h.starts_at,
            ends_at=h.ends_at,
            state=h.state,
            version=h.version,
            participants=[ParticipantView.of(p, presiding=p.id == h.presiding_id) for p in h.participants],
        )


LINK_BUDGET_DOC = (
    "One entry per site of the hearing that declares link_mbps: the hearings overlapping this one on that site's "
    "link (this one included), what they are expected to need at the busiest instant, and over: true when that "
    "exceeds the link. A warning: the booking stands."
)


class HearingChanged(HearingView):
    """Answer of ``PATCH /hearings/{id}``: the hearing, and its sites' link budgets."""

    link_budget: list[SiteLinkBudget] = Field(default=[], description=LINK_BUDGET_DOC)


class AddedParticipant(ParticipantLink):
    """Answer of ``POST /hearings/{id}/participants``: the newcomer's link, and the hearing's sites' link budgets."""

    link_budget: list[SiteLinkBudget] = Field(default=[], description=LINK_BUDGET_DOC)


class BookedHearing(HearingView):
    """Answer of ``POST /hearings``: the hearing with every participant's join link, and its sites' link budgets."""

    participants: list[ParticipantLink] = Field(description="Booked participants, each with a personal join link.")  # type: ignore[assignment]
    link_budget: list[SiteLinkBudget] = Field(default=[], description=LINK_BUDGET_DOC)


class SiteList(BaseModel):
    """Answer of ``GET /sites``."""

    items: list[Site] = Field(description="Every site, by id.")


class CourtroomList(BaseModel):
    """Answer of ``GET /courtrooms``."""

    items: list[Courtroom] = Field(description="Every courtroom, by id.")


class HearingList(BaseModel):
    """Answer of ``GET /hearings``."""

    items: list[HearingView] = Field(description="Matching hearings, by start time.")


class ChainVerification(BaseModel):
    """Whether an audit chain verifies, and where it breaks if it does not."""

    ok: bool = Field(description="True when every event verifies.")
    first_bad_seq: int | None = Field(default=None, description="The first event that does not verify.")
    reason: str | None = Field(default=None, description="Why it does not verify.")


class AuditLog(BaseModel):
    """Answer of ``GET /hearings/{id}/audit``."""

    stream: str = Field(description="The hearing id.")
    events: list[AuditEvent] = Field(description="The hash-chained events, in order.")
    verified: ChainVerification = Field(description="Result of verifying the chain.")


class Health(BaseModel):
    """Answer of ``GET /healthz``."""

    status: str = Field(description="'ok' when the store answers.")
