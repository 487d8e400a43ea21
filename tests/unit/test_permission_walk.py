"""The live room obeys the permission table: every role x action x target role x hearing state x placement.

Each case puts an actor and a target (of any role, presiding or not, in any
placement) into a fresh :class:`signaling.session.HearingRoom` in any hearing
state, takes the action through the room, and compares what the room did
(carried it out, or refused it and changed nothing) with what the table
(:mod:`rooms.permissions`) says.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from protocol.client import ParticipantInfo
from rooms.errors import DomainError
from rooms.lifecycle import TRANSITIONS, SessionAction
from rooms.model import PRESIDING_ROLES, Hearing, HearingKind, HearingState, Participant, Placement, Role, Source
from rooms.permissions import (
    TABLE,
    Action,
    Seat,
    may_act,
    may_act_on,
    may_consult,
    may_end_consult,
    may_lift_mute,
)
from signaling.session import HearingRoom, Member, RevokeLink

TARGETED = (
    Action.admit,
    Action.deny,
    Action.remove,
    Action.mute_others,
    Action.call_witness,
    Action.release_witness,
)
"""Every action with one target (consult has a group: walked on its own below)."""


@dataclass(frozen=True)
class Person:
    """One participant of a walked case: id, role, whether they preside, whom they represent, where they are."""

    pid: str
    role: Role
    presiding: bool = False
    represents: tuple[str, ...] = ()
    placement: Placement = Placement.courtroom

    def seat(self) -> Seat:
        """The participant as the table sees them."""
        group = "cns_walk" if self.placement is Placement.consultation else ""
        return Seat(self.pid, self.role, self.placement, group, self.presiding, frozenset(self.represents))


def room_with(state: HearingState, people: list[Person]) -> HearingRoom:
    """A room in ``state`` with ``people`` connected (conn = index + 1) where they are placed.

    When none of them presides, a judge who is not connected presides, so a
    judge among them is an associate judge.
    """
    room = HearingRoom(booking(state, tuple(dataclasses.replace(p, placement=Placement.courtroom) for p in people)))
    for conn, p in enumerate(people, 1):
        member = Member(
            info=ParticipantInfo(id=p.pid, name=p.pid, role=p.role, site="site"),
            conn=conn,
            placement=p.placement,
            resume_key="k",
            consultation="cns_walk" if p.placement is Placement.consultation else "",
        )
        member.has_peer = member.negotiated = p.placement not in (Placement.lobby, Placement.witness_lobby)
        room.members[p.pid] = member
    return room


@functools.cache
def booking(state: HearingState, people: tuple[Person, ...]) -> Hearing:
    """The booked hearing of :func:`room_with` (built once per combination: the walk is long)."""
    booked = [
        Participant(
            id=p.pid,
            name=p.pid,
            role=p.role if p.role is not Role.recorder else Role.observer,
            site_id="site",
            identity=f"{p.pid}@site",
            represents=p.represents,
            presiding=p.presiding,
        )
        for p in people
    ]
    if not any(p.presiding for p in people):
        booked.insert(
            0, Participant(id="presider", name="P", role=Role.judge, site_id="s", identity="p@s", presiding=True)
        )
    start = datetime(2026, 11, 28, 9, tzinfo=UTC)
    return Hearing(
        id="hrg_walk",
        case_number="walk",
        kind=HearingKind.trial,
        courtroom_id="cr",
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        state=state,
        participants=tuple(booked),
    )


def snapshot(room: HearingRoom) -> object:
    """Everything a refused request must leave as it was."""
    return (
        room.hearing.state,
        sorted(room.removed),
        [(m.id, m.placement, m.consultation, dict(m.muted_by), m.has_peer) for m in room.members.values()],
    )


def outcome(room: HearingRoom, request: Callable[[HearingRoom], object]) -> bool:
    """Whether the room carried ``request`` out; a refusal must change nothing."""
    before = snapshot(room)
    try:
        request(room)
    except DomainError:
        assert snapshot(room) == before, "a refused request changed the room"
        return False
    return True


def variants(role: Role, *, presiding_allowed: bool = True) -> list[bool]:
    """Presiding or not, for roles that can preside."""
    return [False, True] if role in PRESIDING_ROLES and presiding_allowed else [False]


REQUESTS: dict[Action, Callable[[HearingRoom], object]] = {
    Action.admit: lambda room: room.admit(1, "target"),
    Action.deny: lambda room: room.deny(1, "target"),
    Action.remove: lambda room: room.remove(1, "target"),
    Action.mute_others: lambda room: room.mute(1, "target", Source.microphone, True),
    Action.call_witness: lambda room: room.call_witness(1, "target"),
    Action.release_witness: lambda room: room.release_witness(1, "target"),
}
"""The actor (connection 1) takes each targeted action on ``target`` through the room."""


def targeted_cases() -> Iterator[tuple[Person, Person, HearingState, Action]]:
    """Every actor (role, presiding, placement) x target (role, presiding, placement) x state x action."""
    for a_role, t_role in itertools.product(Role, Role):
        for a_pres in variants(a_role):
            for t_pres in variants(t_role, presiding_allowed=not a_pres):
                for a_place, t_place in itertools.product(Placement, Placement):
                    actor = Person("actor", a_role, a_pres, placement=a_place)
                    target = Person("target", t_role, t_pres, placement=t_place)
                    for state, action in itertools.product(HearingState, TARGETED):
                        yield actor, target, state, action


def test_every_targeted_action_follows_the_table() -> None:
    """Admit, deny, remove, mute, call and release succeed exactly when the table allows them, for every combination."""
    checked = allowed = 0
    for actor, target, state, action in targeted_cases():
        room = room_with(state, [actor, target])
        expected = may_act_on(actor.seat(), action, target.seat(), state)
        assert outcome(room, REQUESTS[action]) is expected, (actor, target, state.value, action.value)
        checked += 1
        allowed += expected
    assert allowed > 0
    assert checked > 50_000


def test_session_actions_follow_the_table() -> None:
    """open/start/recess/resume/adjourn pass the room's check exactly when the table and the lifecycle allow them."""
    for role in Role:
        for pres, state, place, action in itertools.product(variants(role), HearingState, Placement, SessionAction):
            room = room_with(state, [Person("actor", role, pres, placement=place)])
            needed = Action.session_open if action is SessionAction.open else Action.session_control
            expected = may_act(role, state, place, needed, presiding=pres) and (state, action) in TRANSITIONS
            carried = outcome(room, lambda r, a=action: r.check_session(1, a))  # type: ignore[misc]
            assert carried is expected, (role, pres, state, place, action)


def consult_cases() -> Iterator[tuple[Person, list[Person], HearingState]]:
    """Every actor x a group of two (any roles, linked or not, counsel actor in it or not, placed anywhere) x state."""
    for a_role in Role:
        for a_pres, state in itertools.product(variants(a_role), HearingState):
            actor = Person("actor", a_role, a_pres)
            for r1, r2, linked, p2 in itertools.product(
                Role, Role, (False, True), (Placement.courtroom, Placement.lobby)
            ):
                if TABLE[r1].hidden or TABLE[r2].hidden or (linked and r1 is not Role.counsel):
                    continue
                second = Person("t2", r2, placement=p2)
                first = Person("t1", r1, represents=("t2",) if linked and r1 is Role.counsel else ())
                if linked and r1 is Role.counsel and r2 not in (Role.defendant, Role.party):
                    continue  # a booking cannot link counsel to anyone else
                yield actor, [first, second], state
            if a_role is Role.counsel:
                for c_role, linked in itertools.product((Role.defendant, Role.party, Role.witness), (False, True)):
                    own = Person("actor", a_role, represents=("t2",) if linked and c_role is not Role.witness else ())
                    yield own, [own, Person("t2", c_role)], state


def test_consultations_follow_the_table() -> None:
    """A consultation starts exactly when the table allows this actor to put this group (linked or not) together."""
    allowed = 0
    for actor, group, state in consult_cases():
        people = [actor, *(p for p in group if p.pid != actor.pid)]
        room = room_with(state, people)
        expected = may_consult(actor.seat(), [p.seat() for p in group], state)
        ids = [p.pid for p in group]
        assert outcome(room, lambda r, i=ids: r.consult(1, i)) is expected, (actor, group, state.value)  # type: ignore[misc]
        allowed += expected
    assert allowed > 0


def test_ending_a_consultation_follows_the_table() -> None:
    """Ending a consultation succeeds exactly for a moderator or for counsel in it, as the table says."""
    for role in Role:
        for pres, state, inside in itertools.product(variants(role), HearingState, (False, True)):
            placement = Placement.consultation if inside else Placement.courtroom
            actor = Person("actor", role, pres, placement=placement)
            group = [Person("t1", Role.counsel, represents=("t2",), placement=Placement.consultation)]
            group.append(Person("t2", Role.defendant, placement=Placement.consultation))
            room = room_with(state, [actor, *group])
            expected = may_end_consult(actor.seat(), "cns_walk", state)
            assert outcome(room, lambda r: r.end_consult(1, ["t2"])) is expected, (role, pres, state, inside)


@pytest.mark.parametrize("role", [Role.judge, Role.chair, Role.clerk, Role.defendant])
def test_lifting_a_court_mute_follows_the_table(role: Role) -> None:
    """Unmuting one's own source that the presiding judge muted works only for those the table lets lift it."""
    for pres in variants(role, presiding_allowed=False):
        muter = Person("muter", Role.judge, presiding=True)
        me = Person("me", role, pres)
        room = room_with(HearingState.in_session, [muter, me])
        room.mute(1, "me", Source.microphone, True)
        expected = may_lift_mute(me.seat(), HearingState.in_session)
        assert outcome(room, lambda r: r.mute(2, "me", Source.microphone, False)) is expected, role


# --- the rules the table must say, stated plainly --------------------------------------------------


def test_nobody_but_the_presiding_judge_acts_on_a_judge() -> None:
    """A clerk or an associate judge can neither mute nor remove a judge; the presiding judge can, an associate."""
    for actor_role, pres in ((Role.clerk, False), (Role.judge, False), (Role.chair, False)):
        for action in (Action.remove, Action.mute_others):
            actor = Person("actor", actor_role, pres).seat()
            for target_pres in (False, True):
                judge = Person("target", Role.judge, target_pres).seat()
                assert not may_act_on(actor, action, judge, HearingState.in_session)
    presiding = Person("actor", Role.judge, True).seat()
    associate = Person("target", Role.judge).seat()
    assert may_act_on(presiding, Action.mute_others, associate, HearingState.in_session)
    assert may_act_on(presiding, Action.remove, associate, HearingState.in_session)


def test_clerk_removing_the_judge_is_refused_and_the_judge_link_still_works() -> None:
    """The clerk cannot remove (or mute) the judge, so the judge's link keeps working and the judge can adjourn."""
    judge, clerk = Person("judge", Role.judge, True), Person("clerk", Role.clerk)
    room = room_with(HearingState.in_session, [judge, clerk])
    assert not outcome(room, lambda r: r.remove(2, "judge"))
    assert not outcome(room, lambda r: r.mute(2, "judge", Source.microphone, True))
    assert "judge" not in room.removed
    room.members.pop("judge")
    booked = room.hearing.participant("judge")
    assert booked is not None
    rejoined = room.join(ParticipantInfo(id="judge", name="J", role=Role.judge, site="s"), 9, None, token_id="")
    assert not rejoined.resumed
    assert room.check_session(9, SessionAction.adjourn) is HearingState.adjourned


def test_only_the_presiding_judge_controls_the_session() -> None:
    """In a panel only the presiding judge starts, recesses, resumes and adjourns; clerk and associates only open."""
    assert may_act(Role.judge, HearingState.in_session, Placement.courtroom, Action.session_control, presiding=True)
    assert may_act(Role.chair, HearingState.in_session, Placement.courtroom, Action.session_control, presiding=True)
    for role, pres in ((Role.judge, False), (Role.clerk, False), (Role.chair, False)):
        assert not may_act(role, HearingState.in_session, Placement.courtroom, Action.session_control, presiding=pres)
        assert may_act(role, HearingState.scheduled, Placement.courtroom, Action.session_open, presiding=pres)


def test_remove_reissues_the_link() -> None:
    """A removal asks for the participant's link to be reissued, so it survives a restart of the server."""
    room = room_with(HearingState.in_session, [Person("judge", Role.judge, True), Person("witness", Role.witness)])
    effects = room.remove(1, "witness")
    assert RevokeLink("witness", "judge") in effects
