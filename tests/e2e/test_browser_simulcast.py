"""Simulcast from a real Chromium: the judge's camera goes out in layers and each viewer gets the layer its tile needs.

The judge publishes its 640x480 camera in two layers, 320 and 640 pixels wide (the browser client's
``sendEncodings``: as many as Chromium makes of that size, the full one included). Two observers watch the judge
on their stage: an observer in a large window and the defendant (who publishes too, so the judge's browser gets
node offers and must keep its layers through them) in a small one. Each client tells the node its tile sizes
(``view``); the node forwards the large window the full layer and the small one a smaller layer, switching at
keyframes without a sequence jump, and both keep decoding. Screenshots go to artifacts/browser/simulcast/.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser


def judge_camera(p: Participants, page: Page, judge_id: str) -> dict[str, Any] | None:
    """The inbound stats of the judge's camera at ``page`` (None before it arrives)."""
    for s in p.inbound(page):
        if s["participant_id"] == judge_id and s.get("source") == "camera" and s["kind"] == "video":
            return s
    return None


def width(p: Participants, page: Page, judge_id: str) -> int:
    """Pixels wide of the judge's camera as ``page`` decodes it now (0 before a frame)."""
    s = judge_camera(p, page, judge_id)
    return int(s["frameWidth"]) if s is not None else 0


def frames(p: Participants, page: Page, judge_id: str) -> int:
    """Frames of the judge's camera ``page`` decoded so far."""
    s = judge_camera(p, page, judge_id)
    return int(s["framesDecoded"]) if s is not None else 0


def test_two_viewers_get_different_layers_and_both_decode(court_server: Server, participants: Participants) -> None:
    """A large and a small window get different simulcast layers of the judge's camera and both keep decoding."""
    p = participants
    shots = p.artifacts("simulcast")
    started = time.monotonic()
    booking = court_server.book(
        [("Wang Fang", "judge", "court"), ("Zhao Lei", "observer", "court"), ("Sun Li", "defendant", "remote")]
    )
    judge_id, defendant_id = booking.ids["judge"], booking.ids["defendant"]
    judge = p.open(booking.links["judge"], viewport=(1024, 600))
    judge.wait_for_function("() => document.getElementById('pj-preview').videoWidth > 0")
    p.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")

    large = p.open(booking.links["observer"], viewport=(1280, 800))
    small = p.open(booking.links["defendant"], locale="zh-CN", viewport=(480, 360))
    for page, name in ((large, booking.names["observer"]), (small, booking.names["defendant"])):
        p.join(page)
        page.wait_for_selector("body[data-view=lobby]")
        judge.get_by_role("button", name=f"Admit {name}").click()
        page.wait_for_selector("body[data-view=hearing]")
    # The judge receives the defendant: the node offered the judge's browser new slots, and it answered.
    p.wait_receiving(judge, defendant_id, "judge <- defendant")
    # The judge mutes the defendant: the stage shows the active speaker, and the fake microphones beep alike, so
    # the defendant could take the large window's stage (the judge then a thumbnail there, on the small layer).
    judge.get_by_role("button", name=f"Mute the microphone of {booking.names['defendant']}").click()
    small.wait_for_selector("#ctl-mic[aria-pressed=true]")

    # The judge sends several layers (Chromium's own statistics of what it encodes).
    def layers_sent() -> dict[str, int]:
        sent: list[dict[str, Any]] = judge.evaluate("() => window.courtlink.outbound()")
        return {str(s["rid"]): int(s["frameWidth"]) for s in sent if s["kind"] == "video" and s.get("rid")}

    # Chromium adds its upper layer as its bandwidth estimate of the link to the node grows.
    try:
        p.wait_until(
            lambda: all(w > 0 for w in layers_sent().values()), timeout=60, what="the judge encoding its layers"
        )
    except pytest.fail.Exception:
        print(f"judge's outbound: {judge.evaluate('() => window.courtlink.outbound()')}")
        raise
    sent = layers_sent()
    print(f"judge's layers (rid: width) after {time.monotonic() - started:.1f} s: {sent}")
    assert sent == {"h": 320, "f": 640}, sent

    p.wait_receiving(large, judge_id, "large window <- judge")
    p.wait_receiving(small, judge_id, "small window <- judge")
    top = max(sent.values())
    p.wait_until(lambda: width(p, large, judge_id) == top, timeout=30, what=f"the large window at {top} px")
    p.wait_until(lambda: 0 < width(p, small, judge_id) < top, timeout=30, what="the small window on a smaller layer")
    widths = (width(p, large, judge_id), width(p, small, judge_id))
    print(f"decoded widths: large {widths[0]}, small {widths[1]}; switched after {time.monotonic() - started:.1f} s")

    # Both keep decoding after the switches (no freeze: sequence numbers and timestamps stayed continuous).
    before = (frames(p, large, judge_id), frames(p, small, judge_id))
    p.wait_until(
        lambda: frames(p, large, judge_id) > before[0] + 20 and frames(p, small, judge_id) > before[1] + 20,
        what="both windows decoding on",
    )
    assert width(p, large, judge_id) == top
    assert 0 < width(p, small, judge_id) < top
    for page, name in ((judge, "judge"), (large, "large"), (small, "small")):
        page.screenshot(path=str(shots / f"{name}.png"))

    # The large window shrinks: it goes down a layer at once (at the smaller layer's next keyframe), and decodes on.
    large.set_viewport_size({"width": 480, "height": 360})
    p.wait_until(lambda: 0 < width(p, large, judge_id) < top, timeout=20, what="the shrunk window on a smaller layer")
    after = frames(p, large, judge_id)
    p.wait_until(lambda: frames(p, large, judge_id) > after + 20, what="the shrunk window decoding on")
    large.screenshot(path=str(shots / "large-shrunk.png"))

    # Through all the node's offers the judge's browser kept sending both layers.
    def bytes_sent() -> dict[str, int]:
        sent: list[dict[str, Any]] = judge.evaluate("() => window.courtlink.outbound()")
        return {str(s["rid"]): int(s["bytesSent"]) for s in sent if s["kind"] == "video" and s.get("rid")}

    first = bytes_sent()
    p.wait_until(
        lambda: all(bytes_sent()[rid] > first[rid] for rid in ("h", "f")), what="the judge still sending both layers"
    )
