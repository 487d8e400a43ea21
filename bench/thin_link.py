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

Nothing is asserted (benchmarks are not tests). Needs root (network namespaces). Usage::

    /work/team/heavy .venv/bin/python -m bench.thin_link [--settle 6] [--measure 15] [--lifted 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.netns import Shape, netns_cannot
from tests.thin_link import ThinLinkHearing, Window, thin_link_hearing
from tests.thin_link_client import COURT_SIDE

CONDITIONS = (
    Shape(),
    Shape(rate_mbit=2),
    Shape(rate_mbit=1),
    Shape(loss_percent=2),
    Shape(rate_mbit=2, loss_percent=2),
    Shape(rate_mbit=1, loss_percent=2),
)
SHORT = {"judge": "J", "prosecutor": "P", "counsel": "C", "witness": "W"}


def defendant_cells(w: Window) -> list[str]:
    """The defendant's part of one row."""
    audio = [w.flow("defendant", p, "audio").delivered * 100 for p in COURT_SIDE]
    video = [w.flow("defendant", p, "video") for p in COURT_SIDE]
    fps = " / ".join(f"{v.fps:.1f}" for v in video)
    stall = " / ".join(f"{v.stall:.1f}" if v.stall else "<0.2" for v in video)
    garbled = sum(v.garbled for v in video)
    lows = [v.remb_low for v in video if v.remb_low is not None]
    remb = f"{min(lows) // 1000}" if lows else "-"
    nacks = sum(v.nacks for v in video)
    seqs = sum(v.nack_seqs for v in video)
    rtx = sum(v.rtx for v in video)
    pli = sum(v.pli for v in video)
    return [
        f"{min(audio):.1f}–{max(audio):.1f}%",
        fps,
        stall,
        str(garbled),
        remb,
        f"{nacks}/{seqs}",
        str(rtx),
        str(pli),
    ]


def others_cell(w: Window) -> str:
    """The worst any court-side person received of anyone (the defendant included)."""
    audio, fps, stall, worst = 100.0, 99.0, 0.0, ""
    for receiver in COURT_SIDE:
        for publisher in (*COURT_SIDE, "defendant"):
            if publisher == receiver:
                continue
            a = w.flow(receiver, publisher, "audio").delivered * 100
            v = w.flow(receiver, publisher, "video")
            if a < audio:
                audio = a
            if v.fps < fps:
                fps, worst = v.fps, f"{receiver}<-{publisher}"
            stall = max(stall, v.stall)
    return f"audio ≥{audio:.1f}%, video ≥{fps:.1f} fps ({worst}), frozen ≤{stall:.1f} s"


def row(label: str, w: Window) -> list[str]:
    """One table row."""
    kf = " / ".join(f"{w.keyframes.get(p, 0) / (w.end - w.start):.2f}" for p in COURT_SIDE)
    cpu = " / ".join(f"{w.cpu.get(k, 0.0):.2f}" for k in ("server", "court", "defendant"))
    facts = ", ".join(f"{k} {v}" for k, v in sorted(w.facts.items())) or "-"
    target = " / ".join(str(w.target_kbps.get(p, "-")) for p in COURT_SIDE)
    return [label, *defendant_cells(w), others_cell(w), f"{w.queue[0]}/{w.queue[1]}", kf, target, cpu, facts]


HEADER = [
    "defendant's downlink",
    "defendant's audio",
    "video fps J / P / C / W",
    "longest frozen s J / P / C / W",
    "garbled",
    "REMB low kbit/s",
    "NACKs sent (pkts/seqs)",
    "RTX recv",
    "PLI sent",
    "others in the hearing",
    "queue sent/dropped",
    "keyframe req/s J / P / C / W",
    "encoder kbit/s J / P / C / W",
    "CPU server / court / defendant",
    "node facts",
]


def markdown(rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def run(hearing: ThinLinkHearing, args: argparse.Namespace) -> tuple[list[list[str]], list[str]]:
    """Every condition in turn: the rows, and the return times after each lift."""
    rows: list[list[str]] = []
    returns: list[str] = []
    for shape in CONDITIONS:
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


def main() -> None:
    """Run the conditions and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--settle", type=float, default=6.0, help="seconds after shaping before measuring")
    parser.add_argument("--measure", type=float, default=15.0, help="seconds measured per condition")
    parser.add_argument("--lifted", type=float, default=10.0, help="seconds watched after each lift")
    args = parser.parse_args()
    reason = netns_cannot()
    if reason:
        raise SystemExit(f"bench.thin_link: {reason}")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thin-link-") as tmp, thin_link_hearing(Path(tmp)) as hearing:
        setup = time.monotonic() - began
        rows, returns = run(hearing, args)
    print()
    print(f"hearing seated in {setup:.1f} s; settle {args.settle:g} s, measured {args.measure:g} s per condition")
    print(markdown(rows))
    print()
    print("Paused video back after the limit was lifted (first good frame at the defendant):")
    for line in returns:
        print(f"- {line}")


if __name__ == "__main__":
    main()
