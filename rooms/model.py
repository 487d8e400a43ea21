"""The hearing domain's plain data: sites, courtrooms, hearings, participants.

Every type here is a frozen pydantic model or a string enum; behaviour lives in
the sibling modules (lifecycle, permissions, schedule, audit). No I/O.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time must carry a UTC offset (RFC 3339)")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
"""A datetime that carries its offset; naive times are refused at the edge."""

Name = Annotated[str, Field(min_length=1, max_length=200)]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


MAX_LINK_MBPS = 100_000.0
"""The largest link a site may declare (100 Gbit/s): anything above is a typo, not a court's line."""

LinkMbps = Annotated[float, Field(gt=0, le=MAX_LINK_MBPS, allow_inf_nan=False)]
"""A site's link capacity in Mbit/s: above 0, at most :data:`MAX_LINK_MBPS`."""


def new_id(prefix: str) -> str:
    """A fresh opaque identifier such as ``hrg_3f2a...``."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class Frozen(BaseModel):
    """Base of every domain and wire type: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SiteKind(StrEnum):
    """What kind of place a site is (PROTOCOL.md)."""

    court = "court"
    tribunal = "tribunal"
    detention_center = "detention_center"
    prison = "prison"
    procuratorate = "procuratorate"
    remote = "remote"


class HearingKind(StrEnum):
    """What kind of hearing is booked (GLOSSARY.md)."""

    trial = "trial"
    arraignment = "arraignment"
    mediation = "mediation"
    meeting = "meeting"
    reception = "reception"
    observation = "observation"


class HearingState(StrEnum):
    """The hearing lifecycle; transitions live in ``rooms.lifecycle``."""

    scheduled = "scheduled"
    open = "open"
    in_session = "in_session"
    recess = "recess"
    adjourned = "adjourned"
    cancelled = "cancelled"


class Role(StrEnum):
    """What a participant is in the hearing; ``recorder`` is hidden and internal."""

    judge = "judge"
    clerk = "clerk"
    prosecutor = "prosecutor"
    counsel = "counsel"
    defendant = "defendant"
    party = "party"
    witness = "witness"
    interpreter = "interpreter"
    observer = "observer"
    chair = "chair"
    attendee = "attendee"
    recorder = "recorder"


BOOKABLE_ROLES: frozenset[Role] = frozenset(Role) - {Role.recorder}
"""Roles a clerk may put on a booking; the recorder joins on its own."""

PRESIDING_ROLES: frozenset[Role] = frozenset({Role.judge, Role.chair})
"""Roles of which one participant presides: the presiding judge of a panel, the chair of a meeting."""

CLIENT_ROLES: frozenset[Role] = frozenset({Role.defendant, Role.party})
"""Roles that counsel represents (``Participant.represents``)."""


class Placement(StrEnum):
    """Where a connected participant currently is."""

    lobby = "lobby"
    witness_lobby = "witness_lobby"
    courtroom = "courtroom"
    consultation = "consultation"


class Source(StrEnum):
    """A kind of media a participant may publish."""

    camera = "camera"
    microphone = "microphone"
    evidence = "evidence"


class Site(Frozen):
    """A place that joins hearings: a court, a detention center, a lawyer at home."""

    id: Identifier = Field(description="Stable identifier, chosen by the client or generated.")
    name: Name = Field(description="Human name, e.g. 'No. 1 Detention Center of X County'.")
    kind: SiteKind = Field(description="What kind of place this is.")
    region: str = Field(default="", max_length=100, description="Region used for media-node placement.")
    terminals: int = Field(default=1, ge=1, le=1000, description="How many hearings the site can join at once.")
    link_mbps: LinkMbps | None = Field(
        default=None,
        description="Capacity of the site's link to the court network, Mbit/s each way; null: unknown, not checked.",
    )


class Courtroom(Frozen):
    """A virtual courtroom: what a hearing is booked into; one hearing at a time."""

    id: Identifier = Field(description="Stable identifier.")
    name: Name = Field(description="Human name, e.g. 'Remote Courtroom 3'.")
    site_id: Identifier = Field(description="The site that hosts this courtroom.")


def identity_of(name: str, site_id: str) -> str:
    """The default "same person" key: the normalized name at the same site."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return f"{' '.join(folded.split())}@{site_id}"


class Participant(Frozen):
    """A person booked into a hearing, with one personal join link."""

    id: Identifier = Field(description="Participant identifier, unique within the store.")
    name: Name = Field(description="Display name.")
    role: Role = Field(description="Role in this hearing.")
    site_id: Identifier = Field(description="The site the participant joins from.")
    identity: str = Field(
        min_length=1,
        max_length=200,
        description="Key for 'the same person' across hearings (defaults to name@site).",
    )
    token_id: str = Field(default="", description="Id (jti) of the only join token that is valid.")
    represents: tuple[Identifier, ...] = Field(
        default=(),
        max_length=50,
        description="Counsel only: ids of the defendants or parties in this hearing whom this counsel represents.",
    )
    presiding: bool = Field(
        default=False,
        description="Judge or chair only: presides over the hearing (default: the first judge or chair booked).",
    )

    @model_validator(mode="after")
    def _links(self) -> Participant:
        if self.represents and self.role is not Role.counsel:
            raise ValueError("only counsel may represent other participants")
        if self.presiding and self.role not in PRESIDING_ROLES:
            raise ValueError("only a judge or a chair may preside")
        return self


class Hearing(Frozen):
    """A booked hearing: a case, a courtroom, a window and its participants."""

    id: Identifier = Field(description="Hearing identifier.")
    case_number: str = Field(min_length=1, max_length=100, description="The court's case number.")
    title: str = Field(default="", max_length=300, description="Short title shown to participants.")
    kind: HearingKind = Field(description="Kind of hearing.")
    courtroom_id: Identifier = Field(description="The virtual courtroom booked.")
    starts_at: AwareDatetime = Field(description="Start of the booked window.")
    ends_at: AwareDatetime = Field(description="End of the booked window.")
    state: HearingState = Field(default=HearingState.scheduled, description="Lifecycle state.")
    participants: tuple[Participant, ...] = Field(default=(), description="Booked participants.")
    version: int = Field(default=1, ge=1, description="Incremented on every change.")

    @model_validator(mode="after")
    def _window(self) -> Hearing:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        problem = link_problem(self.participants)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def presiding_id(self) -> str | None:
        """The participant who presides: the one marked ``presiding``, else the first judge or chair booked."""
        candidates = [p for p in self.participants if p.role in PRESIDING_ROLES]
        marked = next((p for p in candidates if p.presiding), None)
        chosen = marked or (candidates[0] if candidates else None)
        return chosen.id if chosen is not None else None

    @property
    def blocks_schedule(self) -> bool:
        """Whether this hearing still occupies its courtroom, sites and people."""
        return self.state not in (HearingState.cancelled, HearingState.adjourned)

    def participant(self, participant_id: str) -> Participant | None:
        """The participant with this id, if booked."""
        return next((p for p in self.participants if p.id == participant_id), None)

    def site_ids(self) -> frozenset[str]:
        """Every site that joins this hearing (the courtroom's own site excluded)."""
        return frozenset(p.site_id for p in self.participants)


def link_problem(participants: Sequence[Participant]) -> str | None:
    """Why the counsel links and presiding marks of ``participants`` are inconsistent, or None when they are fine.

    Each id in a counsel's ``represents`` names a booked defendant or party;
    at most one participant is marked ``presiding``.
    """
    by_id = {p.id: p for p in participants}
    for p in participants:
        for client_id in p.represents:
            client = by_id.get(client_id)
            if client is None:
                return f"{p.name} represents {client_id!r}, who is not booked in this hearing"
            if client.role not in CLIENT_ROLES:
                return f"{p.name} may represent only a defendant or a party, not {client.name} ({client.role.value})"
    if sum(p.presiding for p in participants) > 1:
        return "only one participant may preside"
    return None
