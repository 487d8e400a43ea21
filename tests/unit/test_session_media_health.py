"""Media health in the roster and media restart, in the pure session state machine (docs/protocol.md)."""

from __future__ import annotations

import pytest

from protocol.client import MediaRestart, RosterMsg
from protocol.node import CreatePeer, PeerHealth, PeerState, TrackHealth
from rooms.model import HearingState, Source
from signaling.session import Command, Effect, HearingRoom, SessionError
from tests.unit.test_session import Harness, make_hearing, sent_to


class Clock:
    """A settable clock for the room (Unix seconds)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _harness(clock: Clock) -> Harness:
    h = Harness()
    h.room = HearingRoom(make_hearing(), grace_seconds=30, clock=clock)
    h.join("judge")
    h.join("defendant")
    h.do(h.room.admit(h.c("judge"), "defendant"))
    h.set_state(HearingState.in_session)
    h.do(h.room.publish(h.c("defendant"), Source.microphone, True, "mic-1"))
    return h


def _report(idle_ms: int | None, connection: PeerState = PeerState.connected) -> PeerHealth:
    track = TrackHealth(
        track_id="mic-1", source=Source.microphone, kind="audio", direction="in", packets=10, bytes=900, idle_ms=idle_ms
    )
    return PeerHealth(
        hearing_id="hrg_1",
        participant_id="defendant",
        connection=connection,
        ice="completed",
        dtls="connected",
        tracks=(track,),
    )


def _media_of(effects: list[Effect], conn: int, pid: str) -> str | None:
    rosters = [m for m in sent_to(effects, conn) if isinstance(m, RosterMsg)]
    if not rosters:
        return None
    return next(e.media for e in rosters[-1].participants if e.id == pid)


def test_health_goes_connecting_ok_stalled_lost_and_is_broadcast_only_on_change() -> None:
    """The judge's roster shows a party connecting, ok, stalled when their microphone goes silent for over 2 s, and
    lost without reports for over 5 s; identical reports send nothing."""
    clock = Clock()
    h = _harness(clock)
    judge = h.c("judge")
    assert next(e for e in h.room.roster() if e.id == "defendant").media == "connecting"
    effects = h.room.peer_health(_report(idle_ms=20))
    assert _media_of(effects, judge, "defendant") == "ok"
    entry = next(e for e in h.room.roster() if e.id == "defendant")
    assert entry.peer is PeerState.connected
    assert entry.media_since == clock.now
    clock.now += 1
    assert h.room.peer_health(_report(idle_ms=20)) == []  # no change, no roster
    clock.now += 3
    effects = h.room.peer_health(_report(idle_ms=2500))
    assert _media_of(effects, judge, "defendant") == "stalled"
    clock.now += 1
    assert _media_of(h.room.peer_health(_report(idle_ms=10)), judge, "defendant") == "ok"
    clock.now += 6
    assert _media_of(h.room.media_tick(), judge, "defendant") == "lost"


def test_a_muted_source_does_not_stall() -> None:
    """A silent microphone that the court muted is expected to be silent: media stays ok."""
    clock = Clock()
    h = _harness(clock)
    h.room.peer_health(_report(idle_ms=20))
    h.do(h.room.mute(h.c("judge"), "defendant", Source.microphone))
    clock.now += 5
    h.room.peer_health(_report(idle_ms=5000))
    assert next(e for e in h.room.roster() if e.id == "defendant").media == "ok"


def test_restart_media_replaces_the_peer_and_refuses_a_second_in_flight() -> None:
    """restart_media replaces the peer (CreatePeer), answers media_restart with the ref, shows connecting, refuses a
    second request while the first is in flight and a third too soon after the last."""
    clock = Clock()
    h = _harness(clock)
    h.room.peer_health(_report(idle_ms=20))
    effects = h.room.restart_media(h.c("defendant"), "ice_failed", ref="r1")
    assert any(isinstance(e, Command) and isinstance(e.command, CreatePeer) for e in effects)
    reply = [m for m in sent_to(effects, h.c("defendant")) if isinstance(m, MediaRestart)]
    assert reply[0].ref == "r1"
    assert reply[0].reason == "requested"
    assert _media_of(effects, h.c("judge"), "defendant") == "connecting"
    with pytest.raises(SessionError) as pending:
        h.room.restart_media(h.c("defendant"))
    assert pending.value.code == "restart_pending"
    h.room.negotiated("defendant")  # the new peer's first offer was answered
    with pytest.raises(SessionError) as soon:
        h.room.restart_media(h.c("defendant"))
    assert soon.value.code == "too_many_restarts"
    clock.now += 2
    assert h.room.restart_media(h.c("defendant"))


def test_a_lost_peer_restarts_unprompted_only_for_a_connected_participant() -> None:
    """A peer the node gave up gets media_restart (with the node's reason); one of a participant in their grace
    period shows lost and restarts nothing."""
    clock = Clock()
    h = _harness(clock)
    h.room.negotiated("defendant")
    effects = h.room.peer_lost("defendant", "offer_timeout")
    assert [m.reason for m in sent_to(effects, h.c("defendant")) if isinstance(m, MediaRestart)] == ["offer_timeout"]
    h.do(h.room.disconnect(h.c("defendant")))
    effects = h.room.peer_lost("defendant", "failed")
    assert not any(isinstance(e, Command) for e in effects)
    assert next(e for e in h.room.roster() if e.id == "defendant").media == "lost"


def test_a_late_loss_report_of_a_replaced_peer_restarts_nothing() -> None:
    """After a resume or a restart, the node's late report that the old peer closed does not replace the new peer
    (which waits for the client's first offer), so the resumed client is not sent into a second restart."""
    clock = Clock()
    h = _harness(clock)
    h.room.negotiated("defendant")
    h.room.restart_media(h.c("defendant"), "ice_failed", ref="r1")
    effects = h.room.peer_lost("defendant", "closed")
    assert effects == []
    h.room.negotiated("defendant")  # the new peer's first offer was answered: now a loss is real
    effects = h.room.peer_lost("defendant", "closed")
    assert any(isinstance(e, Command) and isinstance(e.command, CreatePeer) for e in effects)
