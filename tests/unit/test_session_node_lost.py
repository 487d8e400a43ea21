"""A hearing's media node is lost: the live room makes every peer again on the new node with its whole plan."""

from __future__ import annotations

from protocol.client import Error, MediaRestart
from protocol.node import CreatePeer, DeclareTrack, SetReceiving
from rooms.model import HearingState, Role, Source
from tests.unit.test_session import Harness, Node, audits, commands, sent_to


def _in_session() -> Harness:
    """Judge, prosecutor, defendant and counsel admitted, in session, the judge publishing a declared camera."""
    h = Harness()
    for pid in ("judge", "prosecutor", "defendant", "counsel"):
        h.join(pid)
    for pid in ("prosecutor", "defendant", "counsel"):
        h.do(h.room.admit(h.c("judge"), pid))
    h.set_state(HearingState.open)
    h.set_state(HearingState.in_session)
    h.do(h.room.publish(h.c("judge"), Source.camera, True, "judge-cam"))
    return h


def test_every_peer_is_made_again_on_the_new_node_with_its_whole_plan() -> None:
    """After node_lost every participant gets media_restart; the new node gets peers, declared tracks, the same plan."""
    h = _in_session()
    h.node.peers.add("rec")  # the recorder is fed without a peer connection
    h.join("rec", role=Role.recorder)
    old = h.node
    h.node = Node()
    h.node.peers.add("rec")
    effects = h.node.apply(h.room.media_node_lost("node-a", "node-b"))
    made = [c.participant_id for c in commands(effects) if isinstance(c, CreatePeer)]
    assert sorted(made) == ["counsel", "defendant", "judge", "prosecutor"]
    declared = [c for c in commands(effects) if isinstance(c, DeclareTrack)]
    assert [(c.participant_id, c.track_id, c.source) for c in declared] == [("judge", "judge-cam", Source.camera)]
    for pid in made:
        restart = [m for m in sent_to(effects, h.c(pid)) if isinstance(m, MediaRestart)]
        assert [m.reason for m in restart] == ["node_lost"]
        assert h.node.pub(pid) == old.pub(pid)
    assert audits(effects).count("media_restarted") == 4
    # The recorder has no client to offer: it is told whom it receives at once.
    receiving = [c for c in commands(effects) if isinstance(c, SetReceiving)]
    assert [c.participant_id for c in receiving] == ["rec"]
    assert h.node.recv("rec") == old.recv("rec")
    # Each client's new first offer is answered: the new node is told whom they receive, as the old one was.
    h.do([])
    for pid in made:
        assert h.node.recv(pid) == old.recv(pid)


def test_no_node_up_tells_everyone_a_named_error_and_restarts_once_one_is() -> None:
    """With no node left the participants get error no_media_node; the next node_lost with a node restarts them."""
    h = _in_session()
    effects = h.room.media_node_lost("node-a", None)
    assert commands(effects) == []
    errors = [m for m in sent_to(effects, h.c("defendant")) if isinstance(m, Error)]
    assert [e.code for e in errors] == ["no_media_node"]
    assert {e.id: e.media for e in h.room.roster()}["defendant"] == "lost"
    h.node = Node()
    effects = h.node.apply(h.room.media_node_lost("node-a", "node-c"))
    assert sorted(c.participant_id for c in commands(effects) if isinstance(c, CreatePeer)) == [
        "counsel",
        "defendant",
        "judge",
        "prosecutor",
    ]
    assert [m.reason for m in sent_to(effects, h.c("defendant")) if isinstance(m, MediaRestart)] == ["node_lost"]


def test_a_closed_room_ignores_a_lost_node() -> None:
    """After adjournment the room's node room is closed: a late node_lost makes no peer."""
    h = _in_session()
    h.set_state(HearingState.adjourned)
    assert h.room.media_node_lost("node-a", "node-b") == []
