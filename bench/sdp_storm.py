"""How long a storm of huge offers blocks the media node's event loop.

    .venv/bin/python bench/sdp_storm.py [--participants 7] [--sections 255] [--rounds 3]

A hearing of ``--participants`` aiortc clients (real peers on loopback, each
publishing audio and video) all send, at once, an offer munged to carry
``--sections`` m-lines (their own two plus minimal valid receive-only Opus
sections, each with its own mid, all bundled), as a hostile client can.
Meanwhile a 5 ms ticker measures how late the event loop wakes it: the worst
lateness is the longest the loop was blocked, i.e. how long every other
participant's media and every HTTP request (``/healthz``) waited.
A baseline round of normal offers (2 m-lines) runs first in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

import structlog

from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import ApplyOffer, ClosePeer, CreatePeer, Refused
from rooms.model import Role
from tests.media_clients import MediaClient

HEARING = "hrg_bench_storm"


def munge(sdp: str, sections: int) -> str:
    """``sdp`` padded up to ``sections`` m-lines with minimal valid receive-only Opus sections (new mids, bundled)."""
    lines = sdp.split("\r\n")
    keep = [next(line for line in lines if line.startswith(p)) for p in ("a=ice-ufrag", "a=ice-pwd", "a=fingerprint")]
    extra = max(sections - sdp.count("\nm="), 0)
    copies = [
        "\r\n".join(
            [
                "m=audio 9 UDP/TLS/RTP/SAVPF 96",
                "c=IN IP4 0.0.0.0",
                *keep,
                "a=setup:actpass",
                "a=rtcp-mux",
                "a=rtpmap:96 opus/48000/2",
                "a=recvonly",
                f"a=mid:x{i}",
            ]
        )
        + "\r\n"
        for i in range(extra)
    ]
    head = sdp.rstrip("\r\n") + "\r\n"
    mids = " ".join(f"x{i}" for i in range(extra))
    head = head.replace("a=group:BUNDLE ", f"a=group:BUNDLE {mids} ", 1) if extra else head
    return head + "".join(copies)


async def storm(node: InProcessNode, clients: list[MediaClient], sections: int) -> tuple[float, float, list[str]]:
    """(worst loop lag s, wall time s, reply types) of every client offering ``sections`` m-lines at once."""
    offers = []
    for client in clients:
        await node.call(ClosePeer(hearing_id=HEARING, participant_id=client.name))
        await node.call(CreatePeer(hearing_id=HEARING, participant_id=client.name, role=Role.party))
        offers.append(munge(await client.offer(), sections))
    started = time.perf_counter()
    work: asyncio.Future[Any] = asyncio.ensure_future(
        asyncio.gather(
            *(
                node.call(ApplyOffer(hearing_id=HEARING, participant_id=c.name, sdp=sdp))
                for c, sdp in zip(clients, offers, strict=True)
            )
        )
    )
    worst = 0.0
    while not work.done():
        before = time.perf_counter()
        await asyncio.sleep(0.005)
        worst = max(worst, time.perf_counter() - before - 0.005)
    wall = time.perf_counter() - started
    kinds = [r.code if isinstance(r, Refused) else r.type for r in work.result()]
    return worst, wall, kinds


async def main(participants: int, sections: int, rounds: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    node = InProcessNode(NodeSettings(node_id="node-bench"))
    clients = [MediaClient(f"p{i}", tag=i) for i in range(participants)]
    try:
        for label, count in [("normal offers", 2)] + [(f"{sections} m-lines", sections)] * rounds:
            for client in clients:
                await client.close()
            clients = [MediaClient(f"p{i}", tag=i) for i in range(participants)]
            worst, wall, kinds = await storm(node, clients, count)
            summary = {k: kinds.count(k) for k in sorted(set(kinds))}
            print(
                f"{label:>16}: {participants} offers, worst loop block {worst * 1000:7.1f} ms, "
                f"all answered in {wall * 1000:7.1f} ms, replies {summary}"
            )
    finally:
        for client in clients:
            await client.close()
        await node.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=7)
    parser.add_argument("--sections", type=int, default=255)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.participants, args.sections, args.rounds))
