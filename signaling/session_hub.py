"""The session hub: every live connection and hearing room of one signaling process, bound to one media node.

:class:`SessionHub` is the I/O side of :class:`signaling.session.HearingRoom`:
it keeps one room per hearing with someone connected, runs each room's inputs
one at a time under the room's lock, and carries out the effects the room
returns (messages to outlets, closes, node-control commands, audit events,
grace timers). It relays node events to the participants concerned. It knows
nothing of aiohttp: a participant is reached through an :class:`Outlet`
(:class:`signaling.ws.WsOutlet` for a WebSocket, or an in-process one for the
recorder).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import zoneinfo
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.client import (
    Admit,
    CallWitness,
    ClientAnswer,
    ClientCandidate,
    ClientMessage,
    ClientOffer,
    Consult,
    Deny,
    EndConsult,
    Error,
    FrameCache,
    IceServer,
    Join,
    Leave,
    LowerHand,
    Mute,
    MuteAll,
    ParticipantInfo,
    Ping,
    Pong,
    Publish,
    RaiseHand,
    Recording,
    ReleaseWitness,
    Remove,
    Reply,
    RequestId,
    RestartMedia,
    ServerAnswer,
    ServerOffer,
    SessionMsg,
    Speaker,
    TrackInfo,
    TracksMsg,
    View,
)
from protocol.node import (
    AddCandidate,
    ApplyAnswer,
    ApplyOffer,
    CloseRoom,
    MediaNodeLost,
    NodeCommand,
    NodeControl,
    NodeEvent,
    NodeReply,
    Offer,
    PeerHealth,
    PeerLost,
    PeerStateChanged,
    PublishRefused,
    Refused,
    SdpAnswer,
    SetView,
    SpeakerChanged,
    TileSize,
    Tracks,
)
from protocol.recorder import INTENT_WAIT_SECONDS
from rooms.audit import AuditEvent
from rooms.bus import Bus, Records
from rooms.errors import DomainError, NotFound
from rooms.lifecycle import SessionAction, apply
from rooms.model import Hearing, HearingState, new_id
from rooms.permissions import TABLE
from rooms.store import Store, Trace
from signaling.ownership import Owners, OwnerSettings
from signaling.recording_status import RecordingStatuses
from signaling.session import (
    CLOSE_GOING_AWAY,
    CLOSE_NOT_ALLOWED,
    ENDED,
    Audit,
    AuditLater,
    Close,
    Command,
    Effect,
    HearingRoom,
    RevokeLink,
    Send,
    SessionError,
    StartGrace,
)
from signaling.snapshot import RoomSnapshot, SnapshotKeeper, SnapshotRefused
from signaling.tokens import JoinClaims
from signaling.turn import TurnSettings, turn_issuer

_SESSION_FACTS: dict[SessionAction, str] = {
    SessionAction.open: "hearing_opened",
    SessionAction.start: "hearing_started",
    SessionAction.recess: "hearing_recessed",
    SessionAction.resume: "hearing_resumed",
    SessionAction.adjourn: "hearing_adjourned",
}
"""The audit fact each session action leaves."""

HEALTH_TICK_SECONDS = 1.0
"""How often the live rooms re-derive media health that changes with time alone (silence, missing reports)."""

CLOSING_WAIT_SECONDS = 15.0
"""How long an adjournment waits for the closing listeners (the recorder's seal) before telling everyone."""


class WsSettings(BaseModel):
    """Limits of the WebSocket session (field names match ``courtlink.settings.SessionSettings``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resume_grace_seconds: float = Field(
        default=30, gt=0, le=600, description="How long a dropped participant keeps their place."
    )
    max_message_bytes: int = Field(
        default=65536, ge=1024, le=1 << 20, description="Larger frames close the socket (1009)."
    )
    rate_per_second: float = Field(default=20, gt=0, description="Sustained frames per second per connection.")
    rate_burst: int = Field(default=50, ge=1, description="Frames allowed at once per connection.")
    join_timeout_seconds: float = Field(default=10, gt=0, le=300, description="Time to send `join` after connecting.")
    send_queue: int = Field(default=256, ge=8, le=65536, description="Messages queued for a slow client before 1013.")
    ice_servers: tuple[str, ...] = Field(default=(), description="STUN/TURN URLs handed to clients in `joined`.")
    court_timezone: str = Field(
        default="Asia/Shanghai", description="The court's time zone (IANA name), sent in `joined.hearing.timezone`."
    )
    turn: TurnSettings = Field(
        default_factory=TurnSettings,
        description="TURN servers whose time-limited credentials (coturn's shared secret) are issued in `joined`.",
    )

    @field_validator("court_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"court_timezone {value!r} is not a known IANA time zone (e.g. Asia/Shanghai)") from None
        return value


class TokenVerifier(Protocol):
    """What the session needs from the token service."""

    async def verify(self, token: str) -> JoinClaims:
        """The claims of a token that may join now, or a :class:`TokenError`."""
        ...


class Outlet(Protocol):
    """Where a participant's messages go: a WebSocket, or an in-process participant such as the recorder."""

    def send(self, message: Reply) -> None:
        """Queue one message; never blocks."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close after the queued messages; never blocks."""
        ...


@dataclass
class LiveRoom:
    """A hearing's room with the lock that serializes its inputs and its grace timers."""

    room: HearingRoom
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    audit_timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    """Pending :class:`AuditLater` flushes, by participant."""
    listened: bool = False
    """Whether the room listeners were started (after the first successful join of a visible participant)."""


@dataclass
class _Conn:
    """One participant connection as the hub tracks it."""

    id: int
    outlet: Outlet
    hearing_id: str = ""
    participant_id: str = ""


class SessionHub:
    """Every live connection and room of one signaling process, bound to one media node."""

    def __init__(
        self,
        store: Store,
        tokens: TokenVerifier,
        node: NodeControl,
        settings: WsSettings,
        *,
        bus: Bus | None = None,
        records: Records | None = None,
        owners: OwnerSettings | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.node = node
        self.settings = settings
        self.rooms: dict[str, LiveRoom] = {}
        self._conns: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ice = tuple(IceServer(urls=(url,)) for url in settings.ice_servers)
        self._turn = turn_issuer(settings.turn)
        self.log = structlog.get_logger("signaling.ws")
        self.room_listeners: list[Callable[[str], Coroutine[Any, Any, None]]] = []
        """Called (as tasks) with the hearing id after the first successful join of a visible participant into a
        live room (the recorder joins then); a refused join starts nothing."""
        self.closing_listeners: list[Callable[[str], Coroutine[Any, Any, None]]] = []
        """Awaited with the hearing id when it adjourns, before anyone is told or disconnected (the recorder
        seals then, so every participant still hears ``recording: sealed``); bounded by ``CLOSING_WAIT_SECONDS``."""
        self.forgotten_listeners: list[Callable[[str], None]] = []
        """Called with the hearing id when its room is given up (no visible member left): the hidden members'
        connections are closed and the node's room too, so the recorder wiring lets go of the hearing."""
        self.audit_listeners: list[Callable[[str, AuditEvent], None]] = []
        """Called (hearing id, event) the moment a live session's audit event is stored, before the effects that
        follow it (node commands, roster): the recorder takes consultation times from here, not from the roster."""
        self.audit_intents: list[Callable[[str, Trace], Awaitable[None] | None]] = []
        """Called (hearing id, trace) just before a live session's audit event is stored: a listener that must act
        from the very moment of a decision (the recorder withholding a consultation) does not wait for the store.
        A listener in another process returns an awaitable: the event is stored once it is done (bounded by
        ``INTENT_WAIT_SECONDS``)."""
        self._recording: dict[str, RecordingStatuses] = {}
        """Each live room's recorders' statuses (kept only while the room lives, as everything per hearing)."""
        self._health_watch: asyncio.Task[None] | None = None
        self.frames = FrameCache()
        """One JSON serialization per outgoing message, shared by the WebSocket outlets."""
        self.snapshots = (
            SnapshotKeeper(records, self._room_snapshot, grace_seconds=settings.resume_grace_seconds)
            if records is not None
            else None
        )
        """Keeps every live room's snapshot in ``records`` (``snapshot.room.<id>``), and restores a room from it;
        None (no records): no snapshots, a room lives and dies with this process."""
        node.subscribe(self.on_node_event)
        self.owners: Owners | None = None
        """With a bus and records (several signaling processes): this process's side of room ownership, relayed
        WebSockets and REST changes (:mod:`signaling.ownership`); None: one process, as ``courtlink serve``."""
        if bus is not None and records is not None:
            self.owners = Owners(self, bus, records, owners or OwnerSettings())

    # --- connections ---------------------------------------------------------------------------

    def attach(self, outlet: Outlet) -> int:
        """Register an outlet; its connection id addresses it from now on."""
        conn = next(self._ids)
        self._conns[conn] = _Conn(conn, outlet)
        return conn

    async def detach(self, conn: int) -> None:
        """The connection ended (without ``leave``): its participant keeps their place for the grace period."""
        c = self._conns.pop(conn, None)
        if c is None or not c.hearing_id:
            return
        live = self.rooms.get(c.hearing_id)
        if live is None:
            return
        async with live.lock:
            await self._run(live, live.room.disconnect(conn))
            await self._forget_if_empty(live)

    async def join(
        self,
        conn: int,
        info: ParticipantInfo,
        hearing: Hearing,
        resume: str | None,
        ref: RequestId | None = None,
        *,
        token_id: str | None = None,
    ) -> None:
        """Put participant ``info`` on connection ``conn`` into ``hearing``'s live room (SessionError on refusal).

        ``token_id`` is the ``jti`` of the join link (``JoinClaims.token_id``): the room closes this
        connection (4001) when the link is reissued. Without it, the participant's ``token_id`` in
        ``hearing`` is taken: that hearing was read after the link verified against the store, so it is
        the same id unless the link was reissued in between (pass the claim's id to close that gap).
        """
        if token_id is None:
            booked = hearing.participant(info.id)
            token_id = booked.token_id if booked is not None else None
        live = await self._locked_room(hearing)
        try:
            effects = live.room.refresh(hearing) if hearing.version > live.room.hearing.version else []
            try:
                if TABLE[info.role].hidden and all(m.hidden for m in live.room.members.values()):
                    await self._refuse_if_ended(hearing.id)
                outcome = live.room.join(info, conn, resume, ref=ref, token_id=token_id)
            except SessionError:
                await self._run(live, effects)
                await self._forget_if_empty(live)
                raise
            c = self._conns.get(conn)
            if c is not None:
                c.hearing_id, c.participant_id = hearing.id, info.id
            await self._run(live, effects + outcome.effects)
            self._watch_health()
            if not live.listened and not TABLE[info.role].hidden:
                # Only once someone was really let in: a refused join (adjourned hearing, revoked link)
                # must not start the recorder on a dead hearing; the recorder's own join does not count.
                live.listened = True
                for listener in self.room_listeners:
                    self._spawn(listener(hearing.id))
            statuses = self._recording.get(hearing.id)
            status = statuses.shown if statuses is not None else None
            if status is not None and c is not None:
                c.outlet.send(status)
            if TABLE[info.role].hidden:
                # The recorder arriving after everyone left: nobody keeps the room, so it is given up at once.
                await self._forget_if_empty(live)
        finally:
            live.lock.release()
        self.log.info(
            "participant_joined",
            hearing_id=hearing.id,
            participant_id=info.id,
            role=info.role.value,
            resumed=outcome.resumed,
        )

    async def _refuse_if_ended(self, hearing_id: str) -> None:
        """Refuse a hidden participant (the recorder) an empty room of a hearing the store says has ended.

        Its join may have read the hearing before the adjournment and reached this process after the room was
        given up (a late bus delivery): the room made for it then would reopen an adjourned hearing for the
        recorder alone. Read again under the room's lock; nobody else is in the room, so nothing else changes.
        """
        try:
            stored = await self.store.get_hearing(hearing_id)
        except NotFound:
            raise SessionError(
                "hearing_closed", "the hearing is gone; it cannot be joined", close=CLOSE_NOT_ALLOWED
            ) from None
        if stored.state in ENDED:
            raise SessionError(
                "hearing_closed", f"the hearing is {stored.state.value}; it cannot be joined", close=CLOSE_NOT_ALLOWED
            )

    async def _locked_room(self, hearing: Hearing) -> LiveRoom:
        """The hearing's live room (created if needed), with its lock held by the caller from now on."""
        while True:
            live = self.rooms.get(hearing.id)
            restored: list[Effect] = []
            if live is None:
                since = await self._in_session_since(hearing)
                snapshot = await self.snapshots.read(hearing.id) if self.snapshots is not None else None
                live = self.rooms.get(hearing.id)
            if live is None:
                room = self._restored_room(hearing, snapshot) if snapshot is not None else None
                if room is not None:
                    live, restored = LiveRoom(room[0]), room[1]
                else:
                    live = LiveRoom(
                        HearingRoom(
                            hearing,
                            grace_seconds=self.settings.resume_grace_seconds,
                            ice_servers=self._ice,
                            timezone=self.settings.court_timezone,
                            in_session_since=since,
                            turn=self._turn,
                        )
                    )
                self.rooms[hearing.id] = live
            await live.lock.acquire()
            if self.rooms.get(hearing.id) is live:
                if restored:
                    await self._run(live, restored)
                return live
            # The room emptied and was forgotten while we waited for its lock: take the current one.
            live.lock.release()

    async def restore_room(self, hearing: Hearing) -> bool:
        """Make ``hearing``'s live room here from the snapshot another process left (a lease taken over), before
        any of its participants reconnects: the grace of each runs from now, so one who never comes back still
        leaves (audited). False (nothing done) without records, without a usable snapshot, or with a room here."""
        if self.snapshots is None or hearing.id in self.rooms or await self.snapshots.read(hearing.id) is None:
            return False
        live = await self._locked_room(hearing)
        try:
            await self._forget_if_empty(live)
        finally:
            live.lock.release()
        return True

    def _restored_room(self, hearing: Hearing, snapshot: RoomSnapshot) -> tuple[HearingRoom, list[Effect]] | None:
        """The room of ``hearing`` as another process left it (its snapshot), or None to make a fresh one."""
        try:
            room, effects = HearingRoom.restore(
                hearing,
                snapshot,
                grace_seconds=self.settings.resume_grace_seconds,
                ice_servers=self._ice,
                timezone=self.settings.court_timezone,
                turn=self._turn,
            )
        except SnapshotRefused as exc:
            self.log.warning("room_snapshot_refused", hearing_id=hearing.id, code=exc.code, detail=exc.detail)
            return None
        self.log.info(
            "live_room_restored",
            hearing_id=hearing.id,
            members=len(room.members),
            age_seconds=round(room.clock() - snapshot.taken_at, 3),
        )
        return room, effects

    def _room_snapshot(self, hearing_id: str) -> RoomSnapshot | None:
        """The live room's snapshot now (None: this process has no room for the hearing any more)."""
        live = self.rooms.get(hearing_id)
        return live.room.snapshot() if live is not None else None

    async def _in_session_since(self, hearing: Hearing) -> float | None:
        """When the hearing's current session period began, from its audit chain (a room made mid-session)."""
        if hearing.state is not HearingState.in_session:
            return None
        events = await self.store.audit_log(hearing.id)
        starts = [e for e in events if e.action in ("hearing_started", "hearing_resumed")]
        return starts[-1].at.timestamp() if starts else None

    async def join_internal(self, hearing_id: str, info: ParticipantInfo, outlet: Outlet) -> int:
        """Join an in-process participant (the recorder, role ``recorder``: hidden from rosters).

        Returns the connection id to pass to :meth:`handle` and :meth:`detach`.
        """
        conn = self.attach(outlet)
        try:
            hearing = await self.store.get_hearing(hearing_id)
            await self.join(conn, info, hearing, None)
        except BaseException:
            # A refused or failed join must not leave a connection behind (nor a member, if it got that far).
            await self.detach(conn)
            raise
        return conn

    async def hearing_changed(self, hearing: Hearing, *, actor: str = "system") -> None:
        """The stored hearing changed outside the live session (a REST call): the live room follows at once.

        Called with the stored hearing after a successful mutation. A process
        without a live room for it, or whose room knows this version already,
        does nothing. Participants no longer booked are removed (4010),
        connections of reissued links are closed (4001), a cancelled hearing
        ends the session for everyone (``state``, then 1000) after the closing
        listeners ran, as on adjournment (:meth:`HearingRoom.refresh`).

        Only this process's rooms are reached. With several signaling
        processes the REST handler also publishes ``hearing.changed`` (hearing
        id and version); the process that owns the live room reads the stored
        hearing and calls this (:class:`signaling.ownership.Owners`).
        """
        live = self.rooms.get(hearing.id)
        if live is None:
            return
        async with live.lock:
            if self.rooms.get(hearing.id) is not live or hearing.version <= live.room.hearing.version:
                return
            ending = hearing.state in ENDED and hearing.state != live.room.state
            if ending:
                await self._closing(hearing.id)
            effects = live.room.refresh(hearing, actor=actor)
            await self._run(live, effects)
            await self._forget_if_empty(live)
        self.log.info(
            "live_room_refreshed",
            hearing_id=hearing.id,
            version=hearing.version,
            state=hearing.state.value,
            closed=sum(1 for e in effects if isinstance(e, Close)),
            actor=actor,
        )

    # --- messages ------------------------------------------------------------------------------

    async def handle(self, conn: int, msg: ClientMessage) -> None:
        """Carry out one validated message of a joined connection; refusals become ``error`` messages."""
        c = self._conns.get(conn)
        if c is None:
            return
        try:
            await self._dispatch(c, msg)
        except SessionError as exc:
            c.outlet.send(Error(ref=msg.id, code=exc.code, message=exc.detail))
            if exc.close is not None:
                c.outlet.close(exc.close, exc.code)
        except DomainError as exc:
            c.outlet.send(Error(ref=msg.id, code=exc.code, message=exc.detail))

    async def _dispatch(self, c: _Conn, msg: ClientMessage) -> None:
        if isinstance(msg, Ping):
            c.outlet.send(Pong(ref=msg.id))
            return
        if isinstance(msg, Join):
            raise SessionError("already_joined", "this connection has joined already")
        live = self.rooms.get(c.hearing_id)
        if live is None:
            raise SessionError("not_joined", "join first")
        room = live.room
        if isinstance(msg, ClientOffer | ClientAnswer | ClientCandidate):
            await self._media(live, c, msg)
            return
        if isinstance(msg, View):
            await self._view(live, c, msg)
            return
        async with live.lock:
            effects: list[Effect]
            if isinstance(msg, Publish):
                effects = room.publish(c.id, msg.source, msg.enabled, msg.track_id, ref=msg.id)
            elif isinstance(msg, Admit):
                effects = room.admit(c.id, msg.participant_id, ref=msg.id)
            elif isinstance(msg, Deny):
                effects = room.deny(c.id, msg.participant_id, msg.reason, ref=msg.id)
            elif isinstance(msg, Remove):
                effects = room.remove(c.id, msg.participant_id, msg.reason, ref=msg.id)
            elif isinstance(msg, Mute):
                effects = room.mute(c.id, msg.participant_id, msg.source, msg.muted, ref=msg.id)
            elif isinstance(msg, CallWitness):
                effects = room.call_witness(c.id, msg.participant_id, ref=msg.id)
            elif isinstance(msg, ReleaseWitness):
                effects = room.release_witness(c.id, msg.participant_id, ref=msg.id)
            elif isinstance(msg, Consult):
                effects = room.consult(c.id, msg.participant_ids, ref=msg.id)
            elif isinstance(msg, EndConsult):
                effects = room.end_consult(c.id, msg.participant_ids, ref=msg.id)
            elif isinstance(msg, Leave):
                effects = room.leave(c.id, ref=msg.id)
            elif isinstance(msg, RestartMedia):
                effects = room.restart_media(c.id, msg.reason, ref=msg.id)
                self.log.info("media_restart_requested", hearing_id=room.hearing_id, participant_id=c.participant_id)
            elif isinstance(msg, SessionMsg):
                effects = await self._session(room, c, msg)
            elif isinstance(msg, RaiseHand):
                effects = room.raise_hand(c.id, ref=msg.id)
            elif isinstance(msg, LowerHand):
                effects = room.lower_hand(c.id, msg.participant_id, ref=msg.id)
            elif isinstance(msg, MuteAll):
                effects = room.mute_all(c.id, msg.source, msg.muted, ref=msg.id)
            else:  # pragma: no cover - the union is exhausted above
                raise SessionError("invalid_message", f"unexpected message {msg.type}")
            await self._run(live, effects)
            await self._forget_if_empty(live)

    async def _session(self, room: HearingRoom, c: _Conn, msg: SessionMsg) -> list[Effect]:
        room.check_session(c.id, msg.action)
        action = msg.action

        def mutation(hearing: Hearing) -> tuple[Hearing, Trace]:
            # Re-applied to the stored hearing inside the store's atomic section.
            new_state = apply(hearing.state, action)
            data = {"action": action.value, "from": hearing.state.value, "to": new_state.value}
            return hearing.model_copy(update={"state": new_state}), Trace(
                c.participant_id, _SESSION_FACTS[action], data
            )

        hearing = await self.store.mutate_hearing(room.hearing_id, mutation)
        self.log.info("hearing_state_changed", hearing_id=hearing.id, state=hearing.state.value, by=c.participant_id)
        if hearing.state in (HearingState.adjourned, HearingState.cancelled):
            await self._closing(hearing.id)
        return room.session_changed(hearing, c.id, ref=msg.id)

    async def _closing(self, hearing_id: str) -> None:
        for listener in list(self.closing_listeners):
            try:
                await asyncio.wait_for(listener(hearing_id), CLOSING_WAIT_SECONDS)
            except Exception as exc:  # a slow or failing listener must not keep the hearing from adjourning
                self.log.warning("closing_listener_failed", hearing_id=hearing_id, error=str(exc) or type(exc).__name__)

    async def _media(self, live: LiveRoom, c: _Conn, msg: ClientOffer | ClientAnswer | ClientCandidate) -> None:
        # SDP and ICE go to the node outside the room lock: negotiation can take a while.
        member = live.room.media_member(c.id)
        hid, pid, epoch = live.room.hearing_id, member.id, member.peer_epoch
        command: NodeCommand
        if isinstance(msg, ClientOffer | ClientAnswer):
            if not msg.sdp.lstrip().startswith("v=0"):
                raise SessionError("invalid_sdp", "an SDP must begin with 'v=0'")
            if isinstance(msg, ClientOffer):
                live.room.check_offer_rate(pid, asyncio.get_running_loop().time())
                command = ApplyOffer(hearing_id=hid, participant_id=pid, sdp=msg.sdp)
            else:
                command = ApplyAnswer(hearing_id=hid, participant_id=pid, sdp=msg.sdp)
        else:
            command = AddCandidate(
                hearing_id=hid,
                participant_id=pid,
                candidate=msg.candidate,
                sdp_mid=msg.sdpMid,
                sdp_mline_index=msg.sdpMLineIndex,
            )
        reply = await self.node.call(command)
        if isinstance(reply, Refused):
            raise SessionError(reply.code, reply.message)
        if isinstance(reply, SdpAnswer):
            async with live.lock:
                # Read the member again: while the node worked, the participant may have left, rejoined,
                # resumed or restarted their media; an answer of a peer that is gone must not mark the
                # current one negotiated (its node would offer before the client's first offer).
                current = live.room.members.get(pid)
                if (
                    self.rooms.get(hid) is not live
                    or current is None
                    or current.conn != c.id
                    or not current.connected
                    or current.peer_epoch != epoch
                ):
                    self.log.info("stale_answer_dropped", hearing_id=hid, participant_id=pid)
                    raise SessionError("peer_replaced", "your media peer was replaced meanwhile; offer again")
                c.outlet.send(ServerAnswer(ref=msg.id, sdp=reply.sdp))
                if not current.negotiated:
                    await self._run(live, live.room.negotiated(pid))

    async def _view(self, live: LiveRoom, c: _Conn, msg: View) -> None:
        """Tile sizes go to the node as they are (outside the room lock: nothing of the room changes)."""
        member = live.room.media_member(c.id)
        tiles = tuple(TileSize(mid=t.mid, width=t.width, height=t.height) for t in msg.tiles)
        reply = await self.node.call(SetView(hearing_id=live.room.hearing_id, participant_id=member.id, tiles=tiles))
        if isinstance(reply, Refused):
            raise SessionError(reply.code, reply.message)

    # --- node events ---------------------------------------------------------------------------

    async def on_node_event(self, event: NodeEvent) -> None:
        """Relay a node event to the participants concerned; never blocks and never takes a room lock.

        The node may report while a room's command is in flight (under that
        room's lock), so this handler only reads the room and queues messages.
        """
        live = self.rooms.get(event.hearing_id)
        if live is None:
            return
        room = live.room
        if isinstance(event, SpeakerChanged):
            speaker = Speaker(participant_id=event.participant_id)
            for receiver in room.speaker_receivers(event.participant_id, event.receiver):
                self._send(receiver, speaker)
            return
        if isinstance(event, PeerStateChanged):
            self._run_sends(room.peer_state(event.participant_id, event.state))
            return
        if isinstance(event, PeerHealth):
            self._run_sends(room.peer_health(event))
            return
        if isinstance(event, PeerLost):
            # Replacing the peer is a node command: it runs under the room's lock, so not in this handler.
            self._spawn(self._peer_lost(live, event))
            return
        if isinstance(event, MediaNodeLost):
            # Every peer is made again on the new node: node commands, under the room's lock.
            self._spawn(self._media_node_lost(live, event))
            return
        conn = room.conn_of(event.participant_id)
        if conn is None:
            return
        member = room.members[event.participant_id]
        if isinstance(event, Offer | Tracks) and not member.negotiated:
            # The current peer has not had the client's first offer yet, so this comes from a replaced peer
            # (events are delivered after the fact): relaying it would make the new client answer a dead peer.
            self.log.info("stale_node_event_dropped", hearing_id=event.hearing_id, participant_id=member.id)
            return
        if isinstance(event, Offer):
            self._send(conn, ServerOffer(sdp=event.sdp))
        elif isinstance(event, Tracks):
            tracks = tuple(
                TrackInfo(mid=t.mid, track_id=t.track_id, participant_id=t.participant_id, source=t.source, kind=t.kind)
                for t in event.tracks
            )
            self._send(conn, TracksMsg(tracks=tracks))
        elif isinstance(event, PublishRefused):
            if event.source in member.muted_by:
                # A muted track still sends (silence, black frames): its packets are dropped as they should be,
                # and the participant already sees the mute; an error would only contradict it.
                return
            self._send(
                conn,
                Error(
                    code="publish_not_allowed",
                    message=f"you may not publish {event.source.value} ({event.kind}) now; it is not forwarded",
                ),
            )

    async def _peer_lost(self, live: LiveRoom, event: PeerLost) -> None:
        async with live.lock:
            if self.rooms.get(live.room.hearing_id) is not live:
                return
            effects = live.room.peer_lost(event.participant_id, event.reason)
            if any(isinstance(e, Command) for e in effects):
                self.log.info(
                    "media_restarted",
                    hearing_id=event.hearing_id,
                    participant_id=event.participant_id,
                    reason=event.reason,
                )
            await self._run(live, effects)

    async def _media_node_lost(self, live: LiveRoom, event: MediaNodeLost) -> None:
        async with live.lock:
            if self.rooms.get(live.room.hearing_id) is not live:
                return
            effects = live.room.media_node_lost(event.node_id, event.new_node_id)
            self.log.warning(
                "media_node_lost",
                hearing_id=event.hearing_id,
                node_id=event.node_id,
                new_node_id=event.new_node_id,
                peers=sum(1 for e in effects if isinstance(e, Command) and e.command.type == "create_peer"),
            )
            await self._run(live, effects)

    def _watch_health(self) -> None:
        """Run the health tick while there are live rooms (it ends by itself when the last room goes)."""
        if self._health_watch is None or self._health_watch.done():
            self._health_watch = asyncio.get_running_loop().create_task(self._health_loop())
            self._tasks.add(self._health_watch)
            self._health_watch.add_done_callback(self._task_done)

    async def _health_loop(self) -> None:
        while self.rooms:
            await asyncio.sleep(HEALTH_TICK_SECONDS)
            for live in list(self.rooms.values()):
                self._run_sends(live.room.media_tick())

    # --- effects -------------------------------------------------------------------------------

    def recording_status(self, hearing_id: str, message: Recording, recorder_id: str = "") -> None:
        """A recorder's status: tell everyone in the hearing how its recording is, combined with the other
        recorders' (:mod:`signaling.recording_status`), and every later joiner of its live room too."""
        shown: Recording | None = message
        if hearing_id in self.rooms:
            # Kept only while the room lives: a forgotten room drops it (no per-hearing state outlives the room).
            shown = self._recording.setdefault(hearing_id, RecordingStatuses()).update(recorder_id, message)
        if shown is not None:
            self._tell_recording(hearing_id, shown)

    def recording_sources(self) -> set[str]:
        """The recorders whose statuses the live rooms show (not the in-process recorder, whose id is "")."""
        return {r for statuses in self._recording.values() for r in statuses.by_recorder} - {""}

    def recorder_lost(self, recorder_id: str) -> None:
        """A recorder's heartbeat lapsed: its statuses no longer count; a hearing left without any recorder is
        shown ``degraded`` (``recorder_lost``)."""
        for hearing_id, statuses in list(self._recording.items()):
            shown = statuses.forget(recorder_id)
            if shown is not None:
                self.log.warning(
                    "recording_status_recorder_lost", hearing_id=hearing_id, recorder_id=recorder_id,
                    status=shown.status, reason=shown.reason,
                )  # fmt: skip
                self._tell_recording(hearing_id, shown)

    def _tell_recording(self, hearing_id: str, message: Recording) -> None:
        for c in list(self._conns.values()):
            if c.hearing_id == hearing_id:
                c.outlet.send(message)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.log.error("session_task_failed", task=task.get_coro().__qualname__, exc_info=exc)  # type: ignore[union-attr]

    def _send(self, conn: int, message: Reply) -> None:
        c = self._conns.get(conn)
        if c is not None:
            c.outlet.send(message)

    def _run_sends(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect.conn, effect.message)

    async def _run(self, live: LiveRoom, effects: list[Effect]) -> None:
        """Carry out a room's effects in order (called under the room's lock).

        Each effect is carried out even when one before it failed: a node
        command that raises, or an audit append that fails, is logged and the
        rest (the closes, the other node commands) still happen.
        """
        for effect in effects:
            try:
                await self._run_one(live, effect)
            except Exception:
                self.log.exception(
                    "session_effect_failed", hearing_id=live.room.hearing_id, effect=type(effect).__name__
                )
        if self.snapshots is not None:
            self.snapshots.changed(live.room.hearing_id)

    async def _run_one(self, live: LiveRoom, effect: Effect) -> None:
        hearing_id = live.room.hearing_id
        if isinstance(effect, Send):
            self._send(effect.conn, effect.message)
        elif isinstance(effect, Close):
            c = self._conns.get(effect.conn)
            if c is not None:
                c.outlet.close(effect.code, effect.reason)
        elif isinstance(effect, Command):
            reply = await self._call(effect.command)
            if isinstance(reply, Refused):
                self.log.warning(
                    "node_command_refused",
                    hearing_id=hearing_id,
                    command=effect.command.type,
                    code=reply.code,
                    detail=reply.message,
                )
        elif isinstance(effect, Audit):
            for intent in list(self.audit_intents):
                try:
                    pending = intent(hearing_id, effect.trace)
                    if pending is not None:
                        await asyncio.wait_for(pending, INTENT_WAIT_SECONDS)
                except Exception:  # a listener's bug must not skip the audit or the effects after it
                    self.log.exception("audit_intent_failed", hearing_id=hearing_id, action=effect.trace.action)
            event = await self.store.append_audit(hearing_id, effect.trace)
            for listener in list(self.audit_listeners):
                try:
                    listener(hearing_id, event)
                except Exception:  # a listener's bug must not skip the effects after it
                    self.log.exception("audit_listener_failed", hearing_id=hearing_id, action=event.action)
        elif isinstance(effect, StartGrace):
            self._arm_grace(live, effect)
        elif isinstance(effect, AuditLater):
            self._arm_audit(live, effect)
        elif isinstance(effect, RevokeLink):
            await self._revoke_link(live, effect)

    async def _revoke_link(self, live: LiveRoom, revoke: RevokeLink) -> None:
        """Reissue a removed participant's join link in the store, so the removal outlives this process."""
        token_id = new_id("tok")

        def mutation(current: Hearing) -> tuple[Hearing, Trace]:
            target = current.participant(revoke.participant_id)
            if target is None or current.state in ENDED:
                raise SessionError("unknown_participant", "not booked any more")
            fresh = target.model_copy(update={"token_id": token_id})
            participants = tuple(fresh if p.id == target.id else p for p in current.participants)
            data = {"participant_id": target.id, "reason": "removed"}
            return current.model_copy(update={"participants": participants}), Trace(
                revoke.actor, "participant_link_reissued", data
            )

        try:
            hearing = await self.store.mutate_hearing(live.room.hearing_id, mutation)
        except SessionError:
            return  # unbooked or ended meanwhile: the old link is dead anyway
        self.log.info(
            "participant_link_reissued", hearing_id=hearing.id, participant_id=revoke.participant_id, reason="removed"
        )
        await self._run(live, live.room.refresh(hearing, actor=revoke.actor))

    def _arm_audit(self, live: LiveRoom, later: AuditLater) -> None:
        old = live.audit_timers.pop(later.participant_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        live.audit_timers[later.participant_id] = loop.call_later(
            later.seconds, self._spawn_flush, live, later.participant_id
        )

    def _spawn_flush(self, live: LiveRoom, participant_id: str) -> None:
        self._spawn(self._flush_audit(live, participant_id))

    async def _flush_audit(self, live: LiveRoom, participant_id: str) -> None:
        async with live.lock:
            live.audit_timers.pop(participant_id, None)
            if self.rooms.get(live.room.hearing_id) is live:
                await self._run(live, live.room.flush_audit(participant_id))

    async def _call(self, command: NodeCommand) -> NodeReply:
        return await self.node.call(command)

    def _arm_grace(self, live: LiveRoom, grace: StartGrace) -> None:
        old = live.timers.pop(grace.participant_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        live.timers[grace.participant_id] = loop.call_later(
            grace.seconds, self._spawn_expire, live, grace.participant_id, grace.epoch
        )

    async def _expire(self, live: LiveRoom, participant_id: str, epoch: int) -> None:
        async with live.lock:
            live.timers.pop(participant_id, None)
            effects = live.room.expire(participant_id, epoch)
            if effects:
                self.log.info("participant_left", hearing_id=live.room.hearing_id, participant_id=participant_id)
            await self._run(live, effects)
            await self._forget_if_empty(live)

    def _spawn_expire(self, live: LiveRoom, participant_id: str, epoch: int) -> None:
        self._spawn(self._expire(live, participant_id, epoch))

    async def _forget_if_empty(self, live: LiveRoom) -> None:
        """Give up a room no visible participant is in (called under its lock): close the hidden members'
        connections and the node's room, drop its caches, then tell :attr:`forgotten_listeners`."""
        hearing_id = live.room.hearing_id
        if not live.room.empty or self.rooms.get(hearing_id) is not live:
            return
        for timer in (*live.timers.values(), *live.audit_timers.values()):
            timer.cancel()
        hidden = {m.conn for m in live.room.members.values()}
        # Still listed while the node's room closes: a join meanwhile waits for this lock, then takes a new room.
        await self._run(live, live.room.forget())
        del self.rooms[hearing_id]
        if self.snapshots is not None:
            self.snapshots.changed(hearing_id)  # the room is gone: its snapshot is deleted
        self._recording.pop(hearing_id, None)
        for conn in hidden:
            self._conns.pop(conn, None)
        self.log.info("live_room_forgotten", hearing_id=hearing_id)
        for listener in list(self.forgotten_listeners):
            try:
                listener(hearing_id)
            except Exception:
                self.log.exception("forgotten_listener_failed", hearing_id=hearing_id)

    async def shutdown(self) -> None:
        """Close every connection with 1001 and every room on the node.

        With :attr:`owners` the rooms are handed over first (1012, leases released, the node's rooms kept for the
        process that takes them), and only the remaining sockets get 1001.
        """
        if self.snapshots is not None:
            # Written, then left in place: another signaling process restores the rooms when clients come back.
            await self.snapshots.close()
        if self.owners is not None:
            # After the snapshots' last write: a room handed over must not read as forgotten (deleted) there.
            await self.owners.close()
        for c in list(self._conns.values()):
            c.outlet.close(CLOSE_GOING_AWAY, "server going away")
        for live in list(self.rooms.values()):
            for timer in (*live.timers.values(), *live.audit_timers.values()):
                timer.cancel()
            with contextlib.suppress(Exception):
                await self.node.call(CloseRoom(hearing_id=live.room.hearing_id))
        self.rooms.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Cancelled tasks still run their cleanup (releasing room locks, finishing an await): wait for it.
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- several signaling processes ----------------------------------------------------------------

    async def give_up_room(self, hearing_id: str, code: int, reason: str) -> None:
        """Another process owns the hearing's live room now: close this process's connections of it with
        ``code`` (they reconnect there) and drop the room, leaving the node's room and the stored snapshot to the
        new owner (no :meth:`HearingRoom.forget`, no forgotten listeners)."""
        live = self.rooms.get(hearing_id)
        if live is None:
            return
        async with live.lock:
            if self.rooms.get(hearing_id) is not live:
                return
            for timer in (*live.timers.values(), *live.audit_timers.values()):
                timer.cancel()
            del self.rooms[hearing_id]
            if self.snapshots is not None:
                self.snapshots.disown(hearing_id)
            self._recording.pop(hearing_id, None)
            closed = 0
            for c in list(self._conns.values()):
                if c.hearing_id == hearing_id:
                    c.hearing_id = ""  # its detach must not reach a room made here later for the same hearing
                    c.outlet.close(code, reason)
                    closed += 1
        self.log.info("live_room_given_up", hearing_id=hearing_id, closed=closed, code=code)
