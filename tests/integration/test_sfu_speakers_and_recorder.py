"""Active speaker and last-N video, and the recorder tap, on the in-process node with real peers on loopback."""

from __future__ import annotations

import av

from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.frames import EncodedFrame, SenderReport, TrackInfo
from protocol.node import SetPublishing, SetReceiving, SpeakerChanged
from rooms.model import Role, Source
from tests.media_clients import MediaClient, eventually, hearing, read_code

HEARING = "hrg_speakers"
BOTH = (Source.camera, Source.microphone)


async def test_last_n_video_follows_the_active_speaker() -> None:
    """With last-N = 1 a subscriber sees the video of whoever speaks, and only theirs."""
    node = InProcessNode(NodeSettings(node_id="node-test", last_n=1, speaker_hold=0.3))
    async with hearing(node, HEARING) as signaling:
        quiet = MediaClient("witness", tag=22, loud=False)
        loud = MediaClient("counsel", tag=21, loud=True)
        viewer = MediaClient("judge", video=False, audio=False)
        for client, role in ((quiet, Role.witness), (loud, Role.counsel), (viewer, Role.judge)):
            await signaling.join(client, role)
            await node.call(SetPublishing(hearing_id=HEARING, participant_id=client.name, sources=BOTH))
        await node.call(SetReceiving(hearing_id=HEARING, participant_id="judge", publishers=("witness", "counsel")))

        def speaker() -> str | None:
            changes = [e for e in signaling.events if isinstance(e, SpeakerChanged)]
            return changes[-1].participant_id if changes else None

        assert await eventually(lambda: speaker() == "counsel", within=15)
        assert await eventually(lambda: len(viewer.codes(21)) >= 10, within=15)
        assert await eventually(lambda: viewer.mids_of("witness", "video") == [])
        assert len(viewer.mids_of("counsel", "video")) == 1
        assert len(viewer.mids_of("witness", "audio")) == 1  # audio of every permitted publisher

        assert loud.audio is not None
        assert quiet.audio is not None
        loud.audio.loud, quiet.audio.loud = False, True
        before = len(viewer.codes(22))  # the witness's video may have shown before anyone spoke
        assert await eventually(lambda: speaker() == "witness", within=15)
        assert await eventually(lambda: len(viewer.codes(22)) >= before + 10, within=15)
        assert await eventually(lambda: viewer.mids_of("counsel", "video") == [])
        assert len(viewer.mids_of("witness", "video")) == 1
        assert not signaling.failures


class CollectingSink:
    """A FrameSink that keeps everything it is handed."""

    def __init__(self) -> None:
        self.started: list[TrackInfo] = []
        self.frames: list[EncodedFrame] = []
        self.reports: list[SenderReport] = []
        self.stopped: list[tuple[str, str]] = []

    def track_started(self, info: TrackInfo) -> None:
        self.started.append(info)

    def frame(self, frame: EncodedFrame) -> None:
        self.frames.append(frame)

    def sender_report(self, report: SenderReport) -> None:
        self.reports.append(report)

    def track_stopped(self, track_id: str, reason: str) -> None:
        self.stopped.append((track_id, reason))


async def test_recorder_gets_decodable_frames_and_sender_reports() -> None:
    """A recorder attached to the hearing gets keyframe-first encoded frames and SR timing of what it may receive."""
    node = InProcessNode(NodeSettings(node_id="node-test"))
    async with hearing(node, HEARING) as signaling:
        judge = MediaClient("judge", tag=31)
        await signaling.join(judge, Role.judge)
        await node.call(SetPublishing(hearing_id=HEARING, participant_id="judge", sources=BOTH))
        sink = CollectingSink()
        # Signaling may push the recorder's permissions before its sink is attached.
        await node.call(SetReceiving(hearing_id=HEARING, participant_id="recorder", publishers=("judge",)))
        assert sink.started == []
        node.attach_recorder(HEARING, "recorder", sink)
        assert {(i.kind, i.codec, i.participant_id) for i in sink.started} == {
            ("audio", "opus", "judge"),
            ("video", "VP8", "judge"),
        }
        video = next(i for i in sink.started if i.kind == "video")
        assert await eventually(lambda: sum(f.track_id == video.track_id for f in sink.frames) >= 30, within=15)
        assert await eventually(lambda: {r.track_id for r in sink.reports} >= {i.track_id for i in sink.started})

        video_frames = [f for f in sink.frames if f.track_id == video.track_id]
        assert video_frames[0].keyframe
        decoder = av.CodecContext.create("vp8", "r")
        codes = [read_code(frame) for f in video_frames for frame in decoder.decode(av.Packet(f.payload))]
        assert len(codes) == len(video_frames)
        assert all(tag == 31 for tag, _ in codes)
        stamps = [f.rtp_timestamp for f in video_frames]
        assert stamps == sorted(stamps)

        await node.call(SetReceiving(hearing_id=HEARING, participant_id="recorder", publishers=()))
        assert sorted(reason for _, reason in sink.stopped) == ["not_permitted", "not_permitted"]
        received = len(sink.frames)
        await signaling.join(MediaClient("clerk", video=False, audio=False), Role.clerk)
        assert len(sink.frames) == received


def _msid_tracks(sdp: str) -> dict[str, str]:
    """kind -> the track id of that kind's m-line msid."""
    found: dict[str, str] = {}
    kind = ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
        elif line.startswith("a=msid:") and kind not in found:
            found[kind] = line.split(" ")[-1]
    return found


async def test_recorder_keeps_two_participants_apart_when_they_send_the_same_track_id() -> None:
    """A client reusing another's track id never merges their media in the archive: distinct recorder tracks."""
    from protocol.node import ApplyOffer, CreatePeer, SdpAnswer

    node = InProcessNode(NodeSettings(node_id="node-test"))
    async with hearing(node, HEARING) as signaling:
        judge = MediaClient("judge", tag=41)
        await signaling.join(judge, Role.judge)
        copycat = MediaClient("party", tag=42)
        signaling.clients["party"] = copycat
        await node.call(CreatePeer(hearing_id=HEARING, participant_id="party", role=Role.party))
        sdp = await copycat.offer()
        judge_ids = _msid_tracks(str(judge.pc.localDescription.sdp))
        for kind, own in _msid_tracks(sdp).items():
            sdp = sdp.replace(own, judge_ids[kind])
        reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="party", sdp=sdp))
        assert isinstance(reply, SdpAnswer), reply
        await copycat.accept_answer(reply.sdp)
        for pid in ("judge", "party"):
            await node.call(SetPublishing(hearing_id=HEARING, participant_id=pid, sources=BOTH))
        sink = CollectingSink()
        await node.call(SetReceiving(hearing_id=HEARING, participant_id="recorder", publishers=("judge", "party")))
        node.attach_recorder(HEARING, "recorder", sink)
        assert await eventually(lambda: len(sink.started) == 4, within=15)
        assert len({i.track_id for i in sink.started}) == 4
        videos = {i.participant_id: i.track_id for i in sink.started if i.kind == "video"}
        assert set(videos) == {"judge", "party"}
        assert await eventually(
            lambda: all(sum(f.track_id == t for f in sink.frames) >= 10 for t in videos.values()), within=15
        )
        decoder = {pid: av.CodecContext.create("vp8", "r") for pid in videos}
        for pid, track in videos.items():
            frames = [f for f in sink.frames if f.track_id == track]
            tags = {read_code(fr)[0] for f in frames for fr in decoder[pid].decode(av.Packet(f.payload))}
            assert tags == {41 if pid == "judge" else 42}
    await node.close()
