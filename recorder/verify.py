"""Verify a recording: every byte, every line, every file, the chain, the seal, the key and whose hearing it is.

Standalone: this module imports only the standard library, ``cryptography``
and :mod:`recorder.chain`, :mod:`recorder.trust`, :mod:`recorder.verdict` (which import nothing else),
so a third party can read and run it alone (``python -m recorder.verify``).
The format and the trust model are in ``docs/archive.md``.

``verify_archive(session_dir)`` checks one recording session:

- identity: the session line names the hearing, recorder and session of the
  directory it lies in (``recordings/<hearing_id>/<recorder_id>/<session_id>``)
  and, if given, the expected hearing;
- the chain: each manifest line's number, ``prev`` link and ``hash``;
- the seal: its Ed25519 signature over the chain head, by a *trusted* key valid
  at the seal's time and belonging to the session's recorder;
- every file: each listed segment and recovered partial re-hashed (first
  damaged byte range named); any file or folder the manifest does not list,
  and any symlink, makes the session invalid.

:func:`recorder.hearing_chain.verify_hearing` checks every recorder's sessions
of a hearing, each recorder's sessions as one chain in order (each continuing
the one before). The verdict types are in :mod:`recorder.verdict`.

Outcomes (``status``): ``valid`` (sealed, complete or ``interrupted``, and
everything checks), ``unsealed`` (everything present checks, no seal yet),
``invalid`` (``problem`` says what and where), ``unusable`` (not an archive).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from recorder.chain import (
    BLOCK_SIZE,
    FORMAT,
    GENESIS,
    LOCK_NAME,
    MANIFEST_NAME,
    SEAL_STATES,
    SEGMENTS_DIR,
    ManifestLine,
    entry_hash,
    hash_blocks,
    key_id_of,
    open_regular,
    parse_lines,
    safe_name,
    seal_message,
    verify_signature,
)
from recorder.trust import TrustedKey, data_dir_keys, format_time, key_from_record
from recorder.verdict import HearingResult, Problem, Status, VerifyResult

Progress = Callable[[int, int], None]
"""(bytes hashed so far, total bytes to hash)."""

TrustInput = Iterable[str | TrustedKey | dict[str, Any]] | None

_LOCK_MAX = 32
"""A lock file left by a crash between seal and its removal holds a process id, nothing more."""


class _Fail(Exception):
    def __init__(self, problem: Problem, status: Status = "invalid") -> None:
        super().__init__(problem.reason)
        self.problem = problem
        self.status = status


def trusted_set(trusted_keys: TrustInput, root: Path) -> list[TrustedKey] | None:
    """The trust set: as given, or (None) the keys of the data directory the archive lies in, if it does."""
    if trusted_keys is None:
        # recordings/<hearing>/<recorder>/<session>: the data dir is three levels above "recordings"'s children.
        parents = root.absolute().parents
        if len(parents) >= 4 and parents[2].name == "recordings":
            keys = data_dir_keys(parents[3])
            return keys or []
        return []
    out: list[TrustedKey] = []
    for key in trusted_keys:
        out.append(key if isinstance(key, TrustedKey) else key_from_record(key, "trusted keys"))
    return out


def _first_bad_block(recorded: Any, actual: list[str], size: int, block: int) -> tuple[int, int] | None:
    """The first block whose hash differs, clipped to the file; None when the damage lies past its end."""
    if not isinstance(recorded, list):
        return None
    for i in range(max(len(recorded), len(actual))):
        want = recorded[i] if i < len(recorded) else None
        have = actual[i] if i < len(actual) else None
        if want != have:
            start, end = i * block, min((i + 1) * block, size)
            return (start, end) if start < end else None
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _valid_rel(rel: Any) -> bool:
    """``segments/<track>/<file>``: three plain components."""
    if not isinstance(rel, str):
        return False
    parts = rel.split("/")
    return (
        len(parts) == 3
        and parts[0] == SEGMENTS_DIR
        and all(p and p not in (".", "..") and safe_name(p) == p for p in parts[1:])
    )


def _walk(root: Path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(files, folders, others) under ``root`` (relative POSIX paths), never following a symlink."""
    files: list[str] = []
    folders: list[str] = []
    others: list[tuple[str, str]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            for entry in it:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    others.append((rel, "symlink"))
                elif stat.S_ISDIR(mode):
                    folders.append(rel)
                    stack.append(rel)
                elif stat.S_ISREG(mode):
                    files.append(rel)
                else:
                    others.append((rel, "special file"))
    return sorted(files), sorted(folders), sorted(others)


def verify_archive(
    path: Path | str,
    progress: Progress | None = None,
    trusted_keys: TrustInput = None,
    *,
    any_key: bool = False,
    hearing_id: str | None = None,
    link_required: bool = False,
) -> VerifyResult:
    """Verify one recording session directory; see the module docstring for the checks and outcomes.

    ``trusted_keys``: the keys a seal may be signed by (:class:`~recorder.trust.TrustedKey`, key records as
    ``/api/v1/recorder/keys`` lists them, or base64 public keys). None: the public keys of the data directory
    the archive lies in (``<data_dir>/recordings/...``), if any; the command line never relies on that.
    With no trusted key at all, a seal is "by an untrusted key" unless ``any_key`` waives the check
    (integrity only). ``hearing_id``: the hearing the session must belong to. ``link_required``: the
    session it continues must lie alongside (set when verifying a hearing).
    """
    root = Path(path)
    result = VerifyResult(status="unusable", path=str(root))
    try:
        _verify(root, result, progress, trusted_keys, any_key, hearing_id, link_required)
    except _Fail as fail:
        result.status = fail.status
        result.problem = fail.problem
    return result


def _verify(
    root: Path,
    result: VerifyResult,
    progress: Progress | None,
    trusted_keys: TrustInput,
    any_key: bool,
    hearing_id: str | None,
    link_required: bool,
) -> None:
    try:
        root_mode = os.lstat(root).st_mode
    except OSError:
        raise _Fail(Problem(f"{root} does not exist"), "unusable") from None
    if stat.S_ISLNK(root_mode):
        raise _Fail(Problem(f"{root} is a symlink: refused (an archive is verified where it lies)"))
    if not stat.S_ISDIR(root_mode):
        raise _Fail(Problem(f"{root} is not a directory"), "unusable")
    try:
        fd = open_regular(root / MANIFEST_NAME)
    except FileNotFoundError:
        raise _Fail(
            Problem(f"no {MANIFEST_NAME} in {root} (give a session directory or a hearing directory)"), "unusable"
        ) from None
    except OSError as exc:
        if os.path.islink(root / MANIFEST_NAME):
            raise _Fail(Problem("the manifest is a symlink: refused", MANIFEST_NAME)) from None
        raise _Fail(Problem(f"cannot read the manifest: {exc.strerror}", MANIFEST_NAME), "unusable") from None
    with os.fdopen(fd, "rb") as fh:
        lines = parse_lines(fh.read())
    if not lines or lines[0].entry is None or lines[0].entry.get("type") != "session":
        reason = "empty manifest" if not lines else "the first line is not a session line"
        raise _Fail(Problem(reason, MANIFEST_NAME, 1 if lines else None), "unusable")
    first = lines[0].entry
    if first.get("format") != FORMAT:
        raise _Fail(Problem(f"format {first.get('format')!r} is not {FORMAT}", MANIFEST_NAME, 1), "unusable")
    result.session_id = str(first.get("session_id", ""))
    result.hearing_id = str(first.get("hearing_id", ""))
    result.recorder_id = str(first.get("recorder_id", ""))
    hearing_info = first.get("hearing")
    if isinstance(hearing_info, dict) and hearing_info.get("case_number") is not None:
        result.case_number = str(hearing_info["case_number"])
    if _number(first.get("at")):
        result.first_at = float(first["at"])
    block = first.get("block_size", BLOCK_SIZE)
    block = block if isinstance(block, int) and not isinstance(block, bool) and block > 0 else BLOCK_SIZE

    def fail(reason: str, line: ManifestLine | None = None, **where: Any) -> _Fail:
        return _Fail(Problem(reason, where.pop("file", MANIFEST_NAME), line.lineno if line else None, **where))

    # --- pass 1: the chain (cheap), so a reordered or edited manifest is named before any hashing.
    previous = first.get("previous")
    head = GENESIS
    if isinstance(previous, dict):
        result.previous_session_id = str(previous.get("session_id", ""))
        if isinstance(previous.get("last_hash"), str):
            head = previous["last_hash"]
    seal_line: ManifestLine | None = None
    segment_lines: list[tuple[ManifestLine, dict[str, Any]]] = []
    torn_tail = False
    last = result.first_at
    track_dirs: set[str] = set()
    for line in lines:
        entry = line.entry
        if entry is None:
            if line.lineno == len(lines) and not line.raw.endswith(b"\n"):
                torn_tail = True  # the recorder died while writing this line
                break
            raise fail(f"line is not valid JSON ({line.error})", line)
        if seal_line is not None:
            raise fail("line after the seal (the sealed archive was extended)", line)
        if entry.get("n") != line.lineno:
            raise fail(
                f"line number field says {entry.get('n')!r} (lines removed, inserted or reordered before this)", line
            )
        if entry.get("prev") != head:
            raise fail("prev does not match the hash of the line before (lines removed, inserted or reordered)", line)
        if entry.get("hash") != entry_hash(entry):
            raise fail(f"content of this {entry.get('type', '?')} line does not match its hash (line altered)", line)
        head = str(entry["hash"])
        result.lines = line.lineno
        kind = entry.get("type")
        if line.lineno > 1 and kind == "session":
            raise fail("a second session line", line)
        if kind in ("segment", "recovered_segment"):
            segment_lines.append((line, entry))
        elif kind == "track" and isinstance(entry.get("track"), str):
            track_dirs.add(safe_name(entry["track"]))
        elif kind == "gap":
            if not (
                isinstance(entry.get("reason"), str)
                and entry["reason"]
                and _number(entry.get("start"))
                and _number(entry.get("end"))
                and (entry.get("track") is None or isinstance(entry.get("track"), str))
                and (entry.get("participant") is None or isinstance(entry.get("participant"), str))
            ):
                raise fail("gap line is malformed (reason, start, end, track, participant)", line)
            result.gaps.append(
                {k: entry.get(k) for k in ("reason", "start", "end", "track", "participant", "detail") if k in entry}
            )
        elif kind == "seal":
            seal_line = line
        if kind != "seal" or entry.get("state", "complete") == "complete":
            for key in ("at", "end"):
                value = entry.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    last = float(value) if last is None else max(last, float(value))
    result.last_at = last

    # --- identity: whose hearing, which recorder, which session, against the directory and the caller.
    session_line = lines[0]
    if result.session_id != root.name:
        raise fail(
            f"the manifest names session {result.session_id!r}, but lies in directory {root.name!r} "
            "(a session swapped in from elsewhere)",
            session_line,
        )
    recorder_dir, hearing_dir = root.absolute().parent, root.absolute().parent.parent
    if safe_name(result.recorder_id) != recorder_dir.name:
        raise fail(
            f"the manifest names recorder {result.recorder_id!r}, but lies in the folder of recorder "
            f"{recorder_dir.name!r}",
            session_line,
        )
    if safe_name(result.hearing_id) != hearing_dir.name:
        raise fail(
            f"the manifest names hearing {result.hearing_id!r}, but lies in the folder of hearing "
            f"{hearing_dir.name!r} (a session of another hearing)",
            session_line,
        )
    if isinstance(hearing_info, dict) and hearing_info.get("id") not in (None, result.hearing_id):
        raise fail(
            f"the session line names two hearings: {result.hearing_id!r} and {hearing_info.get('id')!r}", session_line
        )
    if hearing_id is not None and result.hearing_id != hearing_id:
        raise fail(f"this is a session of hearing {result.hearing_id!r}, not of hearing {hearing_id!r}", session_line)

    # --- the seal: signature, state, and whose key.
    if seal_line is not None:
        assert seal_line.entry is not None
        seal = seal_line.entry
        if seal.get("chain_head") != seal.get("prev") or seal.get("lines") != seal_line.lineno - 1:
            raise fail("the seal does not cover the chain before it", seal_line)
        if (seal.get("session_id"), seal.get("recorder_id")) != (result.session_id, result.recorder_id):
            raise fail("the seal names another session or recorder than the session line", seal_line)
        state = seal.get("state", "complete")
        if state not in SEAL_STATES:
            raise fail(f"the seal's state {state!r} is not one of {sorted(SEAL_STATES)}", seal_line)
        public = str(seal.get("public_key", ""))
        try:
            key_id = key_id_of(base64.b64decode(public, validate=True))
        except (binascii.Error, ValueError):
            raise fail("the seal's public key is not valid base64", seal_line) from None
        result.key_id = key_id
        if seal.get("key_id") != key_id:
            raise fail("the seal's key_id does not match its public key", seal_line)
        if not verify_signature(public, str(seal.get("signature", "")), seal_message(seal)):
            raise fail("the seal's signature does not verify (seal forged or re-signed)", seal_line)
        if not any_key:
            trusted = trusted_set(trusted_keys, root)
            _check_trust(public, key_id, seal, result.recorder_id, trusted or [], root, fail, seal_line)
            result.key_trusted = True
        else:
            result.notes.append("integrity only: the seal's key was not checked against trusted keys")
        result.sealed = True
        result.seal_state = str(state)

    # --- the link to the session this one continues (after a recorder restart), when it lies alongside.
    if isinstance(previous, dict):
        _check_link(root, previous, session_line, link_required, result, fail)
    elif previous is not None:
        raise fail("the session line's previous link is malformed", session_line)

    # --- pass 2: the files. Everything listed is re-hashed; nothing unlisted may exist.
    _check_files(root, result, segment_lines, track_dirs, block, progress, fail)

    if not result.sealed:
        result.status = "unsealed"
        if torn_tail:
            result.notes.append(f"line {len(lines)} is torn (the recorder stopped while writing it)")
        return
    result.status = "valid"


def _check_files(
    root: Path,
    result: VerifyResult,
    segment_lines: list[tuple[ManifestLine, dict[str, Any]]],
    track_dirs: set[str],
    block: int,
    progress: Progress | None,
    fail: Callable[..., _Fail],
) -> None:
    """Re-hash every listed file (segments, recovered partials); refuse anything unlisted, and any symlink."""
    listed: dict[str, tuple[ManifestLine, dict[str, Any]]] = {}
    foreign: list[tuple[Path, str, ManifestLine, dict[str, Any]]] = []
    for line, entry in segment_lines:
        rel = entry.get("file")
        if not _valid_rel(rel):
            raise fail(f"{entry.get('type')} line names no valid file", line)
        owner = entry.get("session_id", result.session_id) if entry.get("type") == "recovered_segment" else None
        if owner not in (None, result.session_id):
            # Older archives listed a crashed session's partials in the next session.
            if not isinstance(owner, str) or safe_name(owner) != owner or owner != result.previous_session_id:
                raise fail("recovered_segment line names a session this one does not continue", line)
            foreign.append((root.parent / owner, str(rel), line, entry))
            continue
        if rel in listed:
            raise fail(f"segment file {rel} is listed twice", line, segment=rel)
        listed[str(rel)] = (line, entry)
    total = sum(int(e["bytes"]) for _, e in listed.values() if isinstance(e.get("bytes"), int))
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    try:
        files, folders, others = _walk(root)
    except OSError as exc:
        raise fail(f"cannot list the session's files ({exc.strerror or exc})", file=".") from None
    for rel, what in others:
        raise fail(f"{what} refused: an archive holds only plain files and folders", file=rel)
    present = set(files)
    for rel, (line, entry) in listed.items():
        if rel not in present:
            raise fail(f"{entry.get('type', 'segment')} file is missing", line, file=rel, segment=rel)
        _check_file(root, rel, line, entry, block, advance, fail)
        result.segments += 1
        result.recovered += entry.get("type") == "recovered_segment"
        result.bytes += int(entry["bytes"])
    for base, rel, line, entry in foreign:
        if (base / MANIFEST_NAME).is_file():
            if not (base / rel).is_file() or (base / rel).is_symlink():
                raise fail("recovered partial of the previous session is missing", line, file=rel, segment=rel)
            _check_file(base, rel, line, entry, block, advance, fail)
            result.recovered += 1

    # Anything not listed: files (the lock excepted, see below), then folders that hold nothing listed.
    last_seq: dict[str, int] = {}
    for rel, (_, entry) in listed.items():
        seq = entry.get("seq")
        if isinstance(seq, int):
            last_seq[rel.split("/")[1]] = max(last_seq.get(rel.split("/")[1], 0), seq)
    needed_dirs = {SEGMENTS_DIR} if listed else set()
    needed_dirs |= {"/".join(rel.split("/")[:2]) for rel in listed}
    for rel in files:
        if rel in listed or rel == MANIFEST_NAME:
            continue
        if rel == LOCK_NAME:
            if result.sealed and (root / rel).stat().st_size > _LOCK_MAX:
                raise fail("the lock file of a sealed session holds more than a process id", file=rel)
            if result.sealed:
                result.notes.append(f"{LOCK_NAME} left by a recorder stopped between seal and cleanup (ignored)")
            continue
        parts = rel.split("/")
        stem = parts[-1].split(".")[0]
        is_next = (
            len(parts) == 3
            and parts[0] == SEGMENTS_DIR
            and parts[1] in track_dirs
            and stem.isdigit()
            and int(stem) == last_seq.get(parts[1], 0) + 1
        )
        if result.sealed or not is_next:
            raise fail("file is not listed in the manifest (added after the fact)", file=rel, segment=rel)
        result.partial_files.append(rel)
        needed_dirs |= {SEGMENTS_DIR, "/".join(parts[:2])}
    for rel in folders:
        if rel not in needed_dirs:
            raise fail("folder is not listed in the manifest (added after the fact)", file=rel + "/")


def _check_trust(
    public: str,
    key_id: str,
    seal: dict[str, Any],
    recorder_id: str,
    trusted: Sequence[TrustedKey],
    root: Path,
    fail: Callable[..., _Fail],
    seal_line: ManifestLine,
) -> None:
    if not trusted:
        raise fail(
            f"sealed by an untrusted key {key_id}: no trusted keys (give --trusted-keys FILE|DIR or "
            "--data-dir DIR, or --any-key for an integrity-only check)",
            seal_line,
        )
    matches = [k for k in trusted if k.public_key == public]
    if not matches:
        raise fail(f"sealed by an untrusted key {key_id}", seal_line)
    if not _number(seal.get("at")):
        raise fail("the seal has no time: cannot check its key's validity", seal_line)
    at = float(seal["at"])
    owned = [k for k in matches if not k.recorder_id or safe_name(k.recorder_id) == safe_name(recorder_id)]
    if not owned:
        raise fail(
            f"sealed by key {key_id} of recorder {matches[0].recorder_id!r}, but the session is of recorder "
            f"{recorder_id!r}",
            seal_line,
        )
    if not any(k.valid_at(at) for k in owned):
        raise fail(
            f"sealed by key {key_id} at {format_time(at)}, outside its validity ({owned[0].period()})",
            seal_line,
        )


def _check_link(
    root: Path,
    previous: dict[str, Any],
    session_line: ManifestLine,
    required: bool,
    result: VerifyResult,
    fail: Callable[..., _Fail],
) -> None:
    name = previous.get("session_id")
    if not isinstance(name, str) or safe_name(name) != name or name >= root.name:
        raise fail("the previous link names no earlier session of this recorder", session_line)
    sibling = root.parent / name
    manifest = sibling / MANIFEST_NAME
    if not manifest.is_file() or manifest.is_symlink():
        if required:
            raise fail(f"the session it continues, {name}, is missing from the hearing", session_line)
        result.notes.append(f"previous session {name} not found alongside; link not checked")
        return
    count = previous.get("lines")
    earlier = parse_lines(manifest.read_bytes())
    if not isinstance(count, int) or not 0 < count <= len(earlier):
        raise fail(f"the previous session {name} is shorter than this one's link says", session_line)
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
        raise fail(f"the previous session {name} does not end where this one links to it", session_line)
    if previous.get("sealed") and count != len(earlier):
        raise fail(f"the previous session {name} goes on after the seal this one links to", session_line)


def _check_file(
    base: Path,
    rel: str,
    line: ManifestLine,
    entry: dict[str, Any],
    block: int,
    advance: Callable[[int], None],
    fail: Callable[..., _Fail],
) -> None:
    if not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256"), str):
        raise fail(f"{entry.get('type')} line has no size or SHA-256", line, file=rel, segment=rel)
    try:
        size, digest, blocks = hash_blocks(base / rel, block, advance)
    except OSError as exc:
        what = "a symlink: refused" if os.path.islink(base / rel) else f"unreadable ({exc.strerror or exc})"
        raise fail(f"segment file is {what}", line, file=rel, segment=rel) from None
    if digest == entry["sha256"] and size == entry["bytes"]:
        return
    bad = _first_bad_block(entry.get("blocks"), blocks, size, block)
    recovered = " (a recovered partial of a crash)" if entry.get("type") == "recovered_segment" else ""
    if size != entry["bytes"]:
        reason = f"segment{recovered} is {size} bytes, {entry['bytes']} were recorded"
    else:
        reason = f"segment{recovered} bytes do not match the SHA-256 recorded"
    raise fail(reason, line, file=rel, segment=rel, byte_range=bad)


__all__ = ["HearingResult", "Problem", "Progress", "Status", "VerifyResult", "trusted_set", "verify_archive"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recorder.verify ARCHIVE ...``: the same as ``courtlink verify`` (see :mod:`recorder.cli`)."""
    from recorder.cli import verify_main

    return verify_main(argv)


if __name__ == "__main__":
    sys.exit(main())
