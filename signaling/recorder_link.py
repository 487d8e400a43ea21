"""The recorder's :class:`protocol.recorder.SessionLink` in the process of the session hub (``courtlink serve``).

Every event is a plain call on the hub's loop, in the order the hub makes it:
the hidden participant's messages are handed over as the session sends them
(before the node commands that go with them), an audit intent is applied
before the hub stores the event, and the closing handshake is one of the hub's
closing listeners (bounded by ``CLOSING_WAIT_SECONDS`` there).
"""

from __future__ import annotations

import time

from protocol.client import ParticipantInfo, Recording, Reply
from protocol.recorder import AuditIntent, LinkRefused, RecorderEvents
from rooms.audit import AuditEvent
from rooms.errors import DomainError
from rooms.store import Trace
from signaling.session import SessionError
from signaling.session_hub import SessionHub


class _Outlet:
    """The hidden participant's outlet: hands each message to the recorder at once (no I/O)."""

    def __init__(self, events: RecorderEvents, hearing_id: str) -> None:
        self._events = events
        self._hearing_id = hearing_id

    def send(self, message: Reply) -> None:
        self._events.session_message(self._hearing_id, message)

    def close(self, code: int, reason: str) -> None:
        self._events.session_closed(self._hearing_id, code, reason)


class HubRecorderLink:
    """A :class:`protocol.recorder.SessionLink` over a :class:`SessionHub` in this process."""

    def __init__(self, hub: SessionHub) -> None:
        self._hub = hub
        self._events: RecorderEvents | None = None

    async def start(self, events: RecorderEvents) -> None:
        """Listen to the hub's rooms, audit trail and adjournments for ``events``."""
        self._events = events
        hub = self._hub
        hub.room_listeners.append(events.room_opened)
        hub.closing_listeners.append(events.closing)
        hub.forgotten_listeners.append(events.room_forgotten)
        hub.audit_listeners.append(self._audit)
        hub.audit_intents.append(self._intent)

    async def close(self) -> None:
        """Stop listening."""
        events, self._events = self._events, None
        if events is None:
            return
        hub = self._hub
        for listeners, item in (
            (hub.room_listeners, events.room_opened),
            (hub.closing_listeners, events.closing),
            (hub.forgotten_listeners, events.room_forgotten),
        ):
            if item in listeners:
                listeners.remove(item)  # type: ignore[arg-type]
        if self._audit in hub.audit_listeners:
            hub.audit_listeners.remove(self._audit)
        if self._intent in hub.audit_intents:
            hub.audit_intents.remove(self._intent)

    def _audit(self, hearing_id: str, event: AuditEvent) -> None:
        if self._events is not None:
            self._events.audit_event(hearing_id, event)

    def _intent(self, hearing_id: str, trace: Trace) -> None:
        if self._events is not None:
            intent = AuditIntent(actor=trace.actor, action=trace.action, data=dict(trace.data), at=time.time())
            self._events.audit_intent(hearing_id, intent)

    async def join(self, hearing_id: str, info: ParticipantInfo) -> str:
        """Join the hidden participant; a refusal of the session is a :class:`LinkRefused`."""
        events = self._events
        if events is None:
            raise LinkRefused("link_closed", "the recorder link is not started")
        try:
            conn = await self._hub.join_internal(hearing_id, info, _Outlet(events, hearing_id))
        except (SessionError, DomainError) as exc:
            raise LinkRefused(exc.code, exc.detail) from exc
        return str(conn)

    async def leave(self, handle: str) -> None:
        """Drop the hidden participant's connection."""
        await self._hub.detach(int(handle))

    def send_status(self, hearing_id: str, message: Recording) -> None:
        """Hand the status to the hub (everyone in the hearing, and later joiners, get it)."""
        self._hub.recording_status(hearing_id, message)
