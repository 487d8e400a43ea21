"""The recordings of a hearing as the API lists them: sessions, their state and verification.

A session is ``recording`` while its recorder holds the session's lock file
(an ``flock`` the kernel drops when the process dies), ``sealed`` once its
manifest ends with a seal, ``interrupted`` once a restarted recorder has sealed
what a crash left of it (a seal with ``state: interrupted``), and ``failed``
when none holds (the recorder stopped or crashed and has not been restarted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recorder.manifest import MANIFEST_NAME, read_lines
from recorder.recorder import recordings_root
from recorder.trust import data_dir_keys
from recorder.verify import verify_archive
from recorder.writer import safe_name, session_locked


def session_dirs(data_dir: Path, hearing_id: str) -> list[Path]:
    """Every recording session directory of a hearing, all recorders, oldest first per recorder."""
    base = recordings_root(Path(data_dir)) / safe_name(hearing_id)
    if not base.is_dir():
        return []
    return sorted(p.parent for p in base.glob(f"*/*/{MANIFEST_NAME}"))


def list_recordings(data_dir: Path, hearing_id: str, verify: bool = True) -> list[dict[str, Any]]:
    """The hearing's recording sessions for ``GET /api/v1/hearings/{id}/recordings``.

    Each: ``session_id``, ``recorder_id``, ``state`` (recording, sealed, failed),
    ``started_at``, ``ended_at``, ``segments``, ``bytes``, ``previous_session_id``,
    ``gaps`` (reason counts), ``path``, and ``verification`` (against the data dir's keys; the
    :class:`~recorder.verify.VerifyResult` as a dict; None while recording or
    when ``verify`` is False). Verification re-hashes every file: blocking,
    call it in a worker thread.
    """
    out: list[dict[str, Any]] = []
    keys = data_dir_keys(Path(data_dir)) if verify else []
    for directory in session_dirs(data_dir, hearing_id):
        lines = [line.entry for line in read_lines(directory / MANIFEST_NAME) if line.entry is not None]
        first = lines[0] if lines else {}
        sealed = bool(lines) and lines[-1].get("type") == "seal"
        state = "sealed" if sealed else "recording" if session_locked(directory) else "failed"
        if sealed and lines[-1].get("state") == "interrupted":
            state = "interrupted"
        segments = [e for e in lines if e.get("type") == "segment"]
        gaps: dict[str, int] = {}
        for e in lines:
            if e.get("type") == "gap":
                gaps[str(e.get("reason"))] = gaps.get(str(e.get("reason")), 0) + 1
        ends = [float(e[k]) for e in lines for k in ("end", "at") if isinstance(e.get(k), int | float)]
        previous = first.get("previous")
        out.append(
            {
                "session_id": first.get("session_id", directory.name),
                "recorder_id": first.get("recorder_id", directory.parent.name),
                "state": state,
                "started_at": first.get("at"),
                "ended_at": max(ends) if ends and state != "recording" else None,
                "segments": len(segments),
                "bytes": sum(int(e.get("bytes", 0)) for e in segments),
                "previous_session_id": previous.get("session_id") if isinstance(previous, dict) else None,
                "gaps": gaps,
                "path": str(directory),
                "verification": verify_archive(directory, trusted_keys=keys).as_dict()
                if verify and state != "recording"
                else None,
            }
        )
    return out
