"""aiortc 1.16's receive-side bandwidth estimator in C (media/_rate.c): the same REMBs as ``aiortc.rate`` for the
same packets."""

from typing import Any

class RemoteBitrateEstimator:
    """aiortc's ``RemoteBitrateEstimator``, step for step."""

    ssrcs: dict[int, int]
    """Each SSRC seen and its last arrival time (ms), in order of first arrival (aiortc's ``ssrcs``)."""

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        """``(bitrate, ssrcs)`` for a REMB to send, or None; ``abs_send_time`` must be 24-bit (ValueError)."""

    def snapshot(self) -> dict[str, Any]:
        """The whole state, named as aiortc's attributes (tests compare it with aiortc's)."""
