"""Per-connection ICE set-up: explicit ICE servers and host candidates limited to the announced addresses.

aioice gathers host candidates from every interface it finds
(``aioice.ice.get_host_addresses``, a module function without options).
Patching that function would change every connection in the process, so
instead each gatherer's own ``Connection.get_component_candidates`` is
wrapped on the instance to bind and announce only the configured addresses
(:func:`media.aiortc_compat.limit_host_candidates`). With a UDP port range
(``[media] udp_port_min``/``udp_port_max``) those host candidates bind only
ports in the range; a connection that finds none free fails its gathering
with :class:`~media.aiortc_compat.PortRangeExhausted`, which the node turns
into the refusal ``udp_ports_exhausted`` (:data:`PORTS_EXHAUSTED`).
The gatherers of a peer connection exist once its transceivers do and gather
in ``setLocalDescription``: call :func:`restrict_host_candidates` right before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection

from media.aiortc_compat import PortRangeExhausted, limit_host_candidates
from media.settings import IceServer

__all__ = ["PORTS_EXHAUSTED", "PortRangeExhausted", "restrict_host_candidates", "rtc_configuration"]

PORTS_EXHAUSTED = "udp_ports_exhausted"
"""The ``Refused`` code of a peer or probe that found no free UDP port in the node's range."""


def rtc_configuration(ice_servers: Iterable[IceServer]) -> RTCConfiguration:
    """An explicit configuration (never aiortc's default public STUN server), bundling all media."""
    servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in ice_servers]
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def restrict_host_candidates(pc: RTCPeerConnection, addresses: Sequence[str], ports: tuple[int, int] = (0, 0)) -> None:
    """Make every ICE gatherer of ``pc`` bind and announce host candidates on ``addresses`` only, on a UDP port in
    ``ports`` (min, max) unless that is (0, 0) (any port)."""
    limit_host_candidates(pc, addresses, ports)
