"""A hearing in three real browsers: judge, defendant and observer, each in its own Chromium context.

The judge admits the defendant from the waiting room through the console, every
browser decodes the others' video and receives their audio (getStats on the
real peer connection), and when the judge mutes the defendant through the UI the
defendant's audio stops arriving at the observer. Screenshots of the pre-join
check, the waiting room, the hearing view and the judge's console go to
artifacts/browser/hearing/.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser


def audio_settles(group: Participants, page: Page, participant_id: str, *, window: float = 1.5) -> int:
    """Wait until no audio bytes from a participant arrive over ``window`` seconds; return the total then."""
    deadline = time.monotonic() + 20.0
    before = group.totals(page, participant_id)["audio_bytes"]
    while time.monotonic() < deadline:
        time.sleep(window)
        now = group.totals(page, participant_id)["audio_bytes"]
        if now == before:
            return now
        before = now
    pytest.fail(f"audio from {participant_id} kept arriving after the mute")


def test_judge_admits_defendant_media_flows_and_mute_stops_audio(
    court_server: Server, participants: Participants
) -> None:
    """Judge, defendant and observer see and hear each other; the judge's UI mute stops the defendant's audio."""
    p = participants
    shots = p.artifacts("hearing")
    booking = court_server.book(
        [("Wang Fang", "judge", "court"), ("Li Ming", "defendant", "remote"), ("Zhao Lei", "observer", "court")]
    )
    judge_id, defendant_id = booking.ids["judge"], booking.ids["defendant"]
    defendant_name, observer_name = booking.names["defendant"], booking.names["observer"]

    judge = p.open(booking.links["judge"])
    judge.wait_for_function("() => document.getElementById('pj-preview').videoWidth > 0")
    assert judge.locator("#pj-role").inner_text() == "Judge"
    judge.screenshot(path=str(shots / "prejoin.png"))
    p.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")

    defendant = p.open(booking.links["defendant"])
    observer = p.open(booking.links["observer"])
    p.join(defendant, keyboard=True)
    p.join(observer, keyboard=True)
    defendant.wait_for_selector("body[data-view=lobby]")
    observer.wait_for_selector("body[data-view=lobby]")
    assert defendant_name in defendant.locator("#lobby-text").inner_text()
    defendant.screenshot(path=str(shots / "lobby.png"))

    # The judge admits both from the waiting-room queue of the console.
    judge.wait_for_selector(f"#lobby-queue li[data-participant='{defendant_id}']")
    judge.screenshot(path=str(shots / "judge-console-lobby.png"))
    judge.get_by_role("button", name=f"Admit {defendant_name}").click()
    judge.get_by_role("button", name=f"Admit {observer_name}").click()
    defendant.wait_for_selector("body[data-view=hearing]")
    observer.wait_for_selector("body[data-view=hearing]")

    p.wait_receiving(judge, defendant_id, "judge <- defendant")
    p.wait_receiving(defendant, judge_id, "defendant <- judge")
    p.wait_receiving(observer, judge_id, "observer <- judge")
    p.wait_receiving(observer, defendant_id, "observer <- defendant")
    for page in (judge, defendant, observer):
        assert p.state(page)["media"] == "connected"
    # The node's sender reports (one compound RTCP packet per connection, media.reports) reach Chromium for every
    # stream: its remote-outbound-rtp stats count them.
    p.wait_until(
        lambda: (
            {(s["participant_id"], s["kind"]) for s in p.inbound(observer) if s["senderReports"] >= 2}
            >= {(pid, kind) for pid in (judge_id, defendant_id) for kind in ("audio", "video")}
        ),
        timeout=20,
        what="Chromium counting the node's sender reports of every stream",
    )
    # Every tile names role, name and site (the site's name, never its id).
    label = observer.locator(f"figure.tile[data-participant='{defendant_id}'] figcaption").inner_text()
    assert "Defendant" in label
    assert defendant_name in label
    assert "No. 1 Detention Center" in label
    assert "detention-" not in label
    for page in (judge, defendant, observer):
        assert not p.unlabelled_controls(page), p.unlabelled_controls(page)
    observer.screenshot(path=str(shots / "hearing.png"))
    judge.screenshot(path=str(shots / "judge-console.png"))

    # The judge mutes the defendant's microphone from the roster.
    judge.get_by_role("button", name=f"Mute the microphone of {defendant_name}").click()
    observer.wait_for_selector(f"figure.tile[data-participant='{defendant_id}'][data-muted~=microphone]")
    defendant.wait_for_selector("#ctl-mic[aria-pressed=true]")
    settled = audio_settles(p, observer, defendant_id)
    time.sleep(2.0)
    after = p.totals(observer, defendant_id)
    assert after["audio_bytes"] == settled, "the defendant's audio still reaches the observer after the mute"
    # Only that audio stopped: the defendant's video and the judge's audio keep arriving.
    p.wait_until(
        lambda: p.totals(observer, defendant_id)["video_frames"] > after["video_frames"] + 10,
        what="the defendant's video after the mute",
    )
    judge_audio = p.totals(observer, judge_id)["audio_bytes"]
    p.wait_until(
        lambda: p.totals(observer, judge_id)["audio_bytes"] > judge_audio,
        what="the judge's audio after the defendant's mute",
    )
    judge.screenshot(path=str(shots / "judge-console-muted.png"))

    # Starting the hearing starts the recording: every page shows the REC indicator, the console its health.
    judge.get_by_role("button", name="Start the hearing").click()
    for page in (judge, defendant, observer):
        page.wait_for_selector("#hearing-state[data-state=in_session]")
        page.wait_for_selector("#rec-indicator[data-status=recording]", timeout=30_000)
    assert observer.locator("#rec-text").inner_text().strip() == "REC"
    assert judge.locator("#console-recording").get_attribute("data-status") == "recording"
    judge.screenshot(path=str(shots / "judge-console-recording.png"))

    # Closing the hearing (confirmed in a dialog) ends it for everyone.
    judge.once("dialog", lambda dialog: dialog.accept())
    judge.get_by_role("button", name="Close the hearing").click()
    for page in (judge, defendant, observer):
        page.wait_for_selector("body[data-view=ended]")
        assert page.locator("#ended-heading").inner_text().strip() == "The hearing is closed"
