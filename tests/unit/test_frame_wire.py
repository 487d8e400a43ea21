"""The frame pipe's wire codec: every message round-trips, and no byte string from outside gets past it unchecked."""

from __future__ import annotations

import random
import struct

import pytest

from protocol.frames import (
    MAC_BYTES,
    MAX_MESSAGE_BYTES,
    EncodedFrame,
    FrameDecodeError,
    HelloRefused,
    MessageDecoder,
    NonceCache,
    PipeHello,
    PipeKeepalive,
    PipeKeyframeRequest,
    PipeMessage,
    PipeRefused,
    PipeTrackStopped,
    PipeWelcome,
    SenderReport,
    TrackInfo,
    check_hello,
    decode_message,
    encode_message,
    make_hello,
    message_length,
)
from rooms.model import Source

SECRET = b"a shared secret of the cluster"
NOW = 1_790_000_000.0

SAMPLES: list[PipeMessage] = [
    make_hello("rec-1", "hrg_1", "recorder", secret=SECRET, now=NOW, nonce=bytes(range(16))),
    PipeWelcome(keepalive_ms=5000),
    PipeRefused("bad_mac"),
    TrackInfo("hrg_1", "judge:cam", "judge", Source.camera, "video", "VP8", 90_000),
    TrackInfo("hrg_1", "judge:mic", "judge", Source.microphone, "audio", "opus", 48_000),
    EncodedFrame("judge:cam", b"\x10\x02" * 3000, (1 << 32) + 17, True, NOW + 0.125),
    EncodedFrame("judge:mic", b"", 0, False, NOW),
    SenderReport("judge:cam", NOW - 0.5, 123456),
    PipeTrackStopped("judge:cam", "consultation"),
    PipeKeyframeRequest("judge:cam"),
    PipeKeepalive(),
]


def test_every_message_round_trips() -> None:
    """What the node sends is exactly what the recorder's sink gets (ids, payload bytes, times, keyframe flag)."""
    for message in SAMPLES:
        wire = encode_message(message)
        assert message_length(wire[:4]) == len(wire) - 4
        assert decode_message(wire[4:]) == message


def test_decoder_returns_whole_messages_whatever_the_chunking() -> None:
    """A stream cut at every possible place still yields the same messages, never a part of a frame."""
    stream = b"".join(encode_message(m) for m in SAMPLES)
    rng = random.Random(7)
    for _ in range(200):
        decoder = MessageDecoder()
        got: list[PipeMessage] = []
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 900)
            got += decoder.feed(stream[pos : pos + step])
            pos += step
        assert got == SAMPLES
        assert decoder.buffered == 0


def test_a_huge_length_prefix_is_refused_before_anything_is_buffered() -> None:
    """A peer announcing a message over the bound is refused at the prefix (nobody buffers gigabytes)."""
    decoder = MessageDecoder()
    with pytest.raises(FrameDecodeError) as caught:
        decoder.feed(struct.pack(">I", MAX_MESSAGE_BYTES + 1) + b"\x11")
    assert caught.value.reason == "too_large"
    assert decoder.buffered == 0
    with pytest.raises(FrameDecodeError):
        decoder.feed(encode_message(PipeKeepalive()))  # a broken stream stays broken


def test_encoder_refuses_what_the_decoder_would() -> None:
    """The node never sends an oversized frame or id: it gets a ValueError instead of a peer's refusal."""
    with pytest.raises(ValueError, match="larger than"):
        encode_message(EncodedFrame("t", bytes(MAX_MESSAGE_BYTES), 0, True, NOW))
    with pytest.raises(ValueError, match="longer than"):
        encode_message(PipeKeyframeRequest("x" * 600))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"\x7f", "unknown_type"),
        (b"\x30\x00", "trailing_bytes"),
        (b"\x20\x00\x05ab", "truncated"),
        (b"\x20\x00\x02\xff\xfe", "bad_string"),
        (b"\x20\x00\x00", "bad_string"),
        (b"\x02\x00\x00\x00\x00", "bad_value"),
        (b"\x11\x00\x01t" + struct.pack(">qdB", 1, float("nan"), 1), "bad_value"),
        (b"\x11\x00\x01t" + struct.pack(">qdB", 1, 1.0, 6), "bad_value"),
    ],
)
def test_malformed_messages_are_named(body: bytes, reason: str) -> None:
    """Each kind of bad message raises FrameDecodeError with a reason the logs can name."""
    with pytest.raises(FrameDecodeError) as caught:
        decode_message(body)
    assert caught.value.reason == reason


def test_a_track_with_an_unknown_source_or_kind_is_refused() -> None:
    """A track_started naming a source or kind the recorder does not know never reaches the sink."""
    good = encode_message(SAMPLES[3])[4:]
    for bad in (good.replace(b"camera", b"camerX"), good.replace(b"video", b"vide0")):
        with pytest.raises(FrameDecodeError):
            decode_message(bad)


def test_fuzz_random_truncated_and_mutated_input_only_ever_raises_frame_decode_error() -> None:
    """Random bytes, cut streams and flipped bytes give messages or FrameDecodeError, nothing else (seeded loop)."""
    rng = random.Random(20261130)
    stream = b"".join(encode_message(m) for m in SAMPLES)
    for i in range(3000):
        choice = i % 4
        if choice == 0:
            data = rng.randbytes(rng.randint(0, 300))
        elif choice == 1:
            data = stream[: rng.randint(0, len(stream))]
        elif choice == 2:
            mutated = bytearray(stream)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        else:
            data = struct.pack(">I", rng.choice([0, MAX_MESSAGE_BYTES + 1, 2**32 - 1, 3])) + rng.randbytes(40)
        decoder = MessageDecoder()
        try:
            for message in decoder.feed(data):
                # Whatever decodes also encodes back to the same bytes: nothing half-checked got through.
                assert decode_message(encode_message(message)[4:]) == message
        except FrameDecodeError:
            pass
        assert decoder.buffered <= MAX_MESSAGE_BYTES


def test_hello_with_the_secret_is_accepted_once() -> None:
    """A recorder with the cluster secret gets in; the same hello replayed is refused (replayed)."""
    hello = make_hello("rec-1", "hrg_1", "recorder", secret=SECRET, now=NOW, nonce=b"n" * 16)
    nonces = NonceCache()
    check_hello(hello, secret=SECRET, now=NOW + 5, nonces=nonces)
    with pytest.raises(HelloRefused) as caught:
        check_hello(hello, secret=SECRET, now=NOW + 6, nonces=nonces)
    assert caught.value.reason == "replayed"


@pytest.mark.parametrize(
    ("secret", "skew", "change", "reason"),
    [
        (b"another secret of some cluster", 0, {}, "bad_mac"),
        (None, 0, {}, "bad_mac"),
        (SECRET, 61, {}, "stale"),
        (SECRET, -61, {}, "stale"),
        (SECRET, 0, {"hearing_id": "hrg_2"}, "bad_mac"),
        (SECRET, 0, {"participant_id": "judge"}, "bad_mac"),
        (SECRET, 0, {"version": 2}, "bad_version"),
    ],
)
def test_bad_hellos_are_refused(secret: bytes | None, skew: int, change: dict[str, object], reason: str) -> None:
    """A wrong or missing secret, a clock off by more than 60 s, or an altered field: the node refuses the hello."""
    hello = make_hello("rec-1", "hrg_1", "recorder", secret=secret, now=NOW + skew, nonce=b"m" * 16)
    if change:
        fields = {f: getattr(hello, f) for f in PipeHello.__dataclass_fields__} | change
        hello = PipeHello(**fields)
    with pytest.raises(HelloRefused) as caught:
        check_hello(hello, secret=SECRET, now=NOW, nonces=NonceCache())
    assert caught.value.reason == reason


def test_without_a_secret_the_mac_is_not_checked() -> None:
    """A node without a secret (loopback only) accepts an unsigned hello, still refusing a stale one."""
    hello = make_hello("rec-1", "hrg_1", "recorder", secret=None, now=NOW, nonce=b"u" * 16)
    assert hello.mac == bytes(MAC_BYTES)
    check_hello(hello, secret=None, now=NOW, nonces=NonceCache())
    with pytest.raises(HelloRefused):
        check_hello(hello, secret=None, now=NOW + 100, nonces=NonceCache())


def test_nonce_cache_stays_bounded() -> None:
    """Floods of hellos cannot grow the node's nonce memory beyond its bound; old nonces expire."""
    cache = NonceCache(max_entries=100)
    for i in range(100):
        assert cache.add(i.to_bytes(16, "big"), NOW)
    assert not cache.add(b"x" * 16, NOW)  # full of live nonces: refused, not grown
    assert len(cache) == 100
    assert cache.add(b"x" * 16, NOW + 1000)  # the old ones have expired
    assert len(cache) == 1


def test_only_loopback_peers_count_as_loopback() -> None:
    """Without a secret the node serves 127.0.0.0/8 and ::1 only; a LAN or mapped-LAN address is refused."""
    from media.frame_pipe import is_loopback

    assert is_loopback(("127.0.0.1", 4000))
    assert is_loopback(("127.3.2.1", 4000))
    assert is_loopback(("::1", 4000, 0, 0))
    assert is_loopback(("::ffff:127.0.0.1", 4000, 0, 0))
    assert not is_loopback(("10.0.0.5", 4000))
    assert not is_loopback(("::ffff:192.168.1.9", 4000, 0, 0))
    assert not is_loopback(("fe80::1%eth0", 4000, 0, 2))
    assert not is_loopback(None)
    assert not is_loopback(("not an address", 1))
