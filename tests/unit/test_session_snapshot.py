"""A live room taken as a snapshot and restored in another process (HearingRoom.snapshot/restore), pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from protocol.client import Joined, ParticipantInfo, RosterEntry
from protocol.node import CloseRoom, SetPublishing, SetReceiving
from rooms.errors import MutedByCourt
from rooms.model import Hearing, HearingKind, HearingState, Participant, Placement, Role, Source
from signaling.session import (
    AuditLater,
    Command,
    Effect,
    HearingRoom,
    Send,
    SessionError,
    StartGrace,
)
from signaling.snapshot import (
    SNAPSHOT_VERSION,
    RoomSnapshot,
    SnapshotRefused,
    SnapshotVersionRefused,
    parse_snapshot,
)
from tests.unit.test_session import Node, audits

CAST: dict[str, Role] = {
    "judge": Role.judge,
    "clerk": Role.clerk,
    "prosecutor": Role.prosecutor,
    "counsel": Role.counsel,
    "defendant": Role.defendant,
    "witness": Role.witness,
    "observer": Role.observer,
    "observer2": Role.observer,
    "observer3": Role.observer,
}
GRACE = 30.0
T0 = 1_800_000_000.0


def cast_hearing() -> Hearing:
    """A trial with the full cast above (ids equal the keys); counsel represents the defendant."""
    start = datetime(2026, 11, 30, 9, tzinfo=UTC)
    return Hearing(
        id="hrg_snap",
        case_number="(2026) X 0101 Criminal 7",
        kind=HearingKind.trial,
        courtroom_id="cr_1",
        starts_at=start,
        ends_at=start + timedelta(hours=2),
        participants=tuple(
            Participant(
                id=pid,
                name=pid.title(),
                role=role,
                site_id="site_1",
                identity=f"{pid}@site_1",
                token_id=f"tok_{pid}",
                represents=("defendant",) if pid == "counsel" else (),
            )
            for pid, role in CAST.items()
        ),
    )


class Clock:
    """The room's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Court:
    """A room driven through its real inputs, with a node view and every participant's connection and key."""

    def __init__(self, room: HearingRoom, node: Node, clock: Clock) -> None:
        self.room, self.node, self.clock = room, node, clock
        self.conns: dict[str, int] = {}
        self.resume: dict[str, str] = {}
        self._next = 100

    def join(self, pid: str, resume: str | None = None) -> Joined:
        self._next += 1
        info = ParticipantInfo(id=pid, name=pid.title(), role=CAST[pid], site="site_1")
        out = self.room.join(info, self._next, resume, token_id=f"tok_{pid}")
        self.conns[pid] = self._next
        self.do(out.effects)
        (joined,) = [e.message for e in out.effects if isinstance(e, Send) and isinstance(e.message, Joined)]
        self.resume[pid] = joined.resume
        return joined

    def do(self, effects: list[Effect]) -> list[Effect]:
        self.node.apply(effects)
        for member in list(self.room.members.values()):
            if member.has_peer and not member.negotiated and member.connected:
                self.node.apply(self.room.negotiated(member.id))
        return effects

    def c(self, pid: str) -> int:
        return self.conns[pid]

    def state(self, state: HearingState) -> None:
        hearing = self.room.hearing.model_copy(update={"state": state, "version": self.room.hearing.version + 1})
        self.do(self.room.session_changed(hearing, self.c("judge")))


def full_court() -> Court:
    """The full cast in session: a consultation, a court mute, a self mute, a raised hand, published tracks, the
    witness waiting in the witness lobby, one observer dropped 10 s ago, one removed."""
    clock = Clock()
    court = Court(HearingRoom(cast_hearing(), grace_seconds=GRACE, clock=clock), Node(), clock)
    for pid in CAST:
        court.join(pid)
    for pid in ("prosecutor", "counsel", "defendant", "observer", "observer2", "observer3"):
        court.do(court.room.admit(court.c("judge"), pid))
    court.state(HearingState.open)
    court.state(HearingState.in_session)
    room, c = court.room, court.c
    for pid, sources in (("judge", (Source.camera, Source.microphone)), ("prosecutor", (Source.microphone,))):
        for source in sources:
            court.do(room.publish(c(pid), source, True, f"{pid}-{source.value}"))
    clock.now += 1
    court.do(room.consult(c("counsel"), ["counsel", "defendant"]))
    court.do(room.mute(c("judge"), "prosecutor", Source.microphone))
    court.do(room.mute(c("prosecutor"), "prosecutor", Source.camera))
    clock.now += 1
    court.do(room.raise_hand(c("prosecutor")))
    court.do(room.remove(c("judge"), "observer3"))
    court.do(room.disconnect(c("observer2")))
    clock.now += 10
    return court


def entry_without_connection(entry: RosterEntry) -> dict[str, Any]:
    """A roster entry without what a process change alters (connection and media state)."""
    return entry.model_dump(exclude={"connected", "media", "media_since", "peer"})


def restored(court: Court, after: float) -> tuple[Court, list[Effect]]:
    """``court``'s room through JSON into a new room, ``after`` seconds later, on a fresh node view."""
    data = court.room.snapshot().to_json()
    court.clock.now += after
    clock = Clock()
    clock.now = court.clock.now
    room, effects = HearingRoom.restore(
        court.room.hearing, parse_snapshot(data, "hrg_snap"), grace_seconds=GRACE, clock=clock
    )
    node = Node()
    node.peers = set(court.node.peers)  # the node outlived the signaling process: it has every peer still
    again = Court(room, node, clock)
    again.resume = dict(court.resume)
    node.apply(effects)
    return again, effects


def test_every_member_resumes_in_place_after_a_restore() -> None:
    """After a snapshot, JSON and a restore, each member resumes with their key: same place, mutes, consultation,
    hand, publishing and node plan, without an admit; the roster is the one before (connection state aside)."""
    court = full_court()
    before = [entry_without_connection(e) for e in court.room.roster()]
    plan = (dict(court.node.publishing), dict(court.node.receiving))
    again, effects = restored(court, after=5)
    assert [entry_without_connection(e) for e in again.room.roster()] == before
    assert not any(e.connected for e in again.room.roster())
    for pid in CAST:
        if pid == "observer3":
            continue
        joined = again.join(pid, resume=court.resume[pid])
        assert joined.resumed, pid
        assert joined.placement is court.room.members[pid].placement
    assert [entry_without_connection(e) for e in again.room.roster()] == before
    assert all(e.connected for e in again.room.roster())
    assert (again.node.publishing, again.node.receiving) == plan
    counsel = again.room.members["counsel"]
    assert counsel.placement is Placement.consultation
    assert counsel.consultation == court.room.members["counsel"].consultation
    assert again.room.members["witness"].placement is Placement.witness_lobby
    assert again.room.in_session_since == court.room.in_session_since
    with pytest.raises(MutedByCourt):
        again.room.mute(again.c("prosecutor"), "prosecutor", Source.microphone, False)
    # The restore sent the node the whole plan again (what the dying process may not have sent).
    assert {
        c.participant_id for c in (e.command for e in effects if isinstance(e, Command)) if isinstance(c, SetPublishing)
    } == {m.id for m in court.room.members.values() if m.has_peer}
    assert any(isinstance(e, Command) and isinstance(e.command, SetReceiving) for e in effects)


def test_restored_members_keep_the_grace_they_had_left() -> None:
    """A member connected at the snapshot has the grace from the snapshot's time, one who had dropped earlier only
    what was left of theirs; both leave when it ends, as without a restore."""
    court = full_court()
    again, effects = restored(court, after=5)
    graces = {e.participant_id: e for e in effects if isinstance(e, StartGrace)}
    assert graces["judge"].seconds == pytest.approx(GRACE - 5)
    assert graces["observer2"].seconds == pytest.approx(GRACE - 15)
    assert "observer3" not in graces
    assert audits(effects).count("participant_disconnected") == len(CAST) - 2  # not observer2 (already) nor 3
    left = again.room.expire("observer2", graces["observer2"].epoch)
    assert "participant_left" in audits(left)
    assert "observer2" not in again.room.members
    # A timer of the old process (an earlier epoch) does nothing.
    assert again.room.expire("judge", graces["judge"].epoch - 1) == []
    assert "judge" in again.room.members


def test_a_snapshot_older_than_the_grace_lets_everyone_leave() -> None:
    """A room restored after the grace is over gives nobody more time: every grace timer is 0."""
    court = full_court()
    _, effects = restored(court, after=GRACE + 1)
    assert {e.seconds for e in effects if isinstance(e, StartGrace)} == {0.0}


def test_the_snapshot_holds_no_resume_key_and_a_wrong_key_starts_afresh() -> None:
    """The record stores only digests of the resume keys; a join with a wrong key is a fresh join (lobby)."""
    court = full_court()
    data = court.room.snapshot().to_json().decode()
    assert not any(key in data for key in court.resume.values())
    again, _ = restored(court, after=1)
    joined = again.join("defendant", resume="x" * 32)
    assert not joined.resumed
    assert joined.placement is Placement.lobby


def test_a_removed_participant_stays_out_after_a_restore() -> None:
    """The removal is part of the snapshot: the removed observer's link cannot rejoin the restored room."""
    again, _ = restored(full_court(), after=1)
    with pytest.raises(SessionError) as refused:
        again.join("observer3")
    assert refused.value.code == "removed"


def test_pending_toggle_audits_survive_a_restore() -> None:
    """Toggles folded in an open audit window are audited by the restored room (its AuditLater flushes them)."""
    court = full_court()
    room, c = court.room, court.c
    for enabled in (False, True, False):
        court.do(room.publish(c("judge"), Source.camera, enabled, None))
    again, effects = restored(court, after=1)
    assert AuditLater("judge", 5.0) in effects
    flushed = again.room.flush_audit("judge")
    assert "publishing_changed" in audits(flushed)


def test_a_booking_change_made_while_nobody_held_the_room_is_followed() -> None:
    """A participant unbooked while the room was in no process is ejected on restore and cannot rejoin."""
    court = full_court()
    data = court.room.snapshot().to_json()
    hearing = court.room.hearing
    newer = hearing.model_copy(
        update={"participants": tuple(p for p in hearing.participants if p.id != "witness"), "version": 99}
    )
    room, effects = HearingRoom.restore(newer, parse_snapshot(data, "hrg_snap"), grace_seconds=GRACE)
    assert "participant_ejected" in audits(effects)
    assert "witness" not in room.members
    assert room.hearing.version == 99


def test_a_hearing_adjourned_meanwhile_ends_the_restored_room() -> None:
    """A hearing adjourned while no process held its room: the restore closes the node's room, nobody is left."""
    court = full_court()
    data = court.room.snapshot().to_json()
    hearing = court.room.hearing
    ended = hearing.model_copy(update={"state": HearingState.adjourned, "version": hearing.version + 1})
    room, effects = HearingRoom.restore(ended, parse_snapshot(data, "hrg_snap"))
    assert any(isinstance(e, Command) and isinstance(e.command, CloseRoom) for e in effects)
    assert room.empty


def test_unchanged_room_gives_the_same_snapshot() -> None:
    """Two snapshots of an unchanged room differ only in their time; any input that changes it changes them."""
    court = full_court()
    first = court.room.snapshot()
    court.clock.now += 3
    second = court.room.snapshot()
    assert second.taken_at != first.taken_at
    assert second.same_room(first)
    court.do(court.room.lower_hand(court.c("judge"), "prosecutor"))
    assert not court.room.snapshot().same_room(first)


def _snapshot_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(full_court().room.snapshot().to_json())
    return data


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (b"\x00\xffnot json", SnapshotRefused, "invalid_snapshot"),
        (b"[1, 2]", SnapshotRefused, "invalid_snapshot"),
        (json.dumps({**_snapshot_json(), "version": SNAPSHOT_VERSION + 1}).encode(), SnapshotVersionRefused, None),
        (
            json.dumps({k: v for k, v in _snapshot_json().items() if k != "version"}).encode(),
            SnapshotVersionRefused,
            None,
        ),
        (json.dumps({k: v for k, v in _snapshot_json().items() if k != "members"}).encode(), SnapshotRefused, None),
        (json.dumps({**_snapshot_json(), "extra": 1}).encode(), SnapshotRefused, None),
        (
            json.dumps(
                {
                    **_snapshot_json(),
                    "members": [{k: v for k, v in m.items() if k != "placement"} for m in _snapshot_json()["members"]],
                }
            ).encode(),
            SnapshotRefused,
            None,
        ),
        (json.dumps({**_snapshot_json(), "hearing": {"id": "hrg_snap"}}).encode(), SnapshotRefused, None),
    ],
    ids=[
        "garbage",
        "not_an_object",
        "newer_version",
        "no_version",
        "no_members",
        "unknown_field",
        "member_without_placement",
        "truncated_hearing",
    ],
)
def test_a_bad_snapshot_is_refused_with_a_named_error(
    data: bytes, error: type[SnapshotRefused], code: str | None
) -> None:
    """Garbage, another version, a missing or unknown field: a named refusal (the hub then makes a fresh room)."""
    with pytest.raises(error) as refused:
        parse_snapshot(data, "hrg_snap")
    assert refused.value.code == (code or error.code)
    assert refused.value.detail


def test_a_snapshot_of_another_hearing_is_refused() -> None:
    """A record that names another hearing is refused, both when parsed and when restored."""
    data = full_court().room.snapshot().to_json()
    with pytest.raises(SnapshotRefused):
        parse_snapshot(data, "hrg_other")
    snapshot = RoomSnapshot.model_validate_json(data)
    other = cast_hearing().model_copy(update={"id": "hrg_other"})
    with pytest.raises(SnapshotRefused):
        HearingRoom.restore(other, snapshot)
