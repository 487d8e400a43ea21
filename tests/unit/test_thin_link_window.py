"""How the thin-link harness reads a window of one flow from its once-a-second reports (``tests/thin_link.py``): a
flow that got its frames is not frozen at a window's end that falls between two reports."""

from __future__ import annotations

import pytest

from tests.thin_link import _flow_window

BEFORE = {"frames": 0, "last": 89.95}
INSIDE = [{"frames": 150, "last": 99.98}, {"frames": 165, "last": 100.98}]
"""Reports at 100.0 and 101.0 of a flow with a frame every 66 ms."""


def test_a_flowing_video_is_not_frozen_at_a_window_end_just_before_the_next_report() -> None:
    """The next report came 1.07 s after the last, and the window ended just before it: frames kept coming."""
    w = _flow_window(BEFORE, INSIDE, 90.0, 102.0, {"frames": 181, "last": 102.03})
    assert w.stall < 0.1
    assert w.frames == 165
    # Read from the last report in the window alone, it looked frozen from 100.98 to the end: the old reading, kept
    # for a window no report followed.
    assert _flow_window(BEFORE, INSIDE, 90.0, 102.0).stall == pytest.approx(1.02)


def test_a_video_frozen_at_the_window_end_is_frozen_to_the_end() -> None:
    """No frame from 100.98 until after the window (the next report's last frame is older than the window's end), or a
    stall that the first frame after the window ended: frozen from its last frame to the end, either way."""
    w = _flow_window(BEFORE, INSIDE, 90.0, 102.0, {"frames": 165, "last": 100.98})
    assert w.stall == pytest.approx(1.02)
    w = _flow_window(BEFORE, INSIDE, 90.0, 102.0, {"frames": 170, "last": 102.5, "stalls": [[100.98, 102.2]]})
    assert w.stall == pytest.approx(1.02)
    w = _flow_window(BEFORE, [], 90.0, 102.0, {"frames": 0})
    assert w.stall == pytest.approx(12.0)  # (nothing ever came)
