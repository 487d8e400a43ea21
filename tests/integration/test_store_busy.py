"""The SQLite store answers StoreBusy, not an OperationalError, when another connection holds the write lock."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rooms.backends.sqlite import SqliteStore
from rooms.errors import NotFound, StoreBusy
from rooms.model import Courtroom, Site, SiteKind
from rooms.store import Trace
from tests.integration.test_store_contract import hearing

ADMIN = Trace(actor="key:admin", action="site_created")
CLERK = Trace(actor="key:clerk", action="hearing_booked")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A SQLite store with one court and courtroom, waiting only 0.2 s for a locked file."""
    s = await SqliteStore.open(tmp_path / "busy.sqlite3", busy_timeout=0.2)
    await s.create_site(Site(id="court1", name="Prefecture Court", kind=SiteKind.court), ADMIN)
    await s.create_courtroom(Courtroom(id="room1", site_id="court1", name="Courtroom 1"), ADMIN)
    yield s
    await s.close()


async def test_book_under_foreign_write_lock_is_store_busy(store: SqliteStore) -> None:
    """A booking while another connection holds BEGIN IMMEDIATE raises StoreBusy, changes nothing, then works."""
    other = sqlite3.connect(store.path, isolation_level=None, timeout=0.1)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusy):
            await store.book(hearing("h1", "room1", 0, 1), CLERK)
        other.execute("ROLLBACK")
    finally:
        other.close()
    with pytest.raises(NotFound):
        await store.get_hearing("h1")
    booked = await store.book(hearing("h1", "room1", 0, 1), CLERK)
    assert (await store.get_hearing("h1")) == booked
