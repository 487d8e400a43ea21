"""Schedule conflict rules, applied the same way by every store backend.

A courtroom hosts one hearing at a time; a site joins at most ``terminals``
overlapping hearings; one person is not in two overlapping hearings. Backends
fetch the candidate hearings that overlap the window (by courtroom, by site,
by identity) and call :func:`collisions` inside their atomic section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from rooms.errors import Collision, ScheduleConflict
from rooms.model import Hearing


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    """Half-open windows [start, end) overlap; back-to-back hearings do not."""
    return a_start < b_end and b_start < a_end


def collisions(candidate: Hearing, others: Iterable[Hearing], terminals: Mapping[str, int]) -> list[Collision]:
    """Every reason ``candidate`` cannot be booked beside ``others``.

    ``others`` may hold any hearings; those that are the candidate itself, that
    no longer block the schedule, or that do not overlap are ignored.
    ``terminals`` maps each of the candidate's site ids to its terminal count.
    """
    found: list[Collision] = []
    relevant = [
        h
        for h in others
        if h.id != candidate.id
        and h.blocks_schedule
        and overlaps(candidate.starts_at, candidate.ends_at, h.starts_at, h.ends_at)
    ]
    relevant.sort(key=lambda h: (h.starts_at, h.id))
    for other in relevant:
        if other.courtroom_id == candidate.courtroom_id:
            found.append(
                Collision(
                    "courtroom",
                    other.id,
                    f"courtroom {candidate.courtroom_id!r} is booked by hearing {other.id!r} "
                    f"({other.case_number}) from {other.starts_at.isoformat()} to {other.ends_at.isoformat()}",
                    candidate.courtroom_id,
                )
            )
    for site_id in sorted(candidate.site_ids()):
        using = [h for h in relevant if site_id in h.site_ids()]
        limit = terminals.get(site_id, 1)
        # Terminals are exhausted if at some instant of the window `limit` others overlap each other too.
        if _peak_overlap(candidate, using) >= limit:
            ids = ", ".join(repr(h.id) for h in using)
            found.append(
                Collision(
                    "site_terminals",
                    using[0].id,
                    f"site {site_id!r} has {limit} terminal(s), all in use by hearing(s) {ids} during this window",
                    site_id,
                )
            )
    mine = {p.identity: p for p in candidate.participants}
    for other in relevant:
        for p in other.participants:
            if p.identity in mine:
                found.append(
                    Collision(
                        "participant",
                        other.id,
                        f"{mine[p.identity].name} ({p.identity}) is already in hearing {other.id!r} "
                        f"({other.case_number}) at that time",
                        p.identity,
                    )
                )
    return found


def _peak_overlap(candidate: Hearing, using: list[Hearing]) -> int:
    """Most of ``using`` that run at one instant inside the candidate's window."""
    events: list[tuple[datetime, int]] = []
    for h in using:
        events.append((max(h.starts_at, candidate.starts_at), 1))
        events.append((min(h.ends_at, candidate.ends_at), -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def check(candidate: Hearing, others: Iterable[Hearing], terminals: Mapping[str, int]) -> None:
    """Raise :class:`ScheduleConflict` naming every collision, or return."""
    found = collisions(candidate, others, terminals)
    if found:
        raise ScheduleConflict(found)
