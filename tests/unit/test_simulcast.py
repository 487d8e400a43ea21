"""Simulcast decisions (media.simulcast): the a=rid/a=simulcast lines read from a client's offer and written into the
node's SDP, and which layer a subscriber gets from its tile size and its link."""

from __future__ import annotations

import time
import types

import pytest

from media.bandwidth import PROBE_VERDICT, ProbeController
from media.forwarding import PublishedTrack
from media.simulcast import (
    LAYER_PROBE_SECONDS,
    LAYER_PROBE_WAIT_MAX,
    PROBED_WITHIN,
    RETRY_FAILED_WITHIN,
    RETRY_HOLD,
    RETRY_HOLD_MAX,
    UP_HOLD,
    LayerChooser,
    LayerInfo,
    best_layer,
    offered_layers,
    plan_layers,
    vp8_size,
    with_simulcast,
)
from rooms.model import Source

RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"

HEAD = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n"


def video(mid: str, *extra: str, direction: str = "sendonly") -> str:
    """One video m-section as Chromium writes it, with ``extra`` attribute lines."""
    lines = [
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "c=IN IP4 0.0.0.0",
        f"a=mid:{mid}",
        f"a={direction}",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        f"a=extmap:10 {RID}",
        f"a=extmap:11 {RRID}",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n"


AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"
LAYERS = ("a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f")


def test_a_browser_camera_offer_is_read_as_three_layers() -> None:
    """Chromium's camera m-line with three rids is taken as layers q, h, f, with its rid header extension ids."""
    sdp = HEAD + AUDIO + video("1", *LAYERS) + video("2")
    found, ignored = offered_layers(sdp)
    assert ignored == {}
    assert list(found) == ["1"]
    assert found["1"].rids == ("q", "h", "f")
    assert dict((uri, number) for number, uri in found["1"].extensions) == {RID: 10, RRID: 11}


def test_paused_and_alternative_rids_are_understood() -> None:
    """``~h`` (offered paused) and ``f,x`` (alternatives) name layers h and f."""
    sdp = HEAD + video("1", "a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;~h;f,x")
    found, ignored = offered_layers(sdp)
    assert ignored == {}
    assert found["1"].rids == ("q", "h", "f")


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (("a=rid:q send", "a=simulcast:send q;h"), "no 'a=rid:h send'"),
        (("a=rid:q send", "a=rid:h send", "a=simulcast:recv q;h"), "is not 'send <rids>'"),
        (("a=rid:q send", "a=rid:h send", "a=simulcast:send q;h recv x"), "is not 'send <rids>'"),
        (("a=rid:q send", "a=simulcast:send q"), "1 layers"),
        (
            (*tuple(f"a=rid:r{i} send" for i in range(5)), "a=simulcast:send r0;r1;r2;r3;r4"),
            "5 layers",
        ),
        (("a=rid:q send", "a=simulcast:send q;q"), "listed twice"),
        (("a=rid:q send", "a=rid:h send", "a=simulcast:send q;h", "a=simulcast:send q;h"), "more than one"),
        (("a=rid:q send", "a=rid:<b> send", "a=simulcast:send q;<b>"), "is not 1-16 letters"),
        (("a=rid:" + "x" * 300 + " send", "a=simulcast:send " + "x" * 300 + ";q"), "is not 1-16 letters"),
        (("a=simulcast:send ;;;",), "is not 1-16 letters"),
        (("a=simulcast:",), "is not 'send <rids>'"),
        (("a=simulcast:send",), "is not 'send <rids>'"),
    ],
)
def test_a_bogus_simulcast_offer_is_ignored_with_a_reason(lines: tuple[str, ...], reason: str) -> None:
    """Malformed or oversized a=simulcast / a=rid lines: the section gets no layers (one stream), and a reason."""
    found, ignored = offered_layers(HEAD + video("1", *lines))
    assert found == {}
    assert reason in ignored["1"]


def test_simulcast_where_it_cannot_apply_is_ignored() -> None:
    """Simulcast on audio, on a receive-only video, or without the rid header extension is ignored, not fatal."""
    audio = AUDIO.replace("a=sendonly\r\n", "a=sendonly\r\na=rid:q send\r\na=rid:h send\r\na=simulcast:send q;h\r\n")
    found, ignored = offered_layers(HEAD + audio)
    assert found == {}
    assert "outside a video section" in ignored["0"]
    found, ignored = offered_layers(HEAD + video("1", *LAYERS, direction="recvonly"))
    assert found == {}
    assert "recvonly" in ignored["1"]
    no_extension = video("1", *LAYERS).replace(f"a=extmap:10 {RID}\r\n", "")
    found, ignored = offered_layers(HEAD + no_extension)
    assert found == {}
    assert "rtp-stream-id" in ignored["1"]


def test_garbage_never_raises() -> None:
    """Anything at all as an SDP gives no layers and no exception."""
    for text in ("", "m=", "m=video\r\na=simulcast:send q;h", "\x00" * 100, "a=rid:\r\n" * 1000, "m=video 9\na=mid:"):
        found, _ = offered_layers(text)
        assert found == {}


def test_the_answer_and_every_node_offer_say_what_the_node_receives() -> None:
    """The node's SDP gets ``a=rid:<r> recv`` per layer and ``a=simulcast:recv`` in that mid's section only."""
    answer = HEAD + AUDIO + video("1", direction="recvonly") + video("2", direction="recvonly")
    out = with_simulcast(answer, {"1": ("q", "h", "f")})
    sections = out.split("m=")
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n" in sections[2]
    assert "a=rid" not in sections[3]
    assert "a=simulcast" not in sections[3]
    assert "a=rid" not in sections[1]
    assert out.endswith("\r\n")
    assert "\r\n\r\n" not in out
    # Idempotent: a re-offer munged again carries the lines once.
    assert with_simulcast(out, {"1": ("q", "h", "f")}) == out
    # Stale lines from an earlier description are replaced, not added to.
    assert with_simulcast(out, {"1": ("q", "f")}).count("a=rid:") == 2
    # Nothing to add: unchanged.
    assert with_simulcast(answer, {}) == answer
    assert with_simulcast(answer, {"9": ("q", "h")}) == answer


def test_what_the_node_writes_is_what_it_reads() -> None:
    """A client offer's layers written back as the node's receive side name the same rids in the same order."""
    offer = HEAD + video("1", *LAYERS)
    found, _ = offered_layers(offer)
    out = with_simulcast(HEAD + video("1", direction="recvonly"), {"1": found["1"].rids})
    assert "a=simulcast:recv q;h;f" in out


def layer(rid: str, width: int, bitrate: int, active: bool = True) -> LayerInfo:
    return LayerInfo(rid=rid, width=width, height=width * 3 // 4, bitrate=bitrate, active=active)


THREE = [layer("q", 160, 100_000), layer("h", 320, 350_000), layer("f", 640, 1_000_000)]


def test_the_tile_picks_the_smallest_layer_big_enough() -> None:
    """A big tile gets the full layer, a 300 px one the half layer, a thumbnail the quarter, a hidden one the least."""
    assert best_layer(THREE, None, None) == 2
    assert best_layer(THREE, (1248, 520), None) == 2
    assert best_layer(THREE, (448, 252), None) == 1
    assert best_layer(THREE, (180, 100), None) == 0
    assert best_layer(THREE, (0, 0), None) == 0


def test_the_budget_steps_down_and_never_pauses() -> None:
    """A budget below the tile's layer gives the largest layer that fits; below every layer, the smallest."""
    assert best_layer(THREE, (1248, 520), 500_000) == 1
    assert best_layer(THREE, (1248, 520), 50_000) == 0
    assert best_layer(THREE, (448, 252), 5_000_000) == 1  # never above what the tile needs


def test_inactive_layers_are_not_chosen_and_order_follows_sizes() -> None:
    """A layer the publisher stopped sending is skipped; layers offered largest first are still ordered by size."""
    assert best_layer([layer("q", 160, 1), layer("h", 320, 1), layer("f", 640, 1, active=False)], None, None) == 1
    assert best_layer([layer("f", 640, 1, active=False)], None, None) is None
    reversed_offer = [layer("f", 640, 900_000), layer("h", 320, 300_000), layer("q", 160, 90_000)]
    assert best_layer(reversed_offer, (180, 100), None) == 2
    assert best_layer(reversed_offer, None, None) == 0


def test_the_chooser_goes_down_at_once_and_up_only_after_a_hold() -> None:
    """Down switches are immediate; an up switch waits UP_HOLD seconds of the better choice, so it cannot flap."""
    chooser = LayerChooser()
    assert chooser.decide(0.0, THREE, None, None) == "f"
    assert chooser.decide(1.0, THREE, (180, 100), None) == "q"  # the tile shrank
    assert chooser.decide(1.5, THREE, (1248, 520), None) == "q"  # better, but not for long enough yet
    assert chooser.decide(1.5 + UP_HOLD / 2, THREE, (180, 100), None) == "q"  # fell back: the hold restarts
    assert chooser.decide(2.0 + UP_HOLD / 2, THREE, (1248, 520), None) == "q"
    assert chooser.decide(2.0 + UP_HOLD / 2 + UP_HOLD, THREE, (1248, 520), None) == "f"
    # The current layer stops: the next choice is taken at once.
    stopped = [THREE[0], THREE[1], layer("f", 640, 0, active=False)]
    assert chooser.decide(20.0, stopped, (1248, 520), None) == "h"


def test_a_layer_the_link_refused_is_retried_after_a_hold_that_doubles_each_time_it_fails() -> None:
    """Stepped down by its link (loss and a low estimate), a subscriber whose link then looks clean goes back up
    only after RETRY_HOLD, and each time the link refuses that layer again soon after, the hold doubles: a thin link
    does not flap between layers every few seconds."""
    chooser = LayerChooser()
    big = (1248, 520)
    assert chooser.decide(0.0, THREE, big, None) == "f"
    assert chooser.decide(1.0, THREE, big, 500_000) == "h"  # the link refused f
    # No loss seen any more (no budget): the tile asks for f, but the link refused it: not after UP_HOLD.
    assert chooser.decide(2.0, THREE, big, None) == "h"
    assert chooser.decide(2.0 + UP_HOLD + 0.1, THREE, big, None) == "h"
    assert chooser.decide(2.0 + RETRY_HOLD, THREE, big, None) == "f"  # the retry
    now = 2.0 + RETRY_HOLD + 1.0
    assert chooser.decide(now, THREE, big, 500_000) == "h"  # refused again at once: the retry failed
    assert chooser.decide(now + 0.5, THREE, big, None) == "h"
    assert chooser.decide(now + 0.5 + RETRY_HOLD, THREE, big, None) == "h"  # the hold doubled
    assert chooser.decide(now + 0.5 + 2 * RETRY_HOLD, THREE, big, None) == "f"
    # It holds this time: once it has stayed up long enough, the refusal is forgotten; a later step down by the
    # link starts from RETRY_HOLD again, and a step down by the tile leaves the usual UP_HOLD.
    later = now + 0.5 + 2 * RETRY_HOLD + RETRY_FAILED_WITHIN + 1.0
    assert chooser.decide(later, THREE, big, None) == "f"
    assert chooser.decide(later + 1.0, THREE, (448, 252), None) == "h"
    assert chooser.decide(later + 2.0, THREE, big, None) == "h"
    assert chooser.decide(later + 2.0 + UP_HOLD, THREE, big, None) == "f"
    assert chooser.decide(later + 30.0, THREE, big, 500_000) == "h"
    assert chooser.decide(later + 31.0, THREE, big, None) == "h"
    assert chooser.decide(later + 31.0 + RETRY_HOLD, THREE, big, None) == "f"
    # The hold never grows past RETRY_HOLD_MAX.
    at = later + 100.0
    for _ in range(8):
        assert chooser.decide(at, THREE, big, 500_000) == "h"
        assert chooser.decide(at + 1.0, THREE, big, None) == "h"
        at += 1.0 + RETRY_HOLD_MAX
        assert chooser.decide(at, THREE, big, None) == "f"


def test_a_probe_that_shows_the_link_carries_the_refused_layer_lets_the_subscriber_up_at_once() -> None:
    """A subscriber the link stepped down asks for a probe the size of the step back up (not when only the tile or
    the hold after a tile change keeps it down); once a probe passes, it goes up at once, without the retry hold."""
    chooser = LayerChooser()
    big = (1248, 520)
    assert chooser.link_gap(THREE, big) == 0  # nothing chosen yet
    assert chooser.decide(0.0, THREE, big, None) == "f"
    assert chooser.link_gap(THREE, big) == 0  # on the layer its tile wants
    assert not chooser.held
    assert chooser.decide(1.0, THREE, big, 400_000) == "h"  # the link refused f
    assert chooser.held
    assert chooser.link_gap(THREE, big) == 1_000_000 - 350_000
    assert chooser.link_gap(THREE, (300, 200)) == 0  # the tile alone wants h: nothing to probe for
    assert chooser.decide(2.0, THREE, big, None) == "h"  # clean again, but refused: the retry hold
    chooser.probed(2.5)
    assert not chooser.held
    assert chooser.link_gap(THREE, big) == 0
    assert chooser.decide(2.6, THREE, big, None) == "f"  # up at once
    # The probe's word lasts PROBED_WITHIN: a later up switch waits for UP_HOLD again.
    assert chooser.decide(10.0, THREE, (448, 252), None) == "h"  # the tile shrank
    assert chooser.link_gap(THREE, big) == 0  # stepped down by the tile, not the link: no probe
    assert chooser.decide(10.0 + PROBED_WITHIN, THREE, big, None) == "h"
    assert chooser.decide(10.0 + PROBED_WITHIN + UP_HOLD, THREE, big, None) == "f"
    # From the smallest layer, a probe is sized for the whole way up to the tile's layer.
    chooser = LayerChooser()
    assert chooser.decide(0.0, THREE, big, None) == "f"
    assert chooser.decide(1.0, THREE, big, 200_000) == "q"
    assert chooser.link_gap(THREE, big) == 1_000_000 - 100_000


def test_a_layer_probe_pads_for_its_own_length_before_its_verdict() -> None:
    """A probe for a refused layer sends padding for LAYER_PROBE_SECONDS (long enough to overflow a router's buffer
    on a link that cannot carry the step), and is judged only after that; a probe for paused video stays short."""
    prober = ProbeController(hold=3.0)
    prober.start(10.0, 900_000, 400_000, 300_000, seconds=LAYER_PROBE_SECONDS)
    assert prober.padding(10.0 + LAYER_PROBE_SECONDS - 0.01)
    assert prober.verdict(10.0 + LAYER_PROBE_SECONDS, dirty_at=0.0, estimate=300_000) is None
    assert prober.verdict(10.01 + LAYER_PROBE_SECONDS + PROBE_VERDICT, dirty_at=0.0, estimate=300_000) is True
    prober.start(20.0, 900_000, 400_000, 300_000)
    assert not prober.padding(20.0 + LAYER_PROBE_SECONDS - 0.01)


def test_a_failed_layer_probe_is_tried_again_within_its_own_wait_cap() -> None:
    """Failed layer probes back off only to LAYER_PROBE_WAIT_MAX (their overflow is one layer step), while failed
    probes for paused video keep doubling towards a minute."""
    layered, paused = ProbeController(hold=3.0), ProbeController(hold=3.0)
    now = 10.0
    for _ in range(6):
        layered.start(now, 900_000, 400_000, 300_000, seconds=LAYER_PROBE_SECONDS, wait_max=LAYER_PROBE_WAIT_MAX)
        paused.start(now, 900_000, 400_000, 300_000)
        assert layered.verdict(now + 0.1, dirty_at=now + 0.05, estimate=300_000) is False
        assert paused.verdict(now + 0.1, dirty_at=now + 0.05, estimate=300_000) is False
        assert layered.next_at - (now + 0.1) <= LAYER_PROBE_WAIT_MAX
        now += 100.0
    assert paused.next_at - (now - 100.0 + 0.1) > LAYER_PROBE_WAIT_MAX


def test_a_constrained_subscriber_steps_videos_down_by_priority() -> None:
    """Within the estimate, the top video keeps its layer and the next steps down before anything pauses."""
    layers = {"judge": (THREE, (1248, 520)), "witness": (THREE, (1248, 520))}
    needs, budgets = plan_layers([("judge", 1_450_000), ("witness", 1_450_000)], layers, 1_500_000)
    assert needs == {"judge": 1_000_000, "witness": 350_000}
    assert budgets == {"judge": 1_500_000, "witness": 500_000}
    needs, budgets = plan_layers([("judge", 1_450_000), ("witness", 1_450_000)], layers, None)
    assert needs == {"judge": 1_000_000, "witness": 1_000_000}
    assert budgets == {"judge": None, "witness": None}
    # A single-stream video keeps its bitrate and takes its share first.
    needs, _ = plan_layers([("evidence", 1_200_000), ("judge", 1_450_000)], {"judge": layers["judge"]}, 1_500_000)
    assert needs == {"evidence": 1_200_000, "judge": 100_000}


def test_vp8_keyframe_sizes_are_read() -> None:
    """The width and height of a VP8 key frame come from its header; delta frames and junk give none."""
    key = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]) + (640).to_bytes(2, "little") + (480).to_bytes(2, "little")
    assert vp8_size(key + b"\x00" * 20) == (640, 480)
    assert vp8_size(bytes([0x11]) + key[1:]) is None
    assert vp8_size(b"\x00\x01") is None


def test_interleaved_layers_are_not_taken_for_loss() -> None:
    """Two layers' packets interleaved on one receiver ask for no resend; a real gap in one layer does, for it only."""
    from aiortc.rtp import RtpPacket

    from media.aiortc_compat import PerSsrcNacks

    nacks = PerSsrcNacks()
    asked = [
        nacks.add(RtpPacket(sequence_number=base + n, ssrc=ssrc))
        for n in range(50)
        for ssrc, base in ((1111, 100), (2222, 40_000))
    ]
    assert not any(asked)
    assert nacks.add(RtpPacket(sequence_number=100 + 52, ssrc=1111))
    assert nacks.missing == {150, 151}
    assert not nacks.add(RtpPacket(sequence_number=40_000 + 50, ssrc=2222))


async def test_a_layer_started_again_is_read_over_the_time_since_not_as_nearly_free() -> None:
    """A publisher stops a layer and starts it again (Chromium does, as its own estimate moves): its meter's window
    is then mostly silence, and read as is, the layer looked nearly free (8 kbit/s for a 400 kbit/s layer half a
    second back): the allocator resumed a paused video on it for a thin-linked subscriber, whose link overflowed
    0.8 s later. Read over the time since it started again, it costs what it sends."""

    async def pli(_ssrc: int) -> None:
        return None

    track = PublishedTrack(
        hearing_id="h",
        participant_id="p",
        track_id="t",
        kind="video",
        source=Source.camera,
        receiver=types.SimpleNamespace(_send_rtcp_pli=pli),  # type: ignore[arg-type]
        keyframe_interval=1.0,
        on_refused=lambda _: None,
        on_audio_level=lambda _, __: None,
    )
    steady, restarted = track.add_layers(["h", "f"])
    packet = types.SimpleNamespace(payload=bytes(1000), ssrc=1, extensions=types.SimpleNamespace(audio_level=None))
    now = time.monotonic()
    for layer in (steady, restarted):
        layer.bitrate(now - 1.9)  # (the meters' first samples: both layers silent then, for the test's clock)
        layer.meter._samples[0] = (now - 1.9, 0)
    steady.last_packet_at = now - 0.05  # flowing all along
    steady.active_since = now - 30.0
    restarted.last_packet_at = now - 5.0  # stopped 5 s ago
    for _ in range(25):
        steady.on_packet(packet)  # type: ignore[arg-type]
        restarted.on_packet(packet)  # type: ignore[arg-type]
    assert restarted.active_since is not None
    assert restarted.active_since >= now, "a packet after a silence starts the layer again"
    assert steady.active_since == now - 30.0
    infos = {info.rid: info for info in track.layer_infos(time.monotonic())}
    assert infos["h"].active
    assert infos["f"].active
    # The same bytes in the window: the steady layer's rate over 1.9 s, the restarted one's over at least 0.2 s.
    assert infos["h"].bitrate < 120_000
    assert infos["f"].bitrate >= 9 * infos["h"].bitrate
