"""The one permission table: role x hearing state x placement -> what one may do.

Every server-side decision (who may publish, who receives whom, who may
moderate or admit) reads this module; the web client only mirrors it through
the ``permissions`` field of ``joined``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rooms.model import HearingState, Placement, Role, Source


class Action(StrEnum):
    """Moderation and session actions, as named on the WebSocket."""

    admit = "admit"
    deny = "deny"
    remove = "remove"
    mute_others = "mute_others"
    session_open = "session_open"
    session_control = "session_control"
    """start, recess, resume, adjourn."""
    call_witness = "call_witness"
    release_witness = "release_witness"
    consult = "consult"


_AV = frozenset({Source.camera, Source.microphone})
_AVE = frozenset({Source.camera, Source.microphone, Source.evidence})
_NONE: frozenset[Source] = frozenset()

_MODERATOR = frozenset(
    {
        Action.admit,
        Action.deny,
        Action.remove,
        Action.mute_others,
        Action.session_open,
        Action.session_control,
        Action.call_witness,
        Action.release_witness,
        Action.consult,
    }
)
_CLERK = _MODERATOR - {Action.session_control}


@dataclass(frozen=True)
class RoleRights:
    """One row of the table: what a role may do when it is in the courtroom."""

    publish: frozenset[Source]
    """Sources the role may publish."""
    actions: frozenset[Action]
    """Moderation and session actions the role may take."""
    enters: Placement
    """Where the role is placed on joining."""
    hidden: bool = False
    """Hidden roles are not listed in rosters (the recorder)."""


TABLE: dict[Role, RoleRights] = {
    Role.judge: RoleRights(_AVE, _MODERATOR, Placement.courtroom),
    Role.chair: RoleRights(_AVE, _MODERATOR, Placement.courtroom),
    Role.clerk: RoleRights(_AVE, _CLERK, Placement.courtroom),
    Role.prosecutor: RoleRights(_AVE, frozenset(), Placement.lobby),
    Role.counsel: RoleRights(_AVE, frozenset({Action.consult}), Placement.lobby),
    Role.party: RoleRights(_AVE, frozenset(), Placement.lobby),
    Role.attendee: RoleRights(_AVE, frozenset(), Placement.lobby),
    Role.defendant: RoleRights(_AV, frozenset(), Placement.lobby),
    Role.interpreter: RoleRights(_AV, frozenset(), Placement.lobby),
    Role.witness: RoleRights(_AV, frozenset(), Placement.witness_lobby),
    Role.observer: RoleRights(_NONE, frozenset(), Placement.lobby),
    Role.recorder: RoleRights(_NONE, frozenset(), Placement.courtroom, hidden=True),
}
"""The table itself. Every role has exactly one row."""

LIVE_STATES: frozenset[HearingState] = frozenset({HearingState.open, HearingState.in_session, HearingState.recess})
"""States in which media flows between participants in the courtroom."""

RECORDER_STATES: frozenset[HearingState] = frozenset({HearingState.in_session})
"""States in which the recorder receives media."""

CONSULT_ROLES: frozenset[Role] = frozenset({Role.defendant, Role.counsel})
"""The only roles that may be in a private consultation."""


@dataclass(frozen=True)
class Seat:
    """A connected participant as the table sees them."""

    participant_id: str
    role: Role
    placement: Placement
    consultation: str = ""
    """Id of the consultation group when ``placement`` is consultation."""


@dataclass(frozen=True)
class Permissions:
    """What one participant may do now; sent to the client in ``joined``."""

    publish: frozenset[Source]
    actions: frozenset[Action]
    receives: bool

    def as_dict(self) -> dict[str, list[str] | bool]:
        """The wire form: sorted lists of names."""
        return {
            "publish": sorted(s.value for s in self.publish),
            "actions": sorted(a.value for a in self.actions),
            "receives": self.receives,
        }


def initial_placement(role: Role) -> Placement:
    """Where a participant of ``role`` waits or sits on joining."""
    return TABLE[role].enters


def may_publish(role: Role, state: HearingState, placement: Placement, source: Source) -> bool:
    """Whether a participant may send ``source`` now."""
    if state not in LIVE_STATES or placement in (Placement.lobby, Placement.witness_lobby):
        return False
    return source in TABLE[role].publish


def may_act(role: Role, state: HearingState, placement: Placement, action: Action) -> bool:
    """Whether a participant may take a moderation or session action now."""
    if placement is not Placement.courtroom:
        return False
    if state in (HearingState.adjourned, HearingState.cancelled):
        return False
    return action in TABLE[role].actions


def may_receive(subscriber: Seat, publisher: Seat, state: HearingState) -> bool:
    """Whether ``subscriber`` gets any packet of ``publisher``'s media now."""
    if subscriber.participant_id == publisher.participant_id:
        return False
    waiting = (Placement.lobby, Placement.witness_lobby)
    if subscriber.placement in waiting or publisher.placement in waiting:
        return False
    if not TABLE[publisher.role].publish:
        return False
    if subscriber.role is Role.recorder:
        return state in RECORDER_STATES and publisher.placement is Placement.courtroom
    if state not in LIVE_STATES:
        return False
    in_consult = (subscriber.placement is Placement.consultation, publisher.placement is Placement.consultation)
    if any(in_consult):
        # A private consultation is sealed both ways: its members hear only each other.
        return all(in_consult) and subscriber.consultation == publisher.consultation
    return True


def permissions(role: Role, state: HearingState, placement: Placement) -> Permissions:
    """The client-facing summary of what ``role`` may do in this state and placement."""
    publish = frozenset(s for s in Source if may_publish(role, state, placement, s))
    actions = frozenset(a for a in Action if may_act(role, state, placement, a))
    receives = placement not in (Placement.lobby, Placement.witness_lobby) and (
        state in (RECORDER_STATES if role is Role.recorder else LIVE_STATES)
    )
    return Permissions(publish, actions, receives)
