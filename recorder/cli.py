"""Command-line entry points for ``courtlink verify``, ``courtlink render`` and ``courtlink recorder keys``.

``verify_main`` exit status: 0 the archive is valid (sealed, untampered, signed
by a trusted key valid at the seal's time, or ``--any-key``); 1 it is not:
tampered, incomplete, not sealed, of another hearing, or sealed by an untrusted
key; 2 the input is not an archive or the arguments (or trusted keys) are
unusable. Given a hearing's directory, every session is verified, each
recorder's sessions as one chain in order, and the worst status wins.
Standalone like :mod:`recorder.verify` (render and the key tools are imported
only when used). See ``docs/archive.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from recorder.chain import MANIFEST_NAME
from recorder.hearing_chain import verify_hearing
from recorder.trust import TrustedKey, TrustError, data_dir_keys, format_time, key_dir_of, load_trusted
from recorder.verify import Progress, verify_archive

PROGRESS_MIN_BYTES = 64 * 1024 * 1024
"""Archives smaller than this verify without a progress bar."""


class ProgressBar:
    """A one-line progress bar on a stream (stderr), redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, label: str, min_total: int = PROGRESS_MIN_BYTES, width: int = 30) -> None:
        self._stream = stream
        self._label = label
        self._min_total = min_total
        self._width = width
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        """Progress callback: (done, total) in bytes or seconds."""
        if total < self._min_total:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        frac = min(1.0, done / total) if total else 1.0
        filled = int(frac * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(f"\r{self._label} [{bar}] {frac * 100:5.1f}%")
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        """End the bar's line, if one was drawn."""
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def _hearing_like(path: Path) -> bool:
    """Whether ``path`` looks like a hearing directory: recorder folders holding session folders."""
    try:
        return path.is_dir() and any(path.glob(f"*/*/{MANIFEST_NAME}"))
    except OSError:
        return False


def _trust(args: argparse.Namespace, default_data_dir: Path | None) -> tuple[list[TrustedKey], list[str]]:
    """The trusted keys the arguments name, and where they came from (for the report)."""
    keys: list[TrustedKey] = []
    sources: list[str] = []
    for path in args.trusted_keys or []:
        keys.extend(load_trusted(path))
        sources.append(str(path))
    data_dirs = list(args.data_dir or [])
    if not keys and not data_dirs and not args.any_key and default_data_dir is not None:
        data_dirs.append(default_data_dir)
    for data_dir in data_dirs:
        found = data_dir_keys(data_dir)
        keys.extend(found)
        sources.append(f"{data_dir} ({len(found)} key{'s' if len(found) != 1 else ''})")
    return keys, sources


def _print_gaps(out: TextIO, gaps: list[dict[str, Any]]) -> None:
    for gap in gaps:
        start, end = gap.get("start"), gap.get("end")
        span = ""
        if isinstance(start, int | float) and isinstance(end, int | float):
            span = f" {format_time(float(start))} to {format_time(float(end))} ({float(end) - float(start):.1f} s)"
        detail = f": {gap['detail']}" if gap.get("detail") else ""
        out.write(f"  gap {gap.get('reason')}{span}{detail}\n")


def verify_main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    *,
    default_data_dir: Path | None = None,
) -> int:
    """``courtlink verify ARCHIVE``: check a session or a hearing; exit 0 valid, 1 invalid or unsealed, 2 unusable.

    Trusted keys: ``--trusted-keys`` (repeatable) and ``--data-dir`` (repeatable); with neither, the keys of
    ``default_data_dir`` (the server's data dir, when run on the server). ``--any-key`` checks integrity only.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="courtlink verify", description="Verify a sealed hearing recording.")
    parser.add_argument(
        "archive", type=Path, help="a recording session directory, or a hearing's directory (recordings/<hearing_id>)"
    )
    parser.add_argument(
        "--trusted-keys",
        type=Path,
        action="append",
        help="public keys the seal must be signed by: the JSON of /api/v1/recorder/keys (or of "
        "`courtlink recorder keys export`), a PEM file of public keys, or a folder of such files",
    )
    parser.add_argument(
        "--data-dir", type=Path, action="append", help="trust the recorder keys of this server data directory"
    )
    parser.add_argument(
        "--any-key",
        action="store_true",
        help="integrity only: accept a seal by any key (it proves nothing about who sealed)",
    )
    parser.add_argument("--hearing", help="the hearing id the archive must belong to")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    try:
        keys, sources = _trust(args, default_data_dir)
    except (OSError, TrustError) as exc:
        err.write(f"courtlink verify: cannot use the trusted keys: {exc}\n")
        return 2
    path: Path = args.archive
    bar = ProgressBar(err, f"verifying {path.name}")
    progress: Progress | None = None if args.no_progress else bar
    common: dict[str, Any] = {"any_key": args.any_key, "hearing_id": args.hearing}
    trusted = None if args.any_key else keys
    if not os.path.lexists(path / MANIFEST_NAME) and _hearing_like(path):
        hearing = verify_hearing(path, progress, trusted, **common)
        bar.finish()
        if args.json:
            out.write(json.dumps(hearing.as_dict(), indent=2, ensure_ascii=False) + "\n")
            return hearing.exit_code
        out.write(f"hearing {hearing.hearing_id or '?'}  case {hearing.case_number or '?'}\n")
        out.write(f"from {format_time(hearing.first_at) or '?'}  to {format_time(hearing.last_at) or '?'}\n")
        for session in hearing.sessions:
            when = f"{format_time(session.first_at) or '?'} to {format_time(session.last_at) or '?'}"
            out.write(f"session {session.session_id or Path(session.path).name}  recorder {session.recorder_id}  ")
            out.write(f"{when}: {session.summary()}\n")
            _print_gaps(out, session.hearing_gaps())
        _print_trust(out, sources, args.any_key)
        if hearing.ok:
            out.write(f"OK valid: hearing {hearing.hearing_id}, {len(hearing.sessions)} session(s) in order\n")
        else:
            assert hearing.problem is not None
            out.write(f"{hearing.status}: {hearing.problem.describe()}\n")
        return hearing.exit_code
    result = verify_archive(path, progress, trusted, **common)
    bar.finish()
    if args.json:
        out.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
        return result.exit_code
    if result.status != "unusable":
        for line in result.identity():
            out.write(line + "\n")
    _print_gaps(out, result.hearing_gaps())
    _print_trust(out, sources, args.any_key)
    for note in result.notes:
        out.write(f"note: {note}\n")
    out.write(f"{path}: {result.summary()}\n")
    return result.exit_code


def _print_trust(out: TextIO, sources: list[str], any_key: bool) -> None:
    if any_key:
        out.write("trusted keys: none checked (--any-key: integrity only, not who sealed)\n")
    else:
        out.write(f"trusted keys: {', '.join(sources) if sources else 'none given'}\n")


def keys_main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    *,
    default_data_dir: Path | None = None,
    default_recorder_id: str | None = None,
) -> int:
    """``courtlink recorder keys export|rotate``: write out the public keys; rotate a recorder's key.

    ``rotate`` rotates the settings' recorder (``default_recorder_id``) unless ``--recorder-id`` names another;
    without settings the id must be given: a guessed id would make a key for a recorder that does not exist
    and leave the real one unrotated.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="courtlink recorder keys", description="Recorder signing keys.")
    sub = parser.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", help="write the public keys (the JSON of /api/v1/recorder/keys)")
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    rotate = sub.add_parser("rotate", help="retire a recorder's key and make a new one (the old public key is kept)")
    rotate.add_argument(
        "--recorder-id",
        default=default_recorder_id,
        required=default_recorder_id is None,
        help="the recorder whose key to rotate (default: the settings' recorder.recorder_id)",
    )
    for cmd in (export, rotate):
        cmd.add_argument(
            "--data-dir",
            type=Path,
            default=default_data_dir,
            required=default_data_dir is None,
            help="the server data directory (default: the settings' data_dir)",
        )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    from recorder.keys import export_keys, rotate_key

    key_dir = key_dir_of(args.data_dir)
    try:
        if args.action == "rotate":
            new = rotate_key(key_dir, args.recorder_id)
            out.write(f"recorder {args.recorder_id}: new key {new.key_id}; the old public key is kept\n")
            return 0
        text = json.dumps(export_keys(key_dir), indent=2) + "\n"
        if args.output is None:
            out.write(text)
        else:
            args.output.write_text(text, encoding="utf-8")
            err.write(f"wrote the public keys to {args.output}\n")
    except (OSError, ValueError) as exc:
        err.write(f"courtlink recorder keys: {exc}\n")
        return 1
    return 0


def render_main(argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> int:
    """``courtlink render ARCHIVE -o OUT.mp4``: composite playback (H.264/AAC); exit 0 done, 2 unusable input."""
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="courtlink render", description="Render a recording to one MP4.")
    parser.add_argument(
        "archive", type=Path, help="a recording session directory, or a hearing's directory (all its sessions)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="the MP4 file to write")
    parser.add_argument("--recorder", help="in a hearing directory, the recorder whose sessions to render")
    parser.add_argument("--width", type=int, default=1280, help="width of the composite picture (default 1280)")
    parser.add_argument("--height", type=int, default=720, help="height of the composite picture (default 720)")
    parser.add_argument("--fps", type=int, default=15, help="frames per second of the MP4 (default 15)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    from recorder.render import RenderError, render_archive

    bar = ProgressBar(err, "rendering", min_total=0)
    try:
        render_archive(
            args.archive,
            args.output,
            progress=None if args.no_progress else bar,
            width=args.width,
            height=args.height,
            fps=args.fps,
            recorder=args.recorder,
        )
    except RenderError as exc:
        bar.finish()
        err.write(f"courtlink render: {exc}\n")
        return 2
    bar.finish()
    return 0
