"""One publisher frame to all its subscribers: every slot decides as ``push`` does, then one native call sends.

:meth:`PublishedTrack.on_frame <media.forwarding.PublishedTrack.on_frame>` hands each reassembled frame here.
Each subscriber slot (:class:`~media.forwarding.ForwardedTrack`) makes its decisions first, in the order its
``push`` makes them (:meth:`~media.forwarding.ForwardedTrack.prepare`: gating, pause, bounded queue, the sequence
jump after a pause; same counters); then every sender that the native loop serves adds its lane (what it needs
that changes only with the connection, :meth:`~media.sending.FrameSender.send_batched`) to one
:class:`~media.sending.NativeBatch`, and ``media._fastpath.send_lanes`` sends the frame to all of them at once: one
call from Python into C per publisher frame instead of one per subscriber, and the per-subscriber work of a frame
(timestamp, abs-send-time, VP8 payload descriptor, sequence numbers, counters) done in C. What the C loop hands
back, a paced slot, a relayed pair or the Python send path go out as before
(:meth:`~media.sending.FrameSender.send`); the bytes on the wire are the same (tests/unit/test_fanout.py). Other
consumers (the recorder) get ``push``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from media.aiortc_compat import DTLS_CONNECTED
from media.sending import NativeBatch, ntp_now

try:
    from media import _fastpath
except ImportError:  # pragma: no cover - a node installed without a C compiler
    _fastpath = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from media.passthrough import TappedFrame


_batching = True
_hot = False
"""Whether :func:`fan_out` first sends the frame in C to every consumer in the steady state (``_fastpath.fan_hot``);
set by :func:`serve_hot`, and by :func:`use_hot` for the bench's A/B."""
_hot_type: type | None = None


def serve_hot(track_type: type) -> None:
    """Let the native hot path serve consumers of exactly ``track_type`` (``media.forwarding.ForwardedTrack``, whose
    attributes ``_fastpath.fan_hot`` reads); a no-op without the native module or one built before it."""
    global _hot, _hot_type
    if _fastpath is not None and hasattr(_fastpath, "fan_hot"):
        _fastpath.configure_hot(track_type, DTLS_CONNECTED)
        _hot_type = track_type
        _hot = True


def use_hot(on: bool) -> None:
    """Whether frames from now on go first through the native hot path (the default where it is built), or every
    consumer is decided in Python (the bench's A/B, ``bench/forwarding.py --cold-counts``)."""
    global _hot
    _hot = on and _hot_type is not None


def use_batching(on: bool) -> None:
    """Whether frames from now on go to a publisher's subscribers in one native call (the default), or one
    ``push`` per subscriber, each sending at once (the bench's A/B, ``bench/forwarding.py --unbatched-counts``)."""
    global _batching
    _batching = on


def fan_out(consumers: Iterable[Any], frame: TappedFrame, keyframe: bool) -> None:
    """Hand ``frame`` to every consumer (a snapshot of ``consumers``: one may leave while it is served)."""
    if not _batching:
        for consumer in list(consumers):
            consumer.push(frame, keyframe)
        return
    batch = NativeBatch()
    waiting: list[tuple[Any, Any]] = []
    cold: list[Any] = list(consumers)
    if _hot and cold:
        # Every consumer in the steady state is served in C (what prepare, send_batched and NativeBatch.run would do);
        # the others come back, in order, with what a lane could not send.
        left = _fastpath.fan_hot(cold, frame, keyframe, ntp_now(), time.monotonic())
        if left is None:
            return
        cold, handed = left
        for consumer, sender, result, chunks in handed:
            if sender._finish_lane(result, chunks):
                _forwarded(consumer, frame, time.time())
    for consumer in cold:
        prepare = getattr(consumer, "prepare", None)
        if prepare is None:
            consumer.push(frame, keyframe)
            continue
        ready = prepare(frame, keyframe)
        if ready is None:
            continue
        sender, pts, clock_rate = ready
        sent = sender.send_batched(frame.data, pts, clock_rate, frame, batch)
        if sent is None:
            waiting.append((consumer, sender))
        elif sent:
            _forwarded(consumer, frame, time.time())
    if waiting:
        outcomes = batch.run()
        now = time.time()
        for consumer, sender in waiting:
            if outcomes[sender]:
                _forwarded(consumer, frame, now)


def _forwarded(consumer: Any, frame: TappedFrame, now: float) -> None:
    """Count a frame that went out to ``consumer`` at ``now`` (wall clock), as ``push`` does (``_fastpath.fan_hot``
    does the same in C)."""
    consumer.forwarded += 1
    consumer.hold_times.append(now - frame.arrival)
