"""A forced network failure: the defendant's UDP is cut for 10 s, then restored; media comes back by itself.

The test makes two network namespaces of its own: ``court`` (the server, its
media node and the judge's Chromium) and ``home`` (the defendant's Chromium),
joined by a veth pair (10.77.0.1 <-> 10.77.0.2). Nothing of it touches the
machine's own network. nftables in ``home`` drops every UDP packet for 10 s
while the WebSocket (TCP) stays up, so only media dies. The defendant's page
must say it is reconnecting media (never "Connected"), the judge's console must
show the defendant's media ``stalled`` and alert, and after the network returns
media must flow both ways again without a reload, and the judge sees ``ok``.
The time from the restore to decoded frames both ways is printed beside the
issue's goal of 3 s, not asserted (the wait is bounded, ``MEDIA_WAIT``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser_fixtures import MEDIA_WAIT, artifact_dir
from tests.two_sites import two_site_hearing

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

CUT_SECONDS = 10.0
BACK_WITHIN = 3.0
"""The issue's bound for media to return after the network does: measured and printed, not asserted (tests assert no
wall-clock times; the wait is bounded by ``MEDIA_WAIT``)."""

CUT_RULES = """
table inet courtlink_cut {
  chain input { type filter hook input priority 0; policy accept; meta l4proto udp drop; }
  chain output { type filter hook output priority 0; policy accept; meta l4proto udp drop; }
}
"""


def frames_from(group: Participants, page: Page, participant_id: str) -> tuple[int, int]:
    """(media restarts of ``page``, video frames it decoded from ``participant_id`` on its current connection)."""
    restarts = int(group.state(page)["media_restarts"])
    return restarts, group.totals(page, participant_id)["video_frames"]


WATCH_JS = """(pid) => {
  window.__cut = { seen: [], alerts: [] };
  const push = (list, value) => { if (list.length === 0 || list[list.length - 1].value !== value)
    list.push({ at: Date.now(), value }); };
  setInterval(() => {
    const li = document.querySelector(`#roster li[data-participant='${pid}']`);
    push(window.__cut.seen, li ? li.dataset.media : 'absent');
    const alert = document.querySelector(`#media-alert:not([hidden]) li[data-participant='${pid}']`);
    push(window.__cut.alerts, alert ? alert.dataset.kind : 'none');
  }, 100);
}"""


def test_udp_cut_for_ten_seconds_media_returns_without_reload(tmp_path: Path) -> None:
    """With the defendant's UDP cut for 10 s, pages say so, the judge is alerted, and media returns by itself."""
    shots = artifact_dir("netcut")
    with two_site_hearing(tmp_path, shots) as sites:
        judge, defendant, defendant_id = sites.judge, sites.defendant, sites.defendant_id
        judge.wait_for_selector(f"#roster li[data-participant='{defendant_id}'][data-media=ok]", timeout=30_000)
        assert defendant.locator("#conn-state").inner_text().strip() == "Connected"
        judge.evaluate(WATCH_JS, defendant_id)
        defendant.evaluate("() => { window.__noReload = true; }")
        _cut_and_restore(
            sites.at_court, sites.at_home, judge, defendant, sites.judge_id, defendant_id, sites.home, shots
        )


def _cut_and_restore(
    at_court: Participants,
    at_home: Participants,
    judge: Page,
    defendant: Page,
    judge_id: str,
    defendant_id: str,
    home: str,
    shots: Path,
) -> None:
    subprocess.run(["ip", "netns", "exec", home, "nft", "-f", "-"], input=CUT_RULES.encode(), check=True, timeout=20)
    cut_at = time.monotonic()
    try:
        # While the network is gone the defendant's own page says media is reconnecting, never "Connected".
        defendant.wait_for_selector("#conn-state[data-status=media_reconnecting]", timeout=CUT_SECONDS * 1000)
        seen_reconnecting_after = time.monotonic() - cut_at
        assert defendant.locator("#media-banner").is_visible()
        assert "Reconnecting media" in defendant.locator("#conn-state").inner_text()
        defendant.screenshot(path=str(shots / "defendant-reconnecting.png"))
        remaining = CUT_SECONDS - (time.monotonic() - cut_at)
        if remaining > 1.5:
            # The judge's alert (stalled > 3 s, or lost), while the cut lasts.
            # (Asserted after the restore from the page's own record; here only the screenshot waits for it.)
            alert = judge.locator(f"#media-alert li[data-participant='{defendant_id}']")
            deadline = cut_at + CUT_SECONDS - 1.0
            while time.monotonic() < deadline and alert.count() == 0:
                time.sleep(0.2)
            if alert.count():
                judge.screenshot(path=str(shots / "judge-alert.png"))
        time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
    finally:
        lifted = subprocess.run(
            ["ip", "netns", "exec", home, "nft", "delete", "table", "inet", "courtlink_cut"], check=False
        )
    restored_at = time.monotonic()
    assert lifted.returncode == 0, "the cut could not be lifted"

    # Media back: both directions decode new frames again (counters restart with a new peer connection).
    base_judge = frames_from(at_court, judge, defendant_id)
    base_defendant = frames_from(at_home, defendant, judge_id)

    def rising(group: Participants, page: Page, pid: str, base: tuple[int, int]) -> bool:
        now = frames_from(group, page, pid)
        return now[1] > (base[1] if now[0] == base[0] else 0)

    back: dict[str, float] = {}
    deadline = restored_at + MEDIA_WAIT
    while len(back) < 2 and time.monotonic() < deadline:
        if "judge" not in back and rising(at_court, judge, defendant_id, base_judge):
            back["judge"] = time.monotonic() - restored_at
        if "defendant" not in back and rising(at_home, defendant, judge_id, base_defendant):
            back["defendant"] = time.monotonic() - restored_at
        time.sleep(0.1)
    media_back = max(back.values()) if len(back) == 2 else None
    print(
        f"UDP cut {CUT_SECONDS:.0f} s; page said reconnecting after {seen_reconnecting_after:.1f} s; "
        f"media back after restore: judge <- defendant {back.get('judge')}, defendant <- judge {back.get('defendant')} "
        f"(the issue's goal: {BACK_WITHIN:.0f} s)"
    )
    assert media_back is not None, f"media did not come back within {MEDIA_WAIT} s: {back}"

    # And it keeps flowing, on the same page (no reload), with the page saying so again.
    at_court.wait_receiving(judge, defendant_id, "judge <- defendant after the cut")
    at_home.wait_receiving(defendant, judge_id, "defendant <- judge after the cut")
    assert defendant.evaluate("() => window.__noReload === true"), "the defendant's page was reloaded"
    defendant.wait_for_selector("#conn-state[data-status=connected]", timeout=30_000)
    assert defendant.locator("#media-banner").is_hidden()

    # The judge saw the defendant's media stalled, then ok; the alert came and went.
    judge.wait_for_selector(f"#roster li[data-participant='{defendant_id}'][data-media=ok]", timeout=30_000)
    judge.wait_for_selector("#media-alert", state="hidden", timeout=10_000)
    record: dict[str, list[dict[str, Any]]] = judge.evaluate("() => window.__cut")
    seen = [s["value"] for s in record["seen"]]
    alerts = [a["value"] for a in record["alerts"]]
    restarts = at_home.state(defendant)["media_restarts"]
    counts = at_home.signal_counts(defendant)
    print(
        f"judge saw the defendant's media: {' -> '.join(seen)}; alerts: {' -> '.join(alerts)}; "
        f"defendant media restarts {restarts}, restart requests {counts['sent:restart_media']}, "
        f"refused offers {counts['recv:error:renegotiation_pending']}; "
        f"log {defendant.evaluate('() => window.courtlink.mediaLog()')}"
    )
    judge.screenshot(path=str(shots / "judge-after.png"))
    assert "stalled" in seen, f"the judge never saw the defendant's media stalled: {seen}"
    assert seen.index("stalled") < len(seen) - 1, seen
    assert seen[-1] == "ok", seen
    assert any(a != "none" for a in alerts), f"the judge was never alerted: {alerts}"
    assert alerts[-1] == "none", alerts
    assert counts["recv:error:renegotiation_pending"] <= 3, dict(counts)
