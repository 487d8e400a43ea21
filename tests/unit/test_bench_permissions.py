"""The permission rules of hand-raise and "mute everyone but the bench" (rooms.permissions)."""

from __future__ import annotations

from rooms.model import HearingState, Placement, Role, Source
from rooms.permissions import (
    BENCH_ROLES,
    Action,
    Seat,
    may_act,
    may_lower_hand,
    may_raise_hand,
    mute_all_targets,
    permissions,
)

S = HearingState
P = Placement


def test_who_may_raise_a_hand() -> None:
    """Those who may speak in the courtroom raise hands; the bench, observers, waiting rooms and consultations not."""
    for role in (Role.prosecutor, Role.counsel, Role.defendant, Role.witness, Role.interpreter, Role.party):
        assert may_raise_hand(role, S.in_session, P.courtroom), role
        assert may_raise_hand(role, S.recess, P.courtroom), role
        assert not may_raise_hand(role, S.in_session, P.lobby), role
        assert not may_raise_hand(role, S.scheduled, P.courtroom), role
    assert not may_raise_hand(Role.defendant, S.in_session, P.consultation)
    for role in (Role.judge, Role.chair, Role.clerk, Role.observer, Role.recorder):
        assert not may_raise_hand(role, S.in_session, P.courtroom), role
    assert permissions(Role.defendant, S.in_session, P.courtroom).raise_hand
    assert not permissions(Role.judge, S.in_session, P.courtroom).raise_hand


def test_who_may_lower_a_hand() -> None:
    """Anyone lowers their own hand; the judge and the clerk lower anyone's; nobody else lowers another's."""
    defendant = Seat("d", Role.defendant, P.courtroom)
    prosecutor = Seat("p", Role.prosecutor, P.courtroom)
    for actor in (Seat("j", Role.judge, P.courtroom, presiding=True), Seat("c", Role.clerk, P.courtroom)):
        assert may_lower_hand(actor, defendant, S.in_session)
    assert may_lower_hand(defendant, defendant, S.in_session)
    assert not may_lower_hand(prosecutor, defendant, S.in_session)
    assert not may_lower_hand(Seat("c", Role.clerk, P.courtroom), defendant, S.adjourned)
    assert not may_lower_hand(Seat("j", Role.judge, P.courtroom), Seat("r", Role.recorder, P.courtroom), S.in_session)


def test_mute_all_is_the_bench_s_and_spares_it() -> None:
    """Only judges, chairs and the clerk may mute all; it reaches everyone who can speak but the bench and the
    members of a private consultation."""
    for role in Role:
        expected = role in BENCH_ROLES
        assert may_act(role, S.in_session, P.courtroom, Action.mute_all, presiding=True) == expected, role
    judge = Seat("j", Role.judge, P.courtroom, presiding=True)
    seats = [
        judge,
        Seat("j2", Role.judge, P.courtroom),
        Seat("c", Role.clerk, P.courtroom),
        Seat("p", Role.prosecutor, P.courtroom),
        Seat("d", Role.defendant, P.consultation, "g1"),
        Seat("w", Role.witness, P.witness_lobby),
        Seat("o", Role.observer, P.courtroom),
        Seat("r", Role.recorder, P.courtroom),
    ]
    assert [s.participant_id for s in mute_all_targets(judge, seats, Source.microphone)] == ["p", "w"]
    assert [s.participant_id for s in mute_all_targets(judge, seats, Source.evidence)] == ["p"]
