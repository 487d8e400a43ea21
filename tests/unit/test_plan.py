"""The forwarding plan (media.plan), without aiortc: which tracks a receiver gets, last-N on cameras."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from media.plan import forwarding_plan
from rooms.model import Source


@dataclass
class Track:
    """A published track as the plan sees it."""

    pid: str
    kind: str
    source: Source
    track_id: str = ""
    codec_name: str = "VP8"
    allowed: bool = True
    held: bool = False
    ended: bool = False

    def __post_init__(self) -> None:
        self.track_id = self.track_id or f"{self.pid}-{self.source.value}"


def _people(*pids: str) -> dict[str, list[Track]]:
    return {
        pid: [Track(pid, "video", Source.camera), Track(pid, "audio", Source.microphone, codec_name="opus")]
        for pid in pids
    }


def _plan(published: dict[str, list[Track]], order: list[str], last_n: int | None, receiver: str = "me") -> list[str]:
    def published_by(pid: str) -> Iterable[Track] | None:
        return published.get(pid)

    return [t.track_id for t in forwarding_plan(receiver, set(published) | {receiver}, order, published_by, last_n)]


def test_last_n_keeps_the_cameras_of_the_most_recent_speakers_and_every_microphone() -> None:
    """With last-N 2, a receiver sees the cameras of its two most recent speakers and hears everyone."""
    published = _people("a", "b", "c", "d")
    plan = _plan(published, ["c", "a", "b", "d"], last_n=2)
    assert [t for t in plan if t.endswith("camera")] == ["c-camera", "a-camera"]
    assert sorted(t for t in plan if t.endswith("microphone")) == [
        "a-microphone",
        "b-microphone",
        "c-microphone",
        "d-microphone",
    ]


def test_no_limit_sends_every_camera_in_speaker_order_then_by_id() -> None:
    """Without a limit (the recorder's plan) every camera is forwarded; unknown speakers come after, by id."""
    plan = _plan(_people("b", "a", "c"), ["c"], last_n=None)
    assert [t for t in plan if t.endswith("camera")] == ["c-camera", "a-camera", "b-camera"]


def test_evidence_is_never_cut_by_last_n() -> None:
    """Evidence video is shown to everyone, whatever last-N says about cameras."""
    published = _people("a", "b")
    published["b"].append(Track("b", "video", Source.evidence))
    plan = _plan(published, ["a", "b"], last_n=1)
    assert "b-evidence" in plan
    assert "b-camera" not in plan
    assert "a-camera" in plan


def test_muted_held_ended_and_unnegotiated_tracks_are_not_forwarded() -> None:
    """Only allowed, unheld, live tracks with a known codec are planned; a muted camera frees its last-N slot."""
    published = _people("a", "b", "c", "d")
    published["a"][0].allowed = False  # a's camera muted: b and c fill last-N 2
    published["b"][1].held = True
    published["c"][1].ended = True
    published["d"][1].codec_name = ""
    plan = _plan(published, ["a", "b", "c", "d"], last_n=2)
    assert plan == ["a-microphone", "b-camera", "c-camera"]


def test_the_receiver_and_publishers_without_a_peer_are_left_out() -> None:
    """A receiver never gets its own tracks, and a permitted publisher that has no peer contributes nothing."""
    published = _people("me", "a")

    def published_by(pid: str) -> Iterable[Track] | None:
        return published.get(pid)

    plan = forwarding_plan("me", {"me", "a", "ghost"}, ["ghost", "me", "a"], published_by, 1)
    assert [t.track_id for t in plan] == ["a-microphone", "a-camera"]
