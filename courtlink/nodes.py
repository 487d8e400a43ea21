"""The media nodes signaling lists at ``GET /api/v1/nodes``: here, the one embedded node."""

from __future__ import annotations

import time
from collections.abc import Sequence

from media.node import InProcessNode
from protocol.directory import NodeInfo


class LocalNodes:
    """A :class:`protocol.directory.NodeDirectory` of the in-process node.

    ``load`` is the share of one core this process used since the previous
    reading (a media node runs one process per core).
    """

    def __init__(self, node: InProcessNode, region: str) -> None:
        self._node = node
        self._region = region
        self._last = (time.monotonic(), time.process_time())

    async def nodes(self) -> Sequence[NodeInfo]:
        """The embedded node with its rooms, peers and recent CPU load."""
        now = (time.monotonic(), time.process_time())
        wall, cpu = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        rooms, peers = self._node.stats()
        return [
            NodeInfo(
                id=self._node.node_id,
                region=self._region,
                state="up",
                load=round(cpu / wall, 3) if wall > 0 else 0.0,
                rooms=rooms,
                peers=peers,
            )
        ]
