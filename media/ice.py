"""Per-connection ICE set-up: explicit ICE servers and host candidates limited to the announced addresses.

aioice gathers host candidates from every interface it finds
(``aioice.ice.get_host_addresses``, a module function without options).
Patching that function would change every connection in the process, so
instead each gatherer's own ``Connection.get_component_candidates`` is
wrapped on the instance to bind and announce only the configured addresses.
The gatherers of a peer connection exist once its transceivers do and gather
in ``setLocalDescription``: call :func:`restrict_host_candidates` right before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection

from media.settings import IceServer

_MARK = "_courtlink_host_addresses"


def rtc_configuration(ice_servers: Iterable[IceServer]) -> RTCConfiguration:
    """An explicit configuration (never aiortc's default public STUN server), bundling all media."""
    servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in ice_servers]
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def _gatherers(pc: RTCPeerConnection) -> list[Any]:
    found: list[Any] = []
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        gatherer = dtls.transport.iceGatherer
        if all(gatherer is not g for g in found):
            found.append(gatherer)
    return found


def _limit(connection: Any, wanted: list[str]) -> None:
    original = connection.get_component_candidates

    async def limited(component: int, addresses: list[str], **options: Any) -> Any:
        # aioice passes the addresses of every interface; keep only the announced ones.
        return await original(component=component, addresses=wanted, **options)

    connection.get_component_candidates = limited
    setattr(connection, _MARK, wanted)


def restrict_host_candidates(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Make every ICE gatherer of ``pc`` bind and announce host candidates on ``addresses`` only."""
    for gatherer in _gatherers(pc):
        connection = gatherer._connection
        if getattr(connection, _MARK, None) is None:
            _limit(connection, list(addresses))
