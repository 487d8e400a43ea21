"""Store interfaces: what signaling, media and recorder need from persistence.

Two backends implement :class:`Store` (``rooms.backends.sqlite`` embedded,
``rooms.backends.redis``); ``rooms.backends.open_store`` picks one from a URL.
Every mutating call is atomic: its checks, its write and its audit event
happen together or not at all, also under concurrent callers (on Redis, also
from several processes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from rooms.audit import AuditEvent
from rooms.model import Courtroom, Hearing, Site


@dataclass(frozen=True)
class Trace:
    """The audit event a mutation leaves: who did what (the store adds when and the chain)."""

    actor: str
    action: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HearingFilter:
    """Filters of ``GET /hearings``; windows overlap [starts_from, ends_to)."""

    courtroom_id: str | None = None
    site_id: str | None = None
    starts_from: datetime | None = None
    ends_to: datetime | None = None
    limit: int = 500


Mutation = Callable[[Hearing], tuple[Hearing, Trace]]
"""Given the current hearing, the new hearing and the trace; may raise a DomainError."""

SiteMutation = Callable[[Site], tuple[Site, Trace]]
"""Given the current site, the new site and the trace (in the ``system`` stream); may raise a DomainError."""


class Store(Protocol):
    """Persistence of sites, courtrooms, hearings and audit chains."""

    async def create_site(self, site: Site, trace: Trace) -> Site:
        """Store a new site; AlreadyExists if the id is taken."""
        ...

    async def get_site(self, site_id: str) -> Site:
        """The site; NotFound if absent."""
        ...

    async def list_sites(self) -> Sequence[Site]:
        """Every site, by id."""
        ...

    async def update_site(self, site_id: str, mutation: SiteMutation) -> Site:
        """Atomically apply ``mutation`` to the stored site and store the result with its audit event.

        NotFound if absent; the site keeps its id whatever the mutation returns. Errors from the mutation
        propagate and nothing is stored.
        """
        ...

    async def create_courtroom(self, courtroom: Courtroom, trace: Trace) -> Courtroom:
        """Store a new courtroom; AlreadyExists, or InvalidReference for an unknown site."""
        ...

    async def get_courtroom(self, courtroom_id: str) -> Courtroom:
        """The courtroom; NotFound if absent."""
        ...

    async def list_courtrooms(self) -> Sequence[Courtroom]:
        """Every courtroom, by id."""
        ...

    async def book(self, hearing: Hearing, trace: Trace) -> Hearing:
        """Atomically check references and schedule conflicts, then store.

        Raises InvalidReference (unknown courtroom or site), AlreadyExists, or
        ScheduleConflict naming every collision; nothing is stored then.
        """
        ...

    async def get_hearing(self, hearing_id: str) -> Hearing:
        """The hearing; NotFound if absent."""
        ...

    async def list_hearings(self, flt: HearingFilter) -> Sequence[Hearing]:
        """Hearings matching ``flt``, by start time."""
        ...

    async def mutate_hearing(self, hearing_id: str, mutation: Mutation) -> Hearing:
        """Atomically apply ``mutation`` to the current hearing and store the result.

        If the result still blocks the schedule, conflicts are re-checked
        against every other hearing (the mutation may move the window or add
        participants); references are re-checked. The stored hearing's
        ``version`` is incremented by the store. Errors from the mutation or
        the checks propagate and nothing is stored.
        """
        ...

    async def append_audit(self, stream: str, trace: Trace) -> AuditEvent:
        """Append one event to ``stream``'s chain (e.g. live session events)."""
        ...

    async def audit_log(self, stream: str) -> Sequence[AuditEvent]:
        """The whole chain of ``stream``, in order."""
        ...

    async def audit_since(self, stream: str, after_seq: int) -> Sequence[AuditEvent]:
        """The events of ``stream`` after ``after_seq``, in order (for followers such as the recorder)."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
