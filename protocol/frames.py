"""Encoded media as the recorder receives it from a media node: plain data, no av or aiortc types.

A media node hands every permitted, reassembled encoded frame of a room to the
recorder's :class:`FrameSink` (in-process today; a later issue carries these
over the network). The sink must never block: it queues and returns.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.node import MediaKind
from rooms.model import Source


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A track the recorder is asked to archive."""

    hearing_id: str
    track_id: str
    participant_id: str
    source: Source
    kind: MediaKind
    codec: str
    """Codec name as in SDP: ``VP8``, ``H264`` or ``opus``."""
    clock_rate: int


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One reassembled encoded frame (video) or packet (audio), exactly as received."""

    track_id: str
    payload: bytes
    rtp_timestamp: int
    """RTP timestamp (unwrapping across 2**32 is the receiver's job)."""
    keyframe: bool
    arrival: float
    """Wall-clock time (``time.time()``) the frame was complete at the node."""


@dataclass(frozen=True, slots=True)
class SenderReport:
    """An RTCP sender report: maps the track's RTP clock to wall-clock time."""

    track_id: str
    ntp_time: float
    """The report's NTP timestamp as Unix seconds."""
    rtp_timestamp: int


class FrameSink(Protocol):
    """Receives a room's media; every method returns at once (no I/O on the caller's loop)."""

    def track_started(self, info: TrackInfo) -> None:
        """A track begins (or begins again after a pause in forwarding)."""
        ...

    def frame(self, frame: EncodedFrame) -> None:
        """One encoded frame of a started track."""
        ...

    def sender_report(self, report: SenderReport) -> None:
        """An RTCP sender report of a started track."""
        ...

    def track_stopped(self, track_id: str, reason: str) -> None:
        """A track stops being forwarded (``consultation``, ``ended``, ``muted``, ``recess``...)."""
        ...


class FrameSource(Protocol):
    """Where a recorder gets a hearing's frames: a media node in this process, or its frame pipe over TCP.

    The recorder is a hidden participant of the hearing; ``SetReceiving`` for it (from signaling's permission
    table) decides whose tracks it is fed. Every method returns at once.
    """

    def attach_recorder(self, hearing_id: str, participant_id: str, sink: FrameSink) -> None:
        """Feed ``sink`` the frames the recorder participant may receive (replaces an earlier attachment)."""
        ...

    def detach_recorder(self, hearing_id: str, participant_id: str, reason: str = "detached") -> None:
        """Stop feeding it; each of its tracks gets ``track_stopped(reason)``."""
        ...

    def request_keyframe(self, hearing_id: str, track_id: str) -> None:
        """Ask the publisher of ``track_id`` (the recorder's track id) for a keyframe (throttled by the node)."""
        ...


# --- the frame pipe's wire codec (node <-> recorder over TCP; pure, no I/O) -------------------------------------
#
# Every message is ``u32 length | u8 type | body`` (big-endian; ``length`` counts the type byte and the body). A
# string is ``u16 length | UTF-8``. Hello (recorder -> node, first message) is ``u8 version | recorder_id |
# hearing_id | participant_id | i64 unix time | 16 bytes nonce | 32 bytes HMAC-SHA256`` with the MAC over
# ``b"courtlink-framepipe-hello\0"`` and every hello byte before it (type byte included), keyed by ``[cluster]
# secret``. See docs/protocol.md, "Additions: framepipe".

PIPE_VERSION = 1
"""Version byte of the hello: a node refuses a hello of another version."""
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Largest message (type byte and body): a video keyframe of a court camera is tens to a few hundred KB; 4 MiB leaves
room for a 4K keyframe while a corrupt or hostile length prefix cannot make a peer buffer more."""
MAX_STRING_BYTES = 512
"""Longest id or reason string (UTF-8 bytes)."""
NONCE_BYTES = 16
MAC_BYTES = 32
HELLO_MAX_SKEW_SECONDS = 60.0
"""A hello whose time is further than this from the node's clock is refused (``stale``)."""
_HELLO_CONTEXT = b"courtlink-framepipe-hello\0"

T_HELLO = 0x01
T_WELCOME = 0x02
T_REFUSED = 0x03
T_TRACK_STARTED = 0x10
T_FRAME = 0x11
T_SENDER_REPORT = 0x12
T_TRACK_STOPPED = 0x13
T_REQUEST_KEYFRAME = 0x20
T_KEEPALIVE = 0x30

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_FRAME_HEAD = struct.Struct(">qdB")
_REPORT_TAIL = struct.Struct(">dq")
_KINDS: frozenset[str] = frozenset({"audio", "video"})
_SOURCES: frozenset[str] = frozenset(s.value for s in Source)


class FrameDecodeError(ValueError):
    """Bytes that are not a frame-pipe message: the connection they came on is closed (``reason`` says why)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        """``too_large``, ``empty``, ``truncated``, ``unknown_type``, ``bad_string``, ``bad_value``,
        ``trailing_bytes``, ``failed`` (the stream broke before)."""


class HelloRefused(Exception):
    """A hello the node does not accept (``reason``: ``bad_version``, ``bad_mac``, ``stale``, ``replayed``...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PipeHello:
    """First message of a recorder: who it is, which hearing it records as which participant, signed."""

    recorder_id: str
    hearing_id: str
    participant_id: str
    unix_time: int
    """Seconds since the epoch when the hello was made (a node refuses one more than 60 s off its clock)."""
    nonce: bytes
    """16 random bytes, never used twice (a node refuses a nonce it has seen)."""
    mac: bytes
    """HMAC-SHA256 over the hello before it; 32 zero bytes when the recorder has no secret."""
    version: int = PIPE_VERSION


@dataclass(frozen=True, slots=True)
class PipeWelcome:
    """The node accepted the hello: frames follow."""

    keepalive_ms: int
    """How often the node sends a keepalive (a recorder that hears nothing for 3x this drops the connection)."""


@dataclass(frozen=True, slots=True)
class PipeRefused:
    """The node refuses the connection (sent once before it closes it)."""

    reason: str


@dataclass(frozen=True, slots=True)
class PipeTrackStopped:
    """``FrameSink.track_stopped`` on the wire."""

    track_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PipeKeyframeRequest:
    """Recorder -> node: ``FrameSource.request_keyframe`` for a track of this connection's hearing."""

    track_id: str


@dataclass(frozen=True, slots=True)
class PipeKeepalive:
    """Sent both ways when nothing else is: a silent peer is a dead one."""


PipeMessage = (
    PipeHello
    | PipeWelcome
    | PipeRefused
    | TrackInfo
    | EncodedFrame
    | SenderReport
    | PipeTrackStopped
    | PipeKeyframeRequest
    | PipeKeepalive
)
"""Everything that travels on a frame pipe."""


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_STRING_BYTES:
        raise ValueError(f"string of {len(raw)} bytes is longer than {MAX_STRING_BYTES}")
    return _U16.pack(len(raw)) + raw


def _framed(kind: int, *parts: bytes) -> bytes:
    body_len = 1 + sum(len(p) for p in parts)
    if body_len > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {body_len} bytes is larger than {MAX_MESSAGE_BYTES}")
    return b"".join((_U32.pack(body_len), _U8.pack(kind), *parts))


def _hello_signed_part(hello: PipeHello) -> bytes:
    return b"".join(
        (
            _U8.pack(T_HELLO),
            _U8.pack(hello.version),
            _string(hello.recorder_id),
            _string(hello.hearing_id),
            _string(hello.participant_id),
            _I64.pack(hello.unix_time),
            hello.nonce,
        )
    )


def hello_mac(hello: PipeHello, secret: bytes | None) -> bytes:
    """The MAC ``hello`` must carry under ``secret`` (32 zero bytes without one)."""
    if secret is None:
        return bytes(MAC_BYTES)
    return hmac.new(secret, _HELLO_CONTEXT + _hello_signed_part(hello), hashlib.sha256).digest()


def make_hello(
    recorder_id: str, hearing_id: str, participant_id: str, *, secret: bytes | None, now: float, nonce: bytes
) -> PipeHello:
    """A signed hello (``nonce``: 16 fresh random bytes, e.g. ``secrets.token_bytes(16)``)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    unsigned = PipeHello(recorder_id, hearing_id, participant_id, int(now), nonce, bytes(MAC_BYTES))
    return PipeHello(recorder_id, hearing_id, participant_id, int(now), nonce, hello_mac(unsigned, secret))


class NonceCache:
    """Nonces of accepted hellos, kept while a replay of them would still be in time (bounded)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._until: dict[bytes, float] = {}
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._until)

    def add(self, nonce: bytes, now: float) -> bool:
        """Remember ``nonce``; False if it was seen (a replay) or the cache is full of live nonces."""
        if len(self._until) >= self._max or (self._until and len(self._until) % 1024 == 0):
            self._until = {n: t for n, t in self._until.items() if t > now}
        if nonce in self._until and self._until[nonce] > now:
            return False
        if len(self._until) >= self._max:
            return False
        self._until[nonce] = now + 2 * HELLO_MAX_SKEW_SECONDS
        return True


def check_hello(hello: PipeHello, *, secret: bytes | None, now: float, nonces: NonceCache) -> None:
    """Accept ``hello`` or raise :class:`HelloRefused`: version, MAC (with a secret), time within 60 s, fresh nonce."""
    if hello.version != PIPE_VERSION:
        raise HelloRefused("bad_version")
    if secret is not None and not hmac.compare_digest(hello.mac, hello_mac(hello, secret)):
        raise HelloRefused("bad_mac")
    if abs(hello.unix_time - now) > HELLO_MAX_SKEW_SECONDS:
        raise HelloRefused("stale")
    if not nonces.add(hello.nonce, now):
        raise HelloRefused("replayed")


def encode_message(message: PipeMessage) -> bytes:
    """One message with its length prefix; ``ValueError`` if a string or the whole is over its bound."""
    if isinstance(message, EncodedFrame):
        head = _FRAME_HEAD.pack(message.rtp_timestamp, message.arrival, 1 if message.keyframe else 0)
        return _framed(T_FRAME, _string(message.track_id), head, message.payload)
    if isinstance(message, SenderReport):
        return _framed(
            T_SENDER_REPORT, _string(message.track_id), _REPORT_TAIL.pack(message.ntp_time, message.rtp_timestamp)
        )
    if isinstance(message, TrackInfo):
        return _framed(
            T_TRACK_STARTED,
            _string(message.hearing_id),
            _string(message.track_id),
            _string(message.participant_id),
            _string(str(message.source)),
            _string(message.kind),
            _string(message.codec),
            _U32.pack(message.clock_rate),
        )
    if isinstance(message, PipeTrackStopped):
        return _framed(T_TRACK_STOPPED, _string(message.track_id), _string(message.reason))
    if isinstance(message, PipeKeyframeRequest):
        return _framed(T_REQUEST_KEYFRAME, _string(message.track_id))
    if isinstance(message, PipeKeepalive):
        return _framed(T_KEEPALIVE)
    if isinstance(message, PipeHello):
        if len(message.nonce) != NONCE_BYTES or len(message.mac) != MAC_BYTES:
            raise ValueError("hello nonce or MAC of the wrong length")
        signed = _hello_signed_part(message)
        return _framed(signed[0], signed[1:], message.mac)
    if isinstance(message, PipeWelcome):
        return _framed(T_WELCOME, _U32.pack(message.keepalive_ms))
    if isinstance(message, PipeRefused):
        return _framed(T_REFUSED, _string(message.reason))
    raise TypeError(f"not a frame-pipe message: {type(message).__name__}")


class _Body:
    """A cursor over one message body; every read checks the bounds."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise FrameDecodeError("truncated", f"needs {end} bytes, has {len(self.data)}")
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def string(self, *, empty: bool = False) -> str:
        (n,) = self.unpack(_U16)
        if n > MAX_STRING_BYTES:
            raise FrameDecodeError("bad_string", f"string of {n} bytes")
        try:
            text = self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameDecodeError("bad_string", "not UTF-8") from exc
        if not text and not empty:
            raise FrameDecodeError("bad_string", "empty id")
        return text

    def number(self, fmt: struct.Struct) -> float:
        (value,) = self.unpack(fmt)
        if not math.isfinite(value):
            raise FrameDecodeError("bad_value", "not a finite number")
        return float(value)

    def rest(self) -> bytes:
        chunk = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return chunk

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameDecodeError("trailing_bytes", f"{len(self.data) - self.pos} bytes after the message")


def message_length(header: bytes) -> int:
    """The length a 4-byte prefix announces; :class:`FrameDecodeError` if it is 0 or over the bound."""
    if len(header) != _U32.size:
        raise FrameDecodeError("truncated", "length prefix")
    (length,) = _U32.unpack(header)
    if length == 0:
        raise FrameDecodeError("empty", "a message without a type byte")
    if length > MAX_MESSAGE_BYTES:
        raise FrameDecodeError("too_large", f"{length} bytes announced, at most {MAX_MESSAGE_BYTES}")
    return int(length)


def decode_message(data: bytes | memoryview) -> PipeMessage:
    """One message from its type byte and body (the length prefix already taken off); :class:`FrameDecodeError`."""
    if len(data) == 0:
        raise FrameDecodeError("empty")
    if len(data) > MAX_MESSAGE_BYTES:
        raise FrameDecodeError("too_large")
    kind = data[0]
    body = _Body(data)
    body.pos = 1
    message: PipeMessage
    if kind == T_FRAME:
        track_id = body.string()
        rtp, arrival, flags = body.unpack(_FRAME_HEAD)
        if flags & ~1 or not math.isfinite(arrival):
            raise FrameDecodeError("bad_value", "frame flags or arrival")
        return EncodedFrame(track_id, body.rest(), int(rtp), bool(flags & 1), float(arrival))
    if kind == T_SENDER_REPORT:
        track_id = body.string()
        ntp = body.number(_F64)
        (rtp,) = body.unpack(_I64)
        message = SenderReport(track_id, ntp, int(rtp))
    elif kind == T_TRACK_STARTED:
        hearing_id, track_id, participant_id = body.string(), body.string(), body.string()
        source, kind_name, codec = body.string(), body.string(), body.string()
        (clock_rate,) = body.unpack(_U32)
        if source not in _SOURCES or kind_name not in _KINDS or clock_rate == 0:
            raise FrameDecodeError("bad_value", "source, kind or clock rate")
        media_kind: MediaKind = "audio" if kind_name == "audio" else "video"
        message = TrackInfo(hearing_id, track_id, participant_id, Source(source), media_kind, codec, int(clock_rate))
    elif kind == T_TRACK_STOPPED:
        message = PipeTrackStopped(body.string(), body.string())
    elif kind == T_REQUEST_KEYFRAME:
        message = PipeKeyframeRequest(body.string())
    elif kind == T_KEEPALIVE:
        message = PipeKeepalive()
    elif kind == T_HELLO:
        (version,) = body.unpack(_U8)
        recorder_id, hearing_id, participant_id = body.string(), body.string(), body.string()
        (unix_time,) = body.unpack(_I64)
        nonce, mac = body.take(NONCE_BYTES), body.take(MAC_BYTES)
        message = PipeHello(recorder_id, hearing_id, participant_id, int(unix_time), nonce, mac, version)
    elif kind == T_WELCOME:
        (keepalive_ms,) = body.unpack(_U32)
        if keepalive_ms == 0:
            raise FrameDecodeError("bad_value", "keepalive of 0 ms")
        message = PipeWelcome(int(keepalive_ms))
    elif kind == T_REFUSED:
        message = PipeRefused(body.string(empty=True))
    else:
        raise FrameDecodeError("unknown_type", f"type byte 0x{kind:02x}")
    body.end()
    return message


class MessageDecoder:
    """Splits a byte stream into messages: feed what the socket gave, get every complete message back.

    A message is returned only once all of it is there (never part of a frame); bytes that are not a message raise
    :class:`FrameDecodeError` (after the complete messages before them were returned by earlier calls, never mixed
    into one call's result: the caller drops the connection). At most one message is buffered.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need: int | None = None
        self.failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[PipeMessage]:
        """Complete messages in ``data`` (and what came before it); :class:`FrameDecodeError` on bad bytes."""
        if self.failed:
            raise FrameDecodeError("failed", "the stream broke earlier")
        self._buffer += data
        out: list[PipeMessage] = []
        buffer = self._buffer
        pos = 0
        try:
            while True:
                if self._need is None:
                    if len(buffer) - pos < _U32.size:
                        break
                    self._need = message_length(bytes(buffer[pos : pos + _U32.size]))
                    pos += _U32.size
                if len(buffer) - pos < self._need:
                    break
                end = pos + self._need
                with memoryview(buffer) as view:
                    out.append(decode_message(view[pos:end]))
                pos = end
                self._need = None
        except FrameDecodeError:
            self.failed = True
            self._buffer = bytearray()
            raise
        del buffer[:pos]
        return out
