"""A recording survives `kill -9` of the whole server: a restart seals what the crash left, and the hearing verifies.

A real ``courtlink serve`` child (2 s segments) records a hearing in session
with two real aiortc publishers; it is killed with SIGKILL mid-segment and
started again on the same data directory. The hearing is still in session in
the store, so the restarted recorder follows it at once: it seals the crashed
session as ``interrupted`` (its partial segments hashed and listed) and opens a
new recording session linked to that seal, with a ``recorder_restart`` gap from
where the partials end. The participants come back, the judge adjourns, and
``courtlink verify <hearing dir>`` exits 0, naming the interrupted session and
the gap.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.test_recording_e2e import (
    SEGMENT_SECONDS,
    close_all,
    ffprobe,
    manifest,
    remote_court,
    seat,
    serve_env,
    session,
    session_dirs,
    start_server,
    stop_server,
    verify,
)
from tests.serve_process import ServeProcess
from tests.ws_fixtures import WAIT, Booking, eventually

NAMES = ("judge", "defendant")
SEGMENTS_BEFORE_CRASH = 2
"""Completed segments per track before the kill (plus the one being written when it dies)."""
SECONDS_AFTER_RESTART = 4.0
CLUSTER_SECONDS = 1.0
"""A segment reaches the disk a cluster at a time, at least every second (docs/archive.md)."""
CLUSTER_ID = bytes.fromhex("1f43b675")
"""The Matroska Cluster element id: a partial file with one holds frames."""


def _segments_per_track(session_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in manifest(session_dir):
        if line["type"] == "track":
            counts.setdefault(line["track"], 0)
        elif line["type"] == "segment":
            counts[line["track"]] = counts.get(line["track"], 0) + 1
    return counts


def _current_segment_ages(session_dir: Path) -> dict[str, float]:
    """Seconds since each track's last segment ended, i.e. how far into its current segment it is."""
    now = time.time()
    return {track: now - end for track, end in _last_ends(session_dir).items()}


def _last_ends(session_dir: Path) -> dict[str, float]:
    ends: dict[str, float] = {}
    for line in manifest(session_dir):
        if line["type"] == "segment":
            ends[line["track"]] = max(ends.get(line["track"], 0.0), float(line["end"]))
    return ends


async def _record_then_crash(server: ServeProcess, data_dir: Path) -> Booking:
    """Book, seat, open and start; once a few segments are complete, kill the server under its participants."""
    async with aiohttp.ClientSession() as http:
        court = remote_court(server.url, http)
        try:
            booking = await court.book(NAMES)
            people = await seat(court, booking, NAMES)
            await session(people["judge"], "open")
            await session(people["judge"], "start")

            def mid_segment() -> bool:
                # Every track has completed segments, and one is far enough into its next one for the first
                # cluster (at most a second) to be on disk: kill then, so a partial file holds media.
                dirs = session_dirs(data_dir, booking.hearing_id)
                ages = _current_segment_ages(dirs[0]) if dirs else {}
                counts = _segments_per_track(dirs[0]) if dirs else {}
                return (
                    len(counts) == 2 * len(NAMES)
                    and min(counts.values()) >= SEGMENTS_BEFORE_CRASH
                    and any(CLUSTER_SECONDS + 0.3 <= age <= SEGMENT_SECONDS - 0.2 for age in ages.values())
                )

            assert await eventually(mid_segment, within=60, step=0.05), _segments_per_track(
                session_dirs(data_dir, booking.hearing_id)[0]
            )
            await asyncio.to_thread(server.kill)
        finally:
            await close_all(court)
    return booking


async def _come_back_and_adjourn(server: ServeProcess, booking: Booking) -> tuple[list[dict[str, Any]], Any]:
    """Rejoin after the restart, record a little, adjourn; the judge's messages and the recordings view."""
    async with aiohttp.ClientSession() as http:
        court = remote_court(server.url, http)
        try:
            people = await seat(court, booking, NAMES)
            judge = people["judge"]
            assert judge.joined["hearing"]["state"] == "in_session", judge.joined
            await asyncio.sleep(SECONDS_AFTER_RESTART)
            await session(judge, "adjourn")
            await judge.client.close_code()
            status, recordings = await court.rest("GET", f"/api/v1/hearings/{booking.hearing_id}/recordings")
            assert status == 200, recordings
            return list(judge.client.messages), recordings
        finally:
            await close_all(court)


def test_kill_9_leaves_a_verifiable_prefix_and_a_restart_continues_the_chain(tmp_path: Path) -> None:
    """After kill -9 the crashed session verifies up to its last line; a restart seals it interrupted; all verifies."""
    data_dir = tmp_path / "data"
    first = ServeProcess(data_dir, env=serve_env())
    start_server(first)
    try:
        booking = asyncio.run(_record_then_crash(first, data_dir))
    finally:
        first.kill()

    (crashed,) = session_dirs(data_dir, booking.hearing_id)
    lines = manifest(crashed)
    assert lines[0]["type"] == "session"
    assert all(line["type"] != "seal" for line in lines)
    listed = [line for line in lines if line["type"] == "segment"]
    # What the crash left verifies as far as it goes: unsealed, every listed segment intact, partials named.
    code, out, result = verify(crashed)
    assert code == 1, out
    assert result["status"] == "unsealed", result
    assert result["problem"] is None, result
    assert f"complete up to line {result['lines']}" in out, out
    assert result["segments"] == len(listed), (result, len(listed))
    assert result["lines"] == len(lines), (result, len(lines))
    for seg in listed:
        probe = ffprobe(crashed / seg["file"])
        assert probe.packets == seg["frames"], (seg["file"], probe)
    # The segment each track was writing when the server died is cut short but plays up to its last cluster;
    # one opened less than a cluster before the kill holds only the start of its header (no frame yet).
    partials = result["partial_files"]
    assert len(partials) == 2 * len(NAMES), result
    played = 0
    for rel in partials:
        data = (crashed / rel).read_bytes()
        if CLUSTER_ID in data:
            assert ffprobe(crashed / rel).packets > 0, rel
            played += 1
        else:
            assert len(data) < 1024, (rel, len(data))
    assert played >= 1, partials

    second = ServeProcess(data_dir, env=serve_env())
    start_server(second)
    try:
        # The hearing is still in session in the store: the restarted recorder follows it without anyone joining.
        assert asyncio.run(eventually(lambda: len(session_dirs(data_dir, booking.hearing_id)) == 2, within=WAIT))
        judge_messages, recordings = asyncio.run(_come_back_and_adjourn(second, booking))
    finally:
        code = stop_server(second)
    assert code == 0, "".join(second.output)

    old, new = session_dirs(data_dir, booking.hearing_id)
    assert old == crashed
    # The restarted recorder sealed the crashed session as interrupted, its partials hashed and listed.
    sealed_crash = manifest(crashed)
    assert sealed_crash[: result["lines"]] == lines[: result["lines"]]
    seal = sealed_crash[-1]
    assert (seal["type"], seal["state"]) == ("seal", "interrupted")
    recovered = [line for line in sealed_crash if line["type"] == "recovered_segment"]
    assert {line["file"] for line in recovered} == set(partials), (recovered, partials)
    assert seal["media_end"] >= max(line["end"] for line in listed)
    assert not (crashed / "recording.lock").exists()
    lines = manifest(new)
    head = lines[0]
    # Linked to the interrupted seal: its name, every line, its hash.
    assert head["previous"] == {
        "session_id": crashed.name,
        "lines": len(sealed_crash),
        "last_hash": seal["hash"],
        "sealed": True,
        "state": "interrupted",
    }, head["previous"]
    assert head["prev"] == seal["hash"]
    (outage,) = [line for line in lines if line["type"] == "gap" and line["reason"] == "recorder_restart"]
    assert outage["track"] is None, outage
    # The outage starts where the recovered partials end, not at the last listed segment.
    assert outage["start"] == seal["media_end"], (outage, seal)
    assert outage["start"] <= outage["end"] == head["at"], outage
    assert [line["type"] for line in lines][-1] == "seal"
    new_segments = [line for line in lines if line["type"] == "segment"]
    assert {s["participant"] for s in new_segments} == {booking.ids[n] for n in NAMES}, new_segments
    for seg in new_segments:
        assert ffprobe(new / seg["file"]).packets == seg["frames"], seg["file"]

    code, out, sealed = verify(new)
    assert code == 0, out
    assert sealed["status"] == "valid", sealed
    assert sealed["sealed"] is True, sealed
    # The whole hearing verifies: both sessions, in order; the interrupted one and the gap are named.
    code, out, hearing = verify(crashed.parents[1])
    assert code == 0, out
    assert hearing["hearing_id"] == booking.hearing_id, hearing
    assert [s["seal_state"] for s in hearing["sessions"]] == ["interrupted", "complete"], hearing
    assert "sealed as INTERRUPTED" in out, out
    assert "gap recorder_restart" in out, out
    statuses = [m["status"] for m in judge_messages if m["type"] == "recording"]
    assert statuses[-1] == "sealed", statuses

    by_id = {item["session_id"]: item for item in recordings["items"]}
    assert by_id[new.name]["state"] == "sealed", by_id
    assert by_id[new.name]["verification"]["ok"] is True, by_id
    assert by_id[new.name]["previous_session_id"] == crashed.name
    assert by_id[new.name]["gaps"].get("recorder_restart") == 1, by_id[new.name]
    assert by_id[crashed.name]["state"] == "interrupted", by_id[crashed.name]
    assert by_id[crashed.name]["verification"]["ok"] is True, by_id[crashed.name]
