"""Crash safety: kill -9 a recording process; a restart seals what survived as interrupted and continues the chain."""

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
from recorder.chain import LOCK_NAME
from recorder.manifest import MANIFEST_NAME, last_intact, read_lines
from recorder.recorder import Recorder
from recorder.recovery import media_span
from recorder.render import render_archive
from recorder.verify import verify_archive
from rooms.model import Source
from tests import archive_fixtures as af
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
    """After kill -9 a restart seals the crashed session as interrupted; the hearing verifies and renders whole."""
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

    # The hearing is still running: a restarted recorder seals the crashed session as interrupted (its partials
    # hashed and timed) and opens a new session linked to that seal.
    count, head, _ = last_intact(crashed / MANIFEST_NAME)
    spans = {rel: media_span(crashed / rel) for rel in result.partial_files}
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=4.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0 + 12)
    mic = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")
    fx.feed_hearing(recorder, [fx.Feed(mic, fx.encode_audio(2.0))], media_start=T0 + 12, seconds=4.0)
    session.seal(at=T0 + 16).result(60)
    recorder.close()

    old = [line.entry for line in read_lines(crashed / MANIFEST_NAME) if line.entry is not None]
    assert [e["n"] for e in old[:count]] == list(range(1, count + 1))  # the crashed chain is kept as it was
    recovered = [e for e in old if e["type"] == "recovered_segment"]
    assert sorted(e["file"] for e in recovered) == sorted(result.partial_files)
    for e in recovered:
        packets, seconds = spans[e["file"]]
        assert e["frames"] == packets > 0
        assert e["bytes"] == (crashed / e["file"]).stat().st_size
        # The partial follows the track's last complete segment (8 s) and holds the media up to the crash.
        assert e["start"] == pytest.approx(T0 + 8.0, abs=0.1)
        assert e["end"] == pytest.approx(e["start"] + seconds, abs=1e-3)
    seal = old[-1]
    # Sealed by the restarted recorder as it started, before it knew which session would follow.
    assert (seal["type"], seal["state"], seal["recovered_by"]) == ("seal", "interrupted", None)
    media_end = max(e["end"] for e in recovered)
    assert seal["media_end"] == pytest.approx(media_end)
    assert media_end > T0 + 8.5  # later than the last listed segment: the partials' seconds count
    assert not (crashed / LOCK_NAME).exists()

    entries = [line.entry for line in read_lines(session.path / MANIFEST_NAME) if line.entry is not None]
    assert entries[0]["prev"] == seal["hash"] != head
    assert entries[0]["previous"] == {
        "session_id": crashed.name,
        "lines": len(old),
        "last_hash": seal["hash"],
        "sealed": True,
        "state": "interrupted",
    }
    gap = entries[1]
    assert (gap["type"], gap["reason"], gap["track"]) == ("gap", "recorder_restart", None)
    assert gap["start"] == pytest.approx(media_end, abs=1e-3)  # where the recovered partials end, not at 8 s
    assert gap["end"] == T0 + 12
    assert not any(e["type"] == "recovered_segment" for e in entries)

    # Both sessions verify; the hearing verifies as one chain, exit 0, and names the gap.
    interrupted = verify_archive(crashed)
    assert interrupted.ok, interrupted.summary()
    assert (interrupted.seal_state, interrupted.recovered) == ("interrupted", 2)
    assert "INTERRUPTED" in interrupted.summary()
    assert verify_archive(session.path).ok
    hearing_dir = crashed.parents[1]
    code, out = af.cli(str(hearing_dir), data_dir=tmp_path)
    assert code == 0, out
    assert out.startswith(f"hearing {hearing.id}  case {hearing.case_number}\n"), out
    assert "gap recorder_restart" in out, out
    assert "sealed as INTERRUPTED" in out, out
    states = {r["session_id"]: r["state"] for r in list_recordings(tmp_path, hearing.id)}
    assert states == {crashed.name: "interrupted", session.path.name: "sealed"}

    # render takes the hearing directory and plays the recovered seconds (between 8 s and the crash).
    rendered = render_archive(hearing_dir, tmp_path / "hearing.mp4", width=320, height=240, fps=5)
    assert rendered.tracks == 2
    assert rendered.duration >= (media_end - T0) + 4.0 - 0.5
    assert any("recorder_restart" in card for card in rendered.cards), rendered.cards

    # A recovered partial altered, or deleted: the interrupted session no longer verifies, naming the file.
    partial = crashed / recovered[0]["file"]
    original = partial.read_bytes()
    partial.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    altered = verify_archive(crashed)
    assert altered.status == "invalid"
    assert altered.problem is not None
    assert altered.problem.file == recovered[0]["file"]
    assert "recovered partial" in altered.problem.reason
    assert af.cli(str(hearing_dir), data_dir=tmp_path)[0] == 1
    partial.unlink()
    deleted = verify_archive(crashed)
    assert deleted.problem is not None
    assert "missing" in deleted.problem.reason
    partial.write_bytes(original)
    assert verify_archive(crashed).ok
    # Altering the crashed session's chain now breaks the link the new session holds.
    manifest = crashed / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes().replace(b'"recorder_id":"rec-a"', b'"recorder_id":"rec-x"', 1))
    relinked = verify_archive(session.path)
    assert relinked.status == "invalid"
    assert relinked.problem is not None
    assert relinked.problem.line == 1


def test_torn_last_line_is_dropped_and_the_session_sealed_as_interrupted(tmp_path: Path) -> None:
    """A crash mid-line: the restart drops the torn bytes (noted in the seal), seals, and the hearing verifies."""
    sealed = af.record_sealed(tmp_path)
    lines = (sealed / MANIFEST_NAME).read_bytes().splitlines(keepends=True)
    # As if the recorder died writing its stop line: no seal, and half a line at the end.
    (sealed / MANIFEST_NAME).write_bytes(b"".join(lines[:-2]) + lines[-2][:40])
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=4.0)
    session = recorder.start_session(fx.hearing(), fx.SITES, at=T0 + 20)
    session.seal(at=T0 + 21).result(60)
    recorder.close()
    seal = af.read(sealed)[-1]
    assert (seal["state"], seal["torn_bytes"]) == ("interrupted", 40)
    code, out = af.cli(str(sealed.parents[1]), data_dir=tmp_path)
    assert code == 0, out


def test_crash_before_the_first_line_leaves_no_stray_folder(tmp_path: Path) -> None:
    """A crash between creating a session and its first line: the restarted recorder removes the empty folder."""
    sealed = af.record_sealed(tmp_path)
    empty = sealed.parent / "rs_20270115T090000000000Z_deadbeef"
    empty.mkdir()
    (empty / LOCK_NAME).write_text("4242\n")
    (empty / MANIFEST_NAME).write_bytes(b'{"at":1800003600.0,"block_si')
    assert af.cli(str(sealed.parents[1]), data_dir=tmp_path)[0] == 1  # a folder no manifest accounts for
    recorder = Recorder(tmp_path, "rec-a")
    recorder.start()
    recorder.flush().result(60)
    recorder.close()
    assert not empty.exists()
    code, out = af.cli(str(sealed.parents[1]), data_dir=tmp_path)
    assert code == 0, out
