"""Test helpers for the store contract: open either backend, reopen it, tamper with its audit log."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from rooms.backends import SQLITE_FILE, open_store
from rooms.backends.redis import AUDIT_FIELD, AUDIT_KEY, SITE_KEY, SITES_KEY, connect, key
from rooms.store import Store

BACKENDS = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]
"""The parameter list of every contract fixture: one suite, three backends (``-m "not redis"`` skips both Redis).

``redis-cluster`` is a real three-master Redis Cluster: a script or MULTI touching keys of several slots, or a
script touching a key of a slot it did not declare, fails there with CROSSSLOT instead of passing silently."""
REDIS_FIXTURES = {"redis": "redis_server", "redis-cluster": "redis_cluster"}
"""The session fixture that starts each Redis backend's server(s)."""


@dataclass
class Backend:
    """Where one backend's data lives, so a test can reopen the same data or edit it behind the store's back."""

    kind: str
    data_dir: Path
    redis_url: str = ""
    prefix: str = field(default_factory=lambda: f"test:{uuid.uuid4().hex[:12]}:")
    opened: list[Store] = field(default_factory=list)

    async def open(self) -> Store:
        """A fresh store on this backend's data (the same data every time)."""
        url = self.redis_url if self.kind in REDIS_FIXTURES else None
        store = await open_store(url, self.data_dir, key_prefix=self.prefix)
        self.opened.append(store)
        return store

    async def tamper(self, stream: str, seq: int, actor: str) -> None:
        """Rewrite the actor of one stored audit event directly in the database."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.data_dir / SQLITE_FILE, isolation_level=None)
            try:
                conn.execute(
                    "UPDATE audit SET body = json_set(body, '$.actor', ?) WHERE stream = ? AND seq = ?",
                    (actor, stream, seq),
                )
            finally:
                conn.close()
            return
        client = connect(self.redis_url)
        try:
            name = key(self.prefix, AUDIT_KEY, stream=stream)
            entries = cast("list[tuple[str, dict[str, str]]]", await client.xrange(name))
            # Stream entries cannot be edited in place: rebuild the stream with one event changed.
            await client.delete(name)
            for entry_id, fields in entries:
                body = json.loads(fields[AUDIT_FIELD])
                if body["seq"] == seq:
                    body["actor"] = actor
                await client.xadd(name, {AUDIT_FIELD: json.dumps(body)}, id=entry_id)
        finally:
            await client.aclose()

    async def put_raw_site(self, site_id: str, body: str) -> None:
        """Store a site's JSON ``body`` directly in the database, as an older release may have written it."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.data_dir / SQLITE_FILE, isolation_level=None)
            try:
                conn.execute("INSERT INTO sites (id, body) VALUES (?, ?)", (site_id, body))
            finally:
                conn.close()
            return
        client = connect(self.redis_url)
        try:
            await client.set(key(self.prefix, SITE_KEY, id=site_id), body)
            await client.zadd(key(self.prefix, SITES_KEY), {site_id: 0})
        finally:
            await client.aclose()

    async def close_all(self) -> None:
        """Close every store this backend opened."""
        for store in self.opened:
            await store.close()


async def backend_for(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Body of the parametrized ``backend`` fixtures (request.param is 'sqlite', 'redis' or 'redis-cluster')."""
    kind: str = request.param
    url = request.getfixturevalue(REDIS_FIXTURES[kind]) if kind in REDIS_FIXTURES else ""
    backend = Backend(kind, tmp_path / "data", redis_url=url)
    try:
        yield backend
    finally:
        await backend.close_all()
