"""Round trip of a bus request (signaling -> node command -> reply) in-process and over Redis.

    .venv/bin/python bench/bus.py [--requests 2000] [--concurrency 32] [--payload 600]

For each bus: ``--requests`` requests one after the other (the latency a hub's command sees), then the same
number with ``--concurrency`` in flight (throughput), with a payload the size of a typical node command (an
``apply_offer`` is ~5 kB, most commands ~200 B). Requester and responder are two bus instances, as two processes
would hold (Redis: two connections; in-process: one bus). Redis is a redis-server this script starts on a free
loopback port and stops. Figures are ratios against the in-process baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import structlog

from bench.booking import pct, start_redis
from rooms.backends import open_bus
from rooms.bus import Bus


async def measure(requester: Bus, responder: Bus, requests: int, concurrency: int, size: int) -> dict[str, float]:
    """Sequential latencies (ms) and concurrent throughput (requests/s)."""

    async def echo(payload: bytes) -> bytes:
        return payload

    await responder.serve("node.bench.cmd", echo)
    payload = b"x" * size
    for _ in range(50):  # warm-up
        await requester.request("node.bench.cmd", payload, attempt_seconds=5)
    latencies: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        await requester.request("node.bench.cmd", payload, attempt_seconds=5)
        latencies.append((time.perf_counter() - started) * 1000)
    room = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with room:
            await requester.request("node.bench.cmd", payload, attempt_seconds=5)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "per_second": requests / elapsed,
    }


async def main() -> None:
    """Parse arguments, run each bus, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--payload", type=int, default=600, help="request and reply size in bytes")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rows: list[tuple[str, dict[str, float]]] = []
    bus, records = await open_bus(None, process_id="bench")
    rows.append(("in-process", await measure(bus, bus, args.requests, args.concurrency, args.payload)))
    await bus.close()
    await records.close()
    with tempfile.TemporaryDirectory(prefix="courtlink-bench-") as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            a, ra = await open_bus(url, process_id="signaling")
            b, rb = await open_bus(url, process_id="node")
            try:
                rows.append(("redis", await measure(a, b, args.requests, args.concurrency, args.payload)))
            finally:
                for closing in (a.close, b.close, ra.close, rb.close):
                    await closing()
        finally:
            proc.terminate()
            proc.wait()
    base = rows[0][1]
    print(f"{args.requests} requests of {args.payload} B; concurrency {args.concurrency} for throughput")
    print(f"{'bus':11} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'req/s':>9} {'p50/base':>9} {'req/s/base':>10}")
    for name, r in rows:
        print(
            f"{name:11} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['mean_ms']:>8.3f} {r['per_second']:>9.0f} "
            f"{r['p50_ms'] / base['p50_ms']:>9.1f} {r['per_second'] / base['per_second']:>10.3f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
