"""Views owned by other services: ``/hearings/{id}/recordings``, ``/recorder/keys`` and ``/nodes``.

The composition root passes the implementations to :func:`directory_routes`;
signaling only knows the protocols in :mod:`protocol.directory`.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from protocol.directory import NodeDirectory, NodeInfo, RecorderKey, RecordingDirectory, RecordingInfo
from signaling.app import RouteRegistrar
from signaling.config import KeyScope
from signaling.keys import STORE_KEY
from signaling.rest_hearings import PLACEMENTS_KEY, PlacementReader
from signaling.routing import ROUTES_KEY, RouteSpec, respond

API = "/api/v1"


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

    return register
