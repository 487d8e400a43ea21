"""What the defendant receives behind a thin link, condition by condition (issue 11's table).

One hearing (``tests/thin_link.py``): the node and four court-side publishers (judge, prosecutor, counsel,
witness: aiortc VP8 at 640x360, 15 fps, about 1.2 Mbit/s, following REMB, plus Opus) in one network namespace,
the defendant's client in another; the defendant's downlink, the node-side veth's egress, is shaped by ``tc tbf``
and nftables random loss. The conditions run one after another in the same hearing; after each limited one the
limit is lifted and the time for paused (frozen) video to return is measured, then the link stays unlimited a
little before the next.

Per condition, over its last ``--measure`` seconds (the first ``--settle`` seconds let the node adapt):

- the defendant's audio: packets that arrived of those sent, lowest and highest over the four publishers;
- video per publisher: good frames per second (decoded, code read) and the longest frozen stretch;
- garbled frames (decoded but unreadable: damage the decoder did not notice);
- the others in the hearing: the worst of their audio, video fps and frozen stretch over every flow;
- the defendant's REMB (lowest in the window), the NACKs it sent (packets / sequence numbers asked for), the
  resent (RTX) packets and PLIs; the shaping queue's sent and dropped packets; keyframe requests per publisher
  per second; CPU (cores) of the server, the court-side clients and the defendant's client;
- the server's adaptation facts (paused, resumed, capped) when it logs them.

``--rejoin`` runs each limited condition with the defendant's client joining anew behind it (stopped and started
again with its token, as after a crash or a reboot of its terminal), and measures its first ``--early`` seconds apart
from the ``--measure`` seconds after them: the node knows nothing of a new subscriber's link until its first REMB.

Nothing is asserted (benchmarks are not tests). Needs root (network namespaces). Usage::

    /work/team/heavy .venv/bin/python -m bench.thin_link [--settle 6] [--measure 15] [--lifted 10] [--only 0 3]
    .venv/bin/python -m bench.thin_link --rejoin --only 1 4 5 --measure 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.netns import Shape, netns_cannot
from tests.thin_link import SHORT, ThinLinkHearing, markdown, row, thin_link_hearing

CONDITIONS = (
    Shape(),
    Shape(rate_mbit=2),
    Shape(rate_mbit=1),
    Shape(loss_percent=2),
    Shape(rate_mbit=2, loss_percent=2),
    Shape(rate_mbit=1, loss_percent=2),
)


def run(hearing: ThinLinkHearing, args: argparse.Namespace) -> tuple[list[list[str]], list[str]]:
    """Every condition in turn: the rows, and the return times after each lift."""
    rows: list[list[str]] = []
    returns: list[str] = []
    chosen = [c for i, c in enumerate(CONDITIONS) if not args.only or i in args.only]
    for shape in chosen:
        began = hearing.shape(shape)
        start = began + args.settle
        end = start + args.measure
        w = hearing.window(start, end)
        rows.append(row(shape.label, w))
        print("  ".join(rows[-1]), flush=True)
        if shape == Shape():
            continue
        lifted = hearing.shape(Shape())
        back = hearing.returned(lifted, args.lifted)
        text = ", ".join(f"{SHORT[p]} {'not back' if s is None else f'{s:.2f} s'}" for p, s in back.items())
        returns.append(f"after {shape.label}: {text or 'no video was frozen at the lift'}")
        print(returns[-1], flush=True)
    return rows, returns


def run_rejoins(hearing: ThinLinkHearing, args: argparse.Namespace) -> list[list[str]]:
    """Each limited condition with the defendant's client joining anew behind it (a crash or a reboot of its
    terminal): what it receives in its first ``--early`` seconds, then over ``--measure`` seconds more."""
    rows: list[list[str]] = []
    chosen = [c for i, c in enumerate(CONDITIONS) if (not args.only or i in args.only) and c != Shape()]
    for shape in chosen:
        began = hearing.shape(shape)
        hearing.sleep_until(began + args.settle)
        joined = hearing.rejoin()
        for label, start, end in (
            (f"rejoined behind {shape.label}, first {args.early:g} s", joined, joined + args.early),
            (f"rejoined behind {shape.label}, then", joined + args.early, joined + args.early + args.measure),
        ):
            rows.append(row(label, hearing.window(start, end)))
            print("  ".join(rows[-1]), flush=True)
        hearing.shape(Shape())
        hearing.sleep_until(time.time() + args.lifted)
    return rows


def main() -> None:
    """Run the conditions and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--settle", type=float, default=6.0, help="seconds after shaping before measuring")
    parser.add_argument("--measure", type=float, default=15.0, help="seconds measured per condition")
    parser.add_argument("--lifted", type=float, default=10.0, help="seconds watched after each lift")
    parser.add_argument(
        "--only", type=int, nargs="*", default=[], help="run only these conditions (0-5, in the table's order)"
    )
    parser.add_argument(
        "--rejoin",
        action="store_true",
        help="instead: the defendant's client joins anew behind each limited condition (its first seconds, then)",
    )
    parser.add_argument("--early", type=float, default=5.0, help="with --rejoin: the first seconds measured apart")
    parser.add_argument("--keep", type=Path, help="write the server's and the clients' output into this folder")
    args = parser.parse_args()
    reason = netns_cannot()
    if reason:
        raise SystemExit(f"bench.thin_link: {reason}")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thin-link-") as tmp, thin_link_hearing(Path(tmp)) as hearing:
        setup = time.monotonic() - began
        rows, returns = (run_rejoins(hearing, args), []) if args.rejoin else run(hearing, args)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            hearing.keep_logs(args.keep)
    print()
    print(f"hearing seated in {setup:.1f} s; settle {args.settle:g} s, measured {args.measure:g} s per condition")
    print(markdown(rows))
    print()
    print("Paused video back after the limit was lifted (first good frame at the defendant):")
    for line in returns:
        print(f"- {line}")


if __name__ == "__main__":
    main()
