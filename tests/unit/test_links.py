"""Counsel-client links and the presiding judge in the domain model (rooms.model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from rooms.model import Hearing, HearingKind, Participant, Role

START = datetime(2026, 11, 28, 9, tzinfo=UTC)


def who(pid: str, role: Role, **extra: object) -> Participant:
    """A booked participant."""
    return Participant.model_validate({"id": pid, "name": pid, "role": role, "site_id": "s", "identity": pid, **extra})


def hearing(*people: Participant) -> Hearing:
    """A hearing with ``people``."""
    return Hearing(
        id="h", case_number="c", kind=HearingKind.trial, courtroom_id="r", starts_at=START,
        ends_at=START + timedelta(hours=1), participants=people,
    )  # fmt: skip


def test_hearings_stored_before_the_links_still_load() -> None:
    """A hearing stored without ``represents``/``presiding`` reads back with no links and the first judge presiding."""
    old = hearing(who("j1", Role.judge), who("j2", Role.judge), who("c", Role.counsel)).model_dump(mode="json")
    for p in old["participants"]:
        del p["represents"], p["presiding"]
    loaded = Hearing.model_validate(old)
    assert [p.represents for p in loaded.participants] == [(), (), ()]
    assert loaded.presiding_id == "j1"


def test_the_marked_judge_presides_and_a_meeting_chair_too() -> None:
    """The judge marked ``presiding`` presides over a panel; in a meeting the chair does."""
    assert hearing(who("j1", Role.judge), who("j2", Role.judge, presiding=True)).presiding_id == "j2"
    assert hearing(who("a", Role.attendee), who("ch", Role.chair)).presiding_id == "ch"
    assert hearing(who("cl", Role.clerk)).presiding_id is None


@pytest.mark.parametrize(
    "people",
    [
        (who("w", Role.witness), who("c", Role.counsel, represents=["w"])),
        (who("c", Role.counsel, represents=["nobody"]),),
        (who("j1", Role.judge, presiding=True), who("j2", Role.judge, presiding=True)),
    ],
)
def test_inconsistent_links_are_refused(people: tuple[Participant, ...]) -> None:
    """Counsel represent only booked defendants or parties, and at most one participant presides."""
    with pytest.raises(ValidationError):
        hearing(*people)


def test_only_counsel_represents_and_only_judges_or_chairs_preside() -> None:
    """A witness cannot represent anyone and a clerk cannot preside."""
    with pytest.raises(ValidationError):
        who("w", Role.witness, represents=["d"])
    with pytest.raises(ValidationError):
        who("cl", Role.clerk, presiding=True)
