"""A booked hearing as an iCalendar (RFC 5545) event, for the clerk's and participants' calendars."""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar, Event

from rooms.model import Courtroom, Hearing, HearingState

CONTENT_TYPE = "text/calendar"


def hearing_calendar(hearing: Hearing, courtroom: Courtroom | None, *, now: datetime | None = None) -> bytes:
    """One VCALENDAR with one VEVENT; times in UTC so no VTIMEZONE is needed."""
    cal = Calendar()
    cal.add("prodid", "-//courtlink//hearing calendar//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    event = Event()
    event.add("uid", f"{hearing.id}@courtlink")
    event.add("dtstamp", (now or datetime.now(UTC)).astimezone(UTC))
    event.add("dtstart", hearing.starts_at.astimezone(UTC))
    event.add("dtend", hearing.ends_at.astimezone(UTC))
    summary = f"{hearing.case_number} {hearing.title}".strip()
    event.add("summary", f"{summary} ({hearing.kind.value})")
    event.add("location", courtroom.name if courtroom else hearing.courtroom_id)
    lines = [f"{p.role.value}: {p.name} ({p.site_id})" for p in hearing.participants]
    event.add("description", "\n".join(lines))
    # Calendar clients replace an event when SEQUENCE grows: every stored change bumps the version.
    event.add("sequence", hearing.version - 1)
    event.add("status", "CANCELLED" if hearing.state == HearingState.cancelled else "CONFIRMED")
    cal.add_component(event)
    data: bytes = cal.to_ical()
    return data
