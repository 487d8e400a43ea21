"""``courtlink signaling``: the front door as a process of its own, driving media nodes in other processes.

It serves what ``courtlink serve`` serves to people and to case systems (REST, the WebSocket session, the web
client), on the shared store of ``redis_url``, but runs no media node and no recorder: the media nodes
(``courtlink media-node``) are found in the node registry on the bus and driven through a
:class:`signaling.node_pool.NodePool` of :class:`signaling.remote_node.RemoteNode` (placement by region,
failover of a lost node); recorders (``courtlink recorder``) are processes of their own.

Secrets: ``tokens.secret`` and ``admin_key`` should be set in the settings or environment, equal on every
signaling process (a join link signed by one must verify on another); without them the process keeps its own
in its data dir, which is enough for one signaling process.
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack

import structlog
from aiohttp import web

from courtlink.bootstrap import admin_key, ensure_data_dir, token_secret
from courtlink.logs import configure_logging, stop_on_signals
from courtlink.node_process import process_id
from courtlink.settings import Settings
from courtlink.tls import server_context
from courtlink.wiring import signaling_config, turn_settings
from protocol.node import NodeControl
from rooms.backends import open_bus, open_store
from rooms.bus import Bus, Records
from rooms.store import Store
from signaling.app import create_app
from signaling.node_pool import Connector, NodePool, store_regions
from signaling.recorder_bus import BusRecordingDirectory, recorder_bus_context
from signaling.remote_node import RemoteNode
from signaling.rest_directory import directory_routes
from signaling.serving import app_runner
from signaling.webclient import setup_web
from signaling.ws import OwnerSettings, WsSettings, ws_registrar

log = structlog.get_logger("courtlink")

READY = "courtlink: signaling {process} ready at {url} (store and bus: {bus}, media nodes: {nodes})"
"""The line printed once the front door listens and the node registry was read (tests wait for it)."""


def remote_nodes(bus: Bus, settings: Settings) -> Connector:
    """The pool's connector: a started :class:`RemoteNode` over ``bus`` with the cluster's timeout and retries."""

    async def connect(node_id: str) -> NodeControl:
        node = RemoteNode(
            bus, node_id, attempt_seconds=settings.cluster.request_seconds, retries=settings.cluster.request_retries
        )
        await node.start()
        return node

    return connect


async def _disconnect(node: NodeControl) -> None:
    if isinstance(node, RemoteNode):
        await node.close()


async def build_signaling_app(
    settings: Settings, store: Store, bus: Bus, records: Records, stack: AsyncExitStack
) -> tuple[web.Application, NodePool]:
    """The front door on an open store and bus, its nodes through a pool; resources it opens are closed by ``stack``."""
    data_dir = ensure_data_dir(settings.data_dir)
    admin = settings.admin_key.get_secret_value() if settings.admin_key else admin_key(data_dir).value
    secret = settings.tokens.secret.get_secret_value() if settings.tokens.secret else token_secret(data_dir).value
    pool = NodePool(
        records,
        remote_nodes(bus, settings),
        disconnect=_disconnect,
        region_of=store_regions(store),
        pool_id=process_id(settings, "signaling"),
    )
    await pool.start()
    stack.push_async_callback(pool.close)
    ws = WsSettings(
        **settings.session.model_dump(),
        ice_servers=tuple(settings.media.ice_servers),
        court_timezone=settings.court_timezone,
        turn=turn_settings(settings),
    )
    recordings = BusRecordingDirectory(bus, records)
    # Several signaling processes share the live rooms: one owner per room (a lease), others relay to it.
    owners = OwnerSettings(
        process_id=process_id(settings, "signaling"),
        lease_seconds=settings.cluster.lease_seconds,
        request_seconds=settings.cluster.request_seconds,
    )
    registrars = [
        ws_registrar(pool, ws, bus=bus, records=records, owners=owners),
        directory_routes(recordings, pool, pool),
        setup_web,
    ]
    app = create_app(signaling_config(settings, admin, secret), store, registrars=registrars)
    # Recorders (`courtlink recorder`) follow this process's live rooms over the bus.
    app.cleanup_ctx.append(recorder_bus_context(bus, records, process_id=process_id(settings, "signaling")))
    return app, pool


async def run_signaling(settings: Settings, tls_where: tuple[str, str] = ("http.tls_cert", "http.tls_key")) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (sockets GOING_AWAY; the nodes keep running)."""
    configure_logging(settings.log_level, settings.log_format)
    ssl_context = server_context(settings.http, *tls_where)
    data_dir = ensure_data_dir(settings.data_dir)
    me = process_id(settings, "signaling")
    stop = stop_on_signals("signaling")
    async with AsyncExitStack() as stack:
        bus, records = await open_bus(settings.redis_url, process_id=me)
        stack.push_async_callback(records.close)
        stack.push_async_callback(bus.close)
        store = await open_store(settings.redis_url, data_dir)
        stack.push_async_callback(store.close)
        app, pool = await build_signaling_app(settings, store, bus, records, stack)
        runner = app_runner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        await site.start()
        port = _bound_port(runner) or settings.port
        scheme = "https" if ssl_context is not None else "http"
        url = f"{scheme}://{settings.host if ':' not in settings.host else f'[{settings.host}]'}:{port}"
        nodes = await pool.nodes()
        bus_name = "redis cluster" if "+cluster://" in (settings.redis_url or "") else "redis"
        log.info("signaling_started", url=url, process_id=me, nodes=[n.id for n in nodes])  # before the ready line
        print(READY.format(process=me, url=url, bus=bus_name, nodes=len(nodes)))
        sys.stdout.flush()
        await stop.wait()
        log.info("signaling_stopping", process_id=me)


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
