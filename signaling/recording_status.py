"""What participants are told about a hearing's recording when several recorders follow it, or one is lost.

Each recorder (``recorder.recorder_id``) sends its own ``recording`` status. A
court may run two for redundancy: each writes a complete archive of its own.
Participants see one status, combined from the live recorders' latest ones
(:func:`combine`):

- a recorder that records everything makes the hearing ``recording``: it is
  fully on the record, whatever the other one says;
- all degraded: ``degraded``, missing only the tracks that *every* recorder
  misses (a track one of them records is on the record);
- all sealed: ``sealed``; otherwise a ``stopped`` one (recess, adjourned).

A recorder whose heartbeat lapses (killed, its machine down) is forgotten. When
the last recorder that had reported on the hearing is gone, the hearing is
``degraded`` with reason ``recorder_lost``: nothing is being recorded, and the
REC indicator must not go on claiming otherwise. A sealed status is final and
outlives its recorder.

Pure: no I/O, no clock; the session hub keeps one :class:`RecordingStatuses`
per live room.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol.client import MissingTrack, Recording

RECORDER_LOST = Recording(
    status="degraded",
    reason="recorder_lost",
    detail="No recorder is recording this hearing: the recording service is down.",
)
"""Shown when every recorder that had reported on the hearing is gone."""


def _track(item: MissingTrack) -> tuple[str, str]:
    return item.participant_id, item.source


def combine(statuses: Mapping[str, Recording]) -> Recording | None:
    """The one status participants see, from each live recorder's latest (by recorder id); None if there is none.

    With one recorder, its own status unchanged."""
    if not statuses:
        return None
    ordered = [statuses[k] for k in sorted(statuses)]
    if len(ordered) == 1:
        return ordered[0]
    recording = [s for s in ordered if s.status == "recording"]
    if recording:
        return recording[0]
    degraded = [s for s in ordered if s.status == "degraded"]
    if degraded:
        # A recorder degraded without naming tracks (its disk) covers nothing: only the others' lists narrow it.
        naming = [s for s in degraded if s.missing]
        if len(naming) < 2:
            return naming[0] if naming else degraded[0]
        common = set.intersection(*({_track(m) for m in s.missing} for s in naming))
        first = naming[0]
        return first.model_copy(update={"missing": tuple(m for m in first.missing if _track(m) in common)})
    if all(s.status == "sealed" for s in ordered):
        return ordered[0]
    stopped = [s for s in ordered if s.status == "stopped"]
    return stopped[0] if stopped else ordered[0]


class RecordingStatuses:
    """One hearing's recorders' latest statuses, and what participants were last told."""

    def __init__(self) -> None:
        self.by_recorder: dict[str, Recording] = {}
        self._lost = False

    @property
    def shown(self) -> Recording | None:
        """What participants see now (also what a joiner is sent)."""
        if not self.by_recorder and self._lost:
            return RECORDER_LOST
        return combine(self.by_recorder)

    def update(self, recorder_id: str, message: Recording) -> Recording | None:
        """A recorder's new status; what participants are sent now."""
        self.by_recorder[recorder_id] = message
        self._lost = False
        return self.shown

    def forget(self, recorder_id: str) -> Recording | None:
        """The recorder is gone (its heartbeat lapsed): what participants are sent now, or None if that changes
        nothing for them (it had not reported on this hearing, or its last word was ``sealed``, which stands)."""
        last = self.by_recorder.get(recorder_id)
        if last is None or last.status == "sealed":
            return None
        before = self.shown
        del self.by_recorder[recorder_id]
        self._lost = not self.by_recorder
        after = self.shown
        return after if after != before else None
