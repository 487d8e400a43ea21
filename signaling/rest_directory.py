"""Views owned by other services: ``/hearings/{id}/recordings``, ``/recorder/keys`` and ``/nodes`` (with a
node's drain, which audits in the ``system`` stream).

The composition root passes the implementations to :func:`directory_routes`;
signaling only knows the protocols in :mod:`protocol.directory`.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from pydantic import BaseModel, Field

from protocol.directory import NodeDirectory, NodeInfo, RecorderKey, RecordingDirectory, RecordingInfo
from rooms.store import Trace
from signaling.app import RouteRegistrar
from signaling.config import KeyScope
from signaling.keys import PRINCIPAL_KEY, STORE_KEY
from signaling.problems import Problem
from signaling.rest_hearings import PLACEMENTS_KEY, PlacementReader
from signaling.routing import ROUTES_KEY, RouteSpec, respond

API = "/api/v1"
log = structlog.get_logger("signaling.rest")


class RecordingList(BaseModel):
    """Answer of ``GET /hearings/{id}/recordings``."""

    hearing_id: str
    items: list[RecordingInfo] = Field(description="Recording sessions, oldest first per recorder.")


class RecorderKeyList(BaseModel):
    """Answer of ``GET /recorder/keys``: the keys that verify sealed archives."""

    items: list[RecorderKey]


class NodeList(BaseModel):
    """Answer of ``GET /nodes``."""

    items: list[NodeInfo]


def directory_routes(
    recordings: RecordingDirectory | None, nodes: NodeDirectory | None, placements: PlacementReader | None = None
) -> RouteRegistrar:
    """A registrar adding the routes for whichever directories exist (``placements``: the hearing details show
    each hearing's home node)."""

    async def hearing_recordings(request: web.Request) -> web.StreamResponse:
        hearing = await request.app[STORE_KEY].get_hearing(request.match_info["hearing_id"])
        items = list(await recordings.recordings(hearing.id)) if recordings else []
        return respond(RecordingList(hearing_id=hearing.id, items=items))

    async def recorder_keys(request: web.Request) -> web.StreamResponse:
        return respond(RecorderKeyList(items=list(await recordings.public_keys()) if recordings else []))

    async def node_list(request: web.Request) -> web.StreamResponse:
        return respond(NodeList(items=list(await nodes.nodes()) if nodes else []))

    async def drain(request: web.Request) -> web.StreamResponse:
        draining = request.method == "POST"
        node_id = request.match_info["node_id"]
        info = await nodes.set_draining(node_id, draining) if nodes else None
        if info is None:
            raise Problem(404, "node_not_found", "Not found", f"no media node {node_id!r} has a live heartbeat")
        actor = request[PRINCIPAL_KEY].actor
        action = "node_drain_started" if draining else "node_drain_ended"
        await request.app[STORE_KEY].append_audit("system", Trace(actor, action, {"node_id": node_id}))
        log.info(action, node_id=node_id, actor=actor, rooms=info.rooms)
        return respond(info)

    def register(app: web.Application) -> None:
        if placements is not None:
            app[PLACEMENTS_KEY] = placements
        routes = app[ROUTES_KEY]
        clerk = KeyScope.clerk
        routes.add(
            app.router,
            RouteSpec("GET", f"{API}/hearings/{{hearing_id}}/recordings", "Recording sessions with verification",
                      "hearingRecordings", "recordings", clerk, response=RecordingList, errors=(401, 404)),
            hearing_recordings,
        )  # fmt: skip
        routes.add(
            app.router,
            RouteSpec("GET", f"{API}/recorder/keys", "Public keys that verify sealed archives", "recorderKeys",
                      "recordings", response=RecorderKeyList),
            recorder_keys,
        )  # fmt: skip
        routes.add(
            app.router,
            RouteSpec("GET", f"{API}/nodes", "Media nodes with a live heartbeat: region, state, load, rooms, peers",
                      "nodes", "operations",
                      KeyScope.admin, response=NodeList, errors=(401, 403)),
            node_list,
        )  # fmt: skip
        for method, summary, operation in (
            (
                "POST",
                "Drain a media node: no new hearings are placed on it, its hearings stay until they end",
                "drainNode",
            ),
            ("DELETE", "Put a drained media node back into placement", "undrainNode"),
        ):
            routes.add(
                app.router,
                RouteSpec(method, f"{API}/nodes/{{node_id}}/drain", summary, operation, "operations",
                          KeyScope.admin, response=NodeInfo, errors=(401, 403, 404)),
                drain,
            )  # fmt: skip

    return register
