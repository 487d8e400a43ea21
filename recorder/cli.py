"""Command-line entry points for ``courtlink verify`` and ``courtlink render`` (the lead wires them).

``verify_main`` exit status: 0 the archive is valid (complete, sealed, untampered);
1 it is not: tampered, incomplete, or not sealed (the last is reported as
"unsealed: complete up to line N, not sealed"); 2 the input is not an archive
(not a directory, no manifest, unreadable first line) or the arguments are wrong.
Given a hearing's directory (several sessions), every session is verified and
the worst status wins.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from recorder.manifest import MANIFEST_NAME
from recorder.verify import Progress, VerifyResult, verify_archive

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


def _trusted(path: Path | None) -> list[str] | None:
    """Trusted public keys from a JSON file (the keys API's answer) or a key directory."""
    if path is None:
        return None
    if path.is_dir():
        from recorder.keys import public_keys

        return [k["public_key"] for k in public_keys(path)]
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data = data.get("keys", [])
    return [str(k["public_key"]) if isinstance(k, dict) else str(k) for k in data]


def _sessions(path: Path) -> list[Path]:
    if (path / MANIFEST_NAME).is_file() or not path.is_dir():
        return [path]
    found = sorted({p.parent for p in path.rglob(MANIFEST_NAME)})
    return found or [path]


def verify_main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``courtlink verify ARCHIVE``: check a recording; exit 0 valid, 1 invalid or unsealed, 2 unusable."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="courtlink verify", description="Verify a sealed hearing recording.")
    parser.add_argument("archive", type=Path, help="a recording session directory (or a hearing's directory)")
    parser.add_argument(
        "--trusted-keys",
        type=Path,
        default=None,
        help="JSON from /api/v1/recorder/keys, or a recorder key directory: the seal must be signed by one of them",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    try:
        trusted = _trusted(args.trusted_keys)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        err.write(f"courtlink verify: cannot read trusted keys: {exc}\n")
        return 2
    results: list[VerifyResult] = []
    for session in _sessions(args.archive):
        bar = ProgressBar(err, f"verifying {session.name}")
        progress: Progress | None = None if args.no_progress else bar
        result = verify_archive(session, progress=progress, trusted_keys=trusted)
        bar.finish()
        results.append(result)
        if not args.json:
            out.write(f"{session}: {result.summary()}\n")
    if args.json:
        payload = [r.as_dict() | {"path": r.path} for r in results]
        out.write(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2) + "\n")
    return max(r.exit_code for r in results)


def render_main(argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> int:
    """``courtlink render ARCHIVE -o OUT.mp4``: composite playback (H.264/AAC); exit 0 done, 2 unusable input."""
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="courtlink render", description="Render a recording to one MP4.")
    parser.add_argument("archive", type=Path, help="a recording session directory")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the MP4 file to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--no-progress", action="store_true")
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
        )
    except RenderError as exc:
        bar.finish()
        err.write(f"courtlink render: {exc}\n")
        return 2
    bar.finish()
    return 0
