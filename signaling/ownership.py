"""Several signaling processes in front of one set of hearings: who owns each live room.

Each hearing's live room runs in exactly one signaling process, its *owner*, which holds the lease
``lease.room.<hearing_id>`` (:meth:`rooms.bus.Records.claim`, ttl ``[cluster] lease_seconds``, renewed every
third of it). :class:`Owners` is that side of a :class:`~signaling.session_hub.SessionHub` built with a bus and
records:

- A join claims the lease: free (or ours), the room runs here; held by another process, the WebSocket is
  relayed to that owner over the bus (:mod:`signaling.relay`); the client sees no difference. An owner that
  does not answer is waited out until its lease lapses, then this process takes the room over (and restores it
  from its snapshot when the hub has one).
- A room that empties is given up and its lease released. A process whose renewal finds another owner gives the
  room up: its connections are closed with 1012 (:data:`CLOSE_ROOM_MOVED`), so the clients reconnect at once
  and resume where the room is now.
- A REST change is published as :class:`protocol.cluster.HearingChanged` on ``hearing.changed``; every process
  hears it and the one with the live room refreshes it from the store.
- A process that relays WebSockets watches the leases of their rooms: when the owner's lease lapses (the owner
  died) or moves, the relayed clients are closed with 1012 and reconnect; the process they land on takes the
  room over. Every process writes ``signaling.process.<id>`` while it lives, so an owner detaches the clients of
  a relaying process that died (they get the resume grace, as on a dropped connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections import Counter
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.client import ParticipantInfo, RequestId
from protocol.cluster import HEARING_CHANGED, HearingChanged, room_lease_key, signaling_process_key
from rooms.bus import Bus, Records, Subscription
from rooms.errors import NotFound
from rooms.model import Hearing
from rooms.tasks import cancel_and_wait
from signaling.relay import CLOSE_ROOM_MOVED, ROOM_MOVED, OwnerSide, RelayedConn, RelaySide, TextOutlet
from signaling.session import SessionError

if TYPE_CHECKING:
    from signaling.session_hub import SessionHub


def default_process_id() -> str:
    """A process id unique on the bus: host name, process id and a few random characters."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class OwnerSettings(BaseModel):
    """How a signaling process shares the live rooms with others (names match ``courtlink.settings``' ``[cluster]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    process_id: str = Field(default_factory=default_process_id, min_length=1, max_length=128)
    lease_seconds: float = Field(default=6.0, ge=1, le=120, description="A live room's owner lease.")
    request_seconds: float = Field(default=2.0, gt=0, le=60, description="How long a relay's open waits.")


class Owners:
    """The multi-process side of one :class:`SessionHub`: room leases, routed WebSockets, REST changes."""

    def __init__(self, hub: SessionHub, bus: Bus, records: Records, settings: OwnerSettings) -> None:
        self.hub = hub
        self.bus = bus
        self.records = records
        self.settings = settings
        self.process_id = settings.process_id
        self.log = structlog.get_logger("signaling.owners").bind(process_id=self.process_id)
        self._pending: Counter[str] = Counter()
        """Joins under way per hearing: their lease is held although the room may not exist yet."""
        self._subs: list[Subscription] = []
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.owner_side = OwnerSide(self)
        """Connections relayed to this process's rooms by others."""
        self.relay_side = RelaySide(self)
        """This process's connections relayed to rooms owned by others."""
        hub.forgotten_listeners.append(self._room_forgotten)

    @property
    def tick_seconds(self) -> float:
        """How often relayed rooms' leases are checked; leases are renewed every second tick (a third of the lease)."""
        return self.settings.lease_seconds / 6

    # --- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to REST changes and relays, announce this process, and start renewing leases."""
        self._subs.append(await self.bus.subscribe(HEARING_CHANGED, self._on_hearing_changed))
        await self.owner_side.start()
        await self.relay_side.start()
        await self._announce()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        self.log.info("signaling_owner_started", lease_seconds=self.settings.lease_seconds)

    async def close(self) -> None:
        """Hand every room over (clients closed with 1012, leases released) and stop listening."""
        if self._ticker is not None:
            await cancel_and_wait(self._ticker)
        for hearing_id in list(self.hub.rooms):
            await self.hub.give_up_room(hearing_id, CLOSE_ROOM_MOVED, ROOM_MOVED)
            with contextlib.suppress(Exception):
                await self.records.release(room_lease_key(hearing_id), self.process_id)
        self.relay_side.close_all(CLOSE_ROOM_MOVED, ROOM_MOVED)
        await self.owner_side.close()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.close()
        await self.relay_side.close()
        with contextlib.suppress(Exception):
            await self.records.delete(signaling_process_key(self.process_id))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- leases ----------------------------------------------------------------------------------

    async def claim(self, hearing_id: str) -> str:
        """Take or renew the hearing's room lease for this process; the process that holds it afterwards."""
        return await self.records.claim(room_lease_key(hearing_id), self.process_id, ttl=self.settings.lease_seconds)

    def begin(self, hearing_id: str) -> None:
        """A join into the hearing's room starts here: keep its lease even before the room exists."""
        self._pending[hearing_id] += 1

    async def end(self, hearing_id: str) -> None:
        """A join started with :meth:`begin` is over: release the lease if it left no room behind."""
        self._pending[hearing_id] -= 1
        if self._pending[hearing_id] <= 0:
            del self._pending[hearing_id]
        await self._settle(hearing_id)

    async def _settle(self, hearing_id: str) -> None:
        if hearing_id in self.hub.rooms or self._pending[hearing_id] > 0:
            return
        try:
            released = await self.records.release(room_lease_key(hearing_id), self.process_id)
        except Exception:
            self.log.exception("room_lease_release_failed", hearing_id=hearing_id)
            return
        if released:
            self.log.info("room_lease_released", hearing_id=hearing_id)

    def _room_forgotten(self, hearing_id: str) -> None:
        self._spawn(self._settle(hearing_id))

    # --- joins -----------------------------------------------------------------------------------

    async def join(
        self,
        conn: int,
        outlet: TextOutlet,
        info: ParticipantInfo,
        hearing: Hearing,
        resume: str | None,
        ref: RequestId | None,
        token_id: str,
    ) -> RelayedConn | None:
        """Join a verified participant where the hearing's room lives.

        This process owns the room (or takes it: nobody holds it, or its owner's lease lapsed): the hub joins
        here and None is returned. Another process owns it: the connection is relayed there and the relay is
        returned (pass it the client's later messages). SessionError as :meth:`SessionHub.join`; an owner that
        stays unreachable past its lease is ``owner_unreachable`` with close 1012 (the client reconnects).
        """
        hid = hearing.id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.lease_seconds + 2 * self.settings.request_seconds
        unreachable: str | None = None
        self.begin(hid)
        try:
            while True:
                holder = await self.claim(hid)
                if holder == self.process_id:
                    if unreachable is not None:
                        self.log.info("room_taken_over", hearing_id=hid, previous_owner=unreachable)
                    # Sockets of this process still relayed to a former owner reconnect now, to this room.
                    self.relay_side.room_moved(hid)
                    await self.hub.join(conn, info, hearing, resume, ref, token_id=token_id)
                    return None
                if holder != unreachable:
                    relayed = await self.relay_side.open(holder, conn, outlet, info, hid, resume, ref, token_id)
                    if isinstance(relayed, RelayedConn):
                        return relayed
                    if relayed == "unreachable":
                        # Dead or cut off: its lease lapses within lease_seconds, then the room is ours to take.
                        unreachable = holder
                        self.log.warning("room_owner_unreachable", hearing_id=hid, owner=holder)
                if loop.time() > deadline:
                    raise SessionError(
                        "owner_unreachable",
                        "the process running this hearing does not answer; reconnect",
                        close=CLOSE_ROOM_MOVED,
                    )
                await asyncio.sleep(self.tick_seconds / 4)
        finally:
            await self.end(hid)

    async def take_over(self, hearing_id: str, previous_owner: str) -> None:
        """The hearing's owner lease lapsed (its owner died): take the room here now, restored from its snapshot,
        so the members who never come back still leave when their grace ends. Nothing without a snapshot."""
        self.begin(hearing_id)
        try:
            if await self.claim(hearing_id) != self.process_id:
                return
            hearing = await self.hub.store.get_hearing(hearing_id)
            if await self.hub.restore_room(hearing):
                self.log.info("room_taken_over", hearing_id=hearing_id, previous_owner=previous_owner, restored=True)
        except NotFound:
            return
        finally:
            await self.end(hearing_id)

    # --- REST changes ------------------------------------------------------------------------------

    async def publish_changed(self, hearing: Hearing, *, actor: str) -> None:
        """Tell every signaling process that the stored ``hearing`` changed (the room's owner refreshes it)."""
        change = HearingChanged(hearing_id=hearing.id, version=hearing.version, actor=actor)
        await self.bus.publish(HEARING_CHANGED, change.model_dump_json().encode())

    async def _on_hearing_changed(self, payload: bytes) -> None:
        try:
            change = HearingChanged.model_validate_json(payload)
        except ValidationError:
            self.log.warning("hearing_changed_refused", reason="invalid payload")
            return
        live = self.hub.rooms.get(change.hearing_id)
        if live is None or change.version <= live.room.hearing.version:
            return  # not our room, or this process made the change (or a later one) itself
        try:
            hearing = await self.hub.store.get_hearing(change.hearing_id)
        except NotFound:
            return
        await self.hub.hearing_changed(hearing, actor=change.actor)

    # --- watching ----------------------------------------------------------------------------------

    async def _announce(self) -> None:
        await self.records.put(
            signaling_process_key(self.process_id), self.process_id.encode(), ttl=self.settings.lease_seconds
        )

    async def alive(self, process_id: str) -> bool:
        """Whether signaling process ``process_id`` announced itself within the last ``lease_seconds``."""
        return await self.records.get(signaling_process_key(process_id)) is not None

    async def holder(self, hearing_id: str) -> str | None:
        """The process that holds the hearing's room lease now (None: nobody, it lapsed)."""
        value = await self.records.get(room_lease_key(hearing_id))
        return value.decode() if value is not None else None

    async def _tick_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.tick_seconds)
            ticks += 1
            try:
                await self.relay_side.check_owners()
                if ticks % 2 == 0:
                    await self._renew()
                    await self._announce()
                    await self.owner_side.check_origins()
            except Exception:  # Redis away for a moment: keep going, the next tick tries again
                self.log.exception("owner_tick_failed")

    async def _renew(self) -> None:
        for hearing_id in {*self.hub.rooms, *self._pending}:
            holder = await self.claim(hearing_id)
            if holder != self.process_id:
                self.log.warning("room_lease_lost", hearing_id=hearing_id, owner=holder)
                await self.hub.give_up_room(hearing_id, CLOSE_ROOM_MOVED, ROOM_MOVED)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["CLOSE_ROOM_MOVED", "OwnerSettings", "Owners", "default_process_id"]
