"""Paused video behind a real thin link, with Chromium on both ends: the node pads the paused video while it waits for
the lift, Chromium NACKs the padding it loses, and the video returns once the limit is lifted.

Two network namespaces of the test's own, joined by a veth pair (``tests/netns.py``): ``court`` runs ``courtlink
serve`` and one Chromium with the judge and the prosecutor, each publishing Chromium's fake camera in simulcast;
``home`` runs the defendant's Chromium. Once the defendant decodes both cameras, its downlink (the court-side
veth's egress) is shaped with ``tc tbf`` to :data:`RATE_KBIT` plus nftables random loss of :data:`LOSS_PERCENT`,
dropped where the packets arrive at home: room for the judge's smaller layer and the audio, not for the
prosecutor's video too, which the node pauses. While it is paused the node sends padding on its stream in spells
(``media.bandwidth.LIFT_PADDING_SHARE``): the defendant's Chromium receives packets of that stream without a frame,
and NACKs the ones the link loses (libwebrtc tracks padding in its NACK list). Then the limit is lifted, and the
prosecutor's video must come back, with the lift watch's padding counted in the node's fact of the probe that
brought it. Printed: the padding seen while paused and the time from the lift to the prosecutor's next decoded
frame (the issue asks 2 s; asserted loosely). The padding is counted only in the half seconds in which the video
stayed paused, and resumes before the lift are printed: in 2 of 8 runs the node resumed the paused video by its
estimate 4.5-5 s after the pause and the link overflowed 0.8-1.7 s later, because the prosecutor's full layer,
started again by Chromium half a second before, read 8 kbit/s over a meter window mostly silent (a layer is now read
over the time since it started again, ``PublishedTrack.layer_infos``: no such resume in 6 runs since).
Screenshots and the server's log go to artifacts/browser/thin-lift/.
"""

from __future__ import annotations

import json
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
    namespace_args,
    participant_group,
    require_chromium,
    run_server,
)
from tests.netns import Shape, netns_thread, shape, unshape, veth_link

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

COURT_ADDRESS, HOME_ADDRESS = "10.81.0.1", "10.81.0.2"
RATE_KBIT = 450
"""The shaped downlink: the judge's half layer (about 250 kbit/s for Chromium's fake camera) and three audio streams
fit, the prosecutor's video beside them does not."""
LOSS_PERCENT = 2
PAUSED_WITHIN = 40.0
"""Seconds the node has to pause the prosecutor's video for the shaped defendant (a bound, not a timing)."""
WATCH = 15.0
"""Seconds the paused stream is watched for the lift watch's padding."""
BACK_WITHIN = 4.0
"""The issue's 2 s for paused video to return after the lift, asserted loosely (x2); the figure is printed."""


def camera(p: Participants, page: Page, participant_id: str) -> dict[str, Any]:
    """The inbound stats of ``participant_id``'s camera at ``page`` (empty before it arrives)."""
    for s in p.inbound(page):
        if s["participant_id"] == participant_id and s.get("source") == "camera" and s["kind"] == "video":
            return s
    return {}


def facts(log: Path, event: str) -> list[dict[str, Any]]:
    """The server's facts of one kind so far (JSON log lines)."""
    out: list[dict[str, Any]] = []
    for text in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if text.startswith("{") and event in text:
            try:
                out.append(json.loads(text))
            except json.JSONDecodeError:
                continue
    return [f for f in out if f.get("event") == event]


def test_chromium_gets_paused_video_padded_and_back_after_the_lift(tmp_path: Path) -> None:
    """Behind 450 kbit/s + 2% loss the prosecutor's video is paused for the defendant's Chromium, which receives the
    lift watch's padding on that stream and NACKs what it loses of it; after the lift the video comes back."""
    require_chromium()
    shots = artifact_dir("thin-lift")
    names = (("cl-tl-court", "cl-tl-home"), (COURT_ADDRESS, HOME_ADDRESS), ("vtlcourt", "vtlhome"))
    with (
        veth_link(*names) as link,
        netns_thread(link.a) as in_court,
        run_server(
            tmp_path / "serve",
            host=COURT_ADDRESS,
            wrap=("nsenter", f"--net=/run/netns/{link.a}"),
            env_extra={
                "COURTLINK_MEDIA__ANNOUNCE_ADDRESSES": f'["{COURT_ADDRESS}"]',
                "COURTLINK_MEDIA__ADAPTATION": "true",
                "COURTLINK_LOG_FORMAT": "json",
                "COURTLINK_LOG_LEVEL": "info",
                # One datagram per packet: the nftables loss rule then drops packets, not whole GSO runs.
                "COURTLINK_UDP_GSO": "0",
            },
            via=in_court,
        ) as server,
    ):
        try:
            booking = book_hearing(
                server,
                [("Wang Fang", "judge", "court"), ("Li Na", "prosecutor", "court"), ("Ma Jun", "defendant", "remote")],
            )
            args = namespace_args(server.base_url, COURT_ADDRESS)
            allowed = frozenset({COURT_ADDRESS})
            with sync_playwright() as playwright:
                court_browser = playwright.chromium.launch(
                    executable_path=chromium_in(link.a, tmp_path), headless=True, args=args
                )
                home_browser = playwright.chromium.launch(
                    executable_path=chromium_in(link.b, tmp_path), headless=True, args=args
                )
                try:
                    with (
                        participant_group(court_browser, also_allowed=allowed) as at_court,
                        participant_group(home_browser, also_allowed=allowed) as at_home,
                    ):
                        _run(server, booking, link, at_court, at_home, shots)
                finally:
                    home_browser.close()
                    court_browser.close()
        finally:
            unshape(link.a, link.a_dev, drop_at=(link.b, link.b_dev))
            shutil.copyfile(server.log_path, shots / "server.log")


def _seat(judge: Page, group: Participants, page: Page, name: str) -> None:
    """Join ``page``; admit it from the lobby if it waits there."""
    group.join(page)
    page.wait_for_selector("body[data-view=lobby], body[data-view=hearing]", timeout=60_000)
    if page.evaluate("() => document.body.dataset.view") == "lobby":
        judge.get_by_role("button", name=f"Admit {name}").click()
    page.wait_for_selector("body[data-view=hearing]", timeout=60_000)


def _run(server: Any, booking: Any, link: Any, at_court: Participants, at_home: Participants, shots: Path) -> None:
    judge_id, prosecutor_id = booking.ids["judge"], booking.ids["prosecutor"]
    judge = at_court.open(booking.links["judge"], viewport=(1024, 600))
    at_court.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")
    prosecutor = at_court.open(booking.links["prosecutor"], viewport=(1024, 600))
    _seat(judge, at_court, prosecutor, booking.names["prosecutor"])
    defendant = at_home.open(booking.links["defendant"], locale="zh-CN", viewport=(1024, 600))
    _seat(judge, at_home, defendant, booking.names["defendant"])

    def decoded(pid: str) -> int:
        return int(camera(at_home, defendant, pid).get("framesDecoded", 0))

    at_home.wait_until(
        lambda: decoded(judge_id) > 30 and decoded(prosecutor_id) > 30,
        timeout=90,
        what="the defendant decoding both cameras",
    )
    shape(
        link.a, link.a_dev, Shape(rate_mbit=RATE_KBIT / 1000, loss_percent=LOSS_PERCENT), drop_at=(link.b, link.b_dev)
    )

    def changes() -> list[str]:
        """The node's pauses and resumes of video for the defendant so far, in order."""
        found = facts(server.log_path, "subscriber_video_paused") + facts(server.log_path, "subscriber_video_resumed")
        mine = [f for f in found if f.get("subscriber") == booking.ids["defendant"]]
        return [str(f["event"]) for f in sorted(mine, key=lambda f: str(f.get("timestamp")))]

    def paused() -> bool:
        seen = changes()
        return bool(seen) and seen[-1] == "subscriber_video_paused"

    try:
        at_home.wait_until(paused, timeout=PAUSED_WITHIN, what="the prosecutor's video paused for the defendant")
    except pytest.fail.Exception:
        print(f"defendant: {at_home.inbound(defendant)}")
        raise
    # Watched in half-second steps; only the steps in which the prosecutor's video stayed paused (no frame decoded)
    # count: what arrived of its stream then is the lift watch's padding, and what Chromium NACKed of it.
    counts = ("packetsReceived", "framesDecoded", "nackCount", "packetsLost")
    seen = dict.fromkeys(counts, 0)
    paused_for = 0.0
    judge_first = decoded(judge_id)
    last = camera(at_home, defendant, prosecutor_id)
    watch_start = time.monotonic()
    while time.monotonic() - watch_start < WATCH:
        time.sleep(0.5)
        now = camera(at_home, defendant, prosecutor_id)
        if now.get("framesDecoded", 0) == last.get("framesDecoded", 0):
            paused_for += 0.5
            for k in counts:
                seen[k] += int(now.get(k, 0)) - int(last.get(k, 0))
        last = now
    judge_last = decoded(judge_id)
    flaps = changes().count("subscriber_video_resumed")
    print(f"the prosecutor's stream at the defendant while paused ({paused_for:.1f} s of {WATCH:.0f}): {seen}")
    fps = (judge_last - judge_first) / WATCH
    print(f"the judge's video meanwhile: {fps:.1f} fps; resumes before the lift: {flaps}")
    defendant.screenshot(path=str(shots / "defendant-paused.png"))
    assert judge_last > judge_first + 5 * WATCH, "the judge's video stopped behind the thin link"
    assert paused_for >= WATCH / 3, f"the prosecutor's video was paused {paused_for:.1f} s of {WATCH:.0f}"
    assert seen["packetsReceived"] > 20, ("no padding on the paused stream", seen)
    assert seen["nackCount"] > 0, ("Chromium NACKed none of the padding the link lost", seen)

    at_home.wait_until(paused, timeout=PAUSED_WITHIN, what="the prosecutor's video paused at the lift")
    before = decoded(prosecutor_id)
    unshape(link.a, link.a_dev, drop_at=(link.b, link.b_dev))
    lifted = time.monotonic()
    at_home.wait_until(lambda: decoded(prosecutor_id) > before, timeout=30, what="the prosecutor's video back")
    back = time.monotonic() - lifted
    probes = [f for f in facts(server.log_path, "subscriber_probe_started") if f.get("lift_padding")]
    print(f"the prosecutor's video back {back:.2f} s after the lift; probes after padding: {probes[-1:]}")
    defendant.screenshot(path=str(shots / "defendant-lifted.png"))
    assert probes, "no probe counted the lift watch's padding"
    assert back <= BACK_WITHIN, f"paused video came back {back:.2f} s after the lift"
