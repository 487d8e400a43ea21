"""``courtlink media-node``: one media node as a process of its own, found by signaling through Redis.

It wires an :class:`media.node.InProcessNode` (aiortc), its frame pipe (recorders in other processes connect
there for the node's frames) and a :class:`media.service.NodeService` (commands, events, heartbeat) on the bus of
``open_bus(settings.redis_url, ...)``, prints one ready line, and on SIGTERM/SIGINT stops cleanly: out of the
registry at once, peers closed, connections closed (in reverse order of opening).
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import AsyncExitStack

import structlog

from courtlink import eventloop
from courtlink.logs import configure_logging, stop_on_signals
from courtlink.settings import Settings
from courtlink.wiring import node_settings
from media.frame_pipe import FramePipeServer
from media.node import InProcessNode
from media.service import NodeService
from rooms.backends import open_bus

log = structlog.get_logger("courtlink")

READY = "courtlink: media node {node_id} ready (region {region}, bus {bus}, frame pipe {frames})"
"""The line printed once the node serves commands and its heartbeat is in the registry (tests wait for it)."""


def process_id(settings: Settings, role: str) -> str:
    """This process's id on the bus: ``[cluster] process_id``, else ``<role>-<host>-<pid>``."""
    return settings.cluster.process_id or f"{role}-{socket.gethostname()}-{os.getpid()}"


async def start_frame_pipe(node: InProcessNode, settings: Settings, stack: AsyncExitStack) -> str:
    """Start the node's frame pipe (recorders in other processes connect there) and return the address they use."""
    media, secret = settings.media, settings.cluster.secret
    server = FramePipeServer(
        node, media.frame_host, media.frame_port, secret=secret.get_secret_value() if secret else None
    )
    bound = str(await server.start())
    stack.push_async_callback(server.close)
    return media.frame_advertise or bound


async def run_media_node(
    settings: Settings,
    *,
    node_id: str | None = None,
    region: str | None = None,
    owner: str | None = None,
    cpu: int | None = None,
) -> None:
    """Run one media node on the bus until SIGINT or SIGTERM (``settings.redis_url`` must be set).

    ``owner`` names this life of the node on its node-id lease (a supervisor's worker: the supervisor gives it,
    to take a dead worker out of the registry at once); ``cpu`` is the CPU a worker is pinned to (logged).
    """
    configure_logging(settings.log_level, settings.log_format)
    eventloop.announce()
    media = settings.media
    node_id = node_id or media.node_id
    region = media.region if region is None else region
    # Before anything else: a SIGTERM during start-up (or right after the ready line) is a clean stop, too.
    stop = stop_on_signals("media-node")
    async with AsyncExitStack() as stack:
        bus, records = await open_bus(settings.redis_url, process_id=process_id(settings, f"node-{node_id}"))
        stack.push_async_callback(records.close)
        stack.push_async_callback(bus.close)
        node = InProcessNode(node_settings(settings).model_copy(update={"node_id": node_id}))
        stack.push_async_callback(node.close)
        frame_address = await start_frame_pipe(node, settings, stack)
        service = NodeService(
            node,
            bus,
            records,
            region=region,
            capacity_peers=media.capacity_peers,
            frame_address=frame_address,
            owner=owner,
        )
        await service.start()
        stack.push_async_callback(service.close)  # first to run on the way out: out of the registry at once
        bus_name = "redis cluster" if "+cluster://" in (settings.redis_url or "") else "redis"
        # The fact before the ready line: whoever waits for the line (the supervisor, a test, an operator's
        # script) finds the fact already written.
        pinned = {} if cpu is None else {"cpu": cpu}
        log.info("media_node_started", node_id=node_id, region=region, frame_address=frame_address, **pinned)
        print(READY.format(node_id=node_id, region=region or "-", bus=bus_name, frames=frame_address or "none"))
        sys.stdout.flush()
        await stop.wait()
        log.info("media_node_stopping", node_id=node_id)
