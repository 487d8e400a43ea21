"""The hearing state machine (rooms.lifecycle): allowed moves, refused moves, cancelling, editing."""

from __future__ import annotations

import pytest

from rooms.errors import InvalidTransition
from rooms.lifecycle import CANCELLABLE, RECORDED, TRANSITIONS, SessionAction, apply, cancel, is_editable
from rooms.model import HearingState

S = HearingState
A = SessionAction


def test_a_full_session_walks_through_every_live_state() -> None:
    """open, start, recess, resume and adjourn take a scheduled hearing to adjourned."""
    state = S.scheduled
    seen = [state]
    for action in (A.open, A.start, A.recess, A.resume, A.adjourn):
        state = apply(state, action)
        seen.append(state)
    assert seen == [S.scheduled, S.open, S.in_session, S.recess, S.in_session, S.adjourned]


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("action", list(A))
def test_every_pair_outside_the_table_is_refused(state: HearingState, action: SessionAction) -> None:
    """Each (state, action) pair either leads where the table says or raises InvalidTransition naming both."""
    if (state, action) in TRANSITIONS:
        assert apply(state, action) is TRANSITIONS[(state, action)]
    else:
        with pytest.raises(InvalidTransition, match=f"cannot {action.value} a hearing that is {state.value}"):
            apply(state, action)


def test_adjourned_and_cancelled_are_final() -> None:
    """No session action leaves adjourned or cancelled."""
    for state in (S.adjourned, S.cancelled):
        assert not any((state, a) in TRANSITIONS for a in A)


def test_only_scheduled_or_open_hearings_can_be_cancelled_or_edited() -> None:
    """Cancelling and editing the booking are allowed before the session starts, refused afterwards."""
    for state in S:
        if state in (S.scheduled, S.open):
            assert cancel(state) is S.cancelled
            assert is_editable(state)
        else:
            with pytest.raises(InvalidTransition):
                cancel(state)
            assert not is_editable(state)
    assert frozenset({S.scheduled, S.open}) == CANCELLABLE


def test_only_in_session_is_recorded() -> None:
    """Recording runs in session only: recess is a gap, open is before, adjourned after."""
    assert frozenset({S.in_session}) == RECORDED
