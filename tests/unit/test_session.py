"""The live hearing room state machine (signaling.session), pure and fast: no sockets, no node."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from protocol.client import (
    Admitted,
    Denied,
    Joined,
    Muted,
    ParticipantInfo,
    PlacementMsg,
    Removed,
    Reply,
    RosterMsg,
    StateMsg,
)
from protocol.node import ClosePeer, CloseRoom, CreatePeer, DeclareTrack, PeerState, SetPublishing, SetReceiving
from rooms.errors import InvalidTransition, NotAllowed
from rooms.lifecycle import SessionAction
from rooms.model import Hearing, HearingKind, HearingState, Participant, Placement, Role, Source
from signaling.session import (
    CLOSE_JOINED_ELSEWHERE,
    CLOSE_NOT_ALLOWED,
    CLOSE_REMOVED,
    Audit,
    Close,
    Command,
    Effect,
    HearingRoom,
    Send,
    SessionError,
    StartGrace,
)

ROLES = {
    "judge": Role.judge,
    "clerk": Role.clerk,
    "prosecutor": Role.prosecutor,
    "counsel": Role.counsel,
    "counsel2": Role.counsel,
    "defendant": Role.defendant,
    "witness": Role.witness,
    "observer": Role.observer,
}

REPRESENTS = {"counsel": ("defendant",)}
"""The booked counsel-client links: ``counsel`` represents ``defendant``; ``counsel2`` represents nobody."""


def make_hearing(state: HearingState = HearingState.scheduled) -> Hearing:
    """A booked trial with one participant per role above (ids equal the keys)."""
    start = datetime(2026, 11, 28, 9, tzinfo=UTC)
    return Hearing(
        id="hrg_1",
        case_number="(2026) X 0101 Criminal 1",
        kind=HearingKind.trial,
        courtroom_id="cr_1",
        starts_at=start,
        ends_at=start + timedelta(hours=2),
        state=state,
        participants=tuple(
            Participant(
                id=pid,
                name=pid.title(),
                role=role,
                site_id="site_1",
                identity=f"{pid}@site_1",
                represents=REPRESENTS.get(pid, ()),
            )
            for pid, role in ROLES.items()
        ),
    )


def info(pid: str, role: Role | None = None) -> ParticipantInfo:
    """The ParticipantInfo of a test participant."""
    return ParticipantInfo(id=pid, name=pid.title(), role=role or ROLES[pid], site="site_1")


class Node:
    """What the node would be told: the last SetPublishing/SetReceiving of every live peer."""

    def __init__(self) -> None:
        self.peers: set[str] = set()
        self.publishing: dict[str, tuple[Source, ...]] = {}
        self.receiving: dict[str, tuple[str, ...]] = {}
        self.closed_rooms = 0

    def apply(self, effects: list[Effect]) -> list[Effect]:
        for e in effects:
            if not isinstance(e, Command):
                continue
            c = e.command
            if isinstance(c, CreatePeer):
                self.peers.add(c.participant_id)
                self.publishing.pop(c.participant_id, None)
                self.receiving.pop(c.participant_id, None)
            elif isinstance(c, ClosePeer):
                self.peers.discard(c.participant_id)
                self.publishing.pop(c.participant_id, None)
                self.receiving.pop(c.participant_id, None)
            elif isinstance(c, SetPublishing):
                assert c.participant_id in self.peers
                self.publishing[c.participant_id] = c.sources
            elif isinstance(c, SetReceiving):
                assert c.participant_id in self.peers
                self.receiving[c.participant_id] = c.publishers
            elif isinstance(c, CloseRoom):
                self.closed_rooms += 1
        return effects

    def pub(self, pid: str) -> tuple[Source, ...]:
        return self.publishing[pid]

    def recv(self, pid: str) -> set[str]:
        return set(self.receiving.get(pid, ()))


class Harness:
    """A room plus a node view, with one connection number per participant."""

    def __init__(self, state: HearingState = HearingState.scheduled) -> None:
        self.room = HearingRoom(make_hearing(state), grace_seconds=30)
        self.node = Node()
        self.conns: dict[str, int] = {}
        self._next = 0
        self.resume: dict[str, str] = {}

    def join(self, pid: str, resume: str | None = None, role: Role | None = None) -> list[Effect]:
        self._next += 1
        conn = self._next
        out = self.room.join(info(pid, role), conn, resume)
        self.conns[pid] = conn
        self.do(out.effects)
        joined = [e.message for e in out.effects if isinstance(e, Send) and isinstance(e.message, Joined)]
        assert len(joined) == 1
        self.resume[pid] = joined[0].resume
        return out.effects

    def do(self, effects: list[Effect]) -> list[Effect]:
        self.node.apply(effects)
        return effects + self._negotiate()

    def _negotiate(self) -> list[Effect]:
        """Every client with a fresh peer offers at once (as the e2e clients do)."""
        more: list[Effect] = []
        for member in list(self.room.members.values()):
            if member.has_peer and not member.negotiated and member.connected:
                more += self.node.apply(self.room.negotiated(member.id))
        return more

    def c(self, pid: str) -> int:
        return self.conns[pid]

    def set_state(self, state: HearingState) -> list[Effect]:
        hearing = self.room.hearing.model_copy(update={"state": state})
        return self.do(self.room.session_changed(hearing, self.c("judge")))


def sent_to(effects: list[Effect], conn: int) -> list[Reply]:
    """Messages sent to one connection."""
    return [e.message for e in effects if isinstance(e, Send) and e.conn == conn]


def audits(effects: list[Effect]) -> list[str]:
    """Audit actions in order."""
    return [e.trace.action for e in effects if isinstance(e, Audit)]


def commands(effects: list[Effect]) -> list[object]:
    """Node commands in order."""
    return [e.command for e in effects if isinstance(e, Command)]


@pytest.fixture
def live() -> Harness:
    """Judge, prosecutor, defendant, counsel and observer admitted into an open hearing."""
    h = Harness()
    for pid in ("judge", "prosecutor", "defendant", "counsel", "observer"):
        h.join(pid)
    for pid in ("prosecutor", "defendant", "counsel", "observer"):
        h.do(h.room.admit(h.c("judge"), pid))
    h.set_state(HearingState.open)
    return h


def test_judge_enters_courtroom_with_a_peer() -> None:
    """A judge joins straight into the courtroom and gets a peer on the node; the join is audited."""
    h = Harness()
    effects = h.join("judge")
    joined = sent_to(effects, h.c("judge"))[0]
    assert isinstance(joined, Joined)
    assert joined.placement is Placement.courtroom
    assert joined.hearing.state is HearingState.scheduled
    assert "admit" in joined.permissions.actions
    assert "judge" in h.node.peers
    assert audits(effects) == ["participant_joined"]


def test_defendant_waits_in_lobby_without_peer() -> None:
    """A defendant waits in the lobby with no peer, cannot offer media, and nobody receives them."""
    h = Harness(HearingState.open)
    h.join("judge")
    effects = h.join("defendant")
    joined = sent_to(effects, h.c("defendant"))[0]
    assert isinstance(joined, Joined)
    assert joined.placement is Placement.lobby
    assert "defendant" not in h.node.peers
    assert h.node.recv("judge") == set()
    with pytest.raises(SessionError) as err:
        h.room.media_member(h.c("defendant"))
    assert err.value.code == "not_admitted"
    roster = [m for m in sent_to(effects, h.c("judge")) if isinstance(m, RosterMsg)][-1]
    assert {(e.id, e.placement) for e in roster.participants} == {
        ("judge", Placement.courtroom),
        ("defendant", Placement.lobby),
    }


def test_admit_moves_to_courtroom_and_media_flows_when_open() -> None:
    """Admission creates the peer; once the hearing is open judge and defendant receive each other."""
    h = Harness()
    h.join("judge")
    h.join("defendant")
    effects = h.do(h.room.admit(h.c("judge"), "defendant", ref="r1"))
    assert isinstance(sent_to(effects, h.c("defendant"))[0], Admitted)
    assert any(isinstance(m, PlacementMsg) for m in sent_to(effects, h.c("defendant")))
    assert any(isinstance(m, RosterMsg) and m.ref == "r1" for m in sent_to(effects, h.c("judge")))
    assert audits(effects) == ["participant_admitted"]
    # Scheduled: nothing flows yet.
    assert h.node.recv("judge") == set()
    assert h.node.pub("defendant") == ()
    effects = h.set_state(HearingState.open)
    assert h.node.recv("judge") == {"defendant"}
    assert h.node.recv("defendant") == {"judge"}
    assert h.node.pub("defendant") == (Source.camera, Source.microphone)
    state = sent_to(effects, h.c("defendant"))[0]
    assert isinstance(state, StateMsg)
    assert state.state is HearingState.open


def test_admit_refused_for_defendant(live: Harness) -> None:
    """A defendant may not admit, mute others or run the session: not_allowed, nothing changes."""
    h = live
    h.join("prosecutor")  # fresh session: back to the lobby
    with pytest.raises(NotAllowed):
        h.room.admit(h.c("defendant"), "prosecutor")
    with pytest.raises(NotAllowed):
        h.room.mute(h.c("defendant"), "judge", Source.microphone)
    with pytest.raises(NotAllowed):
        h.room.check_session(h.c("defendant"), SessionAction.start)
    assert h.room.members["prosecutor"].placement is Placement.lobby
    assert "microphone" not in h.room.members["judge"].muted_by


def test_observer_never_publishes(live: Harness) -> None:
    """An observer's publishing set is empty; declaring a camera is refused; nobody receives the observer."""
    h = live
    assert h.node.pub("observer") == ()
    assert h.node.recv("observer") == {"judge", "prosecutor", "defendant", "counsel"}
    assert all("observer" not in h.node.recv(p) for p in h.node.peers)
    with pytest.raises(SessionError) as err:
        h.room.publish(h.c("observer"), Source.camera, True, "t1")
    assert err.value.code == "publish_not_allowed"


def test_publish_declares_track_and_shows_in_roster(live: Harness) -> None:
    """publish with a track id declares the track on the node and marks the source as published."""
    h = live
    effects = h.do(h.room.publish(h.c("defendant"), Source.camera, True, "cam-1"))
    declared = [c for c in commands(effects) if isinstance(c, DeclareTrack)]
    assert declared == [
        DeclareTrack(hearing_id="hrg_1", participant_id="defendant", track_id="cam-1", source=Source.camera)
    ]
    roster = [m for m in sent_to(effects, h.c("judge")) if isinstance(m, RosterMsg)][-1]
    assert next(e for e in roster.participants if e.id == "defendant").publishing == (Source.camera,)
    with pytest.raises(SessionError):
        h.room.publish(h.c("defendant"), Source.evidence, True, None)


def test_witness_lobby_isolated_until_called() -> None:
    """A witness in the witness lobby has no peer and may not offer; called, they get one; released, it closes."""
    h = Harness(HearingState.open)
    h.join("judge")
    h.join("witness")
    assert h.room.members["witness"].placement is Placement.witness_lobby
    assert "witness" not in h.node.peers
    with pytest.raises(SessionError) as refused:
        h.room.media_member(h.c("witness"))
    assert refused.value.code == "not_admitted"
    assert h.node.recv("judge") == set()
    effects = h.do(h.room.call_witness(h.c("judge"), "witness"))
    assert audits(effects) == ["witness_called"]
    assert "witness" in h.node.peers
    h.do(h.room.negotiated("witness"))
    assert h.node.recv("witness") == {"judge"}
    assert h.node.recv("judge") == {"witness"}
    h.do(h.room.release_witness(h.c("judge"), "witness"))
    assert "witness" not in h.node.peers
    assert h.node.recv("judge") == set()
    with pytest.raises(SessionError):
        h.room.media_member(h.c("witness"))
    h.do(h.room.call_witness(h.c("judge"), "witness"))
    assert "witness" in h.node.peers
    with pytest.raises(SessionError):
        h.room.admit(h.c("judge"), "witness")


def test_consultation_is_sealed_both_ways(live: Harness) -> None:
    """During consultation defendant and counsel receive only each other and nobody else receives them."""
    h = live
    effects = h.do(h.room.consult(h.c("judge"), ["defendant", "counsel"]))
    assert audits(effects) == ["consultation_started"]
    assert h.node.recv("defendant") == {"counsel"}
    assert h.node.recv("counsel") == {"defendant"}
    for other in ("judge", "prosecutor", "observer"):
        assert h.node.recv(other) & {"defendant", "counsel"} == set()
    placement = next(m for m in sent_to(effects, h.c("defendant")) if isinstance(m, PlacementMsg))
    assert placement.placement is Placement.consultation
    assert placement.consultation
    effects = h.do(h.room.end_consult(h.c("counsel"), ["defendant"]))
    assert audits(effects) == ["consultation_ended"]
    assert h.node.recv("judge") == {"prosecutor", "defendant", "counsel"}
    assert h.node.recv("defendant") == {"judge", "prosecutor", "counsel"}


def test_consult_only_defendant_with_counsel(live: Harness) -> None:
    """A consultation is a defendant with their own (booked) counsel; counsel consults only in person; a defendant
    cannot start one."""
    h = live
    with pytest.raises(SessionError) as err:
        h.room.consult(h.c("judge"), ["defendant", "prosecutor"])
    assert err.value.code == "invalid_target"
    h.join("counsel2")
    h.do(h.room.admit(h.c("judge"), "counsel2"))
    with pytest.raises(NotAllowed):
        h.room.consult(h.c("counsel2"), ["defendant", "counsel"])
    with pytest.raises(NotAllowed):
        h.room.consult(h.c("defendant"), ["defendant", "counsel"])
    # counsel2 is not booked as the defendant's counsel: neither they nor the judge may pair them.
    with pytest.raises(NotAllowed):
        h.room.consult(h.c("counsel2"), ["defendant", "counsel2"])
    with pytest.raises(NotAllowed):
        h.room.consult(h.c("judge"), ["defendant", "counsel2"])
    h.do(h.room.consult(h.c("counsel"), ["defendant", "counsel"]))
    with pytest.raises(NotAllowed):
        h.room.end_consult(h.c("counsel2"), ["defendant"])
    with pytest.raises(SessionError):
        h.room.consult(h.c("judge"), ["defendant", "counsel2"])


def test_leaving_counsel_ends_consultation(live: Harness) -> None:
    """When counsel leaves a consultation, the defendant returns to the courtroom."""
    h = live
    h.do(h.room.consult(h.c("judge"), ["defendant", "counsel"]))
    effects = h.do(h.room.leave(h.c("counsel")))
    assert "consultation_ended" in audits(effects)
    assert h.room.members["defendant"].placement is Placement.courtroom
    assert h.node.recv("judge") == {"prosecutor", "defendant"}
    assert "counsel" not in h.node.peers


def test_mute_enforced_at_node(live: Harness) -> None:
    """Judge mutes the defendant's microphone: the node stops forwarding it; only a moderator lifts it."""
    h = live
    effects = h.do(h.room.mute(h.c("judge"), "defendant", Source.microphone))
    assert h.node.pub("defendant") == (Source.camera,)
    muted = [m for m in sent_to(effects, h.c("prosecutor")) if isinstance(m, Muted)]
    assert muted == [Muted(participant_id="defendant", source=Source.microphone, by="judge")]
    assert audits(effects) == ["participant_muted"]
    with pytest.raises(NotAllowed):
        h.room.mute(h.c("defendant"), "defendant", Source.microphone, muted=False)
    h.do(h.room.mute(h.c("judge"), "defendant", Source.microphone, muted=False))
    assert h.node.pub("defendant") == (Source.camera, Source.microphone)


def test_self_mute_and_no_repeat_commands(live: Harness) -> None:
    """Anyone mutes and unmutes themselves; muting twice changes nothing on the node."""
    h = live
    h.do(h.room.mute(h.c("prosecutor"), "prosecutor", Source.camera))
    assert Source.camera not in h.node.publishing["prosecutor"]
    again = h.do(h.room.mute(h.c("prosecutor"), "prosecutor", Source.camera))
    assert commands(again) == []
    assert audits(again) == []
    h.do(h.room.mute(h.c("prosecutor"), "prosecutor", Source.camera, muted=False))
    assert Source.camera in h.node.publishing["prosecutor"]


def test_resume_keeps_placement_and_recreates_peer(live: Harness) -> None:
    """A dropped participant resuming with the key keeps id, placement and mute state; the peer is renewed."""
    h = live
    h.do(h.room.consult(h.c("judge"), ["defendant", "counsel"]))
    h.do(h.room.mute(h.c("judge"), "defendant", Source.camera))
    effects = h.do(h.room.disconnect(h.c("defendant")))
    grace = [e for e in effects if isinstance(e, StartGrace)]
    assert grace
    assert grace[0].seconds == 30
    roster = [m for m in sent_to(effects, h.c("judge")) if isinstance(m, RosterMsg)][-1]
    assert not next(e for e in roster.participants if e.id == "defendant").connected
    effects = h.join("defendant", resume=h.resume["defendant"])
    joined = sent_to(effects, h.c("defendant"))[0]
    assert isinstance(joined, Joined)
    assert joined.resumed
    assert joined.placement is Placement.consultation
    assert any(isinstance(c, CreatePeer) for c in commands(effects))
    assert h.node.recv("defendant") == {"counsel"}
    assert h.node.pub("defendant") == (Source.microphone,)
    assert audits(effects) == ["participant_resumed"]
    # The old grace timer must not expire the resumed participant.
    assert h.do(h.room.expire("defendant", grace[0].epoch)) == []


def test_grace_expiry_drops_participant(live: Harness) -> None:
    """After the grace period a dropped participant leaves and their peer closes; a stale timer does nothing."""
    h = live
    first = next(e for e in h.room.disconnect(h.c("prosecutor")) if isinstance(e, StartGrace))
    h.join("prosecutor", resume=h.resume["prosecutor"])
    second = next(e for e in h.room.disconnect(h.c("prosecutor")) if isinstance(e, StartGrace))
    assert h.room.expire("prosecutor", first.epoch) == []
    effects = h.do(h.room.expire("prosecutor", second.epoch))
    assert audits(effects) == ["participant_left"]
    assert "prosecutor" not in h.room.members
    assert "prosecutor" not in h.node.peers
    assert "prosecutor" not in h.node.recv("judge")


def test_second_connection_without_resume_closes_old(live: Harness) -> None:
    """A second connection without the resume key closes the first with 4009 and starts afresh in the lobby."""
    h = live
    old = h.c("defendant")
    effects = h.join("defendant")
    assert Close(old, CLOSE_JOINED_ELSEWHERE, "joined elsewhere") in effects
    assert h.room.members["defendant"].placement is Placement.lobby
    assert "defendant" not in h.node.peers
    assert "defendant" not in h.node.recv("judge")


def test_wrong_resume_key_is_a_fresh_join(live: Harness) -> None:
    """A wrong resume key does not resume: the participant starts again in the lobby."""
    h = live
    h.room.disconnect(h.c("counsel"))
    effects = h.join("counsel", resume="not-the-key")
    joined = sent_to(effects, h.c("counsel"))[0]
    assert isinstance(joined, Joined)
    assert not joined.resumed
    assert joined.placement is Placement.lobby


def test_remove_closes_4010_and_bars_rejoin(live: Harness) -> None:
    """A removed participant's connection closes with 4010, they cannot rejoin, and `removed` says by whom."""
    h = live
    effects = h.do(h.room.remove(h.c("judge"), "observer", "disturbing"))
    by_judge = Removed(reason="disturbing", by="judge", by_name="Judge", by_role=Role.judge)
    assert by_judge in sent_to(effects, h.c("observer"))
    assert Close(h.c("observer"), CLOSE_REMOVED, "removed") in effects
    assert audits(effects) == ["participant_removed"]
    assert "observer" not in h.node.peers
    with pytest.raises(SessionError) as err:
        h.room.join(info("observer"), 99, None)
    assert err.value.close == CLOSE_REMOVED


def test_deny_closes_4003() -> None:
    """Denying a participant in the lobby tells them (and by whom) and closes their connection with 4003."""
    h = Harness()
    h.join("judge")
    h.join("observer")
    effects = h.do(h.room.deny(h.c("judge"), "observer", "no seats"))
    by_judge = Denied(reason="no seats", by="judge", by_name="Judge", by_role=Role.judge)
    assert sent_to(effects, h.c("observer"))[0] == by_judge
    assert Close(h.c("observer"), CLOSE_NOT_ALLOWED, "denied") in effects
    assert "observer" not in h.room.members


def test_session_rights_follow_lifecycle() -> None:
    """The clerk may open but not start; the judge may start an open hearing; transitions are checked."""
    h = Harness()
    h.join("judge")
    h.join("clerk")
    assert h.room.check_session(h.c("clerk"), SessionAction.open) is HearingState.open
    with pytest.raises(NotAllowed):
        h.room.check_session(h.c("clerk"), SessionAction.start)
    with pytest.raises(InvalidTransition):
        h.room.check_session(h.c("judge"), SessionAction.start)
    h.set_state(HearingState.open)
    assert h.room.check_session(h.c("judge"), SessionAction.start) is HearingState.in_session


def test_adjourn_closes_room(live: Harness) -> None:
    """Adjourning closes the node's room and every connection; joining afterwards is refused."""
    h = live
    effects = h.set_state(HearingState.adjourned)
    assert h.node.closed_rooms == 1
    assert sum(1 for e in effects if isinstance(e, Close)) == 5
    assert h.room.empty
    with pytest.raises(SessionError) as err:
        h.room.join(info("judge"), 42, None)
    assert err.value.code == "hearing_closed"


def test_recorder_is_hidden_and_records_only_in_session(live: Harness) -> None:
    """The hidden recorder is never in a roster, cannot be moderated, and receives the courtroom only in session."""
    h = live
    h.node.peers.add("rec")  # what attach_recorder does on the node: a receiver without a peer connection
    effects = h.join("rec", role=Role.recorder)
    assert all(
        "rec" not in [e.id for e in m.participants] for m in sent_to(effects, h.c("judge")) if isinstance(m, RosterMsg)
    )
    # The recorder has no peer connection: it is fed through the node's frame sink.
    assert not any(isinstance(c, CreatePeer) for c in commands(effects))
    with pytest.raises(SessionError):
        h.room.mute(h.c("judge"), "rec", Source.microphone)
    h.set_state(HearingState.in_session)
    assert h.node.pub("rec") == ()
    assert h.node.recv("rec") == {"judge", "prosecutor", "defendant", "counsel"}
    h.do(h.room.consult(h.c("judge"), ["defendant", "counsel"]))
    assert h.node.recv("rec") == {"judge", "prosecutor"}


def test_peer_state_shown_in_roster(live: Harness) -> None:
    """A node's peer-state report appears in the roster once, not repeated."""
    h = live
    effects = h.room.peer_state("defendant", PeerState.connected)
    roster = next(m for m in sent_to(effects, h.c("judge")) if isinstance(m, RosterMsg))
    entry = next(e for e in roster.participants if e.id == "defendant")
    assert entry.peer is PeerState.connected
    assert entry.media == "ok"
    assert h.room.peer_state("defendant", PeerState.connected) == []


def test_node_learns_receivers_only_after_first_offer() -> None:
    """The node is told whom a participant receives only once their first offer is answered (client offers first)."""
    h = Harness(HearingState.open)
    h.join("judge")
    node = Node()
    room = h.room
    effects = room.join(info("prosecutor"), 50, None).effects
    effects += room.admit(h.c("judge"), "prosecutor")
    node.apply([e for e in effects if isinstance(e, Command) and isinstance(e.command, CreatePeer)])
    assert not any(isinstance(c, SetReceiving) and c.participant_id == "prosecutor" for c in commands(effects))
    later = commands(room.negotiated("prosecutor"))
    assert SetReceiving(hearing_id="hrg_1", participant_id="prosecutor", publishers=("judge",)) in later
    assert commands(room.negotiated("prosecutor")) == []
