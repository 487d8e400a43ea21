"""The composition root: ``courtlink serve`` wires store, signaling, a media node and a recorder.

This is the only module that knows every package; each piece gets what it
needs through its constructor, and resources are opened and closed here in
order (store first, node and recorder after, closed in reverse).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta

import structlog
from aiohttp import web

from courtlink import eventloop
from courtlink.bootstrap import admin_key, ensure_data_dir, token_secret
from courtlink.logs import configure_logging, stop_on_signals
from courtlink.nodes import NodeHeartbeat
from courtlink.settings import Settings
from courtlink.tls import server_context
from media.node import InProcessNode
from media.settings import IceServer, NodeSettings
from protocol.node import NodeControl
from recorder.directory import ArchiveDirectory
from recorder.service import build_service
from rooms.backends import open_store
from rooms.bus import InProcessRecords
from rooms.store import Store
from signaling.app import create_app
from signaling.config import ApiKey, SignalingConfig
from signaling.node_pool import NodePool, store_regions
from signaling.recorder_link import HubRecorderLink
from signaling.rest_directory import directory_routes
from signaling.serving import app_runner
from signaling.turn import TurnSettings
from signaling.webclient import setup_web
from signaling.ws import HUB_KEY, WsSettings, ws_registrar

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
        max_body_bytes=settings.http.max_body_bytes,
        header_timeout_seconds=settings.http.header_timeout_seconds,
        body_timeout_seconds=settings.http.body_timeout_seconds,
    )


def node_settings(settings: Settings) -> NodeSettings:
    """The embedded media node's settings."""
    media = settings.media
    return NodeSettings(
        node_id=media.node_id,
        announce_addresses=tuple(media.announce_addresses),
        ice_servers=tuple(IceServer(urls=(url,)) for url in media.ice_servers),
        last_n=media.last_n,
        udp_port_min=media.udp_port_min,
        udp_port_max=media.udp_port_max,
        adaptation=media.adaptation,
        adapt_hold_seconds=media.adapt_hold_seconds,
        min_video_kbps=media.min_video_kbps,
        nack_budget_share=media.nack_budget_share,
        simulcast=media.simulcast,
    )


def turn_settings(settings: Settings) -> TurnSettings:
    """TURN for the clients' ``joined``; the media node has a reachable address of its own and uses none."""
    media = settings.media
    return TurnSettings(
        urls=tuple(media.turn_urls), secret=media.turn_secret, lifetime_seconds=media.turn_credential_seconds
    )


async def build_app(settings: Settings, store: Store, stack: AsyncExitStack) -> web.Application:
    """The all-in-one application on an open store; resources it opens are closed by ``stack``.

    One media node and (unless switched off) one recorder run in this process;
    signaling reaches them only through the node-control and directory interfaces.
    """
    data_dir = ensure_data_dir(settings.data_dir)
    admin = settings.admin_key.get_secret_value() if settings.admin_key else admin_key(data_dir).value
    secret = settings.tokens.secret.get_secret_value() if settings.tokens.secret else token_secret(data_dir).value

    node = InProcessNode(node_settings(settings))
    stack.push_async_callback(node.close)
    pool = await embedded_pool(settings, node, store, stack)
    ws = WsSettings(
        **settings.session.model_dump(),
        ice_servers=tuple(settings.media.ice_servers),
        court_timezone=settings.court_timezone,
        turn=turn_settings(settings),
    )
    archive = ArchiveDirectory(data_dir)
    registrars = [
        ws_registrar(pool, ws),
        directory_routes(archive, pool, pool),
        setup_web,
    ]
    app = create_app(signaling_config(settings, admin, secret), store, registrars=registrars)
    if settings.recorder.enabled:
        app.cleanup_ctx.append(_recording(settings, node, store))
    return app


async def embedded_pool(settings: Settings, node: InProcessNode, store: Store, stack: AsyncExitStack) -> NodePool:
    """The node pool of ``courtlink serve``: the one embedded node, registered in in-process records.

    Signaling drives it through the same :class:`NodePool` (placement, routing, the registry behind
    ``GET /api/v1/nodes``) as ``courtlink signaling`` drives a network of nodes. The node's record never
    lapses: it lives and dies with this process.
    """
    records = InProcessRecords()
    heartbeat = NodeHeartbeat(
        node, records, region=settings.media.region, capacity_peers=settings.media.capacity_peers, ttl=None
    )
    await heartbeat.start()
    stack.push_async_callback(heartbeat.stop)

    async def connect(node_id: str) -> NodeControl:
        return node  # the only node there is

    pool = NodePool(records, connect, region_of=store_regions(store))
    await pool.start()
    stack.push_async_callback(pool.close)
    return pool


def _recording(
    settings: Settings, node: InProcessNode, store: Store
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Start the recorder with the application and stop it (sessions left unsealed) on shutdown."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        service = build_service(
            HubRecorderLink(app[HUB_KEY]),
            node,
            store,
            ensure_data_dir(settings.data_dir),
            settings.recorder.recorder_id,
            segment_seconds=settings.recorder.segment_seconds,
            queue_frames=settings.recorder.queue_frames,
        )
        await service.start()
        yield
        await service.close()

    return context


async def serve(settings: Settings, tls_where: tuple[str, str] = ("http.tls_cert", "http.tls_key")) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly (sockets GOING_AWAY, peers closed, archives sealed).

    With ``http.tls_cert``/``http.tls_key`` it serves HTTPS and WSS (``tls_where`` names where they were set,
    for the one-line error of an unusable pair).
    """
    InProcessNode.check_environment()  # before anything is opened: a mismatched aiortc is one line, exit 2
    configure_logging(settings.log_level, settings.log_format)
    eventloop.announce()
    ssl_context = server_context(settings.http, *tls_where)
    data_dir = ensure_data_dir(settings.data_dir)
    created = None if settings.admin_key else admin_key(data_dir)
    stop = stop_on_signals("serve")
    async with AsyncExitStack() as stack:
        store = await open_store(settings.redis_url, data_dir)
        stack.push_async_callback(store.close)
        app = await build_app(settings, store, stack)
        runner = app_runner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        await site.start()
        port = _bound_port(runner) or settings.port
        scheme = "https" if ssl_context is not None else "http"
        url = f"{scheme}://{settings.host if ':' not in settings.host else f'[{settings.host}]'}:{port}"
        if created is not None and created.created:
            print(f"courtlink: admin API key (shown once, kept in {data_dir / 'admin.key'}): {created.value}")
        print(f"courtlink: serving {url}  (data: {data_dir}, store: {'redis' if settings.redis_url else 'sqlite'})")
        sys.stdout.flush()
        log.info("server_started", url=url, data_dir=str(data_dir))
        await stop.wait()
        log.info("server_stopping")


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
