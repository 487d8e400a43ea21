"""The one module that touches aiortc's and aioice's internals: every private name the media node relies on.

The media node forwards encoded frames without decoding them, which aiortc
1.16 has no public API for (see ``/work/shared/AIORTC-FACTS.md``): it swaps a
receiver's jitter buffer, replaces a sender's RTP loop, reads the DTLS
transport's SRTP session and aioice's nominated pair, and keeps the sender's
report counters itself. Every such name is used here and nowhere else in
``media/``: the other media modules use aiortc's public API and this module's
small functions. ``tests/unit/test_aiortc_compat.py`` fails if a private
aiortc/aioice name appears in another media module.

Names that are not underscored but live in modules aiortc does not export
(``aiortc.rtp``, ``aiortc.sdp``, ``aiortc.codecs``, ...) are imported here too
and re-exported, so an upgrade that moves one fails in this module alone.

:func:`self_check` verifies, when the node starts, that every internal used
here exists with the expected shape; on a mismatch the node refuses to start
with :class:`AiortcMismatch`, one line naming the missing piece and the
versions found, instead of failing later on the packet path. Packet-path
callers bind what they need once (per peer or per sender), so this module
adds no call per packet.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import functools
import hashlib
import importlib.metadata
import inspect
import operator
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver

from media import AiortcMismatch

try:
    from media import _rate
except ImportError:  # not built: aiortc's own estimator
    _rate = None  # type: ignore[assignment]


def versions() -> str:
    """The installed aiortc and aioice versions, as ``aiortc X, aioice Y``."""
    found = []
    for name in ("aiortc", "aioice"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _mismatch(missing: str) -> AiortcMismatch:
    return AiortcMismatch(
        f"media node cannot start: {missing} is missing or changed in the installed {versions()} "
        "(courtlink needs aiortc 1.16 and aioice 0.13)"
    )


try:
    from aioice.candidate import Candidate, candidate_foundation, candidate_priority
    from aioice.ice import Connection as IceConnection
    from aioice.ice import StunProtocol, server_reflexive_candidate
    from aioice.turn import UDP_SOCKET_BUFFER_SIZE
    from aiortc.codecs import CODECS, get_encoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rate import RemoteBitrateEstimator
    from aiortc.rtcdtlstransport import RTCDtlsTransport, State
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
    from aiortc.rtcpeerconnection import find_common_codecs
    from aiortc.rtcrtpparameters import RTCRtcpFeedback
    from aiortc.rtp import (
        DYNAMIC_PAYLOAD_TYPES,
        RTCP_PSFB_APP,
        RTP_HISTORY_SIZE,
        HeaderExtensions,
        RtcpByePacket,
        RtcpPacket,
        RtcpPsfbPacket,
        RtcpSrPacket,
        RtpPacket,
        unpack_remb_fci,
        wrap_rtx,
    )
    from aiortc.sdp import SessionDescription, candidate_from_sdp
    from aiortc.utils import random16, random32
except ImportError as exc:  # pragma: no cover - only with another aiortc/aioice
    raise _mismatch(f"{exc.name or 'a module'}: {exc}".splitlines()[0]) from None

__all__ = [
    "CODECS",
    "DTLS_CONNECTED",
    "DYNAMIC_PAYLOAD_TYPES",
    "RTP_HISTORY_SIZE",
    "AiortcMismatch",
    "HeaderExtensions",
    "JitterFrame",
    "PortRangeExhausted",
    "RTCRtcpFeedback",
    "RembLimiter",
    "RtcpByePacket",
    "RtcpSrPacket",
    "RtpPacket",
    "SenderInternals",
    "SessionDescription",
    "adopt_native_estimator",
    "candidate_from_sdp",
    "direct_sendto",
    "find_common_codecs",
    "gate_retransmit",
    "get_encoder",
    "install_jitter_buffer",
    "keyframe_requester",
    "limit_host_candidates",
    "limit_remb",
    "native_estimator",
    "negotiated_codecs",
    "negotiated_header_extensions",
    "offer_direction",
    "on_keyframe_request",
    "on_remb",
    "random16",
    "random32",
    "rate_matches",
    "receiver_codec_name",
    "replace_rtcp_loop",
    "replace_rtp_loop",
    "rtcp_loop_exited",
    "rtcp_loop_started",
    "rtp_depayloaded",
    "sdes_cname",
    "self_check",
    "send_bye",
    "send_rtcp",
    "sender_counters",
    "sender_enabled",
    "sender_report",
    "sender_rtt",
    "sender_ssrc",
    "set_negotiated",
    "use_native_rate",
    "versions",
    "wrap_rtcp_handler",
    "wrap_rtx",
]

# --- RTCRtpReceiver ---------------------------------------------------------------------------------

rtp_depayloaded: Callable[[RtpPacket], bytes] = operator.attrgetter("_data")
"""The depayloaded bytes aiortc's receiver sets on each RTP packet (``packet._data``), a C-level getter."""


def receiver_codec_name(receiver: RTCRtpReceiver) -> Callable[[int], str]:
    """A function giving the negotiated codec name of a payload type on ``receiver`` (``""`` if unknown)."""

    def codec_name(payload_type: int) -> str:
        codec = receiver._RTCRtpReceiver__codecs.get(payload_type)  # type: ignore[attr-defined]
        return str(codec.name) if codec is not None else ""

    return codec_name


def install_jitter_buffer(receiver: RTCRtpReceiver, buffer: Any) -> None:
    """Make ``receiver`` hand every RTP packet to ``buffer.add(packet)`` instead of its own jitter buffer."""
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]


def wrap_rtcp_handler(
    receiver: RTCRtpReceiver, wrap: Callable[[Callable[[Any], Awaitable[None]]], Callable[[Any], Awaitable[None]]]
) -> None:
    """Replace, on this receiver only, its RTCP handler by ``wrap(original)``."""
    original = receiver._handle_rtcp_packet
    receiver._handle_rtcp_packet = wrap(original)  # type: ignore[method-assign,assignment]


class RembLimiter:
    """Stands in for a receiver's ``RemoteBitrateEstimator``: the REMB the node sends the publisher is at most ``cap``.

    aiortc's receiver feeds its estimator every video packet that carries abs-send-time and sends whatever REMB it
    returns (``rtcrtpreceiver.py`` ``_handle_rtp_packet``). With a cap set, an estimate above it is lowered to it,
    and a REMB of the cap goes out at least every :attr:`interval_ms` even while the estimator has nothing to say
    (it says nothing for its first 3 s), so a new cap reaches the publisher within that interval.
    """

    __slots__ = ("_estimator", "_last_ms", "cap", "estimate", "interval_ms")

    def __init__(self, estimator: Any, interval_ms: int = 500) -> None:
        self._estimator = estimator
        self._last_ms = -(1 << 62)
        self.interval_ms = interval_ms
        self.cap: int | None = None
        """Bit/s the publisher may send at most (None: the estimator's own REMB, unchanged)."""
        self.estimate: int | None = None
        """The estimator's last estimate of the publisher's link (bit/s), before the cap."""

    def add(self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int) -> Any:
        """What aiortc's receiver calls per packet: ``(bitrate, ssrcs)`` to send as REMB, or None."""
        result = self._estimator.add(arrival_time_ms, abs_send_time, payload_size, ssrc)  # the self-checked order
        cap = self.cap
        if result is not None:
            self.estimate = int(result[0])
            self._last_ms = arrival_time_ms
            return result if cap is None or result[0] <= cap else (cap, result[1])
        if cap is not None and arrival_time_ms - self._last_ms >= self.interval_ms:
            self._last_ms = arrival_time_ms
            return cap, list(self._estimator.ssrcs)
        return None


def limit_remb(receiver: RTCRtpReceiver) -> RembLimiter | None:
    """Put a :class:`RembLimiter` in front of the receiver's bitrate estimator (video receivers; None for audio)."""
    name = "_RTCRtpReceiver__remote_bitrate_estimator"
    estimator = getattr(receiver, name, None)
    if estimator is None:
        return None
    if isinstance(estimator, RembLimiter):
        return estimator
    limiter = RembLimiter(estimator)
    setattr(receiver, name, limiter)
    return limiter


_RATE_SHA256 = "712e07906e2669b12818d58edec767d4e17d56a8a897f96226c5364a01456763"
"""The source of aiortc 1.16's ``aiortc/rate.py``, which ``media/_rate.c`` copies."""

_native_rate = [True]


@functools.cache
def _source_sha256(obj: Any) -> str:
    """The SHA-256 of a module's or function's source ("" hashed where it has none): what a copy of it here checks
    before it stands in for it."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        source = ""
    return hashlib.sha256(source.encode()).hexdigest()


def rate_matches() -> bool:
    """Whether the installed aiortc's bandwidth estimator is the one ``media/_rate.c`` copies (by its source)."""
    from aiortc import rate

    return _source_sha256(rate) == _RATE_SHA256


def use_native_rate(on: bool) -> None:
    """Whether receivers set up from now on may get the native estimator (the bench's A/B)."""
    _native_rate[0] = on


def native_estimator() -> Any | None:
    """A new ``media._rate.RemoteBitrateEstimator``: aiortc 1.16's estimator in C, the same REMBs for the same packets
    at a fraction of the cost; None where it is not built, aiortc's ``rate.py`` is another, or it is switched off."""
    if _rate is None or not _native_rate[0] or not rate_matches():
        return None
    return _rate.RemoteBitrateEstimator()


def adopt_native_estimator(receiver: RTCRtpReceiver) -> bool:
    """Give a video receiver the native estimator in place of aiortc's (behind its :class:`RembLimiter` if it has
    one), while aiortc's has seen no packet; True if it did."""
    from aiortc.rate import RemoteBitrateEstimator

    name = "_RTCRtpReceiver__remote_bitrate_estimator"
    current = getattr(receiver, name, None)
    inner = current._estimator if isinstance(current, RembLimiter) else current
    if type(inner) is not RemoteBitrateEstimator or inner.ssrcs:
        return False
    native = native_estimator()
    if native is None:
        return False
    if isinstance(current, RembLimiter):
        current._estimator = native
    else:
        setattr(receiver, name, native)
    return True


def keyframe_requester(receiver: RTCRtpReceiver) -> Callable[[int], Awaitable[None]]:
    """The receiver's bound PLI sender: ``await send(media_ssrc)`` asks the remote sender for a keyframe."""
    send: Callable[[int], Awaitable[None]] = receiver._send_rtcp_pli
    return send


# --- RTCRtpSender -----------------------------------------------------------------------------------


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when a subscriber asks this sender for a keyframe (PLI/FIR), instead of aiortc's flag."""
    sender._send_keyframe = callback  # type: ignore[method-assign]


def on_remb(sender: RTCRtpSender, callback: Callable[[int, list[int]], None]) -> None:
    """Call ``callback(bitrate, ssrcs)`` for every REMB (RTCP PSFB fmt 15) the remote receiver sends about this
    sender's stream, before aiortc's own handling (which, in pack mode, has no encoder to give it to).

    aiortc's DTLS transport routes a REMB to every sender whose SSRC it lists (``RtpRouter.route_rtcp``): a REMB
    about several streams reaches each of their senders.
    """
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                pass  # not a REMB (another application-layer feedback), or a broken one: aiortc ignores it too
            else:
                callback(bitrate, ssrcs)
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def replace_rtp_loop(
    sender: RTCRtpSender,
    run: Callable[[Any], Awaitable[None]],
    retransmit: Callable[[int], Awaitable[None]],
) -> Callable[[Any], Awaitable[None]]:
    """Replace, on this sender only, its RTP loop and its NACK retransmission; return the original loop."""
    original: Callable[[Any], Awaitable[None]] = sender._run_rtp
    sender._run_rtp = run  # type: ignore[method-assign,assignment]
    sender._retransmit = retransmit  # type: ignore[method-assign,assignment]
    return original


def gate_retransmit(sender: RTCRtpSender, allow: Callable[[int, int, int, int], bool]) -> None:
    """On this sender only (aiortc's own RTP loop), resend a NACKed packet only if
    ``allow(sequence_number, packet_timestamp, last_sent_timestamp, size)`` says so."""
    original = sender._retransmit
    history: dict[int, Any] = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]

    async def retransmit(sequence_number: int) -> None:
        packet = history.get(sequence_number % RTP_HISTORY_SIZE)
        if packet is None or packet.sequence_number != sequence_number:
            return
        last: int = sender._RTCRtpSender__rtp_timestamp  # type: ignore[attr-defined]
        if allow(sequence_number, int(packet.timestamp), int(last), len(packet.payload) + 12):
            await original(sequence_number)

    sender._retransmit = retransmit  # type: ignore[method-assign]


def sender_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC of the sender's media stream (what a receiver's REMB names)."""
    return int(sender._ssrc)


def sender_rtt(sender: RTCRtpSender) -> float | None:
    """The round trip (seconds) aiortc's sender measured from the receiver's reports, None before any."""
    rtt = getattr(sender, "_RTCRtpSender__rtt", None)
    return None if rtt is None else float(rtt)


DTLS_CONNECTED: Any = State.CONNECTED
"""aiortc's DTLS state in which a sender's transport carries media (what :meth:`SenderInternals.link` requires)."""


def replace_rtcp_loop(sender: RTCRtpSender, run: Callable[[], Awaitable[None]]) -> None:
    """On this sender only, run ``run()`` as its RTCP task instead of aiortc's ``_run_rtcp`` (one timer per stream
    that sends one SR and one SDES in an SRTCP packet of their own); set before the sender starts."""
    sender._run_rtcp = run  # type: ignore[method-assign,assignment]


def rtcp_loop_started(sender: RTCRtpSender) -> None:
    """Tell aiortc the sender's RTCP task runs (what its own loop signals first; ``stop()`` waits for it)."""
    sender._RTCRtpSender__rtcp_started.set()  # type: ignore[attr-defined]


def rtcp_loop_exited(sender: RTCRtpSender) -> None:
    """Tell aiortc the sender's RTCP task ended (what its own loop signals last; ``stop()`` waits for it)."""
    sender._RTCRtpSender__rtcp_exited.set()  # type: ignore[attr-defined]


async def send_bye(sender: RTCRtpSender) -> None:
    """Send an RTCP BYE for the sender's stream, as aiortc's RTCP loop does when it ends."""
    await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])


_SR_HEAD = struct.Struct("!BBHLQLLL")
"""An RTCP sender report without report blocks: V=2 RC=0, PT=200, length 6 words; SSRC, NTP time, RTP time,
packets, octets (RFC 3550 6.4.1)."""


def sender_report(sender: RTCRtpSender, now: float) -> tuple[Any, bytes, str | None] | None:
    """The sender's transport, its RTCP sender report as bytes (what aiortc's RTCP loop would send now) and its
    CNAME; None before its first packet (an SR then maps no media). Notes the report as sent, as aiortc's loop does
    (``__lsr``, ``__lsr_time``): the round trip is measured from the receiver reports that echo it."""
    state: Any = sender
    packets = int(state._RTCRtpSender__packet_count)
    if not packets:
        return None
    ntp = int(state._RTCRtpSender__ntp_timestamp)
    report = _SR_HEAD.pack(
        0x80,
        200,
        6,
        int(state._ssrc),
        ntp,
        int(state._RTCRtpSender__rtp_timestamp) & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        int(state._RTCRtpSender__octet_count) & 0xFFFFFFFF,
    )
    state._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF
    state._RTCRtpSender__lsr_time = now
    return sender.transport, report, state._RTCRtpSender__cname


def sdes_cname(ssrc: int, cname: str) -> bytes:
    """An RTCP SDES packet of one chunk, the CNAME of ``ssrc``, byte for byte as aiortc makes it (RFC 3550 6.5)."""
    value = cname.encode("utf8")[:255]
    payload = struct.pack("!LBB", ssrc, 1, len(value)) + value + b"\x00\x00"
    payload += b"\x00" * (-len(payload) % 4)
    return struct.pack("!BBH", 0x81, 202, len(payload) // 4) + payload


async def send_rtcp(transport: Any, payload: bytes) -> None:
    """Send one compound RTCP packet through a DTLS transport (SRTCP); ConnectionError when it is not connected."""
    await transport._send_rtp(payload)


def sender_enabled(sender: RTCRtpSender) -> bool:
    """Whether the transceiver's direction lets the sender send now (aiortc's ``_enabled``)."""
    return bool(sender._enabled)


def sender_counters(sender: RTCRtpSender) -> tuple[int, int]:
    """The packets and octets the sender reports as sent (its sender-report counters); 0, 0 if unknown."""
    return (
        int(getattr(sender, "_RTCRtpSender__packet_count", 0)),
        int(getattr(sender, "_RTCRtpSender__octet_count", 0)),
    )


class SenderInternals:
    """The private state of one ``RTCRtpSender`` a replacement RTP loop needs, resolved once when it starts.

    Construct it inside the sender's RTP task (the DTLS transport is connected then); it raises
    ``AttributeError`` if a piece is missing.
    """

    __slots__ = ("_linked", "connection", "dtls", "extensions_map", "mid", "rtx_ssrc", "sender", "ssrc")

    def __init__(self, sender: RTCRtpSender) -> None:
        self.sender = sender
        self._linked: tuple[Any, Any, tuple[Callable[[bytes], bytes], Any, Any]] | None = None
        """The SRTP session and ICE pair :meth:`link` last saw, and what it returned for them."""
        dtls = sender.transport
        self.dtls: Any = dtls
        self.connection: Any = dtls.transport._connection
        _ = self.connection._nominated, dtls._state, dtls._tx_srtp
        self.ssrc = int(sender._ssrc)
        self.rtx_ssrc = int(sender._rtx_ssrc)
        self.extensions_map: Any = sender._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]
        self.mid: str | None = sender._RTCRtpSender__mid  # type: ignore[attr-defined]
        for name in ("rtp_started", "rtp_exited", "rtx_payload_type", "rtx_sequence_number"):
            getattr(sender, "_RTCRtpSender__" + name)
        for name in ("ntp_timestamp", "rtp_timestamp", "octet_count", "packet_count"):
            getattr(sender, "_RTCRtpSender__" + name)

    def link(self) -> tuple[Callable[[bytes], bytes], Any, Any]:
        """SRTP ``protect``, the nominated ICE pair's protocol and remote address; ConnectionError if not connected."""
        dtls = self.dtls
        if dtls._state != State.CONNECTED:
            raise ConnectionError("DTLS transport not connected")
        pair = self.connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("no nominated ICE pair")
        session = dtls._tx_srtp
        linked = self._linked
        if linked is not None and linked[0] is session and linked[1] is pair:
            # Per frame and subscriber: the same objects as last time (an aioice pair's protocol and remote
            # candidate are set once, when it is made), so the same answer, without a new bound method and tuple.
            return linked[2]
        answer = (session.protect, pair.protocol, pair.remote_addr)
        self._linked = (session, pair, answer)
        return answer

    def link_state(self) -> tuple[Any, Any, Any, Any] | None:
        """What the native hot path (``media._fastpath.fan_hot``) checks at each frame to know :meth:`link` would
        give the same answer: the DTLS transport (its ``_state`` and ``_tx_srtp``), the ICE connection's nominated
        pairs (by component), and the SRTP session and pair :meth:`link` last saw; None before the first link."""
        linked = self._linked
        if linked is None:
            return None
        return (self.dtls, self.connection._nominated, linked[0], linked[1])

    def record_sent(self, ntp: int, timestamp: int, octets: int, packets: int) -> None:
        """Update what aiortc's RTCP loop puts in its sender reports after one frame went out."""
        sender: Any = self.sender
        sender._RTCRtpSender__ntp_timestamp = ntp
        sender._RTCRtpSender__rtp_timestamp = timestamp
        sender._RTCRtpSender__octet_count += octets
        sender._RTCRtpSender__packet_count += packets

    def started(self) -> None:
        """Tell aiortc the RTP loop runs (what its own loop signals first)."""
        self.sender._RTCRtpSender__rtp_started.set()  # type: ignore[attr-defined]

    def exited(self) -> None:
        """Drop the sender's track and tell aiortc the RTP loop ended (what its own loop does last)."""
        self.sender._RTCRtpSender__track = None  # type: ignore[attr-defined]
        self.sender._RTCRtpSender__rtp_exited.set()  # type: ignore[attr-defined]

    def next_rtx(self) -> tuple[int, int, int] | None:
        """RTX payload type, the next RTX sequence number (consumed) and RTX SSRC; None without RTX."""
        sender: Any = self.sender
        payload_type = sender._RTCRtpSender__rtx_payload_type
        if payload_type is None:
            return None
        sequence = sender._RTCRtpSender__rtx_sequence_number
        sender._RTCRtpSender__rtx_sequence_number = (sequence + 1) & 0xFFFF
        return int(payload_type), int(sequence), self.rtx_ssrc

    def last_timestamp(self) -> int:
        """The RTP timestamp of the last frame sent (what the next sender report carries)."""
        return int(self.sender._RTCRtpSender__rtp_timestamp)  # type: ignore[attr-defined]

    def current_extensions_map(self) -> Any:
        """The sender's header-extension map now (re-read: aiortc reconfigures it on renegotiation)."""
        return self.sender._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]

    async def send_rtp(self, data: bytes) -> None:
        """Send one serialized RTP packet through the DTLS transport (SRTP), as aiortc's sender does."""
        await self.sender.transport._send_rtp(data)


def direct_sendto(protocol: Any) -> Callable[[bytes, Any], None] | None:
    """The datagram ``sendto`` aioice's ``send_data`` ends in for this pair, or None if it does more (then await it)."""
    if type(protocol).send_data is StunProtocol.send_data:
        # aioice's host/srflx pairs, and relayed ones (their transport is aioice's TurnTransport).
        sendto: Callable[[bytes, Any], None] = protocol.transport.sendto
        return sendto
    return None


# --- RTCRtpTransceiver ------------------------------------------------------------------------------


def offer_direction(transceiver: RTCRtpTransceiver) -> str | None:
    """The direction the remote offer gave this transceiver's m-line (``None`` before any offer)."""
    direction = getattr(transceiver, "_offerDirection", None)
    return None if direction is None else str(direction)


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[Any]:
    """The codecs (``RTCRtpCodecParameters``) negotiated on this transceiver, in order; empty before negotiation."""
    return list(getattr(transceiver, "_codecs", []))


def negotiated_header_extensions(transceiver: RTCRtpTransceiver) -> list[Any]:
    """The header extensions negotiated on this transceiver."""
    return list(transceiver._headerExtensions)


def set_negotiated(transceiver: RTCRtpTransceiver, codecs: list[Any], extensions: list[Any]) -> None:
    """Make the transceiver use these codecs and header extensions (numbers included) from now on."""
    transceiver._codecs = codecs
    transceiver._headerExtensions = extensions


# --- ICE --------------------------------------------------------------------------------------------

_MARK = "_courtlink_host_addresses"


def _gatherers(pc: RTCPeerConnection) -> list[Any]:
    found: list[Any] = []
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        gatherer = dtls.transport.iceGatherer
        if all(gatherer is not g for g in found):
            found.append(gatherer)
    return found


def _limit(connection: Any, wanted: list[str]) -> None:
    original = connection.get_component_candidates

    async def limited(component: int, addresses: list[str], **options: Any) -> Any:
        # aioice passes the addresses of every interface; keep only the announced ones.
        return await original(component=component, addresses=wanted, **options)

    connection.get_component_candidates = limited
    setattr(connection, _MARK, wanted)


class PortRangeExhausted(RuntimeError):
    """Every UDP port of the node's range is taken: a new connection cannot bind its host candidates."""


def _port_taken(exc: OSError) -> bool:
    """Whether a bind failed because the port is taken (or reserved): asyncio raises the ``EADDRINUSE`` itself;
    uvloop raises ``OSError("could not bind to local_addr ...")`` from it."""
    cause: BaseException | None = exc
    while isinstance(cause, OSError):
        if cause.errno in (errno.EADDRINUSE, errno.EACCES):
            return True
        cause = cause.__cause__
    return False


async def _bind_in_range(connection: Any, address: str, port_min: int, port_max: int) -> Any:
    """A ``StunProtocol`` of ``connection`` bound to ``address`` on a free port of the range (random start)."""
    loop = asyncio.get_running_loop()
    span = port_max - port_min + 1
    start = random.randrange(span)  # spreads connections over the range; not a secret
    for step in range(span):
        port = port_min + (start + step) % span
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: StunProtocol(connection), local_addr=(address, port)
            )
        except OSError as exc:
            if _port_taken(exc):
                continue
            raise
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
        return protocol
    raise PortRangeExhausted(f"no free UDP port on {address} in {port_min}-{port_max}")


def _limit_in_range(connection: Any, wanted: list[str], port_min: int, port_max: int) -> None:
    original = connection.get_component_candidates

    async def in_range(component: int, addresses: list[str], **options: Any) -> Any:
        # aioice binds port 0 (any port); bind the host candidates in the range instead, as aioice would.
        bound: list[Any] = []
        try:
            for address in wanted:
                bound.append(await _bind_in_range(connection, address, port_min, port_max))
        except BaseException:
            for protocol in bound:
                protocol.transport.close()
            raise
        candidates: list[Any] = []
        for protocol in bound:
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            candidates.append(protocol.local_candidate)
        connection._protocols += bound
        # Server-reflexive candidates of the bound sockets, and TURN (aioice's own, with no host addresses).
        lookups = []
        if connection.stun_server:
            lookups = [
                server_reflexive_candidate(p, connection.stun_server)
                for p in bound
                if ":" not in p.local_candidate.host
            ]
        timeout = options.get("timeout", 5)
        found = await asyncio.gather(
            original(component=component, addresses=[], **options),
            *(asyncio.wait_for(lookup, timeout) for lookup in lookups),
            return_exceptions=True,
        )
        relayed, reflexive = found[0], found[1:]
        if isinstance(relayed, BaseException):
            raise relayed
        candidates.extend(relayed)
        candidates.extend(result[0] for result in reflexive if not isinstance(result, BaseException))
        return candidates

    connection.get_component_candidates = in_range
    setattr(connection, _MARK, wanted)


def limit_host_candidates(pc: RTCPeerConnection, addresses: Sequence[str], ports: tuple[int, int] = (0, 0)) -> None:
    """Make every ICE gatherer of ``pc`` bind and announce host candidates on ``addresses`` only (idempotent).

    ``ports`` (min, max), unless (0, 0): each host candidate binds a free UDP port in that range; when none is
    free, gathering (``setLocalDescription``) raises :class:`PortRangeExhausted`.
    """
    port_min, port_max = ports
    for gatherer in _gatherers(pc):
        connection = gatherer._connection
        if getattr(connection, _MARK, None) is None:
            if port_min and port_max:
                _limit_in_range(connection, list(addresses), port_min, port_max)
            else:
                _limit(connection, list(addresses))


# --- start-up self-check ----------------------------------------------------------------------------


def _names_used(cls: type) -> set[str]:
    """Every attribute name the functions of ``cls`` (its own and inherited) read or write."""
    names: set[str] = set()
    for klass in cls.__mro__:
        for value in vars(klass).values():
            function = inspect.unwrap(value) if callable(value) else None
            code = getattr(function, "__code__", None)
            if code is not None:
                names.update(code.co_names)
    return names


_INSTANCE_ATTRIBUTES: tuple[tuple[type, str, Iterable[str]], ...] = (
    (
        RTCRtpSender,
        "RTCRtpSender",
        (
            "_ssrc",
            "_rtx_ssrc",
            "_enabled",
            "_RTCRtpSender__rtp_started",
            "_RTCRtpSender__rtp_exited",
            "_RTCRtpSender__track",
            "_RTCRtpSender__mid",
            "_RTCRtpSender__rtp_header_extensions_map",
            "_RTCRtpSender__rtx_payload_type",
            "_RTCRtpSender__rtx_sequence_number",
            "_RTCRtpSender__ntp_timestamp",
            "_RTCRtpSender__rtp_timestamp",
            "_RTCRtpSender__rtt",
            "_RTCRtpSender__rtp_history",
            "_RTCRtpSender__octet_count",
            "_RTCRtpSender__packet_count",
            "_RTCRtpSender__cname",
            "_RTCRtpSender__lsr",
            "_RTCRtpSender__lsr_time",
            "_RTCRtpSender__rtcp_started",
            "_RTCRtpSender__rtcp_exited",
        ),
    ),
    (
        RTCRtpReceiver,
        "RTCRtpReceiver",
        (
            "_RTCRtpReceiver__codecs",
            "_RTCRtpReceiver__jitter_buffer",
            "_RTCRtpReceiver__remote_bitrate_estimator",
            "_data",
        ),
    ),
    (RTCRtpTransceiver, "RTCRtpTransceiver", ("_codecs", "_headerExtensions")),
    (RTCDtlsTransport, "RTCDtlsTransport", ("_state", "_tx_srtp")),
    (RTCIceTransport, "RTCIceTransport", ("_connection",)),
    (RTCIceGatherer, "RTCIceGatherer", ("_connection",)),
    (IceConnection, "aioice Connection", ("_nominated", "_protocols", "stun_server")),
    (RemoteBitrateEstimator, "RemoteBitrateEstimator", ("ssrcs",)),
)
"""Instance attributes, set in the class's own code (checked by name in that code: they exist only on instances)."""

_METHODS: tuple[tuple[type, str, str, tuple[str, ...]], ...] = (
    (RTCRtpSender, "RTCRtpSender", "_run_rtp", ("self", "codec")),
    (RTCRtpSender, "RTCRtpSender", "_retransmit", ("self", "sequence_number")),
    (RTCRtpSender, "RTCRtpSender", "_run_rtcp", ("self",)),
    (RTCRtpSender, "RTCRtpSender", "_send_rtcp", ("self", "packets")),
    (RTCRtpSender, "RTCRtpSender", "_send_keyframe", ("self",)),
    (RTCRtpSender, "RTCRtpSender", "_handle_rtcp_packet", ("self", "packet")),
    (RTCRtpReceiver, "RTCRtpReceiver", "_handle_rtcp_packet", ("self", "packet")),
    (RTCRtpReceiver, "RTCRtpReceiver", "_send_rtcp_pli", ("self", "media_ssrc")),
    (RTCDtlsTransport, "RTCDtlsTransport", "_send_rtp", ("self", "data")),
    (IceConnection, "aioice Connection", "get_component_candidates", ("self", "component", "addresses")),
    (StunProtocol, "aioice StunProtocol", "send_data", ("self", "data", "addr")),
    (StunProtocol, "aioice StunProtocol", "__init__", ("self", "receiver")),
    (
        RemoteBitrateEstimator,
        "RemoteBitrateEstimator",
        "add",
        ("self", "arrival_time_ms", "abs_send_time", "payload_size", "ssrc"),
    ),
)
"""Methods: present, callable, and taking these leading parameters (by name: some are passed by keyword)."""


def self_check() -> None:
    """Raise :class:`AiortcMismatch` (one line) unless every aiortc/aioice internal used here exists as expected."""
    for cls, label, method, parameters in _METHODS:
        value = getattr(cls, method, None)
        if not callable(value):
            raise _mismatch(f"{label}.{method}")
        try:
            names = tuple(inspect.signature(value).parameters)
        except (TypeError, ValueError):
            raise _mismatch(f"{label}.{method}") from None
        if names[: len(parameters)] != parameters:
            raise _mismatch(f"{label}.{method}({', '.join(parameters)})")
    for cls, label, attributes in _INSTANCE_ATTRIBUTES:
        used = _names_used(cls)
        for attribute in attributes:
            if attribute not in used:
                raise _mismatch(f"{label}.{attribute}")
    for function, label, parameters in (
        (server_reflexive_candidate, "aioice.ice.server_reflexive_candidate", ("protocol", "stun_server")),
        (candidate_foundation, "aioice.candidate.candidate_foundation", ("candidate_type", "candidate_transport")),
        (candidate_priority, "aioice.candidate.candidate_priority", ("candidate_component", "candidate_type")),
    ):
        if tuple(inspect.signature(function).parameters)[: len(parameters)] != parameters:
            raise _mismatch(f"{label}({', '.join(parameters)})")
    if not isinstance(UDP_SOCKET_BUFFER_SIZE, int):
        raise _mismatch("aioice.turn.UDP_SOCKET_BUFFER_SIZE")
    if not hasattr(State, "CONNECTED"):
        raise _mismatch("aiortc.rtcdtlstransport.State.CONNECTED")
    if not isinstance(CODECS, dict) or not {"audio", "video"} <= set(CODECS):
        raise _mismatch("aiortc.codecs.CODECS")


def datagram_socket(protocol: Any) -> tuple[Any, int] | None:
    """The asyncio datagram transport and socket descriptor aioice's ``send_data`` writes to for this pair, or None
    where it writes elsewhere (a relayed pair's TURN transport, another protocol): the native send path
    (``media._fastpath``) then does not apply. Written to only while the transport has nothing buffered."""
    if getattr(type(protocol), "send_data", None) is not StunProtocol.send_data:
        return None
    transport = protocol.transport
    sock = transport.get_extra_info("socket")
    # asyncio's selector datagram transport (which subclasses no DatagramTransport in Python 3.11), or uvloop's
    # (courtlink.eventloop): each writes to this socket and tells whether it holds anything back.
    if sock is None or sock.type != socket.SOCK_DGRAM:
        return None
    if not isinstance(transport, asyncio.WriteTransport) and not _uvloop_datagram(transport):
        return None
    return transport, int(sock.fileno())


def _uvloop_datagram(transport: Any) -> bool:
    """Whether ``transport`` is uvloop's UDP transport (a libuv ``uv_udp_t``: sends at once unless libuv queued
    something, which ``get_write_buffer_size`` counts)."""
    kind = type(transport)
    return kind.__module__ == "uvloop.loop" and kind.__name__ == "UDPTransport"


# --- bandwidth probing (part probe) ----------------------------------------------------------------------------------


def on_loss_feedback(
    sender: RTCRtpSender,
    on_report: Callable[[int, int, int, int], None],
    on_nack: Callable[[int, list[int]], None],
) -> None:
    """Call ``on_report(ssrc, fraction_lost, packets_lost, highest_sequence)`` for every report block of the receiver
    reports (and sender reports) that reach this sender, and ``on_nack(ssrc, lost)`` for every generic NACK about its
    stream, before aiortc's own handling.

    aiortc's DTLS transport routes a receiver report to each sender whose SSRC one of its blocks names; the blocks
    about the same receiver's other streams (its RTX stream) come along in the same packet.
    """
    from aiortc.rtp import RtcpRrPacket, RtcpRtpfbPacket

    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                on_report(
                    int(report.ssrc), int(report.fraction_lost), int(report.packets_lost), int(report.highest_sequence)
                )
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == 1:
            on_nack(int(packet.media_ssrc), list(packet.lost))
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def padding_packet(
    payload_type: int, sequence_number: int, timestamp: int, ssrc: int, extensions: bytes, size: int
) -> bytes:
    """A padding-only RTP packet (RFC 3550 5.1: P set, no payload, ``size`` bytes of padding, the last one its
    count), with ``extensions`` as the header-extension block (``b""``: none), unprotected."""
    size = max(1, min(size, 255))
    first = 0xA0 | (0x10 if extensions else 0)
    header = bytes((first, payload_type & 0x7F)) + (
        (sequence_number & 0xFFFF).to_bytes(2, "big")
        + (timestamp & 0xFFFFFFFF).to_bytes(4, "big")
        + (ssrc & 0xFFFFFFFF).to_bytes(4, "big")
    )
    return header + extensions + bytes(size - 1) + bytes((size,))


def sender_rtx_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC of a sender's RTX stream (aiortc picks one per sender, used only when RTX is negotiated)."""
    return int(sender._rtx_ssrc)


# --- simulcast (part simulcast) --------------------------------------------------------------------------------------


def enable_header_extensions(transceiver: RTCRtpTransceiver, extensions: Sequence[tuple[int, str]]) -> None:
    """Negotiate these header extensions ``(id, uri)`` on this transceiver too (with the remote's ids), so its
    answers and later offers list them, and make its DTLS transport parse them on received packets.

    aiortc negotiates only the extensions it lists itself (``HEADER_EXTENSIONS``): for video, not the
    ``rtp-stream-id`` a simulcast layer is named by, although its packet parser reads it when configured.
    ``setRemoteDescription`` recomputes the list, so call this after each one.
    """
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

    current = list(transceiver._headerExtensions)
    known = {str(e.uri) for e in current}
    added = [RTCRtpHeaderExtensionParameters(id=number, uri=uri) for number, uri in extensions if uri not in known]
    if added:
        transceiver._headerExtensions = current + added
    transport = transceiver.receiver.transport
    transport._rtp_header_extensions_map.configure(RTCRtpParameters(headerExtensions=added or current))


_ROUTED_BY_MID = "_courtlink_routed_by_mid"


def route_by_mid(transceiver: RTCRtpTransceiver) -> None:
    """Make the transceiver's DTLS transport route an RTP packet of an unknown SSRC by its ``mid`` header extension
    when aiortc's own rule (the SSRC table, else the one receiver of its payload type) finds no receiver
    (idempotent, per transport).

    A browser's simulcast layers (and their RTX streams) have no ``a=ssrc`` lines; with a camera and an evidence
    video on one connection, both receivers have the same payload types and aiortc would drop every layer.
    """
    transport = transceiver.receiver.transport
    router = transport._rtp_router
    if getattr(router, _ROUTED_BY_MID, False):
        return
    original = router.route_rtp

    def route_rtp(packet: RtpPacket) -> Any:
        receiver = original(packet)
        if receiver is None and packet.ssrc not in router.ssrc_table:
            mid = packet.extensions.mid
            candidate = router.mid_table.get(mid) if mid is not None else None
            if candidate is not None and candidate in router.payload_type_table.get(packet.payload_type, ()):
                router.ssrc_table[packet.ssrc] = candidate  # RTCP (sender reports) about it is routed too
                receiver = candidate
        return receiver

    router.route_rtp = route_rtp  # type: ignore[method-assign]
    setattr(router, _ROUTED_BY_MID, True)


class PerSsrcNacks:
    """Stands in for a receiver's ``NackGenerator``: one generator per SSRC, so the interleaved sequence numbers of
    several simulcast layers are not taken for loss. aiortc reads ``missing`` right after an ``add`` that said
    something is missing, for that packet's SSRC."""

    __slots__ = ("_by_ssrc", "missing")

    def __init__(self) -> None:
        self._by_ssrc: dict[int, Any] = {}
        self.missing: set[int] = set()

    def add(self, packet: RtpPacket) -> bool:
        """What aiortc's receiver calls per media packet (after RTX unwrap)."""
        from aiortc.rtcrtpreceiver import NackGenerator

        generator = self._by_ssrc.get(packet.ssrc)
        if generator is None:
            if len(self._by_ssrc) >= 16:
                self._by_ssrc.clear()  # SSRCs come and go (a layer restarted): never grow without bound
            generator = self._by_ssrc[packet.ssrc] = NackGenerator()
        missed = bool(generator.add(packet))
        self.missing = generator.missing
        return missed


def receive_layers(receiver: RTCRtpReceiver, rids: Sequence[str]) -> dict[int, str]:
    """Make one receiver take a browser's simulcast layers ``rids``; return the table of SSRC -> rid it learns.

    - NACKs are generated per SSRC (:class:`PerSsrcNacks`).
    - Each layer's RTX stream is unwrapped: aiortc knows RTX SSRCs only from ``a=ssrc-group:FID``, which
      rid-based simulcast has not; the ``repaired-rtp-stream-id`` of an RTX packet names the layer it repairs.
    """
    name = "_RTCRtpReceiver__nack_generator"
    if getattr(receiver, name, None) is not None:
        setattr(receiver, name, PerSsrcNacks())
    rtx_table: dict[int, int] = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
    wanted = set(rids)
    rid_of: dict[int, str] = {}
    ssrc_of: dict[str, int] = {}
    original = receiver._handle_rtp_packet

    async def handle_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
        extensions = packet.extensions
        rid = extensions.rtp_stream_id
        if rid is not None and rid in wanted and rid_of.get(packet.ssrc) != rid:
            old = ssrc_of.get(rid)
            if old is not None:
                rid_of.pop(old, None)
            rid_of[packet.ssrc] = rid
            ssrc_of[rid] = packet.ssrc
        repaired = extensions.repaired_rtp_stream_id
        if repaired is not None and packet.ssrc not in rtx_table:
            media_ssrc = ssrc_of.get(repaired)
            if media_ssrc is not None:
                rtx_table[packet.ssrc] = media_ssrc
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp  # type: ignore[method-assign]
    return rid_of


def simulcast_self_check() -> None:
    """Raise :class:`AiortcMismatch` unless the internals the simulcast functions above use exist as expected."""
    from aiortc.rtcdtlstransport import RtpRouter
    from aiortc.rtcrtpreceiver import NackGenerator

    for cls, label, attributes in (
        (RTCRtpReceiver, "RTCRtpReceiver", ("_RTCRtpReceiver__nack_generator", "_RTCRtpReceiver__rtx_ssrc")),
        (RTCDtlsTransport, "RTCDtlsTransport", ("_rtp_router", "_rtp_header_extensions_map")),
        (RtpRouter, "RtpRouter", ("mid_table", "ssrc_table", "payload_type_table")),
        (NackGenerator, "NackGenerator", ("missing",)),
    ):
        used = _names_used(cls)
        for attribute in attributes:
            if attribute not in used:
                raise _mismatch(f"{label}.{attribute}")
    for cls, label, method, parameters in (
        (RtpRouter, "RtpRouter", "route_rtp", ("self", "packet")),
        (RTCRtpReceiver, "RTCRtpReceiver", "_handle_rtp_packet", ("self", "packet", "arrival_time_ms")),
        (NackGenerator, "NackGenerator", "add", ("self", "packet")),
    ):
        value = getattr(cls, method, None)
        if not callable(value) or tuple(inspect.signature(value).parameters)[: len(parameters)] != parameters:
            raise _mismatch(f"{label}.{method}({', '.join(parameters)})")
    if not {"rtp_stream_id", "repaired_rtp_stream_id", "mid"} <= set(vars(HeaderExtensions())):
        raise _mismatch("aiortc.rtp.HeaderExtensions.rtp_stream_id")


# --- receive path (part recv) ----------------------------------------------------------------------------------------

_NTP_UNIX_MS = 2_208_988_800_000
"""Milliseconds from the NTP epoch to the Unix epoch: aiortc's ``clock.current_ms`` counts from 1900."""

_INTAKE = "_courtlink_rtp_intake"
_UNKNOWN: Any = object()
_OWN_HANDLER = "_handle_rtp_packet"


_HANDLER_SHA256 = "4e54983d021a6336d80c29490f82f9a6dd531c0d3179b2daed818120c5ece238"
"""The source of aiortc 1.16's ``RTCRtpReceiver._handle_rtp_packet``, which :func:`lean_rtp_handler` copies."""


def _lean_matches() -> bool:
    """Whether the installed aiortc's receiver handler is the one :func:`lean_rtp_handler` copies (else it runs)."""
    return _source_sha256(RTCRtpReceiver._handle_rtp_packet) == _HANDLER_SHA256


def _noop() -> None:
    pass


_clock: list[Any] = [-1.0, None]


def clock_now() -> Any:
    """What aiortc's ``clock.current_datetime`` returns (the receiver's active-source times, which only
    ``getSynchronizationSources`` reads, to within 10 s), taken anew at most every 250 ms: ``datetime.now`` per
    packet was 3% of a publisher's cost."""
    now = time.monotonic()
    if now - _clock[0] >= 0.25:
        _clock[0] = now
        _clock[1] = datetime.datetime.now(datetime.UTC)
    return _clock[1]


def native_unprotect(session: Any) -> tuple[int, int, int] | None:
    """For ``media._fastpath.recv_rtp``: the libsrtp session behind a pylibsrtp ``Session``, the address of libsrtp's
    ``srtp_unprotect`` and the longest datagram the session's buffer takes; None for anything else."""
    try:
        from pylibsrtp import Session
        from pylibsrtp._binding import ffi, lib

        if not isinstance(session, Session):
            return None
        srtp, cdata = session._srtp, session._cdata
        function = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect")))
        context = int(ffi.cast("uintptr_t", srtp[0]))
    except (ImportError, AttributeError, TypeError):
        return None
    return context, function, len(cdata)


def native_unprotect_rtcp() -> int | None:
    """For ``media._fastpath.recv_rtcp``: the address of libsrtp's ``srtp_unprotect_rtcp``; None without pylibsrtp's
    binding."""
    try:
        from pylibsrtp._binding import ffi, lib

        return int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect_rtcp")))
    except (ImportError, AttributeError, TypeError):
        return None


def dtls_transports(pc: RTCPeerConnection) -> list[Any]:
    """The distinct DTLS transports carrying ``pc``'s media (one with BUNDLE)."""
    found: list[Any] = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None and all(dtls is not d for d in found):
            found.append(dtls)
    return found


DRAIN_BUDGET = 64
"""Datagrams one socket's read handler takes at most in one turn of the event loop (then the loop's other work)."""


def drain_reads(protocol: Any, budget: int = DRAIN_BUDGET) -> bool:
    """Make the asyncio datagram transport of ``protocol`` read every queued datagram (up to ``budget``) each time its
    socket is readable, not one; True if it now does.

    asyncio's selector datagram transport reads one datagram per readiness, so one socket takes at most one datagram
    per turn of the event loop: at 5 ms a turn that is 200 a second, fewer than one 2.5 Mbit/s camera sends, and the
    rest overflow the socket's buffer in the kernel. Under a burst the socket whose turn comes first in the loop's
    ready list gets every freed place and the others none: whole streams starved for seconds at a time (seen in the
    twelve-person scale test, where twelve clients read in one process). libuv (mediasoup, Janus) reads up to 32
    datagrams per readiness; this reads up to ``budget``. Errors are handled as asyncio's own handler handles them.
    Nothing (False) where the transport is not asyncio's selector datagram transport.
    """
    transport = getattr(protocol, "transport", None)
    loop = getattr(transport, "_loop", None)
    sock = getattr(transport, "_sock", None)
    fd = getattr(transport, "_sock_fd", None)
    add = getattr(loop, "_add_reader", None)
    if (
        transport is None
        or sock is None
        or not isinstance(fd, int)
        or add is None
        or getattr(transport, "_drained", False)
        or transport.is_closing()
        or not hasattr(transport, "_read_ready")
        or not hasattr(transport, "_conn_lost")
    ):
        return False
    recvfrom = sock.recvfrom
    max_size = int(transport.max_size)

    def read_ready() -> None:
        for _ in range(budget):
            if transport._conn_lost:
                return
            try:
                data, addr = recvfrom(max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                transport._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                transport._fatal_error(exc, "Fatal read error on datagram transport")
                return
            transport._protocol.datagram_received(data, addr)

    add(fd, read_ready)
    transport._drained = True
    return True


class RtpIntake:
    """Takes the SRTP and SRTCP datagrams of one DTLS transport as its ICE connection receives them, before aiortc
    queues them.

    aiortc's path for one RTP packet: aioice tries to parse the datagram as STUN and queues it, the DTLS transport's
    task wakes, reads it, unprotects it (pylibsrtp), parses it (``RtpPacket.parse``), routes it, and awaits the
    receiver's ``_handle_rtp_packet``. Here the datagram is unprotected and parsed by one C call (``recv`` is
    ``media._fastpath.recv_rtp``), routed by the transport's own router (with the node's mid routing), and the
    receiver's handler runs at once: as :func:`lean_rtp_handler` (a plain function) where the receiver has aiortc's
    own, else its coroutine through ``drive`` (to its end, or as a task if it ever waits; what arrives meanwhile waits
    its turn). An SRTCP datagram is unprotected by ``recv_rtcp`` (``media._fastpath.recv_rtcp``), parsed by aiortc
    and handed to each recipient's ``_handle_rtcp_packet`` the same way. The receivers' statistics, receiver
    reports, NACK, RTX, REMB, PLI, the jitter buffer (the node's tap), and the senders' handling of feedback are
    unchanged. What is not SRTP/SRTCP (STUN, DTLS), arrives before the transport is connected, or does not fit the
    session's buffer, goes aiortc's way, as before.
    """

    __slots__ = (
        "_backlog",
        "_connection",
        "_depayload",
        "_drive",
        "_dtls",
        "_handlers",
        "_hooked",
        "_ids",
        "_native",
        "_on_error",
        "_original",
        "_recv",
        "_recv_rtcp",
        "_router",
        "_rtcp_function",
        "_seen",
        "_session",
        "dropped",
        "packets",
        "rtcp",
        "waits",
    )

    def __init__(
        self,
        dtls: Any,
        recv: Callable[..., Any],
        drive: Callable[[Any, Callable[[], None]], bool],
        vp8_depayload: Callable[[bytes], Any] | None = None,
        on_error: Callable[[], None] = _noop,
        recv_rtcp: Callable[..., Any] | None = None,
    ) -> None:
        self._dtls = dtls
        self._rtcp_function = native_unprotect_rtcp() if recv_rtcp is not None else None
        self._recv_rtcp = recv_rtcp if self._rtcp_function is not None else None
        self._on_error = on_error
        """Called (inside the ``except``) when a receiver's handler raised: aiortc would have ended the transport."""
        self._recv = recv
        self._drive = drive
        self._depayload = vp8_depayload
        self._handlers: dict[Any, Callable[[RtpPacket, int], None] | None] = {}
        """A receiver's handler as a plain function (:func:`lean_rtp_handler`), None: its own coroutine."""
        self._router = dtls._rtp_router
        self._ids = dtls._rtp_header_extensions_map._HeaderExtensionsMap__ids
        self._native: tuple[int, int, int] | None = None
        self._session: Any = None
        self._backlog: list[Callable[[], Any]] | None = None
        """While a handler that waited has not finished: what arrived since, in order (each makes a handler's
        coroutine, or runs a plain one and returns None)."""
        self.packets = 0
        """RTP packets taken on this path."""
        self.rtcp = 0
        """SRTCP datagrams taken on this path."""
        self.waits = 0
        """Handlers that could not finish at once (what arrived meanwhile waited for them)."""
        self.dropped = 0
        """Datagrams dropped as aiortc drops them: SRTP refused them, or they are not valid RTP."""
        connection = dtls.transport._connection
        self._connection = connection
        self._hooked: list[Any] = []
        self._seen = 0
        self._original: Callable[[bytes, int], None] = connection.data_received
        connection.data_received = self.data_received

    def data_received(self, data: bytes, component: int) -> None:
        """aioice's ``Connection.data_received``: every datagram that is not STUN, on every pair."""
        if self._seen != len(self._connection._protocols):
            self._hook_protocols()
        if len(data) >= 12 and 127 < data[0] < 192:
            dtls = self._dtls
            native = self._native
            if dtls._rx_srtp is not self._session or native is None:
                native = self._bind()
            if native is not None and dtls._state is State.CONNECTED:
                if 192 <= data[1] <= 208:
                    if self._recv_rtcp is not None and self._take_rtcp(data, native):
                        return
                    self._original(data, component)
                    return
                arrival_ms = int(time.time() * 1000) + _NTP_UNIX_MS
                packet = self._recv(data, native[0], native[1], native[2], self._ids, RtpPacket, HeaderExtensions)
                if packet.__class__ is int:
                    if packet:
                        self.dropped += 1
                        return
                else:
                    dtls._RTCDtlsTransport__rx_bytes += len(data)
                    dtls._RTCDtlsTransport__rx_packets += 1
                    self.packets += 1
                    receiver = self._router.route_rtp(packet)
                    if receiver is not None:
                        handler = self._handlers.get(receiver, _UNKNOWN)
                        if handler is _UNKNOWN:
                            handler = self._handler(receiver)
                        if (
                            handler is not None
                            and self._backlog is None
                            and "_handle_rtp_packet" not in receiver.__dict__
                        ):
                            try:
                                handler(packet, arrival_ms)
                            except Exception:
                                self._on_error()
                        else:
                            self._run(lambda: receiver._handle_rtp_packet(packet, arrival_ms))
                    return
        self._original(data, component)

    def _hook_protocols(self) -> None:
        """Make each socket of the connection hand an SRTP datagram straight to :meth:`data_received`: aioice first
        tries to parse every datagram as STUN (an RTP packet starts with 10 in its top bits, STUN with 00)."""
        self._seen = len(self._connection._protocols)
        for protocol in self._connection._protocols:
            if all(protocol is not p for p in self._hooked):
                self._hooked.append(protocol)
                original = protocol.datagram_received
                candidate = getattr(protocol, "local_candidate", None)
                component = int(candidate.component) if candidate is not None else 1

                def datagram_received(
                    data: bytes, addr: Any, _original: Any = original, _component: int = component
                ) -> None:
                    if len(data) >= 12 and 127 < data[0] < 192:
                        self.data_received(data, _component)
                    else:
                        _original(data, addr)

                protocol.datagram_received = datagram_received
                drain_reads(protocol)

    def _handler(self, receiver: Any) -> Callable[[RtpPacket, int], None] | None:
        depayload = self._depayload
        try:
            handler = lean_rtp_handler(receiver, self._drive, depayload) if depayload is not None else None
        except (ImportError, AttributeError):  # another aiortc: its own handler runs
            handler = None
        self._handlers[receiver] = handler
        return handler

    def _take_rtcp(self, data: bytes, native: tuple[int, int, int]) -> bool:
        """An SRTCP datagram, as aiortc's ``_handle_rtcp_data`` takes it: each packet of the compound to each of its
        recipients (the router's rule), in order; False: too long for the native call (aiortc's path takes it)."""
        assert self._recv_rtcp is not None
        plain = self._recv_rtcp(data, native[0], self._rtcp_function, native[2])
        if plain.__class__ is int:
            if plain:
                self.dropped += 1
                return True
            return False
        dtls = self._dtls
        dtls._RTCDtlsTransport__rx_bytes += len(data)
        dtls._RTCDtlsTransport__rx_packets += 1
        try:
            packets = RtcpPacket.parse(plain)
        except ValueError:
            self.dropped += 1
            return True
        self.rtcp += 1
        for packet in packets:
            for recipient in self._router.route_rtcp(packet):
                self._run(functools.partial(recipient._handle_rtcp_packet, packet))
        return True

    def _run(self, make: Callable[[], Any]) -> None:
        """Run a handler now, or after the one that waits (in arrival order)."""
        if self._backlog is not None:
            self._backlog.append(make)
            return
        coroutine = make()
        if coroutine is not None and not self._drive(coroutine, self._waited):
            self._backlog = []
            self.waits += 1

    def _waited(self) -> None:
        """The handler that waited has finished: handle, in order, what arrived meanwhile."""
        backlog, self._backlog = self._backlog or [], None
        for index, make in enumerate(backlog):
            coroutine = make()
            if coroutine is not None and not self._drive(coroutine, self._waited):
                self._backlog = backlog[index + 1 :] + (self._backlog or [])
                return

    def _bind(self) -> tuple[int, int, int] | None:
        session = self._dtls._rx_srtp
        self._session = session
        self._native = native_unprotect(session) if session is not None else None
        return self._native


def lean_rtp_handler(
    receiver: RTCRtpReceiver, drive: Callable[[Any, Callable[[], None]], bool], vp8_depayload: Callable[[bytes], Any]
) -> Callable[[RtpPacket, int], None] | None:
    """``RTCRtpReceiver._handle_rtp_packet`` of aiortc 1.16 as a plain function (no coroutine per packet), step for
    step: the REMB estimator (and the REMB it asks for; aiortc's own becomes the native one,
    :func:`adopt_native_estimator`), the active-source time, the per-SSRC statistics that feed the
    receiver reports, RTX unwrapping, NACK, depayloading (VP8 by ``vp8_depayload``, a C function that returns what
    aiortc's returns, None where aiortc's raises), the jitter buffer and the PLI it or a decoder error asks for; each
    RTCP packet is sent through the receiver's own ``_send_rtcp*`` coroutines, run by ``drive``. The estimator, NACK
    generator and jitter buffer are read per packet: the node replaces them (``RembLimiter``, ``PerSsrcNacks``,
    ``ReleaseOnMarker``).

    None where the receiver's handler was replaced on the instance (simulcast's :func:`receive_layers`): the caller
    then runs that one.
    """
    from aiortc.codecs import depayload
    from aiortc.rtcrtpreceiver import StreamStatistics
    from aiortc.rtp import RtcpPsfbPacket, pack_remb_fci, unwrap_rtx

    if "_handle_rtp_packet" in vars(receiver) or not _lean_matches():
        return None
    adopt_native_estimator(receiver)
    r: Any = receiver
    codecs: dict[int, Any] = r._RTCRtpReceiver__codecs
    active: dict[int, Any] = r._RTCRtpReceiver__active_ssrc
    streams: dict[int, Any] = r._RTCRtpReceiver__remote_streams
    rtx_ssrc: dict[int, int] = r._RTCRtpReceiver__rtx_ssrc
    decoder_error = r._RTCRtpReceiver__decoder_error
    decoder_queue = r._RTCRtpReceiver__decoder_queue
    mapper = r._RTCRtpReceiver__timestamp_mapper
    video = r._RTCRtpReceiver__kind == "video"
    now = clock_now
    sent = drive
    noop = _noop
    names: dict[int, tuple[Any, str, bool]] = {}
    """Per payload type: the codec it was last seen with, its name, and whether it is RTX (``codec.name`` splits the
    MIME type on every read)."""

    def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        if not r._enabled:
            return
        estimator = r._RTCRtpReceiver__remote_bitrate_estimator
        if estimator is not None:
            abs_send_time = packet.extensions.abs_send_time
            if abs_send_time is not None:
                # Positional, in the order self_check verifies (aiortc's own handler passes keywords: matching
                # them by name cost the C estimator a third of its call).
                size = len(packet.payload) + packet.padding_size
                remb = estimator.add(arrival_time_ms, abs_send_time, size, packet.ssrc)
                rtcp_ssrc = r._RTCRtpReceiver__rtcp_ssrc
                if rtcp_ssrc is not None and remb is not None:
                    rtcp = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb))
                    sent(r._send_rtcp(rtcp), noop)
        ssrc = packet.ssrc
        active[ssrc] = now()
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = streams.get(ssrc)
        if stream is None:
            stream = streams[ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        entry = names.get(packet.payload_type)
        if entry is None or entry[0] is not codec:
            entry = names[packet.payload_type] = (codec, codec.name, codec.name.lower() == "rtx")
        name = entry[1]
        if entry[2]:
            original_ssrc = rtx_ssrc.get(ssrc)
            if original_ssrc is None:
                return
            apt = codec.parameters.get("apt")
            if len(packet.payload) < 2 or not isinstance(apt, int) or apt not in codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
            codec = codecs[apt]
            name = codec.name
        nacks = r._RTCRtpReceiver__nack_generator
        if nacks is not None and nacks.add(packet):
            sent(r._send_rtcp_nack(packet.ssrc, sorted(nacks.missing)), noop)
        payload = packet.payload
        if not payload:
            packet._data = b""  # type: ignore[attr-defined]
        elif name == "VP8":
            data = vp8_depayload(payload)
            if data is None:
                return
            packet._data = data  # type: ignore[attr-defined]
        else:
            try:
                packet._data = depayload(codec, payload)  # type: ignore[attr-defined]
            except ValueError:
                return
        pli_flag, encoded_frame = r._RTCRtpReceiver__jitter_buffer.add(packet)
        if decoder_error.is_set():
            decoder_error.clear()
            if video:
                pli_flag = True
        if pli_flag:
            sent(r._send_rtcp_pli(packet.ssrc), noop)
        if encoded_frame is not None and r._RTCRtpReceiver__decoder_thread:
            encoded_frame.timestamp = mapper.map(encoded_frame.timestamp)
            decoder_queue.put((codec, encoded_frame))

    return handle


def install_rtp_intake(
    dtls: Any,
    recv: Callable[..., Any],
    drive: Callable[[Any, Callable[[], None]], bool],
    vp8_depayload: Callable[[bytes], Any] | None = None,
    on_error: Callable[[], None] = _noop,
    recv_rtcp: Callable[..., Any] | None = None,
) -> RtpIntake:
    """Give one DTLS transport an :class:`RtpIntake` (idempotent); with ``vp8_depayload``, receivers whose handler is
    aiortc's own run it as :func:`lean_rtp_handler`."""
    existing: RtpIntake | None = getattr(dtls, _INTAKE, None)
    if existing is not None:
        return existing
    intake = RtpIntake(dtls, recv, drive, vp8_depayload, on_error, recv_rtcp)
    setattr(dtls, _INTAKE, intake)
    return intake


def rtp_intake(dtls: Any) -> RtpIntake | None:
    """The :class:`RtpIntake` of a DTLS transport, if it has one."""
    intake: RtpIntake | None = getattr(dtls, _INTAKE, None)
    return intake


def receive_self_check() -> str | None:
    """Why :class:`RtpIntake` cannot stand in for aiortc's receive loop with the installed aiortc/aioice (None: it can).

    The C parser sets exactly the attributes ``RtpPacket.__init__`` and ``HeaderExtensions`` have; a version with
    others (or other internals) keeps aiortc's own path.
    """
    from aiortc.rtp import HeaderExtensionsMap

    expected_packet = (
        "version",
        "marker",
        "payload_type",
        "sequence_number",
        "timestamp",
        "ssrc",
        "csrc",
        "extensions",
        "payload",
        "padding_size",
    )
    if tuple(vars(RtpPacket())) != expected_packet:
        return "RtpPacket attributes"
    expected_extensions = (
        "abs_send_time",
        "audio_level",
        "mid",
        "repaired_rtp_stream_id",
        "rtp_stream_id",
        "transmission_offset",
        "transport_sequence_number",
    )
    if tuple(vars(HeaderExtensions())) != expected_extensions:
        return "HeaderExtensions fields"
    if not isinstance(getattr(HeaderExtensionsMap(), "_HeaderExtensionsMap__ids", None), HeaderExtensions):
        return "HeaderExtensionsMap ids"
    used = _names_used(RTCDtlsTransport)
    for name in ("_rx_srtp", "_rtp_router", "_rtp_header_extensions_map", "_RTCDtlsTransport__rx_bytes"):
        if name not in used:
            return f"RTCDtlsTransport.{name}"
    value = getattr(IceConnection, "data_received", None)
    if not callable(value) or tuple(inspect.signature(value).parameters)[:3] != ("self", "data", "component"):
        return "aioice Connection.data_received"
    if not callable(getattr(RTCRtpReceiver, "_handle_rtp_packet", None)):
        return "RTCRtpReceiver._handle_rtp_packet"
    return None
