"""The kernel's part of a fan-out on loopback: what a datagram to each subscriber costs, and what sharing one socket
(one ``sendmmsg`` for every subscriber of a frame) would save.

``bench/udp_fanout.c`` (built with gcc into a temporary directory) sends one frame to 32 loopback sockets, a datagram
each, 20,000 times, two ways alternating per round: a socket per subscriber with one ``sendmmsg`` each (what the
node does: every ICE connection has its own socket), and one socket with one ``sendmmsg`` carrying all 32 messages
(what a node whose subscribers all share one UDP port, as mediasoup's ``WebRtcServer`` or LiveKit's single port,
could do). Nobody waits on the receiving sockets, so no wake-up is counted; on loopback the sender's system call
also delivers each datagram into the receiving socket.

    .venv/bin/python bench/udp_fanout.py                  # 200-byte (Opus) and 1,200-byte (video) datagrams
    .venv/bin/python bench/udp_fanout.py --sizes 200 --rounds 9

Compare with ``bench/fanout_cold.py``: the node's whole fan-out per subscriber frame (SRTP, the lane's state, the
checks of the hot path and this system call).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("udp_fanout.c")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[200, 1200], help="datagram sizes in bytes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20_000, help="frames per round and way")
    args = parser.parse_args()
    if shutil.which("gcc") is None:
        sys.exit("bench/udp_fanout.py: gcc is needed (apt-get install -y gcc)")
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "udp_fanout"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(SOURCE)], check=True)
        for size in args.sizes:
            out = subprocess.run(
                [str(binary), str(size), str(args.frames), str(args.rounds)], check=True, capture_output=True, text=True
            ).stdout
            each = [float(line.split()[1]) for line in out.splitlines()]
            shared = [float(line.split()[3]) for line in out.splitlines()]
            e, s = statistics.median(each), statistics.median(shared)
            print(
                f"{size} bytes: {e:.2f} µs per subscriber frame with a socket each, {s:.2f} with one shared socket "
                f"and one call: shared / each {s / e:.2f}x (median of {args.rounds} rounds)"
            )


if __name__ == "__main__":
    main()
