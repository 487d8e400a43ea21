"""The composition root: ``courtlink serve`` wires store, signaling, a media node and a recorder.

This is the only module that knows every package; each piece gets what it
needs through its constructor, and resources are opened and closed here in
order (store first, node and recorder after, closed in reverse).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import AsyncExitStack
from datetime import timedelta

import structlog
from aiohttp import web

from courtlink.bootstrap import admin_key, ensure_data_dir, token_secret
from courtlink.logs import configure_logging
from courtlink.settings import Settings
from rooms.backends import open_store
from rooms.store import Store
from signaling.app import create_app
from signaling.config import ApiKey, SignalingConfig

log = structlog.get_logger("courtlink")


def signaling_config(settings: Settings, admin: str, secret: str) -> SignalingConfig:
    """The signaling front door's configuration from the settings tree and first-run secrets."""
    keys = [ApiKey(name="admin", key=admin, scope="admin")]
    keys += [ApiKey(name=k.name, key=k.key, scope=k.scope) for k in settings.api_keys]
    return SignalingConfig(
        api_keys=tuple(keys),
        token_secret=secret,
        token_margin_before=timedelta(minutes=settings.tokens.margin_before_minutes),
        token_margin_after=timedelta(minutes=settings.tokens.margin_after_minutes),
        public_base_url=settings.public_url,
    )


async def build_app(settings: Settings, store: Store, stack: AsyncExitStack) -> web.Application:
    """The all-in-one application on an open store; resources it opens are closed by ``stack``."""
    data_dir = ensure_data_dir(settings.data_dir)
    admin = settings.admin_key.get_secret_value() if settings.admin_key else admin_key(data_dir).value
    secret = settings.tokens.secret.get_secret_value() if settings.tokens.secret else token_secret(data_dir).value
    return create_app(signaling_config(settings, admin, secret), store)


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly (sockets GOING_AWAY, peers closed, archives sealed)."""
    configure_logging(settings.log_level, settings.log_format)
    data_dir = ensure_data_dir(settings.data_dir)
    created = None if settings.admin_key else admin_key(data_dir)
    async with AsyncExitStack() as stack:
        store = await open_store(settings.redis_url, data_dir)
        stack.push_async_callback(store.close)
        app = await build_app(settings, store, stack)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = _bound_port(runner) or settings.port
        url = f"http://{settings.host if ':' not in settings.host else f'[{settings.host}]'}:{port}"
        if created is not None and created.created:
            print(f"courtlink: admin API key (shown once, kept in {data_dir / 'admin.key'}): {created.value}")
        print(f"courtlink: serving {url}  (data: {data_dir}, store: {'redis' if settings.redis_url else 'sqlite'})")
        sys.stdout.flush()
        log.info("server_started", url=url, data_dir=str(data_dir))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("server_stopping")


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
