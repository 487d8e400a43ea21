"""The recording manifest: one JSON object per line, each chained to the one before.

A recording session's ``manifest.jsonl`` is append-only. Every line is the
canonical JSON (sorted keys, no spaces, UTF-8) of an entry that carries

- ``n``: its 1-based line number,
- ``type``: ``session`` (line 1: hearing, participants with roles and sites,
  link to the previous session), ``track`` (a track starts), ``segment`` (one
  file: track, participant, source, codec, wall-clock ``start``/``end``,
  ``clock`` = ``sender_report`` or ``arrival``, ``bytes``, ``sha256`` computed
  while writing, ``blocks``), ``gap`` (``reason`` in :data:`GAP_REASONS`,
  ``track`` or None for all), ``audit`` (a hearing audit event), ``track_stopped``
  (a participant ended a track: not a gap), ``recovered_segment`` (a crashed
  session's partial file, accounted for), ``stop`` and ``seal`` (last line:
  Ed25519 signature over the chain head),
- ``prev``: the ``hash`` of the line before (the first line of a session that
  continues a crashed one carries that session's last hash, else 64 zeros),
- ``hash``: SHA-256 (hex) over the canonical JSON of every other field.

So editing, dropping, inserting or reordering any line breaks the chain at that
line, and :mod:`recorder.verify` names it. Times are Unix seconds (floats,
microsecond precision) so that they hash the same on every platform.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# The format's primitives live in the standalone module the verifier uses; re-exported here for the writer.
from recorder.chain import FORMAT, GENESIS, MANIFEST_NAME, ManifestLine, canonical, entry_hash, read_lines

GAP_REASONS = frozenset({"recess", "consultation_excluded", "recorder_restart", "track_lost", "disk", "node_lost"})
"""Why a stretch of a hearing (or of one track) has no segments."""
PERSON_GAP_REASONS = frozenset(
    {"no_media", "left", "removed", "network", "node_lost", "waiting", "muted", "not_publishing"}
)
"""Why one person's source (a gap line with ``participant`` and ``source``) has no segments: ``no_media`` (they are in
the courtroom and should send it, nothing arrives), ``left``, ``removed``, ``network`` (connection lost, within the
grace period), ``node_lost``, ``waiting`` (in a lobby), ``muted`` (by the court), ``not_publishing`` (turned off)."""


def wall(t: float) -> float:
    """A wall-clock time as stored in the manifest (microsecond precision)."""
    return round(t, 6)


class ManifestWriter:
    """Appends chained lines to a manifest; each line is on disk (fsync) before ``append`` returns.

    When a write fails (a full disk), the line stays queued in memory and is
    written, in order, with the next ``append``; the chain itself is computed
    in memory, so it never forks. Not thread-safe: one writer thread owns it.
    """

    def __init__(self, path: Path, prev: str = GENESIS, next_n: int = 1) -> None:
        self.path = path
        self.head = prev
        """Hash of the last line appended (written or still pending)."""
        self.count = next_n - 1
        """Number of lines in the chain so far."""
        self._pending: list[bytes] = []

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Chain ``entry`` (adds ``n``, ``prev``, ``hash``), write it, and return the stored form.

        Raises ``OSError`` when the line could not be written (it is kept and retried).
        """
        self.count += 1
        draft = dict(entry)
        draft["n"] = self.count
        draft["prev"] = self.head
        # Round-trip through canonical JSON so that what is hashed is exactly what is read back.
        stored: dict[str, Any] = json.loads(canonical(draft))
        stored["hash"] = entry_hash(stored)
        self.head = stored["hash"]
        self._pending.append(canonical(stored) + b"\n")
        self.flush()
        return stored

    def flush(self) -> None:
        """Write every pending line; raises ``OSError`` if the disk refuses them."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        self._pending.clear()

    @property
    def pending(self) -> int:
        """Lines chained but not yet on disk."""
        return len(self._pending)


def last_intact(path: Path) -> tuple[int, str, float]:
    """(line count, last hash, latest time) of a manifest's intact prefix, for continuing a crashed session."""
    count, head, latest = 0, GENESIS, 0.0
    for line in read_lines(path):
        entry = line.entry
        if line.lineno == 1 and entry is not None and isinstance(entry.get("prev"), str):
            head = entry["prev"]  # a session continuing another starts from that one's last hash
        if entry is None or entry.get("hash") != entry_hash(entry) or entry.get("prev") != head:
            break
        count, head = line.lineno, str(entry["hash"])
        # Media recorded so far ends with the last segment or gap (or the session's start).
        key = {"segment": "end", "gap": "end", "session": "at"}.get(str(entry.get("type")))
        value = entry.get(key) if key else None
        if isinstance(value, int | float):
            latest = max(latest, float(value))
    return count, head, latest


__all__ = [
    "FORMAT",
    "GAP_REASONS",
    "MANIFEST_NAME",
    "ManifestLine",
    "ManifestWriter",
    "entry_hash",
    "last_intact",
    "read_lines",
    "wall",
]
