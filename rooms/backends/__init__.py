"""Store backends: the only modules that touch SQLite or Redis.

:func:`open_store` is the one factory that picks a store backend from a URL, :func:`open_bus` the one that picks
the bus and records (in-process, or Redis).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rooms.bus import Bus, InProcessBus, InProcessRecords, Records
from rooms.store import Store

SQLITE_FILE = "courtlink.sqlite3"
"""File name of the embedded database inside the data directory."""

EMBEDDED_STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)
"""What opening the embedded store raises when its file is unusable (callers outside the backends catch these,
so no other package imports sqlite3)."""


async def open_store(url: str | None, data_dir: Path, *, key_prefix: str = "courtlink:") -> Store:
    """Open the store named by ``url``.

    None or "" opens the embedded SQLite store at ``data_dir / "courtlink.sqlite3"``;
    ``redis://`` or ``rediss://`` opens the Redis store (keys under ``key_prefix``) on one server;
    ``redis+cluster://`` or ``rediss+cluster://`` opens it on a Redis Cluster (the URL names any one node).
    Any other scheme is a ValueError naming the URL's scheme.
    """
    if not url:
        from rooms.backends.sqlite import SqliteStore

        return await SqliteStore.open(data_dir / SQLITE_FILE)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from rooms.backends.redis import RedisStore

        return await RedisStore.open(url, key_prefix=key_prefix)
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: "
        "use redis://, rediss://, redis+cluster://, rediss+cluster:// or none for SQLite"
    )


REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
"""URL schemes of Redis (one server, or a cluster whose URL names any one node)."""


async def open_bus(url: str | None, *, process_id: str, key_prefix: str = "courtlink:") -> tuple[Bus, Records]:
    """The bus and the records named by ``url``.

    None or "" gives the in-process pair (``courtlink serve``: one process); a Redis URL (``redis://``,
    ``rediss://``, ``redis+cluster://``, ``rediss+cluster://``) gives the Redis pair, records under
    ``<key_prefix>{bus}:``, channels under ``<key_prefix>bus:``. ``process_id`` names this process on the bus
    (its reply channel). Any other scheme is a ValueError; Redis not answering is
    :class:`rooms.backends.redis_bus.BusUnavailable` (a :class:`rooms.bus.BusError`).
    """
    if not url:
        return InProcessBus(), InProcessRecords()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in REDIS_SCHEMES:
        raise ValueError(
            f"unsupported bus URL scheme {scheme!r}: use redis://, rediss://, redis+cluster://, rediss+cluster:// "
            "or none for the in-process bus"
        )
    from rooms.backends.redis_bus import RedisBus, RedisRecords

    records = await RedisRecords.open(url, key_prefix=key_prefix)
    try:
        bus = await RedisBus.open(url, process_id=process_id, key_prefix=key_prefix)
    except BaseException:
        await records.close()
        raise
    return bus, records
