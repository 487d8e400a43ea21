"""A stand-in for the aiortc ``RTCRtpSender`` a :class:`media.sending.FrameSender` reads, for the send-path tests.

Only what ``FrameSender`` reads is there: a connected DTLS transport whose nominated ICE pair and outbound SRTP
the test chooses, the sender's SSRCs and private counters, and the mid and abs-send-time header extensions.
"""

from __future__ import annotations

import types
from typing import Any

from aiortc import rtp
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpSendParameters

RTX_SSRC = 5
"""The stand-in's RTX SSRC."""


def stand_in_sender(pair: Any, tx_srtp: Any, *, ssrc: int, mid: str, kind: str) -> tuple[Any, Any]:
    """The stand-in sender over ICE pair ``pair`` and outbound SRTP ``tx_srtp``, and its header-extension map
    (mid id 4, abs-send-time id 2)."""
    dtls = types.SimpleNamespace(
        _state=State.CONNECTED,
        _tx_srtp=tx_srtp,
        transport=types.SimpleNamespace(_connection=types.SimpleNamespace(_nominated={1: pair})),
    )
    ext_map = rtp.HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpSendParameters(
            codecs=[],
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=4, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(id=2, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
            ],
        )
    )
    p = "_RTCRtpSender__"
    attrs: dict[str, Any] = {
        "transport": dtls,
        "_ssrc": ssrc,
        "_rtx_ssrc": RTX_SSRC,
        "kind": kind,
        "_enabled": True,
        "_run_rtp": None,
        p + "rtp_header_extensions_map": ext_map,
        p + "mid": mid,
        p + "rtp_started": None,
        p + "rtp_exited": None,
        p + "ntp_timestamp": 0,
        p + "rtp_timestamp": 0,
        p + "packet_count": 0,
        p + "octet_count": 0,
        p + "rtx_payload_type": None,
        p + "rtx_sequence_number": 0,
    }
    return types.SimpleNamespace(**attrs), ext_map
