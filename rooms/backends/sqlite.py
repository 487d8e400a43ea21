"""The embedded store: one SQLite file under the data directory.

Every call runs on one dedicated worker thread that owns the only connection,
so the event loop never blocks on disk I/O and calls of this process are
serialized without a lock. Each mutation is one ``BEGIN IMMEDIATE``
transaction (checks, write and audit event together), which also serializes
writers of other processes that open the same file.

Durability: WAL journal with ``synchronous=FULL``. With ``NORMAL`` a WAL
commit survives a crash of the process but may be rolled back by a power cut
or kernel crash; a booking the case system was told about, or an audit event,
must not vanish, so each commit pays one fsync of the WAL.

Schedule lookups: the hearing, site and identity index tables carry the
hearing's start so that "who overlaps [start, end)" is an index range scan on
``starts_at`` in (start - longest stored duration, end) instead of a scan of
every later hearing; the longest duration is kept in ``meta``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from rooms.audit import SYSTEM_STREAM, AuditEvent
from rooms.backends._common import (
    NON_BLOCKING_STATES,
    check_references,
    duration_micros,
    identities,
    micros,
    next_event,
    sorted_sites,
)
from rooms.errors import AlreadyExists, InvalidReference, NotFound, StoreBusy
from rooms.model import Courtroom, Hearing, Site
from rooms.schedule import check
from rooms.store import HearingFilter, Mutation, SiteMutation, Trace

T = TypeVar("T")

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1

BUSY_TIMEOUT = 5.0
"""Seconds a call waits for another connection's write lock before the store answers ``StoreBusy``."""

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sites (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS courtrooms (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites(id),
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hearings (
    id TEXT PRIMARY KEY,
    courtroom_id TEXT NOT NULL REFERENCES courtrooms(id),
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS hearings_by_courtroom ON hearings(courtroom_id, starts_at);
CREATE INDEX IF NOT EXISTS hearings_by_start ON hearings(starts_at);
CREATE TABLE IF NOT EXISTS hearing_sites (
    hearing_id TEXT NOT NULL REFERENCES hearings(id),
    site_id TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    PRIMARY KEY (hearing_id, site_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hearing_sites_by_site ON hearing_sites(site_id, starts_at);
CREATE TABLE IF NOT EXISTS hearing_identities (
    hearing_id TEXT NOT NULL REFERENCES hearings(id),
    identity TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    PRIMARY KEY (hearing_id, identity)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hearing_identities_by_identity ON hearing_identities(identity, starts_at);
CREATE TABLE IF NOT EXISTS audit (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_MAX_DURATION = "max_duration_us"
_BLOCKING = f"state NOT IN ({', '.join(repr(s) for s in NON_BLOCKING_STATES)})"


class SqliteStore:
    """:class:`rooms.store.Store` on one SQLite file; use :meth:`open`."""

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        # One thread owns the connection: sqlite3 objects stay on the thread that made them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="courtlink-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> SqliteStore:
        """Open (creating if needed) the database file at ``path``; wait ``busy_timeout`` s for a locked file."""
        store = cls(path, busy_timeout=busy_timeout)
        await store._call(store._connect)
        log.info("store_opened", backend="sqlite", path=str(path))
        return store

    # -- plumbing ---------------------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            # Another connection held the write lock past the busy timeout: nothing changed, the caller may retry
            # (the REST layer answers 503 store_busy with Retry-After instead of a 500).
            if not _is_busy(exc):
                raise
            log.warning("store_busy", backend="sqlite", error=str(exc))
            raise StoreBusy(f"database busy: {exc}") from exc

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # A 64 MiB page cache and memory-mapped reads: with 100,000 hearings the indexes no longer fit
        # the 2 MiB default, and every page fetched through read() is a system call on the hot path.
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA mmap_size=268435456")
        # Checkpoints copy the WAL into the database and fsync it: done by a background thread, not by
        # whichever booking happens to cross the autocheckpoint threshold.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._conn = conn
        self._checkpointer = _Checkpointer(self.path)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteStore is closed")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one BEGIN IMMEDIATE transaction: all of it or none of it."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (busy) leaves the transaction open: roll it back too, so nothing changes.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(self._write, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(lambda: fn(self._db()))

    def _append(self, conn: sqlite3.Connection, stream: str, trace: Trace) -> AuditEvent:
        row = conn.execute(
            "SELECT body FROM audit WHERE stream = ? ORDER BY seq DESC LIMIT 1",
            (stream,),
        ).fetchone()
        previous = AuditEvent.model_validate_json(row[0]) if row else None
        event = next_event(previous, stream, trace)
        conn.execute(
            "INSERT INTO audit (stream, seq, body) VALUES (?, ?, ?)",
            (stream, event.seq, event.model_dump_json()),
        )
        return event

    # -- sites and courtrooms ---------------------------------------------------------------------------------

    async def create_site(self, site: Site, trace: Trace) -> Site:
        """Store a new site; AlreadyExists if the id is taken."""

        def run(conn: sqlite3.Connection) -> Site:
            if conn.execute("SELECT 1 FROM sites WHERE id = ?", (site.id,)).fetchone():
                raise AlreadyExists(f"site {site.id!r} exists already")
            conn.execute("INSERT INTO sites (id, body) VALUES (?, ?)", (site.id, site.model_dump_json()))
            self._append(conn, SYSTEM_STREAM, trace)
            return site

        return await self._tx(run)

    async def get_site(self, site_id: str) -> Site:
        """The site; NotFound if absent."""
        row = await self._read(lambda c: c.execute("SELECT body FROM sites WHERE id = ?", (site_id,)).fetchone())
        if row is None:
            raise NotFound("site", site_id)
        return Site.model_validate_json(row[0])

    async def list_sites(self) -> Sequence[Site]:
        """Every site, by id."""
        rows = await self._read(lambda c: c.execute("SELECT body FROM sites ORDER BY id").fetchall())
        return [Site.model_validate_json(r[0]) for r in rows]

    async def update_site(self, site_id: str, mutation: SiteMutation) -> Site:
        """Atomically apply ``mutation`` to the stored site (see Store.update_site); runs on the worker thread."""

        def run(conn: sqlite3.Connection) -> Site:
            row = conn.execute("SELECT body FROM sites WHERE id = ?", (site_id,)).fetchone()
            if row is None:
                raise NotFound("site", site_id)
            changed, trace = mutation(Site.model_validate_json(row[0]))
            updated = changed.model_copy(update={"id": site_id})
            conn.execute("UPDATE sites SET body = ? WHERE id = ?", (updated.model_dump_json(), site_id))
            self._append(conn, SYSTEM_STREAM, trace)
            return updated

        return await self._tx(run)

    async def create_courtroom(self, courtroom: Courtroom, trace: Trace) -> Courtroom:
        """Store a new courtroom; AlreadyExists, or InvalidReference for an unknown site."""

        def run(conn: sqlite3.Connection) -> Courtroom:
            if conn.execute("SELECT 1 FROM courtrooms WHERE id = ?", (courtroom.id,)).fetchone():
                raise AlreadyExists(f"courtroom {courtroom.id!r} exists already")
            if not conn.execute("SELECT 1 FROM sites WHERE id = ?", (courtroom.site_id,)).fetchone():
                raise InvalidReference(f"site {courtroom.site_id!r} does not exist")
            conn.execute(
                "INSERT INTO courtrooms (id, site_id, body) VALUES (?, ?, ?)",
                (courtroom.id, courtroom.site_id, courtroom.model_dump_json()),
            )
            self._append(conn, SYSTEM_STREAM, trace)
            return courtroom

        return await self._tx(run)

    async def get_courtroom(self, courtroom_id: str) -> Courtroom:
        """The courtroom; NotFound if absent."""
        row = await self._read(
            lambda c: c.execute("SELECT body FROM courtrooms WHERE id = ?", (courtroom_id,)).fetchone()
        )
        if row is None:
            raise NotFound("courtroom", courtroom_id)
        return Courtroom.model_validate_json(row[0])

    async def list_courtrooms(self) -> Sequence[Courtroom]:
        """Every courtroom, by id."""
        rows = await self._read(lambda c: c.execute("SELECT body FROM courtrooms ORDER BY id").fetchall())
        return [Courtroom.model_validate_json(r[0]) for r in rows]

    # -- hearings ---------------------------------------------------------------------------------------------

    def _check(self, conn: sqlite3.Connection, hearing: Hearing) -> None:
        """References, then schedule conflicts against every overlapping blocking hearing."""
        courtroom = conn.execute("SELECT 1 FROM courtrooms WHERE id = ?", (hearing.courtroom_id,)).fetchone()
        site_ids = sorted_sites(hearing)
        sites: dict[str, Site | None] = dict.fromkeys(site_ids)
        if site_ids:
            marks = ",".join("?" * len(site_ids))
            for (body,) in conn.execute(f"SELECT body FROM sites WHERE id IN ({marks})", site_ids):  # noqa: S608
                site = Site.model_validate_json(body)
                sites[site.id] = site
        terminals = check_references(hearing, courtroom is not None, sites)
        if not hearing.blocks_schedule:
            return
        check(hearing, self._candidates(conn, hearing), terminals)

    def _candidates(self, conn: sqlite3.Connection, hearing: Hearing) -> list[Hearing]:
        start, end = micros(hearing.starts_at), micros(hearing.ends_at)
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (_MAX_DURATION,)).fetchone()
        # Any stored hearing that ends after `start` began after start - (longest stored duration).
        low = start - (row[0] if row else 0)
        site_ids, idents = sorted_sites(hearing), identities(hearing)
        parts = ["SELECT id FROM hearings WHERE courtroom_id = ? AND starts_at >= ? AND starts_at < ?"]
        args: list[Any] = [hearing.courtroom_id, low, end]
        if site_ids:
            marks = ",".join("?" * len(site_ids))
            parts.append(
                f"SELECT hearing_id FROM hearing_sites WHERE site_id IN ({marks}) "  # noqa: S608
                "AND starts_at >= ? AND starts_at < ?"
            )
            args += [*site_ids, low, end]
        if idents:
            marks = ",".join("?" * len(idents))
            parts.append(
                f"SELECT hearing_id FROM hearing_identities WHERE identity IN ({marks}) "  # noqa: S608
                "AND starts_at >= ? AND starts_at < ?"
            )
            args += [*idents, low, end]
        sql = (
            f"SELECT body FROM hearings WHERE id IN ({' UNION '.join(parts)}) "  # noqa: S608
            f"AND ends_at > ? AND id != ? AND {_BLOCKING}"
        )
        args += [start, hearing.id]
        return [Hearing.model_validate_json(r[0]) for r in conn.execute(sql, args)]

    def _save(self, conn: sqlite3.Connection, hearing: Hearing, *, new: bool) -> None:
        start = micros(hearing.starts_at)
        values = (hearing.courtroom_id, start, micros(hearing.ends_at), hearing.state.value, hearing.model_dump_json())
        if new:
            conn.execute(
                "INSERT INTO hearings (courtroom_id, starts_at, ends_at, state, body, id) VALUES (?, ?, ?, ?, ?, ?)",
                (*values, hearing.id),
            )
        else:
            conn.execute(
                "UPDATE hearings SET courtroom_id = ?, starts_at = ?, ends_at = ?, state = ?, body = ? WHERE id = ?",
                (*values, hearing.id),
            )
            conn.execute("DELETE FROM hearing_sites WHERE hearing_id = ?", (hearing.id,))
            conn.execute("DELETE FROM hearing_identities WHERE hearing_id = ?", (hearing.id,))
        conn.executemany(
            "INSERT INTO hearing_sites (hearing_id, site_id, starts_at) VALUES (?, ?, ?)",
            [(hearing.id, s, start) for s in sorted_sites(hearing)],
        )
        conn.executemany(
            "INSERT INTO hearing_identities (hearing_id, identity, starts_at) VALUES (?, ?, ?)",
            [(hearing.id, i, start) for i in identities(hearing)],
        )
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            (_MAX_DURATION, duration_micros(hearing)),
        )

    async def book(self, hearing: Hearing, trace: Trace) -> Hearing:
        """Atomically check references and schedule conflicts, then store (see Store.book)."""

        def run(conn: sqlite3.Connection) -> Hearing:
            if conn.execute("SELECT 1 FROM hearings WHERE id = ?", (hearing.id,)).fetchone():
                raise AlreadyExists(f"hearing {hearing.id!r} exists already")
            self._check(conn, hearing)
            self._save(conn, hearing, new=True)
            self._append(conn, hearing.id, trace)
            return hearing

        return await self._tx(run)

    async def get_hearing(self, hearing_id: str) -> Hearing:
        """The hearing; NotFound if absent."""
        row = await self._read(lambda c: c.execute("SELECT body FROM hearings WHERE id = ?", (hearing_id,)).fetchone())
        if row is None:
            raise NotFound("hearing", hearing_id)
        return Hearing.model_validate_json(row[0])

    async def list_hearings(self, flt: HearingFilter) -> Sequence[Hearing]:
        """Hearings matching ``flt`` (any state), by start time then id."""

        def run(conn: sqlite3.Connection) -> list[Hearing]:
            where: list[str] = []
            args: list[Any] = []
            if flt.courtroom_id is not None:
                where.append("h.courtroom_id = ?")
                args.append(flt.courtroom_id)
            if flt.site_id is not None:
                where.append("h.id IN (SELECT hearing_id FROM hearing_sites WHERE site_id = ?)")
                args.append(flt.site_id)
            if flt.starts_from is not None:
                start = micros(flt.starts_from)
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (_MAX_DURATION,)).fetchone()
                # The starts_at bound lets SQLite range-scan the index; ends_at is the real condition.
                where.append("h.starts_at >= ? AND h.ends_at > ?")
                args += [start - (row[0] if row else 0), start]
            if flt.ends_to is not None:
                where.append("h.starts_at < ?")
                args.append(micros(flt.ends_to))
            sql = "SELECT h.body FROM hearings h"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY h.starts_at, h.id LIMIT ?"
            args.append(max(flt.limit, 0))
            return [Hearing.model_validate_json(r[0]) for r in conn.execute(sql, args)]

        return await self._read(run)

    async def mutate_hearing(self, hearing_id: str, mutation: Mutation) -> Hearing:
        """Atomically apply ``mutation``, re-check references and conflicts, bump ``version``, store.

        ``mutation`` runs on the store's worker thread inside the transaction: it must be a pure
        function of the hearing (no awaiting, no event-loop objects).
        """

        def run(conn: sqlite3.Connection) -> Hearing:
            row = conn.execute("SELECT body FROM hearings WHERE id = ?", (hearing_id,)).fetchone()
            if row is None:
                raise NotFound("hearing", hearing_id)
            current = Hearing.model_validate_json(row[0])
            changed, trace = mutation(current)
            # The store owns identity and version: a mutation cannot move or rewind them.
            updated = changed.model_copy(update={"id": current.id, "version": current.version + 1})
            self._check(conn, updated)
            self._save(conn, updated, new=False)
            self._append(conn, hearing_id, trace)
            return updated

        return await self._tx(run)

    async def load_unchecked(self, hearings: Sequence[Hearing], trace: Trace) -> None:
        """Store new hearings in one transaction without reference or conflict checks.

        For benchmarks and imports of a schedule that is already known to be consistent; each
        hearing still gets its indexes and one audit event (``trace``).
        """

        def run(conn: sqlite3.Connection) -> None:
            for hearing in hearings:
                self._save(conn, hearing, new=True)
                self._append(conn, hearing.id, trace)

        await self._tx(run)

    # -- audit ------------------------------------------------------------------------------------------------

    async def append_audit(self, stream: str, trace: Trace) -> AuditEvent:
        """Append one event to ``stream``'s chain."""
        return await self._tx(lambda conn: self._append(conn, stream, trace))

    async def audit_log(self, stream: str) -> Sequence[AuditEvent]:
        """The whole chain of ``stream``, in order."""
        rows = await self._read(
            lambda c: c.execute("SELECT body FROM audit WHERE stream = ? ORDER BY seq", (stream,)).fetchall()
        )
        return [AuditEvent.model_validate_json(r[0]) for r in rows]

    async def audit_since(self, stream: str, after_seq: int) -> Sequence[AuditEvent]:
        """The events of ``stream`` after ``after_seq``, in order."""
        rows = await self._read(
            lambda c: c.execute(
                "SELECT body FROM audit WHERE stream = ? AND seq > ? ORDER BY seq", (stream, after_seq)
            ).fetchall()
        )
        return [AuditEvent.model_validate_json(r[0]) for r in rows]

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        if self._conn is not None:

            def shut() -> None:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

            await self._call(shut)
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None
        # The worker is idle now (our last call returned): no need to block the loop joining it.
        self._executor.shutdown(wait=False)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """True for "database is locked" / "busy" errors (extended codes included)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class _Checkpointer:
    """A thread that checkpoints the WAL every ``interval`` seconds on its own connection.

    PASSIVE checkpoints never block writers, so bookings do not wait for the database fsync; the
    WAL stays small as long as a checkpoint finishes now and then (one process rarely holds readers).
    """

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="courtlink-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=30.0)
        try:
            while not self._stopping.wait(self._interval):
                self._checkpoint(conn, "PASSIVE")
            self._checkpoint(conn, "TRUNCATE")
        finally:
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection, mode: str) -> None:
        try:
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.OperationalError as exc:
            # Busy with another process's checkpoint: the next round will do it.
            log.warning("sqlite_checkpoint_skipped", mode=mode, error=str(exc))

    def stop(self) -> None:
        """Checkpoint a last time (emptying the WAL), then end the thread; blocks until it has."""
        self._stopping.set()
        self._thread.join()
