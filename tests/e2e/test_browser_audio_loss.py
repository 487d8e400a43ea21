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

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import sync_playwright

from tests.browser_fixtures import (
    artifact_dir,
    book_hearing,
    chromium_in,
    fake_video_clip,
    namespace_args,
    participant_group,
    require_chromium,
    run_server,
)
from tests.netns import Shape, namespaces, netns_thread, shape, unshape

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.browser_fixtures import Participants

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

COURT_ADDRESS = "10.77.0.1"
HOME_ADDRESS = "10.77.0.2"
COURT_DEV, HOME_DEV = "vcourt", "vhome"
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
    require_chromium()
    shots = artifact_dir("audio-loss")
    clip = fake_video_clip(tmp_path / "small.y4m")
    with (
        namespaces(addresses=(COURT_ADDRESS, HOME_ADDRESS), devices=(COURT_DEV, HOME_DEV)) as (court, home),
        netns_thread(court) as in_court,
        run_server(
            tmp_path / "serve",
            host=COURT_ADDRESS,
            wrap=("nsenter", f"--net=/run/netns/{court}"),
            env_extra={"COURTLINK_MEDIA__ANNOUNCE_ADDRESSES": f'["{COURT_ADDRESS}"]'},
            via=in_court,
        ) as server,
    ):
        try:
            _scenario(server, court, home, clip, tmp_path)
        finally:
            unshape(court, COURT_DEV, drop_at=(home, HOME_DEV))
            shutil.copyfile(server.log_path, shots / "server.log")


def _scenario(server: Any, court: str, home: str, clip: Path, tmp_path: Path) -> None:
    booking = book_hearing(server, [("Zhang Wei", "judge", "court"), ("Ma Jun", "defendant", "remote")])
    judge_id = booking.ids["judge"]
    allowed = frozenset({COURT_ADDRESS})
    args = namespace_args(server.base_url, COURT_ADDRESS, f"--use-file-for-fake-video-capture={clip}")
    with sync_playwright() as playwright:
        court_browser: Browser = playwright.chromium.launch(
            executable_path=chromium_in(court, tmp_path), headless=True, args=args
        )
        home_browser: Browser = playwright.chromium.launch(
            executable_path=chromium_in(home, tmp_path), headless=True, args=args
        )
        try:
            with (
                participant_group(court_browser, also_allowed=allowed) as at_court,
                participant_group(home_browser, also_allowed=allowed) as at_home,
            ):
                judge = at_court.open(booking.links["judge"])
                at_court.join(judge)
                judge.wait_for_selector("body[data-view=hearing]")
                judge.get_by_role("button", name="Open the courtroom").click()
                judge.wait_for_selector("#hearing-state[data-state=open]")
                defendant = at_home.open(booking.links["defendant"])
                at_home.join(defendant)
                judge.get_by_role("button", name=f"Admit {booking.names['defendant']}").click()
                defendant.wait_for_selector("body[data-view=hearing]")
                at_home.wait_receiving(defendant, judge_id, "defendant <- judge")
                at_home.wait_until(
                    lambda: judge_audio(at_home, defendant, judge_id)["totalSamplesReceived"] > 0,
                    what="the judge's audio playing at the defendant",
                )
                shape(court, COURT_DEV, Shape(loss_percent=LOSS_PERCENT), drop_at=(home, HOME_DEV))
                time.sleep(SETTLE)
                first = judge_audio(at_home, defendant, judge_id)
                time.sleep(WINDOW)
                last = judge_audio(at_home, defendant, judge_id)
        finally:
            home_browser.close()
            court_browser.close()
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
