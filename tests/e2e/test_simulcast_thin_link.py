"""Simulcast on a real thin link: a Chromium judge publishes its camera in layers; of two observers with the same
large tile, the one behind a shaped link ends on the smaller layer and keeps decoding, the other keeps the full one.

Two network namespaces of the test's own, joined by a veth pair (``tests/netns.py``): ``court`` runs ``courtlink
serve`` with ``[media] adaptation`` on, and one Chromium with the judge (publishing 640x480 in the layers ``h``
and ``f``) and an observer on an unlimited link; ``home`` runs another Chromium with the second observer. Both
observers' windows are 1280x800, so the tile alone would give both the full layer. Once both decode the full
layer, the home observer's downlink (the court-side veth's egress) is shaped with ``tc tbf`` to :data:`RATE_KBIT`
(below the full layer's bitrate, above the half one's) plus nftables random loss of :data:`LOSS_PERCENT`, dropped on
the home side's input (where a lossy link loses packets, unseen by the sender). The node
reads the loss and the observer's estimate and steps it down a layer (``subscriber_layer_switched``), while the
court observer keeps the full layer. Printed: each layer's bitrate, the decoded widths, the time from the shaping
to the smaller layer decoding, and the frame rates while shaped. Screenshots go to artifacts/browser/simulcast-thin/.

A second test, paused video behind a real thin link with Chromium on both ends: the node pads the paused video
while it waits for the lift, Chromium NACKs the padding it loses, and the video returns once the limit is lifted.

Two network namespaces of the test's own, joined by a veth pair (``tests/netns.py``): ``court`` runs ``courtlink
serve`` and one Chromium with the judge and the prosecutor, each publishing Chromium's fake camera in simulcast;
``home`` runs the defendant's Chromium. Once the defendant decodes both cameras, its downlink (the court-side
veth's egress) is shaped with ``tc tbf`` to :data:`LIFT_RATE_KBIT` plus nftables random loss of
:data:`LIFT_LOSS_PERCENT`,
dropped where the packets arrive at home: room for the judge's smaller layer and the audio, not for the
prosecutor's video too, which the node pauses. While it is paused the node sends padding on its stream in spells
(``media.bandwidth.LIFT_PADDING_SHARE``): the defendant's Chromium receives packets of that stream without a frame,
and NACKs the ones the link loses (libwebrtc tracks padding in its NACK list). Then all of the defendant's UDP is cut
both ways for :data:`CUT_SECONDS` and given back, still thin: nothing may be resumed, no probe may pass, no layer may
step up, into the silence or the thin link after it (with Chromium, before the fix, the paused video was resumed 2 s
into the cut, and 47 ms after it by the receiver report that came before the REMB). Then the limit is lifted, and the
prosecutor's video must come back, with the lift watch's padding counted in the node's fact of the probe that
brought it. Printed: the padding seen while paused and the time from the lift to the prosecutor's next decoded
frame (the issue asks 2 s; printed, not asserted: 4.4 s once on a loaded CI machine). The padding is counted only in
the half seconds in which the video stayed paused, and resumes before the lift are printed: in 2 of 8 runs the node
resumed the paused video by its estimate 4.5-5 s after the pause and the link overflowed 0.8-1.7 s later, because
the prosecutor's full layer, started again by Chromium half a second before, read 8 kbit/s over a meter window
mostly silent (a layer is now read over the time since it started again, ``PublishedTrack.layer_infos``: no such
resume in 6 runs since).
Screenshots and the server's log go to artifacts/browser/thin-lift/.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import sync_playwright

from media.bandwidth import FEEDBACK_SILENCE
from tests.browser_fixtures import (
    artifact_dir,
    book_hearing,
    chromium_in,
    namespace_args,
    participant_group,
    require_chromium,
)
from tests.e2e.test_browser_netcut import CUT_RULES
from tests.netns import Shape, run, shape, unshape
from tests.two_sites import adapting_server_on_a_link

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

COURT_ADDRESS, HOME_ADDRESS = "10.79.0.1", "10.79.0.2"
AUDIO_KBIT = 70
"""What the judge's audio and the packet headers take of the shaped link besides the video (kbit/s, about)."""
LOSS_PERCENT = 1
STEP_DOWN_WITHIN = 30.0
"""Seconds the node has to step the shaped observer down (a bound for a shared machine, not asserted as timing)."""
LIFTED_WITHIN = 30.0
"""Seconds the home observer has to get the full layer back once the limit is lifted (a bound for a shared
machine; the figure is printed)."""
WATCH = 12.0
"""Seconds both observers are watched once the shaped one is down (below the node's RETRY_HOLD plus the 3 s a link
must stay clean: no retry of the full layer can fall in it)."""


def judge_camera(p: Participants, page: Page, judge_id: str) -> dict[str, Any]:
    """The inbound stats of the judge's camera at ``page`` (empty before it arrives)."""
    for s in p.inbound(page):
        if s["participant_id"] == judge_id and s.get("source") == "camera" and s["kind"] == "video":
            return s
    return {}


def facts(log: Path, *events: str) -> list[dict[str, Any]]:
    """The server's facts of the given kinds so far (JSON log lines)."""
    out: list[dict[str, Any]] = []
    for text in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if text.startswith("{") and any(event in text for event in events):
            try:
                out.append(json.loads(text))
            except json.JSONDecodeError:
                continue
    return out


def video_changes(log: Path, subscriber: str) -> list[str]:
    """The node's pauses and resumes of video for ``subscriber`` so far, in order (the events' names)."""
    kinds = ("subscriber_video_paused", "subscriber_video_resumed")
    mine = [f for f in facts(log, *kinds) if f.get("subscriber") == subscriber and f.get("event") in kinds]
    return [str(f["event"]) for f in sorted(mine, key=lambda f: str(f.get("timestamp")))]


def video_paused(log: Path, subscriber: str) -> bool:
    """Whether the node's last change of video for ``subscriber`` was a pause."""
    seen = video_changes(log, subscriber)
    return bool(seen) and seen[-1] == "subscriber_video_paused"


def layer_facts(log: Path) -> list[dict[str, Any]]:
    """The server's ``subscriber_layer_switched`` facts so far."""
    return facts(log, "subscriber_layer_switched")


def probe_facts(log: Path) -> list[dict[str, Any]]:
    """The server's padding probe facts so far (started, failed, succeeded)."""
    return facts(log, "subscriber_probe_")


def test_a_thin_link_gets_the_smaller_layer_and_both_decode(tmp_path: Path) -> None:
    """Of two observers with the same large tile, the one behind a shaped lossy link steps down to the smaller
    simulcast layer and keeps decoding; the one on an unlimited link keeps the full layer."""
    require_chromium()
    shots = artifact_dir("simulcast-thin")
    names = (("cl-sc-court", "cl-sc-home"), (COURT_ADDRESS, HOME_ADDRESS), ("vsccourt", "vschome"))
    with adapting_server_on_a_link(tmp_path, *names) as (link, server):
        try:
            _scenario(server, link.a, link.b, link.a_dev, link.b_dev, tmp_path, shots)
        finally:
            unshape(link.a, link.a_dev, drop_at=(link.b, link.b_dev))
            shutil.copyfile(server.log_path, shots / "server.log")


def _scenario(server: Any, court: str, home: str, court_dev: str, home_dev: str, tmp_path: Path, shots: Path) -> None:
    booking = book_hearing(
        server,
        [("Wang Fang", "judge", "court"), ("Zhao Lei", "observer", "court"), ("Sun Li", "observer", "remote")],
    )
    judge_id = booking.ids["judge"]
    allowed = frozenset({COURT_ADDRESS})
    args = namespace_args(server.base_url, COURT_ADDRESS)
    with sync_playwright() as playwright:
        court_browser = playwright.chromium.launch(
            executable_path=chromium_in(court, tmp_path), headless=True, args=args
        )
        home_browser = playwright.chromium.launch(executable_path=chromium_in(home, tmp_path), headless=True, args=args)
        try:
            with (
                participant_group(court_browser, also_allowed=allowed) as at_court,
                participant_group(home_browser, also_allowed=allowed) as at_home,
            ):
                _run(server, booking, judge_id, court, court_dev, (home, home_dev), at_court, at_home, shots)
        finally:
            home_browser.close()
            court_browser.close()


def _run(
    server: Any,
    booking: Any,
    judge_id: str,
    court: str,
    court_dev: str,
    drop_at: tuple[str, str],
    at_court: Participants,
    at_home: Participants,
    shots: Path,
) -> None:
    started = time.monotonic()
    judge = _judge_opens(at_court, booking)
    near = at_court.open(booking.links["observer"], viewport=(1280, 800))
    far = at_home.open(booking.links["observer#2"], locale="zh-CN", viewport=(1280, 800))
    for group, page, key in ((at_court, near, "observer"), (at_home, far, "observer#2")):
        group.join(page)
        page.wait_for_selector("body[data-view=lobby]", timeout=60_000)
        judge.get_by_role("button", name=f"Admit {booking.names[key]}").click()
        page.wait_for_selector("body[data-view=hearing]", timeout=60_000)

    def outbound() -> dict[str, dict[str, int]]:
        sent: list[dict[str, Any]] = judge.evaluate("() => window.courtlink.outbound()")
        return {str(s["rid"]): s for s in sent if s["kind"] == "video" and s.get("rid")}

    # Chromium adds its upper layer as its estimate of the (unshaped) uplink grows.
    at_court.wait_until(
        lambda: len(outbound()) >= 2 and all(s["frameWidth"] > 0 for s in outbound().values()),
        timeout=150,  # 13-25 s alone, 80 s beside a whole test suite
        what="the judge encoding its layers",
    )
    widths = {rid: int(s["frameWidth"]) for rid, s in outbound().items()}
    top = max(widths.values())
    print(f"judge's layers (rid: width) after {time.monotonic() - started:.1f} s: {widths}")

    def width(group: Participants, page: Page) -> int:
        return int(judge_camera(group, page, judge_id).get("frameWidth", 0))

    def frames(group: Participants, page: Page) -> int:
        return int(judge_camera(group, page, judge_id).get("framesDecoded", 0))

    try:
        at_court.wait_until(lambda: width(at_court, near) == top, timeout=60, what=f"the court observer at {top} px")
        at_home.wait_until(lambda: width(at_home, far) == top, timeout=60, what=f"the home observer at {top} px")
    except pytest.fail.Exception:
        print(f"court observer: {at_court.inbound(near)}\nhome observer: {at_home.inbound(far)}")
        print(f"home observer: {at_home.state(far)}")
        raise

    # Each layer's bitrate, from the judge's own statistics over 2 s at a time: Chromium's full layer grows for a
    # while after it starts, until it is clearly above the half one.
    def bitrates() -> dict[str, int]:
        first, t0 = outbound(), time.monotonic()
        time.sleep(2.0)
        last, t1 = outbound(), time.monotonic()
        return {rid: round((last[rid]["bytesSent"] - first[rid]["bytesSent"]) * 8 / (t1 - t0) / 1000) for rid in last}

    kbps = bitrates()
    deadline = time.monotonic() + 40
    while kbps["f"] < 1.3 * kbps["h"] and time.monotonic() < deadline:
        kbps = bitrates()
    assert kbps["f"] >= 1.3 * kbps["h"], f"the judge's layers never grew apart (kbit/s): {kbps}"
    # The home link: halfway between the two layers (each with the audio beside it), so the smaller one fits and
    # the full one does not (Chromium's fake camera: about 250 and 400 kbit/s).
    rate = (kbps["h"] + kbps["f"]) // 2 + AUDIO_KBIT
    print(f"layer bitrates (kbit/s): {kbps}; home link {rate} kbit/s + {LOSS_PERCENT}% loss")

    # The loss is dropped where the packets arrive (the home side's input): dropped on the node's own output, every
    # drop failed its sendmmsg with EPERM and the node sent the packet again, so 1% loss was almost none.
    shape(court, court_dev, Shape(rate_mbit=rate / 1000, loss_percent=LOSS_PERCENT), drop_at=drop_at)
    shaped_at = time.monotonic()
    try:
        at_home.wait_until(
            lambda: 0 < width(at_home, far) < top, timeout=STEP_DOWN_WITHIN, what="the home observer on a smaller layer"
        )
    except pytest.fail.Exception:
        print(f"layer switches: {layer_facts(server.log_path)}")
        raise
    stepped = time.monotonic() - shaped_at
    print(f"home observer decoding {width(at_home, far)} px {stepped:.1f} s after the link was shaped")

    # Both keep decoding, each on its layer; the shaped one does not flap back up to the full layer.
    seen: dict[str, set[int]] = {"near": set(), "far": set()}
    far_before = judge_camera(at_home, far, judge_id)
    before = (frames(at_court, near), frames(at_home, far))
    watch_start = time.monotonic()
    while time.monotonic() - watch_start < WATCH:
        seen["near"].add(width(at_court, near))
        seen["far"].add(width(at_home, far))
        time.sleep(0.5)
    watched = time.monotonic() - watch_start
    after = (frames(at_court, near), frames(at_home, far))
    far_stats = judge_camera(at_home, far, judge_id)
    fps = (round((after[0] - before[0]) / watched, 1), round((after[1] - before[1]) / watched, 1))
    switches = [
        {k: f.get(k) for k in ("layer", "previous", "budget_kbps", "subscriber", "timestamp")}
        for f in layer_facts(server.log_path)
    ]
    print(
        f"widths while shaped: court observer {sorted(seen['near'])}, home observer {sorted(seen['far'])}; "
        f"fps court {fps[0]}, home {fps[1]}; layer switches: {switches}"
    )
    counts = ("packetsLost", "nackCount", "pliCount", "keyFramesDecoded", "framesDropped", "freezeCount")
    print("home observer while shaped:", {k: far_stats.get(k, 0) - far_before.get(k, 0) for k in counts})
    for page, name in ((judge, "judge"), (near, "court-observer"), (far, "home-observer")):
        page.screenshot(path=str(shots / f"{name}.png"))
    assert seen["near"] == {top}, seen
    assert all(0 < w < top for w in seen["far"]), seen
    assert after[0] > before[0] + 20, ("court observer stopped decoding", before, after)
    assert after[1] > before[1] + 20, ("home observer stopped decoding", before, after)

    # The limit is lifted: a padding probe the size of the step up shows the link carries the full layer again, and
    # the home observer goes back up (the issue asks paused video back within 2 s; without probing a refused layer
    # waited out the node's retry hold, 13 s or more).
    unshape(court, court_dev, drop_at=drop_at)
    lifted_at = time.monotonic()
    try:
        at_home.wait_until(
            lambda: width(at_home, far) == top, timeout=LIFTED_WITHIN, what=f"the home observer at {top}"
        )
    except pytest.fail.Exception:
        print(f"probes: {probe_facts(server.log_path)}")
        raise
    back = time.monotonic() - lifted_at
    print(f"LIFTED home observer back at {top} px {back:.1f} s after the limit was lifted; probes: ", end="")
    print([{k: f.get(k) for k in ("event", "goal_kbps", "layers", "timestamp")} for f in probe_facts(server.log_path)])


LIFT_COURT, LIFT_HOME = "10.81.0.1", "10.81.0.2"
LIFT_RATE_KBIT = 450
"""The shaped downlink: the judge's half layer (about 250 kbit/s for Chromium's fake camera) and three audio streams
fit, the prosecutor's video beside them does not."""
LIFT_LOSS_PERCENT = 2
LIFT_PAUSED_WITHIN = 40.0
"""Seconds the node has to pause the prosecutor's video for the shaped defendant (a bound, not a timing)."""
LIFT_WATCH = 15.0
"""Seconds the paused stream is watched for the lift watch's padding."""
LIFT_BACK_BOUND = 30.0
"""Seconds the paused video has to come back after the lift: a bound that catches a video that never returns, not a
timing. The issue's 2 s is a measured figure (printed here, reported from runs on a quiet machine): tests never assert
wall-clock times, and this one ran 4.4 s once on a loaded CI machine."""


def camera(p: Participants, page: Page, participant_id: str) -> dict[str, Any]:
    """The inbound stats of ``participant_id``'s camera at ``page`` (empty before it arrives)."""
    for s in p.inbound(page):
        if s["participant_id"] == participant_id and s.get("source") == "camera" and s["kind"] == "video":
            return s
    return {}


def test_chromium_gets_paused_video_padded_and_back_after_the_lift(tmp_path: Path) -> None:
    """Behind 450 kbit/s + 2% loss the prosecutor's video is paused for the defendant's Chromium, which receives the
    lift watch's padding on that stream and NACKs what it loses of it; a 6 s cut of its UDP resumes nothing; after
    the lift the video comes back."""
    require_chromium()
    shots = artifact_dir("thin-lift")
    names = (("cl-tl-court", "cl-tl-home"), (LIFT_COURT, LIFT_HOME), ("vtlcourt", "vtlhome"))
    with adapting_server_on_a_link(tmp_path, *names) as (link, server):
        try:
            booking = book_hearing(
                server,
                [("Wang Fang", "judge", "court"), ("Li Na", "prosecutor", "court"), ("Ma Jun", "defendant", "remote")],
            )
            args = namespace_args(server.base_url, LIFT_COURT)
            allowed = frozenset({LIFT_COURT})
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
                        _lift_run(server, booking, link, at_court, at_home, shots)
                finally:
                    home_browser.close()
                    court_browser.close()
        finally:
            unshape(link.a, link.a_dev, drop_at=(link.b, link.b_dev))
            shutil.copyfile(server.log_path, shots / "server.log")


def _judge_opens(at_court: Participants, booking: Any) -> Page:
    """The judge's page, joined, with the courtroom open."""
    judge = at_court.open(booking.links["judge"], viewport=(1024, 600))
    at_court.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")
    return judge


def _seat(judge: Page, group: Participants, page: Page, name: str) -> None:
    """Join ``page``; admit it from the lobby if it waits there."""
    group.join(page)
    page.wait_for_selector("body[data-view=lobby], body[data-view=hearing]", timeout=60_000)
    if page.evaluate("() => document.body.dataset.view") == "lobby":
        judge.get_by_role("button", name=f"Admit {name}").click()
    page.wait_for_selector("body[data-view=hearing]", timeout=60_000)


def _lift_run(server: Any, booking: Any, link: Any, at_court: Participants, at_home: Participants, shots: Path) -> None:
    judge_id, prosecutor_id = booking.ids["judge"], booking.ids["prosecutor"]
    judge = _judge_opens(at_court, booking)
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
        link.a,
        link.a_dev,
        Shape(rate_mbit=LIFT_RATE_KBIT / 1000, loss_percent=LIFT_LOSS_PERCENT),
        drop_at=(link.b, link.b_dev),
    )

    def changes() -> list[str]:
        return video_changes(server.log_path, booking.ids["defendant"])

    def paused() -> bool:
        return video_paused(server.log_path, booking.ids["defendant"])

    try:
        at_home.wait_until(paused, timeout=LIFT_PAUSED_WITHIN, what="the prosecutor's video paused for the defendant")
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
    while time.monotonic() - watch_start < LIFT_WATCH:
        time.sleep(0.5)
        now = camera(at_home, defendant, prosecutor_id)
        if now.get("framesDecoded", 0) == last.get("framesDecoded", 0):
            paused_for += 0.5
            for k in counts:
                seen[k] += int(now.get(k, 0)) - int(last.get(k, 0))
        last = now
    judge_last = decoded(judge_id)
    flaps = changes().count("subscriber_video_resumed")
    print(f"the prosecutor's stream at the defendant while paused ({paused_for:.1f} s of {LIFT_WATCH:.0f}): {seen}")
    fps = (judge_last - judge_first) / LIFT_WATCH
    print(f"the judge's video meanwhile: {fps:.1f} fps; resumes before the lift: {flaps}")
    defendant.screenshot(path=str(shots / "defendant-paused.png"))
    assert judge_last > judge_first + 5 * LIFT_WATCH, "the judge's video stopped behind the thin link"
    assert paused_for >= LIFT_WATCH / 3, f"the prosecutor's video was paused {paused_for:.1f} s of {LIFT_WATCH:.0f}"
    assert seen["packetsReceived"] > 20, ("no padding on the paused stream", seen)
    assert seen["nackCount"] > 0, ("Chromium NACKed none of the padding the link lost", seen)

    _cut_while_paused(server, link, at_home, defendant, judge_id, booking.ids["defendant"])
    at_home.wait_until(paused, timeout=LIFT_PAUSED_WITHIN, what="the prosecutor's video paused at the lift")
    before = decoded(prosecutor_id)
    unshape(link.a, link.a_dev, drop_at=(link.b, link.b_dev))
    lifted, lifted_wall = time.monotonic(), datetime.now(UTC)
    at_home.wait_until(
        lambda: decoded(prosecutor_id) > before, timeout=LIFT_BACK_BOUND, what="the prosecutor's video back"
    )
    back = time.monotonic() - lifted
    probes = [
        f
        for f in facts(server.log_path, "subscriber_probe_started")
        if f.get("event") == "subscriber_probe_started" and f.get("lift_padding")
    ]
    print(f"the prosecutor's video back {back:.2f} s after the lift; probes after padding: {probes[-1:]}")
    defendant.screenshot(path=str(shots / "defendant-lifted.png"))
    # What brought it back is a probe after the lift that counted the lift watch's padding.
    assert probes, "no probe counted the lift watch's padding"
    assert datetime.fromisoformat(str(probes[-1]["timestamp"])) >= lifted_wall, ("no such probe after the lift", probes)


CUT_SECONDS = 6.0
"""How long the defendant's UDP is cut both ways while the prosecutor's video is paused: past the 2.5 s after which
no REMB is fresh (``media.bandwidth.ESTIMATE_MAX_AGE``), well within ICE consent (30 s)."""
AFTER_CUT = 4.0
"""Seconds watched on the thin link once the cut ends: a video resumed into the outage would overflow it then."""
JUDGE_BACK_BOUND = 30.0
"""Seconds the judge's video has to decode again after the cut: a bound for 'never', not a timing (printed)."""


def _cut_while_paused(
    server: Any, link: Any, at_home: Participants, defendant: Page, judge_id: str, defendant_id: str
) -> None:
    """Cut all of the defendant's UDP both ways for :data:`CUT_SECONDS` while video is paused for it, then give it
    back its thin link: the node hears nothing from it (no REMB, no report, no NACK), and must neither resume the
    paused video into the silence (no estimate is no reason to forward everything) nor count the silence as a lift
    or a probe that passed; the judge's video, never paused, decodes again after the cut."""
    resumes_before = video_changes(server.log_path, defendant_id).count("subscriber_video_resumed")
    cut_from = datetime.now(UTC)
    run("ip", "netns", "exec", link.b, "nft", "-f", "-", stdin=CUT_RULES)
    try:
        time.sleep(CUT_SECONDS)
    finally:
        run("ip", "netns", "exec", link.b, "nft", "delete", "table", "inet", "courtlink_cut")
    restored, cut_to = time.monotonic(), datetime.now(UTC)
    judge_before = int(camera(at_home, defendant, judge_id).get("framesDecoded", 0))
    at_home.wait_until(
        lambda: int(camera(at_home, defendant, judge_id).get("framesDecoded", 0)) > judge_before + 5,
        timeout=JUDGE_BACK_BOUND,
        what="the judge's video decoding again after the cut",
    )
    judge_back = time.monotonic() - restored
    time.sleep(max(0.0, AFTER_CUT - (time.monotonic() - restored)))
    mine = [
        f
        for f in facts(server.log_path, "subscriber_video_resumed", "subscriber_probe_")
        if f.get("subscriber") == defendant_id and datetime.fromisoformat(str(f["timestamp"])) >= cut_from
    ]
    resumed = [f for f in mine if f.get("event") == "subscriber_video_resumed"]
    passed = [f for f in mine if f.get("event") in ("subscriber_probe_succeeded", "subscriber_probe_rung_passed")]
    # Silent from FEEDBACK_SILENCE into the cut on (a probe started before may run, and must fail "silent").
    silent_from = cut_from + timedelta(seconds=FEEDBACK_SILENCE + 0.5)
    # Until the node heard from it again (its own fact; the test's clock reads the cut's end later than that).
    back = [
        datetime.fromisoformat(str(f["timestamp"]))
        for f in facts(server.log_path, "subscriber_feedback_resumed")
        if f.get("subscriber") == defendant_id and datetime.fromisoformat(str(f["timestamp"])) >= cut_from
    ]
    silent_to = min([cut_to, *back])
    during = [f for f in mine if silent_from <= datetime.fromisoformat(str(f["timestamp"])) < silent_to]
    print(
        f"UDP cut {CUT_SECONDS:.0f} s while paused: the judge's video back {judge_back:.2f} s after the cut; "
        f"probe facts since the cut: {[(f['event'], f.get('failed_by')) for f in mine if f not in resumed]}; "
        f"resumes: {resumed}"
    )
    assert not resumed, ("video was resumed into the cut or the thin link after it", resumed)
    assert not passed, ("a probe passed through the cut or the thin link after it", passed)
    assert not [f for f in during if f.get("event") == "subscriber_probe_started"], (
        "a probe started while the link was silent (FEEDBACK_SILENCE into the cut)",
        during,
    )
    up = [
        f
        for f in facts(server.log_path, "subscriber_layer_switched")
        if f.get("subscriber") == defendant_id
        and f.get("layer") == "f"
        and datetime.fromisoformat(str(f["timestamp"])) >= cut_from
    ]
    assert not up, ("the full layer was chosen for the defendant during the cut or on the thin link after it", up)
    assert video_paused(server.log_path, defendant_id), "the prosecutor's video is no longer paused after the cut"
    assert video_changes(server.log_path, defendant_id).count("subscriber_video_resumed") == resumes_before
