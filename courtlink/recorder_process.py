"""``courtlink recorder``: one recorder as its own process, following every live hearing over Redis.

Wiring only: the store from ``redis_url``, the bus and records from
``rooms.backends.open_bus``, the frames from the hearing's media node over its
frame pipe (``recorder.frame_pipe.PipeFrameSource``; the node's address comes
from ``placement.<hearing_id>`` then ``node.<id>``), signaling through
``recorder.bus_link.BusSessionLink``, and the recorder service
(``recorder.service``) writing under the data dir. Archives stay on this
machine; signaling lists them and the recorder keys over the bus.

A restarted recorder (same ``recorder_id`` and data dir) seals what it left as
``interrupted``, hears every live room again (``recorder.hello``) and continues
each open hearing with a new session after a ``recorder_restart`` gap.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import structlog

from courtlink.bootstrap import ensure_data_dir
from courtlink.logs import configure_logging, stop_on_signals
from courtlink.settings import ConfigError, Settings
from protocol.frames import FrameSource
from recorder.bus_link import BusSessionLink, frame_locator
from recorder.directory import ArchiveDirectory
from recorder.frame_pipe import PipeFrameSource
from recorder.service import RecordingService, build_service
from rooms.backends import open_bus, open_store
from rooms.bus import Bus, Records
from rooms.store import Store

log = structlog.get_logger("courtlink.recorder")


def process_id(settings: Settings, recorder_id: str) -> str:
    """This process's id on the bus: the settings' ``[cluster] process_id``, else one made from the host."""
    return settings.cluster.process_id or f"recorder-{recorder_id}-{socket.gethostname()}-{os.getpid()}"


def pipe_frames(settings: Settings, records: Records, recorder_id: str) -> FrameSource:
    """The media nodes' frame pipes, each hearing's found through its placement and its node's record."""
    secret = settings.cluster.secret.get_secret_value() if settings.cluster.secret else None
    return PipeFrameSource(frame_locator(records), secret=secret, recorder_id=recorder_id)


async def run_recorder(
    settings: Settings,
    recorder_id: str,
    *,
    store: Store,
    bus: Bus,
    records: Records,
    frames: FrameSource,
    stop: Awaitable[object],
    ready: Callable[[RecordingService], None] = lambda service: None,
) -> None:
    """Follow every live hearing over ``bus`` until ``stop`` is done; open sessions stay unsealed (a restart
    continues them)."""
    data_dir = ensure_data_dir(settings.data_dir)
    link = BusSessionLink(
        bus,
        records,
        recorder_id,
        directory=ArchiveDirectory(data_dir),
        attempt_seconds=settings.cluster.request_seconds,
        retries=settings.cluster.request_retries,
    )
    service = build_service(
        link,
        frames,
        store,
        data_dir,
        recorder_id,
        segment_seconds=settings.recorder.segment_seconds,
        queue_frames=settings.recorder.queue_frames,
    )
    link.following = service.following
    await service.start()
    log.info("recorder_started", recorder_id=recorder_id, data_dir=str(data_dir))
    try:
        ready(service)
        await stop
    finally:
        await service.close()
        log.info("recorder_stopped", recorder_id=recorder_id)


async def recorder(settings: Settings, recorder_id: str) -> None:
    """``courtlink recorder``: open the store, the bus and the frame pipes, run until SIGTERM or SIGINT."""
    if not settings.redis_url:
        raise ConfigError("recorder needs redis_url (the store and bus it shares with signaling and the nodes)")
    configure_logging(settings.log_level, settings.log_format)
    data_dir = ensure_data_dir(settings.data_dir)
    stopped = stop_on_signals("recorder")
    async with AsyncExitStack() as stack:
        store = await open_store(settings.redis_url, data_dir)
        stack.push_async_callback(store.close)
        bus, records = await open_bus(settings.redis_url, process_id=process_id(settings, recorder_id))
        stack.push_async_callback(records.close)
        stack.push_async_callback(bus.close)
        frames = pipe_frames(settings, records, recorder_id)
        closer = getattr(frames, "close", None)
        if closer is not None:
            stack.push_async_callback(closer)

        def ready(service: RecordingService) -> None:
            print(f"courtlink: recorder {recorder_id} ready (data: {data_dir})")
            sys.stdout.flush()

        await run_recorder(
            settings,
            recorder_id,
            store=store,
            bus=bus,
            records=records,
            frames=frames,
            stop=stopped.wait(),
            ready=ready,
        )
