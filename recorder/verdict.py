"""What verify found: the verdict types of :mod:`recorder.verify` (standard library only).

:class:`VerifyResult` for one recording session, :class:`HearingResult` for a
hearing directory, :class:`Problem` for the first thing that does not verify.
Their text and JSON forms begin with whose hearing it is and when.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from recorder.trust import format_time

Status = Literal["valid", "unsealed", "invalid", "unusable"]

RANK: dict[str, int] = {"valid": 0, "unsealed": 1, "invalid": 2, "unusable": 3}
"""Statuses from best to worst."""

EXIT_CODE: dict[str, int] = {"valid": 0, "unsealed": 1, "invalid": 1, "unusable": 2}
"""``courtlink verify``'s exit status for each status."""


@dataclass(frozen=True)
class Problem:
    """The first thing that does not verify, and where."""

    reason: str
    file: str = ""
    """Path relative to the session directory (``manifest.jsonl`` or a segment file)."""
    line: int | None = None
    """Manifest line number (1-based), when a line is concerned."""
    segment: str | None = None
    """Segment file named by the line, when a segment is concerned."""
    byte_range: tuple[int, int] | None = None
    """First damaged byte range [start, end) of a segment, always inside the file, when it can be located."""

    def describe(self) -> str:
        """One human line: where, then why."""
        where = []
        if self.file:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.segment and self.segment != self.file:
            where.append(f"segment {self.segment}")
        if self.byte_range is not None:
            where.append(f"bytes {self.byte_range[0]}-{self.byte_range[1] - 1}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"reason": self.reason, "file": self.file, "line": self.line, "segment": self.segment}
        if self.byte_range is not None:
            out["byte_range"] = list(self.byte_range)
        return out


@dataclass
class VerifyResult:
    """What ``verify_archive`` found about one session."""

    status: Status
    path: str
    hearing_id: str | None = None
    case_number: str | None = None
    session_id: str | None = None
    recorder_id: str | None = None
    first_at: float | None = None
    """Wall clock (Unix seconds) of the session's start."""
    last_at: float | None = None
    """Wall clock of the last media, gap or event the manifest records."""
    lines: int = 0
    """Manifest lines that verified."""
    segments: int = 0
    """Segment files that verified (recovered partials included)."""
    recovered: int = 0
    """Of which recovered partials of a crash."""
    bytes: int = 0
    """Segment bytes hashed."""
    sealed: bool = False
    seal_state: str | None = None
    """``complete`` or ``interrupted`` once sealed."""
    key_id: str | None = None
    """Key that signed the seal."""
    key_trusted: bool | None = None
    """True: a trusted key signed; None: not checked (``any_key``, integrity only); False: untrusted."""
    previous_session_id: str | None = None
    problem: Problem | None = None
    partial_files: list[str] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    """The manifest's gap lines (reason, start, end, track, participant), in order."""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only for a sealed, untampered session (signed by a trusted key unless the check was waived)."""
        return self.status == "valid"

    @property
    def exit_code(self) -> int:
        """``courtlink verify``'s exit status: 0 valid, 1 invalid or unsealed, 2 unusable input."""
        return EXIT_CODE[self.status]

    def hearing_gaps(self) -> list[dict[str, Any]]:
        """Gaps of the whole recording (no track or person named): recess, restart after a crash..."""
        return [g for g in self.gaps if g.get("track") is None and g.get("participant") is None]

    def identity(self) -> list[str]:
        """The lines that open the text report: whose hearing, which session, when."""
        return [
            f"hearing {self.hearing_id or '?'}  case {self.case_number or '?'}",
            f"session {self.session_id or '?'}  recorder {self.recorder_id or '?'}",
            f"from {format_time(self.first_at) or '?'}  to {format_time(self.last_at) or '?'}",
        ]

    def summary(self) -> str:
        """One human line."""
        if self.status == "valid":
            trust = {True: "trusted key", None: "INTEGRITY ONLY: key not checked against trusted keys"}.get(
                self.key_trusted, "UNTRUSTED key"
            )
            state = "sealed as INTERRUPTED (the recorder crashed)" if self.seal_state == "interrupted" else "sealed"
            recovered = f", {self.recovered} recovered after a crash" if self.recovered else ""
            return (
                f"OK valid: {self.lines} lines, {self.segments} segments{recovered} ({self.bytes} bytes), "
                f"{state} and signed by {self.key_id} ({trust})"
            )
        if self.status == "unsealed":
            partial = f"; partial segment(s): {', '.join(self.partial_files)}" if self.partial_files else ""
            return f"unsealed: complete up to line {self.lines}, not sealed{partial}"
        assert self.problem is not None
        return f"{self.status}: {self.problem.describe()}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: identity first, then the verdict."""
        return {
            "hearing_id": self.hearing_id,
            "case_number": self.case_number,
            "session_id": self.session_id,
            "recorder_id": self.recorder_id,
            "first_at": format_time(self.first_at) or None,
            "last_at": format_time(self.last_at) or None,
            "status": self.status,
            "ok": self.ok,
            "lines": self.lines,
            "segments": self.segments,
            "recovered": self.recovered,
            "bytes": self.bytes,
            "sealed": self.sealed,
            "seal_state": self.seal_state,
            "key_id": self.key_id,
            "key_trusted": self.key_trusted,
            "previous_session_id": self.previous_session_id,
            "problem": self.problem.as_dict() if self.problem is not None else None,
            "partial_files": self.partial_files,
            "gaps": self.gaps,
            "notes": self.notes,
            "summary": self.summary(),
            "path": self.path,
        }


@dataclass
class HearingResult:
    """What ``verify_hearing`` found: every session, and the first problem across them."""

    status: Status
    path: str
    hearing_id: str | None = None
    case_number: str | None = None
    sessions: list[VerifyResult] = field(default_factory=list)
    problem: Problem | None = None
    """A problem of the hearing as a whole (stray files, a broken order); else the worst session's."""

    @property
    def ok(self) -> bool:
        """True when every session is valid and they chain in order."""
        return self.status == "valid"

    @property
    def exit_code(self) -> int:
        """0 valid, 1 invalid or unsealed, 2 unusable."""
        return EXIT_CODE[self.status]

    @property
    def first_at(self) -> float | None:
        """The earliest session start."""
        times = [s.first_at for s in self.sessions if s.first_at is not None]
        return min(times) if times else None

    @property
    def last_at(self) -> float | None:
        """The latest time any session records."""
        times = [s.last_at for s in self.sessions if s.last_at is not None]
        return max(times) if times else None

    def hearing_gaps(self) -> list[dict[str, Any]]:
        """Gaps of the whole recording (no track named): recess, restart after a crash..."""
        return [g for s in self.sessions for g in s.hearing_gaps()]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: identity first, then the verdict, then each session."""
        return {
            "hearing_id": self.hearing_id,
            "case_number": self.case_number,
            "first_at": format_time(self.first_at) or None,
            "last_at": format_time(self.last_at) or None,
            "status": self.status,
            "ok": self.ok,
            "problem": self.problem.as_dict() if self.problem is not None else None,
            "sessions": [s.as_dict() for s in self.sessions],
            "path": self.path,
        }
