"""The fan-out per subscriber frame with cold caches, native hot path against Python's decisions, in one process.

32 subscriber slots as the node wires them (``ForwardedTrack`` feeding ``FrameSender``, real UDP sockets on
127.0.0.1, real libsrtp sessions: ``tests/unit/test_fanout.py``'s ``_slot``) in the steady state, so every frame goes
through ``_fastpath.fan_hot``. Between two frames a 16 MB buffer is written, which evicts the caches as the node's
other work and the other processes do between two frames of a publisher (in the node, a subscriber's frame costs
about twice what a warm loop measures). The modes alternate every 100 frames in the same process, so that both see
the same machine: ``hot`` (``_fastpath.fan_hot`` serves every subscriber) and ``python`` (each subscriber's frame
decided in Python, ``ForwardedTrack.prepare`` and ``FrameSender.send_batched``, then one ``send_lanes`` call:
``media.fanout.use_hot(False)``). Both send through the same C loop, so the difference is the Python decisions.

Printed: the median over rounds of the time per subscriber frame, in µs (``time.perf_counter`` around
``media.fanout.fan_out``: the kernel's UDP send, and on loopback the delivery into the receiving socket, included).

    .venv/bin/python bench/fanout_cold.py                # Opus (one packet a frame) and VP8 (2.5 kB: two)
    .venv/bin/python bench/fanout_cold.py --rounds 40 --kinds opus

``bench/udp_fanout.py`` measures the kernel's part alone (a UDP datagram to each of 32 loopback sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import numpy as np

from media import fanout, sending
from media.forwarding import ForwardedTrack
from media.passthrough import TappedFrame
from media.sending import FrameSender
from tests.unit.test_fanout import _slot
from tests.unit.test_fastpath import _Receiver

SUBSCRIBERS = 32
FRAMES_PER_ROUND = 100
MODES: dict[str, Callable[[], None]] = {
    "hot": lambda: fanout.use_hot(True),
    "python": lambda: fanout.use_hot(False),
}
KINDS = {"opus": ("audio/opus", 48_000, 111, 120, 960), "vp8": ("video/VP8", 90_000, 96, 2500, 3000)}


async def measure(kind: str, rounds: int) -> dict[str, float]:
    mime, clock_rate, pt, size, step = KINDS[kind]
    receivers = [_Receiver() for _ in range(SUBSCRIBERS)]
    moved = _Receiver()
    try:
        slots: list[tuple[ForwardedTrack, FrameSender]] = [
            await _slot(rx, moved, mime, clock_rate, pt) for rx in receivers
        ]
        tracks = [track for track, _ in slots]
        sweep = np.zeros(16 << 20, dtype=np.uint8)
        fanout.fan_out(tracks, TappedFrame(b"\x00" * size, 0), True)  # the first frame sets each timeline
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        n = 1
        for _ in range(rounds):
            for mode, apply in MODES.items():
                apply()
                total = 0.0
                for i in range(FRAMES_PER_ROUND):
                    frame = TappedFrame(b"\x01" + bytes([n % 256]) * size, n * step)
                    n += 1
                    sweep += 1
                    t0 = time.perf_counter()
                    fanout.fan_out(tracks, frame, False)
                    total += time.perf_counter() - t0
                    if i % 20 == 0:
                        for rx in receivers:
                            rx.drain()
                        await asyncio.sleep(0)
                times[mode].append(total / FRAMES_PER_ROUND / SUBSCRIBERS * 1e6)
        return {mode: statistics.median(values[1:] or values) for mode, values in times.items()}
    finally:
        fanout.use_hot(True)
        for rx in (*receivers, moved):
            rx.sock.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=25, help="rounds per mode (each 100 frames to 32 subscribers)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    args = parser.parse_args()
    sending.use_native(True)
    for kind in args.kinds:
        medians = await measure(kind, args.rounds)
        hot, python = medians["hot"], medians["python"]
        print(
            f"{kind}: {hot:.2f} µs per subscriber frame on the hot path, {python:.2f} decided in Python: "
            f"python / hot {python / hot:.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
