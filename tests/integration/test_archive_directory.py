"""The recordings view (recorder.directory.ArchiveDirectory): verified once per change, cache pruned."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import recorder.verify
from recorder.directory import ArchiveDirectory
from recorder.recorder import Recorder
from rooms.model import Source
from tests import recorder_fixtures as fx

T0 = 1_800_000_000.0


def record_sealed(data: Path, hearing_id: str) -> Path:
    """One sealed 3 s session of one audio track in ``data``."""
    recorder = Recorder(data, "rec-a", segment_seconds=2.0)
    hearing = fx.hearing(hearing_id)
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    audio = fx.encode_audio(3.0)
    fx.feed_hearing(
        recorder,
        [fx.Feed(fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio"), audio)],
        media_start=T0,
        seconds=3.0,
    )
    session.seal(at=T0 + 3).result(60)
    recorder.close()
    return session.path


async def test_concurrent_listings_hash_a_session_once_and_forget_deleted_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clerks listing a hearing's recordings at once re-hash its archive once; a deleted session is forgotten."""
    session_dir = record_sealed(tmp_path, "hrg_dir1")
    real = recorder.verify.verify_archive
    calls: list[str] = []
    guard = threading.Lock()

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        with guard:
            calls.append(str(path))
        time.sleep(0.3)  # widen the window in which a second listing would hash the same files
        return real(path, *args, **kwargs)

    monkeypatch.setattr(recorder.verify, "verify_archive", counted)
    directory = ArchiveDirectory(tmp_path)
    first, second = await asyncio.gather(directory.recordings("hrg_dir1"), directory.recordings("hrg_dir1"))
    assert calls == [str(session_dir)]
    assert [r.verification for r in first] == [r.verification for r in second]
    assert first[0].verification is not None
    assert first[0].verification["ok"] is True
    assert directory.cached_sessions == 1

    shutil.rmtree(session_dir)
    assert await directory.recordings("hrg_dir1") == []
    assert directory.cached_sessions == 0
