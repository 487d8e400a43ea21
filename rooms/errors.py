"""Domain errors: each names what went wrong in words a client can show.

The front door maps them to HTTP problem types and WebSocket error codes; the
``code`` is stable snake_case and part of the public contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


class DomainError(Exception):
    """Base of every refusal the domain makes; nothing has changed when raised."""

    code = "domain_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    """A referenced site, courtroom, hearing or participant does not exist."""

    code = "not_found"

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} does not exist")
        self.kind = kind
        self.ident = ident


class AlreadyExists(DomainError):
    """An object with this id exists already."""

    code = "already_exists"


class InvalidReference(DomainError):
    """A body names a site or courtroom that does not exist (a 422, not a 404)."""

    code = "invalid_reference"


class InvalidTransition(DomainError):
    """A lifecycle action that the hearing's current state does not allow."""

    code = "invalid_transition"


class StoreBusy(DomainError):
    """The store could not complete a change under contention; nothing changed, try again."""

    code = "store_busy"


class NotAllowed(DomainError):
    """The actor's role or placement does not permit the action."""

    code = "not_allowed"


class MutedByCourt(NotAllowed):
    """A participant tried to unmute a source of their own that the court muted; only the court may lift it."""

    code = "muted_by_court"


@dataclass(frozen=True)
class Collision:
    """One reason a booking cannot be made: what collides with which hearing."""

    what: str
    """``courtroom``, ``site_terminals`` or ``participant``."""
    hearing_id: str
    """The already-booked hearing it collides with."""
    detail: str
    """Human-readable explanation naming the courtroom, site or person."""
    subject: str = ""
    """The courtroom id, site id or identity key that collides."""


@dataclass
class ScheduleConflict(DomainError):
    """A booking collides with others; carries every collision found."""

    collisions: Sequence[Collision] = field(default_factory=tuple)
    code = "schedule_conflict"

    def __post_init__(self) -> None:
        first = self.collisions[0] if self.collisions else None
        detail = first.detail if first else "schedule conflict"
        if len(self.collisions) > 1:
            detail += f" (and {len(self.collisions) - 1} more)"
        DomainError.__init__(self, detail)
