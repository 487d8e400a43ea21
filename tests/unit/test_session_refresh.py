"""The live room following changes of the stored hearing (HearingRoom.refresh), pure: no sockets, no node."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.client import Error, Joined, PlacementMsg, Removed, RosterMsg, StateMsg
from protocol.node import ClosePeer, CloseRoom
from rooms.model import Hearing, HearingState, Participant, Placement, Role
from signaling.session import (
    CLOSE_BAD_TOKEN,
    CLOSE_NORMAL,
    CLOSE_REMOVED,
    Audit,
    Close,
    Command,
    Effect,
    HearingRoom,
    Send,
    SessionError,
)
from tests.unit.test_session import Harness, audits, commands, info, sent_to

ACTOR = "key:clerk-office"


def changed(hearing: Hearing, **update: Any) -> Hearing:
    """``hearing`` as the store returns it after a change: ``update`` applied, version bumped."""
    return hearing.model_copy(update={**update, "version": hearing.version + 1})


def without(hearing: Hearing, pid: str) -> Hearing:
    """``hearing`` after participant ``pid`` was removed from the booking."""
    return changed(hearing, participants=tuple(p for p in hearing.participants if p.id != pid))


def relinked(hearing: Hearing, pid: str, token_id: str) -> Hearing:
    """``hearing`` after participant ``pid``'s link was (re)issued with ``token_id``."""
    participants = tuple(
        p.model_copy(update={"token_id": token_id}) if p.id == pid else p for p in hearing.participants
    )
    return changed(hearing, participants=participants)


def roster_ids(effects: list[Effect], conn: int) -> list[set[str]]:
    """The participant ids of every roster sent to ``conn``."""
    return [{p.id for p in m.participants} for m in sent_to(effects, conn) if isinstance(m, RosterMsg)]


def closes(effects: list[Effect]) -> list[Close]:
    """Every close, in order."""
    return [e for e in effects if isinstance(e, Close)]


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


def join_with_link(h: Harness, pid: str, token_id: str, conn: int, role: Role | None = None) -> list[Effect]:
    """``pid`` joins on ``conn`` with a link whose jti is ``token_id``."""
    out = h.room.join(info(pid, role), conn, None, token_id=token_id)
    h.conns[pid] = conn
    return h.do(out.effects)


def test_unbooked_member_is_removed_with_4010(live: Harness) -> None:
    """A participant removed from the booking is told, closed with 4010, loses their peer and leaves the roster."""
    h = live
    observer = h.c("observer")
    effects = h.do(h.room.refresh(without(h.room.hearing, "observer"), actor=ACTOR))
    assert sent_to(effects, observer)[0] == Removed(reason="unbooked")
    assert closes(effects) == [Close(observer, CLOSE_REMOVED, "removed")]
    assert ClosePeer(hearing_id="hrg_1", participant_id="observer") in commands(effects)
    assert "observer" not in h.node.peers
    assert "observer" not in h.room.members
    assert roster_ids(effects, h.c("judge"))[-1] == {"judge", "prosecutor", "defendant", "counsel"}
    trail = [e.trace for e in effects if isinstance(e, Audit)]
    assert [(t.actor, t.action, t.data) for t in trail] == [
        (ACTOR, "participant_ejected", {"participant_id": "observer", "reason": "unbooked"})
    ]
    with pytest.raises(SessionError) as err:
        h.room.join(info("observer"), 99, None)
    assert err.value.close == CLOSE_REMOVED


def test_removal_recomputes_rights_and_ends_consultation(live: Harness) -> None:
    """Removing counsel in a consultation ends it: the defendant returns to the courtroom and receives it again."""
    h = live
    h.do(h.room.consult(h.c("judge"), ["defendant", "counsel"]))
    assert h.node.recv("defendant") == {"counsel"}
    effects = h.do(h.room.refresh(without(h.room.hearing, "counsel"), actor=ACTOR))
    assert "consultation_ended" in audits(effects)
    placements = [m for m in sent_to(effects, h.c("defendant")) if isinstance(m, PlacementMsg)]
    assert placements[-1].placement is Placement.courtroom
    assert h.node.recv("defendant") == {"judge", "prosecutor"}
    assert "counsel" not in h.node.recv("judge")


def test_unbooked_member_in_grace_is_dropped_without_close(live: Harness) -> None:
    """A removed participant whose connection already dropped is forgotten (peer closed) with nothing to close."""
    h = live
    h.do(h.room.disconnect(h.c("prosecutor")))
    effects = h.do(h.room.refresh(without(h.room.hearing, "prosecutor"), actor=ACTOR))
    assert closes(effects) == []
    assert "prosecutor" not in h.room.members
    assert "prosecutor" not in h.node.peers
    assert h.room.expire("prosecutor", 1) == []


def test_reissued_link_closes_its_connection_with_4001() -> None:
    """A connection that joined with a link that was reissued gets error revoked and close 4001; the new link joins."""
    h = Harness(HearingState.open)
    h.room.hearing = relinked(relinked(h.room.hearing, "judge", "tok_j"), "prosecutor", "tok_old")
    join_with_link(h, "judge", "tok_j", 1)
    join_with_link(h, "prosecutor", "tok_old", 2)
    h.do(h.room.admit(1, "prosecutor"))
    effects = h.do(h.room.refresh(relinked(h.room.hearing, "prosecutor", "tok_new"), actor=ACTOR))
    refused = sent_to(effects, 2)[0]
    assert isinstance(refused, Error)
    assert refused.code == "revoked"
    assert closes(effects) == [Close(2, CLOSE_BAD_TOKEN, "revoked")]
    assert "prosecutor" not in h.node.peers
    assert "prosecutor" not in h.room.members
    assert roster_ids(effects, 1)[-1] == {"judge"}
    assert [e.trace.data["reason"] for e in effects if isinstance(e, Audit)] == ["link_revoked"]
    with pytest.raises(SessionError) as err:
        h.room.join(info("prosecutor"), 3, None, token_id="tok_old")
    assert (err.value.code, err.value.close) == ("revoked", CLOSE_BAD_TOKEN)
    again = join_with_link(h, "prosecutor", "tok_new", 4)
    joined = sent_to(again, 4)[0]
    assert isinstance(joined, Joined)
    assert joined.placement is Placement.lobby
    assert h.do(h.room.refresh(changed(h.room.hearing, title="same links"))) == []


def test_resumed_connection_carries_its_new_link(live: Harness) -> None:
    """A participant who resumed with a newer link is not ejected for the link they had before."""
    h = live
    h.room.hearing = relinked(h.room.hearing, "defendant", "tok_2")
    h.do(h.room.disconnect(h.c("defendant")))
    out = h.room.join(info("defendant"), 50, h.resume["defendant"], token_id="tok_2")
    assert out.resumed
    h.do(out.effects)
    assert h.room.refresh(changed(h.room.hearing, title="renamed")) == []
    assert h.room.conn_of("defendant") == 50


def test_join_with_a_link_the_room_knows_is_stale_is_refused() -> None:
    """A join whose link the room's newer hearing no longer accepts is refused (4001) before anything changes."""
    h = Harness()
    h.room.hearing = relinked(h.room.hearing, "judge", "tok_new")
    with pytest.raises(SessionError) as err:
        h.room.join(info("judge"), 1, None, token_id="tok_old")
    assert (err.value.code, err.value.close) == ("revoked", CLOSE_BAD_TOKEN)
    h.room.hearing = without(h.room.hearing, "observer")
    with pytest.raises(SessionError) as err:
        h.room.join(info("observer"), 2, None, token_id="")
    assert err.value.code == "revoked"
    assert h.room.empty


def test_cancel_tells_state_then_closes_everyone_normally() -> None:
    """A cancelled hearing: everyone gets state cancelled, then close 1000; the node room closes; joins are refused."""
    h = Harness()
    for pid in ("judge", "clerk", "observer"):
        h.join(pid)
    h.set_state(HearingState.open)
    effects = h.do(h.room.refresh(changed(h.room.hearing, state=HearingState.cancelled), actor=ACTOR))
    for pid in ("judge", "clerk", "observer"):
        conn = h.c(pid)
        states = [m for m in sent_to(effects, conn) if isinstance(m, StateMsg)]
        assert [s.state for s in states] == [HearingState.cancelled]
        assert states[0].permissions is not None
        sends = [i for i, e in enumerate(effects) if isinstance(e, Send) and e.conn == conn]
        close_at = effects.index(Close(conn, CLOSE_NORMAL, "hearing cancelled"))
        assert max(sends) < close_at
    assert h.node.closed_rooms == 1
    assert h.room.empty
    with pytest.raises(SessionError) as err:
        h.room.join(info("judge"), 42, None)
    assert err.value.code == "hearing_closed"


def test_new_state_is_announced_with_permissions() -> None:
    """A state change made elsewhere reaches everyone as state with their new permissions."""
    h = Harness()
    h.join("judge")
    effects = h.do(h.room.refresh(changed(h.room.hearing, state=HearingState.open)))
    states = [m for m in sent_to(effects, h.c("judge")) if isinstance(m, StateMsg)]
    assert [s.state for s in states] == [HearingState.open]
    assert h.room.state is HearingState.open


def test_title_and_window_change_is_only_adopted(live: Harness) -> None:
    """Editing the title or window changes nothing live: no message, no command; the room shows the new title."""
    h = live
    hearing = h.room.hearing
    edited = changed(hearing, title="Renamed", ends_at=hearing.ends_at.replace(hour=hearing.ends_at.hour + 1))
    assert h.room.refresh(edited, actor=ACTOR) == []
    assert h.room.hearing_info().title == "Renamed"
    assert h.room.hearing.version == hearing.version + 1


def test_older_version_is_ignored(live: Harness) -> None:
    """A hearing older than the one the room has (a late notification) changes nothing."""
    h = live
    current = changed(h.room.hearing, title="Current")
    h.room.refresh(current)
    stale = without(h.room.hearing, "observer").model_copy(update={"version": current.version - 1})
    assert h.room.refresh(stale) == []
    assert "observer" in h.room.members
    assert h.room.hearing_info().title == "Current"


def test_added_participant_appears_when_joining(live: Harness) -> None:
    """A participant added to the booking changes nothing until they join; then moderators see them."""
    h = live
    newcomer = Participant(id="interp", name="Interp", role=Role.interpreter, site_id="site_1", identity="i@site_1")
    added = changed(h.room.hearing, participants=(*h.room.hearing.participants, newcomer))
    assert h.room.refresh(added, actor=ACTOR) == []
    effects = join_with_link(h, "interp", "", 77, Role.interpreter)
    assert h.room.members["interp"].placement is Placement.lobby
    assert "interp" in roster_ids(effects, h.c("judge"))[-1]


def test_hidden_recorder_is_never_ejected(live: Harness) -> None:
    """The recorder is not a booked participant: a booking change leaves it in the room."""
    h = live
    h.node.peers.add("rec")
    h.join("rec", role=Role.recorder)
    h.set_state(HearingState.in_session)
    effects = h.do(h.room.refresh(without(h.room.hearing, "observer"), actor=ACTOR))
    assert "rec" in h.room.members
    assert Close(h.c("rec"), CLOSE_REMOVED, "removed") not in effects
    assert not any(isinstance(c, ClosePeer) and c.participant_id == "rec" for c in commands(effects))
    assert h.node.recv("rec") == {"judge", "prosecutor", "defendant", "counsel"}


def test_member_without_known_link_is_not_checked(live: Harness) -> None:
    """A member who joined without a link id (unknown) stays when links change; only unbooking removes them."""
    h = live
    effects = h.room.refresh(relinked(h.room.hearing, "judge", "tok_other"))
    assert closes(effects) == []
    assert "judge" in h.room.members


def test_unbooking_and_cancel_together(live: Harness) -> None:
    """Several changes at once (a notification that skipped versions): the unbooked get 4010, the rest 1000."""
    h = live
    hearing = without(h.room.hearing, "observer")
    hearing = changed(hearing, state=HearingState.cancelled)
    effects = h.do(h.room.refresh(hearing, actor=ACTOR))
    by_conn = {c.conn: c.code for c in closes(effects)}
    assert by_conn[h.c("observer")] == CLOSE_REMOVED
    assert {code for conn, code in by_conn.items() if conn != h.c("observer")} == {CLOSE_NORMAL}
    assert len(by_conn) == 5
    assert any(isinstance(e, Command) and isinstance(e.command, CloseRoom) for e in effects)
    assert h.room.empty


def test_refresh_of_another_hearing_is_ignored() -> None:
    """A hearing with another id never changes this room."""
    room = HearingRoom(Harness().room.hearing)
    other = changed(room.hearing, id="hrg_2", title="Other")
    assert room.refresh(other) == []
    assert room.hearing.id == "hrg_1"
