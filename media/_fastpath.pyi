"""The media node's per-packet send loop in C (media/_fastpath.c); media/sending.py falls back to Python without it."""

from typing import Any

def send_frame(
    fd: int,
    sockaddr: bytes,
    session: int,
    protect: int,
    limit: int,
    history: dict[int, bytes],
    history_size: int,
    chunks: list[bytes],
    head: bytes,
    rest: bytes,
    first_byte: int,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    gso: bool,
) -> tuple[list[bytes], int, int, bool] | None:
    """Build, record, SRTP-protect and send one frame's RTP packets to one subscriber with ``sendmmsg``.

    Packet ``i`` is the 12-byte header (``first_byte``; ``payload_type``, with the marker bit on the last packet;
    sequence number ``(sequence + i) & 0xFFFF``; ``timestamp``; ``ssrc``), then ``head`` for the first packet and
    ``rest`` for the others, then ``chunks[i]``. It is stored unprotected in ``history[seq % history_size]``,
    protected by libsrtp's ``srtp_protect`` at address ``protect`` with the ``srtp_t`` ``session``, and sent on
    socket ``fd`` to ``sockaddr`` (a C ``struct sockaddr``), all with one ``sendmmsg``. With ``gso``, each run of
    equal-size packets (the last may be shorter) is one message with ``UDP_SEGMENT``: the kernel splits it into
    the same datagrams.

    None: every packet went out. Otherwise ``(unsent, start, count, refused)``: ``unsent`` are protected packets,
    in order, that the socket did not take (it would block, or failed); packets ``start`` to ``count - 1`` were not
    protected (one longer than ``limit``, or an SRTP error; from ``start`` on none is in ``history`` but maybe
    ``start`` itself). The caller sends both as its own loop would. ``refused``: the socket refused segmentation
    offload, the packets went out one datagram each; do not ask again.
    """

def send_frames(
    jobs: list[tuple[Any, ...]],
) -> list[tuple[list[bytes], int, int, bool] | BaseException | None]:
    """``send_frame(*job)`` for each 16-tuple ``job``, in order, in one call (one publisher frame to all its
    subscribers, :mod:`media.fanout`). Each result is what that ``send_frame`` returned, or the exception it raised:
    one job's failure does not stop the others."""

def send_lanes(
    entries: list[tuple[tuple[Any, ...], int, list[bytes]]], ntp: int
) -> list[tuple[Any, ...] | BaseException | None]:
    """One publisher frame to all its subscribers, each ``(lane, pts, chunks)``: ``lane`` is the 15-tuple
    ``(fd, sockaddr, session, protect, limit, history, history_size, payload_type, ssrc, gso, extensions,
    abs_send_time_offset, vp8, owner, sender)`` (``FrameSender._lane_config``), ``pts`` the frame's time in the
    sender's clock, ``chunks`` the frame's payloads (VP8: the pieces after each payload descriptor).

    Per entry, what ``FrameSender._send`` and ``_sent`` do: the timestamp (``owner._timestamp_origin + pts``), the
    prefixes (``extensions`` with abs-send-time from ``ntp`` at ``abs_send_time_offset`` unless -1; VP8: the payload
    descriptor with ``owner._picture_id``), then :func:`send_frame` from ``owner._sequence``; then ``owner``'s
    ``_sequence``, ``_picture_id`` (VP8), ``frames_sent``, ``packets_sent``, ``native_frames`` and ``sender``'s
    sender-report state (NTP and RTP time, octet and packet counts) are advanced for all the frame's packets.
    Empty ``chunks``: nothing sent, nothing changed.

    Each result: None (all sent), the exception the entry raised, or what :func:`send_frame` hands back followed by
    ``(head, rest, first_byte, sequence, timestamp)`` to send the rest with."""

def sockaddr(host: str, port: int) -> bytes | None:
    """The C ``struct sockaddr`` of a numeric IPv4 or IPv6 ``host`` and ``port``; None if ``host`` is not one."""

def recv_rtp(
    data: bytes, session: int, unprotect: int, limit: int, ids: Any, packet_class: type, extensions_class: type
) -> Any:
    """Unprotect one SRTP datagram with libsrtp's ``srtp_unprotect`` (at address ``unprotect``) on the ``srtp_t``
    ``session`` and parse it as aiortc's ``RtpPacket.parse`` does with the header-extension ids ``ids`` (a
    ``HeaderExtensionsMap``'s own ``HeaderExtensions`` of ids): an instance of ``packet_class`` (aiortc's ``RtpPacket``,
    its ``extensions`` a ``extensions_class``), or the int 0 (longer than ``limit`` or the C buffer: untouched, for
    aiortc's own path), 1 (SRTP refused it: forged or replayed) or 2 (not a valid RTP packet: aiortc drops it)."""

def vp8_depayload(payload: bytes) -> bytes | None:
    """What aiortc's ``vp8_depayload`` returns (the payload after the VP8 payload descriptor); None where it raises
    ``ValueError`` (a truncated descriptor)."""

def recv_rtcp(data: bytes, session: int, unprotect_rtcp: int, limit: int) -> bytes | int:
    """Unprotect one SRTCP datagram with libsrtp's ``srtp_unprotect_rtcp`` (at address ``unprotect_rtcp``) on the
    ``srtp_t`` ``session``: the plain RTCP compound packet, or the int 0 (longer than ``limit``: untouched) or 1
    (SRTCP refused it)."""

def configure_hot(track_type: type, connected: Any) -> None:
    """The consumer type :func:`fan_hot` serves (``media.forwarding.ForwardedTrack``: exactly that type) and aiortc's
    DTLS state in which a transport carries media (``State.CONNECTED``)."""

def fan_hot(
    consumers: list[Any], frame: Any, keyframe: bool, ntp: int, now: float
) -> tuple[list[Any], list[tuple[Any, ...]]] | None:
    """One publisher ``frame`` (a ``TappedFrame``) to every consumer in the steady state, in C, in order; ``ntp`` is the
    frame's abs-send-time (64-bit NTP), ``now`` is ``time.monotonic()``.

    A consumer is in the steady state when ``ForwardedTrack.prepare`` would return its sender with no effect but the
    outgoing timeline, and ``FrameSender._ready_lane`` the same lane: live, not paused, no layer pending, sendable,
    its gate open (no gate: audio; a keyframe of a gated video is never hot), nothing queued, no sequence jump due,
    not the top priority video of a constrained subscriber, not paced; its sender enabled, nothing paced, its
    ``_hot`` lane still its ``_lane``, the DTLS transport connected with the same SRTP session and nominated ICE pair,
    nothing in the socket's write buffer and the socket open; its timeline set (``_offset``). These are read from the
    objects at every call. For each such consumer: ``_last_out`` and ``_last_out_time`` (``now``) as ``_pts`` sets
    them, the sender's ``_keyframe_sent`` cleared, the frame sent through its lane as :func:`send_lanes` does (the
    chunks from ``frame.payloads``, made by ``sender._hot_chunks(frame)`` if missing), then, if all went out,
    ``forwarded`` and ``hold_times`` as ``media.fanout.fan_out`` counts them.

    None: every consumer was served. Otherwise ``(cold, handed)``: the consumers not in the steady state (for the
    Python loop, in order), and ``(consumer, sender, result, chunks)`` for each whose lane handed something back (what
    :func:`send_lanes` would return for it, or the exception it raised): ``sender._finish_lane(result, chunks)``
    finishes it."""
