"""Fixtures for tests of several media nodes: real in-process nodes with real heartbeats, behind a real NodePool.

``farm`` holds the nodes and the shared in-process records their heartbeats go to (6 s TTL, every 2 s, as a
``courtlink media-node`` writes them); ``pool_court`` is the real signaling app (WebSocket session, REST,
``GET /api/v1/nodes``, hearing details with ``placement``) driving them through a
:class:`signaling.node_pool.NodePool`. Sites and courtrooms are booked with regions (``book_in``).

tests/conftest.py loads them for every test module.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from courtlink.nodes import NodeHeartbeat
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.cluster import NODE_TTL_SECONDS
from protocol.node import NodeControl
from rooms.backends import open_store
from rooms.bus import InProcessRecords
from signaling.app import create_app
from signaling.node_pool import NodePool, store_regions
from signaling.rest_directory import directory_routes
from signaling.ws import WsSettings, ws_registrar
from tests.ws_fixtures import ROLES, Booking, Court, _bounded, _serve, ws_config


@dataclass
class Farm:
    """Media nodes in this process, each with its heartbeat in the shared records."""

    node_settings: NodeSettings
    records: InProcessRecords = field(default_factory=InProcessRecords)
    nodes: dict[str, InProcessNode] = field(default_factory=dict)
    beats: dict[str, NodeHeartbeat] = field(default_factory=dict)
    connects: list[str] = field(default_factory=list)

    async def add(self, node_id: str, region: str, *, capacity_peers: int = 300) -> InProcessNode:
        """Start a node and its heartbeat (6 s TTL)."""
        node = InProcessNode(self.node_settings.model_copy(update={"node_id": node_id}))
        beat = NodeHeartbeat(node, self.records, region=region, capacity_peers=capacity_peers, ttl=NODE_TTL_SECONDS)
        await beat.start()
        self.nodes[node_id], self.beats[node_id] = node, beat
        return node

    async def kill(self, node_id: str) -> None:
        """The node dies: its heartbeat stops (the record lapses by itself, as after ``kill -9``) and it closes."""
        await self.beats.pop(node_id).stop(forget=False)
        await self.nodes[node_id].close()

    async def connect(self, node_id: str) -> NodeControl:
        """The pool's connector: the node by id (a dead one is still an object, as a RemoteNode would be)."""
        self.connects.append(node_id)
        return self.nodes[node_id]

    async def close(self) -> None:
        """Stop every heartbeat and node."""
        for beat in self.beats.values():
            await beat.stop()
        for node in self.nodes.values():
            await node.close()


@pytest.fixture
async def farm(node_settings: NodeSettings) -> AsyncIterator[Farm]:
    """No node yet: a test adds its own."""
    farm = Farm(node_settings)
    try:
        yield farm
    finally:
        await farm.close()


@pytest.fixture
async def pool_court(tmp_path: Path, ws_settings: WsSettings, farm: Farm) -> AsyncIterator[Court]:
    """The real server driving the farm's nodes through a NodePool (``court.pool``); ``court.node`` is unused."""
    store = await open_store(None, tmp_path / "data")
    pool = NodePool(farm.records, farm.connect, region_of=store_regions(store))
    await pool.start()
    app = create_app(
        ws_config(), store, registrars=[ws_registrar(pool, ws_settings), directory_routes(None, pool, pool)]
    )
    runner, base = await _serve(app)
    http = aiohttp.ClientSession()
    court = Court(base, http, store, InProcessNode(farm.node_settings), app, pool=pool)
    try:
        yield court
    finally:
        await _bounded(_close_all(court))
        await http.close()
        await runner.cleanup()
        await pool.close()
        await court.node.close()
        await store.close()


async def _close_all(court: Court) -> None:
    for p in court.participants:
        await _bounded(p.close())
    for c in court.clients:
        with contextlib.suppress(Exception):
            await c.close()


async def book_in(court: Court, region: str, roles: tuple[str, ...] = ROLES) -> Booking:
    """Book a trial around now in a courtroom whose site is in ``region`` (one participant per role name)."""
    court._seq += 1
    n = court._seq
    site, room = f"site-{n}", f"room-{n}"
    status, body = await court.rest(
        "POST", "/api/v1/sites", {"id": site, "name": site, "kind": "court", "terminals": 5, "region": region}
    )
    assert status == 201, body
    status, body = await court.rest("POST", "/api/v1/courtrooms", {"id": room, "name": room, "site_id": site})
    assert status == 201, body
    start = datetime.now(UTC) - timedelta(minutes=5)
    participants: list[dict[str, Any]] = [
        {"name": f"{name.title()} {n}", "role": name.rstrip("0123456789"), "site_id": site} for name in roles
    ]
    if "counsel" in roles and "defendant" in roles:
        participants[roles.index("counsel")]["represents"] = [roles.index("defendant")]
    status, body = await court.rest(
        "POST",
        "/api/v1/hearings",
        {
            "case_number": f"(2026) POOL {n}",
            "kind": "trial",
            "courtroom_id": room,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=2)).isoformat(),
            "participants": participants,
        },
    )
    assert status == 201, body
    ids = {name: p["id"] for name, p in zip(roles, body["participants"], strict=True)}
    tokens = {name: p["token"] for name, p in zip(roles, body["participants"], strict=True)}
    return Booking(body["id"], ids, tokens, body)


async def placement(court: Court, hearing_id: str) -> dict[str, Any] | None:
    """The hearing's ``placement`` as ``GET /api/v1/hearings/{id}`` shows it."""
    status, body = await court.rest("GET", f"/api/v1/hearings/{hearing_id}")
    assert status == 200, body
    value: dict[str, Any] | None = body["placement"]
    return value


__all__ = ["Farm", "book_in", "placement"]
