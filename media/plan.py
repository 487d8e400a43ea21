"""The forwarding plan: which published tracks one receiver gets, with last-N on cameras. Pure: no aiortc, no I/O.

The node (:meth:`media.node.InProcessNode._replan`) asks this for every
receiver after each change (permissions, speakers, publications) and then
places the answer on the receiver's aiortc slots; the decision itself is here,
tested without aiortc (``tests/unit/test_plan.py``), as LiveKit keeps its
forwarding decisions apart from its down tracks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol, TypeVar

from rooms.model import Source


class Publication(Protocol):
    """What the plan reads of one published track."""

    @property
    def kind(self) -> str:
        """``audio`` or ``video``."""
        ...

    @property
    def track_id(self) -> str:
        """The publisher's id for the track."""
        ...

    @property
    def source(self) -> Source:
        """Camera, microphone or evidence."""
        ...

    @property
    def codec_name(self) -> str:
        """The negotiated codec; empty until known (then nothing can be forwarded)."""
        ...

    @property
    def allowed(self) -> bool:
        """The publisher may send it now (not muted, not refused)."""
        ...

    @property
    def held(self) -> bool:
        """Paused by the node (e.g. a waiting room)."""
        ...

    @property
    def ended(self) -> bool:
        """The publisher stopped it."""
        ...


T = TypeVar("T", bound=Publication)


def forwarding_plan(
    receiver: str,
    permitted: Collection[str],
    speaker_order: Sequence[str],
    published_by: Callable[[str], Iterable[T] | None],
    last_n: int | None,
) -> list[T]:
    """The tracks ``receiver`` gets: every live track of the publishers it may receive, cameras of the first N only.

    ``permitted``: publishers the receiver may receive (itself is dropped); ``speaker_order``: its last-N order
    (most recent speakers first; others after, in that order, then by id); ``published_by(pid)``: the
    publisher's tracks, ``None`` if it has no peer. Publishers come in speaker order, each one's tracks by
    kind then id; camera video of publishers after the first ``last_n`` that have a camera is left out
    (``None``: no limit). Audio and evidence (shared documents, video) are never limited.
    """
    order = {pid: i for i, pid in enumerate(speaker_order)}
    tracks: list[T] = []
    cameras: dict[str, list[T]] = {}
    for pid in sorted(set(permitted) - {receiver}, key=lambda p: (order.get(p, len(order)), p)):
        published = published_by(pid)
        if published is None:
            continue
        for t in sorted(published, key=lambda t: (t.kind, t.track_id)):
            if not t.allowed or t.held or t.ended or not t.codec_name:
                continue
            if t.kind == "video" and t.source is Source.camera:
                cameras.setdefault(pid, []).append(t)
            else:
                tracks.append(t)
    # ``cameras`` keeps the speaker order: the first N publishers are the N most recent speakers.
    for i, pid_tracks in enumerate(cameras.values()):
        if last_n is None or i < last_n:
            tracks.extend(pid_tracks)
    return tracks
