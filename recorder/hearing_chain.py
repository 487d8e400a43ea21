"""Verify a hearing directory: every recorder's sessions, each recorder's as one chain in order.

Standalone like :mod:`recorder.verify` (standard library and ``cryptography`` only).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from recorder.chain import MANIFEST_NAME
from recorder.verdict import RANK, HearingResult, Problem, VerifyResult
from recorder.verify import Progress, TrustInput, trusted_set, verify_archive


def session_dirs_of(hearing_dir: Path) -> tuple[list[Path], Problem | None]:
    """The session directories of a hearing directory, by recorder then time; or what does not belong there."""
    sessions: list[Path] = []
    for recorder in sorted(hearing_dir.iterdir()):
        mode = os.lstat(recorder).st_mode
        if not stat.S_ISDIR(mode):
            what = "symlink" if stat.S_ISLNK(mode) else "file"
            return [], Problem(f"{what} in the hearing folder where only recorder folders belong", recorder.name)
        for session in sorted(recorder.iterdir()):
            rel = f"{recorder.name}/{session.name}"
            mode = os.lstat(session).st_mode
            if not stat.S_ISDIR(mode) or not os.path.lexists(session / MANIFEST_NAME):
                what = "symlink" if stat.S_ISLNK(mode) else "file" if not stat.S_ISDIR(mode) else "folder"
                return [], Problem(f"{what} in a recorder folder where only recording sessions belong", rel)
            sessions.append(session)
    return sessions, None


def verify_hearing(
    path: Path | str,
    progress: Progress | None = None,
    trusted_keys: TrustInput = None,
    *,
    any_key: bool = False,
    hearing_id: str | None = None,
) -> HearingResult:
    """Verify every session of a hearing directory (``recordings/<hearing_id>``), each recorder's as one chain.

    Every session must verify; within a recorder, the first continues nothing
    and each later one continues the one before it (its ``previous`` link),
    so a removed, added or reordered session is named.
    """
    root = Path(path)
    result = HearingResult(status="unusable", path=str(root))
    if os.path.islink(root) or not root.is_dir():
        result.problem = Problem(f"{root} is not a hearing directory")
        return result
    try:
        sessions, problem = session_dirs_of(root)
    except OSError as exc:
        result.problem = Problem(f"cannot list {root} ({exc.strerror or exc})")
        return result
    if problem is not None:
        result.status, result.problem = "invalid", problem
        return result
    if not sessions:
        result.problem = Problem(f"{root} holds no recording session")
        return result
    keys = trusted_set(trusted_keys, sessions[0]) if not any_key else None
    by_recorder: dict[str, list[VerifyResult]] = {}
    for session in sessions:
        verified = verify_archive(session, progress, keys, any_key=any_key, hearing_id=hearing_id, link_required=True)
        result.sessions.append(verified)
        by_recorder.setdefault(session.parent.name, []).append(verified)
    first = result.sessions[0]
    result.hearing_id, result.case_number = first.hearing_id, first.case_number
    for recorder, chain in by_recorder.items():
        for i, session_result in enumerate(chain):
            want = Path(chain[i - 1].path).name if i else None
            if session_result.status != "unusable" and session_result.previous_session_id != want:
                result.status = "invalid"
                name = Path(session_result.path).name
                result.problem = Problem(
                    f"continues {session_result.previous_session_id or 'nothing'}, but the session before it "
                    f"is {want or 'none'} (a session removed, added or reordered)",
                    f"{recorder}/{name}/{MANIFEST_NAME}",
                    1,
                )
                return result
    worst = max(result.sessions, key=lambda s: RANK[s.status])
    # Inside a hearing, a session that is not even an archive is damage to the hearing, not unusable input.
    result.status = "invalid" if worst.status == "unusable" else worst.status
    if worst.problem is not None:
        rel = Path(worst.path).relative_to(root).as_posix()
        p = worst.problem
        result.problem = Problem(p.reason, f"{rel}/{p.file}" if p.file else rel, p.line, p.segment, p.byte_range)
    return result
