"""Many media nodes behind one :class:`protocol.node.NodeControl`: placement of hearings, failover of a lost node.

The session hub drives "a node"; :class:`NodePool` is that node for a network of them. It reads the node
registry (every node's heartbeat, :class:`protocol.cluster.NodeRecord` under ``node.<id>`` in the shared
:class:`rooms.bus.Records`) and routes each command by its ``hearing_id`` to the hearing's home node:

- **Placement.** A hearing is placed when its live room first needs media: among the nodes ``up`` in its
  courtroom's region (the region of the courtroom's site), two chosen at random, the less loaded of the two
  (:func:`choose_node`). None up there: any region (``reason="fallback"``). None at all: the command is
  refused ``no_media_node``. The placement is stored (``placement.<hearing_id>``, :class:`Placement`) with
  :meth:`Records.claim`, so the first writer wins and every signaling process routes the hearing to the same
  node; it is renewed while the hearing is routed here and given up when its room closes.
- **Failover.** The registry is read every ``check_seconds`` (1 s). When the record of a hearing's node lapses
  (no heartbeat for ``NODE_TTL_SECONDS``) or shows a new life of the node (another ``started_at``: its rooms
  are gone), the hearing is placed again (``reason="failover"``, ``previous_node_id``) — swapped atomically
  (release the old record by its exact value, then claim) so racing processes agree — and the pool emits
  :class:`MediaNodeLost` to its subscribers. Signaling then makes every peer again on the new node. With no
  node up the event carries no new node; the hearing is placed again, and the event sent again, as soon as
  one is up.
- Events of a node are relayed only for hearings whose home it is (a lost node that comes back to life must
  not speak for a hearing that moved). ``CreateProbe`` goes to the least loaded node.

Nodes are reached through ``connect(node_id) -> Awaitable[NodeControl]``: over the bus in production
(``signaling.remote_node.RemoteNode``), in-process nodes in ``courtlink serve`` and in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog
from pydantic import ValidationError

from protocol.cluster import (
    HEARTBEAT_SECONDS,
    NODE_DRAIN_PREFIX,
    NODE_PREFIX,
    PLACEMENT_RENEW_SECONDS,
    PLACEMENT_TTL_SECONDS,
    NodeRecord,
    Placement,
    node_drain_key,
    placement_key,
)
from protocol.directory import NodeInfo
from protocol.node import (
    Ack,
    ClosePeer,
    CloseRoom,
    CreateProbe,
    EventHandler,
    MediaNodeLost,
    NodeCommand,
    NodeControl,
    NodeEvent,
    NodeReply,
    Refused,
)
from rooms.bus import Records
from rooms.errors import DomainError
from rooms.store import Store

log = structlog.get_logger("signaling.node_pool")

Connector = Callable[[str], Awaitable[NodeControl]]
"""Opens the control of a node by id (started: its events flow once subscribed)."""

Disconnector = Callable[[NodeControl], Awaitable[None]]
"""Lets go of a node control the pool no longer uses (a lost node's); never stops the node itself."""

RegionOf = Callable[[str], Awaitable[str]]
"""The region a hearing should be placed in ("" for none)."""

CHECK_SECONDS = 1.0
"""How often the pool reads the node registry (a lapsed node is noticed within this after its TTL)."""

OUTAGE_SETTLE_SECONDS = 1.5 * HEARTBEAT_SECONDS
"""After the registry could not be read (Redis restarting), a node missing from it is not taken for lost until
this long after the last failed read: every live node writes its record again within a heartbeat (a record may
have expired while Redis was down)."""

CLOSE_LOST_SECONDS = 2.0
"""How long the pool tries to close a moved hearing's room on its old node (a node that lapsed but still runs)."""


def choose_node(
    nodes: Iterable[NodeRecord], region: str, rng: random.Random
) -> tuple[NodeRecord, Literal["region", "fallback"]] | None:
    """The node to place a hearing of ``region`` on, and why; None when no node is ``up``.

    Two random choices among the nodes up in ``region`` (every node up when ``region`` is "": no preference),
    the less loaded (then fewer peers, then the smaller id) of the two; none up there: the same among all nodes
    up, ``fallback``. Two random choices rather than the least loaded of all: loads are seconds old, and
    several signaling processes placing at once would all pick the same least loaded node.
    """
    up = sorted((n for n in nodes if n.state == "up"), key=lambda n: n.id)
    local = [n for n in up if not region or n.region == region]
    if local:
        return _two_choices(local, rng), "region"
    if up:
        return _two_choices(up, rng), "fallback"
    return None


def _two_choices(candidates: list[NodeRecord], rng: random.Random) -> NodeRecord:
    picked = rng.sample(candidates, 2) if len(candidates) > 1 else candidates
    return min(picked, key=lambda n: (n.load, n.peers, n.id))


def store_regions(store: Store) -> RegionOf:
    """A hearing's region from the store: hearing -> courtroom -> the courtroom's site -> its region."""

    async def region_of(hearing_id: str) -> str:
        try:
            hearing = await store.get_hearing(hearing_id)
            courtroom = await store.get_courtroom(hearing.courtroom_id)
            site = await store.get_site(courtroom.site_id)
        except DomainError:
            return ""  # an unknown hearing (a probe, a test) has no preference
        return site.region

    return region_of


@dataclass(eq=False)
class _Link:
    """One node's control as the pool holds it: events of an inactive link are dropped."""

    node_id: str
    node: NodeControl
    active: bool = True


@dataclass(eq=False)
class _Home:
    placement: Placement
    raw: str
    """The stored value exactly (the atomic swap releases the record only if it still holds this)."""
    started_at: float
    """The life of the node it was placed on (another ``started_at`` means the node restarted: rooms gone)."""
    renewed_at: float


@dataclass
class _Hearing:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class NodePool:
    """A :class:`protocol.node.NodeControl` over every media node in the registry (see the module doc)."""

    def __init__(
        self,
        records: Records,
        connect: Connector,
        *,
        disconnect: Disconnector | None = None,
        region_of: RegionOf | None = None,
        check_seconds: float = CHECK_SECONDS,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        pool_id: str = "pool",
    ) -> None:
        self._records = records
        self._connect = connect
        self._disconnect = disconnect
        self._region_of = region_of
        self._check_seconds = check_seconds
        self._rng = rng or random.Random()
        self._clock = clock
        self._id = pool_id
        self._handlers: list[EventHandler] = []
        self._live: dict[str, NodeRecord] = {}
        self._links: dict[str, _Link] = {}
        self._connecting = asyncio.Lock()
        self._homes: dict[str, _Home] = {}
        self._homeless: dict[str, Placement] = {}
        """Hearings whose node was lost while no other was up: placed again (and announced) once one is."""
        self._hearings: dict[str, _Hearing] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._outage_at: float | None = None
        """When the registry last could not be read (monotonic)."""

    # --- NodeControl ----------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """The pool's own id (each command is carried out by a hearing's home node)."""
        return self._id

    def subscribe(self, handler: EventHandler) -> None:
        """Receive every event of every hearing's home node, and :class:`MediaNodeLost`."""
        self._handlers.append(handler)

    async def call(self, command: NodeCommand) -> NodeReply:
        """Carry out ``command`` on the hearing's home node (placing the hearing first if it needs one)."""
        if isinstance(command, CreateProbe):
            return await self._probe(command)
        hearing_id = command.hearing_id
        if isinstance(command, CloseRoom):
            return await self._close_room(hearing_id)
        if isinstance(command, ClosePeer):
            home = await self._current(hearing_id)
            if home is None:
                return Ack()  # the hearing has no node: there is no peer to close
        else:
            home = await self._home(hearing_id)
        if home is None:
            return Refused(code="no_media_node", message="no media node is up to carry this hearing's media")
        link = await self._link(home.placement.node_id)
        if link is None:
            return Refused(code="node_unreachable", message=f"media node {home.placement.node_id} cannot be reached")
        return await link.node.call(command)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the registry once, then every ``check_seconds`` (failover)."""
        await self.check()
        self._monitor = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        """Stop watching and let go of every node link (the nodes themselves are not closed)."""
        tasks = [t for t in (self._monitor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._monitor = None
        for link in list(self._links.values()):
            link.active = False
            if self._disconnect is not None:
                with contextlib.suppress(Exception):
                    await self._disconnect(link.node)
        self._links.clear()

    # --- reading ----------------------------------------------------------------------------------

    async def registry(self) -> dict[str, NodeRecord]:
        """Every node with a live heartbeat record, by id (unreadable records are skipped and logged).

        A node an operator drains is ``draining`` here at once, before its own heartbeat says so."""
        found: dict[str, NodeRecord] = {}
        drained = {key.removeprefix(NODE_DRAIN_PREFIX) for key in await self._records.scan(NODE_DRAIN_PREFIX)}
        for key, raw in (await self._records.scan(NODE_PREFIX)).items():
            try:
                record = NodeRecord.model_validate_json(raw)
            except ValidationError as exc:
                log.warning("node_record_invalid", key=key, error=str(exc.errors()[:1]))
                continue
            if record.id in drained and record.state == "up":
                record = record.model_copy(update={"state": "draining"})
            found[record.id] = record
        return found

    async def _refresh(self) -> dict[str, NodeRecord]:
        """Read the registry into ``_live`` (the previous view); shortly after an outage, nodes not rewritten yet
        are kept (see ``OUTAGE_SETTLE_SECONDS``)."""
        previous = self._live
        try:
            fresh = await self.registry()
        except Exception:
            self._outage_at = time.monotonic()
            raise
        if self._outage_at is not None and time.monotonic() - self._outage_at < OUTAGE_SETTLE_SECONDS:
            kept = {k: v for k, v in previous.items() if k not in fresh}
            if kept:
                log.info("node_records_awaited_after_outage", node_ids=sorted(kept))
            fresh = {**kept, **fresh}
        self._live = fresh
        return previous

    async def nodes(self) -> Sequence[NodeInfo]:
        """Every node with a live record, as ``GET /api/v1/nodes`` lists it (a ``NodeDirectory``)."""
        return [self._info(r) for r in sorted((await self.registry()).values(), key=lambda r: r.id)]

    async def set_draining(self, node_id: str, draining: bool) -> NodeInfo | None:
        """Drain a live node or put it back (a ``NodeDirectory``); None if no node of that id is live.

        The flag outlives the node's restarts until it is put back. This process stops placing on the node at
        once; other signaling processes when the node's next heartbeat (``HEARTBEAT_SECONDS``) says so."""
        record = (await self.registry()).get(node_id)
        if record is None:
            return None
        if draining:
            await self._records.put(node_drain_key(node_id), b"1")
        else:
            await self._records.delete(node_drain_key(node_id))
        record = record.model_copy(update={"state": "draining" if draining else "up"})
        if node_id in self._live:
            self._live[node_id] = record
        return self._info(record)

    def _info(self, r: NodeRecord) -> NodeInfo:
        return NodeInfo(
            id=r.id,
            region=r.region,
            state=r.state,
            load=r.load,
            rooms=r.rooms,
            peers=r.peers,
            capacity_peers=r.capacity_peers,
            cpu=r.cpu,
            packets_per_second=r.packets_per_second,
            heartbeat_age_seconds=round(max(self._clock() - r.heartbeat_at, 0.0), 3),
            started_at=r.started_at,
            version=r.version,
            send_path=r.send_path,
            adaptation=r.adaptation,
        )

    async def placement(self, hearing_id: str) -> Placement | None:
        """The hearing's stored placement (any process's), or None if it has no home node now."""
        raw = await self._records.get(placement_key(hearing_id))
        return _parse(raw.decode()) if raw is not None else None

    # --- failover ---------------------------------------------------------------------------------

    async def check(self) -> None:
        """Read the registry; move the hearings of lost nodes, place homeless hearings, renew placements."""
        previous = await self._refresh()
        for node_id, before in previous.items():
            after = self._live.get(node_id)
            if after is None or after.started_at != before.started_at:
                log.warning("media_node_lost", node_id=node_id, restarted=after is not None)
        retired: list[_Link] = []
        for node_id, link in list(self._links.items()):
            record = self._live.get(node_id)
            if record is None or (node_id in previous and previous[node_id].started_at != record.started_at):
                # No event of it counts any more, and the next command connects afresh (a new life of it).
                link.active = False
                del self._links[node_id]
                retired.append(link)
        moved: dict[str, list[str]] = {}
        for hearing_id, home in list(self._homes.items()):
            if not self._alive(home):
                moved.setdefault(home.placement.node_id, []).append(hearing_id)
                await self._failover(hearing_id)
        for link in retired:
            # A new life of the node has no rooms (and may be the new home already): nothing to close there.
            gone = link.node_id not in self._live
            self._spawn(self._retire(link, moved.get(link.node_id, []) if gone else []))
        for hearing_id in list(self._homeless):
            if self._live:
                await self._failover(hearing_id)
        for hearing_id, entry in list(self._hearings.items()):
            if hearing_id not in self._homes and hearing_id not in self._homeless and not entry.lock.locked():
                del self._hearings[hearing_id]  # nothing per hearing outlives its room
        now = self._clock()
        for hearing_id, home in list(self._homes.items()):
            if now - home.renewed_at >= PLACEMENT_RENEW_SECONDS:
                await self._records.claim(placement_key(hearing_id), home.raw, ttl=PLACEMENT_TTL_SECONDS)
                home.renewed_at = now

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._check_seconds)
            try:
                await self.check()
            except Exception:  # the registry unreadable for a moment (Redis restarting): try again next tick
                log.exception("node_registry_check_failed")

    async def _failover(self, hearing_id: str) -> None:
        """Place a hearing whose node is gone (or that had none) again and announce it (under its lock)."""
        async with self._hearing(hearing_id).lock:
            home = self._homes.get(hearing_id)
            if home is not None and self._alive(home):
                return
            old = home.placement if home is not None else self._homeless.get(hearing_id)
            if old is None:
                return
            new = await self._swap(hearing_id, home.raw if home is not None else None, old)
            self._homes.pop(hearing_id, None)
            if new is None:
                if hearing_id in self._homeless:
                    return  # still no node: announced already
                self._homeless[hearing_id] = old
            else:
                self._homes[hearing_id] = new
                self._homeless.pop(hearing_id, None)
            new_id = new.placement.node_id if new is not None else None
            log.warning("hearing_failed_over", hearing_id=hearing_id, node_id=old.node_id, new_node_id=new_id)
        await self._emit(MediaNodeLost(hearing_id=hearing_id, node_id=old.node_id, new_node_id=new_id))

    async def _retire(self, link: _Link, moved: list[str]) -> None:
        """Let go of a lost node's link; first, best effort, close the rooms of the hearings moved off it (a node
        whose heartbeat lapsed may still run, and its peers of a moved hearing must stop)."""
        for hearing_id in moved:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.node.call(CloseRoom(hearing_id=hearing_id)), CLOSE_LOST_SECONDS)
        if self._disconnect is not None:
            with contextlib.suppress(Exception):
                await self._disconnect(link.node)

    # --- placement --------------------------------------------------------------------------------

    def _alive(self, home: _Home) -> bool:
        record = self._live.get(home.placement.node_id)
        return record is not None and record.started_at == home.started_at

    def _hearing(self, hearing_id: str) -> _Hearing:
        return self._hearings.setdefault(hearing_id, _Hearing())

    async def _current(self, hearing_id: str) -> _Home | None:
        """The hearing's home if it has a live one (never places)."""
        home = self._homes.get(hearing_id)
        if home is not None and self._alive(home):
            return home
        raw = await self._records.get(placement_key(hearing_id))
        placement = _parse(raw.decode()) if raw is not None else None
        if raw is None or placement is None:
            return None
        record = self._live.get(placement.node_id)
        return _Home(placement, raw.decode(), record.started_at, self._clock()) if record is not None else None

    async def _home(self, hearing_id: str) -> _Home | None:
        """The hearing's live home node, placing it (or placing it again) if needed; None when no node is up."""
        announce: MediaNodeLost | None = None
        async with self._hearing(hearing_id).lock:
            home = self._homes.get(hearing_id)
            if home is not None and self._alive(home):
                return home
            if home is not None or hearing_id in self._homeless:
                # Its node was lost (noticed here before the next check): the same as a failover.
                old = home.placement if home is not None else self._homeless[hearing_id]
                if not self._live:
                    await self._refresh()
                new = await self._swap(hearing_id, home.raw if home is not None else None, old)
                if new is None:
                    self._homes.pop(hearing_id, None)
                    first = hearing_id not in self._homeless
                    self._homeless[hearing_id] = old
                    lost = MediaNodeLost(hearing_id=hearing_id, node_id=old.node_id, new_node_id=None)
                    announce = lost if first else None  # a hearing already told there is no node is not told again
                    home = None
                else:
                    self._homes[hearing_id] = new
                    self._homeless.pop(hearing_id, None)
                    announce = MediaNodeLost(
                        hearing_id=hearing_id, node_id=old.node_id, new_node_id=new.placement.node_id
                    )
                    home = new
            else:
                home = await self._adopt_or_place(hearing_id)
                if home is None:
                    return None
                self._homes[hearing_id] = home
        if announce is not None:
            log.warning("hearing_failed_over", hearing_id=hearing_id, node_id=announce.node_id,
                        new_node_id=announce.new_node_id)  # fmt: skip
            await self._emit(announce)
        return home

    async def _adopt_or_place(self, hearing_id: str) -> _Home | None:
        """The stored placement if its node lives (another process placed it), else a new one."""
        key = placement_key(hearing_id)
        raw = await self._records.get(key)
        stored = _parse(raw.decode()) if raw is not None else None
        if raw is not None and stored is not None:
            if stored.node_id not in self._live:
                await self._refresh()  # the pool may have started before the node's first heartbeat
            record = self._live.get(stored.node_id)
            if record is not None:
                return _Home(stored, raw.decode(), record.started_at, self._clock())
            return await self._swap(hearing_id, raw.decode(), stored)
        if raw is not None:
            await self._records.delete(key)  # unreadable: nobody can route by it
        if not self._live:
            await self._refresh()
        return await self._place(hearing_id, None)

    async def _place(self, hearing_id: str, previous: Placement | None) -> _Home | None:
        """Choose a node and claim the placement record (first writer wins; the winner's placement is returned)."""
        region = await self._region_of(hearing_id) if self._region_of is not None else ""
        for _ in range(3):
            choice = choose_node(self._live.values(), region, self._rng)
            if choice is None:
                log.warning("no_media_node", hearing_id=hearing_id, region=region)
                return None
            record, reason = choice
            placement = Placement(
                hearing_id=hearing_id,
                node_id=record.id,
                region=record.region,
                reason="failover" if previous is not None else reason,
                placed_at=self._clock(),
                previous_node_id=previous.node_id if previous is not None else None,
            )
            raw = placement.model_dump_json()
            holder = await self._records.claim(placement_key(hearing_id), raw, ttl=PLACEMENT_TTL_SECONDS)
            if holder != raw:
                won = _parse(holder)
                if won is None or won.node_id not in self._live:
                    # Another process's placement on a node gone since: take its place once it is released.
                    await self._records.release(placement_key(hearing_id), holder)
                    continue
                placement, raw, record = won, holder, self._live[won.node_id]
            log.info(
                "hearing_placed",
                hearing_id=hearing_id,
                node_id=placement.node_id,
                region=placement.region,
                reason=placement.reason,
                previous_node_id=placement.previous_node_id,
            )
            return _Home(placement, raw, record.started_at, self._clock())
        return None

    async def _swap(self, hearing_id: str, old_raw: str | None, old: Placement) -> _Home | None:
        """Replace the placement on a lost node: release the record only if it still holds ``old_raw`` (another
        process may have swapped it already: then its new placement is adopted by the claim), then claim."""
        if old_raw is not None:
            await self._records.release(placement_key(hearing_id), old_raw)
        if not any(n.state == "up" for n in self._live.values()):
            return None
        return await self._place(hearing_id, old)

    async def _close_room(self, hearing_id: str) -> NodeReply:
        """Close the hearing's room on its node and give up its placement (the next room is placed afresh)."""
        async with self._hearing(hearing_id).lock:
            home = self._homes.pop(hearing_id, None) or await self._current(hearing_id)
            self._homeless.pop(hearing_id, None)
            if home is None:
                return Ack()
            await self._records.release(placement_key(hearing_id), home.raw)
            link = await self._link(home.placement.node_id)
            if link is None:
                return Ack()  # its node is gone: so is the room
            return await link.node.call(CloseRoom(hearing_id=hearing_id))

    async def _probe(self, command: CreateProbe) -> NodeReply:
        if not self._live:
            await self._refresh()
        up = [n for n in self._live.values() if n.state == "up"]
        if not up:
            return Refused(code="no_media_node", message="no media node is up to run the network check")
        least = min(up, key=lambda n: (n.load, n.peers, n.id))
        link = await self._link(least.id)
        if link is None:
            return Refused(code="node_unreachable", message=f"media node {least.id} cannot be reached")
        return await link.node.call(command)

    # --- node links -------------------------------------------------------------------------------

    async def _link(self, node_id: str) -> _Link | None:
        link = self._links.get(node_id)
        if link is not None:
            return link
        async with self._connecting:
            link = self._links.get(node_id)
            if link is not None:
                return link
            try:
                node = await self._connect(node_id)
            except Exception:
                log.exception("node_connect_failed", node_id=node_id)
                return None
            link = _Link(node_id, node)

            async def relay(event: NodeEvent, link: _Link = link) -> None:
                await self._relay(link, event)

            node.subscribe(relay)
            self._links[node_id] = link
            return link

    async def _relay(self, link: _Link, event: NodeEvent) -> None:
        if not link.active:
            return
        home = self._homes.get(event.hearing_id)
        if event.hearing_id in self._homeless or (home is not None and home.placement.node_id != link.node_id):
            return  # a node the hearing moved away from: its word no longer counts
        await self._emit(event)

    async def _emit(self, event: NodeEvent) -> None:
        for handler in list(self._handlers):
            try:
                await handler(event)
            except Exception:
                log.exception("node_event_handler_failed", type=event.type)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _parse(raw: str) -> Placement | None:
    try:
        return Placement.model_validate_json(raw)
    except ValidationError:
        log.warning("placement_record_invalid", value=raw[:200])
        return None
