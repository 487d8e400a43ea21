"""Per-receiver speaker detection, who is told of a speaker, and the per-participant offer budget."""

from __future__ import annotations

import pytest

from media.peer import (
    MAX_MLINES,
    MAX_SENDING_MLINES,
    NegotiationError,
    check_offer_size,
    offer_mline_limit,
    with_audio_repair,
)
from media.speaker import SpeakerDetector
from rooms.model import HearingState
from signaling.session import OFFER_BURST, SessionError
from tests.media_clients import audio_nack_mids
from tests.unit.test_session import Harness

LOUD, QUIET = 10, 90


def speak(detector: SpeakerDetector, pid: str, seconds: float, start: float) -> list[tuple[str, str]]:
    """``pid`` talks loudly for ``seconds`` from ``start`` (one packet per 20 ms); every change reported."""
    changes: list[tuple[str, str]] = []
    for i in range(int(seconds / 0.02)):
        changes += detector.observe(pid, LOUD, start + i * 0.02)
    return changes


def test_consultation_member_is_never_the_courtroom_speaker() -> None:
    """A loud consultation member becomes the speaker of their consultation only; the courtroom hears the judge."""
    d = SpeakerDetector(window=1.0, hold=0.3, silence_dbov=60)
    for pid in ("judge", "clerk", "defendant", "counsel"):
        d.join(pid)
    courtroom = {"judge", "clerk"}
    consultation = {"defendant", "counsel"}
    d.set_audiences({pid: courtroom for pid in courtroom} | {pid: consultation for pid in consultation})
    changes = speak(d, "defendant", 2.0, 0.0)
    assert changes
    assert {receiver for receiver, _ in changes} == consultation
    assert d.active_for("judge") is None
    assert d.order_for("judge")[:2] == ["judge", "clerk"]  # the defendant moved up nobody's last-N in the courtroom
    # The judge speaking (softer than the defendant) still becomes the courtroom's speaker.
    changes = []
    for i in range(150):
        now = 2.0 + i * 0.02
        changes += d.observe("defendant", LOUD, now)
        changes += d.observe("judge", 40, now)
    assert {(r, s) for r, s in changes} == {("judge", "judge"), ("clerk", "judge")}
    assert d.active_for("counsel") == "defendant"


def test_speaker_order_follows_the_audience_after_it_changes() -> None:
    """When the consultation ends, its members become part of the courtroom's audience and can lead it."""
    d = SpeakerDetector(window=1.0, hold=0.3, silence_dbov=60)
    for pid in ("judge", "defendant"):
        d.join(pid)
    d.set_audiences({"judge": {"judge"}, "defendant": {"defendant"}})
    assert ("judge", "defendant") not in speak(d, "defendant", 1.5, 0.0)
    d.set_audiences({"judge": {"judge", "defendant"}, "defendant": {"judge", "defendant"}})
    assert ("judge", "defendant") in speak(d, "defendant", 1.5, 2.0)
    assert d.order_for("judge")[0] == "defendant"
    d.leave("defendant")
    assert d.active_for("judge") is None
    assert d.order_for("judge") == ["judge"]


def test_speaker_messages_go_only_to_who_may_receive_the_speaker() -> None:
    """The courtroom is never told that a member of a consultation speaks; the consultation and the speaker are."""
    h = Harness(HearingState.open)
    for pid in ("judge", "prosecutor", "defendant", "counsel"):
        h.join(pid)
    for pid in ("prosecutor", "defendant", "counsel"):
        h.do(h.room.admit(h.c("judge"), pid))
    h.do(h.room.consult(h.c("judge"), ["defendant", "counsel"]))
    inside = {h.c("defendant"), h.c("counsel")}
    assert set(h.room.speaker_receivers("defendant")) == inside
    assert h.room.speaker_receivers("defendant", "judge") == []
    assert h.room.speaker_receivers("defendant", "counsel") == [h.c("counsel")]
    assert set(h.room.speaker_receivers("judge")) == {h.c("judge"), h.c("prosecutor")}
    h.do(h.room.end_consult(h.c("judge"), ["defendant", "counsel"]))
    assert h.room.speaker_receivers("defendant", "judge") == [h.c("judge")]


def test_offers_beyond_the_budget_are_refused_and_resume_does_not_refill() -> None:
    """A participant offering in a loop gets too_many_offers; a drop and resume keeps the spent budget."""
    h = Harness(HearingState.open)
    h.join("judge")
    for _ in range(OFFER_BURST):
        h.room.check_offer_rate("judge", 100.0)
    with pytest.raises(SessionError) as refused:
        h.room.check_offer_rate("judge", 100.0)
    assert refused.value.code == "too_many_offers"
    h.do(h.room.disconnect(h.c("judge")))
    h.join("judge", resume=h.resume["judge"])
    with pytest.raises(SessionError):
        h.room.check_offer_rate("judge", 100.5)
    h.room.check_offer_rate("judge", 103.0)  # refilled with time


def test_offer_size_is_capped_by_the_hearing_size() -> None:
    """A 7-person hearing allows a few m-lines per person, not 256; oversized offers are refused before parsing."""
    limit = offer_mline_limit(7)
    assert MAX_SENDING_MLINES < limit <= 8  # a first offer: what a client sends, and a small margin
    assert MAX_SENDING_MLINES + 6 < offer_mline_limit(7, current=20) <= 30  # in all: a few per person
    assert offer_mline_limit(7, current=40) == 40 + MAX_SENDING_MLINES  # a re-offer of what the node added
    assert offer_mline_limit(500, current=300) == MAX_MLINES
    sdp = "v=0\r\n" + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" * (limit + 1)
    with pytest.raises(NegotiationError) as refused:
        check_offer_size(sdp, limit)
    assert refused.value.code == "too_many_media_sections"
    check_offer_size("v=0\r\n" + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" * limit, limit)
    with pytest.raises(NegotiationError) as big:
        check_offer_size("v=0\r\n" + "a=x\r\n" * 100_000, limit)
    assert big.value.code == "sdp_too_large"


NODE_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=mid:0\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\na=mid:1\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\na=mid:2\r\na=rtcp-mux\r\n"
    "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n"
)


def test_node_sdp_asks_nack_on_the_opus_it_sends_and_fec_on_the_opus_it_receives() -> None:
    """Audio the node sends (``sendonly``) offers NACK on Opus; audio it receives (``recvonly``) takes in-band FEC
    (``useinbandfec=1``); once however often the SDP passes; video is left as it was."""
    offered = with_audio_repair(NODE_OFFER)
    assert audio_nack_mids(offered) == {"1"}
    assert with_audio_repair(offered) == offered
    lines = offered.splitlines()
    assert [line for line in lines if line.startswith("a=rtcp-fb:")] == [
        "a=rtcp-fb:111 nack",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
    ]
    assert [line for line in lines if line.startswith("a=fmtp:")] == ["a=fmtp:111 minptime=10;useinbandfec=1"]
    assert lines.index("a=fmtp:111 minptime=10;useinbandfec=1") < lines.index("a=mid:1")  # (the recvonly m-line's)
    # What the client offered of its own is kept beside it.
    own = NODE_OFFER.replace(
        "a=rtpmap:111 opus/48000/2\r\nm=audio", "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 stereo=1\r\nm=audio"
    )
    assert "a=fmtp:111 stereo=1;minptime=10;useinbandfec=1" in with_audio_repair(own).splitlines()
