"""Schedule conflict rules (rooms.schedule): courtroom, site terminals, participants, half-open windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rooms.errors import ScheduleConflict
from rooms.model import Hearing, HearingKind, HearingState, Participant, Role, identity_of
from rooms.schedule import check, collisions, overlaps

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    """A time ``hours`` after 09:00."""
    return T0 + timedelta(hours=hours)


def person(name: str, site: str) -> Participant:
    """A defendant with the default identity key."""
    return Participant(
        id=f"p_{name.replace(' ', '_')}_{site}",
        name=name,
        role=Role.defendant,
        site_id=site,
        identity=identity_of(name, site),
    )


def hearing(
    hid: str,
    start: float,
    end: float,
    courtroom: str = "cr1",
    people: tuple[Participant, ...] = (),
    state: HearingState = HearingState.scheduled,
) -> Hearing:
    """A hearing from ``start`` to ``end`` hours after 09:00."""
    return Hearing(
        id=hid,
        case_number=f"C-{hid}",
        kind=HearingKind.trial,
        courtroom_id=courtroom,
        starts_at=at(start),
        ends_at=at(end),
        participants=people,
        state=state,
    )


def test_half_open_windows_overlap_only_when_they_share_time() -> None:
    """Windows touching end-to-start do not overlap; any shared instant does."""
    assert not overlaps(at(0), at(1), at(1), at(2))
    assert not overlaps(at(1), at(2), at(0), at(1))
    assert overlaps(at(0), at(1), at(0.5), at(0.6))
    assert overlaps(at(0), at(2), at(1), at(3))


def test_same_courtroom_overlap_is_a_courtroom_collision() -> None:
    """Two overlapping hearings in one courtroom collide, naming the booked hearing and the courtroom."""
    (c,) = collisions(hearing("new", 0.5, 1.5), [hearing("old", 0, 1)], {})
    assert (c.what, c.hearing_id, c.subject) == ("courtroom", "old", "cr1")
    assert "old" in c.detail
    assert "cr1" in c.detail


def test_courtroom_collisions_listed_by_start_time() -> None:
    """Several colliding hearings are reported in start order, so the first names the earliest."""
    found = collisions(hearing("new", 0, 3), [hearing("b", 2, 4), hearing("a", 0, 1)], {})
    assert [c.hearing_id for c in found] == ["a", "b"]


def test_other_courtroom_back_to_back_self_and_finished_hearings_are_ignored() -> None:
    """Other courtrooms, touching windows, the candidate itself and cancelled/adjourned hearings never collide."""
    others = [
        hearing("elsewhere", 0, 1, courtroom="cr2"),
        hearing("before", -1, 0),
        hearing("after", 1, 2),
        hearing("new", 0, 1),
        hearing("cancelled", 0, 1, state=HearingState.cancelled),
        hearing("adjourned", 0, 1, state=HearingState.adjourned),
    ]
    assert collisions(hearing("new", 0, 1), others, {}) == []


def test_site_terminals_allow_up_to_their_count() -> None:
    """A site with two terminals joins two overlapping hearings; the third overlapping one collides on terminals."""
    a = hearing("a", 0, 2, "cr1", (person("A", "dc"),))
    b = hearing("b", 1, 3, "cr2", (person("B", "dc"),))
    new = hearing("new", 1.5, 2.5, "cr3", (person("C", "dc"),))
    assert collisions(hearing("new", 0, 1, "cr3", (person("C", "dc"),)), [a], {"dc": 2}) == []
    (c,) = collisions(new, [a, b], {"dc": 2})
    assert (c.what, c.subject, c.hearing_id) == ("site_terminals", "dc", "a")
    assert collisions(new, [a, b], {"dc": 3}) == []


def test_terminals_count_simultaneous_use_not_total_use() -> None:
    """Two others that overlap the window but not each other use only one terminal at a time."""
    a = hearing("a", 0, 1, "cr1", (person("A", "dc"),))
    b = hearing("b", 1, 2, "cr2", (person("B", "dc"),))
    new = hearing("new", 0, 2, "cr3", (person("C", "dc"),))
    assert collisions(new, [a, b], {"dc": 2}) == []
    assert [c.what for c in collisions(new, [a, b], {"dc": 1})] == ["site_terminals"]


def test_missing_terminal_count_means_one() -> None:
    """A site missing from the terminals map is treated as having one terminal."""
    a = hearing("a", 0, 1, "cr1", (person("A", "dc"),))
    assert [c.what for c in collisions(hearing("new", 0, 1, "cr2", (person("B", "dc"),)), [a], {})] == [
        "site_terminals"
    ]


def test_same_identity_in_overlapping_hearings_collides() -> None:
    """The same person (normalized name at the same site) cannot be in two overlapping hearings."""
    old = hearing("old", 0, 1, "cr1", (person("Zhang San", "dc"),))
    new = hearing("new", 0.5, 1.5, "cr2", (person("ZHANG  san", "dc"),))
    found = collisions(new, [old], {"dc": 5})
    assert [(c.what, c.subject, c.hearing_id) for c in found] == [("participant", "zhang san@dc", "old")]
    assert "ZHANG  san" in found[0].detail
    # Same name at another site is another person.
    assert collisions(hearing("new", 0.5, 1.5, "cr2", (person("Zhang San", "home"),)), [old], {"dc": 5}) == []


def test_check_raises_with_every_collision_and_a_summary() -> None:
    """check() raises ScheduleConflict listing all collisions, its detail names the first and counts the rest."""
    old = hearing("old", 0, 1, "cr1", (person("Zhang San", "dc"),))
    new = hearing("new", 0, 1, "cr1", (person("Zhang San", "dc"),))
    with pytest.raises(ScheduleConflict) as err:
        check(new, [old], {"dc": 1})
    assert [c.what for c in err.value.collisions] == ["courtroom", "site_terminals", "participant"]
    assert err.value.code == "schedule_conflict"
    assert "and 2 more" in err.value.detail
    check(new, [], {"dc": 1})
