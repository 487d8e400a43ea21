"""Keyframe requests per publisher per minute on a quiet loopback hearing.

One publisher (the judge: camera and microphone, aiortc's VP8 encoder, which
makes a keyframe only at the start, every 3000 frames, or when asked) is
forwarded by an in-process node to two decoding subscribers and a recorder
sink, all real aiortc peers on 127.0.0.1. The figure is the keyframe requests
(PLI/FIR) that reach the publisher's sender, per minute, in phases:

1. ``quiet``: everyone connected and receiving, nothing changes.
2. ``stuck``: one more participant may receive the judge but never completes
   its node's offer (a client that hangs, or one whose network never lets its
   media connect): its slot is assigned but cannot send.
3. ``burst``: eight more subscribers join at once: requests for the burst
   (one is enough: the keyframe serves them all).
4. ``segments``: the recorder asks for a keyframe every ``--segment`` seconds
   (as it does to start a segment; ``InProcessNode.request_keyframe``).

Also printed: the node's own count per reason where the node keeps one
(``PublishedTrack.keyframe_counts``). Nothing is asserted (benchmarks are not
tests). Usage::

    /work/team/heavy .venv/bin/python -m bench.keyframes [--seconds 30] [--segment 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import structlog

from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.frames import EncodedFrame, SenderReport, TrackInfo
from protocol.node import SetPublishing, SetReceiving
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_keyframes"
JUDGE = "judge"


class CountingSink:
    """A recorder's frame sink that only counts what it is given."""

    def __init__(self) -> None:
        self.frames = 0
        self.keyframes = 0
        self.tracks: list[TrackInfo] = []

    def track_started(self, info: TrackInfo) -> None:
        """A track starts."""
        self.tracks.append(info)

    def frame(self, frame: EncodedFrame) -> None:
        """One frame."""
        self.frames += 1
        self.keyframes += frame.keyframe

    def sender_report(self, report: SenderReport) -> None:
        """Ignored."""

    def track_stopped(self, track_id: str, reason: str) -> None:
        """Ignored."""


def _node_counts(node: InProcessNode) -> dict[str, Any]:
    peer = node.peer(HEARING, JUDGE)
    if peer is None:
        return {}
    for track in peer.published.values():
        if track.kind == "video":
            counts = getattr(track, "keyframe_counts", None)
            if counts is not None:
                return dict(counts.summary())
            return {"sent": track.keyframe_requests}
    return {}


async def _receive(node: InProcessNode, signaling: DirectSignaling, name: str, *, decode: bool) -> MediaClient:
    client = MediaClient(name, video=False, audio=False, count_only=not decode)
    await signaling.join(client)
    await node.call(SetReceiving(hearing_id=HEARING, participant_id=name, publishers=(JUDGE,)))
    return client


async def _phase(
    label: str, judge: MediaClient, node: InProcessNode, seconds: float, rows: list[tuple[str, float, int, str]]
) -> None:
    before, started = judge.keyframe_requests, time.monotonic()
    counts_before = _node_counts(node)
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    got = judge.keyframe_requests - before
    after = _node_counts(node)
    delta = {
        k: v - counts_before.get(k, 0) for k, v in after.items() if isinstance(v, int) and v != counts_before.get(k, 0)
    }
    rows.append((label, got * 60 / elapsed, got, " ".join(f"{k}={v}" for k, v in sorted(delta.items()))))


async def main(seconds: float, segment: float) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    node = InProcessNode(NodeSettings())
    rows: list[tuple[str, float, int, str]] = []
    async with hearing(node, HEARING) as signaling:
        judge = MediaClient(JUDGE, tag=5)
        await signaling.join(judge, Role.judge)
        await node.call(
            SetPublishing(hearing_id=HEARING, participant_id=JUDGE, sources=(Source.camera, Source.microphone))
        )
        subscribers = [await _receive(node, signaling, name, decode=True) for name in ("clerk", "defendant")]
        sink = CountingSink()
        node.attach_recorder(HEARING, "recorder", sink)
        await node.call(SetReceiving(hearing_id=HEARING, participant_id="recorder", publishers=(JUDGE,)))
        if not await eventually(lambda: all(s.codes(5) for s in subscribers) and sink.keyframes > 0, within=20):
            print("subscribers did not decode the judge's video")
        await asyncio.sleep(2)  # the start-up requests are not part of any phase

        await _phase("quiet", judge, node, seconds, rows)

        stuck = MediaClient("stuck", video=False, audio=False, count_only=True)
        await signaling.join(stuck)
        del signaling.clients["stuck"]  # its node offers are never answered from now on
        await node.call(SetReceiving(hearing_id=HEARING, participant_id="stuck", publishers=(JUDGE,)))
        await _phase("stuck", judge, node, seconds, rows)
        await node.call(SetReceiving(hearing_id=HEARING, participant_id="stuck", publishers=()))
        await asyncio.sleep(2)

        before = judge.keyframe_requests
        counts_before = _node_counts(node)
        burst = await asyncio.gather(*(_receive(node, signaling, f"late{i}", decode=False) for i in range(8)))
        await eventually(lambda: all(c.rtp_packets("video") > 0 for c in burst), within=20)
        await asyncio.sleep(2)
        got = judge.keyframe_requests - before
        after = _node_counts(node)
        delta = {
            k: v - counts_before.get(k, 0)
            for k, v in after.items()
            if isinstance(v, int) and v != counts_before.get(k, 0)
        }
        rows.append(("burst (8 join)", float("nan"), got, " ".join(f"{k}={v}" for k, v in sorted(delta.items()))))
        for client in burst:
            await node.call(SetReceiving(hearing_id=HEARING, participant_id=client.name, publishers=()))
        await asyncio.sleep(2)

        recorder_track = next(t.track_id for t in sink.tracks if t.kind == "video")

        async def segments() -> None:
            while True:
                await asyncio.sleep(segment)
                node.request_keyframe(HEARING, recorder_track)

        ticker = asyncio.ensure_future(segments())
        await _phase(f"segments ({segment:g} s)", judge, node, seconds, rows)
        ticker.cancel()
    print(f"keyframe requests reaching the publisher ({seconds:g} s per phase):")
    print(f"{'phase':<20} {'per minute':>10} {'count':>6}  node counts")
    for label, per_minute, count, detail in rows:
        figure = "-" if per_minute != per_minute else f"{per_minute:.1f}"
        print(f"{label:<20} {figure:>10} {count:>6}  {detail}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each timed phase")
    parser.add_argument("--segment", type=float, default=10.0, help="the recorder's segment length")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.segment))
