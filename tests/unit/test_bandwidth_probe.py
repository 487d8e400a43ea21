"""Padding probes and loss (media.bandwidth), with a fake clock: how paused video comes back on a wider link."""

from __future__ import annotations

import math

from media.bandwidth import (
    CLEAN_REPORTS,
    CLEAN_SECONDS,
    FEEDBACK_SILENCE,
    LIFT_PADDING_FROM,
    LIFT_PADDING_MAX_RATIO,
    LIFTED_NACK_DELAY,
    LIFTED_ODDS,
    LIFTED_SECONDS,
    LOSSY_SECONDS,
    PROBE_ECHO,
    PROBE_SECONDS,
    PROBE_VERDICT,
    PROBE_WAIT_MIN,
    EstimateBook,
    LinkQuality,
    ProbeController,
    SubscriberAllocator,
    VideoStream,
)

MBIT = 1_000_000
HOLD = 3.0
NEEDED_AT_2 = math.ceil(math.log(LIFTED_ODDS) / math.log1p(-0.02))
"""Packets without loss that make a 2% link count as lifted (342)."""


def videos() -> list[VideoStream]:
    return [VideoStream("judge", MBIT, judge=True), VideoStream("a", MBIT), VideoStream("b", MBIT)]


def thin(allocator: SubscriberAllocator) -> float:
    """Drive ``allocator`` to pause both non-top videos behind a lossy 1.2 Mbit/s estimate; the time after."""
    now = 0.0
    while now < 10.0 and len(allocator.paused) < 2:
        allocator.update(now, int(1.2 * MBIT), videos(), lossy=True)
        now += 0.5
    assert allocator.paused == {"a", "b"}
    return now


def test_a_link_is_clean_after_a_second_of_reports_without_loss_and_no_nack() -> None:
    """Reports without loss make a link clean only when several came and no loss was seen for a while."""
    link = LinkQuality()
    assert not link.clean(0.0)
    for i in range(CLEAN_REPORTS):
        link.report(0.2 * i, 0)
    assert link.clean(0.5)
    link.nack(1.1)
    assert not link.clean(1.2)
    assert link.lossy(1.2)
    for i in range(10):
        link.report(1.2 + 0.2 * i, 0)
    assert link.clean(1.1 + CLEAN_SECONDS + 0.05)
    link.report(3.5, 5)  # 5/256 lost
    assert not link.clean(3.6)
    assert not link.lossy(3.5 + LOSSY_SECONDS + 0.1)


def test_the_quiet_of_an_outage_is_no_clean_spell() -> None:
    """A link whose feedback was silent for seconds (cut) looked clean for all that time: nothing was lost because
    nothing was heard. When it speaks again, it is not clean, not lifted and lossy, until it shows otherwise."""
    link = LinkQuality()
    link.nack(0.0)
    for i in range(10):
        link.report(0.2 + 0.2 * i, 0)
    assert link.clean(2.1)
    link.outage_ended(8.0)  # silent from 2.0 to 8.0
    assert not link.clean(8.0)
    assert not link.lifted(8.0)
    assert link.lossy(8.0)
    for i in range(10):
        link.report(8.2 + 0.2 * i, 0)
    assert link.clean(8.0 + CLEAN_SECONDS + 0.05)


def test_a_low_estimate_without_loss_pauses_nothing() -> None:
    """A receiver short of CPU reports a low REMB on a link that loses nothing: no video pauses, no cap."""
    allocator = SubscriberAllocator(hold=HOLD)
    for i in range(40):
        allocation = allocator.update(i * 0.5, 300_000, videos(), lossy=False)
        assert allocation.paused == ()
        assert not allocation.constrained
    allocation = allocator.update(20.0, 300_000, videos(), lossy=True)
    assert allocation.constrained  # with loss: the same estimate constrains at once, pauses after PAUSE_AFTER


def test_a_passed_probe_resumes_what_it_covers_and_stands_in_for_the_estimate() -> None:
    """After a probe carried everything, the paused videos resume at once and stay while the REMB climbs slowly;
    a falling estimate ends that and pauses again."""
    allocator = SubscriberAllocator(hold=HOLD)
    now = thin(allocator) + HOLD
    goal, forwarded = allocator.probe_goal(videos(), everything=True)
    assert forwarded == MBIT
    assert goal >= 3 * MBIT
    assert allocator.probed_bps == 0
    resumed = allocator.resume_probed(now, goal, int(1.2 * MBIT), videos())
    assert resumed == ("a", "b")
    assert allocator.paused == set()
    for i in range(1, 8):  # the REMB stays at 1.2-1.4 Mbit/s: the probed rate stands in for it
        allocation = allocator.update(now + 0.5 * i, int((1.2 + 0.02 * i) * MBIT), videos(), lossy=True)
        assert allocation.paused == ()
        assert allocator.probed_bps == goal  # (what the node's resend budget takes its share of)
    # The estimate falls (congestion after all): what does not fit pauses again at once.
    allocation = allocator.update(now + 4.0, int(0.9 * MBIT), videos(), lossy=True)
    assert set(allocation.paused) == {"a", "b"}
    assert allocator.probed_bps == 0


def test_a_probe_fails_at_the_first_loss_and_the_next_waits_longer() -> None:
    """A NACK or lossy report during a probe fails it; the wait doubles; a passed probe resets it."""
    prober = ProbeController(HOLD)
    assert prober.due(10.0, last_change=0.0, clean=True, estimate=MBIT)
    assert not prober.due(10.0, last_change=9.0, clean=True, estimate=MBIT)  # a change less than a hold ago
    assert not prober.due(10.0, last_change=0.0, clean=False, estimate=MBIT)
    padding = prober.start(10.0, 4 * MBIT, MBIT, MBIT)
    assert padding == 3 * MBIT
    assert prober.padding(10.1)
    assert prober.verdict(10.1, dirty_at=0.0, estimate=MBIT) is None
    assert prober.verdict(10.15, dirty_at=10.12, estimate=MBIT) is False
    assert not prober.running
    assert not prober.due(10.2 + PROBE_WAIT_MIN - 0.1, last_change=0.0, clean=True, estimate=MBIT)
    assert prober.due(10.2 + PROBE_WAIT_MIN, last_change=0.0, clean=True, estimate=MBIT)
    prober.start(13.0, 4 * MBIT, MBIT, MBIT)
    assert prober.verdict(13.1, dirty_at=13.05, estimate=MBIT) is False
    assert prober.wait == 4 * PROBE_WAIT_MIN
    # Right after the failure the estimate rises: the probe's own padding, counted by the receiver. Not a wider link.
    assert not prober.due(13.2, last_change=0.0, clean=True, estimate=int(1.5 * MBIT))
    # After PROBE_ECHO, an estimate a quarter above the highest one seen: the link changed, probe again soon.
    later = 13.1 + PROBE_ECHO + 0.1
    assert not prober.due(later, last_change=0.0, clean=True, estimate=int(1.5 * MBIT))
    assert prober.due(later, last_change=0.0, clean=True, estimate=2 * MBIT)
    prober.start(later, 4 * MBIT, MBIT, 2 * MBIT)
    assert not prober.padding(later + PROBE_SECONDS + 0.01)
    assert prober.verdict(later + 0.01 + PROBE_SECONDS + PROBE_VERDICT, dirty_at=13.05, estimate=2 * MBIT) is True
    assert prober.wait == PROBE_WAIT_MIN
    assert prober.succeeded == 1
    assert prober.probes == 3
    # What it resumed did not hold: the next probe backs off.
    prober.undone(later + 1.0)
    assert not prober.due(later + 1.0 + PROBE_WAIT_MIN - 0.1, last_change=0.0, clean=True, estimate=2 * MBIT)


def test_a_probe_passes_only_on_the_receivers_word_after_its_padding_and_fails_silent_without_one() -> None:
    """No news is no verdict: a link cut while video is paused shows no loss (nothing comes back to show any). A
    probe passes only once the receiver was heard from after its padding ended; heard from before only, it waits;
    unheard for FEEDBACK_SILENCE after the padding, it fails ``silent``, and the backoff does not grow for that."""
    prober = ProbeController(HOLD)
    prober.start(10.0, 4 * MBIT, MBIT, MBIT)
    verdict_at = 10.0 + PROBE_SECONDS + PROBE_VERDICT
    ended = 10.0 + PROBE_SECONDS
    assert prober.verdict(verdict_at, dirty_at=0.0, estimate=MBIT, heard_at=ended - 0.01) is None
    assert prober.running
    # The word comes: passed.
    assert prober.verdict(verdict_at + 0.3, dirty_at=0.0, estimate=MBIT, heard_at=verdict_at + 0.25) is True
    assert prober.succeeded == 1
    # A later probe into a link that went silent.
    prober.start(20.0, 4 * MBIT, MBIT, MBIT)
    wait = prober.wait
    last_word = 19.5
    ended = 20.0 + PROBE_SECONDS
    assert prober.verdict(ended + FEEDBACK_SILENCE - 0.05, dirty_at=0.0, estimate=MBIT, heard_at=last_word) is None
    at = ended + FEEDBACK_SILENCE + 0.05
    assert prober.verdict(at, dirty_at=0.0, estimate=MBIT, heard_at=last_word) is False
    assert prober.failed_by == "silent"
    assert not prober.running
    assert prober.wait == wait
    assert not prober.due(at + PROBE_WAIT_MIN - 0.1, last_change=0.0, clean=True, estimate=MBIT)
    assert prober.due(at + PROBE_WAIT_MIN, last_change=0.0, clean=True, estimate=MBIT)
    # Loss shown while the word is awaited fails it by the loss.
    prober.start(30.0, 4 * MBIT, MBIT, MBIT)
    assert prober.verdict(30.5, dirty_at=0.0, estimate=MBIT, heard_at=29.9) is None
    assert prober.verdict(30.6, dirty_at=30.55, estimate=MBIT, heard_at=30.55) is False
    assert prober.failed_by == "loss"


def test_a_probe_fails_when_the_estimate_falls() -> None:
    """An overuse REMB during the probe (the estimate falls by more than PROBE_FALL) fails it."""
    prober = ProbeController(HOLD)
    prober.start(0.0, 4 * MBIT, MBIT, MBIT)
    assert prober.verdict(0.2, dirty_at=float("-inf"), estimate=800_000) is False


def test_probes_ask_for_the_next_stream_then_right_after_for_all_the_rest() -> None:
    """A probe asks for the next paused stream only (a failure overflows the link by one stream's worth); once one
    passes, the next goes at once, without waiting a hold, and asks for every paused stream."""
    allocator = SubscriberAllocator(hold=HOLD)
    now = thin(allocator) + HOLD
    prober = ProbeController(HOLD)
    assert not prober.everything(lifted=False)
    goal, forwarded = allocator.probe_goal(videos(), everything=prober.everything(lifted=False))
    assert goal == int(2 * MBIT * 1.15)
    assert prober.due(now, last_change=allocator.last_change, clean=True, estimate=MBIT)
    prober.start(now, goal, forwarded, MBIT)
    assert prober.verdict(now + 0.5, dirty_at=0.0, estimate=MBIT) is True
    assert allocator.resume_probed(now + 0.5, goal, MBIT, videos()) == ("a",)
    assert prober.everything(lifted=False)
    assert prober.due(now + 0.6, last_change=allocator.last_change, clean=True, estimate=MBIT)
    goal, forwarded = allocator.probe_goal(videos(), everything=prober.everything(lifted=False))
    assert (goal, forwarded) == (int(3 * MBIT * 1.15), 2 * MBIT)
    prober.start(now + 0.6, goal, forwarded, MBIT)
    assert prober.verdict(now + 1.1, dirty_at=0.0, estimate=MBIT) is True
    assert allocator.resume_probed(now + 1.1, goal, MBIT, videos()) == ("b",)
    assert not prober.everything(lifted=False)


def test_a_dip_without_loss_after_a_probe_keeps_what_it_resumed() -> None:
    """Right after a probe resumed video, a receiver busy with the new keyframes reports a REMB dip: without loss
    nothing is paused again (with loss it would be, see the test above)."""
    allocator = SubscriberAllocator(hold=HOLD)
    now = thin(allocator) + HOLD
    goal, _ = allocator.probe_goal(videos(), everything=True)
    allocator.resume_probed(now, goal, int(1.2 * MBIT), videos())
    for i in range(1, 12):
        allocation = allocator.update(now + 0.5 * i, int(0.7 * MBIT), videos(), lossy=False)
        assert allocation.paused == ()


def test_a_probe_resumes_the_streams_it_was_sized_for_even_if_needs_grew_meanwhile() -> None:
    """The top video's publisher, uncapped while a probe ran, may need more by its verdict: the streams the probe
    was sized for resume all the same."""
    allocator = SubscriberAllocator(hold=HOLD)
    now = thin(allocator) + HOLD
    keys = allocator.probe_keys(videos(), everything=True)
    assert keys == ("a", "b")
    goal, _ = allocator.probe_goal(videos(), everything=True)
    grown = [VideoStream("judge", 2 * MBIT, judge=True), VideoStream("a", MBIT), VideoStream("b", MBIT)]
    assert allocator.resume_probed(now, goal, MBIT, grown, keys=keys) == ("a", "b")


def test_an_estimate_passing_the_probed_rate_once_does_not_end_it() -> None:
    """After a probe resumed video, the estimate may touch the probed rate and then dip (the resumed streams' own
    REMBs come seconds later and start low): without loss what the probe resumed stays (it was paused again at once,
    and paused video came back 6-8 s after a lifted limit)."""
    allocator = SubscriberAllocator(hold=HOLD)
    now = thin(allocator) + HOLD
    goal, _ = allocator.probe_goal(videos(), everything=True)
    allocator.resume_probed(now, goal, int(1.2 * MBIT), videos())
    allocator.update(now + 0.5, goal + 10_000, videos(), lossy=False)  # touches the probed rate
    for i in range(2, 12):
        allocation = allocator.update(now + 0.5 * i, int(1.4 * MBIT), videos(), lossy=False)
        assert allocation.paused == (), i
    # With loss, a fall below what the probe showed still pauses what does not fit.
    later = now + 6.0
    for i in range(8):
        allocation = allocator.update(later + 0.5 * i, int(1.2 * MBIT), videos(), lossy=True)
    assert allocation.paused


def test_a_link_that_stops_losing_packets_ends_the_probe_backoff() -> None:
    """Failed probes on a thin lossy link make the next wait longer (up to a minute); once the link has lost nothing
    for LIFTED_SECONDS, with reports to show it, the limit was lifted: the next probe may go at once (the backoff
    kept paused video away 6-9 s after a lifted limit). A random-loss link rarely looks so; one clean spell resets
    the wait once."""
    link, prober = LinkQuality(), ProbeController(HOLD)
    now = 0.0
    for _ in range(4):  # four probes fail on the lossy link
        prober.start(now, 2 * MBIT, MBIT, MBIT)
        link.nack(now + 0.1)
        assert prober.verdict(now + 0.1, dirty_at=link.dirty_at, estimate=MBIT) is False
        now = prober.next_at
    assert prober.wait > PROBE_WAIT_MIN * 4
    lifted_at = now
    link.nack(lifted_at)  # the last loss; then the limit is lifted
    for i in range(1, 16):
        link.report(lifted_at + 0.2 * i, 0)
    assert not link.lifted(lifted_at + LIFTED_SECONDS - 0.2)
    assert link.lifted(lifted_at + LIFTED_SECONDS + 0.1)
    at = lifted_at + LIFTED_SECONDS + 0.1
    prober.next_at = at + 30.0  # as a long backoff leaves it
    due = prober.due(at, last_change=0.0, clean=True, estimate=MBIT, lifted=True, dirty_at=link.dirty_at)
    assert due
    assert prober.wait == PROBE_WAIT_MIN
    # Once per loss that ended: a probe failing without new loss does not reset it again.
    prober.next_at = at + 10.0
    again = prober.due(at + 0.5, last_change=0.0, clean=True, estimate=MBIT, lifted=True, dirty_at=link.dirty_at)
    assert not again


def test_a_probe_after_a_lift_asks_for_everything_paused() -> None:
    """When a link's loss ended after failed probes, the wait is cut short and the probe asks for every paused stream
    (the follow-up's 0.4 s saved), only while the link counts as lifted at the decision, and only once."""
    link, prober = LinkQuality(), ProbeController(HOLD)
    prober.start(0.0, 2 * MBIT, MBIT, MBIT)
    link.nack(0.1)
    assert prober.verdict(0.1, dirty_at=link.dirty_at, estimate=MBIT) is False
    assert not prober.everything(lifted=link.lifted(0.1))
    at = 0.1 + LIFTED_SECONDS + 0.1
    for i in range(1, 16):
        link.report(0.1 + 0.2 * i, 0)
    assert link.lifted(at)
    prober.next_at = at + 30.0
    dirty_at = link.dirty_at
    assert prober.due(at, last_change=-HOLD, clean=True, estimate=MBIT, lifted=True, dirty_at=dirty_at)
    assert prober.cut_short == "lifted"
    assert prober.everything(lifted=True)
    # Not lifted at the next decision (a keyframe in flight kept the probe back meanwhile): one stream.
    prober.due(at + 0.2, last_change=-HOLD, clean=False, estimate=MBIT, lifted=False, dirty_at=dirty_at)
    assert not prober.everything(lifted=False)
    assert prober.due(at + 0.4, last_change=-HOLD, clean=True, estimate=MBIT, lifted=True, dirty_at=dirty_at)
    assert prober.everything(lifted=True)
    prober.start(at + 0.4, 4 * MBIT, MBIT, MBIT)
    assert prober.cut_short is None
    assert not prober.everything(lifted=True)


def lossy_reports(link: LinkQuality, start: float, seconds: float, ssrc: int = 1, every: float = 0.25) -> float:
    """Report blocks of one 200-packet/s stream losing 2% (one packet in 50) for ``seconds``; the time after."""
    now, highest, lost = start, 1000, 0
    link.block(now, ssrc, 0, lost, highest)
    while now < start + seconds:
        now += every
        highest += int(200 * every)
        lost += 1
        link.block(now, ssrc, 5, lost, highest)
    return now


def test_report_counters_give_the_loss_ratio_and_a_lift_by_packets() -> None:
    """Reports with their counters measure the link's random loss; once as many packets as make that loss unlikely to
    spare them all came without loss (342 at 2%, LIFTED_ODDS), the link counts as lifted: sooner than LIFTED_SECONDS
    on a busy link, later on a quiet one."""
    link = LinkQuality()
    now = lossy_reports(link, 0.0, 5.0)
    ratio = link.loss_ratio()
    assert ratio is not None
    assert abs(ratio - 0.02) < 0.001
    assert not link.lifted(now)
    highest, lost = 1000 + 20 * 50, 20
    # The limit is lifted: 200 packets a second arrive whole, reported every 0.25 s.
    for _ in range(6):  # 300 packets
        now += 0.25
        highest += 50
        link.block(now, 1, 0, lost, highest)
        assert not link.lifted(now)
    now += 0.25
    highest += 50
    link.block(now, 1, 0, lost, highest)  # 350 packets, 1.75 s
    assert link.lifted(now)
    assert now - link.dirty_at < LIFTED_SECONDS
    # One loss starts the count again.
    now += 0.25
    link.block(now, 1, 3, lost + 1, highest + 50)
    assert not link.lifted(now + 1.0)


def test_a_report_within_the_links_random_loss_fails_only_a_probe_it_began_after() -> None:
    """On a link with random loss, a report's loss may predate a running probe (its interval began before): it fails
    the probe only when it is well above that loss; a NACK, or loss in an interval that began after the probe began,
    always does."""
    link, prober = LinkQuality(), ProbeController(HOLD)
    now = lossy_reports(link, 0.0, 5.0, every=1.0)
    prober.start(now + 0.5, 3 * MBIT, MBIT, MBIT)
    link.block(now + 0.7, 1, 5, 6, 1000 + 5 * 200 + 200)  # 1 of 200 lost, in the second before: within 2%
    assert prober.verdict(now + 0.7, dirty_at=link.probe_dirty_at, estimate=MBIT) is None
    link.block(now + 0.75, 2, 0, 0, 500)  # another stream's first report
    link.block(now + 0.8, 2, 40, 20, 600)  # 20 of 100 lost: the probe overflowed the link
    assert prober.verdict(now + 0.8, dirty_at=link.probe_dirty_at, estimate=MBIT) is False

    link, prober = LinkQuality(), ProbeController(HOLD)
    now = lossy_reports(link, 0.0, 5.0, every=1.0)
    prober.start(now + 0.5, 3 * MBIT, MBIT, MBIT)
    link.nack(now + 0.6)
    assert prober.verdict(now + 0.6, dirty_at=link.probe_dirty_at, estimate=MBIT) is False

    # A clean link (no loss ratio yet): any loss a report shows fails the probe it came in.
    link, prober = LinkQuality(), ProbeController(HOLD)
    link.block(0.0, 1, 0, 0, 1000)
    link.block(1.0, 1, 0, 0, 1200)
    prober.start(1.5, 3 * MBIT, MBIT, MBIT)
    link.block(2.0, 1, 5, 8, 1400)
    assert prober.verdict(2.0, dirty_at=link.probe_dirty_at, estimate=MBIT) is False


def test_a_falling_remb_shows_congestion_and_fails_a_running_probe() -> None:
    """A REMB below the one before it about the same streams (also when the probe's RTX SSRC joined the list) means
    the receiver saw its queueing delay grow: the probe fails at once, before the link's queue overflows."""
    book, prober = EstimateBook(), ProbeController(HOLD)
    book.remb(0.0, MBIT, [1])
    book.remb(0.5, int(1.08 * MBIT), [1])
    assert book.fell_at == float("-inf")
    prober.start(1.0, 3 * MBIT, MBIT, MBIT)
    book.remb(1.05, int(1.1 * MBIT), [1, 2])  # padding arrives on the RTX stream: a new list, still climbing
    assert book.fell_at == float("-inf")
    assert prober.verdict(1.05, dirty_at=float("-inf"), estimate=MBIT, fell_at=book.fell_at) is None
    book.remb(1.08, int(1.0 * MBIT), [1, 2])  # overuse: 0.85x what it received
    assert book.fell_at == 1.08
    assert prober.verdict(1.08, dirty_at=float("-inf"), estimate=MBIT, fell_at=book.fell_at) is False
    # A fall before a probe began does not fail it.
    prober.start(prober.next_at, 3 * MBIT, MBIT, MBIT)
    assert prober.verdict(prober.next_at + 0.05, dirty_at=float("-inf"), estimate=MBIT, fell_at=1.08) is None


def test_a_resumed_streams_skipped_sequence_numbers_are_no_loss() -> None:
    """A stream resumes with its sequence numbers 600 ahead, and its receiver counts them as lost: the blocks the node
    sets aside around a resume (``rebase``) keep the counters, so the next block counts only what came after."""
    link = LinkQuality()
    link.block(0.0, 7, 0, 0, 1000)
    link.block(1.0, 7, 0, 0, 1100)
    link.rebase(3.0, 7, 600, 1750)  # resumed: 600 numbers skipped and counted lost, 50 packets received
    link.block(4.0, 7, 0, 600, 1850)
    assert not link.lossy(4.0)
    assert link.clean_packets == 200
    assert link.probe_dirty_at == float("-inf")


def test_a_lift_counts_the_packets_sent_without_a_nack_before_the_reports_show_them() -> None:
    """At 2% loss a lift needs about 342 packets without loss. Sent to a receiver that NACKs its losses, they count
    once out for LIFTED_NACK_DELAY with no NACK since, long before its receiver reports cover them (a report of the
    loss before, coming late, does not start the count again); a NACK does, and the packets of streams it begins
    to NACK (its audio) count only from then on. A receiver that never NACKed is not counted so."""
    link = LinkQuality()
    link.sent(0.0, 0)
    link.block(0.0, 1, 0, 0, 1000)
    link.block(0.9, 1, 5, 2, 1100)  # 2 of 100 lost: a 2% link
    link.sent(0.9, 0)
    assert not link.lifted(3.0)  # no NACK yet: its silence says nothing
    link.nack(1.0)
    assert link.loss_ratio() == 0.02
    sent, now, samples = 0, 1.0, [(0.0, 0)]
    while sent < 450:  # 300 packets a second, no report in between
        now += 0.05
        sent += 15
        link.sent(now, sent)
        samples.append((now, sent))
        settled = max(total for at, total in samples if now - at >= LIFTED_NACK_DELAY)
        assert link.lifted(now) == (settled >= NEEDED_AT_2 and now - 1.0 >= CLEAN_SECONDS), (now, sent)
        if round(now, 2) == 1.5:
            link.block(now, 1, 5, 3, 1150)  # the report of the loss the NACK told, half a second late
    assert link.clean_packets == 0  # (the reports alone: nothing yet)
    assert link.lifted(now)
    link.nack(now)
    assert not link.lifted(now)
    link.sent(now + 0.5, sent + 150)
    assert not link.lifted(now + 1.5)  # 150 since the NACK: too few
    # The audio joins the count: none of it is clean at once.
    link.recount(now + 1.5, sent + 5_000)
    link.sent(now + 2.0, sent + 5_100)
    assert not link.lifted(now + 2.0)
    link.sent(now + 2.5, sent + 5_400)
    assert link.lifted(now + 2.9)


def test_a_watch_finds_a_lift_by_the_nacks_at_the_first_look_after_it_and_tells_it_once_per_loss() -> None:
    """The node looks at a paused subscriber's link every 50 ms (``look``; here every 62.5 ms). Behind 2% loss, with
    240 packets a second sent and no NACK after the last one, the first look at which 342 packets were out for
    LIFTED_NACK_DELAY finds the lift, and says so once: the next looks do not, until the link lost packets again
    and its silence after that counts once more. Without looks in between (the events, a REMB every 0.5 s) it
    was found up to half a second late."""
    link = LinkQuality()
    link.sent(0.0, 0)
    link.block(0.0, 1, 0, 0, 1000)
    link.block(0.9, 1, 5, 2, 1100)  # 2 of 100 lost: a 2% link
    link.nack(1.0)
    found: list[float] = []
    step = 1 / 16  # (exact in binary: LIFTED_NACK_DELAY is 4 steps)
    sent, now = 0, 1.0
    for _ in range(48):  # 3 s of looks
        now += step
        sent += 15
        if link.look(now, sent):
            found.append(now)
    # 342 packets by the 23rd look (345), out for LIFTED_NACK_DELAY 4 looks later: that very look.
    assert found == [1.0 + (23 + 4) * step], found
    assert link.lifted(now)  # (lifted still: told once)
    link.nack(now)  # lost again
    again: list[float] = []
    start = now
    for _ in range(48):
        now += step
        sent += 15
        if link.look(now, sent):
            again.append(now)
    assert len(again) == 1, again
    assert again[0] - start > CLEAN_SECONDS, again


def _nacked_at(ratio: float, per_second: int = 250) -> tuple[LinkQuality, float, int]:
    """A link that sent ``per_second`` packets a second for 4 s, NACKs naming ``ratio`` of them, the last one now;
    (link, now, sent)."""
    link = LinkQuality()
    link.sent(0.0, 0)
    now, sent, named = 0.0, 0, 0
    for tenth in range(1, 41):
        now = tenth / 10
        sent += per_second // 10
        link.sent(now, sent)
        while named < ratio * sent:
            named += 1
            link.nack(now, 1, [named])
    link.nack(now, 1, [named + 1])  # (the last one now)
    return link, now, sent


def test_padding_hastens_a_lift_only_within_a_clean_run_of_a_link_losing_at_random() -> None:
    """The node pads a paused subscriber's link (``LinkQuality.pads``) only while that helps the lift: its NACKs
    named a share of what was sent that random loss explains (up to LIFT_PADDING_MAX_RATIO), and the packets sent
    since the last NACK reached LIFT_PADDING_FROM of what the lift needs, not all of it (a lift found stops it). A new
    NACK ends it; a link whose NACKs named more (an overflow) is never padded, nor one that never NACKed."""
    assert not LinkQuality().pads(0.0)
    link, now, sent = _nacked_at(0.02)
    assert not link.pads(now), "right after a NACK"
    start = math.ceil(LIFT_PADDING_FROM * NEEDED_AT_2)
    link.sent(now + 0.1, sent + start - 1)
    assert not link.pads(now + 0.1)
    link.sent(now + 0.2, sent + start)
    assert link.pads(now + 0.2)
    link.nack(now + 0.3, 1, [10_000])
    assert not link.pads(now + 0.3), "a NACK ends the run"
    link.sent(now + 0.9, sent + 2 * start)
    assert link.pads(now + 0.9)
    # Enough for the lift, out long enough: the watch finds it, and the padding stops.
    later = now + 0.9 + LIFTED_NACK_DELAY + CLEAN_SECONDS
    link.sent(later, sent + 2 * start + NEEDED_AT_2 + 50)
    assert link.lifted(later + LIFTED_NACK_DELAY)
    link.sent(later + LIFTED_NACK_DELAY, sent + 2 * start + NEEDED_AT_2 + 60)
    assert not link.pads(later + LIFTED_NACK_DELAY)
    # An overflow's share: no padding, however long the run.
    heavy, now, sent = _nacked_at(LIFT_PADDING_MAX_RATIO * 1.5)
    heavy.sent(now + 0.5, sent + 300)
    assert not heavy.pads(now + 0.5)


def test_a_lift_by_the_nacks_is_judged_by_the_share_of_packets_they_named_not_by_the_repaired_reports() -> None:
    """The receiver reports count a packet whose resend came in time as received: behind 1 Mbit/s + 2% loss they
    read 0.9%, and a lift then asked for 703 packets without a NACK. The NACKs named 2% of what was sent (each
    packet once, however often it was asked for): judged by that share, 342 packets make the lift. NACKs that name
    less than the reports show ask for more, and a receiver whose NACKs name nothing falls back on the reports'
    share."""
    link = LinkQuality()
    link.sent(0.0, 0)
    link.block(0.0, 1, 0, 0, 1000)
    now, sent = 0.0, 0
    for second in range(1, 5):  # 4 s: 250 packets a second sent, 5 of them NACKed (most twice), 1 reported lost
        for tenth in range(10):
            now = second - 1 + (tenth + 1) / 10
            sent += 25
            link.sent(now, sent)
            if tenth % 2 == 1:
                link.nack(now, 1, [second * 100 + tenth])
            elif tenth:
                link.nack(now, 1, [second * 100 + tenth - 1])  # (asked again at the next gap)
        link.block(now, 1, 2, second, 1000 + 250 * second)
    assert link.loss_ratio() == 0.004
    ratio = link.nack_ratio(now)
    assert ratio is not None
    assert abs(ratio - 0.02) < 0.002, ratio
    last_nack = now - 0.1  # (the last tenth NACKs nothing)
    needed_by_reports = math.log(LIFTED_ODDS) / math.log1p(-0.004)
    assert needed_by_reports > 1200
    found = None
    while found is None and now < 12.0:
        now += 1 / 16
        sent += 16  # 256 a second
        if link.look(now, sent):
            found = now
    assert found is not None
    clean = (found - LIFTED_NACK_DELAY - last_nack) * 256
    assert NEEDED_AT_2 <= clean < NEEDED_AT_2 + 40, (found, clean)  # (the first look past them, out long enough)
    # NACKs that name less than the reports show lost (a burst of loss in the reports' window): the NACKs' share
    # still, since a run without a NACK is as likely as NACKs are rare.
    short = LinkQuality()
    short.sent(0.0, 0)
    short.block(0.0, 1, 0, 0, 1000)
    short.sent(1.0, 1000)
    short.block(1.0, 1, 6, 25, 2000)  # 2.5% lost
    short.nack(1.0, 1, range(10))  # 1% of 1000
    assert short.nack_ratio(1.0) == 0.01
    short.sent(1.5, 1300)
    short.sent(2.0, 1400)
    assert not short.lifted(2.0)  # 300 without a NACK, out for LIFTED_NACK_DELAY: enough at 2.5%, not at 1%
    short.sent(4.0, 1000 + 690)
    short.sent(4.25, 1000 + 760)
    assert short.lifted(4.25)  # 690 (at 1%: 688)
    # Without the NACKs' sequence numbers (a NACK that names none): the reports' share, and many more packets.
    other = LinkQuality()
    other.sent(0.0, 0)
    other.block(0.0, 1, 0, 0, 1000)
    other.block(1.0, 1, 1, 1, 1250)
    other.sent(1.0, 250)
    other.nack(1.0)
    assert other.nack_ratio(1.0) is None
    other.sent(3.0, 250 + 600)
    assert not other.lifted(3.3)
    other.sent(10.0, 250 + 1800)
    assert other.lifted(10.3)  # 1,800 without a NACK: enough at the reports' 0.4% (1,724)


def test_the_nacks_share_covers_the_last_ten_seconds_of_what_was_sent_and_nacked() -> None:
    """NACKed packets leave the share LOSS_WINDOW after they were first NACKed, and so do the packets sent: an
    overflow's burst of NACKs counts for ten seconds, not for good."""
    link = LinkQuality()
    for tenth in range(21):  # 2 s, 300 packets a second
        link.sent(tenth / 10, tenth * 30)
    link.nack(2.0, 7, range(600, 660))  # a burst: 60 packets NACKed at once
    ratio = link.nack_ratio(2.0)
    assert ratio is not None
    assert abs(ratio - 60 / 600) < 1e-9, ratio
    link.sent(2.1, 630)
    link.nack(2.1, 7, range(600, 660))  # (asked again: counted once)
    assert link.nack_ratio(2.1) == 60 / 630
    for tenth in range(22, 131):  # on to 13 s, no NACK
        link.sent(tenth / 10, tenth * 30)
    link.nack(13.0, 7, [5000])
    ratio = link.nack_ratio(13.0)
    assert ratio is not None
    assert abs(ratio - 1 / 3000) < 0.0002, ratio  # the burst left the window, and so did the packets of its time


def test_the_reports_of_audio_a_receiver_nacks_count_neither_for_the_loss_ratio_nor_as_clean_packets() -> None:
    """Audio resent on NACK comes in its own stream and counts as received: its reports show what the repairs left.
    Behind 2% loss, 200 audio packets a second reported clean beside 60 of video losing 2% read as 0.5%, below the
    rule that keeps probes off a lossy link (PROBE_RANDOM_LOSS), and a second of them after a NACK made 300 packets
    "without loss": probes started in the limited phases of 4 of 8 thin-link runs. The NACKs count those packets
    (``sent``); their reports count for neither."""
    link = LinkQuality()
    for ssrc in (1, 2):
        link.block(0.0, ssrc, 0, 0, 1000)
    link.block(1.0, 1, 5, 2, 1100)  # video: 2 of 100 lost
    link.block(1.0, 2, 0, 0, 1400, repaired=True)  # audio: none of 400, all repaired
    assert link.loss_ratio() == 0.02
    assert link.clean_packets == 0
    link.block(2.0, 2, 0, 0, 1800)  # (counted, it would dilute the ratio and pass for 400 packets without loss)
    assert link.loss_ratio() == 2 / 500
    assert link.clean_packets == 400


def test_a_link_whose_loss_was_rare_counts_as_lifted_no_later_than_the_time_rule() -> None:
    """At 0.5% loss the odds ask for about 1,240 packets; LIFTED_SECONDS with enough clean reports still counts."""
    link = LinkQuality()
    link.block(0.0, 1, 0, 0, 1000)
    link.block(1.0, 1, 1, 1, 1200)  # 1 of 200 lost
    now, highest = 1.0, 1200
    while now < 1.0 + LIFTED_SECONDS + 0.3:
        now += 0.25
        highest += 50
        link.block(now, 1, 0, 1, highest)
    assert link.clean_packets < 1000
    assert link.lifted(now)


def test_a_probes_echo_holds_what_the_top_video_is_capped_and_paced_by() -> None:
    """The REMB falls under a probe's padding; the top video had its rate before and the link carried it: its cap
    and pacing rate (``_Subscriber.top_available``) hold through the probe and its echo, then follow the estimate. A
    rise is taken while the probe runs, not during a failed probe's echo (the padding raised the estimate)."""
    from media.node import _Subscriber

    allocator = SubscriberAllocator(hold=HOLD)
    subscriber = _Subscriber(allocator=allocator, prober=ProbeController(HOLD))
    now = thin(allocator)
    assert subscriber.top_available(now) is None  # no allocation yet
    subscriber.allocation = allocator.update(now, int(1.2 * MBIT), videos(), lossy=True)
    before = subscriber.allocation.top_available_bps
    assert before is not None
    assert subscriber.prober.echoing(now) is False
    subscriber.estimate = int(1.2 * MBIT)
    subscriber.start_probe(now, 4 * MBIT, MBIT, seconds=PROBE_SECONDS, wait_max=60.0)
    assert subscriber.prober.echoing(now + 0.1)
    subscriber.allocation = allocator.update(now + 0.1, int(0.8 * MBIT), videos(), lossy=True)
    fallen = subscriber.allocation.top_available_bps
    assert fallen is not None
    assert fallen < before
    assert subscriber.top_available(now + 0.1) == before
    # While it runs, a rise is taken as it is.
    subscriber.allocation = allocator.update(now + 0.11, int(1.6 * MBIT), videos(), lossy=True)
    assert subscriber.allocation.top_available_bps is not None
    assert subscriber.top_available(now + 0.11) == subscriber.allocation.top_available_bps > before
    subscriber.allocation = allocator.update(now + 0.12, int(0.8 * MBIT), videos(), lossy=True)
    assert subscriber.prober.verdict(now + 0.15, dirty_at=now + 0.12, estimate=int(0.8 * MBIT)) is False
    assert subscriber.top_available(now + 0.15 + PROBE_ECHO - 0.05) == before
    # An estimate that rises above the held rate after the probe failed is the probe's own echo: not taken.
    subscriber.allocation = allocator.update(now + 0.2, int(1.6 * MBIT), videos(), lossy=True)
    risen = subscriber.allocation.top_available_bps
    assert risen is not None
    assert risen > before
    assert subscriber.top_available(now + 0.2) == before
    # After the echo, the estimate stands, and the hold is gone.
    subscriber.allocation = allocator.update(now + 0.3, int(0.8 * MBIT), videos(), lossy=True)
    later = now + 0.15 + PROBE_ECHO + 0.01
    assert subscriber.top_available(later) == subscriber.allocation.top_available_bps == fallen
    subscriber.allocation = allocator.update(later + 1.0, int(0.6 * MBIT), videos(), lossy=True)
    lower = subscriber.allocation.top_available_bps
    assert lower is not None
    assert lower < fallen
    assert subscriber.top_available(later + 1.0) == lower  # nothing held any more


def test_a_probe_failed_by_a_falling_remb_is_not_followed_by_a_lift_from_the_run_before_it() -> None:
    """A loss-free run already long when a probe fails by a REMB fall (no loss) does not count as a lifted limit:
    the failure says the limit is still there. A run that begins after a later loss does."""
    link, prober = LinkQuality(), ProbeController(HOLD)
    link.nack(0.0)
    for i in range(1, 16):
        link.report(0.2 * i, 0)
    at = LIFTED_SECONDS + 0.1
    assert link.lifted(at)
    # A probe starts on the clean link and fails 0.1 s in by a falling REMB: no loss seen.
    prober.start(at, 2 * MBIT, MBIT, MBIT)
    assert prober.verdict(at + 0.1, dirty_at=link.dirty_at, estimate=MBIT, fell_at=at + 0.1) is False
    assert link.lifted(at + 0.4)
    # Before: the lift cut the wait short, and a probe for all the paused streams went.
    assert not prober.due(at + 0.4, last_change=0.0, clean=True, estimate=MBIT, lifted=True, dirty_at=link.dirty_at)
    assert prober.cut_short is None
    # Random loss after the failure, then a loss-free run long enough: that is a lift.
    link.nack(at + 0.5)
    for i in range(1, 16):
        link.report(at + 0.5 + 0.2 * i, 0)
    later = at + 0.5 + LIFTED_SECONDS + 0.1
    assert link.lifted(later)
    prober.next_at = later + 30.0
    assert prober.due(later, last_change=0.0, clean=True, estimate=MBIT, lifted=True, dirty_at=link.dirty_at)
    assert prober.cut_short == "lifted"


def test_a_probe_right_after_one_passed_is_not_failed_by_the_estimate_falling_back() -> None:
    """The receiver's estimate still counts a passed probe's padding when the follow-up starts, and falls back as
    the padding stops: that fall does not fail the follow-up (loss still does); a probe started later is judged by
    its estimate as before."""
    prober = ProbeController(HOLD)
    prober.start(0.0, 2 * MBIT, MBIT, MBIT)
    passed_at = PROBE_SECONDS + PROBE_VERDICT
    assert prober.verdict(passed_at, dirty_at=float("-inf"), estimate=MBIT) is True
    prober.start(passed_at + 0.1, 4 * MBIT, 2 * MBIT, 3 * MBIT)  # the estimate as the padding raised it
    assert prober.verdict(passed_at + 0.2, dirty_at=float("-inf"), estimate=int(1.8 * MBIT)) is None
    assert prober.verdict(passed_at + 0.25, dirty_at=passed_at + 0.22, estimate=int(1.8 * MBIT)) is False  # loss
    later = passed_at + PROBE_ECHO + 5.0
    prober.start(later, 4 * MBIT, 2 * MBIT, 3 * MBIT)
    assert prober.verdict(later + 0.1, dirty_at=float("-inf"), estimate=int(1.8 * MBIT)) is False
    assert prober.failed_by == "estimate_fell"


def test_a_link_not_lifted_is_probed_by_a_ladder_of_rungs_and_only_the_goal_resumes() -> None:
    """Each rung shows at most PROBE_STEP times what the link is known to carry; a rung that passes sends the next at
    once (no hold, no backoff wait), resumes nothing and resets no backoff; the rung that reaches the goal counts as a
    passed probe."""
    prober = ProbeController(HOLD)
    goal, carried = 4 * MBIT, 350_000
    assert prober.rung(goal, carried) == 1_050_000
    now = 10.0
    assert prober.due(now, last_change=0.0, clean=True, estimate=carried)
    prober.start(now, 1_050_000, carried, carried, partial=True)
    prober.wait = 8.0  # a backoff from failures before: a rung that passes does not reset it
    assert prober.verdict(now + PROBE_SECONDS + PROBE_VERDICT + 0.01, dirty_at=0.0, estimate=carried) is True
    assert prober.succeeded == 0
    assert prober.succeeded_at == float("-inf")
    # The next rung goes at once, though the last change was just now and the wait is long.
    now += 0.5
    assert prober.due(now, last_change=now - 0.1, clean=True, estimate=carried)
    assert not prober.due(now, last_change=now - 0.1, clean=False, estimate=carried)
    assert prober.rung(goal, carried) == 3_150_000
    prober.start(now, 3_150_000, carried, carried, partial=True)
    # The rung's padding raised the estimate, which falls back after it: the next rung is not judged by that fall.
    assert prober.verdict(now + 0.5, dirty_at=0.0, estimate=carried) is True
    assert prober.wait == 8.0
    assert prober.rung(goal, carried) == goal  # the last rung is the goal itself
    now += 0.6
    prober.start(now, goal, carried, 3_000_000)
    assert prober.verdict(now + 0.1, dirty_at=0.0, estimate=carried) is None
    assert prober.verdict(now + 0.5, dirty_at=0.0, estimate=carried) is True
    assert prober.succeeded == 1
    assert prober.wait == PROBE_WAIT_MIN
    assert prober.rung(goal, carried) == 1_050_000  # the ladder starts again from what the link carries


def test_a_rung_counts_the_audio_the_link_carries_beside_the_video() -> None:
    """A rung takes the whole link to PROBE_STEP times what it carries: the audio rides beside the video and the
    padding, so 0.35 Mbit/s of video and 0.5 of audio allow a rung of 3 x 0.85 - 0.5 = 2.05 Mbit/s of video (behind
    1 Mbit/s the next camera's goal of 1.6-1.7 goes at once, not after a rung of 1.05); after that rung passed, the
    next takes the link to 3 x 2.55."""
    prober = ProbeController(HOLD)
    carried, audio = 350_000, 500_000
    assert prober.rung(1_650_000, carried, audio) == 1_650_000
    assert prober.rung(4 * MBIT, carried, audio) == 2_050_000
    prober.start(10.0, 2_050_000, carried, carried, partial=True)
    assert prober.verdict(10.45, dirty_at=0.0, estimate=carried) is True
    assert prober.rung(8 * MBIT, carried, audio) == 3 * 2_550_000 - audio
    assert prober.rung(8 * MBIT, carried) == 3 * 2_050_000  # (no audio: the video alone)


def test_a_report_overlaps_a_probe_until_its_padding_stopped_and_the_queue_drained() -> None:
    """A receiver report covering time from before a probe's padding stopped (plus PROBE_VERDICT for the link's
    queue to drain) may count the probe's own overflow; a later one is about the video alone, however soon after a
    failed probe it comes (the estimate's echo is another matter)."""
    prober = ProbeController(HOLD)
    assert not prober.overlaps(5.0)
    prober.start(10.0, 1_700_000, 350_000, 350_000)
    assert prober.overlaps(9.0)  # it runs
    assert prober.overlaps(10.05)
    assert prober.verdict(10.11, dirty_at=10.1, estimate=350_000) is False  # failed 0.11 s in: padding stops
    assert prober.overlaps(10.11 + PROBE_VERDICT - 0.01)
    assert not prober.overlaps(10.11 + PROBE_VERDICT + 0.01)
    assert prober.echoing(10.11 + PROBE_VERDICT + 0.01)  # (still the estimate's echo)
    prober.next_at = 0.0
    prober.start(20.0, 1_700_000, 350_000, 350_000)
    assert prober.verdict(20.0 + PROBE_SECONDS + PROBE_VERDICT + 0.01, dirty_at=0.0, estimate=350_000) is True
    assert prober.overlaps(20.0 + PROBE_SECONDS + PROBE_VERDICT - 0.01)  # (its padding ran PROBE_SECONDS)
    assert not prober.overlaps(20.0 + PROBE_SECONDS + PROBE_VERDICT + 0.01)


def test_a_failed_rung_ends_the_climb_and_backs_off() -> None:
    """A rung that fails stops the ladder: the next probe waits out the backoff and starts again from the bottom."""
    prober = ProbeController(HOLD)
    goal, carried = 4 * MBIT, 350_000
    prober.start(10.0, 1_050_000, carried, carried, partial=True)
    assert prober.verdict(10.45, dirty_at=0.0, estimate=carried) is True
    prober.start(10.5, 3_150_000, carried, carried, partial=True)
    assert prober.verdict(10.6, dirty_at=10.55, estimate=carried) is False
    assert prober.failed_by == "loss"
    assert prober.rung(goal, carried) == 1_050_000
    assert not prober.due(10.7, last_change=0.0, clean=True, estimate=carried)
    assert prober.due(10.6 + PROBE_WAIT_MIN, last_change=0.0, clean=True, estimate=carried)


def test_a_rung_left_too_long_starts_the_ladder_again() -> None:
    """A rung that passed but whose next could not go (an unclean link, a keyframe in flight) for two holds: the
    ladder starts again from what the link carries, after the usual wait."""
    prober = ProbeController(HOLD)
    prober.start(10.0, 1_050_000, 350_000, 350_000, partial=True)
    assert prober.verdict(10.45, dirty_at=0.0, estimate=350_000) is True
    assert prober.due(10.45 + 2 * HOLD - 0.1, last_change=0.0, clean=True, estimate=350_000)
    assert prober.rung(8 * MBIT, 350_000) == 3_150_000
    late = 10.45 + 2 * HOLD + 0.1
    prober.due(late, last_change=late, clean=True, estimate=350_000)
    assert prober.rung(8 * MBIT, 350_000) == 1_050_000
