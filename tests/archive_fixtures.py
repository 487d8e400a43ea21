"""Genuine sealed archives to attack, and helpers to read, rewrite and verify them (``courtlink verify`` in-process).

An archive is recorded once per module with the real recorder (real VP8/Opus
from PyAV, see :mod:`tests.recorder_fixtures`) into a data directory laid out
as a server's (``recordings/<hearing>/<recorder>/<session>`` and
``recorder/keys``); each test tampers with a private copy of the whole data
directory, so the session stays where verify expects it.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from recorder.chain import MANIFEST_NAME, canonical, entry_hash, key_id_of, seal_message
from recorder.cli import verify_main
from recorder.recorder import Recorder
from rooms.audit import chain_next
from rooms.model import Source
from tests import recorder_fixtures as fx

T0 = 1_800_000_000.0


def record_sealed(data_dir: Path, hearing_id: str = "hrg_test1", at: float = T0, recorder_id: str = "rec-a") -> Path:
    """Record and seal one 12 s session (judge camera + mic, two audit events, a recess); its directory."""
    video, audio = fx.encode_video(4.0), fx.encode_audio(4.0)
    recorder = Recorder(data_dir, recorder_id, segment_seconds=4.0)
    hearing = fx.hearing(hearing_id)
    session = recorder.start_session(hearing, fx.SITES, at=at)
    first = chain_next(None, stream=hearing.id, at=hearing.starts_at, actor="p_judge", action="hearing_started")
    second = chain_next(first, stream=hearing.id, at=hearing.starts_at, actor="p_judge", action="recess_called")
    fx.feed_hearing(
        recorder,
        [
            fx.Feed(fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video"), video),
            fx.Feed(fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio"), audio),
        ],
        media_start=at,
        seconds=12.0,
        at={
            0.5: lambda: session.record_audit(first, at=at + 0.5),
            5.9: lambda: session.record_audit(second, at=at + 5.9),
            6.0: lambda: session.pause("recess", at=at + 6),
            8.0: lambda: session.resume(at=at + 8),
        },
    )
    session.seal(at=at + 12).result(60)
    recorder.close()
    return session.path


def copy_data_dir(session: Path, into: Path) -> Path:
    """Copy the data directory holding ``session`` into ``into``; the copied session's path."""
    data_dir = session.parents[3]
    copy = into / "data"
    shutil.copytree(data_dir, copy, symlinks=True)
    return copy / session.relative_to(data_dir)


def data_dir_of(session: Path) -> Path:
    """The data directory a session lies in (``<data>/recordings/<hearing>/<recorder>/<session>``)."""
    return session.parents[3]


def read(archive: Path) -> list[dict[str, Any]]:
    """The manifest's entries."""
    return [json.loads(line) for line in (archive / MANIFEST_NAME).read_text().splitlines()]


def write(archive: Path, entries: list[dict[str, Any]]) -> None:
    """Rewrite the manifest with these entries, one canonical line each."""
    (archive / MANIFEST_NAME).write_bytes(b"".join(canonical(e) + b"\n" for e in entries))


def rechain(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Renumber and re-hash every line (keeping line 1's prev), as a forger with the format in hand would."""
    head = entries[0]["prev"]
    out = []
    for n, entry in enumerate(entries, start=1):
        fixed = {k: v for k, v in entry.items() if k != "hash"} | {"n": n, "prev": head}
        fixed["hash"] = entry_hash(fixed)
        head = fixed["hash"]
        out.append(fixed)
    return out


def fresh_key() -> tuple[Ed25519PrivateKey, str]:
    """A new Ed25519 key and its base64 raw public key."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, base64.b64encode(raw).decode()


def reseal(entries: list[dict[str, Any]], key: Ed25519PrivateKey, public: str) -> list[dict[str, Any]]:
    """Re-chain the lines before the seal and re-sign the seal with ``key`` (a complete forgery)."""
    body = rechain(entries[:-1])
    seal = {k: v for k, v in entries[-1].items() if k not in ("hash", "n", "prev", "signature")}
    seal |= {"chain_head": body[-1]["hash"], "lines": len(body)}
    seal |= {"public_key": public, "key_id": key_id_of(base64.b64decode(public))}
    seal["signature"] = base64.b64encode(key.sign(seal_message(seal))).decode()
    seal |= {"n": len(body) + 1, "prev": body[-1]["hash"]}
    seal["hash"] = entry_hash(seal)
    return [*body, seal]


def cli(*args: str, data_dir: Path | None = None) -> tuple[int, str]:
    """Run ``courtlink verify`` in-process (``data_dir``: as if run on that server); (exit code, stdout+stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = verify_main([*args, "--no-progress"], stdout=out, stderr=err, default_data_dir=data_dir)
    return code, out.getvalue() + err.getvalue()
