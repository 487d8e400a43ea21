"""One segment file: encoded frames remuxed (PyAV, no transcoding) into WebM or Matroska, hashed as written.

The container writes through :class:`HashingSink`, a file object without
``seek``: FFmpeg's Matroska muxer then writes the file strictly front to back
(live mode, small clusters, no cues or duration patched in at the end). That
gives two properties the archive needs:

- the SHA-256 and size are known the moment the segment closes, computed over
  exactly the bytes that went to disk (no re-read);
- after a crash, the file on disk is a valid Matroska prefix: everything up to
  the last complete cluster (about one second) plays.

Runs only on the recorder's writer thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av

from protocol.node import MediaKind
from recorder.chain import BLOCK_SIZE  # one definition, shared with the verifier


class SegmentIO(Protocol):
    """What a segment is written to: a plain binary file, as far as the recorder cares."""

    def write(self, data: bytes | memoryview, /) -> int | None:
        """Write (some of) ``data``; returns how much, or None for all of it."""
        ...

    def flush(self) -> None:
        """Push buffered bytes to the kernel."""
        ...

    def fileno(self) -> int:
        """The OS file descriptor (for fsync)."""
        ...

    def close(self) -> None:
        """Close the file."""
        ...


Opener = Callable[[Path], SegmentIO]
"""Opens a new segment file for writing (tests substitute a slow or full disk)."""

_CONTAINERS: dict[str, tuple[str, str, str]] = {
    # SDP codec name (lowercased) -> (FFmpeg codec, FFmpeg format, file suffix)
    "vp8": ("vp8", "webm", ".webm"),
    "opus": ("opus", "webm", ".webm"),
    "h264": ("h264", "matroska", ".mkv"),
}

_MUXER_OPTIONS = {
    # A cluster is written (and reaches the file) at least every second: what a crash can lose.
    "cluster_time_limit": "1000",
    "flush_packets": "1",
}


class UnsupportedCodec(ValueError):
    """The track's codec cannot be archived by remuxing."""


def container_for(codec: str) -> tuple[str, str, str]:
    """(FFmpeg codec, FFmpeg format, suffix) for an SDP codec name."""
    try:
        return _CONTAINERS[codec.lower()]
    except KeyError:
        raise UnsupportedCodec(f"codec {codec!r} is not archived (VP8, H264 and opus are)") from None


def default_opener(path: Path) -> SegmentIO:
    """A new file, unbuffered so every cluster the muxer emits reaches the kernel at once."""
    return path.open("xb", buffering=0)


def vp8_dimensions(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8 keyframe header (RFC 6386, 9.1), or None if it is not one."""
    if len(payload) < 10 or payload[0] & 1 or payload[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(payload[6:8], "little") & 0x3FFF
    height = int.from_bytes(payload[8:10], "little") & 0x3FFF
    return width, height


class _Bits:
    """MSB-first bit reader with Exp-Golomb codes (H.264 7.2), over an RBSP."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self._data[self._pos >> 3]  # IndexError past the end: caller treats as unparsable
            value = (value << 1) | ((byte >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_dimensions(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from the SPS in an Annex B access unit (H.264 7.3.2.1.1), or None if it has none."""
    for nal in payload.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
        if not nal or nal[0] & 0x1F != 7:
            continue
        rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
        try:
            return _sps_dimensions(_Bits(rbsp))
        except (IndexError, ValueError):
            return None
    return None


def _sps_dimensions(r: _Bits) -> tuple[int, int]:
    profile = r.u(8)
    r.u(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            r.u(1)
        r.ue()
        r.ue()
        r.u(1)
        if r.u(1):  # scaling matrices: parse to skip them
            for i in range(12 if chroma == 3 else 8):
                if r.u(1):
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt or last
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.u(1)
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)
    r.u(1)
    width, height = width_mbs * 16, (2 - frame_mbs_only) * height_units * 16
    if r.u(1):  # frame cropping
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        unit_x = 1 if chroma in (0, 3) else 2
        unit_y = (1 if chroma in (0, 2, 3) else 2) * (2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    return width, height


class HashingSink:
    """A write-only, non-seekable file object that hashes and counts every byte it passes on.

    Besides the SHA-256 of the whole file it keeps a SHA-256 per :data:`BLOCK_SIZE`
    block (first 16 hex digits, for locating damage, not for security).
    """

    def __init__(self, raw: SegmentIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._block = hashlib.sha256()
        self._block_fill = 0
        self._blocks: list[str] = []

    def write(self, data: bytes) -> int:
        """Write all of ``data`` to the file, then account for it."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            n = self._raw.write(view[done:])
            done += n if n is not None else len(view) - done
        self.sha256.update(view)
        self.size += len(view)
        pos = 0
        while pos < len(view):
            take = min(BLOCK_SIZE - self._block_fill, len(view) - pos)
            self._block.update(view[pos : pos + take])
            self._block_fill += take
            pos += take
            if self._block_fill == BLOCK_SIZE:
                self._blocks.append(self._block.hexdigest()[:16])
                self._block = hashlib.sha256()
                self._block_fill = 0
        return len(view)

    @property
    def blocks(self) -> list[str]:
        """Short hashes of every block so far (the last one possibly partial)."""
        tail = [self._block.hexdigest()[:16]] if self._block_fill else []
        return self._blocks + tail

    def sync_close(self) -> None:
        """fsync and close the underlying file."""
        try:
            self._raw.flush()
            os.fsync(self._raw.fileno())
        finally:
            self._raw.close()

    def abandon(self) -> None:
        """Close without caring whether it works (the write already failed)."""
        with contextlib.suppress(OSError):
            self._raw.close()


class SegmentFile:
    """An open segment of one track: ``write`` frames, then ``close`` for (bytes, sha256)."""

    def __init__(
        self,
        path: Path,
        codec: str,
        kind: MediaKind,
        clock_rate: int,
        dimensions: tuple[int, int] | None,
        opener: Opener = default_opener,
    ) -> None:
        ff_codec, ff_format, _ = container_for(codec)
        self.path = path
        self._sink = HashingSink(opener(path))
        self._last_pts = -1
        self.frames = 0
        try:
            self._container = av.open(self._sink, mode="w", format=ff_format, options=_MUXER_OPTIONS)
            time_base = Fraction(1, clock_rate)
            if kind == "video":
                width, height = dimensions or (0, 0)
                self._stream = self._container.add_mux_stream(ff_codec, width=width, height=height, time_base=time_base)
            else:
                self._stream = self._container.add_mux_stream(ff_codec, rate=clock_rate, time_base=time_base)
            self._time_base = time_base
        except BaseException:
            self._sink.abandon()
            raise

    def write(self, payload: bytes, pts: int, keyframe: bool) -> bool:
        """Mux one encoded frame at ``pts`` (clock ticks from the segment's start); False if out of order."""
        if pts <= self._last_pts:
            return False
        packet = av.Packet(payload)
        packet.stream = self._stream
        packet.pts = pts
        packet.dts = pts
        packet.time_base = self._time_base
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        self._last_pts = pts
        self.frames += 1
        return True

    def close(self) -> tuple[int, str, list[str]]:
        """Finish the file (trailer, fsync); return (bytes, SHA-256 hex, block hashes) of what was written."""
        try:
            self._container.close()
        except BaseException:
            self._sink.abandon()
            raise
        self._sink.sync_close()
        return self._sink.size, self._sink.sha256.hexdigest(), self._sink.blocks

    def abandon(self) -> None:
        """Give up on this segment after a failed write: close quietly and delete the file."""
        with contextlib.suppress(OSError, av.error.FFmpegError):
            self._container.close()
        self._sink.abandon()
        with contextlib.suppress(OSError):
            self.path.unlink()
