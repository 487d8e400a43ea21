"""Verify a recording session's archive: every byte, every line, the chain, the seal.

``verify_archive(session_dir)`` re-hashes every segment file against the
SHA-256 recorded at capture, checks each manifest line's number, ``prev``
link and ``hash``, the seal's Ed25519 signature over the chain head (with the
key recorded in the seal, and, if given, against a set of trusted keys), and
looks for missing and extra segment files. It stops at the first problem and
names it: file, line, segment and, for damaged bytes, the first bad byte range.

Outcomes (``VerifyResult.status``):

- ``valid``: everything checks and the session is sealed;
- ``unsealed``: everything present checks, but there is no seal yet (a session
  being recorded, or one whose recorder crashed): "complete up to line N, not
  sealed". A trailing partial segment per track (the one being written at the
  crash) is listed in ``partial_files``, not counted as a problem;
- ``invalid``: something does not check; ``problem`` says what and where;
- ``unusable``: the input is not an archive (no directory, no manifest, the
  first line unreadable).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recorder.keys import key_id_of, verify_signature
from recorder.manifest import MANIFEST_NAME, ManifestLine, entry_hash, read_lines
from recorder.segments import BLOCK_SIZE
from recorder.writer import SEGMENTS_DIR, seal_message
from rooms.audit import GENESIS

Progress = Callable[[int, int], None]
"""(bytes hashed so far, total bytes to hash)."""

Status = Literal["valid", "unsealed", "invalid", "unusable"]


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
    """First damaged byte range [start, end) of a segment, when it can be located."""

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


@dataclass
class VerifyResult:
    """What ``verify_archive`` found."""

    status: Status
    path: str
    lines: int = 0
    """Manifest lines that verified."""
    segments: int = 0
    """Segment files that verified."""
    bytes: int = 0
    """Segment bytes hashed."""
    sealed: bool = False
    key_id: str | None = None
    """Key that signed the seal."""
    key_trusted: bool | None = None
    """True/False when a trusted key set was given, None when not checked."""
    session_id: str | None = None
    hearing_id: str | None = None
    problem: Problem | None = None
    partial_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only for a complete, sealed, untampered archive."""
        return self.status == "valid"

    @property
    def exit_code(self) -> int:
        """``courtlink verify``'s exit status: 0 valid, 1 invalid or unsealed, 2 unusable input."""
        return {"valid": 0, "unsealed": 1, "invalid": 1, "unusable": 2}[self.status]

    def summary(self) -> str:
        """One human line."""
        if self.status == "valid":
            trust = {True: "trusted key", False: "UNTRUSTED key", None: "key recorded in the seal"}[self.key_trusted]
            return (
                f"OK valid: {self.lines} lines, {self.segments} segments ({self.bytes} bytes), "
                f"sealed and signed by {self.key_id} ({trust})"
            )
        if self.status == "unsealed":
            partial = f"; partial segment(s): {', '.join(self.partial_files)}" if self.partial_files else ""
            return f"unsealed: complete up to line {self.lines}, not sealed{partial}"
        assert self.problem is not None
        return f"{self.status}: {self.problem.describe()}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the recordings API)."""
        problem: dict[str, Any] | None = None
        if self.problem is not None:
            p = self.problem
            problem = {"reason": p.reason, "file": p.file, "line": p.line, "segment": p.segment}
            if p.byte_range is not None:
                problem["byte_range"] = list(p.byte_range)
        return {
            "status": self.status,
            "ok": self.ok,
            "lines": self.lines,
            "segments": self.segments,
            "sealed": self.sealed,
            "key_id": self.key_id,
            "key_trusted": self.key_trusted,
            "problem": problem,
            "partial_files": self.partial_files,
            "summary": self.summary(),
        }


def _hash_segment(path: Path, progress: Callable[[int], None]) -> tuple[int, str, list[str]]:
    digest = hashlib.sha256()
    blocks: list[str] = []
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(BLOCK_SIZE):
            digest.update(chunk)
            blocks.append(hashlib.sha256(chunk).hexdigest()[:16])
            size += len(chunk)
            progress(len(chunk))
    return size, digest.hexdigest(), blocks


def _first_bad_block(recorded: Any, actual: list[str], size: int, block: int) -> tuple[int, int] | None:
    if not isinstance(recorded, list):
        return None
    for i in range(max(len(recorded), len(actual))):
        want = recorded[i] if i < len(recorded) else None
        have = actual[i] if i < len(actual) else None
        if want != have:
            return i * block, min((i + 1) * block, max(size, (i + 1) * block if want is not None else size))
    return None


def verify_archive(
    path: Path | str,
    progress: Progress | None = None,
    trusted_keys: Iterable[str] | None = None,
) -> VerifyResult:
    """Verify one recording session directory; see the module docstring for the outcomes.

    ``trusted_keys``: base64 raw Ed25519 public keys (as ``/api/v1/recorder/keys``
    lists them); when given, a seal signed by any other key is a problem.
    """
    root = Path(path)
    result = VerifyResult(status="unusable", path=str(root))
    if not root.is_dir():
        result.problem = Problem(f"{root} is not a directory")
        return result
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        result.problem = Problem(f"no {MANIFEST_NAME} in {root}")
        return result
    try:
        lines = read_lines(manifest)
    except OSError as exc:
        result.problem = Problem(f"cannot read the manifest: {exc}", MANIFEST_NAME)
        return result
    if not lines or lines[0].entry is None or lines[0].entry.get("type") != "session":
        reason = "empty manifest" if not lines else "the first line is not a session line"
        result.problem = Problem(reason, MANIFEST_NAME, 1 if lines else None)
        return result
    first = lines[0].entry
    result.session_id = str(first.get("session_id", ""))
    result.hearing_id = str(first.get("hearing_id", ""))
    block = first.get("block_size", BLOCK_SIZE)
    block = block if isinstance(block, int) and block > 0 else BLOCK_SIZE
    trusted = set(trusted_keys) if trusted_keys is not None else None

    def fail(reason: str, line: ManifestLine | None = None, **where: Any) -> VerifyResult:
        result.status = "invalid"
        result.problem = Problem(reason, where.pop("file", MANIFEST_NAME), line.lineno if line else None, **where)
        return result

    # --- pass 1: the chain (cheap), so a reordered or edited manifest is named before any hashing.
    previous = first.get("previous")
    head = GENESIS
    if isinstance(previous, dict) and isinstance(previous.get("last_hash"), str):
        head = previous["last_hash"]
    seal_line: ManifestLine | None = None
    segment_lines: list[tuple[ManifestLine, dict[str, Any]]] = []
    torn_tail = False
    for line in lines:
        entry = line.entry
        if entry is None:
            if line.lineno == len(lines) and not line.raw.endswith(b"\n"):
                torn_tail = True  # the recorder died while writing this line
                break
            return fail(f"line is not valid JSON ({line.error})", line)
        if seal_line is not None:
            return fail("line after the seal (the sealed archive was extended)", line)
        if entry.get("n") != line.lineno:
            return fail(
                f"line number field says {entry.get('n')!r} (lines removed, inserted or reordered before this)", line
            )
        if entry.get("prev") != head:
            return fail("prev does not match the hash of the line before (lines removed, inserted or reordered)", line)
        if entry.get("hash") != entry_hash(entry):
            return fail(f"content of this {entry.get('type', '?')} line does not match its hash (line altered)", line)
        head = str(entry["hash"])
        result.lines = line.lineno
        kind = entry.get("type")
        if kind == "segment":
            segment_lines.append((line, entry))
        elif kind == "seal":
            seal_line = line
    if seal_line is not None:
        assert seal_line.entry is not None
        seal = seal_line.entry
        if seal.get("chain_head") != seal.get("prev") or seal.get("lines") != seal_line.lineno - 1:
            return fail("the seal does not cover the chain before it", seal_line)
        public = str(seal.get("public_key", ""))
        try:
            key_id = key_id_of(base64.b64decode(public, validate=True))
        except ValueError:
            return fail("the seal's public key is not valid base64", seal_line)
        result.key_id = key_id
        if seal.get("key_id") != key_id:
            return fail("the seal's key_id does not match its public key", seal_line)
        if not verify_signature(public, str(seal.get("signature", "")), seal_message(seal)):
            return fail("the seal's signature does not verify (seal forged or re-signed)", seal_line)
        if trusted is not None:
            result.key_trusted = public in trusted
            if not result.key_trusted:
                return fail(f"the seal is signed by key {key_id}, which is not a trusted recorder key", seal_line)
        result.sealed = True

    # The link to the session this one continues (after a recorder restart), when it lies alongside.
    if isinstance(previous, dict):
        sibling = root.parent / str(previous.get("session_id", ""))
        if (sibling / MANIFEST_NAME).is_file():
            count = previous.get("lines")
            earlier = read_lines(sibling / MANIFEST_NAME)
            if not isinstance(count, int) or not 0 < count <= len(earlier):
                return fail(f"the previous session {sibling.name} is shorter than this one's link says", lines[0])
            # Re-walk the earlier chain up to the link: its files are that session's own business.
            first_earlier = earlier[0].entry or {}
            earlier_previous = first_earlier.get("previous")
            link_head = GENESIS
            if isinstance(earlier_previous, dict) and isinstance(earlier_previous.get("last_hash"), str):
                link_head = earlier_previous["last_hash"]
            for earlier_line in earlier[:count]:
                e = earlier_line.entry
                if e is None or e.get("prev") != link_head or e.get("hash") != entry_hash(e):
                    link_head = ""
                    break
                link_head = str(e["hash"])
            if link_head != previous.get("last_hash"):
                return fail(f"the previous session {sibling.name} does not end where this one links to it", lines[0])
        else:
            result.notes.append(f"previous session {previous.get('session_id')} not found alongside; link not checked")

    # --- pass 2: the files.
    listed: dict[str, tuple[ManifestLine, dict[str, Any]]] = {}
    for line, entry in segment_lines:
        rel = entry.get("file")
        if not isinstance(rel, str) or not rel.startswith(f"{SEGMENTS_DIR}/") or ".." in rel.split("/"):
            return fail("segment line names no valid file", line)
        if rel in listed:
            return fail(f"segment file {rel} is listed twice", line, segment=rel)
        listed[rel] = (line, entry)
    total = sum(int(e.get("bytes", 0)) for _, e in listed.values() if isinstance(e.get("bytes"), int))
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    for rel, (line, entry) in listed.items():
        file = root / rel
        if not file.is_file():
            return fail("segment file is missing", line, file=rel, segment=rel)
        try:
            size, digest, blocks = _hash_segment(file, advance)
        except OSError as exc:
            return fail(f"segment file cannot be read ({exc.strerror or exc})", line, file=rel, segment=rel)
        if digest != entry.get("sha256") or size != entry.get("bytes"):
            bad = _first_bad_block(entry.get("blocks"), blocks, size, block)
            if size != entry.get("bytes"):
                reason = f"segment is {size} bytes, {entry.get('bytes')} were recorded at capture"
            else:
                reason = "segment bytes do not match the SHA-256 recorded at capture"
            return fail(reason, line, file=rel, segment=rel, byte_range=bad)
        result.segments += 1
        result.bytes += size

    # Extra files: anything under segments/ that no line lists.
    last_seq: dict[str, int] = {}
    for rel, (_, entry) in listed.items():
        track_dir = rel.split("/")[1]
        seq = entry.get("seq")
        if isinstance(seq, int):
            last_seq[track_dir] = max(last_seq.get(track_dir, 0), seq)
    segments_root = root / SEGMENTS_DIR
    extra: list[str] = []
    if segments_root.is_dir():
        for file in sorted(p for p in segments_root.rglob("*") if p.is_file()):
            rel = file.relative_to(root).as_posix()
            if rel not in listed:
                extra.append(rel)
    for rel in extra:
        parts = rel.split("/")
        stem = parts[-1].split(".")[0]
        is_next = len(parts) == 3 and stem.isdigit() and int(stem) == last_seq.get(parts[1], 0) + 1
        if result.sealed or not is_next:
            return fail("file is not listed in the manifest (added after the fact)", None, file=rel, segment=rel)
        result.partial_files.append(rel)

    if not result.sealed:
        result.status = "unsealed"
        if torn_tail:
            result.notes.append(f"line {len(lines)} is torn (the recorder stopped while writing it)")
        return result
    result.status = "valid"
    return result
