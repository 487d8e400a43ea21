"""The permission table (rooms.permissions): who publishes, who receives whom, who moderates."""

from __future__ import annotations

import itertools

import pytest

from rooms.model import HearingState, Placement, Role, Source
from rooms.permissions import (
    TABLE,
    Action,
    Seat,
    initial_placement,
    may_act,
    may_publish,
    may_receive,
    permissions,
)

S = HearingState
P = Placement
LIVE = (S.open, S.in_session, S.recess)


def seat(role: Role, placement: Placement | None = None, group: str = "") -> Seat:
    """A connected participant of ``role``, placed where the role enters unless told otherwise."""
    return Seat(f"p_{role.value}_{placement or ''}_{group}", role, placement or initial_placement(role), group)


def courtroom_seats() -> list[Seat]:
    """One participant of every role, each in the courtroom."""
    return [seat(r, P.courtroom) for r in Role]


def test_every_role_has_one_row() -> None:
    """The table covers every role exactly once."""
    assert set(TABLE) == set(Role)


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("placement", list(P))
def test_observers_never_publish(state: HearingState, placement: Placement) -> None:
    """An observer may publish no source in any state or placement."""
    assert not any(may_publish(Role.observer, state, placement, s) for s in Source)
    assert permissions(Role.observer, state, placement).publish == frozenset()


def test_defendant_and_witness_publish_camera_and_microphone_but_no_evidence() -> None:
    """Defendants and witnesses in court send audio and video; evidence display is for the others."""
    for role in (Role.defendant, Role.witness):
        assert may_publish(role, S.in_session, P.courtroom, Source.camera)
        assert may_publish(role, S.in_session, P.courtroom, Source.microphone)
        assert not may_publish(role, S.in_session, P.courtroom, Source.evidence)
    assert may_publish(Role.prosecutor, S.in_session, P.courtroom, Source.evidence)


@pytest.mark.parametrize("state", list(S))
def test_nobody_waiting_publishes_or_is_received(state: HearingState) -> None:
    """A participant in the lobby or witness lobby publishes nothing, receives nobody and is received by nobody."""
    for role, waiting in itertools.product(Role, (P.lobby, P.witness_lobby)):
        waiter = seat(role, waiting)
        assert not any(may_publish(role, state, waiting, s) for s in Source)
        assert not permissions(role, state, waiting).receives
        for other in courtroom_seats():
            assert not may_receive(other, waiter, state)
            assert not may_receive(waiter, other, state)


def test_witness_enters_witness_lobby_and_is_isolated_until_called() -> None:
    """A witness joins into the witness lobby, where nobody hears them and they hear nobody."""
    assert initial_placement(Role.witness) is P.witness_lobby
    witness = seat(Role.witness)
    for state, other in itertools.product(LIVE, courtroom_seats()):
        assert not may_receive(other, witness, state)
        assert not may_receive(witness, other, state)
    called = seat(Role.witness, P.courtroom)
    assert may_receive(seat(Role.judge, P.courtroom), called, S.in_session)


@pytest.mark.parametrize("state", LIVE)
def test_consultation_is_heard_only_by_its_own_group(state: HearingState) -> None:
    """Defendant and counsel in one consultation hear each other; nobody else hears them, nor do they hear the court."""
    defendant = seat(Role.defendant, P.consultation, "g1")
    counsel = seat(Role.counsel, P.consultation, "g1")
    other_group = seat(Role.counsel, P.consultation, "g2")
    assert may_receive(defendant, counsel, state)
    assert may_receive(counsel, defendant, state)
    for member in (defendant, counsel):
        assert not may_receive(other_group, member, state)
        assert not may_receive(member, other_group, state)
        for outsider in courtroom_seats():
            assert not may_receive(outsider, member, state)
            assert not may_receive(member, outsider, state)


def test_judge_observer_and_recorder_receive_nothing_of_a_consultation() -> None:
    """The judge, an observer and the recorder get no packet from a consultation in any state."""
    members = [seat(Role.defendant, P.consultation, "g1"), seat(Role.counsel, P.consultation, "g1")]
    listeners = [seat(Role.judge, P.courtroom), seat(Role.observer, P.courtroom), seat(Role.recorder, P.courtroom)]
    for state, member, listener in itertools.product(S, members, listeners):
        assert not may_receive(listener, member, state)


def test_recorder_receives_the_courtroom_only_in_session() -> None:
    """The recorder gets courtroom media in session only: not when open, in recess, adjourned or cancelled."""
    recorder = seat(Role.recorder)
    judge = seat(Role.judge, P.courtroom)
    for state in S:
        assert may_receive(recorder, judge, state) is (state is S.in_session)
        assert permissions(Role.recorder, state, P.courtroom).receives is (state is S.in_session)
    assert TABLE[Role.recorder].hidden


def test_nobody_receives_a_publisher_without_sources_or_themselves() -> None:
    """An observer or recorder is never received (they publish nothing), and nobody receives themselves."""
    judge = seat(Role.judge, P.courtroom)
    for silent in (seat(Role.observer, P.courtroom), seat(Role.recorder, P.courtroom)):
        assert not may_receive(judge, silent, S.in_session)
    assert not may_receive(judge, judge, S.in_session)


def test_courtroom_media_flows_only_in_live_states() -> None:
    """In the courtroom everyone receives everyone who publishes while the hearing is open, in session or in recess."""
    judge, defendant, observer = seat(Role.judge, P.courtroom), seat(Role.defendant, P.courtroom), seat(Role.observer)
    observer = seat(Role.observer, P.courtroom)
    for state in S:
        live = state in LIVE
        assert may_receive(observer, judge, state) is live
        assert may_receive(judge, defendant, state) is live
        assert may_publish(Role.judge, state, P.courtroom, Source.camera) is live


def test_only_moderators_act_and_only_from_the_courtroom() -> None:
    """Presiding judges and chairs control the session; clerks and associate judges moderate but do not control;
    others only consult."""
    assert may_act(Role.judge, S.in_session, P.courtroom, Action.session_control, presiding=True)
    assert not may_act(Role.judge, S.in_session, P.courtroom, Action.session_control)
    assert may_act(Role.chair, S.open, P.courtroom, Action.admit)
    assert may_act(Role.clerk, S.open, P.courtroom, Action.admit)
    assert not may_act(Role.clerk, S.in_session, P.courtroom, Action.session_control)
    assert may_act(Role.counsel, S.in_session, P.courtroom, Action.consult)
    assert not may_act(Role.defendant, S.in_session, P.courtroom, Action.consult)
    assert not may_act(Role.judge, S.in_session, P.lobby, Action.admit)
    assert not any(may_act(Role.judge, S.adjourned, P.courtroom, a) for a in Action)
    assert not any(may_act(Role.observer, S.in_session, P.courtroom, a) for a in Action)


def test_permissions_wire_form_is_sorted_names() -> None:
    """The client-facing summary lists sorted source and action names and the receive flag."""
    wire = permissions(Role.defendant, S.in_session, P.courtroom).as_dict()
    assert wire == {"publish": ["camera", "microphone"], "actions": [], "receives": True}
