"""A defendant behind a thin, lossy link keeps the hearing's audio and the judge; nobody else notices (issue 11).

One hearing, run once for the module (``tests/thin_link.py``): ``courtlink serve`` and four court-side people
(judge, prosecutor, counsel, witness, each encoding 640x360 VP8 at 15 fps, about 1.2 Mbit/s, following REMB,
plus Opus) in one network namespace; the defendant's decoding client in another, its downlink (the node-side veth's
egress) shaped with ``tc tbf`` and nftables random loss. The link changes in steps: unlimited, then 2 Mbit/s + 2%
loss, then 1 Mbit/s + 2% loss, then lifted. Each limited step is measured after :data:`SETTLE` seconds (the
node's estimate and its hold time) for :data:`MEASURE` seconds. The tests assert deliver 7 of issue 11:

- behind both limits the defendant gets >= 99% of the audio in time to play: the node offers NACK on Opus, the
  defendant's client NACKs lost audio as Chromium does then, and a resend counts only if it arrives within
  ``AUDIO_PLAYOUT`` (80 ms) of its gap; and the judge's camera at >= 10 fps with no frozen stretch over 1 s, while
  the other cameras are paused for them;
- everyone else in the hearing receives as before;
- when the limit is lifted the paused video returns within the ``LIFTED`` window watched (10 s); the time is printed
  beside the issue's goal, 2 s, and not asserted (tests assert no wall-clock times).

The node's bandwidth adaptation is on (``[media] adaptation``, the default). The loss is dropped where the
defendant's packets arrive, silently, as on a real link (``tests.netns.shape``, ``drop_at``): a drop on the node's
own output fails its ``sendmmsg`` with ``EPERM`` and was sent again, so until December 2026 this test's "2% loss"
was nearly none on the direct send path, and none at all for seconds at a time, which let padding probes run and
fail. Measured in 8 runs on their own (December 2026: a window's end read from the report after it, where each
window had shown a false freeze of up to 1.07 s at its end; a link with random loss probed only once lifted): behind
both limits the judge keeps 13.6-15.2 fps, its longest freeze 0.6 s in the median window (0.2-1.04 s; over 1 s in
1 of 16 windows, a lone loss whose keyframe took 1 s), the defendant gets 96.8-99.3% of each publisher's audio (the
random loss leaves 98%), and paused video returns 0.8-3.5 s after the lift (all cameras together, 2.4 s in the
median run; the issue asks 2 s; asserted loosely, x3 then). With audio NACKs and the lift read from NACKs too (16 runs,
December 2026): the defendant keeps 98.9-100% of the audio per window, under 99% in 1 window of 32, behind 1 Mbit/s
while a change of the judge's cap filled the link's queue and 26 resends came too late; paused video returns 2.2-3.5 s
after the lift (2.56 s median); 13 of 16 runs pass all five tests (the others: the judge frozen 1.2-1.7 s, each
within a second of a change of its aiortc publisher's cap, which re-creates the encoder with a keyframe; in two of
them a raise fell back within 0.6 s). With the lift looked for every 50 ms, judged by the NACKs' share, at odds of
0.1% and at least 342 packets (10 runs, 2 December 2026, the last 4 with that floor): the last paused camera returns
1.94-3.07 s after the lift (2.29 s median): 1.7-2.3 s until enough packets went out without a NACK (at the 240 a
second the defendant gets then, each out for 0.25 s), 0.4 s of padding probe and its verdict, 0.1-0.15 s for the
keyframes. A probe started inside a limited window in 2 of the 10 runs and failed in 0.15-0.19 s (both passed);
all five tests passed in 9 of the 10. With the resumed keyframes asked for during the probe's verdict, and a keyframe
beyond a gap released at once by the receive buffer (16 runs, 2 December 2026): the last paused camera returns
1.48-3.02 s after the lift (2.16 s median; 2.27 s in 12 runs of the code before, that day), 0.06-0.15 s after the
probe's verdict (0.10-0.20 s before), and no camera came back a second after the others (3 of 33 runs before: a
resume behind a gap the pause left, whose keyframe the receive buffer skipped). A probe started inside a limited
window in 1 of the 16 and froze the judge 1.9 s; all five tests passed in 14 of the 16. With padding on a paused
video's own stream while the lift is watched (media.bandwidth.LIFT_PADDING_SHARE; 21 runs, 2 December 2026): 1.35-2.29 s
(1.68 s median; 1.35-1.77 s, 1.66 s median, in the last 7, with a lift decided again at each look when its probe
could not start), against 2.07-2.28 s (2.18 s median) in 5 runs of the code before, that hour; all five tests passed
in all 21, and a probe started inside a limited window in 1 of them (it failed in 0.1 s, costing nothing seen).
Inside a whole test run on a shared
2-core machine, 1 of 2 runs lost its 2 Mbit/s step to the machine (court-side video on unshaped links froze too):
the module runs only when asked (``COURTLINK_THIN_LINK=1``; about 70 s, root, ``tc`` and nftables), not in CI.
``bench/thin_link.py`` prints the same figures as a table.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import pytest

from tests.netns import Shape
from tests.thin_link import ThinLinkHearing, Window, markdown, row, thin_link_hearing
from tests.thin_link_client import COURT_SIDE

SETTLE = 8.0
"""Seconds after a change of the link before measuring: REMB falls within ~2 s, the node holds a change 3 s."""
MEASURE = 12.0
BASELINE = 6.0
LIFTED = 10.0
"""Seconds watched after the limit is lifted."""
BACK_GOAL = 2.0
"""The issue's goal for paused video to return after the limit is lifted: printed beside the figures, not asserted."""
LIMITS = (Shape(rate_mbit=2, loss_percent=2), Shape(rate_mbit=1, loss_percent=2))
OTHERS = COURT_SIDE[1:]
PROBE_FACTS = (
    "subscriber_probe_started",
    "subscriber_probe_failed",
    "subscriber_probe_succeeded",
    "subscriber_video_paused",
    "subscriber_video_resumed",
)
ADAPT_FACTS = (*PROBE_FACTS, "publisher_bitrate_capped", "subscriber_link_overloaded", "subscriber_loss_backoff")

pytestmark = pytest.mark.skipif(
    os.environ.get("COURTLINK_THIN_LINK") != "1",
    reason="issue 11's thin-link acceptance run: real-time media quality with tight margins, which the noise of a "
    "shared machine inside a whole test run can cost (the module docstring has the figures); run it with "
    "COURTLINK_THIN_LINK=1 (about 70 s, root, tc and nftables)",
)


@dataclass
class Run:
    """What the stepped hearing left: a window per link condition and the return times after the lift."""

    baseline: Window
    limited: dict[str, Window] = field(default_factory=dict)
    began: dict[str, float] = field(default_factory=dict)
    """When each limit took effect (wall clock)."""
    returned: dict[str, float | None] = field(default_factory=dict)
    stepped: dict[str, Window] = field(default_factory=dict)
    """The :data:`SETTLE` seconds right after each step down, before its measured window (printed, not asserted)."""


def _step(hearing: ThinLinkHearing, link: Shape) -> tuple[float, Window]:
    began = hearing.shape(link)
    return began, hearing.window(began + SETTLE, began + SETTLE + MEASURE)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The hearing, stepped through the link conditions once for the module."""
    with thin_link_hearing(tmp_path_factory.mktemp("thin-link")) as hearing:
        start = hearing.shape(Shape())
        result = Run(baseline=hearing.window(start + 1.0, start + 1.0 + BASELINE))
        for link in LIMITS:
            result.began[link.label], result.limited[link.label] = _step(hearing, link)
        lifted = hearing.shape(Shape())
        result.returned = hearing.returned(lifted, LIFTED)
        result.stepped = {label: hearing.window(began, began + SETTLE) for label, began in result.began.items()}
        # What the node did after the lift (its facts, seconds after it), and any stall on the unlimited link.
        timeline = hearing.timeline(lifted - 1.0, lifted + LIFTED, PROBE_FACTS)
        lags = hearing.timeline(result.baseline.start - 30.0, lifted + LIFTED, ("node_loop_lagged",))
        # What the node did in each limited step, from the change of the link (the window is SETTLE s later).
        steps = {
            label: [f"{at - began:+.2f} {fact}" for at, fact in hearing.timeline(began, w.end, ADAPT_FACTS)]
            for (label, began), w in zip(result.began.items(), result.limited.values(), strict=True)
        }
        kept = hearing.keep_logs(tmp_path_factory.mktemp("thin-link-logs"))
    rows = [row("unlimited", result.baseline), *(row(label, w) for label, w in result.limited.items())]
    print("\n" + markdown(rows))
    print("paused video back after the lift: " + ", ".join(f"{p} {s}" for p, s in result.returned.items()))
    print("after the lift: " + ", ".join(f"{at - lifted:+.2f} {fact}" for at, fact in timeline))
    for label, facts in steps.items():
        at = time.strftime("%H:%M:%S", time.gmtime(result.began[label]))
        print(f"behind {label}, from the change at {at} UTC (window from +{SETTLE:g} s): " + ", ".join(facts))
    print(f"lifted at {time.strftime('%H:%M:%S', time.gmtime(lifted))} UTC")
    for label, w in result.stepped.items():
        judge = w.flow("defendant", "judge", "video")
        flows = [w.flow("defendant", p, "audio") for p in COURT_SIDE]
        audio = sum(f.delivered for f in flows) / len(flows)
        print(
            f"the {SETTLE:g} s after the step to {label} (not asserted): the judge's video {judge.fps:.1f} fps, "
            f"longest frozen {judge.stall:.2f} s; the defendant's audio {audio * 100:.1f}%"
        )
    print(f"the run's logs (server, court, defendant): {kept}")
    print(f"video stalls over 0.5 s until the unlimited window's end: {_stalls(hearing, result.baseline.end)}")
    for child in (hearing.court, hearing.defendant):
        # The client processes' own hold-ups (event loop, garbage collection), from the unlimited window's start.
        own = [e for e in child.events if e["event"] in ("loop_lagged", "gc")]
        shown = [f"{e['t'] - result.baseline.start:+.1f} s {e['event']} {e.get('lag', e.get('took'))}" for e in own]
        shown = [*shown[:12], f"... {len(shown) - 12} more"] if len(shown) > 12 else shown
        print(f"{child.name} process held: {shown or 'never'}")
    held = [f"{at - result.baseline.start:+.1f} s {what}" for at, what in lags]
    print(f"node event loop held >= 0.25 s (seconds from the unlimited window's start): {held or 'never'}")
    return result


def _stalls(hearing: ThinLinkHearing, until: float) -> dict[str, list[str]]:
    """Each receiver's video stalls over 0.5 s up to ``until`` (start, from the unlimited window's, and length),
    with the publishers that stalled then."""
    found: dict[tuple[str, float, float], set[str]] = {}
    for child in (hearing.court, hearing.defendant):
        for line in child.lines:
            if line["t"] > until + 1.5:
                break
            for receiver, data in line["people"].items():
                for publisher, kinds in data["recv"].items():
                    for a, b in kinds.get("video", {}).get("stalls", ()):
                        if b - a > 0.5:
                            found.setdefault((receiver, round(a, 1), round(b - a, 1)), set()).add(publisher)
    out: dict[str, list[str]] = {}
    start = until - BASELINE
    for (receiver, a, length), publishers in sorted(found.items()):
        out.setdefault(receiver, []).append(f"{a - start:+.1f} s for {length} s ({len(publishers)} publishers)")
    return out


def test_behind_a_thin_lossy_link_the_defendant_hears_everyone(run: Run) -> None:
    """Behind 2 and 1 Mbit/s with 2% loss, the defendant keeps >= 99% of the audio: congestion costs them none, and
    what the random loss takes is resent in time to play (the node offers NACK on Opus; the client NACKs audio as
    Chromium does then; a resend later than ``AUDIO_PLAYOUT`` counts as lost)."""
    for label, w in run.limited.items():
        flows = [w.flow("defendant", p, "audio") for p in COURT_SIDE]
        kept = {p: round(f.delivered * 100, 1) for p, f in zip(COURT_SIDE, flows, strict=True)}
        share = sum(f.packets - f.late for f in flows) / max(1, sum(f.span for f in flows))
        late, nacks = sum(f.late for f in flows), sum(f.nacks for f in flows)
        print(f"{label}: the defendant's audio {kept} (all: {share * 100:.2f}%; {nacks} NACKs, {late} resends late)")
        assert share >= 0.99, (label, round(share * 100, 2), kept)
        # Each publisher alike (600 packets each).
        assert all(v >= 98.5 for v in kept.values()), (label, kept)


def test_behind_a_thin_lossy_link_the_defendant_sees_the_judge_and_the_others_pause(run: Run) -> None:
    """Behind 2 and 1 Mbit/s with 2% loss, the judge's camera reaches the defendant at >= 10 fps, never frozen
    over 1 s, while the other cameras are paused for them (not sent, rather than sent to be lost)."""
    for label, w in run.limited.items():
        judge = w.flow("defendant", "judge", "video")
        assert judge.fps >= 10.0, (label, round(judge.fps, 1))
        assert judge.stall <= 1.0, (label, round(judge.stall, 2))
        others = {p: round(w.flow("defendant", p, "video").fps, 1) for p in OTHERS}
        assert all(fps < 1.0 for fps in others.values()), (label, others)


def test_everyone_else_in_the_hearing_is_unaffected(run: Run) -> None:
    """While the defendant's link is thin, everyone else receives everyone's audio and video as before."""
    for label, w in run.limited.items():
        assert not w.restarts, (label, "media restarts", w.restarts)
        for receiver in COURT_SIDE:
            for publisher in (*COURT_SIDE, "defendant"):
                if publisher == receiver:
                    continue
                audio = w.flow(receiver, publisher, "audio").delivered
                video, before = w.flow(receiver, publisher, "video"), run.baseline.flow(receiver, publisher, "video")
                where = (label, f"{receiver} <- {publisher}")
                # (98%, not 100%: on this shared machine a starved client process loses a packet now and then; the
                # node's resend flood without adaptation cost them 7-12%.)
                assert audio >= 0.98, (*where, round(audio * 100, 1))
                assert video.fps >= 0.8 * before.fps, (*where, round(video.fps, 1), round(before.fps, 1))
                assert video.stall <= 1.0, (*where, round(video.stall, 2))


def test_paused_video_returns_when_the_limit_is_lifted(run: Run) -> None:
    """When the limit is lifted, the cameras paused for the defendant return within the window watched (the issue's
    goal, 2 s, is printed beside the times)."""
    print(f"paused video back after the lift (s): {run.returned} (the issue's goal: {BACK_GOAL:.0f} s)")
    assert run.returned, "no camera was paused when the limit was lifted"
    never = [p for p, s in run.returned.items() if s is None]
    assert not never, f"not back within {LIFTED:.0f} s of the lift: {never}"


def test_the_harness_sees_a_thin_link(run: Run) -> None:
    """The shaping is real: on the unlimited link every flow to the defendant runs, and behind the limits the
    link's queue drops or the node holds back (less video arrives than on the unlimited link)."""
    for p in COURT_SIDE:
        assert run.baseline.flow("defendant", p, "video").fps >= 10.0, p
        assert run.baseline.flow("defendant", p, "audio").delivered >= 0.99, p
    for label, w in run.limited.items():
        total = sum(w.flow("defendant", p, "video").frames for p in COURT_SIDE)
        assert total < 0.75 * sum(run.baseline.flow("defendant", p, "video").fps * MEASURE for p in COURT_SIDE), label
