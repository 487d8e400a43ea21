"""Time from a late subscriber's connect to its first decoded video frame.

One publisher whose VP8 encoder never makes a keyframe on its own (aiortc's
encoder keyframes only at the start, every 3000 frames, or when asked) is
forwarded by the in-process node; late subscribers join one after another and
each one's time to first decoded frame is measured. The baseline in the same
run is a subscriber that joins at the publisher's start (it gets the first
keyframe without asking). Usage: ``python -m bench.late_join [--joiners 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import structlog

from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import SetPublishing, SetReceiving
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_bench"


async def _first_frame(node: InProcessNode, signaling: DirectSignaling, name: str) -> float:
    """Seconds from this subscriber's connect to its first decoded frame of the publisher."""
    client = MediaClient(name, video=False, audio=False)
    started = time.perf_counter()
    await signaling.join(client)
    await node.call(SetReceiving(hearing_id=HEARING, participant_id=name, publishers=("judge",)))
    if not await eventually(lambda: len(client.codes(5)) >= 1, within=20, step=0.005):
        return float("nan")
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def main(joiners: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    node = InProcessNode(NodeSettings())
    async with hearing(node, HEARING) as signaling:
        pub = MediaClient("judge", tag=5, audio=False)
        await signaling.join(pub, Role.judge)
        await node.call(SetPublishing(hearing_id=HEARING, participant_id="judge", sources=(Source.camera,)))
        baseline = await _first_frame(node, signaling, "early")
        late: list[float] = []
        for i in range(joiners):
            await asyncio.sleep(1.5)  # well into the stream: no keyframe is coming by itself
            late.append(await _first_frame(node, signaling, f"late{i}"))
        await pub.close()
    await node.close()
    ok = [x for x in late if x == x]
    print(f"baseline (joins at the publisher's start): {baseline * 1000:.0f} ms to first decoded frame")
    print(
        f"late joiners ({len(ok)}/{joiners} decoded): p50 {statistics.median(ok) * 1000:.0f} ms, "
        f"max {max(ok) * 1000:.0f} ms; keyframe requests reaching the publisher: {pub.keyframe_requests}"
    )
    print(f"late p50 / baseline: {statistics.median(ok) / baseline:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--joiners", type=int, default=10)
    asyncio.run(main(parser.parse_args().joiners))
