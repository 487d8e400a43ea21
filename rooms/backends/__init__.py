"""Store backends: the only modules that touch SQLite or Redis.

:func:`open_store` is the one factory that picks a backend from a URL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
