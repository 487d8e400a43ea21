"""Lost audio is resent: Chromium behind a lossy link NACKs the Opus it loses and the node resends it.

The node offers ``a=rtcp-fb:<opus> nack`` on the audio it sends (``media.peer.with_audio_repair``); libwebrtc, which
does not announce NACK for Opus, turns it on from that offer. The test makes two network namespaces of its own,
``court`` (the server, its media node and the judge's Chromium) and ``home`` (the defendant's Chromium), joined by
a veth pair, and drops :data:`LOSS_PERCENT` of the UDP packets that reach ``home`` (nftables, where they arrive).
Over :data:`WINDOW` seconds the defendant's page must NACK the judge's audio, and the audio its jitter buffer had
to conceal must stay far below the loss (without the offer's line Chromium sends no NACK for audio and conceals
about as much as is lost).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser_fixtures import artifact_dir
from tests.netns import Shape, shape, unshape
from tests.two_sites import COURT_DEV, HOME_DEV, two_site_hearing

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

LOSS_PERCENT = 5
SETTLE = 3.0
"""Seconds after the loss starts before the window opens."""
WINDOW = 12.0


def judge_audio(group: Participants, page: Page, judge_id: str) -> dict[str, Any]:
    """The defendant page's inbound-rtp of the judge's audio (counters since the stream began)."""
    streams = [s for s in group.inbound(page) if s["participant_id"] == judge_id and s["kind"] == "audio"]
    assert len(streams) == 1, streams
    return streams[0]


def test_chromium_behind_a_lossy_link_nacks_lost_audio_and_gets_it_resent(tmp_path: Path) -> None:
    """Behind 5% random loss, the defendant's Chromium NACKs the judge's audio and conceals far less than 5%."""
    with two_site_hearing(tmp_path, artifact_dir("audio-loss")) as sites:
        at_home, defendant, judge_id = sites.at_home, sites.defendant, sites.judge_id
        at_home.wait_until(
            lambda: judge_audio(at_home, defendant, judge_id)["totalSamplesReceived"] > 0,
            what="the judge's audio playing at the defendant",
        )
        # What reaches the defendant at home loses LOSS_PERCENT, dropped where it arrives.
        shape(sites.court, COURT_DEV, Shape(loss_percent=LOSS_PERCENT), drop_at=(sites.home, HOME_DEV))
        try:
            time.sleep(SETTLE)
            first = judge_audio(at_home, defendant, judge_id)
            time.sleep(WINDOW)
            last = judge_audio(at_home, defendant, judge_id)
        finally:
            unshape(sites.court, COURT_DEV, drop_at=(sites.home, HOME_DEV))
    delta = {key: last[key] - first[key] for key in first if isinstance(first[key], int)}
    arrived, lost = delta["packetsReceived"], delta["packetsLost"]
    samples, concealed = delta["totalSamplesReceived"], delta["concealedSamples"]
    audible = (concealed - delta["silentConcealedSamples"]) / max(1, samples)
    lost_share = lost / max(1, arrived + lost)
    concealed_share = concealed / max(1, samples)
    print(
        f"behind {LOSS_PERCENT}% loss, {WINDOW:g} s of the judge's audio at the defendant: {arrived} packets, "
        f"{delta['nackCount']} NACKs, lost for good {lost_share * 100:.2f}%, concealed {concealed_share * 100:.2f}% "
        f"of {samples} samples ({delta['concealmentEvents']} concealments; not silence: {audible * 100:.2f}%)"
    )
    assert arrived > 0.5 * 50 * WINDOW, delta  # Opus at 20 ms: ~50 packets a second
    assert delta["nackCount"] > 0, ("no NACK for audio: the offer's nack line was not read", delta)
    assert lost_share < LOSS_PERCENT / 100 / 4, (round(lost_share * 100, 2), delta)
    assert concealed_share < LOSS_PERCENT / 100 / 2, (round(concealed_share * 100, 2), delta)
