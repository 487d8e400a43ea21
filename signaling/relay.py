"""WebSockets served through another signaling process: the live room runs at its owner, the socket stays here.

A client's WebSocket lands on whichever signaling process the load balancer picked. When another process owns
the hearing's live room (:mod:`signaling.ownership`), this process verifies the token, then relays:

- :class:`RelaySide` (the process holding the socket) sends :class:`~protocol.cluster.RelayOpen` to the owner
  (request/reply on ``signaling.<owner>.open``), then every later client message, in order, as
  :class:`~protocol.cluster.RelayUp` on ``signaling.<owner>.up``, and ``closed`` when the socket ends. What the
  owner sends back (:class:`~protocol.cluster.RelayDown` on ``signaling.<me>.down``) goes to the socket as is.
- :class:`OwnerSide` (the owner) joins the participant and hands their messages to the hub, one connection at a
  time in arrival order; the hub reaches the remote client through a :class:`RemoteOutlet`, an ordinary
  :class:`~signaling.session_hub.Outlet`.

Every queue is bounded: a relayed client that floods (or an owner that cannot keep up) is closed with 1013, as a
local client that does not read its messages is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import structlog
from pydantic import ValidationError

from protocol.client import Error, FrameCache, ParticipantInfo, Reply, RequestId, parse_client_message
from protocol.cluster import (
    RelayDown,
    RelayOpen,
    RelayOpened,
    RelayUp,
    relay_down_channel,
    relay_open_channel,
    relay_up_channel,
)
from rooms.bus import BusError, Subscription
from rooms.errors import NotFound
from signaling.session import (
    CLOSE_BAD_TOKEN,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NOT_ALLOWED,
    CLOSE_TRY_AGAIN_LATER,
    SessionError,
)

if TYPE_CHECKING:
    from signaling.ownership import Owners

log = structlog.get_logger("signaling.relay")


async def finish_writer(task: asyncio.Task[None], *, closing: bool, grace: float) -> None:
    """Stop a connection's writer task; with a close queued (``closing``), let it deliver that for up to ``grace``
    s first (the WebSocket writer and the relay's writer alike)."""
    if closing and not task.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=grace)
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


CLOSE_ROOM_MOVED = 1012
"""The live room moved to another signaling process (or its owner went away): reconnect at once with ``resume``
(RFC 6455's "service restart")."""

ROOM_MOVED = "room moved"
"""The close reason sent with :data:`CLOSE_ROOM_MOVED`."""

FINISH_GRACE_SECONDS = 2.0
"""How long a closing relay waits for its queued messages to leave."""


class TextOutlet(Protocol):
    """The socket side of a relayed connection (:class:`signaling.ws.WsOutlet`)."""

    def send_text(self, text: str) -> None:
        """Queue one text frame as is; never blocks."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close after the queued frames; never blocks."""
        ...


def _put_last(queue: asyncio.Queue[RelayUp] | asyncio.Queue[RelayDown], item: RelayUp | RelayDown) -> None:
    """Queue ``item`` even when the queue is full (it ends the stream: the oldest waiting step makes room)."""
    try:
        queue.put_nowait(item)  # type: ignore[arg-type]
    except asyncio.QueueFull:
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
        queue.put_nowait(item)  # type: ignore[arg-type]


# --- the process holding the socket ----------------------------------------------------------------


@dataclass(eq=False)
class RelayedConn:
    """One client socket of this process whose live room runs at ``owner``."""

    side: RelaySide
    owner: str
    hearing_id: str
    conn: int
    outlet: TextOutlet
    queue: asyncio.Queue[RelayUp]
    task: asyncio.Task[None] | None = None
    ended: bool = False

    def forward(self, text: str) -> None:
        """Send one validated client message to the owner (after the ones before it)."""
        if self.ended:
            return
        try:
            self.queue.put_nowait(RelayUp(origin=self.side.process_id, conn=self.conn, kind="message", text=text))
        except asyncio.QueueFull:
            self.outlet.close(CLOSE_TRY_AGAIN_LATER, "relay queue full")

    def closed(self) -> None:
        """The socket ended: tell the owner (the participant keeps their place for the resume grace)."""
        if self.ended:
            return
        self.ended = True
        _put_last(self.queue, RelayUp(origin=self.side.process_id, conn=self.conn, kind="closed"))
        self.side.conns.pop(self.conn, None)
        if self.task is not None:
            self.side._ending.add(self.task)

    async def _write(self) -> None:
        channel = relay_up_channel(self.owner)
        while True:
            step = await self.queue.get()
            try:
                await self.side.owners.bus.publish(channel, step.model_dump_json().encode())
            except Exception as exc:
                log.warning("relay_publish_failed", hearing_id=self.hearing_id, owner=self.owner, error=str(exc))
                self.outlet.close(CLOSE_ROOM_MOVED, ROOM_MOVED)
                return
            if step.kind == "closed":
                return


class RelaySide:
    """This process's client sockets whose rooms are owned elsewhere."""

    def __init__(self, owners: Owners) -> None:
        self.owners = owners
        self.process_id = owners.process_id
        self.conns: dict[int, RelayedConn] = {}
        self._writers: set[asyncio.Task[None]] = set()
        self._ending: set[asyncio.Task[None]] = set()
        """Writers of ended sockets, delivering their last step (``closed``)."""
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Receive the owners' messages for this process's relayed clients."""
        self._sub = await self.owners.bus.subscribe(relay_down_channel(self.process_id), self._down)

    async def open(
        self,
        owner: str,
        conn: int,
        outlet: TextOutlet,
        info: ParticipantInfo,
        hearing_id: str,
        resume: str | None,
        ref: RequestId | None,
        token_id: str,
    ) -> RelayedConn | Literal["unreachable", "refused"]:
        """Ask ``owner`` to join this client; the relay when it accepted.

        ``unreachable``: no answer (the owner is dead or cut off); ``refused``: it does not own the room (any more).
        """
        relayed = RelayedConn(
            self, owner, hearing_id, conn, outlet, asyncio.Queue(maxsize=self.owners.hub.settings.send_queue)
        )
        # Listed before asking: the owner's `joined` may arrive before its answer to the open.
        self.conns[conn] = relayed
        request = RelayOpen(
            origin=self.process_id,
            conn=conn,
            hearing_id=hearing_id,
            participant=info,
            token_id=token_id,
            resume=resume,
            ref=ref,
        )
        try:
            answer = await self.owners.bus.request(
                relay_open_channel(owner),
                request.model_dump_json().encode(),
                attempt_seconds=self.owners.settings.request_seconds,
            )
            opened = RelayOpened.model_validate_json(answer)
        except (BusError, ValidationError) as exc:
            self.conns.pop(conn, None)
            log.info("relay_open_failed", hearing_id=hearing_id, owner=owner, error=str(exc) or type(exc).__name__)
            return "unreachable"
        if not opened.accepted:
            self.conns.pop(conn, None)
            return "refused"
        relayed.task = asyncio.get_running_loop().create_task(relayed._write())
        self._writers.add(relayed.task)
        relayed.task.add_done_callback(self._writers.discard)
        relayed.task.add_done_callback(self._ending.discard)
        log.info("ws_relayed", hearing_id=hearing_id, owner=owner, participant_id=info.id)
        return relayed

    async def _down(self, payload: bytes) -> None:
        try:
            step = RelayDown.model_validate_json(payload)
        except ValidationError:
            log.warning("relay_step_refused", reason="invalid payload")
            return
        relayed = self.conns.get(step.conn)
        if relayed is None:
            return  # the socket is gone already
        if step.kind == "message":
            relayed.outlet.send_text(step.text)
        else:
            relayed.outlet.close(step.code, step.reason)

    async def check_owners(self) -> None:
        """Close the relayed sockets whose owner lost its lease (died, or the room moved): they reconnect."""
        groups: dict[tuple[str, str], list[RelayedConn]] = defaultdict(list)
        for relayed in self.conns.values():
            groups[(relayed.owner, relayed.hearing_id)].append(relayed)
        for (owner, hearing_id), conns in groups.items():
            holder = await self.owners.holder(hearing_id)
            if holder == owner:
                continue
            if holder is None:
                # Lapsed: the owner is gone. Restore the room here at once; the clients reconnect to it.
                await self.owners.take_over(hearing_id, owner)
            log.warning("relayed_owner_lost", hearing_id=hearing_id, owner=owner, holder=holder, clients=len(conns))
            for relayed in conns:
                relayed.outlet.close(CLOSE_ROOM_MOVED, ROOM_MOVED)

    def room_moved(self, hearing_id: str) -> None:
        """This process owns the hearing's room now: its sockets relayed to a former owner reconnect (1012)."""
        moved = [r for r in self.conns.values() if r.hearing_id == hearing_id and r.owner != self.process_id]
        if moved:
            log.info("relayed_owner_replaced", hearing_id=hearing_id, clients=len(moved))
        for relayed in moved:
            relayed.outlet.close(CLOSE_ROOM_MOVED, ROOM_MOVED)

    def close_all(self, code: int, reason: str) -> None:
        """Close every relayed socket (this process stops)."""
        for relayed in list(self.conns.values()):
            relayed.outlet.close(code, reason)

    async def close(self) -> None:
        """Stop receiving; let the last steps (``closed``) leave for a moment."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.close()
        ending = [task for task in self._ending if not task.done()]
        if ending:
            await asyncio.wait(ending, timeout=FINISH_GRACE_SECONDS)
        for task in list(self._writers):
            task.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)


# --- the owner of the room -------------------------------------------------------------------------


class RemoteOutlet:
    """An :class:`~signaling.session_hub.Outlet` whose client's socket is held by another process."""

    def __init__(self, owners: Owners, origin: str, conn: int, limit: int, frames: FrameCache) -> None:
        self._owners = owners
        self._channel = relay_down_channel(origin)
        self._conn = conn
        self._frames = frames
        self._queue: asyncio.Queue[RelayDown] = asyncio.Queue(maxsize=limit)
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._write())

    def send(self, message: Reply) -> None:
        """Queue one message; a relay that does not keep up is closed with 1013."""
        if self._closing:
            return
        try:
            self._queue.put_nowait(RelayDown(conn=self._conn, kind="message", text=self._frames.text(message)))
        except asyncio.QueueFull:
            self._closing = True
            reason = "not reading its messages"
            full = RelayDown(conn=self._conn, kind="close", code=CLOSE_TRY_AGAIN_LATER, reason=reason)
            _put_last(self._queue, full)

    def close(self, code: int, reason: str) -> None:
        """Close the remote socket with ``code`` after every message queued so far."""
        if self._closing:
            return
        self._closing = True
        _put_last(self._queue, RelayDown(conn=self._conn, kind="close", code=code, reason=reason[:120]))

    @property
    def closing(self) -> bool:
        """A close has been queued."""
        return self._closing

    async def _write(self) -> None:
        while True:
            step = await self._queue.get()
            try:
                await self._owners.bus.publish(self._channel, step.model_dump_json().encode())
            except Exception as exc:
                log.warning("relay_publish_failed", channel=self._channel, error=str(exc))
                return
            if step.kind == "close":
                return

    async def finish(self, grace: float = 0.0) -> None:
        """Stop the writer, letting it deliver a queued close (and what is before it) for up to ``grace`` s."""
        await finish_writer(self._task, closing=self._closing, grace=grace)


@dataclass(eq=False)
class RemoteConn:
    """A client of this process's room whose socket another process holds."""

    origin: str
    origin_conn: int
    conn: int
    outlet: RemoteOutlet
    inbox: asyncio.Queue[RelayUp]
    task: asyncio.Task[None] | None = field(default=None)


class OwnerSide:
    """The clients relayed to this process's rooms: joined and served like local ones, one at a time each."""

    def __init__(self, owners: Owners) -> None:
        self.owners = owners
        self.conns: dict[tuple[str, int], RemoteConn] = {}
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Accept relays and their clients' messages."""
        bus, me = self.owners.bus, self.owners.process_id
        self._subs.append(await bus.serve(relay_open_channel(me), self._open))
        self._subs.append(await bus.subscribe(relay_up_channel(me), self._up))

    async def _open(self, payload: bytes) -> bytes:
        request = RelayOpen.model_validate_json(payload)  # invalid: the requester gets a RemoteFailure
        owners = self.owners
        key = (request.origin, request.conn)
        if key in self.conns:
            return RelayOpened(accepted=True).model_dump_json().encode()  # a repeated request
        owners.begin(request.hearing_id)
        started = False
        try:
            holder = await owners.claim(request.hearing_id)
            if holder != owners.process_id:
                return RelayOpened(accepted=False, owner=holder).model_dump_json().encode()
            hub = owners.hub
            outlet = RemoteOutlet(owners, request.origin, request.conn, hub.settings.send_queue, hub.frames)
            remote = RemoteConn(
                request.origin, request.conn, hub.attach(outlet), outlet, asyncio.Queue(hub.settings.send_queue)
            )
            self.conns[key] = remote
            remote.task = asyncio.get_running_loop().create_task(self._serve(remote, request))
            self._tasks.add(remote.task)
            remote.task.add_done_callback(self._tasks.discard)
            started = True
            return RelayOpened(accepted=True).model_dump_json().encode()
        finally:
            if not started:
                await owners.end(request.hearing_id)

    async def _up(self, payload: bytes) -> None:
        try:
            step = RelayUp.model_validate_json(payload)
        except ValidationError:
            log.warning("relay_step_refused", reason="invalid payload")
            return
        remote = self.conns.get((step.origin, step.conn))
        if remote is None:
            return
        if step.kind == "closed":
            _put_last(remote.inbox, step)
            return
        try:
            remote.inbox.put_nowait(step)
        except asyncio.QueueFull:
            remote.outlet.close(CLOSE_TRY_AGAIN_LATER, "relay queue full")

    async def _serve(self, remote: RemoteConn, request: RelayOpen) -> None:
        """Join the relayed participant, then carry out their messages in order until their socket ends."""
        hub, owners = self.owners.hub, self.owners
        joined = False
        try:
            try:
                hearing = await hub.store.get_hearing(request.hearing_id)
                await hub.join(
                    remote.conn,
                    request.participant,
                    hearing,
                    request.resume,
                    request.ref,
                    token_id=request.token_id or None,
                )
                joined = True
            except NotFound:
                remote.outlet.send(Error(ref=request.ref, code="revoked", message="the hearing no longer exists"))
                remote.outlet.close(CLOSE_BAD_TOKEN, "revoked")
            except SessionError as exc:
                log.info("join_refused", code=exc.code, hearing_id=request.hearing_id, origin=request.origin)
                remote.outlet.send(Error(ref=request.ref, code=exc.code, message=exc.detail))
                remote.outlet.close(exc.close or CLOSE_NOT_ALLOWED, exc.code)
            finally:
                await owners.end(request.hearing_id)
            while True:
                step = await remote.inbox.get()
                if step.kind == "closed":
                    break
                if not joined or remote.outlet.closing:
                    continue
                try:
                    message = parse_client_message(step.text)
                except ValidationError:
                    remote.outlet.send(Error(code="invalid_message", message="not a valid message"))
                    continue
                await hub.handle(remote.conn, message)
        except Exception:
            log.exception("relayed_session_failed", hearing_id=request.hearing_id, origin=request.origin)
            remote.outlet.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self.conns.pop((remote.origin, remote.origin_conn), None)
            await hub.detach(remote.conn)
            await remote.outlet.finish(grace=FINISH_GRACE_SECONDS)

    def end(self, origin: str, origin_conn: int) -> None:
        """End a relayed client as if its socket closed (its relaying process is gone)."""
        remote = self.conns.get((origin, origin_conn))
        if remote is not None:
            _put_last(remote.inbox, RelayUp(origin=origin, conn=origin_conn, kind="closed"))

    async def check_origins(self) -> None:
        """Detach the clients of relaying processes that died (no ``signaling.process`` record): resume grace."""
        for origin in {origin for origin, _ in self.conns}:
            if await self.owners.alive(origin):
                continue
            lost = [key for key in self.conns if key[0] == origin]
            log.warning("relaying_process_lost", origin=origin, clients=len(lost))
            for key in lost:
                self.end(*key)

    async def close(self) -> None:
        """Stop accepting relays; end the relayed sessions (their rooms were handed over already)."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.close()
        for origin, conn in list(self.conns):
            self.end(origin, conn)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=FINISH_GRACE_SECONDS + 1)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
