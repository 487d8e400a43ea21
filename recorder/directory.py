"""The recorder's side of :class:`rooms.directory.RecordingDirectory`: archives on the local disk.

Listing verifies sealed sessions, which re-hashes every segment: the result is
cached per session and reused while no file of the session changed size or
modification time (stat is cheap next to hashing). ``courtlink verify`` always
re-hashes everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recorder.archive import list_recordings
from recorder.keys import public_keys
from recorder.recorder import key_dir_of
from rooms.directory import RecorderKey, RecordingInfo


class ArchiveDirectory:
    """Recordings and recorder keys under one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._verified: dict[str, tuple[int, dict[str, Any] | None]] = {}

    async def recordings(self, hearing_id: str) -> Sequence[RecordingInfo]:
        """The hearing's recording sessions, verified (in a worker thread)."""
        return await asyncio.to_thread(self._recordings, hearing_id)

    async def public_keys(self) -> Sequence[RecorderKey]:
        """Every recorder key under this data directory."""
        keys = await asyncio.to_thread(public_keys, key_dir_of(self._data_dir))
        return [RecorderKey.model_validate(k) for k in keys]

    def _recordings(self, hearing_id: str) -> list[RecordingInfo]:
        out: list[RecordingInfo] = []
        for entry in list_recordings(self._data_dir, hearing_id, verify=False):
            path = Path(str(entry["path"]))
            if entry["state"] != "recording":
                entry["verification"] = self._verification(path)
            out.append(RecordingInfo.model_validate({k: v for k, v in entry.items() if k != "path"}))
        return out

    def _verification(self, session_dir: Path) -> dict[str, Any] | None:
        from recorder.trust import data_dir_keys
        from recorder.verify import verify_archive

        keys = data_dir_keys(self._data_dir)
        stamp = hash((_stamp(session_dir), tuple(k.public_key for k in keys)))
        cached = self._verified.get(str(session_dir))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        result = verify_archive(session_dir, trusted_keys=keys).as_dict()
        self._verified[str(session_dir)] = (stamp, result)
        return result


def _stamp(session_dir: Path) -> int:
    """A fingerprint of every file's name, size and modification time in a session."""
    parts = []
    for path in sorted(session_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            parts.append((str(path.relative_to(session_dir)), stat.st_size, stat.st_mtime_ns))
    return hash(tuple(parts))
