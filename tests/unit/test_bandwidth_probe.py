"""Padding probes and loss (media.bandwidth), with a fake clock: how paused video comes back on a wider link."""

from __future__ import annotations

from media.bandwidth import (
    CLEAN_REPORTS,
    CLEAN_SECONDS,
    LIFTED_SECONDS,
    LOSSY_SECONDS,
    PROBE_SECONDS,
    PROBE_VERDICT,
    PROBE_WAIT_MIN,
    LinkQuality,
    ProbeController,
    SubscriberAllocator,
    VideoStream,
)

MBIT = 1_000_000
HOLD = 3.0


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
    resumed = allocator.resume_probed(now, goal, int(1.2 * MBIT), videos())
    assert resumed == ("a", "b")
    assert allocator.paused == set()
    for i in range(1, 8):  # the REMB stays at 1.2-1.4 Mbit/s: the probed rate stands in for it
        allocation = allocator.update(now + 0.5 * i, int((1.2 + 0.02 * i) * MBIT), videos(), lossy=True)
        assert allocation.paused == ()
    # The estimate falls (congestion after all): what does not fit pauses again at once.
    allocation = allocator.update(now + 4.0, int(0.9 * MBIT), videos(), lossy=True)
    assert set(allocation.paused) == {"a", "b"}


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
    # An estimate a quarter above the one the last probe failed at: the link changed, probe again soon.
    assert prober.due(13.2, last_change=0.0, clean=True, estimate=2 * MBIT)
    prober.start(13.2, 4 * MBIT, MBIT, 2 * MBIT)
    assert not prober.padding(13.2 + PROBE_SECONDS + 0.01)
    assert prober.verdict(13.21 + PROBE_SECONDS + PROBE_VERDICT, dirty_at=13.05, estimate=2 * MBIT) is True
    assert prober.wait == PROBE_WAIT_MIN
    assert prober.succeeded == 1
    assert prober.probes == 3
    # What it resumed did not hold: the next probe backs off.
    prober.undone(14.0)
    assert not prober.due(14.0 + PROBE_WAIT_MIN - 0.1, last_change=0.0, clean=True, estimate=2 * MBIT)


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
    assert not prober.everything
    goal, forwarded = allocator.probe_goal(videos(), everything=prober.everything)
    assert goal == int(2 * MBIT * 1.15)
    assert prober.due(now, last_change=allocator.last_change, clean=True, estimate=MBIT)
    prober.start(now, goal, forwarded, MBIT)
    assert prober.verdict(now + 0.5, dirty_at=0.0, estimate=MBIT) is True
    assert allocator.resume_probed(now + 0.5, goal, MBIT, videos()) == ("a",)
    assert prober.everything
    assert prober.due(now + 0.6, last_change=allocator.last_change, clean=True, estimate=MBIT)
    goal, forwarded = allocator.probe_goal(videos(), everything=prober.everything)
    assert (goal, forwarded) == (int(3 * MBIT * 1.15), 2 * MBIT)
    prober.start(now + 0.6, goal, forwarded, MBIT)
    assert prober.verdict(now + 1.1, dirty_at=0.0, estimate=MBIT) is True
    assert allocator.resume_probed(now + 1.1, goal, MBIT, videos()) == ("b",)
    assert not prober.everything


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
