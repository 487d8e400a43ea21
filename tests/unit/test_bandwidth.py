"""Bandwidth adaptation decisions (media.bandwidth), with a fake clock: what a subscriber on a thin link gets."""

from __future__ import annotations

import pytest

from media.bandwidth import (
    CAP_RAISE_AFTER,
    ESTIMATE_MAX_AGE,
    FEEDBACK_SILENCE,
    LOSS_BACKOFF_MIN,
    LOSS_MEMORY,
    LOSS_NEAR,
    LOSS_RECOVER_AFTER,
    NACK_MAX_AGE,
    OVERLOAD_AGE,
    OVERLOAD_FLOOR,
    OVERLOAD_MARGIN,
    OVERLOAD_MIN_NACKED,
    OVERLOAD_SEEN_SECONDS,
    OVERLOAD_SHARE,
    OVERLOAD_SPAN,
    OVERLOAD_WINDOW,
    PACE_MAX_DELAY,
    REPAIR_DROPS,
    RESEND_INTERVAL_MAX,
    RESEND_INTERVAL_MIN,
    BitrateMeter,
    EstimateBook,
    LinkQuality,
    LossBackoff,
    NackBudget,
    NackLoss,
    PacingBucket,
    RepairTrigger,
    ResendGuard,
    SubscriberAllocator,
    VideoStream,
    hold_raise,
    publisher_cap,
    settle_cap,
    video_priority,
)
from media.sending import resend_allowed

MBIT = 1_000_000


def streams(*needs: int) -> list[VideoStream]:
    return [VideoStream(key=f"v{i}", need_bps=need) for i, need in enumerate(needs)]


def test_priority_is_evidence_judge_speaker_then_last_n() -> None:
    """Evidence comes before the judge's camera, then the active speaker's, then the rest in last-N order."""
    order = video_priority(
        [
            VideoStream("a", 1),
            VideoStream("speaker", 1, speaker=True),
            VideoStream("b", 1),
            VideoStream("judge", 1, judge=True),
            VideoStream("doc", 1, evidence=True),
        ]
    )
    assert [v.key for v in order] == ["doc", "judge", "speaker", "a", "b"]


def test_estimate_sums_per_stream_rembs_and_forgets_stale_ones() -> None:
    """An aiortc subscriber's per-stream REMBs add up; one about streams no longer sent stops counting."""
    book = EstimateBook()
    assert book.estimate(0.0) is None
    book.remb(0.0, 300_000, [1, 11])
    book.remb(0.5, 200_000, [2])
    book.remb(0.6, 250_000, [2])  # a newer report about the same stream replaces the older one
    assert book.estimate(1.0) == 550_000
    book.remb(2.0, 400_000, [1, 11])
    assert book.estimate(0.6 + ESTIMATE_MAX_AGE + 0.1) == 400_000
    assert book.estimate(10.0) is None


def test_estimate_ignores_reports_about_streams_no_longer_sent() -> None:
    """The last REMB about a stream just paused does not count: it would hide how thin the link is."""
    book = EstimateBook()
    book.remb(0.0, 300_000, [1])
    book.remb(0.0, 300_000, [2])
    assert book.estimate(0.5, among={1, 2}) == 600_000
    assert book.estimate(0.5, among={1}) == 300_000
    assert book.estimate(0.5, among={3}) is None


def test_estimate_browser_remb_replaces_overlapping_reports() -> None:
    """A browser's one REMB about all streams is the estimate, not added to its earlier reports."""
    book = EstimateBook()
    book.remb(0.0, 2 * MBIT, [1, 2, 3])
    book.remb(0.5, 1 * MBIT, [1, 2])
    assert book.estimate(0.6) == 1 * MBIT


def test_meter_measures_payload_bitrate() -> None:
    """A track's bitrate comes from its byte counter over the last seconds, as REMB estimators count it."""
    meter = BitrateMeter(window=2.0)
    assert meter.rate(0.0, 0) == 0
    for step in range(1, 41):
        t = step * 0.1
        rate = meter.rate(t, int(100_000 * t))
    assert 790_000 <= rate <= 810_000


def test_streams_no_remb_is_about_yet_count_as_carried() -> None:
    """At a hearing start, the first stream's REMB alone does not pause the streams whose REMB has not come yet."""
    alloc = SubscriberAllocator(hold=3.0, pause_after=0)
    videos = [VideoStream("v0", MBIT), VideoStream("v1", MBIT, covered=False), VideoStream("v2", MBIT, covered=False)]
    assert alloc.update(0.0, MBIT, videos).paused == ()
    assert alloc.update(5.0, 300_000, streams(MBIT, MBIT, MBIT)).paused == ("v1", "v2")


def test_thin_link_keeps_top_video_and_pauses_the_rest() -> None:
    """An estimate below what is forwarded pauses video from the lowest priority up; the top video always flows."""
    alloc = SubscriberAllocator(hold=3.0, pause_after=0)
    videos = streams(MBIT, MBIT, MBIT, MBIT)
    first = alloc.update(0.0, 5 * MBIT, videos)
    assert first.forwarded == ("v0", "v1", "v2", "v3")
    assert not first.constrained
    thin = alloc.update(4.0, int(1.9 * MBIT), videos)
    assert thin.forwarded == ("v0", "v1")
    assert thin.paused_now == ("v2", "v3")
    assert thin.constrained
    very_thin = alloc.update(8.0, 300_000, videos)
    assert very_thin.forwarded == ("v0",)
    assert very_thin.paused == ("v1", "v2", "v3")
    assert very_thin.top == "v0"
    assert very_thin.top_available_bps == int(300_000 * alloc.headroom)


def test_a_passing_dip_of_the_estimate_pauses_nothing() -> None:
    """One low REMB (a busy receiver), or an estimate a little under what is sent, never pauses video."""
    alloc = SubscriberAllocator(hold=3.0)
    videos = streams(MBIT, MBIT, MBIT)
    assert alloc.update(0.0, 3 * MBIT, videos).paused == ()
    assert alloc.update(0.5, 300_000, videos).paused == ()  # one dip
    assert alloc.update(1.0, 3 * MBIT, videos).paused == ()
    for t in (1.5, 2.0, 2.5, 3.0):
        assert alloc.update(t, int(2.5 * MBIT), videos).paused == ()  # 3 Mbit/s fits 2.5 x 1.25
    assert alloc.update(3.5, 300_000, videos).paused == ()
    assert alloc.update(4.0, 300_000, videos).paused == ()
    assert alloc.update(4.5, 300_000, videos).paused_now == ("v1", "v2")  # low for a second: paused


def test_an_overflowing_link_pauses_at_once_what_does_not_fit_what_it_delivered() -> None:
    """Told the link overflows, the allocator pauses without waiting, within the hold, and without the tolerance
    a REMB gets: the estimate is what arrived, not 0.85x of it."""
    alloc = SubscriberAllocator(hold=3.0)
    videos = streams(MBIT, MBIT, MBIT, MBIT)
    assert alloc.update(0.0, 5 * MBIT, videos).paused == ()
    # 2.4 Mbit/s against 4 Mbit/s forwarded: a REMB would pause only after PAUSE_AFTER (and keep 3 under 1.3x).
    assert alloc.update(0.2, int(2.4 * MBIT), videos).paused_now == ()
    over = alloc.update(0.3, int(2.4 * MBIT), videos, overloaded=True)
    assert over.paused_now == ("v2", "v3")
    assert over.forwarded == ("v0", "v1")
    # Within the hold, a second overflow pauses again at once.
    again = alloc.update(0.6, int(0.8 * MBIT), videos, overloaded=True)
    assert again.paused_now == ("v1",)
    assert again.top_available_bps == int(0.8 * MBIT * alloc.headroom)


VIDEO, AUDIO = int(4.5 * MBIT), MBIT // 2


def carried(nacked: int, sent: int) -> int:
    """The video an overflow's verdict leaves beside :data:`AUDIO`, when :data:`VIDEO` was forwarded."""
    delivered = (VIDEO + AUDIO) * (1 - min(nacked, sent) / sent) * OVERLOAD_MARGIN
    return max(int(delivered) - AUDIO, int(VIDEO * OVERLOAD_FLOOR))


def test_nack_loss_counts_each_packet_once_against_what_was_sent() -> None:
    """A NACK's packets count once (aiortc asks again for its whole list at each gap), against the video packets sent
    in the same window; an overflow says what the link delivered, and the next needs new NACKs."""
    loss = NackLoss()
    sent = 0
    t = 0.0
    number = 50_000
    # 2% random loss of 460 packets/s: never an overflow.
    for i in range(100):
        t = i * 0.05
        sent += 23
        if i % 2 == 0:
            assert loss.overloaded(t, VIDEO, AUDIO, {1: number}) is None
        loss.nacked(t, 1, [i * 10, i * 10 + 1] if i % 4 == 0 else [i * 10], sent)
        assert loss.overloaded(t, VIDEO, AUDIO, {1: number}) is None
    # The link steps down: half of what is sent is lost (each list asked again, as aiortc does, adds nothing).
    stepped = t
    delivered = None
    lost: list[int] = []
    while delivered is None:
        t += 0.05
        sent += 23
        lost += range(number, number + 12)
        number += 12
        loss.nacked(t, 1, lost[-40:], sent)  # the whole missing list again, with the new gap
        nacked, counted = loss.share(t)
        # The window's video packets, from the last count at or before its start (0.5 s of 460 packets/s, or 0.55).
        assert 230 <= counted <= 253
        shown = loss.overflowing(t)  # (the node's cheap test at every NACK)
        delivered = loss.overloaded(t, VIDEO, AUDIO, {1: number})
        assert (shown is None) == (delivered is None)
        if t - stepped >= OVERLOAD_SPAN:  # (the random loss's NACKs before the step spread it earlier)
            assert (delivered is None) == (nacked < max(OVERLOAD_MIN_NACKED, OVERLOAD_SHARE * counted))
    assert t - stepped <= 0.25  # at once, where receiver reports take 0.5-1.5 s and REMB more
    assert loss.lost_at(1) == t  # (the stream lost packets in it: its repair may not wait)
    assert loss.lost_at(2) == float("-inf")
    assert delivered == carried(nacked, counted)
    assert loss.overloads == 1
    # Judged: from now on only packets sent after the verdict count, against what is sent after it. The NACKs of what
    # was lost before it keep coming a round trip and more, and count no more (they would cut the rate again).
    assert loss.share(t) == (0, 0)
    for _ in range(10):
        t += 0.05
        sent += 23
        lost += range(number - 12, number)  # (12 more of the packets sent before the verdict)
        loss.nacked(t, 1, lost[-40:], sent)
        assert loss.overloaded(t, VIDEO, AUDIO, {1: number + 1000}) is None
    assert loss.share(t)[0] == 0
    # What the verdict left still overflows: a second verdict, on the loss of packets sent since, once the loss went
    # on for OVERLOAD_SPAN (a burst alone, as from a receiver whose process stalled a moment, is no verdict).
    t += 0.05
    sent += 23
    loss.nacked(t, 1, range(number, number + 60), sent)
    assert loss.overloaded(t, VIDEO, AUDIO, {1: number + 1000}) is None
    t += OVERLOAD_SPAN
    sent += 23
    loss.nacked(t, 1, [number + 60], sent)
    assert loss.overloaded(t, VIDEO, AUDIO, {1: number + 1000}) is not None
    assert loss.overloads == 2
    # A number is remembered for OVERLOAD_SEEN_SECONDS, then named again counts again (a new loss of a reused
    # number); another stream's numbers are its own.
    fresh = list(range(number + 2000, number + 2010))
    t += 0.05
    loss.nacked(t, 1, fresh, sent)
    t += OVERLOAD_WINDOW + 0.01
    loss.nacked(t, 1, fresh, sent)
    assert loss.share(t)[0] == 0
    t += OVERLOAD_SEEN_SECONDS
    loss.nacked(t, 1, fresh, sent)
    assert loss.share(t)[0] == len(fresh)
    loss.nacked(t, 2, fresh, sent)
    assert loss.share(t)[0] == 2 * len(fresh)


def test_nack_loss_judges_a_window_only_from_a_count_taken_before_its_nacks() -> None:
    """Without a count of what was sent before the NACKs (a subscriber just joined, or quiet), the NACKs that came with
    the first count are not weighed against the few packets sent since: they would read as more than everything."""
    loss = NackLoss()
    loss.nacked(10.0, 1, range(30), 1_000)  # a first NACK: nothing to weigh it against
    assert loss.share(10.0) == (0, 0)
    loss.nacked(10.05, 1, range(30, 33), 1_020)
    assert loss.share(10.05) == (3, 20)
    assert loss.overloaded(10.05, VIDEO, AUDIO, {1: 200}) is None
    loss.nacked(10.1, 1, range(40, 60), 1_040)
    loss.nacked(10.25, 1, range(60, 80), 1_060)
    assert loss.share(10.25) == (43, 60)  # more than half lost, over 0.15 s...
    assert loss.overloaded(10.25, VIDEO, AUDIO, {1: 200}) is None  # ...but counted for less than a window
    loss.sent(10.5, 1_230)  # a receiver report's count
    loss.nacked(10.52, 1, range(100, 130), 1_250)
    loss.nacked(10.7, 1, range(130, 160), 1_300)
    assert loss.share(10.7) == (80, 260)  # since the count at 10.1, the last at or before the window and the onset
    assert loss.overloaded(10.7, VIDEO, AUDIO, {1: 200}) == carried(80, 260)
    assert carried(80, 260) == int(5 * MBIT * (1 - 80 / 260) * 0.85) - AUDIO  # (above half the video)


def test_nack_loss_weighs_the_loss_against_what_was_sent_since_it_began() -> None:
    """A link that stepped down a moment ago is judged by what it dropped since (39%), not diluted by the clean part
    of the window before the step (17%: no verdict at all, or too small a cut)."""
    loss = NackLoss()
    for i in range(10):  # 0.45 s without loss, at 460 packets/s
        loss.sent(i * 0.05, i * 23)
    # The link steps down at 0.45; what it drops from then on is NACKed about OVERLOAD_LAG later.
    loss.nacked(0.55, 1, range(12), 230)
    loss.nacked(0.6, 1, range(12, 24), 253)
    loss.nacked(0.72, 1, range(24, 36), 299)
    assert loss.share(0.72) == (36, 299 - 207)  # from the count at 0.45, the onset of the loss
    # What it delivered less the audio (2.09 Mbit/s) is under half the video: one verdict cuts no deeper.
    assert loss.overloaded(0.72, VIDEO, AUDIO, {1: 100}) == carried(36, 92) == int(VIDEO * OVERLOAD_FLOOR)


def test_nack_loss_reads_the_nacks_after_a_silence_of_the_feedback_as_an_outage() -> None:
    """A subscriber whose feedback fell silent for longer than FEEDBACK_SILENCE had its link out: the NACKs that come
    with its return name what was sent into the outage (all of it at once, then new holes as the link loses), and for
    OVERLOAD_AGE they count nothing, however much they name. After that the same loss is an overflow, as ever."""
    loss = NackLoss()
    for i in range(20):  # 460 video packets/s, and feedback every 50 ms
        assert loss.sent(i * 0.05, i * 23) is None
    # Out from 0.95 to 4.0: the first feedback after it is the whole gap, NACKed.
    assert loss.nacked(4.0, 1, range(1_400), 1_400) == pytest.approx(4.0 - 0.95)
    assert loss.outages == 1
    t, sent, number = 4.0, 1_400, 2_000
    while t + 0.05 < 4.0 + OVERLOAD_AGE:  # the link goes on losing half of what is sent
        t += 0.05
        sent += 23
        loss.nacked(t, 1, range(number, number + 12), sent)
        number += 12
        assert loss.overloaded(t, VIDEO, AUDIO, {1: number}) is None
        assert loss.share(t)[0] == 0
    verdict = None
    while verdict is None and t < 4.0 + OVERLOAD_AGE + 1.0:
        t += 0.05
        sent += 23
        loss.nacked(t, 1, range(number, number + 12), sent)
        number += 12
        verdict = loss.overloaded(t, VIDEO, AUDIO, {1: number})
    assert verdict is not None
    assert t - (4.0 + OVERLOAD_AGE) <= OVERLOAD_SPAN + 0.1
    assert loss.overloads == 1
    # Feedback that comes a little late is no outage.
    assert loss.sent(t + FEEDBACK_SILENCE - 0.01, sent + 100) is None
    assert loss.outages == 1


def test_hold_allows_one_change_per_hold_seconds() -> None:
    """After a change, nothing changes again before the hold time, however the estimate moves."""
    alloc = SubscriberAllocator(hold=3.0, pause_after=0)
    videos = streams(MBIT, MBIT, MBIT)
    alloc.update(0.0, 500_000, videos)  # pauses v1, v2
    assert alloc.update(1.0, 10 * MBIT, videos).forwarded == ("v0",)
    assert alloc.update(2.9, 10 * MBIT, videos).resumed_now == ()
    assert alloc.update(3.0, 10 * MBIT, videos).resumed_now == ("v1",)
    assert alloc.update(4.0, 10 * MBIT, videos).resumed_now == ()
    assert alloc.update(6.1, 10 * MBIT, videos).resumed_now == ("v2",)


def test_resume_needs_the_margin() -> None:
    """A paused stream resumes only when the estimate carries it with the resume margin, not merely fits."""
    alloc = SubscriberAllocator(hold=1.0, pause_after=0)
    videos = streams(MBIT, MBIT)
    alloc.update(0.0, 500_000, videos)
    # Two streams fit (2 Mbit/s <= 1.9 * 1.1) but not with the margin (2.3 Mbit/s): stays paused.
    assert alloc.update(2.0, int(1.9 * MBIT), videos).paused == ("v1",)
    assert alloc.update(3.0, int(2.1 * MBIT), videos).resumed_now == ("v1",)


def test_probe_when_the_estimate_sits_at_its_ceiling_and_back_off_when_it_fails() -> None:
    """A recovered link brings paused video back by a probe; a probe the link cannot carry is undone at once."""
    alloc = SubscriberAllocator(hold=1.0, pause_after=0)
    videos = streams(MBIT, MBIT)
    alloc.update(0.0, 500_000, videos)
    ceiling = int(1.5 * MBIT)  # a REMB estimator shows at most ~1.5x what it receives
    assert alloc.update(1.5, ceiling, videos).resumed_now == ()  # the ceiling must last a probe wait
    assert alloc.update(3.0, ceiling, videos).resumed_now == ()
    probe = alloc.update(3.6, ceiling, videos)
    assert probe.resumed_now == ("v1",)
    failed = alloc.update(3.9, 800_000, videos)  # congestion: paused again without waiting for the hold
    assert failed.paused_now == ("v1",)
    # The next probe waits twice as long.
    alloc.update(5.0, ceiling, videos)
    assert alloc.update(8.9, ceiling, videos).resumed_now == ()
    assert alloc.update(9.1, ceiling, videos).resumed_now == ("v1",)


def test_probe_fails_when_the_earlier_streams_estimate_falls() -> None:
    """A probed stream no REMB is about yet is paused again as soon as the other streams' estimate falls."""
    alloc = SubscriberAllocator(hold=1.0, pause_after=0)
    alloc.update(0.0, 500_000, streams(MBIT, MBIT))
    ceiling = int(1.5 * MBIT)
    alloc.update(1.5, ceiling, streams(MBIT, MBIT))
    assert alloc.update(3.6, ceiling, streams(MBIT, MBIT)).resumed_now == ("v1",)
    probing = [VideoStream("v0", MBIT), VideoStream("v1", MBIT, covered=False)]
    assert alloc.update(4.0, ceiling, probing).paused == ()  # carried while the estimate holds
    assert alloc.update(4.5, int(1.2 * MBIT), probing).paused_now == ("v1",)


def test_no_estimate_forwards_everything() -> None:
    """A subscriber without REMB gets everything, as without adaptation."""
    alloc = SubscriberAllocator(hold=3.0, pause_after=0)
    videos = streams(MBIT, MBIT)
    assert alloc.update(0.0, None, videos).forwarded == ("v0", "v1")
    alloc.update(1.0, 100_000, videos)
    assert alloc.update(5.0, None, videos).forwarded == ("v0", "v1")


def test_new_stream_of_a_constrained_subscriber_starts_paused() -> None:
    """A video that appears while a subscriber is constrained starts paused when it does not fit."""
    alloc = SubscriberAllocator(hold=3.0, pause_after=0)
    alloc.update(0.0, 600_000, streams(MBIT, MBIT))
    later = alloc.update(0.5, 600_000, streams(MBIT, MBIT, MBIT))
    assert later.paused == ("v1", "v2")
    assert later.paused_now == ()


def test_publisher_cap_is_the_weakest_subscriber_floored() -> None:
    """The publisher is asked for what its weakest constrained receiver takes, never below the floor."""
    assert publisher_cap([], 150_000) is None
    assert publisher_cap([900_000, 400_000], 150_000) == 400_000
    assert publisher_cap([40_000], 150_000) == 150_000


def test_nack_budget_drops_old_and_over_budget_resends() -> None:
    """Resends spend a share of the estimate; old NACKs and those beyond the budget are dropped; audio goes first."""
    budget = NackBudget(share=0.2)
    assert budget.allow(0.0, 1000, 0.1)  # no estimate yet: only the age limit
    assert not budget.allow(0.0, 1000, NACK_MAX_AGE + 0.1)
    budget.set_estimate(400_000)  # 80 kbit/s of resends, a bucket of 5000 bytes
    sent = sum(budget.allow(1.0, 1200, 0.05) for _ in range(20))
    assert sent == 4
    assert budget.allow(1.0, 200, 0.05, audio=True)  # audio is never refused for the budget
    assert not budget.allow(1.0, 1200, 0.05)
    assert sum(budget.allow(1.5, 1200, 0.05) for _ in range(20)) >= 3  # tokens come back with time
    assert budget.dropped == 1 + 16 + 1 + (20 - (budget.resent - 6))
    assert budget.resent >= 9


def test_resends_of_what_a_failed_probe_overflowed_spend_no_budget() -> None:
    """Packets sent while a failed probe overflowed the link (``forgive``) are resent with the budget spent, and
    spend nothing of it; packets sent before or after are refused as before, and age still refuses them."""
    budget = NackBudget(share=0.2)
    budget.set_estimate(400_000)  # a bucket of 5000 bytes
    assert sum(budget.allow(10.0, 1200, 0.05) for _ in range(10)) == 4  # the bucket is spent
    budget.forgive(9.5, 9.9)
    assert all(budget.allow(10.0, 1200, age) for age in (0.15, 0.3, 0.45))  # sent at 9.85, 9.7, 9.55: forgiven
    assert budget.forgiven == 3
    assert not budget.allow(10.0, 1200, 0.6)  # sent at 9.4, before the probe: the budget decides (spent)
    assert not budget.allow(10.0, 1200, 0.05)  # sent at 9.95, after the queue drained
    assert not budget.allow(9.8 + NACK_MAX_AGE + 0.1, 1200, NACK_MAX_AGE + 0.1)  # sent in the window, too old now
    assert budget.too_old == 1
    assert budget.resent == 4 + 3
    assert budget.dropped == 6 + 3
    # They spent nothing: a bucket refilled after them holds its 4 packets, however many were forgiven first.
    budget.forgive(11.0, 12.0)
    assert all(budget.allow(12.5, 1200, 0.9) for _ in range(20))  # sent at 11.6
    assert sum(budget.allow(12.5, 1200, 0.05) for _ in range(10)) == 4


def test_heavy_loss_of_the_top_video_sets_a_ceiling_that_climbs_back() -> None:
    """A report showing more than LOSS_HIGH of the top video lost sets a ceiling: what it had, less half the share
    lost (at most once per interval plus the round trip, never below LOSS_BACKOFF_MIN of what the estimate leaves);
    random loss and small reports do nothing; a lower estimate rules; LOSS_RECOVER_AFTER seconds later the ceiling
    climbs 8% a second until the estimate rules again."""
    backoff = LossBackoff()
    assert not backoff.report(0.0, 1, 50, 400_000)  # 2%: random loss
    assert not backoff.report(0.0, 5, 12, 400_000)  # too few packets to say
    assert backoff.limit(0.0, 400_000) == 400_000
    assert backoff.report(1.0, 10, 50, 400_000)  # 20% lost: x0.9
    assert backoff.limit(1.0, 400_000) == 360_000
    assert backoff.limit(1.0, 300_000) == 300_000  # the estimate fell below the ceiling: it rules, no double cut
    assert backoff.limit(1.0, 600_000) == 360_000  # and a higher one does not lift the ceiling
    assert not backoff.report(1.2, 25, 50, 400_000, rtt=0.1)  # too soon: the first backoff has not shown yet
    assert backoff.report(1.5, 25, 50, 400_000, rtt=0.1)  # 50% lost: x0.75 of the 360 the video had
    assert backoff.limit(1.5, 400_000) == 270_000
    for i in range(10):
        backoff.report(2.0 + i, 50, 50, 400_000)
    assert backoff.limit(11.0, 400_000) == 400_000 * LOSS_BACKOFF_MIN
    assert backoff.backoffs == 2 + 10
    assert backoff.limit(11.0, 1_000_000) == 500_000  # never below half of what the estimate leaves
    assert backoff.limit(11.0 + LOSS_RECOVER_AFTER, 400_000) == 200_000
    # The video lost heavily at 200 kbit/s: the climb stays below LOSS_NEAR of that (here: at the ceiling itself)
    # while the loss is remembered, then goes on at 8% a second.
    assert backoff.limit(11.0 + LOSS_RECOVER_AFTER + 1.0, 400_000) == 200_000
    assert backoff.limit(11.0 + LOSS_MEMORY, 400_000) == 200_000
    assert backoff.limit(11.0 + LOSS_MEMORY + 1.0, 400_000) == pytest.approx(200_000 * 1.08, abs=1)
    assert backoff.limit(11.0 + LOSS_MEMORY + 9.0, 400_000) == pytest.approx(200_000 * 1.08**9, abs=1)
    assert backoff.limit(11.0 + LOSS_MEMORY + 10.0, 400_000) == 400_000  # climbed out
    assert backoff.limit(11.0 + LOSS_MEMORY + 30.0, 2_000_000) == 2_000_000


def test_the_ceiling_climbs_no_nearer_than_loss_near_to_the_rate_that_lost_until_it_is_forgotten() -> None:
    """After heavy loss at 400 kbit/s (ceiling 300), the climb stops at LOSS_NEAR x 400 = 360 for LOSS_MEMORY
    seconds after the loss, then goes on; a probe that passed (``forget``) lets the estimate rule at once."""
    backoff = LossBackoff()
    assert backoff.report(0.0, 25, 50, 400_000)  # 50% lost: x0.75
    assert backoff.limit(0.0, 1_000_000) == 500_000  # (never below half of what the estimate leaves)
    assert backoff.limit(0.0, 400_000) == 300_000
    assert backoff.limit(LOSS_RECOVER_AFTER + 1.0, 400_000) == pytest.approx(300_000 * 1.08, abs=1)
    assert backoff.limit(LOSS_RECOVER_AFTER + 3.0, 400_000) == pytest.approx(400_000 * LOSS_NEAR, abs=1)
    assert backoff.limit(LOSS_MEMORY - 0.1, 400_000) == pytest.approx(400_000 * LOSS_NEAR, abs=1)
    assert backoff.limit(LOSS_MEMORY + 1.0, 400_000) == pytest.approx(400_000 * LOSS_NEAR * 1.08, abs=1)
    assert backoff.limit(LOSS_MEMORY + 2.0, 400_000) == 400_000  # climbed out
    assert backoff.report(30.0, 25, 50, 400_000)
    assert backoff.limit(30.0, 400_000) == 300_000
    backoff.forget()
    assert backoff.limit(30.1, 400_000) == 400_000


def test_a_report_block_says_what_it_lost_of_what_was_sent_since_the_last() -> None:
    """LinkQuality.block gives (lost, expected) since the stream's last report: what the loss backoff reads."""
    link = LinkQuality()
    assert link.block(0.0, 7, 0, 0, 1000) is None  # the first report: nothing to count from
    assert link.block(1.0, 7, 0, 0, 1050) == (0, 50)
    assert link.block(2.0, 7, 64, 8, 1100) == (8, 50)
    assert link.block(3.0, 7, 0, 8, 1100) is None  # nothing new


def test_repair_trigger_asks_once_per_burst_of_drops() -> None:
    """A video that keeps losing unrepairable packets asks for a keyframe once, not once per NACK."""
    trigger = RepairTrigger()
    asks = [trigger.dropped(0.01 * i) for i in range(REPAIR_DROPS * 2)]
    assert asks.count(True) == 2
    assert asks[REPAIR_DROPS - 1]
    spread = RepairTrigger()
    assert not any(spread.dropped(2.0 * i) for i in range(REPAIR_DROPS * 2))


def test_a_packet_is_resent_at_most_once_per_round_trip() -> None:
    """aiortc asks again for its whole missing list at every new gap: each packet goes out again only after a round
    trip (at least RESEND_INTERVAL_MIN, at most RESEND_INTERVAL_MAX), not at every repeated NACK."""
    guard = ResendGuard()
    assert not guard.recent(0.0, 7, None)
    guard.sent(0.0, 7)
    assert guard.recent(0.05, 7, None)  # unknown round trip: the floor applies
    assert not guard.recent(0.05, 8, None)  # another packet is not held back
    assert not guard.recent(RESEND_INTERVAL_MIN, 7, None)
    assert guard.recent(0.2, 7, 0.3)  # a measured round trip longer than the floor counts
    assert not guard.recent(0.31, 7, 0.3)
    assert not guard.recent(RESEND_INTERVAL_MAX, 7, 5.0)  # a slow link's resend may go twice, never stuck
    for seq in range(2000):  # memory stays bounded
        guard.sent(10.0 + seq, seq)
    assert len(guard._at) <= 1025


def test_a_repeated_nack_costs_no_budget_and_asks_no_keyframe() -> None:
    """A NACK repeated while the resend is on its way is not answered, spends none of the subscriber's budget and
    does not count towards a repair keyframe (the packet was not lost for good)."""
    budget, repair, asked = NackBudget(share=0.2), RepairTrigger(), []
    budget.set_estimate(2 * MBIT)

    def ask(seq: int) -> bool:
        return resend_allowed(
            budget, repair, lambda: asked.append(1), audio=False, age=0.01, size=1200, guard=guard, sequence_number=seq
        )

    guard = ResendGuard()
    assert ask(1)
    assert [ask(1) for _ in range(REPAIR_DROPS * 3)] == [False] * REPAIR_DROPS * 3
    assert (budget.resent, budget.dropped, budget.repeated) == (1, 0, REPAIR_DROPS * 3)
    assert not asked
    assert ask(2)  # another packet goes out at once
    without = NackBudget(share=0.2)  # without a guard (adaptation's old behaviour): every NACK is answered
    assert all(resend_allowed(without, repair, None, audio=False, age=0.01, size=100) for _ in range(5))


def test_a_paced_keyframe_is_spread_at_the_pacing_rate_and_never_held_long() -> None:
    """A 40 kB keyframe for a 1 Mbit/s subscriber leaves over about a fifth of a second at 1.5 Mbit/s, not as one
    burst that overflows the link's queue; no packet waits in the pacer beyond PACE_MAX_DELAY."""
    pacer = PacingBucket(int(1.5 * MBIT))
    now, sent = 0.0, []
    queue = [1250] * 32  # 40 kB, all queued at 0
    while queue:
        wait = pacer.wait(now, queue[0], 0.0)
        if wait == 0:
            sent.append(now)
            queue.pop(0)
        else:
            now += wait
    assert 0.18 < sent[-1] <= 0.22
    assert sent[0] == 0.0  # a burst of PACE_BURST (at least one full packet) goes at once
    slow = PacingBucket(50_000)
    assert slow.wait(0.0, 1250, 0.0) == 0.0
    assert slow.wait(0.0, 1250, 0.0) > 0
    assert slow.wait(PACE_MAX_DELAY, 1250, 0.0) == 0.0  # waited long enough: it goes, the pacer falls behind


def test_a_refused_packet_asked_again_is_no_new_damage() -> None:
    """A receiver NACKs its whole missing list at every new gap: packets refused once (beyond the budget) and asked
    again count once towards a repair keyframe, so repeated lists of the same few lost packets ask for no keyframe
    (they made one every 0.25 s on a thin link)."""
    budget, repair, asked = NackBudget(share=0.2), RepairTrigger(), []
    budget.set_estimate(100_000)  # 20 kbit/s of resends: a bucket of about one packet
    guard = ResendGuard()

    def ask(seq: int) -> bool:
        return resend_allowed(
            budget, repair, lambda: asked.append(seq), audio=False, age=0.01, size=1200, guard=guard,
            sequence_number=seq,
        )  # fmt: skip

    # Three packets lost; the list is asked for again and again.
    for _ in range(REPAIR_DROPS * 3):
        for seq in (10, 11, 12):
            ask(seq)
    assert not asked
    # Distinct packets refused still ask for a keyframe once there are REPAIR_DROPS of them.
    for seq in range(100, 100 + REPAIR_DROPS + 3):
        ask(seq)
    assert asked


def test_a_publishers_cap_moves_only_in_steps() -> None:
    """The cap asked of a publisher ignores the estimate's small swings (each change of over 10% makes an aiortc
    sender re-create its encoder, with a keyframe): it moves when what its subscribers take falls below 80% of it or
    grows beyond 125%, and is set or lifted at once."""
    assert settle_cap(None, 900_000) == 900_000
    assert settle_cap(900_000, None) is None
    assert settle_cap(None, None) is None
    swings = [1_000_000, 880_000, 1_120_000, 950_000, 1_200_000, 810_000]
    cap: int | None = 1_000_000
    for wanted in swings:
        cap = settle_cap(cap, wanted)
    assert cap == 1_000_000
    assert settle_cap(1_000_000, 790_000) == 790_000  # the link got thinner: down at once
    assert settle_cap(1_000_000, 1_260_000) == 1_260_000


def test_a_publishers_cap_goes_down_at_once_and_up_only_when_the_raise_held() -> None:
    """A higher cap is asked only once it was wanted for CAP_RAISE_AFTER seconds (each change costs an aiortc
    publisher a keyframe, and an estimate swings up around keyframes); lower caps and lifting apply at once."""
    assert hold_raise(None, 900_000, 0.0, None) == (900_000, None)  # the first cap
    assert hold_raise(900_000, None, 0.0, 5.0) == (None, None)  # lifted: at once
    assert hold_raise(900_000, 600_000, 0.0, None) == (600_000, None)  # thinner: at once
    # A swing up that falls back within the hold changes nothing.
    assert hold_raise(600_000, 900_000, 10.0, None) == (600_000, 10.0)
    assert hold_raise(600_000, 600_000, 10.5, 10.0) == (600_000, None)
    assert hold_raise(600_000, 900_000, 11.0, None) == (600_000, 11.0)
    # A raise wanted throughout the hold is asked at its end.
    assert hold_raise(600_000, 950_000, 11.0 + CAP_RAISE_AFTER - 0.1, 11.0) == (600_000, 11.0)
    assert hold_raise(600_000, 950_000, 11.0 + CAP_RAISE_AFTER, 11.0) == (950_000, None)
