"""The recorder's :class:`protocol.recorder.SessionLink` over the bus (``courtlink recorder``).

The signaling side is ``signaling.recorder_bus.RecorderBusServer``; the
messages are in :mod:`protocol.recorder`, their names in :mod:`protocol.cluster`.

- The recorder announces itself with a ``recorder.<id>`` record, rewritten
  every ``RECORDER_HEARTBEAT_SECONDS`` (ttl ``RECORDER_TTL_SECONDS``): signaling
  waits for the live recorders at adjournment and asks them for recordings.
  On start it says ``recorder.hello``, and every signaling process announces
  its live rooms again (a restarted recorder continues open hearings).
- It joins a room by a request to the signaling process that announced it
  (``recorder.link.<process_id>``), else to the room's lease holder, else to any
  (``recorder.link``).
- It answers ``recorder.<id>.cmd``: ``intent`` (applied before the reply, so
  signaling stores a consultation's start only once the recorder withholds its
  members), ``closing`` (replied after the seal, with the last status), and
  the directory's ``recordings`` and ``keys`` (from its own data directory).
- Its ``recording`` statuses go out on ``recorder.status`` in order; a closing
  reply leaves only after every status queued before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from pydantic import ValidationError

from protocol.client import SERVER_MESSAGE, ParticipantInfo, Recording
from protocol.cluster import (
    RECORDER_AUDIT,
    RECORDER_HELLO,
    RECORDER_LINK,
    RECORDER_ROOMS,
    RECORDER_STATUS,
    NodeRecord,
    Placement,
    node_record_key,
    placement_key,
    recorder_command_channel,
    recorder_link_channel,
    recorder_record_key,
    recorder_session_channel,
    room_lease_key,
)
from protocol.directory import RecordingDirectory
from protocol.recorder import (
    RECORDER_HEARTBEAT_SECONDS,
    RECORDER_TTL_SECONDS,
    AuditNote,
    JoinReply,
    JoinRequest,
    LinkRefused,
    LinkUnavailable,
    RecorderCommand,
    RecorderEvents,
    RecorderHello,
    RecorderRecord,
    RecorderReply,
    RoomEvent,
    SessionNote,
    StatusNote,
)
from rooms.bus import Bus, BusError, Records, Subscription
from rooms.tasks import cancel_and_wait

log = structlog.get_logger("recorder.bus_link")

CLOSED = 1 << 62
"""The mark of a closed handle in the delivered counts (beyond any message number)."""
INTENT_CATCH_UP_SECONDS = 1.5
"""How long an intent waits for the session messages sent before it (signaling waits 2 s for the reply)."""
CLOSING_CATCH_UP_SECONDS = 5.0
"""How long the closing handshake waits for the session messages sent before it (signaling waits 15 s)."""


class BusSessionLink:
    """A :class:`protocol.recorder.SessionLink` over a :class:`rooms.bus.Bus` and its :class:`Records`."""

    def __init__(
        self,
        bus: Bus,
        records: Records,
        recorder_id: str,
        *,
        directory: RecordingDirectory | None = None,
        following: Callable[[], tuple[str, ...]] = tuple,
        attempt_seconds: float = 2.0,
        retries: int = 2,
        version: str = "",
    ) -> None:
        self._bus = bus
        self._records = records
        self.recorder_id = recorder_id
        self._directory = directory
        self.following = following
        """The hearings the recorder follows now (its heartbeat lists them); set once the service exists."""
        self._attempt = attempt_seconds
        self._retries = retries
        self._version = version
        self._events: RecorderEvents | None = None
        self._subs: list[Subscription] = []
        self._rooms: dict[str, str] = {}
        """hearing id -> the signaling process that announced its live room."""
        self._last: dict[str, Recording] = {}
        """The last status sent per hearing (a closing reply carries it)."""
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._delivered: dict[str, int] = {}
        """handle -> the number of the last session message handled on it."""
        self._progress = asyncio.Event()
        """Set (and replaced) each time a session message was handled."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._started_at = time.time()

    async def start(self, events: RecorderEvents) -> None:
        """Listen, serve, announce this recorder (record first, then hello)."""
        self._events = events
        self._started_at = time.time()
        self._spawn(self._send_loop())
        self._subs = [
            await self._bus.subscribe(RECORDER_ROOMS, self._room),
            await self._bus.subscribe(RECORDER_AUDIT, self._audit),
            await self._bus.subscribe(recorder_session_channel(self.recorder_id), self._session),
            await self._bus.serve(recorder_command_channel(self.recorder_id), self._command),
        ]
        await self._heartbeat_once()
        self._spawn(self._heartbeat())
        await self._bus.publish(RECORDER_HELLO, RecorderHello(recorder_id=self.recorder_id).model_dump_json().encode())

    async def close(self) -> None:
        """Stop (queued statuses go out first, within a second) and delete the record: signaling waits no more."""
        self._events = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 1.0)
        for sub in self._subs:
            await sub.close()
        self._subs = []
        await cancel_and_wait(*self._tasks)  # (its heartbeat's Redis calls can lose a cancel)
        with contextlib.suppress(BusError, OSError):
            await self._records.delete(recorder_record_key(self.recorder_id))

    # --- SessionLink ------------------------------------------------------------------------------

    async def join(self, hearing_id: str, info: ParticipantInfo) -> str:
        """Join through the process holding the room (see the module docstring)."""
        channel = await self._link_channel(hearing_id)
        request = JoinRequest(op="join", hearing_id=hearing_id, recorder_id=self.recorder_id, participant=info)
        try:
            raw = await self._bus.request(
                channel, request.model_dump_json().encode(), attempt_seconds=self._attempt, retries=self._retries
            )
            reply = JoinReply.model_validate_json(raw)
        except BusError as exc:
            raise LinkUnavailable(exc.code, str(exc)) from exc
        except ValidationError as exc:
            raise LinkUnavailable("invalid_reply", str(exc)) from exc
        if reply.code:
            raise LinkRefused(reply.code, reply.message)
        return reply.handle

    async def leave(self, handle: str) -> None:
        """Leave through the process that let the recorder in."""
        process_id = handle.rsplit(":", 1)[0]
        channel = recorder_link_channel(process_id) if process_id else RECORDER_LINK
        request = JoinRequest(op="leave", handle=handle)
        try:
            await self._bus.request(channel, request.model_dump_json().encode(), attempt_seconds=self._attempt)
        except BusError as exc:
            # The session drops the connection itself once the hearing ended; nothing is lost.
            log.info("recorder_leave_unanswered", handle=handle, error=str(exc))

    def send_status(self, hearing_id: str, message: Recording) -> None:
        """Publish the status after every one before it."""
        self._last[hearing_id] = message
        note = StatusNote(hearing_id=hearing_id, recorder_id=self.recorder_id, recording=message)
        self._outbox.put_nowait(note.model_dump_json().encode())

    # --- internals ----------------------------------------------------------------------------------

    async def _link_channel(self, hearing_id: str) -> str:
        process_id = self._rooms.get(hearing_id)
        if process_id is None:
            with contextlib.suppress(BusError, OSError):
                owner = await self._records.get(room_lease_key(hearing_id))
                process_id = owner.decode() if owner else None
        return recorder_link_channel(process_id) if process_id else RECORDER_LINK

    async def _send_loop(self) -> None:
        while True:
            payload = await self._outbox.get()
            try:
                await self._bus.publish(RECORDER_STATUS, payload)
            except BusError as exc:
                log.warning("recording_status_unsent", error=str(exc))
            finally:
                self._outbox.task_done()

    async def _heartbeat_once(self) -> None:
        now = time.time()
        record = RecorderRecord(
            id=self.recorder_id,
            started_at=self._started_at,
            heartbeat_at=now,
            hearings=self.following(),
            version=self._version,
        )
        await self._records.put(
            recorder_record_key(self.recorder_id), record.model_dump_json().encode(), ttl=RECORDER_TTL_SECONDS
        )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(RECORDER_HEARTBEAT_SECONDS)
            try:
                await self._heartbeat_once()
            except (BusError, OSError) as exc:  # Redis away: the next beat tries again
                log.warning("recorder_heartbeat_failed", error=str(exc))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _room(self, payload: bytes) -> None:
        events = self._events
        try:
            event = RoomEvent.model_validate_json(payload)
        except ValidationError:
            log.warning("room_event_unreadable")
            return
        if events is None:
            return
        if event.event == "opened":
            self._rooms[event.hearing_id] = event.process_id
            self._spawn(events.room_opened(event.hearing_id))  # a join is a round trip: not on this subscription
        elif self._rooms.get(event.hearing_id, event.process_id) == event.process_id:
            self._rooms.pop(event.hearing_id, None)
            events.room_forgotten(event.hearing_id)

    async def _audit(self, payload: bytes) -> None:
        events = self._events
        try:
            note = AuditNote.model_validate_json(payload)
        except ValidationError:
            log.warning("audit_note_unreadable")
            return
        if events is not None:
            events.audit_event(note.hearing_id, note.event)

    async def _session(self, payload: bytes) -> None:
        events = self._events
        try:
            note = SessionNote.model_validate_json(payload)
            message = SERVER_MESSAGE.validate_python(note.message) if note.message is not None else None
        except ValidationError:
            log.warning("session_note_unreadable")
            return
        if events is None:
            return
        try:
            if message is None:
                events.session_closed(note.hearing_id, note.code, note.reason)
            else:
                events.session_message(note.hearing_id, message)
        finally:
            # Closed: nothing more comes on it, so nothing is waited for on it.
            seq = CLOSED if message is None else note.seq
            self._delivered[note.handle] = max(seq, self._delivered.get(note.handle, 0))
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()

    async def _caught_up(self, command: RecorderCommand, within: float) -> None:
        """Wait until every session message sent before ``command`` was handled (bounded: then go on, logged)."""
        if not command.handle or command.after <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._delivered.get(command.handle, 0) < command.after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning(
                    "session_messages_late",
                    hearing_id=command.hearing_id,
                    op=command.op,
                    handled=self._delivered.get(command.handle, 0),
                    after=command.after,
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def _command(self, payload: bytes) -> bytes:
        try:
            command = RecorderCommand.model_validate_json(payload)
        except ValidationError:
            return (
                RecorderReply(ok=False, code="invalid_command", message="not a recorder command")
                .model_dump_json()
                .encode()
            )
        return (await self._answer(command)).model_dump_json().encode()

    async def _answer(self, command: RecorderCommand) -> RecorderReply:
        events = self._events
        if command.op in ("recordings", "keys"):
            directory = self._directory
            if directory is None:
                return RecorderReply(ok=False, code="no_directory", message="this recorder lists nothing")
            if command.op == "keys":
                return RecorderReply(keys=tuple(await directory.public_keys()))
            return RecorderReply(recordings=tuple(await directory.recordings(command.hearing_id)))
        if events is None:
            return RecorderReply(ok=False, code="closing", message="the recorder is stopping")
        if command.op == "intent" and command.intent is not None:
            await self._caught_up(command, INTENT_CATCH_UP_SECONDS)
            events.audit_intent(command.hearing_id, command.intent)
            return RecorderReply()
        if command.op == "closing":
            await self._caught_up(command, CLOSING_CATCH_UP_SECONDS)
            await events.closing(command.hearing_id)
            # Every status sent before the reply (the seal's) is published before it.
            await self._outbox.join()
            return RecorderReply(recording=self._last.get(command.hearing_id))
        return RecorderReply(ok=False, code="invalid_command", message=f"{command.op} needs more fields")


def frame_locator(records: Records) -> Callable[[str], Awaitable[str | None]]:
    """Where a hearing's frames are now: its placement's node, and that node's frame pipe address (or None)."""

    async def locate(hearing_id: str) -> str | None:
        try:
            raw = await records.get(placement_key(hearing_id))
            if raw is None:
                return None
            placement = Placement.model_validate_json(raw)
            node = await records.get(node_record_key(placement.node_id))
            return NodeRecord.model_validate_json(node).frame_address if node is not None else None
        except (BusError, OSError, ValidationError) as exc:
            log.warning("frame_address_unknown", hearing_id=hearing_id, error=str(exc))
            return None

    return locate
