"""The embedded media node of ``courtlink serve`` in the node registry: its heartbeat, written in-process.

``courtlink serve`` drives its one node through the same :class:`signaling.node_pool.NodePool` as
``courtlink signaling`` drives many, so the pool needs the node's :class:`protocol.cluster.NodeRecord`. A node
process (``courtlink media-node``) writes its own over Redis; here :class:`NodeHeartbeat` writes the embedded
node's into the in-process records.
"""

from __future__ import annotations

import asyncio
import time
from importlib import metadata

import structlog

from media.node import InProcessNode
from media.service import DrainFlag, heartbeat_record
from protocol.cluster import HEARTBEAT_SECONDS, NodeRecord, node_record_key
from rooms.bus import Records
from rooms.tasks import cancel_and_wait

log = structlog.get_logger("courtlink.nodes")


def courtlink_version() -> str:
    """The installed courtlink version ("" when not installed)."""
    try:
        return metadata.version("courtlink")
    except metadata.PackageNotFoundError:
        return ""


class NodeHeartbeat:
    """Writes an in-process node's :class:`NodeRecord` every ``every`` seconds.

    ``ttl`` None (``courtlink serve``): the record never lapses, since the node lives and dies with this
    process, and a loop stalled for a few seconds must not look like a lost node. ``cpu`` is the cores this
    process used since the previous heartbeat (one process, one node).
    """

    def __init__(
        self,
        node: InProcessNode,
        records: Records,
        *,
        region: str,
        capacity_peers: int,
        ttl: float | None = None,
        every: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._node = node
        self._records = records
        self._region = region
        self._capacity = capacity_peers
        self._ttl = ttl
        self._every = every
        self._started_at = time.time()
        self._version = courtlink_version()
        self._last = (time.monotonic(), time.process_time())
        self._task: asyncio.Task[None] | None = None
        self._drain = DrainFlag(records, node.node_id)

    def record(self) -> NodeRecord:
        """The node's heartbeat now."""
        now = (time.monotonic(), time.process_time())
        wall, used = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        cpu = round(used / wall, 3) if wall > 0 else 0.0
        rooms, peers = self._node.stats()
        return heartbeat_record(
            self._node,
            region=self._region,
            state=self._drain.state,
            capacity_peers=self._capacity,
            peers=peers,
            rooms=rooms,
            cpu=cpu,
            started_at=self._started_at,
            version=self._version,
        )

    async def beat(self) -> None:
        """Write the record once."""
        await self._drain.read()
        await self._records.put(
            node_record_key(self._node.node_id), self.record().model_dump_json().encode(), ttl=self._ttl
        )

    async def start(self) -> None:
        """Write the record now, then every ``every`` seconds."""
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, *, forget: bool = True) -> None:
        """Stop writing; ``forget``: delete the record too (a clean stop), else let it lapse (as a crash does)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if forget:
            await self._records.delete(node_record_key(self._node.node_id))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.beat()
            except Exception:
                log.exception("node_heartbeat_failed", node_id=self._node.node_id)
