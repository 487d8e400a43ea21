"""A media node on the bus: it answers node-control commands, relays its events and keeps its heartbeat record.

``courtlink media-node`` runs one :class:`media.node.InProcessNode` behind a :class:`NodeService`; signaling
drives it from another process through :class:`signaling.remote_node.RemoteNode`. The names it uses are those of
:mod:`protocol.cluster`:

- ``node.<id>.cmd``: each request is a ``protocol.node`` command as JSON, each reply a ``protocol.node`` reply.
  Bytes that are no command (bad JSON, an unknown type, a field out of bounds) get ``Refused(invalid_command)``;
  the node never sees them. Commands of one participant are carried out one after the other, in the order they
  arrived (the node relies on it: an answer before its offer means nothing); other participants' run meanwhile.
- ``node.<id>.events``: every node event as JSON, in the order the node emitted it.
- ``node.<id>``: the :class:`protocol.cluster.NodeRecord`, rewritten every ``HEARTBEAT_SECONDS`` with a time to
  live of ``NODE_TTL_SECONDS``: a node that stops (or is killed) disappears from the registry by itself within
  that time; a clean stop deletes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Literal

import structlog
from pydantic import ValidationError

from media.node import InProcessNode
from media.sending import node_send_path
from protocol.cluster import (
    HEARTBEAT_SECONDS,
    NODE_TTL_SECONDS,
    NodeRecord,
    node_command_channel,
    node_drain_key,
    node_event_channel,
    node_lease_key,
    node_record_key,
    node_state,
)
from protocol.directory import AdaptationCounts
from protocol.node import NODE_COMMAND, NODE_REPLY, CloseRoom, NodeCommand, NodeEvent, Refused
from rooms.bus import Bus, BusError, Records, Subscription
from rooms.tasks import cancel_and_wait

log = structlog.get_logger(__name__)


class NodeIdInUse(Exception):
    """Another running process serves this node id (its lease did not lapse while we waited)."""


def _version() -> str:
    try:
        return metadata.version("courtlink")
    except metadata.PackageNotFoundError:
        return ""


class DrainFlag:
    """Whether an operator drains a node (``POST /api/v1/nodes/{id}/drain`` sets :func:`node_drain_key`): read
    before each heartbeat, whose ``state`` it gives; a change is logged once (``node_draining``,
    ``node_drain_ended``)."""

    def __init__(self, records: Records, node_id: str) -> None:
        self._records = records
        self._node_id = node_id
        self.state: Literal["up", "draining"] = "up"

    async def read(self) -> Literal["up", "draining"]:
        """The state now (a flag set while the node was down is found at its first heartbeat)."""
        state = node_state(await self._records.get(node_drain_key(self._node_id)))
        if state != self.state:
            log.info("node_draining" if state == "draining" else "node_drain_ended", node_id=self._node_id)
            self.state = state
        return state


def heartbeat_record(
    node: InProcessNode,
    *,
    region: str,
    state: Literal["up", "draining"],
    capacity_peers: int,
    peers: int,
    rooms: int,
    cpu: float,
    started_at: float,
    version: str,
    packets_per_second: float = 0.0,
    frame_address: str | None = None,
) -> NodeRecord:
    """A node's heartbeat record from what its writer measured: the load, the time, how it sends and its
    adaptation figures are derived here, once for the node process's writer and ``serve``'s."""
    return NodeRecord(
        id=node.node_id,
        region=region,
        state=state,
        capacity_peers=capacity_peers,
        peers=peers,
        rooms=rooms,
        cpu=cpu,
        packets_per_second=packets_per_second,
        load=round(max(peers / capacity_peers, cpu), 3),
        frame_address=frame_address,
        started_at=started_at,
        heartbeat_at=time.time(),
        version=version,
        send_path=send_path_of(node),
        adaptation=adaptation_counts(node),
    )


def send_path_of(node: InProcessNode) -> str:
    """How the node sends forwarded RTP (``native``, ``python`` or ``aiortc``), as its heartbeat says."""
    return node_send_path(node.settings.direct_send)


def adaptation_counts(node: InProcessNode) -> AdaptationCounts:
    """A node's bandwidth adaptation figures now, as its heartbeat carries them."""
    counts = node.bandwidth_counts()
    return AdaptationCounts(
        paused_streams=counts["paused_streams"],
        capped_publishers=counts["capped"],
        nacks_dropped=counts["nacks_dropped"],
        nacks_too_old=counts["nacks_too_old"],
        resent_forgiven=counts["resent_forgiven"],
        loss_backoffs=counts["loss_backoffs"],
        overloads=counts["overloads"],
        keyframe_requests=counts["keyframe_requests"],
        probes=counts["probes"],
        probes_succeeded=counts["probes_succeeded"],
    )


class _Order:
    """One lock per participant, so that participant's commands run in arrival order (asyncio locks are FIFO)."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def of(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class NodeService:
    """Serves one node on the bus (see the module docstring); ``start`` it, ``close`` it on shutdown."""

    def __init__(
        self,
        node: InProcessNode,
        bus: Bus,
        records: Records,
        *,
        region: str,
        capacity_peers: int,
        frame_address: str | None = None,
        owner: str | None = None,
        id_wait_seconds: float = NODE_TTL_SECONDS + 1,
    ) -> None:
        self.node = node
        self.owner = owner or f"{node.node_id}-{uuid.uuid4().hex[:12]}"
        """Who holds the node id's lease: this process (unique per node life)."""
        self.id_wait_seconds = id_wait_seconds
        """How long ``start`` waits for another holder of the node id to lapse (a crashed node restarted at once)."""
        self.bus = bus
        self.records = records
        self.region = region
        self.capacity_peers = capacity_peers
        self.frame_address = frame_address
        self.started_at = time.time()
        self._version = _version()
        self._order = _Order()
        self._serving: Subscription | None = None
        self._beats: asyncio.Task[None] | None = None
        self._closing = False
        self._relaying = False
        self._relay_failing = False
        self._marks = (time.monotonic(), time.process_time(), 0)
        self.drain = DrainFlag(records, node.node_id)

    @property
    def node_id(self) -> str:
        """The served node's id."""
        return self.node.node_id

    async def start(self) -> None:
        """Take the node id, answer commands, relay events and write the first heartbeat.

        Raises :class:`NodeIdInUse` if another running node holds the id for longer than ``id_wait_seconds`` (a
        node killed just before lapses within ``NODE_TTL_SECONDS``), a BusError if Redis does not answer.
        """
        await self._take_id()
        self.started_at = time.time()
        self._marks = (time.monotonic(), time.process_time(), self.node.packets_forwarded())
        self._relaying = True
        self.node.subscribe(self._relay)
        self._serving = await self.bus.serve(node_command_channel(self.node_id), self._answer)
        await self.drain.read()
        await self.records.put(
            node_record_key(self.node_id), self.record().model_dump_json().encode(), ttl=NODE_TTL_SECONDS
        )
        self._beats = asyncio.get_running_loop().create_task(self._heartbeats())
        log.info(
            "node_service_started",
            node_id=self.node_id,
            region=self.region,
            frame_address=self.frame_address,
            send_path=node_send_path(self.node.settings.direct_send),
        )

    async def _take_id(self) -> None:
        key = node_lease_key(self.node_id)
        deadline = time.monotonic() + self.id_wait_seconds
        while True:
            holder = await self.records.claim(key, self.owner, ttl=NODE_TTL_SECONDS)
            if holder == self.owner:
                return
            if time.monotonic() >= deadline:
                raise NodeIdInUse(f"node id {self.node_id} is in use by another running media node ({holder})")
            log.info("node_id_held", node_id=self.node_id, holder=holder)
            await asyncio.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    async def close(self) -> None:
        """Stop answering and relaying, and take the node out of the registry at once."""
        self._relaying = False
        self._closing = True
        if self._beats is not None:
            await cancel_and_wait(self._beats)  # (CI saw a worker's stop hang 12 s here when it cancelled once)
            self._beats = None
        if self._serving is not None:
            await self._serving.close()
            self._serving = None
        with contextlib.suppress(BusError):
            await self.records.delete(node_record_key(self.node_id))
            await self.records.release(node_lease_key(self.node_id), self.owner)
        log.info("node_service_stopped", node_id=self.node_id)

    # -- commands ----------------------------------------------------------------------------------------------

    async def _answer(self, payload: bytes) -> bytes:
        try:
            command: NodeCommand = NODE_COMMAND.validate_json(payload)
        except ValidationError as exc:
            errors = exc.errors()
            where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
            msg = errors[0]["msg"] if errors else "invalid"
            reason = f"{where}: {msg}" if where else msg
            log.info("node_command_invalid", node_id=self.node_id, reason=reason[:200], size=len(payload))
            refused = Refused(code="invalid_command", message=f"not a node command: {reason[:200]}")
            return refused.model_dump_json().encode()
        participant = "" if isinstance(command, CloseRoom) else command.participant_id
        async with self._order.of((command.hearing_id, participant)):
            reply = await self.node.call(command)
        return NODE_REPLY.dump_json(reply)

    # -- events ------------------------------------------------------------------------------------------------

    async def _relay(self, event: NodeEvent) -> None:
        """Publish one node event (the node hands them over one at a time, in order)."""
        if not self._relaying:
            return
        try:
            await self.bus.publish(node_event_channel(self.node_id), event.model_dump_json().encode())
        except BusError as exc:
            if not self._relay_failing:  # once per outage, not once per event
                log.warning("node_events_lost", node_id=self.node_id, code=exc.code, error=str(exc))
            self._relay_failing = True
            return
        if self._relay_failing:
            self._relay_failing = False
            log.info("node_events_relayed_again", node_id=self.node_id)

    # -- heartbeat ---------------------------------------------------------------------------------------------

    def record(self) -> NodeRecord:
        """The heartbeat record now: load since the previous one (CPU, packets/s), peers, rooms."""
        now, cpu_now, packets_now = time.monotonic(), time.process_time(), self.node.packets_forwarded()
        then, cpu_then, packets_then = self._marks
        self._marks = (now, cpu_now, packets_now)
        wall = now - then
        cpu = max(0.0, (cpu_now - cpu_then) / wall) if wall > 0 else 0.0
        packets = max(0, packets_now - packets_then) / wall if wall > 0 else 0.0
        rooms, peers = self.node.stats()
        return heartbeat_record(
            self.node,
            region=self.region,
            state=self.drain.state,
            capacity_peers=self.capacity_peers,
            peers=peers + self.node.probes(),
            rooms=rooms,
            cpu=round(cpu, 3),
            packets_per_second=round(packets, 1),
            frame_address=self.frame_address,
            started_at=self.started_at,
            version=self._version,
        )

    def adaptation(self) -> AdaptationCounts:
        """The node's bandwidth adaptation figures now (``InProcessNode.bandwidth_counts``)."""
        return adaptation_counts(self.node)

    async def _heartbeats(self) -> None:
        failing = False
        while not self._closing:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                holder = await self.records.claim(node_lease_key(self.node_id), self.owner, ttl=NODE_TTL_SECONDS)
                if holder != self.owner:  # e.g. Redis lost its data and a second node of this id started meanwhile
                    log.error("node_id_conflict", node_id=self.node_id, holder=holder)
                await self.drain.read()
                body = self.record().model_dump_json().encode()
                await self.records.put(node_record_key(self.node_id), body, ttl=NODE_TTL_SECONDS)
            except BusError as exc:
                if not failing:
                    log.warning("node_heartbeat_failed", node_id=self.node_id, code=exc.code, error=str(exc))
                failing = True
                continue
            if failing:
                log.info("node_heartbeat_restored", node_id=self.node_id)
                failing = False
