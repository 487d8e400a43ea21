"""A participant's own toggles are coalesced in the audit chain, and declared tracks are capped (signaling.session)."""

from __future__ import annotations

import pytest

from protocol.node import DeclareTrack
from rooms.model import HearingState, Source
from signaling.session import MAX_DECLARED_TRACKS, AuditLater, HearingRoom, SessionError
from tests.unit.test_session import Harness, audits, commands


@pytest.fixture
def live() -> Harness:
    """Judge and an admitted prosecutor in an open hearing."""
    h = Harness()
    for pid in ("judge", "prosecutor"):
        h.join(pid)
    h.do(h.room.admit(h.c("judge"), "prosecutor"))
    h.set_state(HearingState.open)
    return h


def flush(room: HearingRoom, pid: str) -> list[str]:
    """Let the coalescing window of ``pid`` end; the audit actions it writes."""
    return audits(room.flush_audit(pid))


def test_a_toggle_storm_leaves_one_event_per_window(live: Harness) -> None:
    """1,000 camera and self-mute toggles write two events at once and one per window after, with the final state."""
    h = live
    conn = h.c("prosecutor")
    written: list[str] = []
    later = []
    for i in range(1000):
        effects = h.room.publish(conn, Source.camera, i % 2 == 0, None)
        effects += h.room.mute(conn, "prosecutor", Source.microphone, i % 2 == 0)
        written += audits(effects)
        later += [e for e in effects if isinstance(e, AuditLater)]
    assert written == ["publishing_changed", "participant_muted"]
    assert len(later) == 1
    flushed = h.room.flush_audit("prosecutor")
    events = [e.trace for e in flushed if hasattr(e, "trace")]
    assert sorted(t.action for t in events) == ["participant_unmuted", "publishing_changed"]
    published = next(t for t in events if t.action == "publishing_changed")
    assert published.data == {"source": "camera", "enabled": False, "changes": 999}
    assert any(isinstance(e, AuditLater) for e in flushed)
    # A quiet window closes the hold: the next toggle is audited at once again.
    assert flush(h.room, "prosecutor") == []
    assert audits(h.room.publish(conn, Source.camera, True, None)) == ["publishing_changed"]


def test_pending_toggles_are_audited_when_the_participant_leaves(live: Harness) -> None:
    """A participant who leaves mid-window still leaves the last state of their toggles in the audit chain."""
    h = live
    conn = h.c("prosecutor")
    h.room.publish(conn, Source.camera, True, None)
    h.room.publish(conn, Source.camera, False, None)
    effects = h.room.leave(conn)
    left = [e.trace for e in effects if hasattr(e, "trace")]
    assert [t.action for t in left] == ["participant_left", "publishing_changed"]
    assert left[1].data == {"source": "camera", "enabled": False, "changes": 1}


def test_moderator_mutes_are_never_coalesced(live: Harness) -> None:
    """Each mute and unmute by the judge is its own audit event."""
    h = live
    actions: list[str] = []
    for muted in (True, False, True, False):
        actions += audits(h.room.mute(h.c("judge"), "prosecutor", Source.microphone, muted))
    assert actions == ["participant_muted", "participant_unmuted"] * 2


def test_declared_tracks_are_capped_and_repeats_not_resent(live: Harness) -> None:
    """Re-declaring a track sends nothing; more than the cap of distinct tracks is refused with too_many_tracks."""
    h = live
    conn = h.c("prosecutor")
    first = h.room.publish(conn, Source.camera, True, "t0")
    assert [type(c) for c in commands(first)].count(DeclareTrack) == 1
    assert not [c for c in commands(h.room.publish(conn, Source.camera, True, "t0")) if isinstance(c, DeclareTrack)]
    for i in range(1, MAX_DECLARED_TRACKS):
        h.room.publish(conn, Source.camera, True, f"t{i}")
    with pytest.raises(SessionError) as refused:
        h.room.publish(conn, Source.camera, True, "one-too-many")
    assert refused.value.code == "too_many_tracks"
