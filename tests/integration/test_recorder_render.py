"""Composite playback: a recorded session renders to an H.264/AAC MP4 with labels, time and evidence large."""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from recorder.cli import render_main
from recorder.recorder import Recorder
from recorder.render import CARD_SECONDS, render_archive
from rooms.model import Source
from tests import recorder_fixtures as fx

T0 = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[2]


def artifacts() -> Path:
    """Where tests leave files for a human to look at (gitignored)."""
    path = Path(os.environ.get("COURTLINK_ARTIFACTS", REPO / "artifacts")) / "recorder"
    path.mkdir(parents=True, exist_ok=True)
    return path


def frame_at(mp4: Path, seconds: float) -> NDArray[np.uint8]:
    """The decoded RGB frame showing at ``seconds`` into the file."""
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= seconds:
                image = frame.to_ndarray(format="rgb24")
                return np.asarray(image, dtype=np.uint8)
    raise AssertionError(f"no frame at {seconds}s")


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sealed 12 s session: judge (camera+mic), defendant (camera+mic), evidence from 3 s to 8 s, recess 8-10 s."""
    data = tmp_path_factory.mktemp("render")
    video, audio = fx.encode_video(4.0), fx.encode_audio(4.0)
    recorder = Recorder(data, "rec-a", segment_seconds=4.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    evidence = fx.track(hearing.id, "evidence", "p_counsel", Source.evidence, "video")
    feeds = [
        fx.Feed(fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video"), video),
        fx.Feed(fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio"), audio),
        fx.Feed(fx.track(hearing.id, "def_cam", "p_def", Source.camera, "video"), video),
        fx.Feed(fx.track(hearing.id, "def_mic", "p_def", Source.microphone, "audio"), fx.encode_audio(4.0, freq=660)),
        fx.Feed(evidence, video, start=3.0, length=5.0),
    ]
    fx.feed_hearing(
        recorder,
        feeds,
        media_start=T0,
        seconds=14.0,
        at={8.0: lambda: session.pause("recess", at=T0 + 8), 10.0: lambda: session.resume(at=T0 + 10)},
    )
    session.seal(at=T0 + 14).result(60)
    recorder.close()
    return session.path


def test_render_has_video_audio_labels_time_and_evidence_large(session_dir: Path) -> None:
    """The MP4 has H.264 + AAC of the recorded length, labelled tiles, a clock, and evidence large while shown."""
    out = artifacts() / "render.mp4"
    result = render_archive(session_dir, out, width=1280, height=720, fps=15)
    info = fx.probe(out)
    kinds = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert kinds == {"video": "h264", "audio": "aac"}
    # 12 s of media (recess cut out) plus one card naming the recess.
    assert float(info["format"]["duration"]) == pytest.approx(12.0 + CARD_SECONDS, abs=0.5)
    assert result.cards
    assert "recess" in result.cards[0]

    blank = np.full((720, 1280, 3), 16, np.uint8)
    plain = frame_at(out, 1.0)  # judge and defendant side by side
    shown = frame_at(out, 5.0)  # evidence large on the left
    from PIL import Image

    Image.fromarray(shown).save(artifacts() / "render_evidence.png")
    Image.fromarray(plain).save(artifacts() / "render_grid.png")
    for frame in (plain, shown):
        time_region = frame[0:50, 900:1280].astype(int)
        label_region = frame[680:720, 0:400].astype(int)
        assert np.abs(time_region - blank[0:50, 900:1280]).max() > 100, "the wall-clock time is drawn"
        assert label_region.std() > 20, "the bottom-left tile carries a label"
    # Evidence layout: the big tile's picture reaches near the top; in the grid, tiles leave that band dark.
    assert shown[60:80, 300:600].std() > 20
    assert plain[60:80, 300:600].std() < 10
    assert not np.array_equal(frame_at(out, 1.0), frame_at(out, 2.0)), "the picture moves on"


def test_render_cli_exit_codes(session_dir: Path, tmp_path: Path) -> None:
    """`courtlink render` exits 0 on a session and 2 on something that is not one."""
    err = io.StringIO()
    assert render_main([str(tmp_path), "-o", str(tmp_path / "x.mp4")], stderr=err) == 2
    assert "not a recording session" in err.getvalue()
    assert render_main([str(session_dir), "-o", str(tmp_path / "missing" / "x.mp4")], stderr=err) == 2
    assert "cannot write" in err.getvalue()
    assert render_main([str(session_dir), "-o", str(tmp_path / "y.mp4"), "--no-progress", "--fps", "5"]) == 0
    assert (tmp_path / "y.mp4").stat().st_size > 0
