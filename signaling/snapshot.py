"""A live room as data, so it outlives the signaling process that holds it.

:class:`RoomSnapshot` is everything a participant's resume needs from a
:class:`signaling.session.HearingRoom` (made by ``HearingRoom.snapshot()``,
turned back into a room by ``HearingRoom.restore(...)``). Another signaling
process that takes the hearing over (its owner was killed, or restarted)
restores the room from it: every member comes back disconnected, with the
grace they had left, so a client that resumes with its key gets its place,
mutes, consultation and raised hand back without being admitted again, and
one that does not return leaves when its grace ends, as it would have.

What a member keeps (:class:`MemberSnapshot`) and why some of
:class:`~signaling.session.Member`'s fields are left out:

- kept: ``info``, ``placement``, the resume key (as a SHA-256 digest: the key
  is 192 random bits, so a plain digest cannot be guessed back, and whoever
  reads the record cannot resume as anyone), ``token_id`` (a reissued link
  still ejects), ``consultation`` and since, ``muted_by`` (court mutes stay
  court mutes), ``publishing``, ``declared`` track ids, ``has_peer``,
  ``negotiated`` and ``peer_epoch`` (the node still holds the peer: a member
  who never returns has it closed on expiry, one who does gets a fresh one),
  ``drops`` (the grace timer's epoch), ``hand_raised_at``, and the toggles
  still in an audit coalescing window (``holds``: their folded changes reach
  the audit chain after a restore too);
- left out: ``conn`` (connection numbers belong to one process; restored
  members are not connected), ``media``, ``report``, ``report_at``,
  ``connected_at``, ``health`` and ``health_since`` (what the node last said
  of the old peer; a resume makes a new peer and the node reports it within a
  second), ``restart_at`` and ``restarting`` (a restart in flight ends with
  the resume's new peer anyway).

Of :class:`~signaling.session.HearingRoom` the snapshot keeps the hearing as
the room knew it (so a booking change made while no process held the room is
followed on restore, ejections included), ``in_session_since`` and
``removed`` (a removed participant stays out). Left out: the settings
(grace, ICE servers, TURN, clock, time zone: the restoring process has its
own), ``_sent_publishing``/``_sent_receiving`` (a restore sends the whole
plan to the node again, which also repairs a command the dying process never
sent), ``_offer_budget`` (a per-process flood guard on the monotonic clock;
a resume starts a new peer, so at worst one more burst of offers) and
``_node_closed`` (a room whose node room was closed has ended and its
snapshot is deleted).

:class:`SnapshotKeeper` is the I/O side: it writes ``snapshot.room.<id>``
(:func:`protocol.cluster.room_snapshot_key`) in the background after the hub
marks a room changed (one write in flight, the latest state wins, nothing
written when nothing but the time changed), rewrites it every
``refresh_seconds`` so the record's clock (``taken_at``, from which the grace
of members connected at that moment is counted) stays near the present, and
deletes it when the room is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog
from pydantic import Field, ValidationError

from protocol.client import ParticipantInfo
from protocol.cluster import room_snapshot_key
from rooms.bus import Records
from rooms.errors import DomainError
from rooms.model import Frozen, Hearing, Placement, Source

SNAPSHOT_VERSION = 1
"""The snapshot format this code writes and reads; any other is refused (a fresh room is made instead)."""

REFRESH_SECONDS = 5.0
"""How often a live room's snapshot is rewritten even when nothing changed (its ``taken_at`` and its TTL), at most:
a sixth of the resume grace when that is shorter. Members connected when their process died get the grace from
the last write, so they lose at most this much of it."""


class SnapshotRefused(DomainError):
    """A stored snapshot that cannot be restored (garbage, a missing or unknown field, another hearing)."""

    code = "invalid_snapshot"


class SnapshotVersionRefused(SnapshotRefused):
    """A stored snapshot of another format version (written by an older or newer courtlink)."""

    code = "snapshot_version"


def resume_digest(key: str) -> str:
    """What a snapshot stores of a resume key: its SHA-256, hex (the key is random, so no salt is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


class HoldSnapshot(Frozen):
    """A member's own toggle still in its audit coalescing window."""

    kind: Literal["publishing", "muted", "hand"]
    source: Source
    value: bool = Field(description="The latest value.")
    changes: int = Field(ge=0, description="Changes folded in the window, not audited yet.")


class MemberSnapshot(Frozen):
    """One member of a live room, as a restore needs it (no field has a default: a missing one is refused)."""

    info: ParticipantInfo
    placement: Placement
    resume_digest: str = Field(pattern=r"^([0-9a-f]{64})?$", description="SHA-256 of the current resume key.")
    token_id: str = Field(description="The jti of the link the member last joined with ('' when unknown).")
    connected: bool = Field(description="Connected when the snapshot was taken.")
    disconnected_at: float | None = Field(description="When the last drop happened (Unix seconds, room clock).")
    drops: int = Field(ge=0, description="Drops so far: the epoch of the member's grace timer.")
    consultation: str
    consultation_since: float | None
    muted_by: dict[Source, str] = Field(description="Muted sources and who muted each (another id: a court mute).")
    publishing: tuple[Source, ...]
    declared: dict[str, Source] = Field(description="Track ids declared on the current peer, with their source.")
    has_peer: bool
    negotiated: bool
    peer_epoch: int = Field(ge=0)
    hand_raised_at: float | None
    holds: tuple[HoldSnapshot, ...]


class RoomSnapshot(Frozen):
    """A live room, versioned; its JSON is the ``snapshot.room.<hearing_id>`` record."""

    version: int = SNAPSHOT_VERSION
    hearing: Hearing = Field(description="The stored hearing as the room knew it.")
    taken_at: float = Field(description="Unix seconds (room clock) when the room was in this state.")
    in_session_since: float | None
    members: tuple[MemberSnapshot, ...] = Field(description="In order of joining (the roster's order).")
    removed: dict[str, str] = Field(description="Participants removed from this session, with the link they held.")

    def same_room(self, other: RoomSnapshot | None) -> bool:
        """Whether ``other`` is this room in the same state (only the time of taking may differ)."""
        return other is not None and self.model_copy(update={"taken_at": other.taken_at}) == other

    def to_json(self) -> bytes:
        """The record's bytes."""
        return self.model_dump_json().encode()


def parse_snapshot(data: bytes | str, hearing_id: str) -> RoomSnapshot:
    """The snapshot in ``data`` of hearing ``hearing_id``, or :class:`SnapshotRefused` naming what is wrong."""
    try:
        raw: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise SnapshotRefused("the snapshot is not JSON") from None
    if not isinstance(raw, dict):
        raise SnapshotRefused("the snapshot is not a JSON object")
    version = raw.get("version")
    if version != SNAPSHOT_VERSION:
        raise SnapshotVersionRefused(f"snapshot version {version!r} is not {SNAPSHOT_VERSION}")
    try:
        snapshot = RoomSnapshot.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SnapshotRefused(f"the snapshot is malformed at {where or 'top level'}: {first['msg']}") from None
    if snapshot.hearing.id != hearing_id:
        raise SnapshotRefused(f"the snapshot is of hearing {snapshot.hearing.id!r}, not {hearing_id!r}")
    return snapshot


class SnapshotKeeper:
    """Writes the live rooms' snapshots to :class:`rooms.bus.Records` in the background; reads one back.

    ``take(hearing_id)`` gives the live room's snapshot now, or None when the
    process has no room for the hearing any more (the record is then deleted).
    :meth:`changed` only marks the room; one task writes, so a room's input
    never waits for Redis and a burst of inputs costs one write.
    """

    def __init__(
        self,
        records: Records,
        take: Callable[[str], RoomSnapshot | None],
        *,
        grace_seconds: float,
        refresh_seconds: float | None = None,
    ) -> None:
        self.records = records
        self._take = take
        self.refresh_seconds = refresh_seconds or min(REFRESH_SECONDS, grace_seconds / 6)
        self.ttl_seconds = grace_seconds + 3 * self.refresh_seconds
        """A snapshot nobody refreshes outlives every grace it can give by a few seconds, then expires."""
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._written: dict[str, tuple[RoomSnapshot, float]] = {}
        """What this keeper last wrote (or read) per hearing, and when (monotonic)."""
        self._known: set[str] = set()
        """Hearings whose record this keeper wrote or read: the ones it deletes when their room is gone."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.writes = 0
        """Records written so far (tests and the bench read it)."""
        self.log = structlog.get_logger("signaling.snapshot")

    def changed(self, hearing_id: str) -> None:
        """The room of ``hearing_id`` may have changed (or was forgotten): write or delete its snapshot soon."""
        if self._closed:
            return
        self._dirty.add(hearing_id)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def read(self, hearing_id: str) -> RoomSnapshot | None:
        """The stored snapshot of ``hearing_id``; None when there is none or it is refused (logged)."""
        try:
            data = await self.records.get(room_snapshot_key(hearing_id))
        except Exception as exc:  # Redis away: a fresh room is better than no room
            self.log.warning("room_snapshot_unreadable", hearing_id=hearing_id, error=str(exc) or type(exc).__name__)
            return None
        if data is None:
            return None
        try:
            snapshot = parse_snapshot(data, hearing_id)
        except SnapshotRefused as exc:
            self.log.warning("room_snapshot_refused", hearing_id=hearing_id, code=exc.code, detail=exc.detail)
            return None
        self._written[hearing_id] = (snapshot, time.monotonic())
        self._known.add(hearing_id)
        return snapshot

    async def flush(self) -> None:
        """Write every pending change now (the caller waits)."""
        while self._dirty:
            due, self._dirty = self._dirty, set()
            for hearing_id in sorted(due):
                await self._write(hearing_id, refresh=False)

    @property
    def running(self) -> bool:
        """Whether the keeper's task (writes and refreshes) is alive."""
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        """Write what is pending, then stop (records left in place: another process may restore them)."""
        self._closed = True
        self._wake.set()  # an idle task wakes, sees the keeper closed and ends, should the cancel below be lost
        task = self._task
        if task is not None:
            task.cancel()
            # The task's own cancellation is its result here; a cancellation of close() itself propagates.
            await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while (self._dirty or self._written) and not self._closed:
            if not self._dirty:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    # On Python 3.11, wait_for returns the event's result and drops a cancel that arrives once the
                    # event is set (a change and the close in one turn): hence the check of _closed after it.
                    await asyncio.wait_for(self._wake.wait(), self.refresh_seconds / 2)
                if self._closed:
                    return
            now = time.monotonic()
            due, self._dirty = self._dirty, set()
            stale = {h for h, (_, at) in self._written.items() if now - at >= self.refresh_seconds}
            for hearing_id in sorted(due | stale):
                try:
                    await self._write(hearing_id, refresh=hearing_id in stale)
                except Exception as exc:
                    self.log.warning(
                        "room_snapshot_write_failed", hearing_id=hearing_id, error=str(exc) or type(exc).__name__
                    )
                    self._dirty.add(hearing_id)
                    await asyncio.sleep(1.0)

    def disown(self, hearing_id: str) -> None:
        """Another process owns the hearing's room now: stop writing its snapshot and never delete it (the new
        owner keeps it). Added by part owners for :meth:`SessionHub.give_up_room`."""
        self._dirty.discard(hearing_id)
        self._written.pop(hearing_id, None)
        self._known.discard(hearing_id)

    async def _write(self, hearing_id: str, *, refresh: bool) -> None:
        key = room_snapshot_key(hearing_id)
        snapshot = self._take(hearing_id)
        if snapshot is None:
            self._written.pop(hearing_id, None)
            if hearing_id in self._known:
                await self.records.delete(key)
                self._known.discard(hearing_id)
                self.log.info("room_snapshot_deleted", hearing_id=hearing_id)
            return
        last = self._written.get(hearing_id)
        if not refresh and last is not None and snapshot.same_room(last[0]):
            return
        self._known.add(hearing_id)
        await self.records.put(key, snapshot.to_json(), ttl=self.ttl_seconds)
        self._written[hearing_id] = (snapshot, time.monotonic())
        self.writes += 1
