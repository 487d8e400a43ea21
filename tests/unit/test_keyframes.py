"""Keyframe gating and requests (media.keyframes), without aiortc: what receivers see and what publishers are asked."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from media.keyframes import (
    REPAIR_GRACE,
    REPAIR_WAIT,
    URGENT_INTERVAL,
    ConsumerGate,
    KeyframeRequests,
    Reason,
    RepairHold,
)

FPS = 30
TICK = 1 / FPS


@dataclass
class Consumer:
    """A subscriber slot or a recorder feed as the adapters drive its gate."""

    name: str
    can_send: bool = True
    gate: ConsumerGate = field(default_factory=ConsumerGate)
    got: list[int] = field(default_factory=list)
    """Indexes of the frames forwarded to it."""


class Publisher:
    """One published video track and its consumers, driven the way media.forwarding drives the module."""

    def __init__(self, min_interval: float = 1.0, *, known: bool = True) -> None:
        self.requests = KeyframeRequests(min_interval=min_interval)
        self.consumers: list[Consumer] = []
        self.sent: list[float] = []
        """Times at which a keyframe request went to the publisher."""
        self.now = 100.0
        self.index = 0
        if known:
            self.stream_known()

    def _maybe_send(self, send: bool) -> None:
        if send:
            self.sent.append(self.now)

    def stream_known(self) -> None:
        self._maybe_send(self.requests.stream_known(self.now))

    def ask(self, reason: Reason) -> None:
        self._maybe_send(self.requests.ask(self.now, reason))

    def start(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self.ask(consumer.gate.start())

    def stop(self, consumer: Consumer) -> None:
        self.consumers.remove(consumer)

    def sendable(self, consumer: Consumer) -> None:
        consumer.can_send = True
        reason = consumer.gate.sendable()
        if reason is not None:
            self.ask(reason)

    def frame(self, *, keyframe: bool = False, resync: bool = False) -> None:
        forward, send = self.requests.frame(self.now, keyframe=keyframe, resync=resync)
        self._maybe_send(send)
        if forward:
            for consumer in list(self.consumers):
                admitted, reason = consumer.gate.admit(keyframe, can_send=consumer.can_send)
                if reason is not None:
                    self.ask(reason)
                if admitted:
                    consumer.got.append(self.index)
        self.index += 1
        self.now += TICK

    def run(self, seconds: float, *, keyframe_after_request: float | None = 0.1) -> None:
        """Frames for ``seconds``; the encoder answers each request with a keyframe after the given delay."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            answered = keyframe_after_request is not None and any(
                t + keyframe_after_request <= self.now < t + keyframe_after_request + TICK for t in self.sent
            )
            self.frame(keyframe=answered)

    def idle(self, seconds: float) -> None:
        self.now += seconds


def test_a_new_receiver_waits_for_a_keyframe_asked_at_once() -> None:
    """A receiver that starts on a track gets no delta frame before a keyframe, which is asked for at once."""
    pub = Publisher()
    pub.run(2.0, keyframe_after_request=None)
    viewer = Consumer("viewer")
    pub.start(viewer)
    assert pub.sent == [pub.now]
    assert pub.requests.counts.sent == {Reason.start: 1}
    pub.frame()
    pub.frame()
    assert viewer.got == []
    first_key = pub.index
    pub.frame(keyframe=True)
    pub.frame()
    assert viewer.got == [first_key, first_key + 1]
    assert viewer.gate.dropped == 2


def test_a_switch_gates_the_receiver_and_asks_only_the_new_publisher() -> None:
    """A last-N switch: the receiver sees nothing of the new speaker until its keyframe; only that one is asked."""
    old, new = Publisher(), Publisher()
    viewer = Consumer("viewer")
    old.start(viewer)
    old.frame(keyframe=True)
    old.run(3.0, keyframe_after_request=None)
    assert len(viewer.got) > 80
    old.stop(viewer)
    viewer.gate = ConsumerGate()
    new.run(2.0, keyframe_after_request=None)
    before = len(viewer.got)
    new.start(viewer)
    new.frame()
    assert len(viewer.got) == before
    new.frame(keyframe=True)
    assert len(viewer.got) == before + 1
    assert len(old.sent) == 1
    assert len(new.sent) == 1


def test_loss_holds_every_receiver_until_one_keyframe_asked_once() -> None:
    """After loss the publisher's chain is broken: nobody gets a delta until a keyframe, asked for at once, once."""
    pub = Publisher()
    viewers = [Consumer(f"v{i}") for i in range(3)]
    for viewer in viewers:
        pub.start(viewer)
    pub.frame(keyframe=True)
    pub.idle(0.5)
    pub.frame()
    sent = len(pub.sent)
    pub.frame(resync=True)
    assert pub.sent[-1] == pub.now - TICK  # at once, though a request went out less than min_interval ago
    for _ in range(6):  # 0.2 s: the request in flight serves every frame
        pub.frame()
    assert len(pub.sent) == sent + 1
    assert pub.requests.counts.sent[Reason.loss] == 1
    assert all(v.got[-1] == 1 for v in viewers)
    key = pub.index
    pub.frame(keyframe=True)
    assert all(v.got[-1] == key for v in viewers)
    assert not pub.requests.broken


def test_many_receivers_joining_at_once_cost_one_request() -> None:
    """Twenty receivers (and a recorder) joining within 0.2 s cost the publisher one keyframe request, not 21."""
    pub = Publisher()
    pub.run(5.0, keyframe_after_request=None)
    joined = [Consumer(f"v{i}") for i in range(20)] + [Consumer("recorder")]
    for i, viewer in enumerate(joined):
        pub.start(viewer)
        if i % 3 == 2:
            pub.frame()  # a frame every third join: ~0.2 s for all
    assert len(pub.sent) == 1
    assert pub.requests.counts.coalesced >= 20  # the joins, then each waiting frame
    pub.frame(keyframe=True)
    assert all(v.got for v in joined)


def test_joiners_spread_over_a_second_get_at_most_one_urgent_request_per_quarter_second() -> None:
    """Receivers joining one by one: each is served quickly, with at most one request per 0.25 s."""
    pub = Publisher()
    pub.run(3.0, keyframe_after_request=None)
    joined = []
    start = pub.now
    for i in range(10):
        viewer = Consumer(f"v{i}")
        joined.append(viewer)
        pub.start(viewer)
        pub.run(0.1, keyframe_after_request=0.05)
    pub.run(0.5, keyframe_after_request=0.05)
    assert all(v.got for v in joined)
    gaps = [b - a for a, b in zip(pub.sent, pub.sent[1:], strict=False)]
    assert all(gap >= URGENT_INTERVAL - 1e-9 for gap in gaps)
    assert len(pub.sent) <= (pub.now - start) / URGENT_INTERVAL + 1


def test_a_receiver_that_cannot_send_asks_nothing_until_it_can() -> None:
    """A receiver whose connection never comes up costs its publisher one request, not one a second (issue 11)."""
    pub = Publisher()
    stuck = Consumer("stuck", can_send=False)
    pub.start(stuck)
    pub.run(60.0, keyframe_after_request=None)
    assert len(pub.sent) == 1
    pub.sendable(stuck)
    assert len(pub.sent) == 2
    assert pub.requests.counts.sent == {Reason.start: 1, Reason.sendable: 1}
    pub.frame(keyframe=True)
    assert stuck.got


def test_a_receiver_that_can_send_keeps_asking_throttled_when_the_keyframe_is_lost() -> None:
    """A waiting receiver whose keyframe never came asks again, at most once per interval."""
    pub = Publisher(min_interval=1.0)
    viewer = Consumer("viewer")
    pub.start(viewer)
    pub.run(10.0, keyframe_after_request=None)
    assert 9 <= len(pub.sent) <= 11
    gaps = [b - a for a, b in zip(pub.sent, pub.sent[1:], strict=False)]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps)
    pub.run(2.0, keyframe_after_request=0.05)
    assert viewer.got


def test_subscriber_requests_are_rate_limited_and_none_is_lost() -> None:
    """A decoder asking 30 times a second gets about one request a second; one held back still goes out later."""
    pub = Publisher(min_interval=1.0)
    viewer = Consumer("viewer")
    pub.start(viewer)
    pub.frame(keyframe=True)
    pub.idle(2.0)
    start = pub.now
    for _ in range(10 * FPS):
        pub.ask(Reason.subscriber)
        pub.frame()
    assert 9 <= len([t for t in pub.sent if t >= start]) <= 11
    # One request right after a keyframe answered the last one: held, then sent once due.
    pub.frame(keyframe=True)
    pub.ask(Reason.subscriber)
    held_at = pub.now
    assert pub.requests.held is Reason.subscriber
    pub.run(1.5, keyframe_after_request=None)
    assert pub.sent[-1] >= held_at
    assert pub.requests.held is None


def test_a_held_request_is_dropped_when_a_keyframe_answers_it_first() -> None:
    """A request held by the rate limit is not sent if a keyframe arrives first: it has what it asked for."""
    pub = Publisher(min_interval=1.0)
    pub.ask(Reason.subscriber)
    pub.frame(keyframe=True)
    pub.ask(Reason.subscriber)
    assert pub.requests.held is Reason.subscriber
    pub.frame(keyframe=True)
    pub.run(3.0, keyframe_after_request=None)
    assert len(pub.sent) == 1


def test_recorder_segment_requests_each_reach_the_publisher_and_coalesce_with_others() -> None:
    """The recorder asking for a keyframe every 10 s gets one each time; a join just before serves it."""
    pub = Publisher(min_interval=1.0)
    recorder = Consumer("recorder")
    pub.start(recorder)
    pub.run(1.0)
    for _ in range(5):
        pub.run(10.0 - TICK, keyframe_after_request=0.1)
        pub.ask(Reason.recorder)
        pub.frame()
    pub.run(0.5)
    assert pub.requests.counts.sent.get(Reason.recorder) == 5
    viewer = Consumer("viewer")
    pub.start(viewer)
    pub.ask(Reason.recorder)
    assert pub.requests.counts.sent.get(Reason.recorder) == 5
    assert pub.requests.counts.coalesced >= 1


def test_requests_before_the_stream_is_known_go_out_with_its_first_packet() -> None:
    """A receiver that starts before the publisher's first packet is served as soon as that packet comes."""
    pub = Publisher(known=False)
    viewer = Consumer("viewer")
    pub.start(viewer)
    assert pub.sent == []
    assert pub.requests.held is Reason.start
    pub.idle(0.5)
    pub.stream_known()
    assert pub.sent == [pub.now]


def test_an_unmute_gates_the_track_and_asks_only_if_someone_waits() -> None:
    """Publishing allowed again: no stale delta reaches anyone; a keyframe is asked only when consumers wait."""
    pub = Publisher()
    assert not pub.requests.restart(pub.now, consumers=False)
    assert pub.requests.broken
    viewer = Consumer("viewer")
    pub.start(viewer)
    pub.frame(keyframe=True)
    pub.idle(2.0)
    assert pub.requests.restart(pub.now, consumers=True)
    pub.frame()
    assert viewer.got == [0]
    pub.frame(keyframe=True)
    assert viewer.got == [0, 2]


def test_counts_summary_names_every_figure() -> None:
    """The counts read by benchmarks: requests by reason, coalesced, deferred and keyframes."""
    pub = Publisher()
    pub.start(Consumer("a"))
    pub.start(Consumer("b"))
    pub.frame(keyframe=True)
    pub.ask(Reason.subscriber)
    summary = pub.requests.counts.summary()
    assert summary == {"sent": 1, "coalesced": 1, "deferred": 1, "sent_start": 1, "keyframes": 1}


def test_intervals_must_be_positive() -> None:
    """A zero or negative interval is a configuration error, refused at once."""
    with pytest.raises(ValueError, match="positive"):
        KeyframeRequests(min_interval=0)


def test_a_track_nobody_receives_asks_nothing_after_loss() -> None:
    """Loss on a track without receivers costs no request; the first receiver to start asks for itself."""
    pub = Publisher()
    pub.frame(keyframe=True)
    pub.idle(2.0)
    for i in range(60):
        forward, send = pub.requests.frame(pub.now, keyframe=False, resync=i == 0, consumers=False)
        assert not forward
        assert not send
        pub.now += TICK
    assert pub.sent == []
    viewer = Consumer("viewer")
    pub.start(viewer)
    assert len(pub.sent) == 1


def test_damage_to_a_constrained_subscribers_top_video_is_repaired_without_the_one_second_throttle() -> None:
    """The one video a thin-link subscriber still gets (the judge) is repaired at once when its keyframe is lost:
    its decoder's ask goes out 0.25 s after the last request, where an ordinary subscriber's waits a full second."""
    for reason, expected in ((Reason.top, URGENT_INTERVAL), (Reason.subscriber, 1.0)):
        requests = KeyframeRequests(min_interval=1.0)
        requests.stream_known(0.0)
        assert requests.ask(0.0, reason)
        requests.keyframe()  # it came, but loss on the thin link broke it: the decoder asks again
        now = 0.05
        while not (requests.ask(now, reason) or requests.due(now)):
            now = round(now + 0.05, 2)
        assert now == pytest.approx(expected), reason
    assert Reason.top.value == "top"


def test_a_repair_request_waits_for_the_keyframe_on_its_way() -> None:
    """The top video's PLIs while a keyframe asked for it has not come, or came too recently for its receiver to
    have seen it (paced, plus its round trip and the give-up time), ask for no other keyframe; one after asks."""
    hold = RepairHold()
    assert hold.ask(0.0)
    assert not hold.ask(0.05)  # asked, not sent yet: the one on its way serves
    assert not hold.ask(0.2)
    hold.keyframe_sent(0.3 + 0.25)  # sent at 0.3, paced over 0.25 s
    assert not hold.ask(0.6, rtt=0.1)  # maybe about frames before it: the receiver had no time to see it
    assert hold.deferred
    assert not hold.due(0.7)
    assert hold.due(0.55 + REPAIR_GRACE + 0.1)  # held, never dropped: asked once the keyframe had its time
    assert not hold.due(2.0)
    assert hold.held == 3
    assert hold.ask(0.55 + REPAIR_GRACE + REPAIR_WAIT + 0.2)  # later damage: a new keyframe at once


def test_a_keyframe_sent_after_a_held_repair_request_answers_it() -> None:
    """A request held for the keyframe before it is not carried out when another keyframe (the encoder's own, or
    another subscriber's) went out after it: that one serves it."""
    hold = RepairHold()
    hold.keyframe_sent(1.0)
    assert not hold.ask(1.1)
    hold.keyframe_sent(1.2)
    assert not hold.deferred
    assert not hold.due(5.0)


def test_a_repair_request_asks_again_when_its_keyframe_never_comes() -> None:
    """A publisher that ignored the request (or whose keyframe was lost on the way in) is asked again after
    REPAIR_WAIT, so the top video is never left frozen."""
    hold = RepairHold()
    assert hold.ask(10.0)
    assert not hold.ask(10.0 + REPAIR_WAIT - 0.01)
    assert hold.ask(10.0 + REPAIR_WAIT)
    fresh = RepairHold()
    fresh.keyframe_sent(5.0)  # a keyframe nobody asked for (the encoder's own) also counts as on its way
    assert not fresh.ask(5.1)
    assert fresh.ask(5.0 + REPAIR_GRACE)
