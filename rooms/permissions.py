"""The one permission table: role x hearing state x placement -> what one may do, and to whom.

Every server-side decision (who may publish, who receives whom, who may
moderate or admit, whom an action may target) reads this module; the web
client only mirrors it through the ``permissions`` field of ``joined``.

Target rules (who may act on whom):

- judges and chairs (:data:`~rooms.model.PRESIDING_ROLES`) are acted on
  (muted, removed, moved) by the presiding one only; the presiding one is
  acted on by nobody but themselves (self-mute, leave);
- each targeted action has the roles and placements it may target
  (:data:`TARGETS`, :data:`TARGET_PLACEMENTS`); hidden roles are never targets;
- session control (start, recess, resume, adjourn) is the presiding judge's
  (or chair's) alone (:data:`PRESIDING_ACTIONS`); the clerk and associate
  judges may only open the hearing;
- a consultation is counsel with clients they represent (``represents`` on
  the booking), started by that counsel or by a moderator (:func:`may_consult`), and ended by any of its
  members (counsel or client) or a moderator (:func:`may_end_consult`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from rooms.model import CLIENT_ROLES, PRESIDING_ROLES, HearingState, Placement, Role, Source


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
    mute_all = "mute_all"
    """Mute everyone but the bench (:data:`BENCH_ROLES`)."""


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
        Action.mute_all,
    }
)
_CLERK = _MODERATOR - {Action.session_control}
# The clerk opens the courtroom (calls the parties in, checks who is present) but the session's legal moments
# (start, recess, resume, adjourn) are pronounced by the presiding judge. No delegation: the judge's own link
# always works (nobody but the presiding judge may remove a judge), so a judge can always come back and close.


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

CONSULT_ROLES: frozenset[Role] = frozenset({Role.counsel}) | CLIENT_ROLES
"""The only roles that may be in a private consultation: counsel and the defendants or parties they represent."""

BENCH_ROLES: frozenset[Role] = frozenset({Role.judge, Role.chair, Role.clerk})
"""The bench: left unmuted by ``mute_all``, and they need no hand to raise (they hold the floor)."""

PRESIDING_ACTIONS: frozenset[Action] = frozenset({Action.session_control})
"""Actions that, in a role that has them, only the presiding participant (judge or chair) may take."""

_VISIBLE = frozenset(r for r in Role if not TABLE[r].hidden)
_ANYWHERE = frozenset(Placement)

TARGETS: dict[Action, frozenset[Role]] = {
    Action.admit: _VISIBLE,
    Action.deny: _VISIBLE,
    Action.remove: _VISIBLE,
    Action.mute_others: _VISIBLE,
    Action.call_witness: frozenset({Role.witness}),
    Action.release_witness: frozenset({Role.witness}),
    Action.consult: CONSULT_ROLES,
}
"""The roles each targeted action may be taken on (judges and chairs further need the presiding actor)."""

TARGET_PLACEMENTS: dict[Action, frozenset[Placement]] = {
    Action.admit: frozenset({Placement.lobby}),
    Action.deny: frozenset({Placement.lobby}),
    Action.remove: _ANYWHERE,
    Action.mute_others: _ANYWHERE,
    Action.call_witness: frozenset({Placement.witness_lobby}),
    Action.release_witness: frozenset({Placement.courtroom}),
    Action.consult: frozenset({Placement.courtroom}),
}
"""Where the target of each targeted action must be."""


@dataclass(frozen=True)
class Seat:
    """A connected participant as the table sees them."""

    participant_id: str
    role: Role
    placement: Placement
    consultation: str = ""
    """Id of the consultation group when ``placement`` is consultation."""
    presiding: bool = False
    """The presiding judge (or chair) of the hearing (``Hearing.presiding_id``)."""
    represents: frozenset[str] = frozenset()
    """Counsel: ids of the participants they represent (``Participant.represents``)."""


@dataclass(frozen=True)
class Permissions:
    """What one participant may do now; sent to the client in ``joined``."""

    publish: frozenset[Source]
    actions: frozenset[Action]
    receives: bool
    raise_hand: bool = False
    """Whether the participant may raise their hand (:func:`may_raise_hand`)."""

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


def may_act(role: Role, state: HearingState, placement: Placement, action: Action, *, presiding: bool = False) -> bool:
    """Whether a participant may take a moderation or session action now (on somebody, see :func:`may_act_on`)."""
    if placement is not Placement.courtroom:
        return False
    if state in (HearingState.adjourned, HearingState.cancelled):
        return False
    if action in PRESIDING_ACTIONS and not presiding:
        return False
    return action in TABLE[role].actions


def _may_target(actor: Seat, action: Action, target: Seat) -> bool:
    """The target rules of one targeted action, apart from the actor's own right to take it."""
    if TABLE[target.role].hidden or target.participant_id == actor.participant_id:
        return False
    if target.role not in TARGETS[action] or target.placement not in TARGET_PLACEMENTS[action]:
        return False
    # Nobody but the presiding judge (or chair) acts on a judge; nobody acts on the presiding one.
    return target.role not in PRESIDING_ROLES or (actor.presiding and not target.presiding)


def may_act_on(actor: Seat, action: Action, target: Seat, state: HearingState) -> bool:
    """Whether ``actor`` may take the targeted ``action`` on ``target`` now (consult: see :func:`may_consult`)."""
    if action not in TARGETS or action is Action.consult:
        return False
    if not may_act(actor.role, state, actor.placement, action, presiding=actor.presiding):
        return False
    return _may_target(actor, action, target)


def may_lift_mute(actor: Seat, state: HearingState) -> bool:
    """Whether ``actor`` may unmute a source of their own that somebody else muted.

    Only someone who could have muted a participant of their own standing:
    a clerk, the presiding judge; not an associate judge muted by the presiding one.
    """
    if not may_act(actor.role, state, actor.placement, Action.mute_others, presiding=actor.presiding):
        return False
    return actor.role not in PRESIDING_ROLES or actor.presiding


def may_raise_hand(role: Role, state: HearingState, placement: Placement) -> bool:
    """Whether a participant may raise their hand now: someone who may speak in the courtroom, not the bench."""
    return (
        role not in BENCH_ROLES
        and placement is Placement.courtroom
        and may_publish(role, state, placement, Source.microphone)
    )


def may_lower_hand(actor: Seat, target: Seat, state: HearingState) -> bool:
    """Whether ``actor`` may lower ``target``'s raised hand: their own always, anyone's as judge or clerk."""
    if TABLE[target.role].hidden:
        return False
    if actor.participant_id == target.participant_id:
        return True
    return actor.role in BENCH_ROLES and may_act(
        actor.role, state, actor.placement, Action.mute_others, presiding=actor.presiding
    )


def mute_all_targets(actor: Seat, seats: Sequence[Seat], source: Source) -> list[Seat]:
    """Whom ``mute_all`` of ``source`` reaches: everyone but the bench and the actor who can send ``source`` and is
    not in a private consultation (a consultation is sealed; its members are muted when they come back only by
    name)."""
    return [
        s
        for s in seats
        if s.participant_id != actor.participant_id
        and s.role not in BENCH_ROLES
        and not TABLE[s.role].hidden
        and source in TABLE[s.role].publish
        and s.placement is not Placement.consultation
    ]


def may_consult(actor: Seat, group: Sequence[Seat], state: HearingState) -> bool:
    """Whether ``actor`` may put ``group`` into a private consultation now.

    The group is one or more counsel and one or more clients (defendants or
    parties), all in the courtroom, where every counsel represents every
    client. Counsel may start it only for a group they are in; a moderator
    for any such group.
    """
    if not may_act(actor.role, state, actor.placement, Action.consult, presiding=actor.presiding):
        return False
    ids = {s.participant_id for s in group}
    if len(ids) != len(group):
        return False
    others = [s for s in group if s.participant_id != actor.participant_id]
    if any(not _may_target(actor, Action.consult, s) for s in others):
        return False
    if any(s.role not in CONSULT_ROLES or s.placement is not Placement.courtroom for s in group):
        return False
    counsel = [s for s in group if s.role is Role.counsel]
    clients = [s for s in group if s.role in CLIENT_ROLES]
    if not counsel or not clients:
        return False
    if any(c.participant_id not in lawyer.represents for lawyer in counsel for c in clients):
        return False
    return actor.role is not Role.counsel or actor.participant_id in ids


def may_end_consult(actor: Seat, consultation: str, state: HearingState) -> bool:
    """Whether ``actor`` may end consultation ``consultation``: a moderator, or any member of it.

    The defendant (or party) may end it as well as their counsel: a private consultation is theirs, and
    either of them must be able to go back to the courtroom without waiting for the other.
    """
    if state in (HearingState.adjourned, HearingState.cancelled) or not consultation:
        return False
    if actor.consultation == consultation and actor.role in CONSULT_ROLES:
        return True
    return actor.role is not Role.counsel and may_act(
        actor.role, state, actor.placement, Action.consult, presiding=actor.presiding
    )


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


def permissions(role: Role, state: HearingState, placement: Placement, *, presiding: bool = False) -> Permissions:
    """The client-facing summary of what ``role`` may do in this state and placement."""
    publish = frozenset(s for s in Source if may_publish(role, state, placement, s))
    actions = frozenset(a for a in Action if may_act(role, state, placement, a, presiding=presiding))
    receives = placement not in (Placement.lobby, Placement.witness_lobby) and (
        state in (RECORDER_STATES if role is Role.recorder else LIVE_STATES)
    )
    return Permissions(publish, actions, receives, may_raise_hand(role, state, placement))
