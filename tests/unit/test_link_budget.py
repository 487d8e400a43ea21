"""The site link budget (rooms.link_budget): what overlapping hearings are expected to need on a site's link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from rooms.link_budget import (
    AUDIO_MBPS,
    CAMERA_MBPS,
    EVIDENCE_MBPS,
    LAST_N,
    booking_budget,
    hearing_load,
    participant_load,
    site_link,
)
from rooms.model import Hearing, HearingKind, HearingState, Participant, Role, Site, SiteKind, identity_of

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
DC = Site(id="dc1", name="No. 1 Detention Center", kind=SiteKind.detention_center, terminals=8, link_mbps=20.0)


def at(hours: float) -> datetime:
    """A time ``hours`` after 09:00 on the test day."""
    return T0 + timedelta(hours=hours)


def person(name: str, role: Role, site_id: str) -> Participant:
    """A participant with the default identity."""
    return Participant(id=f"prt_{name}", name=name, role=role, site_id=site_id, identity=identity_of(name, site_id))


def arraignment(hid: str, start: float, end: float, *, extra: tuple[Participant, ...] = ()) -> Hearing:
    """Judge, clerk and prosecutor at court, the defendant at the detention center, counsel at home."""
    return Hearing(
        id=hid,
        case_number=f"(2030) Arr {hid}",
        kind=HearingKind.arraignment,
        courtroom_id=f"cr_{hid}",
        starts_at=at(start),
        ends_at=at(end),
        participants=(
            person(f"judge_{hid}", Role.judge, "court1"),
            person(f"clerk_{hid}", Role.clerk, "court1"),
            person(f"pros_{hid}", Role.prosecutor, "court1"),
            person(f"def_{hid}", Role.defendant, "dc1"),
            person(f"counsel_{hid}", Role.counsel, "home"),
            *extra,
        ),
    )


# The defendant receives the four other cameras and voices and one evidence stream; sends one camera and voice.
DEFENDANT_DOWN = 4 * CAMERA_MBPS + 4 * AUDIO_MBPS + EVIDENCE_MBPS
DEFENDANT_UP = CAMERA_MBPS + AUDIO_MBPS


def test_a_defendant_sends_one_camera_and_receives_the_others_and_the_evidence() -> None:
    """A defendant's terminal sends its camera and voice and receives every other camera, voice and the evidence."""
    h = arraignment("h1", 0, 1)
    load = participant_load(h.participants[3], h)
    assert load.up_mbps == pytest.approx(DEFENDANT_UP)
    assert load.down_mbps == pytest.approx(DEFENDANT_DOWN)
    assert hearing_load(h, "dc1").busier_mbps == pytest.approx(DEFENDANT_DOWN)


def test_an_observer_sends_nothing_and_cameras_stop_at_last_n() -> None:
    """An observer publishes nothing; nobody receives more than LAST_N cameras however many publish."""
    crowd = tuple(person(f"party{i}", Role.party, "court1") for i in range(LAST_N + 3))
    watcher = person("watcher", Role.observer, "dc1")
    h = arraignment("h1", 0, 1, extra=(*crowd, watcher))
    load = participant_load(watcher, h)
    voices = len(h.participants) - 1  # everyone but the observer speaks
    assert load.up_mbps == 0
    assert load.down_mbps == pytest.approx(LAST_N * CAMERA_MBPS + voices * AUDIO_MBPS + EVIDENCE_MBPS)


def test_overlapping_hearings_add_up_and_over_budget_is_flagged() -> None:
    """Three arraignments at once fit a 20 Mbit/s link; a fourth at the same time is flagged over budget."""
    three = [arraignment(f"h{i}", 0, 1) for i in range(3)]
    fits = site_link(DC, three, at(0), at(1))
    assert fits.expected_mbps == pytest.approx(3 * DEFENDANT_DOWN, abs=0.01)
    assert not fits.over
    fourth = arraignment("h9", 0.5, 1.5)
    budget = booking_budget(fourth, {"dc1": DC}, three)
    assert [b.site_id for b in budget] == ["dc1"]  # the court and the home declare no link: no entry
    (entry,) = budget
    assert entry.over
    assert entry.link_mbps == 20.0
    assert entry.expected_mbps == pytest.approx(4 * DEFENDANT_DOWN, abs=0.01)
    assert [h.id for h in entry.hearings] == ["h0", "h1", "h2", "h9"]
    assert {h.expected_mbps for h in entry.hearings} == {round(DEFENDANT_DOWN, 2)}


def test_the_peak_counts_only_hearings_that_run_at_the_same_instant() -> None:
    """Hearings that overlap the window but not each other count at the busiest instant, not summed."""
    morning = arraignment("a", 0, 1)
    later = arraignment("b", 1, 2)  # back to back with "a": never on the link together
    long = arraignment("c", 0, 2)
    entry = site_link(DC, [morning, later, long], at(0), at(2))
    assert [h.id for h in entry.hearings] == ["a", "c", "b"]
    assert entry.expected_mbps == pytest.approx(2 * DEFENDANT_DOWN, abs=0.01)


def test_cancelled_other_sites_and_outside_the_window_are_left_out() -> None:
    """Cancelled hearings, hearings elsewhere and hearings outside the window are not on the link."""
    cancelled = arraignment("x", 0, 1).model_copy(update={"state": HearingState.cancelled})
    after = arraignment("y", 1, 2)
    elsewhere = arraignment("z", 0, 1).model_copy(
        update={"participants": (person("judge_z", Role.judge, "court1"), person("d", Role.defendant, "dc2"))}
    )
    entry = site_link(DC, [cancelled, after, elsewhere], at(0), at(1))
    assert entry.hearings == ()
    assert entry.expected_mbps == 0
    assert not entry.over


def test_a_site_without_a_link_is_never_over_and_gets_no_booking_entry() -> None:
    """A site that declares no link is shown without a check and is left out of a booking's budget."""
    unknown = DC.model_copy(update={"link_mbps": None})
    entry = site_link(unknown, [arraignment(f"h{i}", 0, 1) for i in range(10)], at(0), at(1))
    assert entry.link_mbps is None
    assert entry.expected_mbps > 20
    assert not entry.over
    assert booking_budget(arraignment("h", 0, 1), {"dc1": unknown}, []) == []


def test_a_rescheduled_hearing_counts_once_at_its_new_time() -> None:
    """The booked hearing replaces its stored copy: a changed hearing is not counted twice."""
    stored = arraignment("h1", 0, 1)
    moved = stored.model_copy(update={"starts_at": at(2), "ends_at": at(3)})
    (entry,) = booking_budget(moved, {"dc1": DC}, [stored])
    assert [h.id for h in entry.hearings] == ["h1"]
    assert entry.hearings[0].starts_at == at(2)


@pytest.mark.parametrize("bad", [0, -5, 100_001, float("inf"), float("nan")])
def test_absurd_links_are_refused(bad: float) -> None:
    """A site's link must be above 0 and at most 100 Gbit/s: zero, negative, huge or NaN is refused."""
    with pytest.raises(ValidationError):
        DC.model_copy(update={"link_mbps": None}).model_validate({**DC.model_dump(), "link_mbps": bad})


def test_old_sites_without_a_link_still_load() -> None:
    """A site stored before link_mbps existed loads with no link (not checked)."""
    old = '{"id": "dc1", "name": "DC", "kind": "detention_center", "region": "", "terminals": 2}'
    assert Site.model_validate_json(old).link_mbps is None
