"""``POST /api/v1/join/probe``: the network check of the device-check page, a short WebRTC echo from the media node.

The page offers its preview audio and video with the join token in the body;
the media node answers with a probe peer that sends everything back, so the
page measures round-trip time and bitrate with ``getStats``. The node closes
the probe when the page does, or after at most 20 s. One live probe per
participant, and a bounded number per node: beyond either, or with the node's UDP port range full, ``429``.
Signaling reaches the node only through ``protocol.node.NodeControl``.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from protocol.node import CreateProbe, NodeControl, Refused, SdpAnswer
from signaling.keys import STORE_KEY, TOKENS_KEY
from signaling.problems import Problem
from signaling.routing import ROUTES_KEY, RouteSpec, read_body, respond
from signaling.tokens import TokenError

PROBE_NODE_KEY = web.AppKey("join_probe_node", NodeControl)
"""The media node that runs network-check probes."""

_BUSY = {"probe_busy", "too_many_probes", "udp_ports_exhausted"}
"""Refusals that pass with time (this participant's live probe, the node's probe limit, its UDP port range full):
429 with Retry-After, so a client tries again rather than giving up on the node."""


class ProbeRequest(BaseModel):
    """Body of ``POST /join/probe``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=4096, description="The join token from the link (?t=...).")
    sdp: str = Field(min_length=1, max_length=200_000, description="The page's SDP offer (sendrecv audio/video).")


class ProbeAnswer(BaseModel):
    """Answer of ``POST /join/probe``."""

    sdp: str = Field(description="The media node's SDP answer; the probe echoes the offered tracks back.")


async def join_probe(request: web.Request) -> web.StreamResponse:
    """Start a network-check probe for the participant of a valid join token."""
    body = await read_body(request, ProbeRequest)
    try:
        claims = await request.app[TOKENS_KEY].verify(body.token)
    except TokenError as exc:
        raise Problem(401, exc.code, "This link does not work", exc.detail) from None
    hearing = await request.app[STORE_KEY].get_hearing(claims.hearing_id)
    if hearing.participant(claims.participant_id) is None:
        raise Problem(401, "revoked", "This link does not work", "the participant of this link is not booked")
    node = request.app[PROBE_NODE_KEY]
    reply = await node.call(
        CreateProbe(hearing_id=claims.hearing_id, participant_id=claims.participant_id, sdp=body.sdp)
    )
    if isinstance(reply, SdpAnswer):
        return respond(ProbeAnswer(sdp=reply.sdp))
    if isinstance(reply, Refused) and reply.code in _BUSY:
        raise Problem(429, reply.code, "Network check busy", reply.message, headers={"Retry-After": "20"})
    if isinstance(reply, Refused) and reply.code in ("invalid_sdp", "unsupported_codec"):
        raise Problem(422, reply.code, "Offer not accepted", reply.message)
    raise Problem(503, "probe_unavailable", "Network check unavailable", "the media node did not start the check")


def register(app: web.Application, node: NodeControl) -> None:
    """Add ``POST /api/v1/join/probe`` on ``node`` (authenticated by the join token in the body)."""
    app[PROBE_NODE_KEY] = node
    app[ROUTES_KEY].add(
        app.router,
        RouteSpec("POST", "/api/v1/join/probe", "Network check before joining (WebRTC echo)", "joinProbe", "join",
                  body=ProbeRequest, response=ProbeAnswer, errors=(400, 401, 422, 429, 503)),
        join_probe,
    )  # fmt: skip
