"""Two signaling applications in one test process, in front of one set of hearings (several signaling processes).

``pair`` runs two complete signaling applications (``create_app`` + the WebSocket session), each on its own
loopback port as ``courtlink signaling`` would, sharing what separate processes share: the store, the media node
(one real :class:`media.node.InProcessNode`, loopback only), and one real Redis (the session's ``redis_server``)
for the bus and records, each application with its own connections and process id (keys and channels under a
prefix of the test's own). Each live room has one owner and the other application relays to it.

Test modules load the fixtures with ``pytest_plugins = ["tests.ws_fixtures", "tests.owners_fixtures"]``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from media.node import InProcessNode
from media.settings import NodeSettings
from rooms.backends import open_bus, open_store
from rooms.backends.redis_bus import RedisBus, RedisRecords
from rooms.bus import Records
from rooms.store import Store
from signaling.app import create_app
from signaling.ownership import OwnerSettings
from signaling.ws import WsSettings, ws_registrar
from tests.ws_fixtures import Court, _bounded, _serve, ws_config

LEASE_SECONDS = 1.5
"""The room lease of the test processes: short, so a takeover happens within a test's patience."""


@dataclass
class Pair:
    """Two signaling processes (``a`` and ``b``) sharing a store, a node, a bus and records."""

    a: Court
    b: Court
    records: Records
    """The records both share (here: one more connection to the same Redis)."""
    lease: float = LEASE_SECONDS
    """The room lease both processes use, in seconds."""


async def open_pair(
    store: Store, node: InProcessNode, redis_url: str, prefix: str, ws_settings: WsSettings, lease: float
) -> tuple[Court, Court, list[object]]:
    """Start the two applications, each with its own bus and records; what to close is returned."""
    courts: list[Court] = []
    closers: list[object] = []
    for process_id in ("signaling-a", "signaling-b"):
        bus, records = await open_bus(redis_url, process_id=process_id, key_prefix=prefix)
        closers += [bus, records]
        owners = OwnerSettings(process_id=process_id, lease_seconds=lease, request_seconds=1.0)
        registrar = ws_registrar(node, ws_settings, bus=bus, records=records, owners=owners)
        app = create_app(ws_config(), store, registrars=[registrar])
        runner, base = await _serve(app)
        http = aiohttp.ClientSession()
        courts.append(Court(base, http, store, node, app))
        closers += [runner, http]
    return courts[0], courts[1], closers


@pytest.fixture
async def pair(
    tmp_path: Path, ws_settings: WsSettings, node_settings: NodeSettings, redis_server: str
) -> AsyncIterator[Pair]:
    """Two signaling applications on loopback over one store, one real media node and one real Redis."""
    store = await open_store(None, tmp_path / "data")
    node = InProcessNode(node_settings)
    prefix = f"courtlink-{uuid.uuid4().hex[:8]}:"
    a, b, closers = await open_pair(store, node, redis_server, prefix, ws_settings, LEASE_SECONDS)
    records = closers[1]
    assert isinstance(records, RedisRecords)
    try:
        yield Pair(a, b, records)
    finally:
        for court in (a, b):
            await asyncio.gather(*(_bounded(p.close()) for p in court.participants))
            await asyncio.gather(*(_bounded(c.close()) for c in court.clients))
        for closer in closers:
            if isinstance(closer, aiohttp.ClientSession):
                await closer.close()
        for closer in closers:
            if isinstance(closer, web.AppRunner):
                await _bounded(closer.cleanup())
        for closer in closers:
            if isinstance(closer, RedisBus | RedisRecords):
                await _bounded(closer.close())
        await node.close()
        await store.close()
