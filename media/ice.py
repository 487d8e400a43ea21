"""Per-connection ICE set-up: explicit ICE servers and host candidates limited to the announced addresses.

aioice gathers host candidates from every interface it finds
(``aioice.ice.get_host_addresses``, a module function without options).
Patching that function would change every connection in the process, so
instead each gatherer's own ``Connection.get_component_candidates`` is
wrapped on the instance to bind and announce only the configured addresses
(:func:`media.aiortc_compat.limit_host_candidates`).
The gatherers of a peer connection exist once its transceivers do and gather
in ``setLocalDescription``: call :func:`restrict_host_candidates` right before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection

from media.aiortc_compat import limit_host_candidates
from media.settings import IceServer


def rtc_configuration(ice_servers: Iterable[IceServer]) -> RTCConfiguration:
    """An explicit configuration (never aiortc's default public STUN server), bundling all media."""
    servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in ice_servers]
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def restrict_host_candidates(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Make every ICE gatherer of ``pc`` bind and announce host candidates on ``addresses`` only."""
    limit_host_candidates(pc, addresses)
