"""The node's RTCP sender reports: one timer for every stream it sends, one compound packet per peer connection.

aiortc's ``RTCRtpSender`` runs an RTCP task per outgoing stream: every 0.5-1.5 s it wakes, makes one sender report
and one SDES, and sends them in an SRTCP packet of their own. A subscriber of eight people has sixteen such streams,
and a node forwarding to 32 subscribers woke 64 tasks a second and protected and sent 64 packets for them (3-5% of
the node's CPU at N=32, ``bench/forwarding.py``, profiled with perf).

:class:`SenderReports` stands in for those tasks on the senders it adopts: one task of the node's, every 0.5-1.5 s
(RFC 3550's spread, as mediasoup's transport timer), makes each stream's report and sends, per peer connection (one
bundled DTLS transport), one compound RTCP packet of the reports and one SDES CNAME, split where it would pass
:data:`MAX_COMPOUND` bytes. The reports are byte for byte the sender reports aiortc makes (from the counters the
send path keeps up to date); each is noted as sent on its sender as aiortc notes it, so the round trip is still
measured from the receiver reports that echo it. A stream that has sent nothing gets no report (it maps no media
time). When a sender stops, its task sends the RTCP BYE, as aiortc's does.

RFC 3550 6.1 lets a compound packet carry the reports of several sources (RFC 8108 5.4.1); receivers route each
report by its SSRC (libwebrtc hands the compound packet to every receive stream; aiortc routes each report).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator

import structlog
from aiortc import RTCRtpSender

from media.aiortc_compat import (
    replace_rtcp_loop,
    rtcp_loop_exited,
    rtcp_loop_started,
    sdes_cname,
    send_bye,
    send_rtcp,
    sender_report,
    sender_ssrc,
)

log = structlog.get_logger(__name__)

_node_timer = True


def use_node_timer(on: bool) -> None:
    """Whether senders adopted from now on are reported for by the node's timer (the default), or keep aiortc's
    RTCP task each (the bench's A/B, ``bench/forwarding.py --aiortc-reports-counts``)."""
    global _node_timer
    _node_timer = on


MAX_COMPOUND = 1100
"""Bytes of RTCP in one compound packet at most, before SRTCP's index and tag: under any path's MTU (a report is
28 bytes, so about 38 streams' reports go in one)."""


class SenderReports:
    """Sends the sender reports of every sender it adopted, from one task (the node keeps one)."""

    def __init__(self) -> None:
        self._senders: dict[RTCRtpSender, None] = {}
        """The senders whose RTCP task runs (an ordered set)."""
        self._task: asyncio.Task[None] | None = None
        self.packets_sent = 0
        """Compound packets sent so far (one per peer connection and round, more when one would be too long)."""
        self.reports_sent = 0
        """Sender reports sent so far."""

    def adopt(self, sender: RTCRtpSender) -> None:
        """Report for ``sender`` from this object instead of from a task of its own (before the sender starts)."""
        if not _node_timer:
            return

        async def run() -> None:
            await self._follow(sender)

        replace_rtcp_loop(sender, run)

    def __len__(self) -> int:
        return len(self._senders)

    async def _follow(self, sender: RTCRtpSender) -> None:
        """What the sender's RTCP task runs: reported for until it is cancelled (``stop()``), then its BYE."""
        rtcp_loop_started(sender)
        self._senders[sender] = None
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        try:
            await asyncio.get_running_loop().create_future()  # never done: cancelled by the sender's stop()
        except asyncio.CancelledError:
            pass
        finally:
            self._senders.pop(sender, None)
        try:
            await send_bye(sender)
        finally:
            rtcp_loop_exited(sender)  # whatever the BYE met: the sender's stop() waits for this

    async def _run(self) -> None:
        """Every 0.5-1.5 s, every adopted sender's report; ends when none is left."""
        while self._senders:
            await asyncio.sleep(0.5 + random.random())
            try:
                await self.send_now()
            except Exception:  # a sender in a state nobody foresaw must not end every stream's reports
                log.exception("sender_reports_failed")
        self._task = None

    async def send_now(self) -> None:
        """Send one round of reports now: a compound packet (or more) per transport."""
        now = time.time()
        by_transport: dict[int, tuple[object, list[bytes], bytes]] = {}
        for sender in list(self._senders):
            made = sender_report(sender, now)
            if made is None:
                continue
            transport, report, cname = made
            entry = by_transport.get(id(transport))
            if entry is None:
                # One CNAME chunk per packet, the first stream's (every stream of a connection has the same CNAME).
                sdes = sdes_cname(sender_ssrc(sender), cname) if cname is not None else b""
                by_transport[id(transport)] = (transport, [report], sdes)
            else:
                entry[1].append(report)
        for transport, reports, sdes in by_transport.values():
            for payload, count in _compound(reports, sdes):
                try:
                    await send_rtcp(transport, payload)
                except ConnectionError:
                    continue  # not connected (yet, or any more): aiortc's loop skips these too
                except Exception:  # one odd transport must not stop everyone's reports
                    log.exception("sender_reports_failed")
                    break
                self.packets_sent += 1
                self.reports_sent += count

    async def close(self) -> None:
        """Stop the timer (the node closes; its senders' own tasks end with their ``stop()``)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _compound(reports: list[bytes], sdes: bytes) -> Iterator[tuple[bytes, int]]:
    """The reports in compound packets of at most :data:`MAX_COMPOUND` bytes, each closed by the SDES, with the
    number of reports in each."""
    room = MAX_COMPOUND - len(sdes)
    chunk: list[bytes] = []
    size = 0
    for report in reports:
        if chunk and size + len(report) > room:
            yield b"".join(chunk) + sdes, len(chunk)
            chunk, size = [], 0
        chunk.append(report)
        size += len(report)
    if chunk:
        yield b"".join(chunk) + sdes, len(chunk)
