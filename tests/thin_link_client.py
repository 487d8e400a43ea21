"""The people of a thin-link hearing, as child processes run inside network namespaces (``tests/thin_link.py``).

``python -m tests.thin_link_client court --url U --address A`` books a trial with ``tests.ws_fixtures``' admin
key (judge, prosecutor, counsel, witness, defendant), joins the four court-side people, each publishing camera and
microphone with a real aiortc encoder (:class:`NoisyCodeTrack`: the painted code of ``tests.media_clients`` under
noise, so VP8 spends its whole bitrate, following the REMB the node sends), seats them, prints one
``{"event": "ready", ...}`` line with the defendant's join token, and admits the defendant when they reach the
lobby. Counsel and the witness run in a second process it starts (``seat``, :data:`SEATED`), whose tallies it
prints with its own. Their reception is counted without decoding (frames reassembled by ``media.passthrough``'s
tap): two cores cannot decode sixteen streams beside the node.

``python -m tests.thin_link_client defendant --url U --token T --address A`` joins with the token, waits to be
admitted, publishes a smaller camera and a microphone, and decodes the video it receives as a browser would (see
:meth:`ThinClient._tapped`: give up on a frame a resend does not complete in time, ask for a keyframe, decode
from it), reading each frame's
code (tag, frame number and a CRC-8 of them): a frame is *good* when its code checks, names a publisher and is a
newer frame than the last good one of that publisher (but not newer than it can have made by now); else *garbled*.

Both then print one JSON line a second: for each person, the video encoder's target bitrate and the keyframe
requests their senders got, and cumulative counts per publisher role and kind (see :meth:`ThinClient.tally`):
audio packets received (unique) and the span of sequence numbers sent, decoded audio frames, good and garbled
video frames, the time of the last good frame and every stall over :data:`STALL` seconds (start, end), the
longest so far; and what the receiver's RTCP said: NACK packets and the sequence numbers they asked for, PLIs,
the last and lowest REMB (bit/s) since the previous line; and retransmitted (RTX) packets received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import gc
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiortc.codecs.vpx
import numpy as np
from aiortc import RTCRtpReceiver
from aiortc.codecs.vpx import Vp8Decoder
from aiortc.rtp import RtcpPsfbPacket, RtcpRtpfbPacket, unpack_remb_fci
from av import VideoFrame

import tests.media_clients
from media.aiortc_compat import receiver_codec_name
from media.passthrough import ReceiverTap, TappedFrame, tap_receiver
from tests.e2e.test_recording_e2e import remote_court
from tests.media_clients import CodeVideoTrack, MediaClient, audio_nack_mids, nack_lost_audio, paint_code, read_code
from tests.ws_fixtures import Court, Participant

COURT_SIDE = ("judge", "prosecutor", "counsel", "witness")
"""The four publishers beside the node, in the order of their painted tags (1-4); the defendant is tag 5."""
ROLES = (*COURT_SIDE, "defendant")
TAGS = {role: i + 1 for i, role in enumerate(ROLES)}
STALL = 0.2
"""A pause between two good frames of one publisher longer than this (s) is listed as a stall (15 fps: 67 ms)."""
NOISE = 20
"""Noise amplitude over the painted code: enough that the encoder fills its bitrate, little enough to read codes."""
NOISE_FRAMES = 7

AUDIO_PLAYOUT = 0.08
"""Seconds after a lost audio packet's gap shows (the next packet arrives) within which its resend still plays: a
browser's audio jitter buffer holds a few packets (Chromium's NetEq targets some 40-100 ms on a steady link). A
resend later than this is counted ``late``, as lost: the audio was concealed by then."""

# RTCP feedback formats (RFC 4585, RFC 5104, draft-alvestrand-rmcat-remb).
_NACK, _PLI, _REMB = 1, 1, 15


COUNTER_BITS = 13
"""Frame numbers are painted modulo 2**13 (9 minutes at 15 fps), beside a 3-bit tag and an 8-bit check."""
COUNTER_MOD = 1 << COUNTER_BITS


def _crc8(value: int) -> int:
    """CRC-8 (polynomial 0x07) of a 16-bit value."""
    crc = 0
    for byte in (value >> 8, value & 0xFF):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def paint_checked(width: int, height: int, tag: int, counter: int) -> np.ndarray:
    """:func:`paint_code` of (tag, frame number) with a check, so a damaged picture does not read as a frame."""
    value = (tag & 0x7) << COUNTER_BITS | counter % COUNTER_MOD
    return paint_code(width, height, value >> 8, (value & 0xFF) << 8 | _crc8(value))


def read_checked(frame: VideoFrame) -> tuple[int, int] | None:
    """(tag, frame number modulo :data:`COUNTER_MOD`) painted by :func:`paint_checked`; None if it does not check."""
    high, low = read_code(frame)
    value = high << 8 | low >> 8
    if _crc8(value) != low & 0xFF:
        return None
    return value >> COUNTER_BITS, value % COUNTER_MOD


class NoisyCodeTrack(CodeVideoTrack):
    """A camera for an encoder: each frame paints its publisher tag and frame number, under fresh-looking noise."""

    def __init__(self, tag: int, width: int, height: int, fps: float) -> None:
        super().__init__(tag, width, height)
        self.fps = fps
        rng = np.random.default_rng(tag)
        self._noise = [
            rng.integers(-NOISE, NOISE + 1, size=(height * 3 // 2, width), dtype=np.int16) for _ in range(NOISE_FRAMES)
        ]
        self._next = 0.0
        self._epoch = time.time()

    async def recv(self) -> VideoFrame:
        """The next frame at ``fps``, RTP time from the wall clock (as a browser's camera stamps its frames)."""
        now = time.time()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(self._next + 1 / self.fps, time.time() - 0.2)
        buf = paint_checked(self.width, self.height, self.tag, self.counter).astype(np.int16)
        buf += self._noise[self.counter % NOISE_FRAMES]
        frame = VideoFrame.from_ndarray(np.clip(buf, 0, 255).astype(np.uint8), format="yuv420p")
        frame.pts = round((time.time() - self._epoch) * 90_000)
        frame.time_base = fractions.Fraction(1, 90_000)
        self.counter += 1
        return frame


@dataclass
class Flow:
    """What one receiver got of one publisher's audio or video so far."""

    packets: int = 0
    """RTP packets received (unique, RTX excluded)."""
    first_seq: int | None = None
    last_seq: int = 0
    """Extended (unwrapped) sequence numbers of the first and highest packet: the span sent."""
    seen: set[int] = field(default_factory=set)
    frames: int = 0
    """Audio: decoded (or reassembled) frames. Video: good frames."""
    garbled: int = 0
    held: int = 0
    """Frames not decoded while waiting for a keyframe after a loss."""
    last_code: int = -1
    last_frame: float = 0.0
    stalls: list[tuple[float, float]] = field(default_factory=list)
    longest: float = 0.0
    rtx: int = 0
    """Packets received as RTX (retransmissions in their own stream)."""
    filled: int = 0
    """Packets that arrived after a later one (on a link that never reorders: resent in the stream itself)."""
    dup: int = 0
    """Packets that arrived twice."""
    audio: bool = False
    """Time the gaps (audio: a resend counts only within :data:`AUDIO_PLAYOUT`)."""
    gaps: dict[int, float] = field(default_factory=dict)
    """Audio: when each missing (extended) sequence number's gap showed."""
    late: int = 0
    """Audio packets that arrived to fill a gap later than :data:`AUDIO_PLAYOUT`: counted in ``packets``, not kept."""
    nack_packets: int = 0
    nack_seqs: int = 0
    pli: int = 0
    remb: int | None = None
    remb_low: int | None = None

    def rtp(self, seq: int, now: float = 0.0) -> None:
        """Count one received media packet (its 16-bit sequence number) arriving at ``now`` (monotonic seconds)."""
        if self.first_seq is None:
            self.first_seq = self.last_seq = seq
        else:
            ext = self.last_seq + ((seq - self.last_seq + 0x8000) & 0xFFFF) - 0x8000
            if ext in self.seen:
                self.dup += 1
                return
            if ext < self.last_seq:
                self.filled += 1
                shown = self.gaps.pop(ext, None)
                if shown is not None and now - shown > AUDIO_PLAYOUT:
                    self.late += 1
            elif self.audio:
                if len(self.gaps) > 256:  # forget gaps a second old and more (never filled: lost)
                    self.gaps = {k: t for k, t in self.gaps.items() if now - t < 1.0}
                for missing in range(self.last_seq + 1, min(ext, self.last_seq + 64)):
                    self.gaps[missing] = now
            self.last_seq = max(self.last_seq, ext)
            seq = ext
        self.seen.add(seq)
        self.packets += 1

    def frame(self, now: float) -> None:
        """Count one good frame arriving at ``now``."""
        if self.last_frame:
            gap = now - self.last_frame
            self.longest = max(self.longest, gap)
            if gap > STALL:
                self.stalls.append((round(self.last_frame, 3), round(now, 3)))
        self.last_frame = now
        self.frames += 1

    def report(self) -> dict[str, Any]:
        """The cumulative counts; stalls and the lowest REMB since the previous report (then forgotten)."""
        out: dict[str, Any] = {"packets": self.packets, "frames": self.frames}
        out["span"] = 0 if self.first_seq is None else self.last_seq - self.first_seq + 1
        if self.garbled:
            out["garbled"] = self.garbled
        if self.held:
            out["held"] = self.held
        if self.last_frame:
            out["last"] = round(self.last_frame, 3)
            out["longest"] = round(self.longest, 3)
        if self.stalls:
            out["stalls"], self.stalls = self.stalls, []
        for name in ("rtx", "filled", "late", "dup", "nack_packets", "nack_seqs", "pli"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.remb is not None:
            out["remb"], out["remb_low"], self.remb_low = self.remb, self.remb_low, None
        return out


class ThinClient(MediaClient):
    """One person of the hearing: publishes a :class:`NoisyCodeTrack` and a tone, counts what arrives per mid.

    ``decode``: decode received video and read codes (the defendant); else count reassembled frames only.
    """

    def __init__(self, name: str, *, size: tuple[int, int], fps: float, decode: bool) -> None:
        self._size, self._fps, self._decode = size, fps, decode
        self.flows: dict[str, Flow] = {}
        """By mid."""
        self.by_tag: dict[int, Flow] = {}
        """Decoded video by painted tag (the defendant's)."""
        self._watched: set[int] = set()
        super().__init__(name, tag=TAGS[name], decode_video=decode, count_only=not decode)

    def _setup(self) -> None:
        if self.video is not None and not isinstance(self.video, NoisyCodeTrack):
            self.video = NoisyCodeTrack(TAGS[self.name], *self._size, self._fps)
        super()._setup()

    def _flow(self, mid: str) -> Flow:
        return self.flows.setdefault(mid, Flow())

    def _count_rtp(self) -> None:
        # Instead of MediaClient's counting: per-mid RTP, RTX and RTCP feedback, and every receiver tapped.
        remote = self.pc.remoteDescription
        nacked = audio_nack_mids(remote.sdp) if remote is not None else set()
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if id(receiver) in self._watched or transceiver.mid is None:
                continue
            self._watched.add(id(receiver))
            mid, kind = str(transceiver.mid), transceiver.kind
            flow = self._flow(mid)
            flow.audio = kind == "audio"
            if flow.audio and mid in nacked:
                nack_lost_audio(receiver)
            _route_rtx(receiver)
            # on_picture_lost None: the tap's buffer makes aiortc send its own PLI when it gives up on a frame.
            tap = ReceiverTap(on_frame=self._tapped(flow, kind), on_packet=_nothing, on_sender_report=_nothing,
                              on_bye=_nothing2, on_picture_lost=None)  # fmt: skip
            tap_receiver(receiver, kind, tap)
            _watch_receiver(receiver, flow)

    def _tapped(self, flow: Flow, kind: str) -> Callable[[TappedFrame], None]:
        """What a receiver's reassembled frames go to: counted, and (``decode``) video decoded as a browser does.

        The tap's buffer (``media.passthrough.ReleaseOnMarker``) behaves as a browser's jitter buffer: a frame
        missing a packet waits for its resend until a frame 200 ms newer arrives, then is given up (a PLI goes to
        the node) and the frames after it carry ``resync``; a decoder then waits for a keyframe instead of decoding
        pictures whose reference is gone. (aiortc's own buffer blocks behind a hole until 512 packets pile up,
        seconds, even when a keyframe arrived meanwhile; no browser does that.)
        """
        decoder = Vp8Decoder() if self._decode and kind == "video" else None
        waiting = [True]

        def on_frame(frame: TappedFrame) -> None:
            if kind != "video":
                flow.frames += 1
                return
            if decoder is None:
                flow.frame(time.time())
                return
            keyframe = bool(frame.data) and not frame.data[0] & 1
            if frame.resync:
                waiting[0] = True
            if waiting[0] and not keyframe:
                flow.held += 1
                return
            waiting[0] = False
            try:
                pictures = decoder.decode(frame)
            except Exception:  # a broken frame: wait for the next keyframe
                waiting[0] = True
                flow.garbled += 1
                return
            for picture in pictures:
                if isinstance(picture, VideoFrame):
                    self._decoded(flow, picture)

        return on_frame

    def _decoded(self, flow: Flow, frame: VideoFrame) -> None:
        # Good: the code checks, names a publisher, and is a newer frame that publisher can have made by now (a
        # misread that passed the check must not move the expected frame number ahead).
        code = read_checked(frame)
        known = self.by_tag.get(code[0]) if code is not None else None
        if code is not None and known is None and code[0] in TAGS.values():
            known = self.by_tag[code[0]] = Flow()
        if code is None or known is None:
            flow.garbled += 1
            return
        now = time.time()
        if known.last_code >= 0:
            ahead = (code[1] - known.last_code) % COUNTER_MOD
            if not 0 < ahead <= 5 + (now - known.last_frame) * self._fps * 1.5:
                flow.garbled += 1
                return
        known.last_code = code[1]
        known.frame(now)

    def target_kbps(self) -> int | None:
        """The bitrate this client's video encoder aims at now (it follows the node's REMB), kbit/s."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.sender.track is self.video:
                encoder = getattr(transceiver.sender, "_RTCRtpSender__encoder", None)
                if encoder is not None and hasattr(encoder, "target_bitrate"):
                    return int(encoder.target_bitrate) // 1000
        return None

    def tally(self, roles: dict[str, str]) -> dict[str, dict[str, Any]]:
        """What arrived, by publisher role and kind (``roles``: participant id -> role)."""
        out: dict[str, dict[str, Any]] = {}
        for ref in self.tracks:
            if ref.mid is None or ref.mid not in self.flows or ref.source == "evidence":
                continue
            role = roles.get(ref.participant_id, ref.participant_id)
            report = self.flows[ref.mid].report()
            if ref.kind == "video" and self._decode:
                decoded = self.by_tag.get(TAGS.get(role, -1))
                good = decoded.report() if decoded is not None else {"frames": 0}
                report = {**report, **{k: v for k, v in good.items() if k not in ("packets", "span")}}
            out.setdefault(role, {})[ref.kind] = report
        return out


def _nothing(_: Any) -> None:
    pass


def _nothing2() -> None:
    pass


_RTX_ROUTED = "_thin_link_rtx_routed"


def _route_rtx(receiver: RTCRtpReceiver) -> None:
    """Deliver resends (RTX) to the receiver they belong to, as a browser does (once per DTLS transport).

    aiortc 1.16's ``RtpRouter`` registers each receiver's media SSRC but not its RTX SSRC (``a=ssrc-group:FID``),
    and routes an unknown SSRC by payload type only when one receiver has it: with several video m-lines bundled
    (everyone's camera) every RTX packet is dropped before any receiver sees it. Here an unknown SSRC is looked up
    in the receivers' RTX SSRCs first.
    """
    transport = receiver.transport
    router = transport._rtp_router
    if getattr(router, _RTX_ROUTED, False):
        return
    route = router.route_rtp

    def route_rtp(packet: Any) -> Any:
        if packet.ssrc not in router.ssrc_table:
            for candidate in router.receivers:
                if packet.ssrc in getattr(candidate, "_RTCRtpReceiver__rtx_ssrc", {}):
                    router.ssrc_table[packet.ssrc] = candidate
                    break
        return route(packet)

    router.route_rtp = route_rtp  # type: ignore[method-assign]
    setattr(router, _RTX_ROUTED, True)


def _watch_receiver(receiver: RTCRtpReceiver, flow: Flow) -> None:
    """Count ``receiver``'s media and RTX packets and the NACK, PLI and REMB feedback it sends (this instance only)."""
    codec_name = receiver_codec_name(receiver)
    handle = receiver._handle_rtp_packet
    send_rtcp = receiver._send_rtcp

    async def counting(packet: Any, arrival_time_ms: int) -> None:
        if codec_name(packet.payload_type) == "rtx":
            flow.rtx += 1
        else:
            flow.rtp(packet.sequence_number, time.monotonic())
        await handle(packet, arrival_time_ms)

    async def sending(packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == _NACK:
            flow.nack_packets += 1
            flow.nack_seqs += len(packet.lost)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == _PLI:
            flow.pli += 1
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == _REMB:
            with contextlib.suppress(ValueError):
                flow.remb = int(unpack_remb_fci(packet.fci)[0])
                flow.remb_low = flow.remb if flow.remb_low is None else min(flow.remb_low, flow.remb)
        await send_rtcp(packet)

    receiver._handle_rtp_packet = counting  # type: ignore[method-assign]
    receiver._send_rtcp = sending  # type: ignore[method-assign]


# --- the two programs ----------------------------------------------------------------------------------------------


def emit(line: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (the harness reads it as it comes)."""
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def roles_of(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Participant id -> role, from the latest roster a client received (or its ``joined``)."""
    for message in reversed(messages):
        entries = message.get("participants") if message.get("type") == "roster" else message.get("roster")
        if message.get("type") in ("roster", "joined") and entries:
            return {e["id"]: e["role"] for e in entries}
    return {}


async def report_forever(
    who: str, people: list[Participant], stopping: asyncio.Event, seat: Seat | None = None
) -> None:
    """Print every person's tally once a second until ``stopping`` is set (with ``seat``'s people, which it reports
    when asked, then: a tally of another moment would show a stall that was none)."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 1.0)
        line = tally_line(who, people)
        if seat is not None:
            await seat.report()
            line["people"].update(seat.people)
            line["failures"] += seat.failures
        emit(line)


def tally_line(who: str, people: list[Participant]) -> dict[str, Any]:
    """Every person's tally now (see the module doc); their stalls and lowest REMB since the last one."""
    persons: dict[str, Any] = {}
    for p in people:
        assert isinstance(p.media, ThinClient)
        persons[p.name] = {
            "recv": p.media.tally(roles_of(p.client.messages)),
            "keyframes": p.media.keyframe_requests,
            "target_kbps": p.media.target_kbps(),
            "restarts": len(p.restarts),
        }
    return {"t": round(time.time(), 3), "who": who, "people": persons, "failures": _failures(people)}


def _failures(people: list[Participant]) -> list[str]:
    return [f"{p.name}: {f}" for p in people for f in p.failures]


async def join(court: Court, name: str, token: str, *, size: tuple[int, int], fps: float, decode: bool) -> Participant:
    """Join with a WebSocket and a :class:`ThinClient`."""
    client, joined = await court.join(token)
    p = Participant(name, client, joined, ThinClient(name, size=size, fps=fps, decode=decode))
    p.attach()
    court.participants.append(p)
    return p


SEATED = COURT_SIDE[2:]
"""The court-side people a second process runs (``seat``, :class:`Seat`). Four aiortc clients in one process, each
encoding a camera and receiving four streams, kept its one thread 75-90% busy on a 2-core machine beside the node
and the defendant: it fell behind at times (a hearing's start, a keyframe from everyone at once), its sockets
overflowed, and the node read that loss as the court side's links overflowing. A court's people each have their own
machine; two processes are nearer to that than one."""


class Seat:
    """The ``seat`` process of :func:`run_court`: the people of :data:`SEATED`, their tallies as it last printed them,
    its events passed on."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.people: dict[str, Any] = {}
        self.failures: list[str] = []
        self.events: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self._tallied = asyncio.Event()
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, args: argparse.Namespace, tokens: dict[str, str]) -> Seat:
        """Start ``python -m tests.thin_link_client seat`` for the people of ``tokens`` (in this namespace)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.thin_link_client", "seat", "--url", args.url, "--address", args.address,
            "--tokens", json.dumps(tokens), "--width", str(args.width), "--height", str(args.height),
            "--fps", str(args.fps), "--kbps", str(args.kbps),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                sys.stdout.write(raw.decode(errors="replace"))  # its other output, as ours
                continue
            if "event" in line:
                self.events[line["event"]] = line
                if line["event"] in ("loop_lagged", "gc"):
                    emit({**line, "who": "seat"})  # its process's hold-ups, reported as ours are
            else:
                self.people, self.failures = line["people"], line["failures"]
                self._tallied.set()
            self._changed.set()
        self._changed.set()

    async def event(self, name: str, within: float = 60.0) -> dict[str, Any]:
        """The process's ``{"event": name}`` line, waiting for it; RuntimeError if it ended or took too long."""
        deadline = time.monotonic() + within
        while name not in self.events:
            if self._reading.done() or time.monotonic() > deadline:
                raise RuntimeError(f"the seat process sent no {name!r} event (exit {self.proc.returncode})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1.0)
        return self.events[name]

    async def go(self) -> None:
        """Let it start its media (its people are seated), and wait until it did."""
        await self._tell("go")
        await self.event("media")

    async def report(self, within: float = 2.0) -> None:
        """Ask for its people's tally now and wait for it (:attr:`people`; if it does not come within ``within``,
        the last one stays, and its stalls come with the next)."""
        self._tallied.clear()
        with contextlib.suppress(ConnectionError):
            await self._tell("report")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tallied.wait(), within)

    async def _tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        """SIGTERM (its clients close), SIGKILL after 15 s."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reading.cancel()


async def run_court(args: argparse.Namespace, stopping: asyncio.Event) -> None:
    """Book, seat the four court-side publishers (two here, :data:`SEATED` in a :class:`Seat` process), admit the
    defendant when they wait, report reception."""
    async with aiohttp.ClientSession() as http:
        court = remote_court(args.url, http)
        seat: Seat | None = None
        try:
            booking = await court.book(ROLES)
            size = (args.width, args.height)
            seat = await Seat.start(args, {n: booking.tokens[n] for n in SEATED})
            people = {
                n: await join(court, n, booking.tokens[n], size=size, fps=args.fps, decode=False)
                for n in COURT_SIDE
                if n not in SEATED
            }
            placements = {n: p.joined["placement"] for n, p in people.items()}
            placements.update((await seat.event("joined"))["placements"])
            judge = people["judge"]
            for name in COURT_SIDE[1:]:
                if placements[name] == "lobby":
                    await judge.client.request_ok("admit", "roster", participant_id=booking.ids[name])
            for action in ("open", "start"):
                await judge.client.request_ok("session", "state", action=action)
            await judge.client.request_ok("call_witness", "roster", participant_id=booking.ids["witness"])
            for p in people.values():
                await p.start_media()
            await seat.go()
            emit({"event": "ready", "hearing_id": booking.hearing_id, "ids": booking.ids,
                  "defendant_token": booking.tokens["defendant"], "seat_pid": seat.proc.pid})  # fmt: skip
            settle_garbage()
            reporting = asyncio.ensure_future(report_forever("court", list(people.values()), stopping, seat))
            admitting = asyncio.ensure_future(admit_forever(judge, booking.ids["defendant"], stopping))
            try:
                await reporting
            finally:
                admitting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await admitting
        finally:
            closing = [_bounded(p.close()) for p in court.participants]
            if seat is not None:
                closing.append(_bounded(seat.stop(), 20.0))
            await asyncio.gather(*closing)


async def admit_forever(judge: Participant, defendant: str, stopping: asyncio.Event) -> None:
    """The judge admits the defendant each time they wait in the lobby: at the first join, and again after their
    client joined anew (a crash or a reboot of the terminal; a join without the resume key starts in the lobby)."""

    def waiting(message: dict[str, Any]) -> bool:
        return any(e["id"] == defendant and e["placement"] == "lobby" for e in message["participants"])

    while not stopping.is_set():
        with contextlib.suppress(AssertionError):  # none within the wait: look again
            await judge.client.expect("roster", waiting, within=30)
            answer = await judge.client.request("admit", "roster", participant_id=defendant)
            if answer.get("type") != "error":  # an earlier roster's lobby may already be answered
                emit({"event": "admitted", "participant_id": defendant})


async def run_seat(args: argparse.Namespace, stopping: asyncio.Event) -> None:
    """Join the people of ``--tokens``, print where they were placed, start their media when ``go`` comes on stdin
    (:func:`run_court` seated them), report reception."""
    tokens: dict[str, str] = json.loads(args.tokens)
    async with aiohttp.ClientSession() as http:
        court = remote_court(args.url, http)
        try:
            size = (args.width, args.height)
            people = [await join(court, n, t, size=size, fps=args.fps, decode=False) for n, t in tokens.items()]
            emit({"event": "joined", "placements": {p.name: p.joined["placement"] for p in people}})
            words = await read_words()
            if await next_word(words, stopping) != "go":
                return
            for p in people:
                await p.start_media()
            emit({"event": "media"})
            settle_garbage()
            while await next_word(words, stopping) == "report":
                emit(tally_line("seat", people))
        finally:
            await asyncio.gather(*(_bounded(p.close()) for p in court.participants))


async def run_defendant(args: argparse.Namespace, stopping: asyncio.Event) -> None:
    """Join, wait to be admitted, publish and decode everything, report reception."""
    async with aiohttp.ClientSession() as http:
        court = remote_court(args.url, http)
        try:
            me = await join(court, "defendant", args.token, size=(args.width, args.height), fps=args.fps, decode=True)
            if me.joined["placement"] == "lobby":
                await me.client.expect("admitted", within=120)
            await me.start_media()
            emit({"event": "media", "participant_id": me.id})
            settle_garbage()
            await report_forever("defendant", [me], stopping)
        finally:
            await asyncio.gather(*(_bounded(p.close()) for p in court.participants))


async def read_words() -> asyncio.Queue[str]:
    """This process's stdin, a line at a time, stripped ("" at its end: the court process is gone)."""
    words: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def pump() -> None:
        while line := await reader.readline():
            words.put_nowait(line.decode().strip())
        words.put_nowait("")

    _pumping.add(asyncio.ensure_future(pump()))
    return words


_pumping: set[asyncio.Future[None]] = set()


async def next_word(words: asyncio.Queue[str], stopping: asyncio.Event) -> str:
    """The next line of :func:`read_words` ("" once ``stopping`` is set)."""
    getting = asyncio.ensure_future(words.get())
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait((getting, stop), return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if getting.done():
        return getting.result()
    getting.cancel()
    return ""


async def _bounded(closing: Any, within: float = 10.0) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, within)


LAG_EVENT = 0.25
"""Seconds late a 0.1 s sleep of this process's event loop must come to be reported (``{"event": "loop_lagged"}``):
every stream this process receives waits while its loop is held."""

GC_EVENT = 0.05
"""Seconds a garbage collection must take to be reported (``{"event": "gc"}``)."""


async def watch_loop(stopping: asyncio.Event) -> None:
    """Report when this process's event loop was held (the stalls it causes are this client's, not the node's)."""
    while not stopping.is_set():
        asked = time.monotonic()
        await asyncio.sleep(0.1)
        lag = time.monotonic() - asked - 0.1
        if lag >= LAG_EVENT:
            emit({"event": "loop_lagged", "t": round(time.time(), 3), "lag": round(lag, 3)})


def watch_gc() -> None:
    """Report each garbage collection that takes :data:`GC_EVENT` or more (it holds every thread of the process)."""
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.monotonic()]
        elif started and time.monotonic() - started[0] >= GC_EVENT:
            took = time.monotonic() - started[0]
            emit({"event": "gc", "t": round(time.time(), 3), "generation": info["generation"], "took": round(took, 3)})

    gc.callbacks.append(callback)


def settle_garbage() -> None:
    """Collect once and move everything alive now out of the collector's sight (``gc.freeze``): the seated clients'
    objects live to the end, and a full collection over them held this process's loop, and so every stream it
    receives, for 0.2-0.3 s at a time (``{"event": "gc"}``), a stall of the harness, not of the node."""
    gc.collect()
    gc.freeze()


async def main(args: argparse.Namespace) -> None:
    """Run one program until SIGTERM/SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    watch_gc()
    watching = asyncio.ensure_future(watch_loop(stopping))
    try:
        if args.program == "court":
            await run_court(args, stopping)
        elif args.program == "seat":
            await run_seat(args, stopping)
        else:
            await run_defendant(args, stopping)
    finally:
        watching.cancel()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's doc)."""
    parser = argparse.ArgumentParser(prog="python -m tests.thin_link_client")
    parser.add_argument("program", choices=("court", "seat", "defendant"))
    parser.add_argument("--url", required=True, help="the server's base URL")
    parser.add_argument("--address", required=True, help="this namespace's address: the only ICE host candidate")
    parser.add_argument("--token", default="", help="defendant: the join token")
    parser.add_argument("--tokens", default="{}", help="seat: the join tokens by name, as JSON")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--kbps", type=int, default=1200, help="the encoders' start and highest bitrate")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    # This process's clients announce only this namespace's address (MediaClient restricts to this name).
    tests.media_clients.LOOPBACK = (arguments.address,)
    # aiortc's VP8 encoder starts at 500 kbit/s and climbs to 1.5 Mbit/s following REMB: here it starts at, and
    # never exceeds, the camera bitrate asked for (it still goes down to its floor, 250 kbit/s, when told to).
    aiortc.codecs.vpx.DEFAULT_BITRATE = aiortc.codecs.vpx.MAX_BITRATE = arguments.kbps * 1000
    asyncio.run(main(arguments))
