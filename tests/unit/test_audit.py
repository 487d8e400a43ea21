"""Hash-chained audit events (rooms.audit): a whole chain verifies; any edit, reorder or deletion is named."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from rooms.audit import GENESIS, AuditEvent, canonical, chain_next, verify_chain

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


def chain(n: int, stream: str = "h1") -> list[AuditEvent]:
    """A chain of ``n`` events, one minute apart."""
    events: list[AuditEvent] = []
    for i in range(n):
        events.append(
            chain_next(
                events[-1] if events else None,
                stream=stream,
                at=T0 + timedelta(minutes=i),
                actor="prt_judge",
                action=f"action_{i + 1}",
                data={"i": i + 1},
            )
        )
    return events


def test_a_fresh_chain_verifies_and_links_each_event_to_the_previous() -> None:
    """Events are numbered from 1, the first links to 64 zeros, each next to the previous hash."""
    events = chain(5)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert verify_chain(events) is None
    assert verify_chain([]) is None


def test_data_is_stored_as_canonical_json() -> None:
    """What is hashed is what is stored: data is round-tripped through canonical JSON (times become strings)."""
    event = chain_next(None, stream="s", at=T0, actor="a", action="x", data={"b": 1, "a": T0})
    assert event.data == {"a": str(T0), "b": 1}
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert verify_chain([AuditEvent.model_validate_json(event.model_dump_json())]) is None


def test_an_edited_event_is_named() -> None:
    """Changing any field of one event makes verify name that event."""
    for change in ({"actor": "key:mallory"}, {"data": {"i": 99}}, {"at": T0}, {"action": "nothing"}):
        events = chain(5)
        events[2] = events[2].model_copy(update=change)
        broken = verify_chain(events)
        assert broken is not None
        assert (broken.seq, "altered" in broken.reason) == (3, True)


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    """Re-hashing an edited event is caught by the following event's prev_hash."""
    events = chain(4)
    forged = chain_next(events[0], stream="h1", at=events[1].at, actor="key:mallory", action="action_2", data={"i": 2})
    events[1] = forged
    broken = verify_chain(events)
    assert broken is not None
    assert broken.seq == 3
    assert "prev_hash" in broken.reason


def test_reordered_events_are_named() -> None:
    """Swapping two events makes verify name the first position that is out of order."""
    events = chain(4)
    events[1], events[2] = events[2], events[1]
    broken = verify_chain(events)
    assert broken is not None
    assert broken.seq == 2


def test_deleted_events_are_named() -> None:
    """Removing an event in the middle, or the first, names the missing seq."""
    events = chain(4)
    broken = verify_chain(events[:1] + events[2:])
    assert broken is not None
    assert (broken.seq, "missing" in broken.reason) == (2, True)
    broken = verify_chain(events[1:])
    assert broken is not None
    assert broken.seq == 1


def test_an_event_moved_to_another_stream_does_not_verify() -> None:
    """The stream is part of the hash, so an event relabelled to another hearing fails."""
    events = chain(2)
    events[1] = events[1].model_copy(update={"stream": "h2"})
    broken = verify_chain(events)
    assert broken is not None
    assert broken.seq == 2
