"""The archive format's primitives, shared by the writer and the verifier: standard library and ``cryptography`` only.

Everything a third party needs to check a courtlink recording lives in this
module, :mod:`recorder.trust` and :mod:`recorder.verify`; none of them imports
the media stack (aiortc, PyAV), the web stack (aiohttp) or pydantic, so the
verifier can be read, audited and run on its own (see ``docs/archive.md``).
The writer imports these definitions from here, never the other way round, so
what is written and what is checked cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
"""``prev`` of the first line of a chain that continues nothing."""

FORMAT = "courtlink-recording/1"
"""Value of the session line's ``format`` field."""

MANIFEST_NAME = "manifest.jsonl"
"""File name of a session's manifest inside its directory."""

SEGMENTS_DIR = "segments"
"""Folder of a session's segment files: ``segments/<track>/<seq>.webm``."""

LOCK_NAME = "recording.lock"
"""Held (flock) by the recorder while a session is written; removed at seal (see ``docs/archive.md``)."""

BLOCK_SIZE = 256 * 1024
"""Bytes per hashed block of a segment (the manifest's ``blocks``)."""

ALGORITHM = "ed25519"
"""The seal's signature algorithm."""

SEAL_STATES = frozenset({"complete", "interrupted"})
"""A seal's ``state``: ``complete`` (the recorder sealed its own session at adjourn) or ``interrupted``
(a restarted recorder sealed the session a crash left open). A seal without ``state`` is ``complete``."""


def canonical(payload: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8 (the same bytes as ``rooms.audit.canonical``)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON of every field but ``hash``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def seal_message(entry: dict[str, Any]) -> bytes:
    """The bytes a seal's signature covers: its canonical JSON without ``signature``, ``hash``, ``n``, ``prev``.

    ``chain_head`` inside it names the line before the seal, which fixes the whole chain.
    """
    body = {k: v for k, v in entry.items() if k not in ("signature", "hash", "n", "prev")}
    return canonical(body)


def key_id_of(public_raw: bytes) -> str:
    """A short stable id of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def verify_signature(public_b64: str, signature_b64: str, data: bytes) -> bool:
    """Whether ``signature_b64`` is a valid Ed25519 signature of ``data`` by ``public_b64``."""
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64, validate=True))
        public.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True


def safe_name(value: str) -> str:
    """A path component made of ``[A-Za-z0-9_.-]`` only (anything else becomes ``_``): hearing and recorder dirs."""
    cleaned = "".join(c if (c.isalnum() and c.isascii()) or c in "_.-" else "_" for c in value)
    return cleaned.strip(".") or "_"


@dataclass(frozen=True, slots=True)
class ManifestLine:
    """One line as read back: its 1-based line number, raw bytes and parsed entry (None if unparsable)."""

    lineno: int
    raw: bytes
    entry: dict[str, Any] | None
    error: str = ""


def parse_lines(data: bytes) -> list[ManifestLine]:
    """Every line of a manifest's bytes, parsed; a torn last line (crash mid-write) is reported as unparsable."""
    lines: list[ManifestLine] = []
    parts = data.split(b"\n")
    raws = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    for i, raw in enumerate(raws, start=1):
        text = raw.rstrip(b"\n")
        try:
            value = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            lines.append(ManifestLine(i, raw, None, f"not JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            lines.append(ManifestLine(i, raw, None, "not a JSON object"))
            continue
        lines.append(ManifestLine(i, raw, value))
    return lines


def read_lines(path: Path) -> list[ManifestLine]:
    """Every line of a manifest file, parsed (see :func:`parse_lines`)."""
    return parse_lines(path.read_bytes())


def open_regular(path: Path) -> int:
    """Open a file for reading without following a symlink (refused by the kernel: ELOOP)."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))


def hash_blocks(path: Path, block: int, progress: Callable[[int], None] | None = None) -> tuple[int, str, list[str]]:
    """Size, SHA-256 (hex) and the first 16 hex digits of each ``block``-byte block's SHA-256, read once."""
    digest = hashlib.sha256()
    blocks: list[str] = []
    size = 0
    with os.fdopen(open_regular(path), "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
            blocks.append(hashlib.sha256(chunk).hexdigest()[:16])
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
    return size, digest.hexdigest(), blocks
