"""Issue 9 items 1-4 in real Chromium: one hearing, four people at 1024x600, pages in English and in Chinese.

Judge (en) and defence counsel (en) at the court, the defendant (zh-CN) at a detention center and an observer
(zh-CN) in the public gallery. One hearing checks, in order: the observer is never asked for devices, has no
tile, no self-view and no controls, and receives; the judge counts the public gallery and lists it on demand;
counsel's evidence display leaves every viewer's stage once stopped (the time measured and printed); the judge's
mute of the defendant shows "Muted by the court" with the unmute disabled, until the judge unmutes; a private
consultation shows its members "not recorded" and the elapsed time without a blinking REC, the others who
consults and for how long, and the defendant ends it. Screenshots of each role go to artifacts/browser/audience/.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

SMALL = (1024, 600)
"""A detention-center terminal's screen."""

EVIDENCE_GONE_GOAL_MS = 1000
"""The issue asks for 1 s: printed beside the measured figure, never asserted (tests assert no wall-clock times; the
wait for each viewer is bounded, 20 s)."""

COUNT_DEVICE_REQUESTS = """
window.__deviceRequests = 0;
if (navigator.mediaDevices) {
  for (const name of ["getUserMedia", "enumerateDevices"]) {
    const original = navigator.mediaDevices[name].bind(navigator.mediaDevices);
    navigator.mediaDevices[name] = (...args) => { window.__deviceRequests += 1; return original(...args); };
  }
}
"""

WATCH_EVIDENCE_LEAVING = """() => {
  window.__evidenceGone = null;
  const stage = document.getElementById('stage');
  new MutationObserver(() => {
    if (!stage.classList.contains('evidence') && window.__evidenceGone === null) window.__evidenceGone = Date.now();
  }).observe(stage, { attributes: true, attributeFilter: ['class'] });
}"""


def visible(page: Page, selector: str) -> bool:
    """Whether the element is shown (not hidden by the page)."""
    return bool(page.locator(selector).is_visible())


def test_audience_consultation_evidence_and_court_mute(court_server: Server, participants: Participants) -> None:
    """Observers only watch; the gallery is counted; stopped evidence leaves at once; a court mute and a private
    consultation say what they are, in English and Chinese, at 1024x600."""
    p = participants
    shots = p.artifacts("audience")
    booking = court_server.book(
        [
            ("Wang Fang", "judge", "court"),
            ("Zhang Wei", "counsel", "court"),
            ("Li Ming", "defendant", "remote"),
            ("Zhao Lei", "observer", "court"),
        ]
    )
    ids, names = booking.ids, booking.names

    judge = p.open(booking.links["judge"], viewport=SMALL)
    p.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")

    # The observer's pre-join page: who they are and a Join button; nothing is asked of the browser's devices.
    observer = p.open(booking.links["observer"], locale="zh-CN", viewport=SMALL)
    observer.context.add_init_script(COUNT_DEVICE_REQUESTS)
    observer.reload()
    observer.wait_for_selector("body[data-view=prejoin][data-audience='1']")
    observer.wait_for_function("() => document.getElementById('pj-name').textContent.includes('Zhao Lei')")
    assert observer.locator("#pj-role").inner_text() == "旁听人员"
    assert visible(observer, "#pj-audience")
    assert not visible(observer, "#pj-devices")
    assert not visible(observer, "#pj-camera")
    assert observer.locator("#pj-join").is_visible()
    box = observer.locator("#pj-join").bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= SMALL[1], box
    observer.screenshot(path=str(shots / "observer-prejoin-zh.png"))
    p.join(observer, keyboard=True)
    observer.wait_for_selector("body[data-view=lobby]")
    assert not visible(observer, "#lobby-preview-box")

    defendant = p.open(booking.links["defendant"], locale="zh-CN", viewport=SMALL)
    counsel = p.open(booking.links["counsel"], viewport=SMALL)
    p.join(defendant, keyboard=True)
    p.join(counsel, keyboard=True)
    for role in ("observer", "defendant", "counsel"):
        judge.wait_for_selector(f"#lobby-queue li[data-participant='{ids[role]}']", timeout=30_000)
        judge.get_by_role("button", name=f"Admit {names[role]}").click()
    for page in (observer, defendant, counsel):
        page.wait_for_selector("body[data-view=hearing]")

    # The bench sees a gallery count, and the list on demand.
    judge.wait_for_selector("#panel-gallery[data-count='1']")
    assert judge.locator("#gallery-heading").inner_text().strip() == "Public gallery: 1"
    toggle = judge.locator("#gallery-toggle")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert not visible(judge, "#gallery-list")
    assert not judge.locator(f"#roster li[data-participant='{ids['observer']}']").count()
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert names["observer"] in judge.locator("#gallery-list").inner_text()

    # The observer receives the court and sends nothing: no controls, no self-view, no tile anywhere.
    p.wait_receiving(observer, ids["judge"], "observer <- judge")
    for control in ("#ctl-mic", "#ctl-cam", "#ctl-share"):
        assert not visible(observer, control), control
    assert visible(observer, "#ctl-leave")
    assert visible(observer, "#audience-badge")
    assert observer.evaluate("() => window.courtlink.outbound()") == []
    for page in (judge, defendant, counsel, observer):
        assert page.locator(f"figure.tile[data-participant='{ids['observer']}']").count() == 0
    assert observer.locator("figure.tile").count() == 3  # judge, counsel, defendant; no self-view
    assert observer.evaluate("() => window.__deviceRequests") == 0
    assert p.state(observer)["devices_requested"] == 0
    observer.screenshot(path=str(shots / "observer-hearing-zh.png"))

    # Evidence that stops, stops: counsel shows a screen, then stops it; every viewer's stage lets go of it.
    counsel.click("#ctl-share")  # a user gesture, as getDisplayMedia requires
    viewers = {"judge": judge, "defendant": defendant, "observer": observer}
    for page in viewers.values():
        page.wait_for_selector("#stage.evidence", timeout=45_000)
    observer.screenshot(path=str(shots / "observer-evidence-zh.png"))
    for page in viewers.values():
        page.evaluate(WATCH_EVIDENCE_LEAVING)
    stopped_at = counsel.evaluate(
        "() => { const t = Date.now(); document.getElementById('ctl-share').click(); return t; }"
    )
    gone_ms: dict[str, int] = {}
    for role, page in viewers.items():
        page.wait_for_function("() => window.__evidenceGone !== null", timeout=20_000)
        gone_ms[role] = int(page.evaluate("() => window.__evidenceGone")) - int(stopped_at)
        assert "Evidence display" not in page.locator("#stage-label").inner_text()
        assert "示证" not in page.locator("#stage-label").inner_text()
    print(
        f"\nEVIDENCE_GONE ms from stop to off the stage, per viewer: {gone_ms} "
        f"(the issue's goal: {EVIDENCE_GONE_GOAL_MS} ms)"
    )
    # Shown again, it comes back (the same declared track, enabled again).
    counsel.click("#ctl-share")
    observer.wait_for_selector("#stage.evidence", timeout=45_000)
    counsel.click("#ctl-share")
    observer.wait_for_selector("#stage:not(.evidence)")

    # The mute state tells the truth: muted by the court, unmute disabled with the reason, until the court unmutes.
    judge.get_by_role("button", name=f"Mute the microphone of {names['defendant']}").click()
    defendant.wait_for_selector("#ctl-mic[data-court-muted=true]")
    mic = defendant.locator("#ctl-mic")
    assert mic.is_disabled()
    assert "法庭已将您静音" in mic.inner_text()
    assert mic.get_attribute("aria-pressed") == "true"
    assert mic.get_attribute("aria-describedby") == "courtmute-note"
    assert "只有法庭可以取消静音" in (mic.get_attribute("title") or "")
    assert "法庭已将您的麦克风静音" in defendant.locator("#courtmute-note").inner_text()
    # The muted track's packets are dropped at the node as they should be: no error contradicts the mute.
    assert p.signal_counts(defendant)["recv:error:publish_not_allowed"] == 0
    defendant.screenshot(path=str(shots / "defendant-muted-by-court-zh.png"))
    judge.get_by_role("button", name=f"Unmute the microphone of {names['defendant']}").click()
    defendant.wait_for_selector("#ctl-mic[data-court-muted=false]")
    assert mic.is_enabled()
    assert not visible(defendant, "#courtmute-note")

    # A private consultation shows what it is; the hearing runs (REC) for everyone else meanwhile.
    judge.get_by_role("button", name="Start the hearing").click()
    for page in (judge, defendant, counsel, observer):
        page.wait_for_selector("#hearing-state[data-state=in_session]")
    judge.get_by_role(
        "button", name=f"Start a private consultation of {names['defendant']} with their defence counsel"
    ).click()
    for page in (defendant, counsel):
        page.wait_for_selector("#consult-bar[data-member=true]:not([hidden])")
        page.wait_for_selector("#rec-indicator[data-status=consultation]")
        assert (
            page.evaluate("() => getComputedStyle(document.querySelector('#rec-indicator .rec-dot')).animationName")
            == "none"
        )
    assert defendant.locator("#consult-text").inner_text() == "私下会见 — 不录音录像"
    assert defendant.locator("#rec-text").inner_text() == "私下会见 — 不录音录像"
    assert counsel.locator("#consult-text").inner_text() == "Private consultation — not recorded"
    assert re.fullmatch(r"\d+:\d\d", defendant.locator("#consult-elapsed").inner_text().strip())
    assert visible(defendant, "#consult-end")
    observer.wait_for_selector("#consult-bar[data-member=false]:not([hidden])")
    outside = observer.locator("#consult-text").inner_text()
    assert outside.startswith("正在私下会见：")
    assert names["defendant"] in outside
    assert names["counsel"] in outside
    assert observer.locator("#rec-indicator").get_attribute("data-status") != "consultation"
    flag = judge.locator(f"#roster li[data-participant='{ids['defendant']}'] .consult-flag")
    assert re.fullmatch(r"private consultation \d+:\d\d", flag.inner_text().strip())
    first = defendant.locator("#consult-elapsed").inner_text()
    defendant.wait_for_function(
        f"() => document.getElementById('consult-elapsed').textContent.trim() !== {first.strip()!r}", timeout=5_000
    )
    time.sleep(0.3)  # let the next tick paint the screenshots
    for role, page in (("judge", judge), ("defendant-zh", defendant), ("counsel", counsel), ("observer-zh", observer)):
        page.screenshot(path=str(shots / f"{role}-consultation.png"))

    defendant.get_by_role("button", name="结束会见，返回虚拟法庭").click()
    for page in (defendant, counsel):
        page.wait_for_selector("#consult-bar[hidden]", state="attached")
    p.wait_until(lambda: p.state(counsel)["placement"] == "courtroom", what="counsel back in the courtroom")
    assert p.state(defendant)["placement"] == "courtroom"
    observer.wait_for_selector("#consult-bar[hidden]", state="attached")
    for role, page in (("judge", judge), ("defendant-zh", defendant), ("counsel", counsel), ("observer-zh", observer)):
        assert not p.unlabelled_controls(page), (role, p.unlabelled_controls(page))
        page.screenshot(path=str(shots / f"{role}.png"))
    assert observer.evaluate("() => window.__deviceRequests") == 0
