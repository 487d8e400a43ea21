"""Crash safety: kill -9 a recording process, then check what survived and that a restart continues the chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest

from recorder.archive import list_recordings
from recorder.manifest import MANIFEST_NAME, last_intact, read_lines
from recorder.recorder import Recorder
from recorder.verify import verify_archive
from rooms.model import Source
from tests import recorder_fixtures as fx

T0 = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from recorder.recorder import Recorder
    from rooms.model import Source
    from tests import recorder_fixtures as fx

    T0 = 1_800_000_000.0
    recorder = Recorder(Path(sys.argv[1]), "rec-a", segment_seconds=4.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    feeds = [
        fx.Feed(fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video"), fx.encode_video(4.0)),
        fx.Feed(fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio"), fx.encode_audio(4.0)),
    ]
    # 10 s: segments 0-4 and 4-8 complete, 8-10 still being written when the process is killed.
    fx.feed_hearing(recorder, feeds, media_start=T0, seconds=10.0)
    recorder.flush().result(60)
    print("READY", session.path, flush=True)
    time.sleep(600)
    """
)


def test_kill_9_keeps_completed_segments_and_restart_links_the_chain(tmp_path: Path) -> None:
    """After kill -9: completed segments verify, the partial one plays, a restart continues the chain with a gap."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = ""
        for line in child.stdout:  # structlog writes its events to stdout too
            if line.startswith("READY"):
                break
        assert line.startswith("READY"), line
        crashed = Path(line.split(maxsplit=1)[1].strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)

    # Everything the manifest lists verifies; the open segments are reported as partial, not as damage.
    result = verify_archive(crashed)
    assert result.status == "unsealed", result.summary()
    assert result.segments == 4
    assert sorted(result.partial_files) == ["segments/judge_cam/000003.webm", "segments/judge_mic/000003.webm"]
    assert "not sealed" in result.summary()
    for rel in result.partial_files:
        probe = fx.probe(crashed / rel)
        assert probe["packets"], f"ffprobe reads packets of {rel} up to the crash"
        with av.open(str(crashed / rel)) as container:
            decoded = sum(1 for _ in container.decode(container.streams[0]))
        assert decoded > 0
    listed = list_recordings(tmp_path, fx.hearing().id)
    assert [r["state"] for r in listed] == ["failed"]

    # The hearing is still running: a restarted recorder opens a new session linked to the crashed chain.
    count, head, _ = last_intact(crashed / MANIFEST_NAME)
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=4.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0 + 12)
    mic = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")
    fx.feed_hearing(recorder, [fx.Feed(mic, fx.encode_audio(2.0))], media_start=T0 + 12, seconds=4.0)
    session.seal(at=T0 + 16).result(60)
    recorder.close()

    entries = [line.entry for line in read_lines(session.path / MANIFEST_NAME) if line.entry is not None]
    assert entries[0]["prev"] == head
    assert entries[0]["previous"] == {"session_id": crashed.name, "lines": count, "last_hash": head, "sealed": False}
    gap = entries[1]
    assert gap["type"] == "gap"
    assert gap["reason"] == "recorder_restart"
    assert gap["start"] == pytest.approx(T0 + 8.0, abs=0.1)  # where the last complete segment ended
    assert gap["end"] == T0 + 12
    recovered = sorted(e["file"] for e in entries if e["type"] == "recovered_segment")
    assert recovered == sorted(result.partial_files)
    assert verify_archive(session.path).ok
    # Altering the crashed session's chain now breaks the link the new session holds.
    manifest = crashed / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes().replace(b'"recorder_id":"rec-a"', b'"recorder_id":"rec-x"', 1))
    relinked = verify_archive(session.path)
    assert relinked.status == "invalid"
    assert relinked.problem is not None
    assert relinked.problem.line == 1
    manifest.write_bytes(manifest.read_bytes().replace(b'"recorder_id":"rec-x"', b'"recorder_id":"rec-a"', 1))
    states = sorted((r["session_id"] == crashed.name, r["state"]) for r in list_recordings(tmp_path, hearing.id))
    assert states == [(False, "sealed"), (True, "failed")]
