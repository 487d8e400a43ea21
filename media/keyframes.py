"""Keyframe decisions of the media node, as plain state machines: no aiortc, no asyncio, the clock passed in.

The node forwards encoded video it never decodes, so a receiver can only start
on a keyframe, and only the publisher's encoder can make one. Two decisions
follow, here apart from the aiortc adapters that carry them out
(:mod:`media.forwarding`, :mod:`media.passthrough`, :mod:`media.peer`):

**Gates.** A :class:`ConsumerGate` is one consumer's view of one video track
(a subscriber's slot, a recorder's feed). It is closed when the consumer
starts on the track (a new subscriber, a last-N switch, a recorder) and when
frames were lost on the way to it (its queue overflowed), and it opens at the
next keyframe: no delta frame is forwarded whose reference the consumer never
got. A whole track is gated too (:meth:`KeyframeRequests.frame`) when its
publisher's stream broke (a frame given up after loss) or it was just allowed
to publish again (an unmute): then nobody gets a delta until a keyframe.

**Requests.** One :class:`KeyframeRequests` per published video track
decides when a keyframe request (PLI) goes to the publisher, whoever wants
it: all the track's subscribers and recorders share it, so requests are
coalesced per publisher.

- Urgent (:data:`URGENT`: a consumer starts, a gated subscriber becomes able
  to send, an unmute with consumers waiting, loss that froze the track for
  all its receivers, damage to the one video a constrained subscriber still
  gets): sent at once, unless a request
  sent less than ``urgent_interval`` ago is still unanswered (it serves this
  one too), and never more often than once per ``urgent_interval``. Many
  receivers joining at once cost one request.
- Normal (a subscriber's PLI/FIR, a gated consumer still waiting, the
  recorder's segment start): at most one per ``min_interval``; an
  unanswered request sent less than ``min_interval`` ago serves it.
- A request held back by the rate limit is not dropped: it goes out with the
  first frame once due (:meth:`KeyframeRequests.due`), unless a keyframe came
  first, which answers it. Before the publisher's stream is known (no packet
  yet, so no SSRC to address) requests are held the same way and go out with
  its first packet (:meth:`KeyframeRequests.stream_known`).
- A gated subscriber that cannot send (its answer has not come, its
  connection is not up, it declined the slot) asks nothing: a keyframe now
  would be lost on it. It asks urgently when it becomes able to send
  (:meth:`ConsumerGate.sendable`). Before this rule, such a slot asked once per
  ``min_interval`` for as long as it stayed unable to send: the "one request a
  second from every publisher" seen in issue 11.

Nothing here runs on a timer: a held request goes out on the publisher's next
frame, and a track without frames needs no keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

URGENT_INTERVAL = 0.25
"""Seconds: at most one urgent request per track in this time; an unanswered one younger than this serves others."""


class Reason(StrEnum):
    """Why a keyframe is asked for."""

    start = "start"
    """A consumer starts on the track: a subscriber (first time or a last-N switch) or a recorder."""
    sendable = "sendable"
    """A gated subscriber just became able to send (its answer came, its connection started)."""
    allowed = "allowed"
    """The publisher may publish again (unmute) and consumers are waiting."""
    loss = "loss"
    """The publisher's stream broke: a frame was given up after loss; nothing is forwarded until a keyframe."""
    subscriber = "subscriber"
    """A subscriber's decoder asked (PLI or FIR)."""
    waiting = "waiting"
    """A gated consumer that can receive still has no keyframe (the first request or its answer was lost)."""
    recorder = "recorder"
    """The recorder needs one to start a segment."""
    resume = "resume"
    """Bandwidth adaptation resumed a paused video for a subscriber (media.bandwidth): it sees nothing until one."""
    repair = "repair"
    """A subscriber keeps losing video packets it cannot get resent (too old, or beyond its resend budget)."""
    top = "top"
    """The top-priority video of a subscriber on a constrained link is damaged (its decoder asked, or it lost what
    cannot be resent): the one video it still gets must not wait for the publisher-wide throttle."""
    layer = "layer"
    """A subscriber switches to another simulcast layer (media.simulcast): it gets the old one until the new
    layer's keyframe comes."""


URGENT = frozenset(
    {Reason.start, Reason.sendable, Reason.allowed, Reason.loss, Reason.resume, Reason.top, Reason.layer}
)
"""Reasons that do not wait for ``min_interval``: someone (after loss: every receiver of the track) sees nothing
until the keyframe comes."""


@dataclass
class KeyframeCounts:
    """What one track's keyframe requests did (read by benchmarks, tests and health figures)."""

    sent: dict[Reason, int] = field(default_factory=dict)
    """Requests that went to the publisher, by the reason of the request that sent them."""
    coalesced: int = 0
    """Asks answered by a request already on its way (no new request)."""
    deferred: int = 0
    """Asks held back by the rate limit (sent later when due, unless a keyframe answered them first)."""
    keyframes: int = 0
    """Keyframes received from the publisher."""

    @property
    def requests(self) -> int:
        """Requests sent to the publisher in all."""
        return sum(self.sent.values())

    def summary(self) -> dict[str, int]:
        """Flat figures: ``sent``, ``sent_<reason>``, ``coalesced``, ``deferred``, ``keyframes``."""
        figures = {"sent": self.requests, "coalesced": self.coalesced, "deferred": self.deferred}
        figures.update({f"sent_{reason.value}": count for reason, count in self.sent.items()})
        figures["keyframes"] = self.keyframes
        return figures


class KeyframeRequests:
    """When to ask one publisher's video track for a keyframe, for all its consumers (see the module docstring).

    Every method takes ``now`` (seconds, monotonic) and returns True when a request must go to the publisher
    now; the caller sends it (and only then).
    """

    __slots__ = (
        "_held",
        "_known",
        "_last_sent",
        "_outstanding",
        "broken",
        "counts",
        "min_interval",
        "urgent_interval",
    )

    def __init__(self, *, min_interval: float, urgent_interval: float = URGENT_INTERVAL) -> None:
        if min_interval <= 0 or urgent_interval <= 0:
            raise ValueError("keyframe request intervals must be positive")
        self.min_interval = min_interval
        self.urgent_interval = min(urgent_interval, min_interval)
        self.counts = KeyframeCounts()
        self.broken = False
        """The stream broke (loss, or publishing allowed again): no frame is forwarded until a keyframe."""
        self._last_sent = float("-inf")
        self._outstanding = False
        self._held: Reason | None = None
        self._known = False

    @property
    def held(self) -> Reason | None:
        """A request waiting for the rate limit or for the stream (its reason), if any."""
        return self._held

    def _interval(self, reason: Reason) -> float:
        return self.urgent_interval if reason in URGENT else self.min_interval

    def _send(self, now: float, reason: Reason) -> bool:
        self._last_sent = now
        self._outstanding = True
        self._held = None
        self.counts.sent[reason] = self.counts.sent.get(reason, 0) + 1
        return True

    def ask(self, now: float, reason: Reason) -> bool:
        """Someone wants a keyframe for ``reason``; True: send a request now."""
        interval = self._interval(reason)
        since = now - self._last_sent
        if self._outstanding and since < interval:
            self.counts.coalesced += 1
            return False
        if self._known and since >= interval:
            return self._send(now, reason)
        self.counts.deferred += 1
        if self._held is None or (reason in URGENT and self._held not in URGENT):
            self._held = reason
        return False

    def due(self, now: float) -> bool:
        """Called with each frame of the track: True when a held request is due now."""
        held = self._held
        if held is None or not self._known or now - self._last_sent < self._interval(held):
            return False
        return self._send(now, held)

    def stream_known(self, now: float) -> bool:
        """The publisher's stream can be addressed (its first packet came); True: send the held request now."""
        self._known = True
        return self.due(now)

    def keyframe(self) -> None:
        """A keyframe arrived: it answers every request made or held so far, and mends a broken stream."""
        self.counts.keyframes += 1
        self._outstanding = False
        self._held = None
        self.broken = False

    def frame(self, now: float, *, keyframe: bool, resync: bool, consumers: bool = True) -> tuple[bool, bool]:
        """A frame of the publisher: (forward it to the consumers, send a request now).

        ``resync``: frames before this one were given up (loss); the reference chain is broken until a keyframe.
        Without ``consumers`` a broken stream asks nothing: whoever starts on it later asks for itself.
        """
        if keyframe:
            self.keyframe()
            return True, False
        if resync or self.broken:
            self.broken = True
            return False, self.ask(now, Reason.loss) if consumers else False
        return True, self.due(now)

    def restart(self, now: float, *, consumers: bool) -> bool:
        """The publisher may publish again (unmute): what it sends next may lack its reference; gate until a
        keyframe, asked for at once if ``consumers`` are waiting. True: send a request now."""
        self.broken = True
        return self.ask(now, Reason.allowed) if consumers else False


class ConsumerGate:
    """One consumer's view of one video track: closed from a start, a switch or a loss until a keyframe."""

    __slots__ = ("dropped", "open")

    def __init__(self) -> None:
        self.open = False
        self.dropped = 0
        """Frames not forwarded because the gate was closed."""

    def start(self) -> Reason:
        """The consumer starts on the track (new, or switched to it): closed; ask urgently (the keyframe may wait
        in the consumer's queue until it can send)."""
        self.open = False
        return Reason.start

    def lose(self) -> None:
        """Frames were lost on the way to the consumer (a queue overflowed): closed until the next keyframe.

        Nothing is asked here: the consumer could not send (that is why its queue overflowed); it asks when it can.
        """
        self.open = False

    def sendable(self) -> Reason | None:
        """The consumer just became able to send: if still closed, ask urgently (whatever keyframe came while it
        could not send is gone)."""
        return None if self.open else Reason.sendable

    def admit(self, keyframe: bool, *, can_send: bool) -> tuple[bool, Reason | None]:
        """A frame for the consumer: (forward it, what to ask the publisher, if anything).

        A closed gate drops delta frames and, only if the consumer can send now, keeps asking (throttled by
        :class:`KeyframeRequests`); a consumer that cannot send asks when it can (:meth:`sendable`).
        """
        if self.open:
            return True, None
        if keyframe:
            self.open = True
            return True, None
        self.dropped += 1
        return False, Reason.waiting if can_send else None


REPAIR_GRACE = 0.3
"""Seconds after a keyframe reached a subscriber's link (its last packet left the pacer) during which that
subscriber's repair requests are taken to be about frames before it: a receiver gives up on a damaged frame only
when a frame about 200 ms newer has come (a browser's jitter buffer, ``media.passthrough.ReleaseOnMarker``), so the
keyframe it lacked may already be on its way when its PLI arrives. Its round trip is added."""

REPAIR_WAIT = 1.0
"""Seconds a subscriber's repair request waits for a keyframe asked for it before it may ask again (the publisher
ignored the request, or its keyframe was lost on the way in)."""


class RepairHold:
    """One subscriber's keyframe repairs of one video: a repair request (its PLI or FIR, loss the node cannot
    resend) while a keyframe is already on its way to it waits for that keyframe instead of asking for another.

    On a thin link each keyframe is several times a delta frame. Asking for a new one at every PLI (a receiver sends
    one for each frame it gives up, and frames given up before the keyframe came are still reported after it was
    sent) made a keyframe every 0.25 s: the video ran above its cap, its pacer backed up, later frames came too late
    and were given up, and their PLIs asked for more keyframes (issue 11's thin-link freezes). mediasoup and LiveKit
    likewise hold a consumer's keyframe request while one asked for it is pending.

    A request is never dropped, only held: a receiver asks once per frame it gives up (aiortc never asks again while
    it waits for a keyframe), so a request that came while the last keyframe may still have been unseen by it is
    carried out once that keyframe had its time (:meth:`due`), unless another keyframe was sent meanwhile.
    """

    __slots__ = ("_asked", "_deferred", "_delivered", "_pending", "held")

    def __init__(self) -> None:
        self._asked = float("-inf")
        self._pending = False
        self._delivered = float("-inf")
        self._deferred: float | None = None
        self.held = 0
        """Repair requests not passed on at once (a keyframe was on its way)."""

    @property
    def delivered(self) -> float:
        """When (monotonic seconds) the last keyframe sent to the subscriber left the node, or leaves it."""
        return self._delivered

    @property
    def deferred(self) -> bool:
        """A held request waits for the keyframe before it to have had its time (:meth:`due`)."""
        return self._deferred is not None

    def ask(self, now: float, rtt: float | None = None) -> bool:
        """The subscriber wants a keyframe to repair its picture; True: ask the publisher now."""
        if self._pending and now - self._asked < REPAIR_WAIT:
            self.held += 1  # a keyframe asked for it is not sent yet: it will come after this request and serve it
            return False
        settled = self._delivered + REPAIR_GRACE + (rtt or 0.0)
        if now < settled:
            self.held += 1
            self._deferred = settled if self._deferred is None else min(self._deferred, settled)
            return False
        self._deferred = None
        self._asked = now
        self._pending = True
        return True

    def due(self, now: float) -> bool:
        """Called with the video's frames: True when a held request is due now (ask the publisher)."""
        deferred = self._deferred
        if deferred is None or now < deferred:
            return False
        self._deferred = None
        self._asked = now
        self._pending = True
        return True

    def keyframe_sent(self, delivered: float) -> None:
        """A keyframe went to the subscriber; its last packet leaves the node at ``delivered`` (monotonic seconds,
        later than now when it is paced). It answers every request made so far."""
        self._pending = False
        self._deferred = None
        self._delivered = delivered
