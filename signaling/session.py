"""The live hearing room: who is connected, where they are, what they send and receive.

:class:`HearingRoom` is a pure state machine, one per hearing with someone
connected. Every method takes an input (a join, a moderation request, a lost
connection, a node report) and returns the :data:`Effect` list it causes:
messages to send to connections, connections to close, node-control commands,
audit traces. It does no I/O and never awaits; :mod:`signaling.ws` carries the
effects out in order, one room at a time. Refusals raise :class:`SessionError`
(or a :class:`~rooms.errors.DomainError`) before anything changes.

Every decision about media reads the one permission table
(:mod:`rooms.permissions`): after each change the room recomputes, for every
participant with a peer, the sources the node forwards from them
(``SetPublishing``) and the participants they receive (``SetReceiving``), and
emits only what changed. Moderation reads it too: whether the actor may take
an action at all, and whether they may take it on this target (nobody but the
presiding judge acts on a judge; counsel consults only with their own clients).

Connections are numbered by the caller (``conn``); a participant's current
connection may change (resume, a second tab), so effects address connections,
never participants.

Hidden participants (``TABLE[role].hidden``, the recorder) take part like any
other but are never listed in a roster, cannot be moderated, and are not
announced.

Changes made to the stored hearing outside the live session (the REST API)
reach the room through :meth:`HearingRoom.refresh`, which adopts the newer
hearing and returns what follows from it:

- a participant no longer booked (``DELETE .../participants/{pid}``) gets
  ``removed`` and close 4010, leaves the roster, loses their peer, and cannot
  rejoin this session;
- a connection that joined with a link that is no longer the participant's
  current one (``POST .../link`` reissued it) gets ``error`` {code: revoked}
  and close 4001, and the participant leaves the session (their new link
  joins afresh);
- a hearing that became cancelled (``DELETE /hearings/{id}``) or adjourned
  tells everyone ``state`` and closes every connection with 1000, exactly as
  an adjournment does: the session ended normally, the ``state`` message says
  why, and neither 4001 (the client's link is not at fault; it would invite a
  retry with a new link) nor 4010 (nobody was singled out) fits; the node's
  room is closed.

Each ejection leaves a ``participant_ejected`` audit event (actor: who
changed the booking; data: participant and reason); the booking change itself
was audited by the store with the change.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from protocol.client import (
    Admitted,
    Denied,
    Error,
    HearingInfo,
    IceServer,
    Joined,
    MediaHealth,
    MediaRestart,
    Muted,
    ParticipantInfo,
    PermissionsInfo,
    PlacementMsg,
    Removed,
    Reply,
    RequestId,
    RosterEntry,
    RosterMsg,
    StateMsg,
)
from protocol.node import (
    ClosePeer,
    CloseRoom,
    CreatePeer,
    DeclareTrack,
    NodeCommand,
    PeerHealth,
    PeerState,
    SetPublishing,
    SetReceiving,
)
from rooms.errors import DomainError, MutedByCourt, NotAllowed
from rooms.lifecycle import SessionAction, apply
from rooms.model import CLIENT_ROLES, Hearing, HearingState, Placement, Role, Source, new_id
from rooms.permissions import (
    CONSULT_ROLES,
    TABLE,
    TARGET_PLACEMENTS,
    TARGETS,
    Action,
    Seat,
    initial_placement,
    may_act,
    may_act_on,
    may_consult,
    may_end_consult,
    may_lift_mute,
    may_lower_hand,
    may_publish,
    may_raise_hand,
    may_receive,
    mute_all_targets,
    permissions,
)
from rooms.store import Trace
from signaling.snapshot import HoldSnapshot, MemberSnapshot, RoomSnapshot, SnapshotRefused, resume_digest
from signaling.turn import TurnIssuer

# --- close codes (PROTOCOL.md) -------------------------------------------------------------------

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_TOKEN = 4001
CLOSE_NOT_ALLOWED = 4003
CLOSE_TOO_MANY_MESSAGES = 4008
CLOSE_JOINED_ELSEWHERE = 4009
CLOSE_REMOVED = 4010

CLOSE_HEARING_ENDED = CLOSE_NORMAL
"""Adjourned or cancelled: ``state`` first, then this close for every connection (see the module docstring)."""

WAITING: frozenset[Placement] = frozenset({Placement.lobby, Placement.witness_lobby})

ENDED: frozenset[HearingState] = frozenset({HearingState.adjourned, HearingState.cancelled})
"""States in which the live session is over: nobody may join and everyone is disconnected."""

STALLED_AFTER_MS = 2000
"""A track the participant should be sending that is idle this long makes their media ``stalled``."""

REPORT_LOST_AFTER = 5.0
"""Seconds without a health report from the node after which a participant's media is ``lost``."""

RESTART_MIN_INTERVAL = 1.0
"""Seconds between two ``restart_media`` requests of one participant (``too_many_restarts`` otherwise)."""

RESTART_PENDING_FOR = 10.0
"""Seconds a restart counts as in flight (``restart_pending``) unless the client's new offer was answered first."""

AUDIT_COALESCE_SECONDS = 5.0
"""A participant's own publish and self-mute toggles of one source are audited at once, then at most once per this
many seconds (the state at the end of the window and how many changes it folds), so a toggling client cannot flood
the audit chain (20 toggles a second would be 72,000 events an hour)."""

MAX_DECLARED_TRACKS = 8
"""Distinct track ids a participant may declare (``publish`` with ``track_id``) on one peer connection."""

OFFER_BURST = 8
"""Client offers a participant may send at once (a first offer, a few refused collisions, a publish change)."""

OFFER_RATE = 0.5
"""Client offers per second a participant may send on average, beyond the burst (``too_many_offers``)."""

PEERLESS_ROLES: frozenset[Role] = frozenset({Role.recorder})
"""Roles that receive through the node's frame sink (``attach_recorder``), not a peer connection:
the room sends them ``SetReceiving``/``SetPublishing`` but never ``CreatePeer``/``ClosePeer``."""


class SessionError(DomainError):
    """A request the live session refuses; nothing changed. ``code`` is stable snake_case."""

    def __init__(self, code: str, detail: str, *, close: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.close = close
        """When set, the connection is closed with this code after the error is sent."""


# --- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send ``message`` to connection ``conn``."""

    conn: int
    message: Reply


@dataclass(frozen=True)
class Close:
    """Close connection ``conn`` with a WebSocket close code."""

    conn: int
    code: int
    reason: str


@dataclass(frozen=True)
class Command:
    """Send a node-control command to the media node."""

    command: NodeCommand


@dataclass(frozen=True)
class Audit:
    """Append one event to the hearing's audit chain."""

    trace: Trace


@dataclass(frozen=True)
class StartGrace:
    """Arm the grace timer of a participant whose connection dropped; call :meth:`HearingRoom.expire` after it."""

    participant_id: str
    seconds: float
    epoch: int
    """Which drop this timer belongs to; a timer of an earlier drop does nothing."""


@dataclass(frozen=True)
class RevokeLink:
    """Reissue ``participant_id``'s join link in the store (a removal outlives the process); audited as ``actor``."""

    participant_id: str
    actor: str


@dataclass(frozen=True)
class AuditLater:
    """Call :meth:`HearingRoom.flush_audit` for ``participant_id`` after ``seconds`` (coalesced toggles)."""

    participant_id: str
    seconds: float


Effect = Send | Close | Command | Audit | StartGrace | RevokeLink | AuditLater


# --- members ----------------------------------------------------------------------------------


@dataclass
class _Hold:
    """A toggle in its coalescing window: the latest value and the changes not yet audited."""

    value: bool
    changes: int = 0


@dataclass
class Member:
    """A participant of the live session (connected, or within the grace period after a drop)."""

    info: ParticipantInfo
    conn: int
    placement: Placement
    resume_key: str
    consultation: str = ""
    consultation_since: float | None = None
    """Unix seconds (the room's clock) when the current consultation began (roster ``consultation_since``)."""
    connected: bool = True
    muted_by: dict[Source, str] = field(default_factory=dict)
    """Muted sources and who muted each."""
    publishing: set[Source] = field(default_factory=set)
    media: PeerState | None = None
    """The raw state of the participant's peer on the node (roster ``peer``)."""
    has_peer: bool = False
    negotiated: bool = False
    """The client's first offer was answered; only then does the node get ``SetReceiving`` (and offer)."""
    drops: int = 0
    """How often the connection dropped; identifies the current grace timer."""
    token_id: str = ""
    """The ``jti`` of the join link the current connection joined with ("" when unknown: not checked)."""
    health: MediaHealth = "none"
    """Media health as the roster shows it (``media``)."""
    health_since: float | None = None
    """Unix seconds when ``health`` took its value."""
    report: PeerHealth | None = None
    """The node's last health report of the current peer."""
    report_at: float | None = None
    """When that report arrived (the room's clock)."""
    connected_at: float | None = None
    """When the current peer last became connected."""
    peer_epoch: int = 0
    """Counts the peers made for this member; an answer of an earlier peer is stale."""
    restart_at: float | None = None
    """When the last media restart began; in flight until the new peer's first offer is answered."""
    restarting: bool = False
    declared: dict[str, Source] = field(default_factory=dict)
    """Track ids declared to the node on the current peer, and the source each carries."""
    holds: dict[tuple[str, Source], _Hold] = field(default_factory=dict)
    """Own toggles ("publishing"/"muted"/"hand", source) in an audit coalescing window."""
    hand_raised_at: float | None = None
    """Unix seconds when the participant raised their hand (roster ``hand_raised_at``), None when lowered."""
    disconnected_at: float | None = None
    """Unix seconds (the room's clock) of the last drop: a restored room counts the grace left from it."""
    resume_digest: str = ""
    """SHA-256 of the resume key, for a member restored from a snapshot (which stores no key); a resume checks
    the key against it until the member gets a new key."""

    @property
    def id(self) -> str:
        """The participant id."""
        return self.info.id

    @property
    def role(self) -> Role:
        """The participant's role."""
        return self.info.role

    @property
    def hidden(self) -> bool:
        """Hidden members (the recorder) are not in rosters and cannot be moderated."""
        return TABLE[self.info.role].hidden

    def seat(self) -> Seat:
        """The member as the permission table sees them."""
        return Seat(self.id, self.role, self.placement, self.consultation)


@dataclass
class JoinOutcome:
    """What a join did: the effects and whether an earlier session was resumed."""

    effects: list[Effect]
    resumed: bool
    replaced_conn: int | None
    """The participant's earlier connection, closed with 4009, if any."""


# --- the room ---------------------------------------------------------------------------------


class HearingRoom:
    """The live session of one hearing: placements, mute state, consultations, resume keys, roster."""

    def __init__(
        self,
        hearing: Hearing,
        *,
        grace_seconds: float = 30.0,
        ice_servers: Iterable[IceServer] = (),
        clock: Callable[[], float] = time.time,
        timezone: str = "",
        in_session_since: float | None = None,
        turn: TurnIssuer | None = None,
    ) -> None:
        self.hearing = hearing
        self.clock = clock
        """Unix seconds now (media health timing); tests pass their own."""
        self.timezone = timezone
        """The court's time zone (IANA name), shown to clients in ``joined.hearing``."""
        self.in_session_since = in_session_since if hearing.state is HearingState.in_session else None
        """Unix seconds when the current ``in_session`` period began (the room saw it, or the hub read it from the
        audit chain when it made the room); None outside a session."""
        self.grace_seconds = grace_seconds
        self.ice_servers = tuple(ice_servers)
        self.turn = turn
        """Issues each joining participant a fresh time-limited TURN credential (none: no TURN)."""
        self.members: dict[str, Member] = {}
        self.removed: dict[str, str] = {}
        """Participants removed from this session, with the link (``token_id``) they held: that link (or a join
        without one) cannot rejoin this session; a link issued after the removal can."""
        self._node_closed = False
        """CloseRoom was sent (the session ended): the node has no room for this hearing any more."""
        self._sent_publishing: dict[str, tuple[Source, ...]] = {}
        self._sent_receiving: dict[str, tuple[str, ...]] = {}
        self._offer_budget: dict[str, tuple[float, float]] = {}
        """Per participant (kept across resumes): offers left in the bucket, and when it was last refilled."""

    # --- reading -----------------------------------------------------------------------------

    @property
    def hearing_id(self) -> str:
        """The hearing's id."""
        return self.hearing.id

    @property
    def state(self) -> HearingState:
        """The hearing's lifecycle state as the session knows it."""
        return self.hearing.state

    @property
    def empty(self) -> bool:
        """No visible member is left (connected or in grace); hidden ones (the recorder) do not keep a room alive."""
        return all(m.hidden for m in self.members.values())

    def forget(self) -> list[Effect]:
        """The room is given up (it is :attr:`empty`): audit pending toggles, close the hidden members' connections
        and the node's room (unless the session's end closed it already); forget everyone."""
        effects: list[Effect] = []
        for member in list(self.members.values()):
            effects += self._flush_holds(member)
            if member.connected:
                effects.append(Close(member.conn, CLOSE_NORMAL, "room closed"))
            self.members.pop(member.id)
            self._forget_sent(member.id)
        if not self._node_closed:
            self._node_closed = True
            effects.append(Command(CloseRoom(hearing_id=self.hearing_id)))
        return effects

    def member_of_conn(self, conn: int) -> Member | None:
        """The member whose current connection is ``conn``."""
        return next((m for m in self.members.values() if m.conn == conn and m.connected), None)

    def conn_of(self, participant_id: str) -> int | None:
        """The current connection of a connected participant."""
        member = self.members.get(participant_id)
        return member.conn if member is not None and member.connected else None

    def roster(self) -> tuple[RosterEntry, ...]:
        """Every visible member, in order of joining."""
        self._update_health()
        return self._roster_entries()

    def _roster_entries(self) -> tuple[RosterEntry, ...]:
        return tuple(
            RosterEntry(
                id=m.id,
                name=m.info.name,
                role=m.role,
                site=m.info.site,
                site_name=m.info.site_name,
                placement=m.placement,
                consultation=m.consultation or None,
                connected=m.connected,
                media=m.health,
                muted=tuple(sorted(m.muted_by)),
                publishing=tuple(sorted(m.publishing)),
                media_since=m.health_since,
                peer=m.media,
                consultation_since=m.consultation_since if m.consultation else None,
                muted_by_court=tuple(sorted(s for s, by in m.muted_by.items() if by != m.id)),
                hand_raised_at=m.hand_raised_at,
            )
            for m in self.members.values()
            if not m.hidden
        )

    def seat_of(self, member: Member) -> Seat:
        """``member`` as the permission table's target rules see them: presiding, and whom they represent."""
        booked = self.hearing.participant(member.id)
        return Seat(
            member.id,
            member.role,
            member.placement,
            member.consultation,
            presiding=member.id == self.hearing.presiding_id,
            represents=frozenset(booked.represents) if booked is not None else frozenset(),
        )

    def permissions_of(self, member: Member) -> PermissionsInfo:
        """What ``member`` may do now, from the permission table."""
        perms = permissions(member.role, self.state, member.placement, presiding=member.id == self.hearing.presiding_id)
        return PermissionsInfo(
            publish=tuple(sorted(perms.publish)),
            actions=tuple(sorted(a.value for a in perms.actions)),
            receives=perms.receives,
            raise_hand=perms.raise_hand,
        )

    def hearing_info(self) -> HearingInfo:
        """The hearing as ``joined`` shows it."""
        h = self.hearing
        return HearingInfo(
            id=h.id,
            case_number=h.case_number,
            title=h.title,
            kind=h.kind,
            state=h.state,
            starts_at=h.starts_at.isoformat(),
            ends_at=h.ends_at.isoformat(),
            timezone=self.timezone,
            in_session_since=self.in_session_since,
        )

    # --- joining and leaving -------------------------------------------------------------------

    def join(
        self,
        info: ParticipantInfo,
        conn: int,
        resume: str | None,
        *,
        ref: RequestId | None = None,
        token_id: str | None = None,
    ) -> JoinOutcome:
        """A verified participant joins on connection ``conn``, resuming with ``resume`` if it matches.

        A second connection of a participant without the right resume key
        starts a fresh session (initial placement) and closes the earlier
        connection with 4009; with the key it keeps placement and mute state.

        ``token_id`` is the ``jti`` of the link the participant joined with;
        when given it must still be the participant's current one in the
        hearing the room knows (which may be newer than the one the link was
        checked against), or the join is refused as ``revoked`` (4001). The
        room keeps it to close this connection if the link is reissued later.
        """
        barred = self.removed.get(info.id)
        if barred is not None and (token_id is None or not barred or token_id == barred):
            raise SessionError("removed", "you were removed from this hearing", close=CLOSE_REMOVED)
        if self.state in ENDED:
            raise SessionError(
                "hearing_closed", f"the hearing is {self.state.value}; it cannot be joined", close=CLOSE_NOT_ALLOWED
            )
        if token_id is not None:
            booked = self.hearing.participant(info.id)
            if booked is None:
                raise SessionError(
                    "revoked", "the participant of this link was removed from the hearing", close=CLOSE_BAD_TOKEN
                )
            if booked.token_id != token_id:
                raise SessionError(
                    "revoked",
                    "a newer join link was issued for this participant; this one no longer works",
                    close=CLOSE_BAD_TOKEN,
                )
        if barred is not None:
            # A link issued after the removal: the court let this participant back.
            del self.removed[info.id]
        effects: list[Effect] = []
        old = self.members.get(info.id)
        replaced: int | None = None
        if old is not None and old.connected:
            replaced = old.conn
            effects.append(Close(old.conn, CLOSE_JOINED_ELSEWHERE, "joined elsewhere"))
        resumed = old is not None and resume is not None and _resume_matches(old, resume)
        if old is not None and resumed:
            member = old
            member.conn = conn
            member.connected = True
            member.resume_key = _resume_key()
            member.info = info
            member.token_id = token_id or ""
            effects.append(Audit(Trace(info.id, "participant_resumed", {"placement": member.placement.value})))
            if member.has_peer and info.role not in PEERLESS_ROLES:
                # The client comes back with a new peer connection: the node forgets the old peer and what it
                # received (ClosePeer) and gets a fresh one that waits for the client's first offer.
                effects += self._close_peer(member)
                effects += self._create_peer(member)
        else:
            if old is not None:
                effects += self._drop(old)
            placement = initial_placement(info.role)
            member = Member(
                info=info, conn=conn, placement=placement, resume_key=_resume_key(), token_id=token_id or ""
            )
            self.members[info.id] = member
            effects.append(
                Audit(Trace(info.id, "participant_joined", {"role": info.role.value, "placement": placement.value}))
            )
            if placement not in WAITING:
                effects += self._create_peer(member)
        effects.append(
            Send(
                conn,
                Joined(
                    ref=ref,
                    participant=info,
                    hearing=self.hearing_info(),
                    placement=member.placement,
                    consultation=member.consultation or None,
                    permissions=self.permissions_of(member),
                    roster=self.roster(),
                    ice_servers=self.ice_servers_for(info.id),
                    resume=member.resume_key,
                    resumed=resumed,
                ),
            )
        )
        effects += self._after_change(roster=not member.hidden)
        return JoinOutcome(effects, resumed, replaced)

    def ice_servers_for(self, participant_id: str) -> tuple[IceServer, ...]:
        """The ICE servers of a ``joined``: the plain STUN ones, then TURN with a credential issued now."""
        if self.turn is None:
            return self.ice_servers
        return (*self.ice_servers, self.turn.issue(participant_id, self.clock()))

    def disconnect(self, conn: int) -> list[Effect]:
        """Connection ``conn`` dropped without ``leave``: its member keeps their place for the grace period."""
        member = self.member_of_conn(conn)
        if member is None:
            return []
        member.connected = False
        member.drops += 1
        member.disconnected_at = self.clock()
        effects: list[Effect] = [
            Audit(Trace(member.id, "participant_disconnected", {"grace_seconds": self.grace_seconds})),
            StartGrace(member.id, self.grace_seconds, member.drops),
        ]
        if not member.hidden:
            effects += self._broadcast(RosterMsg(participants=self.roster()))
        return effects

    def expire(self, participant_id: str, epoch: int) -> list[Effect]:
        """The grace period of drop ``epoch`` is over: the participant leaves unless they came back."""
        member = self.members.get(participant_id)
        if member is None or member.connected or member.drops != epoch:
            return []
        effects: list[Effect] = [Audit(Trace(member.id, "participant_left", {"reason": "connection_lost"}))]
        effects += self._drop(member)
        effects += self._after_change(roster=not member.hidden)
        return effects

    def leave(self, conn: int, *, ref: RequestId | None = None) -> list[Effect]:
        """The member of ``conn`` leaves for good."""
        member = self._actor(conn)
        effects: list[Effect] = [Audit(Trace(member.id, "participant_left", {"reason": "left"}))]
        effects += self._drop(member)
        effects.append(Close(conn, CLOSE_NORMAL, "left"))
        effects += self._after_change(roster=not member.hidden)
        return effects

    def refresh(self, hearing: Hearing, *, actor: str = "system") -> list[Effect]:
        """The stored hearing changed outside the session (REST, or read again on a join): adopt it and follow.

        ``actor`` is who changed it (the audit actor of the ejections). An
        older version than the one the room has is ignored. In order:

        1. every visible member no longer booked is removed (``removed``,
           close 4010, barred from rejoining this session);
        2. every visible member whose connection joined with a link other than
           the participant's current one is ejected (``error`` revoked, close
           4001); they may join again with the new link;
        3. an adjourned or cancelled hearing ends the session for everyone
           (``state``, close 1000, node room closed); any other new state is
           announced (``state`` with permissions);
        4. what the node forwards is recomputed and the roster re-sent.

        A change of title or window only updates the hearing (no message).
        """
        if hearing.id != self.hearing_id or hearing.version < self.hearing.version:
            return []
        changed = hearing.state != self.hearing.state
        self._session_clock(hearing.state)
        # Adopted first: the placement messages of an ejection (an ended consultation) carry current permissions.
        self.hearing = hearing
        effects: list[Effect] = []
        ejected = False
        for member in list(self.members.values()):
            if member.hidden:
                # The recorder is not a booked participant and joins without a link.
                continue
            booked = hearing.participant(member.id)
            if booked is None:
                effects += self._eject(member, actor, "unbooked", Removed(reason="unbooked"), CLOSE_REMOVED, "removed")
                self.removed[member.id] = member.token_id
                ejected = True
            elif member.token_id and booked.token_id != member.token_id:
                message = Error(
                    code="revoked", message="a newer join link was issued for you; this one no longer works"
                )
                effects += self._eject(member, actor, "link_revoked", message, CLOSE_BAD_TOKEN, "revoked")
                ejected = True
        if changed and hearing.state in ENDED:
            return effects + self._state_changed() + self._end_session()
        if changed:
            effects += self._state_changed()
        if ejected:
            effects += self._after_change(roster=True)
        return effects

    # --- moderation ----------------------------------------------------------------------------

    def admit(self, conn: int, target_id: str, *, ref: RequestId | None = None) -> list[Effect]:
        """Admit a participant waiting in the lobby into the courtroom."""
        actor, target = self._may_on(conn, Action.admit, target_id)
        target.placement = Placement.courtroom
        effects: list[Effect] = [
            Audit(Trace(actor.id, "participant_admitted", {"participant_id": target.id})),
            *self._create_peer(target),
        ]
        if target.connected:
            effects.append(Send(target.conn, Admitted()))
        effects.append(self._placement_msg(target))
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    def deny(self, conn: int, target_id: str, reason: str = "", *, ref: RequestId | None = None) -> list[Effect]:
        """Refuse a participant waiting in the lobby; their connection closes (4003)."""
        actor, target = self._may_on(conn, Action.deny, target_id)
        effects: list[Effect] = [Audit(Trace(actor.id, "participant_denied", {"participant_id": target.id}))]
        if target.connected:
            denied = Denied(reason=reason, by=actor.id, by_name=actor.info.name, by_role=actor.role)
            effects += [Send(target.conn, denied), Close(target.conn, CLOSE_NOT_ALLOWED, "denied")]
        effects += self._drop(target)
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    def remove(self, conn: int, target_id: str, reason: str = "", *, ref: RequestId | None = None) -> list[Effect]:
        """Remove a participant from the session (close 4010); they cannot rejoin it."""
        actor, target = self._may_on(conn, Action.remove, target_id)
        effects: list[Effect] = [Audit(Trace(actor.id, "participant_removed", {"participant_id": target.id}))]
        if target.connected:
            removed = Removed(reason=reason, by=actor.id, by_name=actor.info.name, by_role=actor.role)
            effects += [Send(target.conn, removed), Close(target.conn, CLOSE_REMOVED, "removed")]
        effects += self._drop(target)
        self.removed[target.id] = target.token_id
        # The removal outlives this process: the link the participant holds is reissued in the store.
        effects.append(RevokeLink(target.id, actor.id))
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    def mute(
        self, conn: int, target_id: str, source: Source, muted: bool = True, *, ref: RequestId | None = None
    ) -> list[Effect]:
        """Mute or unmute one source; anyone for themselves, others as the permission table's target rules say.

        A source muted by a moderator stays muted until a moderator unmutes it
        (a clerk or the presiding judge may lift such a mute of their own, see
        :func:`rooms.permissions.may_lift_mute`); anyone else's own unmute is
        refused with ``muted_by_court``. A moderator muting a source its owner
        had muted themselves makes it a court mute (``by`` the moderator).
        """
        actor = self._actor(conn)
        if target_id != actor.id:
            actor, target = self._may_on(conn, Action.mute_others, target_id)
        else:
            target = actor
        by = target.muted_by.get(source)
        lifting = not muted and target is actor and by is not None and by != actor.id
        if lifting and not may_lift_mute(self.seat_of(actor), self.state):
            raise MutedByCourt(f"your {source.value} was muted by the court; only the court may unmute it")
        if muted and target is not actor and by == target.id:
            # Self-muted, now muted by the court: the owner may no longer lift it (nothing changes on the node).
            target.muted_by[source] = actor.id
            audit = Audit(Trace(actor.id, "participant_muted", {"participant_id": target.id, "source": source.value}))
            message = Muted(participant_id=target.id, source=source, by=actor.id, muted=True)
            return [audit, *self._broadcast(message, ref=ref, actor=actor), *self._after_change(roster=True)]
        if muted == (source in target.muted_by):
            return [Send(conn, Muted(ref=ref, participant_id=target.id, source=source, by=by or actor.id, muted=muted))]
        if muted:
            target.muted_by[source] = actor.id
        else:
            del target.muted_by[source]
        message = Muted(participant_id=target.id, source=source, by=actor.id, muted=muted)
        effects: list[Effect]
        if target is actor:
            effects = self._toggled(actor, "muted", source, muted)
        else:
            action = "participant_muted" if muted else "participant_unmuted"
            effects = [Audit(Trace(actor.id, action, {"participant_id": target.id, "source": source.value}))]
        effects += self._broadcast(message, ref=ref, actor=actor)
        effects += self._after_change(roster=True)
        return effects

    def raise_hand(self, conn: int, *, ref: RequestId | None = None) -> list[Effect]:
        """The participant asks for the floor; the roster (``hand_raised_at``) tells the bench, in order."""
        member = self._actor(conn)
        if not may_raise_hand(member.role, self.state, member.placement):
            raise NotAllowed(
                f"a {member.role.value} in the {member.placement.value} may not raise their hand"
                f" while the hearing is {self.state.value}"
            )
        if member.hand_raised_at is not None:
            return [Send(conn, RosterMsg(ref=ref, participants=self.roster()))]
        member.hand_raised_at = self.clock()
        effects = self._toggled(member, "hand", Source.microphone, True)
        effects += self._after_change(roster=True, ref=ref, actor=member)
        return effects

    def lower_hand(self, conn: int, target_id: str | None = None, *, ref: RequestId | None = None) -> list[Effect]:
        """Lower a raised hand: one's own, or (judge, chair, clerk) anyone's; a lowered hand stays lowered."""
        actor = self._actor(conn)
        target = actor if target_id is None or target_id == actor.id else self._target(target_id)
        if not may_lower_hand(self.seat_of(actor), self.seat_of(target), self.state):
            raise NotAllowed("only the judge or the clerk may lower someone else's hand")
        if target.hand_raised_at is None:
            return [Send(conn, RosterMsg(ref=ref, participants=self.roster()))]
        target.hand_raised_at = None
        effects: list[Effect]
        if target is actor:
            effects = self._toggled(actor, "hand", Source.microphone, False)
        else:
            effects = [Audit(Trace(actor.id, "hand_lowered", {"participant_id": target.id}))]
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    def mute_all(
        self, conn: int, source: Source = Source.microphone, muted: bool = True, *, ref: RequestId | None = None
    ) -> list[Effect]:
        """Mute (or unmute) ``source`` of everyone but the bench: court mutes, one audit event, one ``muted`` each.

        Muting skips whoever has it muted already, their own mute included: it stays
        theirs, so "unmute all" later lifts only what the court muted and never turns
        on a microphone its owner had switched off (a single :meth:`mute` does make a
        self-mute a court mute). Members in a private consultation are not touched.
        """
        actor = self._may(conn, Action.mute_all)
        seats = [self.seat_of(m) for m in self.members.values()]
        changed: list[Member] = []
        for seat in mute_all_targets(self.seat_of(actor), seats, source):
            target = self.members[seat.participant_id]
            by = target.muted_by.get(source)
            if muted and by is None:
                target.muted_by[source] = actor.id
                changed.append(target)
            elif not muted and by is not None and by != target.id:
                del target.muted_by[source]
                changed.append(target)
        effects: list[Effect] = [
            Audit(
                Trace(
                    actor.id,
                    "all_muted" if muted else "all_unmuted",
                    {"source": source.value, "participant_ids": [m.id for m in changed]},
                )
            )
        ]
        for target in changed:
            effects += self._broadcast(Muted(participant_id=target.id, source=source, by=actor.id, muted=muted))
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    def _session_clock(self, new_state: HearingState) -> None:
        """Note when an ``in_session`` period begins (and forget it when the period ends)."""
        if new_state is not HearingState.in_session:
            self.in_session_since = None
        elif self.hearing.state is not HearingState.in_session or self.in_session_since is None:
            self.in_session_since = self.clock()

    def check_session(self, conn: int, action: SessionAction) -> HearingState:
        """The state ``action`` leads to, if the member of ``conn`` may take it now (nothing changes)."""
        needed = Action.session_open if action is SessionAction.open else Action.session_control
        self._may(conn, needed)
        return apply(self.state, action)

    def session_changed(self, hearing: Hearing, actor_conn: int, *, ref: RequestId | None = None) -> list[Effect]:
        """The store accepted a session action: adopt the stored hearing and tell everyone.

        The audit event was written by the store together with the new state.
        On adjournment the node's room is closed and every connection ends (1000).
        """
        self._session_clock(hearing.state)
        self.hearing = hearing
        effects = self._state_changed(ref=ref, actor_conn=actor_conn)
        if hearing.state in ENDED:
            effects += self._end_session()
        return effects

    def call_witness(self, conn: int, target_id: str, *, ref: RequestId | None = None) -> list[Effect]:
        """Bring a witness from the witness lobby into the courtroom."""
        actor, target = self._may_on(conn, Action.call_witness, target_id)
        target.placement = Placement.courtroom
        effects: list[Effect] = [
            Audit(Trace(actor.id, "witness_called", {"participant_id": target.id})),
            *self._create_peer(target),
            self._placement_msg(target),
        ]
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    def release_witness(self, conn: int, target_id: str, *, ref: RequestId | None = None) -> list[Effect]:
        """Send a witness from the courtroom back to the witness lobby."""
        actor, target = self._may_on(conn, Action.release_witness, target_id)
        target.placement = Placement.witness_lobby
        effects: list[Effect] = [
            Audit(Trace(actor.id, "witness_released", {"participant_id": target.id})),
            *self._close_peer(target),
            self._placement_msg(target),
        ]
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    def consult(self, conn: int, participant_ids: Iterable[str], *, ref: RequestId | None = None) -> list[Effect]:
        """Start a private consultation of counsel with the client(s) they represent (moderator, or that counsel)."""
        actor = self._may(conn, Action.consult)
        ids = list(dict.fromkeys(participant_ids))
        group = [self._target(pid) for pid in ids]
        roles = {m.role for m in group}
        if not roles <= CONSULT_ROLES or Role.counsel not in roles or not roles & CLIENT_ROLES:
            raise SessionError(
                "invalid_target", "a consultation is counsel with a defendant or party they represent, nobody else"
            )
        if actor.role is Role.counsel and actor.id not in ids:
            raise NotAllowed("counsel may only consult with their own client")
        for m in group:
            if m.placement is not Placement.courtroom:
                raise SessionError("invalid_target", f"{m.info.name} is not in the courtroom ({m.placement.value})")
        if not may_consult(self.seat_of(actor), [self.seat_of(m) for m in group], self.state):
            raise NotAllowed("counsel consults only with the clients they represent (as booked)")
        group_id = new_id("cns")
        since = self.clock()
        for m in group:
            m.placement = Placement.consultation
            m.consultation = group_id
            m.consultation_since = since
        effects: list[Effect] = [
            Audit(Trace(actor.id, "consultation_started", {"consultation": group_id, "participant_ids": ids})),
            *(self._placement_msg(m) for m in group),
        ]
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    def end_consult(self, conn: int, participant_ids: Iterable[str], *, ref: RequestId | None = None) -> list[Effect]:
        """End the consultation these participants are in (judge, clerk, or counsel in it)."""
        actor = self._actor(conn)
        named = [self._target(pid) for pid in dict.fromkeys(participant_ids)]
        groups = {m.consultation for m in named}
        if len(groups) != 1 or "" in groups:
            raise SessionError("invalid_target", "these participants are not together in one consultation")
        (group_id,) = groups
        if not may_end_consult(self.seat_of(actor), group_id, self.state):
            raise NotAllowed("only the judge, the clerk or counsel in the consultation may end it")
        effects = self._end_group(group_id, actor.id, "ended")
        effects += self._after_change(roster=True, ref=ref, actor=actor)
        return effects

    # --- media ---------------------------------------------------------------------------------

    def media_member(self, conn: int) -> Member:
        """The member of ``conn`` if they may exchange SDP and ICE (admitted: not in the lobby)."""
        member = self._actor(conn)
        if member.placement in WAITING or not member.has_peer:
            raise SessionError("not_admitted", "media is for admitted participants; wait to be admitted")
        return member

    def check_offer_rate(self, participant_id: str, now: float) -> None:
        """Take one offer from the participant's budget (``OFFER_BURST``, refilled at ``OFFER_RATE``), or refuse.

        Each offer costs the node SDP work on its event loop; the budget survives a resume, so dropping and
        resuming does not refill it.
        """
        tokens, last = self._offer_budget.get(participant_id, (float(OFFER_BURST), now))
        tokens = min(float(OFFER_BURST), tokens + max(now - last, 0.0) * OFFER_RATE)
        if tokens < 1.0:
            self._offer_budget[participant_id] = (tokens, now)
            raise SessionError("too_many_offers", "too many offers; wait a few seconds before offering again")
        self._offer_budget[participant_id] = (tokens - 1.0, now)

    def publish(
        self, conn: int, source: Source, enabled: bool, track_id: str | None, *, ref: RequestId | None = None
    ) -> list[Effect]:
        """Declare publishing state of a source, and which track carries it."""
        member = self.media_member(conn)
        if enabled and source not in TABLE[member.role].publish:
            raise SessionError("publish_not_allowed", f"a {member.role.value} may not publish {source.value}")
        effects: list[Effect] = []
        if track_id and member.declared.get(track_id) != source:
            if track_id not in member.declared and len(member.declared) >= MAX_DECLARED_TRACKS:
                raise SessionError(
                    "too_many_tracks", f"at most {MAX_DECLARED_TRACKS} tracks may be declared on one media connection"
                )
            member.declared[track_id] = source
            effects.append(
                Command(
                    DeclareTrack(hearing_id=self.hearing_id, participant_id=member.id, track_id=track_id, source=source)
                )
            )
        if enabled != (source in member.publishing):
            if enabled:
                member.publishing.add(source)
            else:
                member.publishing.discard(source)
            effects += self._toggled(member, "publishing", source, enabled)
            effects += self._after_change(roster=not member.hidden)
        return effects

    def negotiated(self, participant_id: str) -> list[Effect]:
        """The node answered the participant's offer: from now on the node may offer them what they receive.

        Until the first offer is answered the node is not told whom the
        participant receives, so its own offers never cross the client's first
        offer (the client always offers first).
        """
        member = self.members.get(participant_id)
        if member is None or member.negotiated or not member.has_peer:
            return []
        member.negotiated = True
        member.restarting = False
        return self._recompute()

    def peer_state(self, participant_id: str, state: PeerState) -> list[Effect]:
        """The node reports a participant's peer state (roster ``peer``); the roster goes out if ``media`` changed."""
        member = self.members.get(participant_id)
        if member is None or member.media == state:
            return []
        member.media = state
        if state is PeerState.connected:
            member.connected_at = self.clock()
        return self._health_changed()

    def peer_health(self, report: PeerHealth) -> list[Effect]:
        """The node's periodic health report of a participant's peer; the roster goes out if ``media`` changed."""
        member = self.members.get(report.participant_id)
        if member is None or not member.has_peer or member.restarting:
            return []  # a report of a peer being replaced says nothing about the next one
        member.report = report
        member.report_at = self.clock()
        if member.media != report.connection:
            member.media = report.connection
            if report.connection is PeerState.connected:
                member.connected_at = member.report_at
        return self._health_changed()

    def media_tick(self) -> list[Effect]:
        """Called about once a second: health that changes with time alone (silence, missing reports)."""
        return self._health_changed()

    def restart_media(self, conn: int, reason: str | None = None, *, ref: RequestId | None = None) -> list[Effect]:
        """The client asks for a fresh peer: replace it on the node (same plan) and answer ``media_restart``."""
        member = self.media_member(conn)
        if member.role in PEERLESS_ROLES:
            raise SessionError("not_admitted", "this participant has no media peer")
        now = self.clock()
        if member.restarting and member.restart_at is not None and now - member.restart_at < RESTART_PENDING_FOR:
            raise SessionError("restart_pending", "a media restart is in flight: offer on your new connection")
        if member.restart_at is not None and now - member.restart_at < RESTART_MIN_INTERVAL:
            raise SessionError("too_many_restarts", f"at most one media restart per {RESTART_MIN_INTERVAL:g} s")
        return self._restart(member, "requested", ref=ref)

    def peer_lost(self, participant_id: str, reason: str) -> list[Effect]:
        """The node gave up the participant's peer (failed, closed, offer timeout): replace it, tell the client."""
        member = self.members.get(participant_id)
        if member is None or not member.has_peer or member.role in PEERLESS_ROLES:
            return []
        if member.connected and not member.negotiated:
            # The current peer has not had the client's first offer yet, so it cannot have failed or timed out:
            # this is the late report of a peer already replaced (a resume or a restart raced the node's event).
            return []
        if not member.connected:
            # Nobody to tell; a resume makes a fresh peer anyway. The roster shows the connection lost.
            member.media = PeerState.failed if reason == "failed" else PeerState.closed
            return self._health_changed()
        return self._restart(member, reason)

    def _restart(self, member: Member, reason: str, *, ref: RequestId | None = None) -> list[Effect]:
        """A new peer for the same participant: the node keeps their publish/receive plan and declared tracks."""
        member.negotiated = False  # the node waits for the client's new first offer
        self._new_peer_state(member)
        member.declared.clear()  # counted per peer connection; the node keeps the sources of known track ids
        member.restarting = True
        member.restart_at = self.clock()
        effects: list[Effect] = [
            Command(CreatePeer(hearing_id=self.hearing_id, participant_id=member.id, role=member.role)),
            Audit(Trace(member.id, "media_restarted", {"reason": reason})),
            Send(member.conn, MediaRestart(ref=ref, reason=reason)),
        ]
        return effects + self._health_changed()

    def flush_audit(self, participant_id: str) -> list[Effect]:
        """The coalescing window of a member's toggles ended: audit what changed in it (and open the next window)."""
        member = self.members.get(participant_id)
        if member is None:
            return []
        effects = self._flush_holds(member)
        if member.holds:
            effects.append(AuditLater(member.id, AUDIT_COALESCE_SECONDS))
        return effects

    def speaker_receivers(self, speaker_id: str, receiver_id: str | None = None) -> list[int]:
        """Connections to tell that ``speaker_id`` speaks: ``receiver_id``'s (or every receiver's), and only of
        members who may receive the speaker or are the speaker (a consultation is never named to the courtroom).
        """
        speaker = self.members.get(speaker_id)
        if speaker is None:
            return []
        return [
            m.conn
            for m in self.members.values()
            if m.connected
            and m.placement not in WAITING
            and (receiver_id is None or m.id == receiver_id)
            and (m is speaker or may_receive(m.seat(), speaker.seat(), self.state))
        ]

    # --- internals ------------------------------------------------------------------------------

    def _actor(self, conn: int) -> Member:
        member = self.member_of_conn(conn)
        if member is None:
            raise SessionError("not_joined", "join first")
        return member

    def _may(self, conn: int, action: Action) -> Member:
        actor = self._actor(conn)
        presiding = actor.id == self.hearing.presiding_id
        if not may_act(actor.role, self.state, actor.placement, action, presiding=presiding):
            raise NotAllowed(
                f"a {actor.role.value} in the {actor.placement.value} may not {action.value.replace('_', ' ')}"
                f" while the hearing is {self.state.value}"
            )
        return actor

    def _may_on(self, conn: int, action: Action, target_id: str) -> tuple[Member, Member]:
        """The actor of ``conn`` and the member ``target_id``, if the table lets one take ``action`` on the other."""
        actor = self._may(conn, action)
        target = self._target(target_id)
        if target is actor:
            raise SessionError("invalid_target", f"you cannot {_VERBS[action]} yourself")
        if target.placement not in TARGET_PLACEMENTS[action] or target.role not in TARGETS[action]:
            raise SessionError(
                "invalid_target",
                f"{target.info.name} ({target.role.value}, {target.placement.value}) cannot be {_DONE[action]}",
            )
        if not may_act_on(self.seat_of(actor), action, self.seat_of(target), self.state):
            raise NotAllowed(f"only the presiding judge may {_VERBS[action]} {target.info.name}")
        return actor, target

    def _target(self, participant_id: str) -> Member:
        member = self.members.get(participant_id)
        if member is None or member.hidden:
            raise SessionError("unknown_participant", f"participant {participant_id!r} is not in the session")
        return member

    def _toggled(self, member: Member, kind: str, source: Source, value: bool) -> list[Effect]:
        """Audit a member's own toggle (``kind`` "publishing" or "muted") now, or fold it into its open window."""
        hold = member.holds.get((kind, source))
        if hold is not None:
            hold.value = value
            hold.changes += 1
            return []
        idle = not member.holds  # a window is open exactly while some toggle is held
        member.holds[(kind, source)] = _Hold(value)
        effects: list[Effect] = [self._toggle_audit(member, kind, source, value, None)]
        if idle:
            effects.append(AuditLater(member.id, AUDIT_COALESCE_SECONDS))
        return effects

    def _flush_holds(self, member: Member) -> list[Effect]:
        effects: list[Effect] = []
        for (kind, source), hold in list(member.holds.items()):
            if hold.changes:
                effects.append(self._toggle_audit(member, kind, source, hold.value, hold.changes))
                hold.changes = 0
            else:
                del member.holds[(kind, source)]
        return effects

    @staticmethod
    def _toggle_audit(member: Member, kind: str, source: Source, value: bool, changes: int | None) -> Audit:
        data: dict[str, object]
        if kind == "publishing":
            action, data = "publishing_changed", {"source": source.value, "enabled": value}
        elif kind == "hand":
            action, data = ("hand_raised" if value else "hand_lowered"), {"participant_id": member.id}
        else:
            action = "participant_muted" if value else "participant_unmuted"
            data = {"participant_id": member.id, "source": source.value}
        if changes is not None:
            data["changes"] = changes
        return Audit(Trace(member.id, action, data))

    def _close_peer(self, member: Member) -> list[Effect]:
        """A member who goes back to a waiting placement loses their peer (a waiting room has no media)."""
        if not member.has_peer or member.role in PEERLESS_ROLES:
            return []
        member.has_peer = False
        member.negotiated = False
        member.media = None
        member.declared.clear()
        self._forget_sent(member.id)
        return [Command(ClosePeer(hearing_id=self.hearing_id, participant_id=member.id))]

    def _create_peer(self, member: Member) -> list[Effect]:
        if member.has_peer:
            return []
        member.has_peer = True
        if member.role in PEERLESS_ROLES:
            member.negotiated = True
            return []
        self._new_peer_state(member)
        return [Command(CreatePeer(hearing_id=self.hearing_id, participant_id=member.id, role=member.role))]

    def _end_session(self) -> list[Effect]:
        """The hearing ended (adjourned, cancelled): close the node's room and every connection; forget everyone."""
        self._node_closed = True
        effects: list[Effect] = [Command(CloseRoom(hearing_id=self.hearing_id))]
        for member in list(self.members.values()):
            effects += self._flush_holds(member)
            if member.connected:
                effects.append(Close(member.conn, CLOSE_HEARING_ENDED, f"hearing {self.state.value}"))
            self.members.pop(member.id)
            self._forget_sent(member.id)
        return effects

    def _eject(
        self, member: Member, actor: str, reason: str, message: Reply, code: int, close_reason: str
    ) -> list[Effect]:
        """Take ``member`` out of the session because the booking changed: tell them, close, drop their peer."""
        effects: list[Effect] = [
            Audit(Trace(actor, "participant_ejected", {"participant_id": member.id, "reason": reason}))
        ]
        if member.connected:
            effects += [Send(member.conn, message), Close(member.conn, code, close_reason)]
        effects += self._drop(member)
        return effects

    def _drop(self, member: Member) -> list[Effect]:
        """Forget a member: audit their pending toggles, end their consultation and close their peer."""
        effects = self._flush_holds(member)
        member.holds.clear()
        if member.consultation:
            group_id = member.consultation
            member.consultation = ""
            member.consultation_since = None
            member.placement = Placement.courtroom
            rest = [m for m in self.members.values() if m.consultation == group_id and m is not member]
            roles = {m.role for m in rest}
            if Role.counsel not in roles or not roles & CLIENT_ROLES:
                effects += self._end_group(group_id, member.id, "member_left")
        self.members.pop(member.id, None)
        if member.has_peer:
            member.has_peer = False
            self._forget_sent(member.id)
            member.negotiated = False
            member.declared.clear()
            if member.role not in PEERLESS_ROLES:
                effects.append(Command(ClosePeer(hearing_id=self.hearing_id, participant_id=member.id)))
        return effects

    def _end_group(self, group_id: str, actor_id: str, reason: str) -> list[Effect]:
        group = [m for m in self.members.values() if m.consultation == group_id]
        for m in group:
            m.placement = Placement.courtroom
            m.consultation = ""
            m.consultation_since = None
        effects: list[Effect] = [
            Audit(
                Trace(
                    actor_id,
                    "consultation_ended",
                    {"consultation": group_id, "participant_ids": [m.id for m in group], "reason": reason},
                )
            )
        ]
        effects += [self._placement_msg(m) for m in group if m.connected]
        return effects

    def _new_peer_state(self, member: Member) -> None:
        member.peer_epoch += 1
        member.media = None
        member.report = None
        member.report_at = None
        member.connected_at = None

    def _health_of(self, m: Member, now: float) -> MediaHealth:
        """The member's media health now, from the node's reports (docs/protocol.md, "Media health")."""
        if not m.has_peer or m.hidden or m.role in PEERLESS_ROLES or m.placement in WAITING:
            return "none"
        if not m.connected:
            return "lost"
        if m.restarting:
            return "connecting"
        if m.media in (PeerState.failed, PeerState.closed):
            return "lost"
        if m.report_at is not None and now - m.report_at > REPORT_LOST_AFTER:
            return "lost"
        if m.media is not PeerState.connected:
            return "connecting"
        report = m.report
        if report is not None and report.ice == "disconnected":
            return "stalled"
        settled = m.connected_at is not None and (now - m.connected_at) * 1000 > STALLED_AFTER_MS
        for source in m.publishing:
            if source in m.muted_by or not may_publish(m.role, self.state, m.placement, source):
                continue
            tracks = [t for t in (report.tracks if report else ()) if t.direction == "in" and t.source is source]
            if not tracks:
                if settled and report is not None:
                    return "stalled"  # declared and permitted, yet nothing of it arrives
                continue
            if all(t.idle_ms is None or t.idle_ms > STALLED_AFTER_MS for t in tracks) and (
                settled or any(t.idle_ms is not None for t in tracks)
            ):
                return "stalled"
        return "ok"

    def _update_health(self) -> bool:
        """Recompute every member's health; True if a visible member's ``media`` changed."""
        now = self.clock()
        changed = False
        for m in self.members.values():
            health = self._health_of(m, now)
            if health != m.health or m.health_since is None:
                m.health = health
                m.health_since = now
                changed = changed or not m.hidden
        return changed

    def _health_changed(self) -> list[Effect]:
        """The roster to everyone if some visible member's ``media`` changed, else nothing."""
        if not self._update_health():
            return []
        return self._broadcast(RosterMsg(participants=self._roster_entries()))

    def _forget_sent(self, participant_id: str) -> None:
        self._sent_publishing.pop(participant_id, None)
        self._sent_receiving.pop(participant_id, None)

    def _placement_msg(self, member: Member) -> Send:
        return Send(
            member.conn,
            PlacementMsg(
                placement=member.placement,
                consultation=member.consultation or None,
                permissions=self.permissions_of(member),
            ),
        )

    def _broadcast(self, message: Reply, *, ref: RequestId | None = None, actor: Member | None = None) -> list[Effect]:
        """``message`` to every connected member; the actor's copy carries ``ref``."""
        out: list[Effect] = []
        for m in self.members.values():
            if not m.connected:
                continue
            if actor is not None and m is actor and ref is not None:
                out.append(Send(m.conn, message.model_copy(update={"ref": ref})))
            else:
                out.append(Send(m.conn, message))
        return out

    def _state_changed(self, *, ref: RequestId | None = None, actor_conn: int | None = None) -> list[Effect]:
        effects: list[Effect] = []
        for m in self.members.values():
            if m.connected:
                mine = ref if m.conn == actor_conn else None
                effects.append(
                    Send(
                        m.conn,
                        StateMsg(
                            ref=mine,
                            state=self.state,
                            permissions=self.permissions_of(m),
                            in_session_since=self.in_session_since,
                        ),
                    )
                )
        effects += self._recompute()
        return effects

    def _after_change(self, *, roster: bool, ref: RequestId | None = None, actor: Member | None = None) -> list[Effect]:
        """Recompute what the node forwards; broadcast the roster (the actor's copy carries ``ref``)."""
        effects = self._recompute()
        if roster:
            effects += self._broadcast(RosterMsg(participants=self.roster()), ref=ref, actor=actor)
        return effects

    def _recompute(self) -> list[Effect]:
        """``SetPublishing``/``SetReceiving`` for every member with a peer whose rights changed."""
        for m in self.members.values():
            # A hand raised in the courtroom falls when its owner may no longer raise it (sent back to a waiting
            # room, into a consultation): the roster that follows every change shows it lowered.
            if m.hand_raised_at is not None and not may_raise_hand(m.role, self.state, m.placement):
                m.hand_raised_at = None
        with_peer = [m for m in self.members.values() if m.has_peer]
        seats = {m.id: m.seat() for m in with_peer}
        effects: list[Effect] = []
        for m in with_peer:
            sources = tuple(
                sorted(
                    s
                    for s in Source
                    if may_publish(m.role, self.state, m.placement, s)
                    and s not in m.muted_by
                    # An evidence display is forwarded only while it is shown: once its presenter stops it
                    # (publish enabled=false), the node takes it off every viewer's screen at once.
                    and (s is not Source.evidence or s in m.publishing)
                )
            )
            if self._sent_publishing.get(m.id) != sources:
                self._sent_publishing[m.id] = sources
                effects.append(Command(SetPublishing(hearing_id=self.hearing_id, participant_id=m.id, sources=sources)))
            if not m.negotiated:
                continue
            publishers = tuple(sorted(p for p, seat in seats.items() if may_receive(seats[m.id], seat, self.state)))
            if self._sent_receiving.get(m.id) != publishers:
                self._sent_receiving[m.id] = publishers
                effects.append(
                    Command(SetReceiving(hearing_id=self.hearing_id, participant_id=m.id, publishers=publishers))
                )
        return effects

    def media_node_lost(self, node_id: str, new_node_id: str | None) -> list[Effect]:
        """The hearing's media node was lost and the hearing placed on ``new_node_id``: make every peer again there.

        For every member with a peer: a new peer (``CreatePeer``), the sources of its known tracks
        (``DeclareTrack``), then the whole plan (``SetPublishing``, and ``SetReceiving`` once the client's
        new first offer is answered; the recorder's at once). A connected member is told ``media_restart``
        (``node_lost``, audited like every restart); one in its grace period gets the peer waiting for its
        resume. Without a new node (none is up) every connected member with media gets ``error``
        ``no_media_node`` and shows ``lost``; this runs again with a node once one is up.
        """
        if self._node_closed:
            return []
        # The new node knows nothing: what was sent to the old one must all be sent again.
        self._sent_publishing.clear()
        self._sent_receiving.clear()
        effects: list[Effect] = []
        now = self.clock()
        for member in self.members.values():
            if not member.has_peer or member.role in PEERLESS_ROLES:
                continue  # the recorder has no peer: its plan follows from the recompute below
            declared = dict(member.declared)
            member.negotiated = False
            self._new_peer_state(member)
            member.declared.clear()
            if new_node_id is None:
                member.media = PeerState.failed
                member.restarting = False
                if member.connected:
                    effects.append(
                        Send(
                            member.conn,
                            Error(
                                code="no_media_node",
                                message="the media server was lost and no other is up; media resumes when one is",
                            ),
                        )
                    )
                continue
            effects.append(Command(CreatePeer(hearing_id=self.hearing_id, participant_id=member.id, role=member.role)))
            effects += [
                Command(DeclareTrack(hearing_id=self.hearing_id, participant_id=member.id, track_id=t, source=s))
                for t, s in declared.items()
            ]
            if member.connected:
                member.restarting = True
                member.restart_at = now
                effects += [
                    Audit(Trace(member.id, "media_restarted", {"reason": "node_lost", "node_id": node_id})),
                    Send(member.conn, MediaRestart(reason="node_lost")),
                ]
        if new_node_id is not None:
            effects += self._recompute()
        return effects + self._health_changed()

    # --- snapshot (a room that outlives its process: signaling.snapshot) ----------------------------

    def snapshot(self) -> RoomSnapshot:
        """The room as data (:class:`signaling.snapshot.RoomSnapshot`): what another process restores it from."""
        return RoomSnapshot(
            hearing=self.hearing,
            taken_at=self.clock(),
            in_session_since=self.in_session_since,
            members=tuple(_member_snapshot(m) for m in self.members.values()),
            removed=dict(self.removed),
        )

    @classmethod
    def restore(
        cls,
        hearing: Hearing,
        snapshot: RoomSnapshot,
        *,
        grace_seconds: float = 30.0,
        ice_servers: Iterable[IceServer] = (),
        clock: Callable[[], float] = time.time,
        timezone: str = "",
        turn: TurnIssuer | None = None,
    ) -> tuple[HearingRoom, list[Effect]]:
        """The room ``snapshot`` was taken of, with every member disconnected, and the effects that follow.

        Each member keeps the grace they had left, counted from their drop (a
        member connected when the snapshot was taken dropped then, with the
        process): a :class:`StartGrace` of that many seconds (0 when it is over:
        they leave at once, audited as any expiry). The node is sent the whole
        plan again (``SetPublishing``/``SetReceiving`` of every peer the room
        knows); toggles in an audit window get their :class:`AuditLater`. If the
        stored ``hearing`` is newer than the one the room knew, the room follows
        it (:meth:`refresh`: ejections, an ended session). ``hearing`` must be the
        snapshot's hearing (:class:`~signaling.snapshot.SnapshotRefused` if not).
        """
        if hearing.id != snapshot.hearing.id:
            raise SnapshotRefused(f"the snapshot is of hearing {snapshot.hearing.id!r}, not {hearing.id!r}")
        room = cls(
            snapshot.hearing,
            grace_seconds=grace_seconds,
            ice_servers=ice_servers,
            clock=clock,
            timezone=timezone,
            in_session_since=snapshot.in_session_since,
            turn=turn,
        )
        room.removed = dict(snapshot.removed)
        now = clock()
        effects: list[Effect] = []
        for saved in snapshot.members:
            member = _restored_member(saved, snapshot.taken_at)
            room.members[member.id] = member
            dropped_at = member.disconnected_at if member.disconnected_at is not None else snapshot.taken_at
            left = min(max(grace_seconds - (now - dropped_at), 0.0), grace_seconds)
            if saved.connected:
                effects.append(
                    Audit(
                        Trace(
                            member.id,
                            "participant_disconnected",
                            {"grace_seconds": round(left, 3), "reason": "signaling_lost"},
                        )
                    )
                )
            effects.append(StartGrace(member.id, left, member.drops))
            if member.holds:
                effects.append(AuditLater(member.id, AUDIT_COALESCE_SECONDS))
        room._update_health()
        effects += room._recompute()
        if hearing.version > room.hearing.version:
            effects += room.refresh(hearing)
        return room, effects


_VERBS: dict[Action, str] = {
    Action.admit: "admit",
    Action.deny: "deny",
    Action.remove: "remove",
    Action.mute_others: "mute or unmute",
    Action.call_witness: "call",
    Action.release_witness: "release",
    Action.consult: "consult with",
}
_DONE: dict[Action, str] = {
    Action.admit: "admitted: only someone waiting in the lobby is",
    Action.deny: "denied: only someone waiting in the lobby is",
    Action.remove: "removed",
    Action.mute_others: "muted",
    Action.call_witness: "called: only a witness waiting in the witness lobby is",
    Action.release_witness: "released: only a witness in the courtroom is",
    Action.consult: "put in a consultation",
}


def _resume_key() -> str:
    return secrets.token_urlsafe(24)


def _resume_matches(member: Member, resume: str) -> bool:
    """Whether ``resume`` is the member's current resume key (or, restored from a snapshot, hashes to it)."""
    if member.resume_key:
        return secrets.compare_digest(resume, member.resume_key)
    return bool(member.resume_digest) and secrets.compare_digest(resume_digest(resume), member.resume_digest)


def _member_snapshot(m: Member) -> MemberSnapshot:
    return MemberSnapshot(
        info=m.info,
        placement=m.placement,
        resume_digest=resume_digest(m.resume_key) if m.resume_key else m.resume_digest,
        token_id=m.token_id,
        connected=m.connected,
        disconnected_at=None if m.connected else m.disconnected_at,
        drops=m.drops,
        consultation=m.consultation,
        consultation_since=m.consultation_since,
        muted_by=dict(m.muted_by),
        publishing=tuple(sorted(m.publishing)),
        declared=dict(m.declared),
        has_peer=m.has_peer,
        negotiated=m.negotiated,
        peer_epoch=m.peer_epoch,
        hand_raised_at=m.hand_raised_at,
        holds=tuple(
            HoldSnapshot(kind=kind, source=source, value=hold.value, changes=hold.changes)
            for (kind, source), hold in m.holds.items()
        ),
    )


def _restored_member(saved: MemberSnapshot, taken_at: float) -> Member:
    """A member as the snapshot kept them, disconnected (a connected one dropped when the snapshot was taken)."""
    return Member(
        info=saved.info,
        conn=0,
        placement=saved.placement,
        resume_key="",
        resume_digest=saved.resume_digest,
        consultation=saved.consultation,
        consultation_since=saved.consultation_since,
        connected=False,
        muted_by=dict(saved.muted_by),
        publishing=set(saved.publishing),
        has_peer=saved.has_peer,
        negotiated=saved.negotiated,
        drops=saved.drops + 1 if saved.connected else saved.drops,
        token_id=saved.token_id,
        peer_epoch=saved.peer_epoch,
        declared=dict(saved.declared),
        holds={(h.kind, h.source): _Hold(h.value, h.changes) for h in saved.holds},
        hand_raised_at=saved.hand_raised_at,
        disconnected_at=taken_at if saved.connected else saved.disconnected_at,
    )
