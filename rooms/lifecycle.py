"""The hearing state machine: scheduled -> open -> in_session <-> recess -> adjourned.

A hearing may be cancelled while scheduled or open. Every other move is refused
with :class:`~rooms.errors.InvalidTransition`.
"""

from __future__ import annotations

from enum import StrEnum

from rooms.errors import InvalidTransition
from rooms.model import HearingState


class SessionAction(StrEnum):
    """What a judge (or clerk, for ``open``) does to the session."""

    open = "open"
    start = "start"
    recess = "recess"
    resume = "resume"
    adjourn = "adjourn"


_S = HearingState
TRANSITIONS: dict[tuple[HearingState, SessionAction], HearingState] = {
    (_S.scheduled, SessionAction.open): _S.open,
    (_S.open, SessionAction.start): _S.in_session,
    (_S.in_session, SessionAction.recess): _S.recess,
    (_S.recess, SessionAction.resume): _S.in_session,
    (_S.open, SessionAction.adjourn): _S.adjourned,
    (_S.in_session, SessionAction.adjourn): _S.adjourned,
    (_S.recess, SessionAction.adjourn): _S.adjourned,
}
"""Every allowed (state, action) pair and the state it leads to."""

CANCELLABLE: frozenset[HearingState] = frozenset({_S.scheduled, _S.open})
"""States from which a booking may be cancelled."""

RECORDED: frozenset[HearingState] = frozenset({_S.in_session})
"""States in which the hearing is recorded (recess is a logged gap)."""


def apply(state: HearingState, action: SessionAction) -> HearingState:
    """The state after ``action``, or :class:`InvalidTransition`."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise InvalidTransition(f"cannot {action.value} a hearing that is {state.value}") from None


def cancel(state: HearingState) -> HearingState:
    """The state after cancelling, or :class:`InvalidTransition`."""
    if state not in CANCELLABLE:
        raise InvalidTransition(f"cannot cancel a hearing that is {state.value}")
    return HearingState.cancelled


def is_editable(state: HearingState) -> bool:
    """Whether the booking (window, participants) may still change."""
    return state in CANCELLABLE
