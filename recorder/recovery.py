"""After a crash: account for what a crashed recording session left, and seal it as ``interrupted``.

A recorder killed mid-hearing leaves its session without a seal: the manifest
is intact up to its last line (each line is fsynced; at most the last one is
torn), every listed segment is complete, and each track's segment being
written at the crash is a readable Matroska prefix nobody listed. When the
recorder starts (for every hearing: :func:`crashed_sessions`), or at the
latest when it starts the hearing's next session, :func:`seal_interrupted`
(on the writer thread, never on the event loop):

1. takes the crashed session's lock (so no live recorder still writes it);
2. checks the intact prefix: listed segment files must still have the sizes
   the manifest gives (a changed one is damage, not a crash: refused);
   drops a torn last line (no newline: never chained), and notes its size;
3. hashes each unlisted partial file (SHA-256 and per-block hashes), and reads
   it with PyAV to find where its media ends (last packet time plus duration);
4. appends one ``recovered_segment`` line per partial, then a seal with
   ``state: "interrupted"``, ``media_end`` (where the recovered media ends:
   the restart gap of the next session starts there), ``recovered_by`` (the
   session that continues it, or null when the recorder sealed it as it
   started) and ``torn_bytes``, signed with the recorder's current key;
5. removes the stale lock file.

The partial's wall-clock ``start`` is not written anywhere before the crash:
it is estimated (``start_estimated: true``) as the latest of the track's last
listed segment end, the track's last (re)start and the end of the last gap
concerning it, which is exact when the partial followed the segment before it
without a break (the usual case: segments are cut back to back).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

import av

from recorder.chain import (
    ALGORITHM,
    BLOCK_SIZE,
    LOCK_NAME,
    MANIFEST_NAME,
    SEGMENTS_DIR,
    hash_blocks,
    safe_name,
    seal_message,
)
from recorder.keys import SigningKey
from recorder.manifest import ManifestWriter, entry_hash, read_lines, wall


class RecoveryRefused(RuntimeError):
    """The crashed session does not look like a crash left it (damaged, or still being written)."""


def media_span(path: Path) -> tuple[int, float]:
    """(packets, seconds of media) in a possibly truncated segment file: where its last packet ends.

    Demuxes only (no decoding); a file cut short mid-cluster yields what precedes the cut.
    """
    packets = 0
    end = 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams:
                return 0, 0.0
            stream = container.streams[0]
            first: float | None = None
            try:
                for packet in container.demux(stream):
                    if packet.pts is None or packet.time_base is None:
                        continue
                    t = float(packet.pts * packet.time_base)
                    duration = float((packet.duration or 0) * packet.time_base)
                    first = t if first is None else min(first, t)
                    end = max(end, t + duration)
                    packets += 1
            except (av.error.FFmpegError, EOFError):
                pass  # the crash cut the file here
            if first is not None:
                end -= min(first, 0.0)
    except (av.error.FFmpegError, OSError, IndexError):
        return 0, 0.0
    return packets, end


def crashed_sessions(recordings: Path, recorder_id: str) -> list[Path]:
    """Each hearing's latest session directory of ``recorder_id`` under ``recordings`` that has no seal (cheap)."""
    found: list[Path] = []
    if not recordings.is_dir():
        return found
    for recorder_dir in sorted(recordings.glob(f"*/{safe_name(recorder_id)}")):
        sessions = sorted(p for p in recorder_dir.iterdir() if p.is_dir() and not p.is_symlink())
        if not sessions:
            continue
        manifest = sessions[-1] / MANIFEST_NAME
        intact = [line.entry for line in read_lines(manifest) if line.entry is not None] if manifest.is_file() else []
        if not intact or intact[-1].get("type") != "seal":
            found.append(sessions[-1])
    return found


def discard_if_empty(directory: Path) -> bool:
    """Remove a session a crash left before its first line was on disk (nothing recorded, nothing chained).

    Such a directory holds only the lock and, at most, a manifest without one
    whole line; it would otherwise sit in the hearing as a folder no manifest
    accounts for. Returns whether it was removed.
    """
    names = {p.name for p in directory.iterdir()}
    if not names <= {LOCK_NAME, MANIFEST_NAME}:
        return False
    manifest = directory / MANIFEST_NAME
    if manifest.is_file() and b"\n" in manifest.read_bytes():
        return False
    for name in names:
        (directory / name).unlink()
    directory.rmdir()
    return True


def seal_interrupted(
    directory: Path, key: SigningKey, by_session: str | None = None, at: float | None = None
) -> dict[str, Any]:
    """Recover and seal the crashed session in ``directory`` (see the module docstring); returns the seal line."""
    at = time.time() if at is None else at
    lock_path = directory / LOCK_NAME
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecoveryRefused(f"session {directory.name} is still being written") from None
        seal = _recover(directory, key, by_session, at)
        lock_path.unlink()
    finally:
        os.close(lock_fd)
    return seal


def _recover(directory: Path, key: SigningKey, by_session: str | None, at: float) -> dict[str, Any]:
    manifest = directory / MANIFEST_NAME
    lines = read_lines(manifest)
    if not lines or lines[0].entry is None or lines[0].entry.get("type") != "session":
        raise RecoveryRefused(f"{manifest} does not start with a session line")
    head = str(lines[0].entry.get("prev", ""))
    count, intact_bytes = 0, 0
    entries: list[dict[str, Any]] = []
    for line in lines:
        entry = line.entry
        if entry is None or entry.get("prev") != head or entry.get("hash") != entry_hash(entry):
            break
        if entry.get("type") == "seal":
            raise RecoveryRefused(f"session {directory.name} is already sealed")
        head, count = str(entry["hash"]), line.lineno
        intact_bytes += len(line.raw)
        entries.append(entry)
    torn = manifest.stat().st_size - intact_bytes
    if count < len(lines) - 1 or (count == len(lines) - 1 and lines[-1].raw.endswith(b"\n")):
        # More than a torn last line is wrong: that is damage for verify to name, not a crash to paper over.
        raise RecoveryRefused(f"line {count + 1} of {manifest} is broken, not torn by a crash")
    session = entries[0]

    # Per track: what the manifest knew (identity, last listed segment, when it last (re)started or resumed).
    tracks: dict[str, dict[str, Any]] = {}
    listed: set[str] = set()
    media_end = float(session.get("at") or at)
    for entry in entries:
        kind = entry.get("type")
        if kind == "track" and isinstance(entry.get("track"), str):
            info = tracks.setdefault(safe_name(entry["track"]), {"seq": 0, "since": 0.0})
            info.update({k: entry.get(k) for k in ("track", "participant", "source", "kind", "codec")})
            info["since"] = max(info["since"], float(entry.get("at") or 0.0))
        elif kind == "segment" and isinstance(entry.get("file"), str):
            rel = entry["file"]
            listed.add(rel)
            path = directory / rel
            if not path.is_file() or path.stat().st_size != entry.get("bytes"):
                raise RecoveryRefused(f"{rel} is not the size its manifest line {entry.get('n')} records")
            info = tracks.setdefault(rel.split("/")[1], {"seq": 0, "since": 0.0})
            info["seq"] = max(info["seq"], int(entry.get("seq") or 0))
            info["since"] = max(info["since"], float(entry.get("end") or 0.0))
            media_end = max(media_end, float(entry.get("end") or 0.0))
        elif kind == "gap":
            end = float(entry.get("end") or 0.0)
            for info in tracks.values():
                if entry.get("track") in (None, info.get("track")) and entry.get("participant") in (
                    None,
                    info.get("participant"),
                ):
                    info["since"] = max(info["since"], end)
            media_end = max(media_end, end)

    recovered: list[dict[str, Any]] = []
    segments = directory / SEGMENTS_DIR
    for path in sorted(segments.glob("*/*")) if segments.is_dir() else []:
        rel = path.relative_to(directory).as_posix()
        if rel in listed:
            continue
        if path.is_symlink() or not path.is_file():
            raise RecoveryRefused(f"{rel} is not a plain file")
        known = tracks.get(path.parent.name)
        stem = path.name.split(".")[0]
        if known is None or not stem.isdigit() or int(stem) != known["seq"] + 1:
            raise RecoveryRefused(f"{rel} is not the segment its track was writing at the crash")
        info = known
        size, digest, blocks = hash_blocks(path, BLOCK_SIZE)
        packets, seconds = media_span(path)
        start = float(info["since"] or session.get("at") or at)
        end = start + seconds
        media_end = max(media_end, end)
        recovered.append(
            {
                "type": "recovered_segment",
                "at": wall(at),
                "session_id": directory.name,
                "track": info.get("track"),
                "participant": info.get("participant"),
                "source": info.get("source"),
                "kind": info.get("kind"),
                "codec": info.get("codec"),
                "seq": int(stem),
                "file": rel,
                "start": wall(start),
                "end": wall(end),
                "start_estimated": True,
                "frames": packets,
                "bytes": size,
                "sha256": digest,
                "blocks": blocks,
                "detail": "partial segment of a crashed session, readable up to the crash",
            }
        )

    if torn:
        with manifest.open("r+b") as fh:
            fh.truncate(intact_bytes)
            os.fsync(fh.fileno())
    if count and not lines[count - 1].raw.endswith(b"\n"):
        with manifest.open("ab") as fh:  # whole but for its newline: end it, so the next line starts afresh
            fh.write(b"\n")
            os.fsync(fh.fileno())
    writer = ManifestWriter(manifest, prev=head, next_n=count + 1)
    for entry in recovered:
        writer.append(entry)
    seal: dict[str, Any] = {
        "type": "seal",
        "state": "interrupted",
        "at": wall(at),
        "recorder_id": session.get("recorder_id"),
        "session_id": session.get("session_id"),
        "chain_head": writer.head,
        "lines": writer.count,
        "media_end": wall(media_end),
        "recovered_by": by_session,
        "torn_bytes": torn,
        "algorithm": ALGORITHM,
        "key_id": key.key_id,
        "public_key": key.public_b64,
    }
    seal["signature"] = key.sign(seal_message(seal))
    return writer.append(seal)
