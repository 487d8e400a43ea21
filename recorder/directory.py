"""The recorder's side of :class:`protocol.directory.RecordingDirectory`: archives on the local disk.

Listing verifies sealed sessions, which re-hashes every segment: the result is
cached per session and reused while no file of the session changed size or
modification time (stat is cheap next to hashing). ``courtlink verify`` always
re-hashes everything.

The cache is bounded (least recently used sessions go first, and sessions no
longer listed for their hearing are dropped) and single-flight: concurrent
listings of one hearing hash each session once, the others wait for that
result instead of hashing the same files again.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.directory import RecorderKey, RecordingInfo
from recorder.archive import list_recordings
from recorder.keys import public_keys
from recorder.recorder import key_dir_of, recordings_root
from recorder.writer import safe_name

MAX_CACHED_SESSIONS = 256
"""Verification results kept (one per session, least recently used dropped first)."""

_STRIPES = 16
"""Locks that single-flight verification: one session always takes the same lock."""


class ArchiveDirectory:
    """Recordings and recorder keys under one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._verified: OrderedDict[str, tuple[int, dict[str, Any] | None]] = OrderedDict()
        self._cache_lock = threading.Lock()
        """Guards ``_verified`` (listings run in worker threads)."""
        self._flights = [threading.Lock() for _ in range(_STRIPES)]

    async def recordings(self, hearing_id: str) -> Sequence[RecordingInfo]:
        """The hearing's recording sessions, verified (in a worker thread)."""
        return await asyncio.to_thread(self._recordings, hearing_id)

    async def public_keys(self) -> Sequence[RecorderKey]:
        """Every recorder key under this data directory."""
        keys = await asyncio.to_thread(public_keys, key_dir_of(self._data_dir))
        return [RecorderKey.model_validate(k) for k in keys]

    def _recordings(self, hearing_id: str) -> list[RecordingInfo]:
        out: list[RecordingInfo] = []
        listed: set[str] = set()
        for entry in list_recordings(self._data_dir, hearing_id, verify=False):
            path = Path(str(entry["path"]))
            listed.add(str(path))
            if entry["state"] != "recording":
                entry["verification"] = self._verification(path)
            out.append(RecordingInfo.model_validate({k: v for k, v in entry.items() if k != "path"}))
        self._prune(recordings_root(self._data_dir) / safe_name(hearing_id), listed)
        return out

    def _verification(self, session_dir: Path) -> dict[str, Any] | None:
        from recorder.trust import data_dir_keys
        from recorder.verify import verify_archive

        key = str(session_dir)
        with self._flights[hash(key) % _STRIPES]:
            # Whoever waited here while another thread hashed this session finds its result now.
            keys = data_dir_keys(self._data_dir)
            stamp = hash((_stamp(session_dir), tuple(k.public_key for k in keys)))
            with self._cache_lock:
                cached = self._verified.get(key)
                if cached is not None and cached[0] == stamp:
                    self._verified.move_to_end(key)
                    return cached[1]
            result = verify_archive(session_dir, trusted_keys=keys).as_dict()
            with self._cache_lock:
                self._verified[key] = (stamp, result)
                self._verified.move_to_end(key)
                while len(self._verified) > MAX_CACHED_SESSIONS:
                    self._verified.popitem(last=False)
            return result

    def _prune(self, hearing_dir: Path, listed: set[str]) -> None:
        """Forget cached sessions of the hearing in ``hearing_dir`` that are no longer listed."""
        with self._cache_lock:
            for key in [k for k in self._verified if Path(k).is_relative_to(hearing_dir) and k not in listed]:
                del self._verified[key]

    @property
    def cached_sessions(self) -> int:
        """How many verification results are cached (for tests and metrics)."""
        return len(self._verified)


def _stamp(session_dir: Path) -> int:
    """A fingerprint of every file's name, size and modification time in a session."""
    parts = []
    for path in sorted(session_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            parts.append((str(path.relative_to(session_dir)), stat.st_size, stat.st_mtime_ns))
    return hash(tuple(parts))
