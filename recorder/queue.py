"""The hand-over between the event loop and the writer thread: bounded for frames, never refusing control.

Frames are refused (``put_frame`` returns False) once ``max_frames`` wait, so
a slow disk costs recording, never the media loop. Control items (pause, cut,
audit lines, seal) are rare and must not be lost, so they are always taken
and keep their order relative to the frames around them.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class WorkQueue:
    """FIFO of work items; frames bounded, control unbounded; one consumer thread."""

    def __init__(self, max_frames: int) -> None:
        self._items: deque[tuple[bool, Any]] = deque()
        self._frames = 0
        self._max = max_frames
        self._cond = threading.Condition()
        self._waiting = False

    def put_frame(self, item: Any) -> bool:
        """Queue a frame; False (and nothing queued) when the bound is reached."""
        with self._cond:
            if self._frames >= self._max:
                return False
            self._frames += 1
            self._items.append((True, item))
            if self._waiting:  # wake the writer only when it sleeps: a futex call per frame is the cost here
                self._cond.notify()
        return True

    def put_control(self, item: Any) -> None:
        """Queue a control item (always accepted)."""
        with self._cond:
            self._items.append((False, item))
            if self._waiting:
                self._cond.notify()

    def get(self) -> Any:
        """The next item, waiting for one."""
        return self.get_batch(1)[0]

    def get_batch(self, limit: int = 256) -> list[Any]:
        """Up to ``limit`` items in order, waiting until there is at least one."""
        with self._cond:
            while not self._items:
                self._waiting = True
                self._cond.wait()
                self._waiting = False
            items = self._items
            batch = [items.popleft() for _ in range(min(limit, len(items)))]
            self._frames -= sum(1 for is_frame, _ in batch if is_frame)
        return [item for _, item in batch]

    def has_room(self) -> bool:
        """Whether a frame would be taken now (stays true for a single producer until it puts)."""
        return self._frames < self._max

    @property
    def frames(self) -> int:
        """Frames waiting."""
        return self._frames
