"""What participants are told about the recording when two recorders follow a hearing, or one is lost."""

from __future__ import annotations

from protocol.client import MissingTrack, Recording
from signaling.recording_status import RECORDER_LOST, RecordingStatuses, combine

REC = Recording(status="recording")


def degraded(*who: str, reason: str = "") -> Recording:
    missing = tuple(
        MissingTrack(participant_id=p, name=p, source="camera", reason="network", since=1796000000.0) for p in who
    )
    return Recording(status="degraded", missing=missing, reason=reason)


def test_one_recorder_is_shown_as_it_says() -> None:
    """With a single recorder, participants see exactly its status (what courtlink did before two were combined)."""
    for message in (REC, degraded("judge"), Recording(status="stopped", reason="recess"), Recording(status="sealed")):
        assert combine({"rec-1": message}) is message
    assert combine({}) is None


def test_one_recorder_that_records_everything_makes_the_hearing_recorded() -> None:
    """One recorder degraded and the other recording: the hearing is on the record, whichever spoke last."""
    assert combine({"rec-1": degraded("judge"), "rec-2": REC}) is REC
    assert combine({"rec-1": REC, "rec-2": degraded("judge")}) is REC


def test_two_degraded_recorders_miss_only_what_both_miss() -> None:
    """A track one recorder still records is on the record: only tracks missing from both are named."""
    shown = combine({"rec-1": degraded("judge", "clerk"), "rec-2": degraded("clerk", "witness")})
    assert shown is not None
    assert shown.status == "degraded"
    assert [m.participant_id for m in shown.missing] == ["clerk"]
    disk = degraded(reason="disk")  # degraded without naming tracks: it covers nothing
    assert combine({"rec-1": disk, "rec-2": degraded("judge")}) == degraded("judge")
    assert combine({"rec-1": disk, "rec-2": degraded(reason="disk")}) == disk


def test_sealed_only_when_every_recorder_sealed() -> None:
    """At adjournment the indicator says sealed once both archives are sealed, stopped in between."""
    sealed, stopped = Recording(status="sealed"), Recording(status="stopped", reason="adjourned")
    assert combine({"rec-1": sealed, "rec-2": stopped}) is stopped
    assert combine({"rec-1": sealed, "rec-2": sealed}) is sealed
    assert combine({"rec-1": sealed, "rec-2": REC}) is REC


def test_losing_the_last_recorder_is_degraded_recorder_lost_until_one_reports_again() -> None:
    """Losing one of two changes nothing; losing the last shows recorder_lost; a new status replaces it; a sealed
    recorder's last word stands when it goes."""
    statuses = RecordingStatuses()
    statuses.update("rec-1", REC)
    statuses.update("rec-2", REC)
    assert statuses.forget("rec-2") is None  # rec-1 still records: nothing to tell
    assert statuses.forget("rec-9") is None  # never reported on this hearing
    assert statuses.forget("rec-1") == RECORDER_LOST
    assert statuses.shown == RECORDER_LOST
    assert RECORDER_LOST.status == "degraded"
    assert statuses.update("rec-1", REC) is REC
    statuses.update("rec-1", Recording(status="sealed"))
    assert statuses.forget("rec-1") is None
    assert statuses.shown == Recording(status="sealed")
