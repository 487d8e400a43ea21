"""One timeline for every track: RTP timestamps mapped to wall-clock time with RTCP sender reports.

A sender report pairs an NTP (wall-clock) time with an RTP timestamp of the
same track, so ``sender time = ntp + (rtp - sr_rtp) / clock_rate``: the tracks
of one sender (its camera and microphone) line up exactly. A
:class:`SenderClock` per sender then moves its times onto the recorder's clock,
so tracks of different senders line up too, whatever their clocks say.
Before a track's first sender report the only reference is the arrival time of
its first frame: the clock then says so (``source == "arrival"``), and the
manifest records it.
"""

from __future__ import annotations

from typing import Literal

ClockSource = Literal["sender_report", "arrival"]

_WRAP = 1 << 32

CLOCK_JUMP = 1.0
"""A sender report that disagrees with the recent ones by more than this is a new clock (the sender restarted its
RTP clock, stepped its wall clock, or fell far behind): the older reports are dropped."""
REPORT_WINDOW = 4.0
"""Seconds of recent sender reports the mapping is chosen from (the earliest-placing one wins)."""


def rtp_delta(rtp: int, ref: int) -> int:
    """``rtp - ref`` in RTP ticks, correct whether or not the caller unwrapped across 2**32."""
    d = (rtp - ref) % _WRAP
    return d - _WRAP if d >= _WRAP // 2 else d


class TrackClock:
    """Maps one track's RTP timestamps to Unix seconds."""

    __slots__ = ("_arrival_ref", "_reports", "_sr_ntp", "_sr_rtp", "clock_rate")

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self._sr_ntp: float | None = None
        self._sr_rtp = 0
        self._arrival_ref: tuple[float, int] | None = None
        self._reports: list[tuple[float, int]] = []

    def sender_report(self, ntp_time: float, rtp_timestamp: int) -> None:
        """Take a sender report into the mapping.

        A sender stamps a report with the time it sends it and the RTP
        timestamp of the last media it sent (aiortc), or of the media it
        captures at that moment (browsers): a report can be late by the
        sender's queueing, never early. So of the reports of the last
        :data:`REPORT_WINDOW` seconds the one that places the track earliest
        is the truest: one report stamped late by a loaded sender no longer
        moves every segment opened after it (tiles drifted apart by tenths of
        a second), while a sender whose media clock really falls behind (a
        starved sender) is followed within the window.
        """
        reports = [
            (ntp, rtp)
            for ntp, rtp in self._reports
            if ntp_time - ntp <= REPORT_WINDOW
            and abs(ntp + rtp_delta(rtp_timestamp, rtp) / self.clock_rate - ntp_time) <= CLOCK_JUMP
        ]
        reports.append((ntp_time, rtp_timestamp))
        self._reports = reports
        # Each report's time for the newest report's RTP timestamp; re-anchored there, far from the 2**32 wrap.
        self._sr_ntp = min(ntp + rtp_delta(rtp_timestamp, rtp) / self.clock_rate for ntp, rtp in reports)
        self._sr_rtp = rtp_timestamp

    @property
    def source(self) -> ClockSource:
        """Whether times come from sender reports or from arrival times."""
        return "arrival" if self._sr_ntp is None else "sender_report"

    def wall(self, rtp_timestamp: int, arrival: float) -> float:
        """Wall-clock time of a frame with this RTP timestamp (which arrived at ``arrival``)."""
        if self._sr_ntp is not None:
            return self._sr_ntp + rtp_delta(rtp_timestamp, self._sr_rtp) / self.clock_rate
        if self._arrival_ref is None:
            self._arrival_ref = (arrival, rtp_timestamp)
        # Anchor on the first arrival and follow the RTP clock from there: arrival jitter stays out.
        ref_time, ref_rtp = self._arrival_ref
        return ref_time + rtp_delta(rtp_timestamp, ref_rtp) / self.clock_rate


class SenderClock:
    """Maps one sender's NTP clock onto the recorder's clock.

    A browser stamps its sender reports with its own wall clock, which may be
    seconds off the court's. Every track of one sender shares that clock, so
    one offset per sender keeps their audio and video in sync while placing
    them on the recorder's timeline: the smallest ``arrival - sender time``
    seen recently (network delay at its least, plus the clock difference).
    The minimum is taken over the last one to two ``window`` seconds so a
    slowly drifting clock is followed.
    """

    __slots__ = ("_bucket_start", "_current", "_previous", "window")

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._bucket_start = 0.0
        self._current = float("inf")
        self._previous = float("inf")

    @property
    def offset(self) -> float:
        """The offset now (0 before the first observation)."""
        best = min(self._previous, self._current)
        return 0.0 if best == float("inf") else best

    def observe(self, sender_time: float, arrival: float) -> float:
        """Note one frame's sender time and arrival; returns the offset to add to sender times."""
        elapsed = arrival - self._bucket_start
        if elapsed >= self.window:
            # After a silence longer than two windows the previous minimum is stale too.
            self._previous = self._current if elapsed < 2 * self.window else float("inf")
            self._current = float("inf")
            self._bucket_start = arrival
        sample = arrival - sender_time
        if sample < self._current:
            self._current = sample
        return min(self._previous, self._current)
