"""Helpers shared by the store backends: time keys, audit events, reference checks.

Nothing here touches a database; both backends call these inside their own
atomic section so the two apply exactly the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from rooms.audit import AuditEvent, chain_next
from rooms.errors import InvalidReference
from rooms.model import Hearing, Site
from rooms.store import Trace

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

NON_BLOCKING_STATES = ("cancelled", "adjourned")
"""Hearing states that no longer occupy the schedule (mirrors ``Hearing.blocks_schedule``)."""


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch: an exact, offset-free sort key for a time."""
    return (moment - _EPOCH) // _MICRO


def duration_micros(hearing: Hearing) -> int:
    """Length of the hearing's window in microseconds."""
    return micros(hearing.ends_at) - micros(hearing.starts_at)


def next_event(previous: AuditEvent | None, stream: str, trace: Trace) -> AuditEvent:
    """The audit event ``trace`` leaves after ``previous``, stamped now (UTC)."""
    return chain_next(
        previous,
        stream=stream,
        at=datetime.now(UTC),
        actor=trace.actor,
        action=trace.action,
        data=trace.data,
    )


def check_references(hearing: Hearing, courtroom_exists: bool, sites: Mapping[str, Site | None]) -> dict[str, int]:
    """Raise InvalidReference for an unknown courtroom or site; else the terminal count of each site."""
    if not courtroom_exists:
        raise InvalidReference(f"courtroom {hearing.courtroom_id!r} does not exist")
    missing = sorted(site_id for site_id, site in sites.items() if site is None)
    if missing:
        raise InvalidReference(f"site {missing[0]!r} does not exist" + (f" (and {missing[1:]})" if missing[1:] else ""))
    return {site_id: site.terminals for site_id, site in sites.items() if site is not None}


def identities(hearing: Hearing) -> list[str]:
    """The distinct identity keys of the hearing's participants, sorted."""
    return sorted({p.identity for p in hearing.participants})


def sorted_sites(hearing: Hearing) -> list[str]:
    """The hearing's participant site ids, sorted."""
    return sorted(hearing.site_ids())


def window_matches(hearing: Hearing, starts_from: datetime | None, ends_to: datetime | None) -> bool:
    """Whether the hearing's window overlaps the filter window [starts_from, ends_to)."""
    if starts_from is not None and hearing.ends_at <= starts_from:
        return False
    return not (ends_to is not None and hearing.starts_at >= ends_to)


def unique(values: Iterable[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))
