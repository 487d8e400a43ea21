"""A media node in another process, driven over the bus: a ``protocol.node.NodeControl`` for the hub.

Each command is a request on ``node.<id>.cmd`` (JSON of the command; the reply's JSON back) with the cluster's
timeout and retries (a retry is answered from the node's cache, so a command is carried out at most once); the
node's events arrive on ``node.<id>.events`` in the order it emitted them. A node that does not answer (gone,
killed, Redis down) is never an exception to the hub: the call answers ``Refused(code="node_unreachable")``.
"""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from protocol.cluster import node_command_channel, node_event_channel
from protocol.node import NODE_EVENT, NODE_REPLY, EventHandler, NodeCommand, NodeEvent, NodeReply, Refused
from rooms.bus import Bus, BusError, Subscription

log = structlog.get_logger(__name__)

UNREACHABLE = "node_unreachable"
"""The refusal code of a command the node did not answer (or answered with something unreadable)."""


class RemoteNode:
    """``NodeControl`` of the media node ``node_id`` over ``bus``; ``start`` before use, ``close`` after."""

    def __init__(self, bus: Bus, node_id: str, *, attempt_seconds: float = 2.0, retries: int = 2) -> None:
        self._bus = bus
        self._node_id = node_id
        self.attempt_seconds = attempt_seconds
        self.retries = retries
        self._handlers: list[EventHandler] = []
        self._events: Subscription | None = None

    @property
    def node_id(self) -> str:
        """Stable id of the node."""
        return self._node_id

    async def start(self) -> None:
        """Receive the node's events from now on."""
        if self._events is None:
            self._events = await self._bus.subscribe(node_event_channel(self._node_id), self._on_event)

    async def close(self) -> None:
        """Stop receiving events (commands still work until the bus closes)."""
        if self._events is not None:
            await self._events.close()
            self._events = None

    def subscribe(self, handler: EventHandler) -> None:
        """Receive every event of the node, in the order it emitted them."""
        self._handlers.append(handler)

    async def call(self, command: NodeCommand) -> NodeReply:
        """Carry out one command on the node; ``Refused(node_unreachable)`` if it does not answer in time."""
        try:
            data = await self._bus.request(
                node_command_channel(self._node_id),
                command.model_dump_json().encode(),
                attempt_seconds=self.attempt_seconds,
                retries=self.retries,
            )
        except BusError as exc:
            log.warning("node_unreachable", node_id=self._node_id, command=command.type, code=exc.code)
            return Refused(code=UNREACHABLE, message=f"media node {self._node_id} did not answer ({exc.code})")
        try:
            return NODE_REPLY.validate_json(data)
        except ValidationError:
            log.warning("node_reply_unreadable", node_id=self._node_id, command=command.type, size=len(data))
            return Refused(code=UNREACHABLE, message=f"media node {self._node_id} answered something unreadable")

    async def _on_event(self, payload: bytes) -> None:
        try:
            event: NodeEvent = NODE_EVENT.validate_json(payload)
        except ValidationError:
            log.warning("node_event_unreadable", node_id=self._node_id, size=len(payload))
            return
        for handler in list(self._handlers):
            try:
                await handler(event)
            except Exception:  # one handler's bug must not stop the others or later events
                log.exception("node_event_handler_failed", node_id=self._node_id, event=event.type)
