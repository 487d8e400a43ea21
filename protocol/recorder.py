"""Signaling <-> recorder: what the recorder service needs from a hearing's live session, and nothing more.

The recorder follows a hearing as a hidden participant (role ``recorder``). It
needs from signaling, and only through a :class:`SessionLink`:

- to hear when a hearing's live room opens (someone visible joined) and when
  it is given up (nobody visible left): :meth:`RecorderEvents.room_opened`,
  :meth:`RecorderEvents.room_forgotten`;
- to join the room as its hidden participant and to receive that
  participant's session messages (``joined``, ``state``, ``roster``...):
  :meth:`SessionLink.join`, :meth:`RecorderEvents.session_message`;
- the hearing's audit events as they are stored (consultation times, removals):
  :meth:`RecorderEvents.audit_event`;
- an :class:`AuditIntent` just *before* a consultation's audit event is stored:
  the recorder withholds the consultation's members from that moment on. The
  link delivers the intent and waits for the recorder to have applied it
  before signaling stores the event, changes what the node forwards and tells
  anyone (in-process: a synchronous call; over the bus: a request answered
  once applied, bounded by :data:`INTENT_WAIT_SECONDS`). Frames are stamped on
  the recorder's own clock, so the recorder takes the moment it applies the
  intent as the exclusion's start: every frame captured after it is withheld,
  and nothing captured before it was private yet (the consultation's members
  learn they are in one only after the event is stored). Over the bus the
  intent names the last session message sent to the recorder before it, and
  the recorder handles that message first: a roster from before the
  consultation never undoes it;
- the closing handshake: at adjournment signaling awaits
  :meth:`RecorderEvents.closing` (the recorder stops and seals) before it tells
  anyone, bounded by :data:`CLOSING_WAIT_SECONDS`, so every participant still
  hears ``recording: sealed``;
- to send the hearing's ``recording`` status: :meth:`SessionLink.send_status`.

Two links implement it: ``signaling.recorder_link.HubRecorderLink`` in the
process of the hub (``courtlink serve``), and ``recorder.bus_link.BusSessionLink``
over the bus (``courtlink recorder``), served on the signaling side by
``signaling.recorder_bus.RecorderBusServer``. The bus messages are the models
below; their channel and record names are in :mod:`protocol.cluster`.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Protocol

from pydantic import Field

from protocol.client import ParticipantInfo, Recording, Reply
from protocol.directory import RecorderKey, RecordingInfo
from rooms.audit import AuditEvent
from rooms.model import Frozen

CLOSING_WAIT_SECONDS = 15.0
"""How long an adjournment waits for the recorders' seals before it tells everyone (as the hub does)."""

INTENT_WAIT_SECONDS = 2.0
"""How long signaling waits for the recorders to apply an audit intent before it stores the event anyway."""

RECORDER_HEARTBEAT_SECONDS = 2.0
"""How often a recorder rewrites its :class:`RecorderRecord`."""

RECORDER_TTL_SECONDS = 6.0
"""A recorder record lives this long after its last heartbeat: a recorder silent for longer is gone."""


class LinkError(Exception):
    """A named failure of the link; ``code`` is stable snake_case."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LinkRefused(LinkError):
    """The live session refused the recorder (the hearing adjourned, was cancelled, is unknown...)."""


class LinkUnavailable(LinkError):
    """Signaling could not be reached (the bus timed out or nobody serves the hearing)."""


class AuditIntent(Frozen):
    """An audit event about to be stored: the recorder must act from this moment (a consultation begins)."""

    actor: str
    action: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: float = Field(default_factory=time.time, description="Unix time of the decision, on signaling's clock.")


class RecorderEvents(Protocol):
    """What a :class:`SessionLink` delivers to the recorder service. Plain calls return at once."""

    async def room_opened(self, hearing_id: str) -> None:
        """A live room opened (its first visible participant joined): the recorder joins it."""
        ...

    def room_forgotten(self, hearing_id: str) -> None:
        """The live room was given up (nobody visible left); the recorder's connection to it is gone."""
        ...

    def session_message(self, hearing_id: str, message: Reply) -> None:
        """A message the session sent the recorder's hidden participant, in the order sent."""
        ...

    def session_closed(self, hearing_id: str, code: int, reason: str) -> None:
        """The session closed the hidden participant's connection (adjournment, shutdown)."""
        ...

    def audit_intent(self, hearing_id: str, intent: AuditIntent) -> None:
        """An audit event is about to be stored: applied before this returns (see the module docstring)."""
        ...

    def audit_event(self, hearing_id: str, event: AuditEvent) -> None:
        """An audit event of a live session was stored."""
        ...

    async def closing(self, hearing_id: str) -> None:
        """The hearing adjourns: stop and seal now (awaited by signaling, bounded by ``CLOSING_WAIT_SECONDS``)."""
        ...


class SessionLink(Protocol):
    """The recorder's one way into the live sessions of signaling."""

    async def start(self, events: RecorderEvents) -> None:
        """Deliver events to ``events`` from now on."""
        ...

    async def close(self) -> None:
        """Stop delivering; the hidden participants' connections are left to the session's own timers."""
        ...

    async def join(self, hearing_id: str, info: ParticipantInfo) -> str:
        """Join ``hearing_id``'s live room as the hidden participant ``info``; the connection's handle.

        Raises :class:`LinkRefused` when the session refuses (a named reason), :class:`LinkUnavailable` when
        signaling cannot be reached.
        """
        ...

    async def leave(self, handle: str) -> None:
        """Drop the connection ``handle`` (after the seal)."""
        ...

    def send_status(self, hearing_id: str, message: Recording) -> None:
        """Tell everyone in the hearing how its recording is (queued, delivered in order; never blocks)."""
        ...


# --- bus messages (names in protocol.cluster) ---------------------------------------------------------------------


class RecorderRecord(Frozen):
    """A recorder's heartbeat (``recorder.<id>``): signaling waits for the live ones at adjournment."""

    id: str = Field(min_length=1, max_length=128)
    started_at: float = Field(description="Unix time the recorder started (a restart is a new life).")
    heartbeat_at: float = Field(description="Unix time of this heartbeat.")
    hearings: tuple[str, ...] = Field(default=(), description="Hearings it follows now.")
    version: str = ""


class RoomEvent(Frozen):
    """``recorder.rooms``: a live room opened or was given up, in the signaling process ``process_id``."""

    event: Literal["opened", "forgotten"]
    hearing_id: str
    process_id: str


class RecorderHello(Frozen):
    """``recorder.hello``: a recorder started; every signaling process announces its live rooms again."""

    recorder_id: str


class AuditNote(Frozen):
    """``recorder.audit``: a live session's audit event was stored."""

    hearing_id: str
    event: AuditEvent


class StatusNote(Frozen):
    """``recorder.status``: a recorder's ``recording`` status for everyone in the hearing."""

    hearing_id: str
    recorder_id: str
    recording: Recording


class SessionNote(Frozen):
    """``recorder.<id>.session``: what the session sent a recorder's hidden participant, or that it closed it."""

    hearing_id: str
    handle: str
    message: dict[str, Any] | None = Field(default=None, description="A server message (JSON), or null: closed.")
    code: int = 0
    reason: str = ""
    seq: int = Field(default=0, ge=0, description="1, 2, ... per handle: the order the session sent them in.")


class JoinRequest(Frozen):
    """``recorder.link[.<process_id>]`` request: join a live room as a hidden participant, or leave it."""

    op: Literal["join", "leave"]
    hearing_id: str = ""
    recorder_id: str = ""
    participant: ParticipantInfo | None = None
    handle: str = ""


class JoinReply(Frozen):
    """The answer to a :class:`JoinRequest`: a handle, or a named refusal."""

    handle: str = ""
    code: str = Field(default="", description='"" when joined; else why the session refused.')
    message: str = ""


class RecorderCommand(Frozen):
    """``recorder.<id>.cmd`` request: what signaling asks of one recorder."""

    op: Literal["intent", "closing", "recordings", "keys"]
    hearing_id: str = ""
    intent: AuditIntent | None = None
    handle: str = Field(default="", description="The recorder's connection to the hearing's room, if any.")
    after: int = Field(
        default=0,
        ge=0,
        description="The last session message sent on ``handle`` before this command: the recorder handles every "
        "message up to it first, so the command finds the session as the hub left it (as in one process).",
    )


class RecorderReply(Frozen):
    """The answer to a :class:`RecorderCommand`."""

    ok: bool = True
    code: str = ""
    message: str = ""
    recording: Recording | None = Field(default=None, description="closing: the recorder's last status.")
    recordings: tuple[RecordingInfo, ...] = ()
    keys: tuple[RecorderKey, ...] = ()
