"""A signaling process for the failover drill, started as its own OS process (test-only entry point).

The same wiring ``courtlink signaling`` has (REST and WebSocket over the Redis store, a media node reached over
the bus by :class:`signaling.remote_node.RemoteNode`, room ownership over the Redis bus and records) with the
test's API key and token secret, so the drill can kill it with SIGKILL and watch another process take over::

    python -m tests.signaling_owner_process --redis URL --prefix P --process-id ID --node-id N --lease 6

It prints ``courtlink: signaling <url> ready`` once it listens on 127.0.0.1 and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp import web

from rooms.backends import open_bus, open_store
from signaling.app import create_app
from signaling.ownership import OwnerSettings
from signaling.remote_node import RemoteNode
from signaling.ws import WsSettings, ws_registrar
from tests.ws_fixtures import ws_config


async def run(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT."""
    async with AsyncExitStack() as stack:
        store = await open_store(args.redis, Path(args.data_dir), key_prefix=args.prefix)
        stack.push_async_callback(store.close)
        bus, records = await open_bus(args.redis, process_id=args.process_id, key_prefix=args.prefix)
        stack.push_async_callback(records.close)
        stack.push_async_callback(bus.close)
        node = RemoteNode(bus, args.node_id, attempt_seconds=2.0, retries=1)
        await node.start()
        stack.push_async_callback(node.close)
        owners = OwnerSettings(process_id=args.process_id, lease_seconds=args.lease)
        registrar = ws_registrar(node, WsSettings(), bus=bus, records=records, owners=owners)
        app = create_app(ws_config(), store, registrars=[registrar])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"courtlink: signaling http://127.0.0.1:{port} ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(prog="signaling_owner_process")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--process-id", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--lease", type=float, default=6.0)
    parser.add_argument("--data-dir", required=True)
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
