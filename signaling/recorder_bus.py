"""Signaling's side of the recorder link over the bus: recorders in other processes follow this hub's hearings.

:class:`RecorderBusServer` turns the hub's listeners into bus messages
(names in :mod:`protocol.cluster`, payloads in :mod:`protocol.recorder`):

- a live room opened or was given up: ``recorder.rooms``; a recorder that
  says ``recorder.hello`` (it just started) hears every live room again;
- a recorder joins and leaves a room as its hidden participant by a request on
  ``recorder.link.<process_id>`` (or ``recorder.link``, any process); the
  hidden participant's session messages go to ``recorder.<id>.session`` in the
  order the session sends them (one ordered publisher for everything);
- stored audit events: ``recorder.audit``;
- a consultation about to begin: a request to every live recorder
  (``recorder.<id>.cmd``, op ``intent``), awaited before the hub stores the
  event (bounded by ``INTENT_WAIT_SECONDS``);
- adjournment: a request to every live recorder (op ``closing``), awaited by
  the hub before it tells anyone (bounded by ``CLOSING_WAIT_SECONDS``); the
  reply carries the recorder's last status, shown before the connections close;
- the recorders' ``recording`` status arrives on ``recorder.status``.

The live recorders are those with a ``recorder.<id>`` record (a heartbeat).
:class:`BusRecordingDirectory` reads recordings and keys from every live
recorder (``GET /hearings/{id}/recordings``, ``GET /recorder/keys``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from protocol.client import ParticipantInfo, Reply
from protocol.cluster import (
    RECORDER_AUDIT,
    RECORDER_HELLO,
    RECORDER_LINK,
    RECORDER_PREFIX,
    RECORDER_ROOMS,
    RECORDER_STATUS,
    recorder_command_channel,
    recorder_link_channel,
    recorder_session_channel,
)
from protocol.directory import RecorderKey, RecordingInfo
from protocol.recorder import (
    CLOSING_WAIT_SECONDS,
    INTENT_WAIT_SECONDS,
    RECORDER_HEARTBEAT_SECONDS,
    AuditIntent,
    AuditNote,
    JoinReply,
    JoinRequest,
    RecorderCommand,
    RecorderHello,
    RecorderRecord,
    RecorderReply,
    RoomEvent,
    SessionNote,
    StatusNote,
)
from rooms.audit import AuditEvent
from rooms.bus import Bus, BusError, Records, Subscription
from rooms.errors import DomainError
from rooms.store import Trace
from rooms.tasks import cancel_and_wait
from signaling.session import SessionError
from signaling.session_hub import SessionHub
from signaling.ws import HUB_KEY

log = structlog.get_logger("signaling.recorder_bus")

DIRECTORY_SECONDS = 30.0
"""How long a listing waits for one recorder (it verifies archives, which re-hashes unchanged ones from cache)."""


async def live_recorders(records: Records) -> list[RecorderRecord]:
    """Every recorder with a live heartbeat record (unreadable records are skipped)."""
    out: list[RecorderRecord] = []
    for key, raw in sorted((await records.scan(RECORDER_PREFIX)).items()):
        try:
            out.append(RecorderRecord.model_validate_json(raw))
        except ValidationError:
            log.warning("recorder_record_unreadable", key=key)
    return out


class _Outlet:
    """A hidden participant in another process: its messages go out on the bus, in order."""

    def __init__(self, server: RecorderBusServer, recorder_id: str, hearing_id: str, handle: str) -> None:
        self._server = server
        self._channel = recorder_session_channel(recorder_id)
        self._hearing_id = hearing_id
        self.handle = handle
        self.seq = 0
        """The last message's number (a command to the recorder names it: ``RecorderCommand.after``)."""

    def send(self, message: Reply) -> None:
        self.seq += 1
        note = SessionNote(
            hearing_id=self._hearing_id, handle=self.handle, message=message.model_dump(mode="json"), seq=self.seq
        )
        self._server.post(self._channel, note.model_dump_json().encode())

    def close(self, code: int, reason: str) -> None:
        self.seq += 1
        note = SessionNote(hearing_id=self._hearing_id, handle=self.handle, code=code, reason=reason, seq=self.seq)
        self._server.post(self._channel, note.model_dump_json().encode())


class RecorderBusServer:
    """Serves this process's live rooms to recorders over the bus (see the module docstring)."""

    def __init__(self, hub: SessionHub, bus: Bus, records: Records, *, process_id: str) -> None:
        self._hub = hub
        self._bus = bus
        self._records = records
        self.process_id = process_id
        self._handles: dict[str, int] = {}
        self._outlets: dict[tuple[str, str], _Outlet] = {}
        """(recorder id, hearing id) -> the outlet of the recorder's latest connection to the hearing's room."""
        self._subs: list[Subscription] = []
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen to the hub and serve the recorders."""
        self._sender = asyncio.get_running_loop().create_task(self._send_loop())
        self._watcher = asyncio.get_running_loop().create_task(self._watch_recorders())
        self._subs = [
            await self._bus.serve(recorder_link_channel(self.process_id), self._link),
            await self._bus.serve(RECORDER_LINK, self._link),
            await self._bus.subscribe(RECORDER_HELLO, self._hello),
            await self._bus.subscribe(RECORDER_STATUS, self._status),
        ]
        hub = self._hub
        hub.room_listeners.append(self._opened)
        hub.forgotten_listeners.append(self._forgotten)
        hub.audit_listeners.append(self._audit)
        hub.audit_intents.append(self._intent)
        hub.closing_listeners.append(self._closing)

    async def close(self) -> None:
        """Stop serving (what is queued is published first, within a second)."""
        hub = self._hub
        listeners: list[tuple[list[Any], Any]] = [
            (hub.room_listeners, self._opened),
            (hub.forgotten_listeners, self._forgotten),
            (hub.audit_listeners, self._audit),
            (hub.audit_intents, self._intent),
            (hub.closing_listeners, self._closing),
        ]
        for registered, item in listeners:
            with contextlib.suppress(ValueError):
                registered.remove(item)
        await cancel_and_wait(self._watcher)
        self._watcher = None
        for sub in self._subs:
            await sub.close()
        self._subs = []
        if self._sender is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), 1.0)
            await cancel_and_wait(self._sender)
            self._sender = None

    # --- ordered publishing ---------------------------------------------------------------------

    def post(self, channel: str, payload: bytes) -> None:
        """Publish ``payload`` after everything posted before it (never blocks)."""
        self._outbox.put_nowait((channel, payload))

    async def _send_loop(self) -> None:
        while True:
            channel, payload = await self._outbox.get()
            try:
                await self._bus.publish(channel, payload)
            except BusError as exc:
                log.warning("recorder_publish_failed", channel=channel, error=str(exc))
            finally:
                self._outbox.task_done()

    # --- hub listeners --------------------------------------------------------------------------

    async def _opened(self, hearing_id: str) -> None:
        event = RoomEvent(event="opened", hearing_id=hearing_id, process_id=self.process_id)
        self.post(RECORDER_ROOMS, event.model_dump_json().encode())

    def _forgotten(self, hearing_id: str) -> None:
        # The hub closed the hidden members' connections with the room: their handles are gone too.
        for key, outlet in list(self._outlets.items()):
            if key[1] == hearing_id:
                del self._outlets[key]
                self._handles.pop(outlet.handle, None)
        event = RoomEvent(event="forgotten", hearing_id=hearing_id, process_id=self.process_id)
        self.post(RECORDER_ROOMS, event.model_dump_json().encode())

    def _audit(self, hearing_id: str, event: AuditEvent) -> None:
        self.post(RECORDER_AUDIT, AuditNote(hearing_id=hearing_id, event=event).model_dump_json().encode())

    def _intent(self, hearing_id: str, trace: Trace) -> Awaitable[None] | None:
        if trace.action != "consultation_started":
            return None  # only a consultation's start must reach the recorders before it is stored
        intent = AuditIntent(actor=trace.actor, action=trace.action, data=dict(trace.data))
        command = RecorderCommand(op="intent", hearing_id=hearing_id, intent=intent)
        return self._tell_all(command, INTENT_WAIT_SECONDS)

    async def _tell_all(self, command: RecorderCommand, seconds: float) -> None:
        await self._ask_all(command, seconds)

    async def _closing(self, hearing_id: str) -> None:
        command = RecorderCommand(op="closing", hearing_id=hearing_id)
        for recorder_id, reply in await self._ask_all(command, CLOSING_WAIT_SECONDS - 1.0):
            if reply.recording is not None:
                # Shown now, before the connections close: the status message itself may come later.
                self._hub.recording_status(hearing_id, reply.recording, recorder_id)

    async def _ask_all(self, command: RecorderCommand, seconds: float) -> list[tuple[str, RecorderReply]]:
        """Send ``command`` to every live recorder at once; the replies that came, by recorder id (failures are
        logged).

        Each recorder's copy names the last message its hidden participant was sent (``after``): the recorder
        handles the messages up to it before the command, whatever order the bus delivers them in.
        """
        recorders = await live_recorders(self._records)

        async def ask(recorder_id: str) -> RecorderReply:
            outlet = self._outlets.get((recorder_id, command.hearing_id))
            mine = command
            if outlet is not None:
                mine = command.model_copy(update={"handle": outlet.handle, "after": outlet.seq})
            raw = await self._bus.request(
                recorder_command_channel(recorder_id), mine.model_dump_json().encode(), attempt_seconds=seconds
            )
            return RecorderReply.model_validate_json(raw)

        results = await asyncio.gather(*(ask(r.id) for r in recorders), return_exceptions=True)
        replies: list[tuple[str, RecorderReply]] = []
        for record, result in zip(recorders, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "recorder_unanswered",
                    recorder_id=record.id,
                    op=command.op,
                    hearing_id=command.hearing_id,
                    error=str(result) or type(result).__name__,
                )
            else:
                replies.append((record.id, result))
        return replies

    # --- what recorders send ----------------------------------------------------------------------

    async def _link(self, payload: bytes) -> bytes:
        try:
            request = JoinRequest.model_validate_json(payload)
        except ValidationError:
            return JoinReply(code="invalid_request", message="not a recorder join request").model_dump_json().encode()
        if request.op == "leave":
            for key, known in list(self._outlets.items()):
                if known.handle == request.handle:
                    del self._outlets[key]
            conn = self._handles.pop(request.handle, None)
            if conn is not None:
                await self._hub.detach(conn)
            return JoinReply(handle=request.handle).model_dump_json().encode()
        info = request.participant
        if info is None or not request.recorder_id or not request.hearing_id:
            reply = JoinReply(code="invalid_request", message="join needs hearing_id, recorder_id and participant")
            return reply.model_dump_json().encode()
        return (await self._join(request.hearing_id, request.recorder_id, info)).model_dump_json().encode()

    async def _join(self, hearing_id: str, recorder_id: str, info: ParticipantInfo) -> JoinReply:
        handle = f"{self.process_id}:{secrets.token_hex(6)}"
        outlet = _Outlet(self, recorder_id, hearing_id, handle)
        self._outlets[(recorder_id, hearing_id)] = outlet  # before the join: its messages are numbered from 1
        try:
            conn = await self._hub.join_internal(hearing_id, info, outlet)
        except (SessionError, DomainError) as exc:
            if self._outlets.get((recorder_id, hearing_id)) is outlet:
                del self._outlets[(recorder_id, hearing_id)]
            return JoinReply(code=exc.code, message=exc.detail)
        self._handles[handle] = conn
        log.info("recorder_joined_over_bus", hearing_id=hearing_id, recorder_id=recorder_id)
        return JoinReply(handle=handle)

    async def _hello(self, payload: bytes) -> None:
        try:
            hello = RecorderHello.model_validate_json(payload)
        except ValidationError:
            return
        for hearing_id, live in list(self._hub.rooms.items()):
            if live.listened:
                await self._opened(hearing_id)
        log.info("recorder_greeted", recorder_id=hello.recorder_id)

    async def _status(self, payload: bytes) -> None:
        try:
            note = StatusNote.model_validate_json(payload)
        except ValidationError:
            log.warning("recorder_status_unreadable")
            return
        self._hub.recording_status(note.hearing_id, note.recording, note.recorder_id)

    # --- recorders that are lost ------------------------------------------------------------------

    async def _watch_recorders(self) -> None:
        """Every heartbeat period: a recorder whose statuses the hub shows and whose record has lapsed is lost."""
        while True:
            await asyncio.sleep(RECORDER_HEARTBEAT_SECONDS)
            # Read before the scan: a recorder that starts meanwhile writes its record before any status.
            reporting = self._hub.recording_sources()
            try:
                live = {r.id for r in await live_recorders(self._records)}
            except Exception as exc:  # Redis away: nobody is declared lost on that account, and the watch goes on
                log.warning("recorder_watch_failed", error=str(exc) or type(exc).__name__)
                continue
            for recorder_id in sorted(reporting - live):
                log.warning("recorder_lost", recorder_id=recorder_id)
                self._hub.recorder_lost(recorder_id)


class BusRecordingDirectory:
    """:class:`protocol.directory.RecordingDirectory` over the bus: asks every live recorder."""

    def __init__(self, bus: Bus, records: Records, *, attempt_seconds: float = DIRECTORY_SECONDS) -> None:
        self._bus = bus
        self._records = records
        self._seconds = attempt_seconds

    async def _ask(self, command: RecorderCommand) -> list[RecorderReply]:
        recorders = await live_recorders(self._records)
        payload = command.model_dump_json().encode()

        async def ask(recorder_id: str) -> RecorderReply:
            raw = await self._bus.request(recorder_command_channel(recorder_id), payload, attempt_seconds=self._seconds)
            return RecorderReply.model_validate_json(raw)

        results = await asyncio.gather(*(ask(r.id) for r in recorders), return_exceptions=True)
        replies: list[RecorderReply] = []
        for record, result in zip(recorders, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("recorder_directory_unanswered", recorder_id=record.id, op=command.op, error=str(result))
            elif result.ok:
                replies.append(result)
        return replies

    async def recordings(self, hearing_id: str) -> Sequence[RecordingInfo]:
        """Every live recorder's sessions of the hearing (each once; by recorder, oldest first, as on one disk)."""
        seen: dict[tuple[str, str], RecordingInfo] = {}
        for reply in await self._ask(RecorderCommand(op="recordings", hearing_id=hearing_id)):
            for info in reply.recordings:
                seen.setdefault((info.recorder_id, info.session_id), info)
        return sorted(seen.values(), key=lambda r: (r.recorder_id, r.session_id))

    async def public_keys(self) -> Sequence[RecorderKey]:
        """Every live recorder's public keys (each key once)."""
        seen: dict[str, RecorderKey] = {}
        for reply in await self._ask(RecorderCommand(op="keys")):
            for key in reply.keys:
                seen.setdefault(key.key_id, key)
        return list(seen.values())


def recorder_bus_context(
    bus: Bus, records: Records, *, process_id: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context serving the app's hub to recorders over ``bus`` (``courtlink signaling``).

    Append it to ``app.cleanup_ctx`` after the WebSocket session is set up; pair it with
    :class:`BusRecordingDirectory` for the recordings and keys routes.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        server = RecorderBusServer(app[HUB_KEY], bus, records, process_id=process_id)
        await server.start()
        yield
        await server.close()

    return context
