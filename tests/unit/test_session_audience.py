"""Issue 9 items 1-4 in the room state machine: consultation times and ends, court mutes, evidence that stops."""

from __future__ import annotations

import pytest

from protocol.client import Muted, RosterEntry, RosterMsg
from rooms.errors import MutedByCourt, NotAllowed
from rooms.model import Placement, Source
from signaling.session import Audit, HearingRoom
from tests.unit.test_session import Harness, audits, live, sent_to

__all__ = ["live"]  # the fixture, imported for this module's tests


class Clock:
    """A settable clock for the room (unix seconds)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def entry(room: HearingRoom, pid: str) -> RosterEntry:
    """One participant's roster entry as the room would broadcast it now."""
    return next(e for e in room.roster() if e.id == pid)


def test_consultation_since_is_in_the_roster_while_it_lasts(live: Harness) -> None:
    """The roster says when each member's consultation began, and says nothing once it ended."""
    h = live
    clock = Clock()
    h.room.clock = clock
    effects = h.do(h.room.consult(h.c("judge"), ["defendant", "counsel"]))
    roster = [m for m in sent_to(effects, h.c("prosecutor")) if isinstance(m, RosterMsg)][-1]
    since = {e.id: e.consultation_since for e in roster.participants}
    assert since["defendant"] == since["counsel"] == clock.now
    assert since["judge"] is None
    assert since["prosecutor"] is None
    clock.now += 90
    assert entry(h.room, "defendant").consultation_since == 1_000_000.0  # a start time, not a duration
    h.do(h.room.end_consult(h.c("defendant"), ["defendant"]))
    assert entry(h.room, "defendant").consultation_since is None
    assert entry(h.room, "counsel").consultation_since is None


def test_the_defendant_ends_their_own_consultation(live: Harness) -> None:
    """The defendant (not only counsel or the judge) may end the consultation they are in; both return."""
    h = live
    h.do(h.room.consult(h.c("counsel"), ["defendant", "counsel"]))
    effects = h.do(h.room.end_consult(h.c("defendant"), ["defendant"]))
    ended = [e for e in effects if isinstance(e, Audit)]
    assert [(a.trace.actor, a.trace.action) for a in ended] == [("defendant", "consultation_ended")]
    assert h.room.members["defendant"].placement is Placement.courtroom
    assert h.room.members["counsel"].placement is Placement.courtroom
    assert h.node.recv("judge") >= {"defendant", "counsel"}


def test_someone_outside_cannot_end_a_consultation(live: Harness) -> None:
    """A prosecutor (or an observer) cannot end somebody else's consultation; nothing changes."""
    h = live
    h.do(h.room.consult(h.c("counsel"), ["defendant", "counsel"]))
    for outsider in ("prosecutor", "observer"):
        with pytest.raises(NotAllowed):
            h.room.end_consult(h.c(outsider), ["defendant"])
    assert h.room.members["defendant"].placement is Placement.consultation


def test_a_court_mute_is_named_and_cannot_be_lifted_by_its_owner(live: Harness) -> None:
    """After the judge mutes the defendant, the roster lists it as muted by the court and a self-unmute is refused
    with ``muted_by_court``; once the judge unmutes, it is gone from the roster."""
    h = live
    h.do(h.room.mute(h.c("judge"), "defendant", Source.microphone))
    assert entry(h.room, "defendant").muted_by_court == (Source.microphone,)
    with pytest.raises(MutedByCourt) as err:
        h.room.mute(h.c("defendant"), "defendant", Source.microphone, muted=False)
    assert err.value.code == "muted_by_court"
    assert Source.microphone not in h.node.pub("defendant")
    h.do(h.room.mute(h.c("judge"), "defendant", Source.microphone, muted=False))
    assert entry(h.room, "defendant").muted_by_court == ()
    assert Source.microphone in h.node.pub("defendant")


def test_a_self_mute_is_not_a_court_mute_until_the_court_mutes(live: Harness) -> None:
    """A self-muted source is not listed as muted by the court; the judge muting it then makes it one."""
    h = live
    h.do(h.room.mute(h.c("defendant"), "defendant", Source.camera))
    assert entry(h.room, "defendant").muted == (Source.camera,)
    assert entry(h.room, "defendant").muted_by_court == ()
    effects = h.do(h.room.mute(h.c("judge"), "defendant", Source.camera))
    assert audits(effects) == ["participant_muted"]
    told = [m for m in sent_to(effects, h.c("defendant")) if isinstance(m, Muted)]
    assert told == [Muted(participant_id="defendant", source=Source.camera, by="judge")]
    assert entry(h.room, "defendant").muted_by_court == (Source.camera,)
    with pytest.raises(MutedByCourt):
        h.room.mute(h.c("defendant"), "defendant", Source.camera, muted=False)


def test_a_stopped_evidence_display_is_no_longer_forwarded(live: Harness) -> None:
    """The node forwards a presenter's evidence only while they declare it shown; stopping it takes it off."""
    h = live
    h.do(h.room.publish(h.c("prosecutor"), Source.evidence, True, "ev-1"))
    assert Source.evidence in h.node.pub("prosecutor")
    h.do(h.room.publish(h.c("prosecutor"), Source.evidence, False, "ev-1"))
    assert Source.evidence not in h.node.pub("prosecutor")
    assert Source.camera in h.node.pub("prosecutor")
    h.do(h.room.publish(h.c("prosecutor"), Source.evidence, True, "ev-1"))
    assert Source.evidence in h.node.pub("prosecutor")
