"""The manifest chain, the signing keys and the RTP/NTP timeline, without media."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from recorder.keys import load_or_create, public_keys, verify_signature
from recorder.manifest import ManifestWriter, entry_hash, last_intact, read_lines
from recorder.timeline import SenderClock, TrackClock, rtp_delta
from recorder.writer import safe_name, seal_message
from rooms.audit import GENESIS


def test_lines_chain_to_each_other(tmp_path: Path) -> None:
    """Each appended line carries its number, the previous hash and its own hash over the rest."""
    writer = ManifestWriter(tmp_path / "m.jsonl")
    first = writer.append({"type": "session", "at": 1.5})
    second = writer.append({"type": "gap", "reason": "recess", "start": 2.0, "end": 3.25})
    assert (first["n"], first["prev"]) == (1, GENESIS)
    assert (second["n"], second["prev"]) == (2, first["hash"])
    lines = read_lines(tmp_path / "m.jsonl")
    assert [line.entry for line in lines] == [first, second]
    assert all(line.entry is not None and entry_hash(line.entry) == line.entry["hash"] for line in lines)
    assert last_intact(tmp_path / "m.jsonl")[:2] == (2, second["hash"])


def test_torn_last_line_is_not_part_of_the_intact_prefix(tmp_path: Path) -> None:
    """A line cut short by a crash is unparsable, and the intact prefix stops before it."""
    path = tmp_path / "m.jsonl"
    writer = ManifestWriter(path)
    first = writer.append({"type": "session", "at": 10.0})
    writer.append({"type": "segment", "start": 10.0, "end": 12.0})
    data = path.read_bytes()
    path.write_bytes(data[:-20])
    lines = read_lines(path)
    assert lines[-1].entry is None
    assert last_intact(path) == (1, first["hash"], 10.0)


def test_failed_write_is_retried_in_order(tmp_path: Path) -> None:
    """A line that cannot be written (a missing directory stands in for a full disk) stays queued and lands next."""
    path = tmp_path / "gone" / "m.jsonl"
    writer = ManifestWriter(path)
    with pytest.raises(FileNotFoundError) as caught:
        writer.append({"type": "session", "at": 1.0})
    assert caught.value.errno == errno.ENOENT
    assert writer.pending == 1
    path.parent.mkdir()
    writer.append({"type": "stop", "at": 2.0})
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 2]


def test_key_created_once_private_and_listed(tmp_path: Path) -> None:
    """The first run creates a 0600 Ed25519 key and its public record; the next run loads the same one; listed."""
    key = load_or_create(tmp_path / "keys", "rec-a")
    again = load_or_create(tmp_path / "keys", "rec-a")
    assert key.key_id == again.key_id
    files = {f.name: f for f in (tmp_path / "keys").iterdir()}
    assert set(files) == {f"rec-a.{key.key_id}.public.json", "rec-a.ed25519.pem"}
    assert stat.S_IMODE(os.stat(files["rec-a.ed25519.pem"]).st_mode) == 0o600
    assert b"PRIVATE" not in files[f"rec-a.{key.key_id}.public.json"].read_bytes()
    (listed,) = public_keys(tmp_path / "keys")
    assert listed.pop("not_before")
    assert listed == {
        "key_id": key.key_id,
        "algorithm": "ed25519",
        "public_key": key.public_b64,
        "recorder_id": "rec-a",
        "not_after": None,
    }
    entry = {"type": "seal", "chain_head": "ab" * 32, "n": 9, "prev": "ab" * 32}
    signature = key.sign(seal_message(entry))
    assert verify_signature(key.public_b64, signature, seal_message(entry))
    assert not verify_signature(key.public_b64, signature, seal_message(entry | {"chain_head": "cd" * 32}))


def test_sender_reports_map_rtp_to_wall_clock_across_the_wrap() -> None:
    """Before a report, times follow the first arrival; after, NTP + RTP offset, even across 2**32."""
    clock = TrackClock(90_000)
    start = (1 << 32) - 45_000
    assert str(clock.source) == "arrival"
    assert clock.wall(start, arrival=100.04) == pytest.approx(100.04)
    assert clock.wall(start + 90_000, arrival=999.0) == pytest.approx(101.04)  # arrival jitter ignored
    clock.sender_report(ntp_time=100.5, rtp_timestamp=(start + 45_000) % (1 << 32))  # wrapped in the report
    assert str(clock.source) == "sender_report"
    assert clock.wall(start + 90_000, arrival=0.0) == pytest.approx(101.0)
    assert rtp_delta(5, (1 << 32) - 5) == 10
    assert rtp_delta((1 << 32) - 5, 5) == -10


def test_track_ids_become_safe_path_names() -> None:
    """Track ids with separators or dots cannot escape the segments directory."""
    assert safe_name("../../etc") == "_.._etc"
    assert safe_name("cam/1") == "cam_1"
    assert safe_name("..") == "_"


def test_sender_clock_offset_places_a_skewed_sender_on_the_recorder_clock() -> None:
    """A browser whose clock is 5 s slow lands on the recorder's timeline at the least network delay seen."""
    sender = SenderClock(window=10.0)
    offsets = [
        sender.observe(100.0 + i * 0.02 - 5.0, 100.0 + i * 0.02 + delay) for i, delay in enumerate([0.08, 0.03, 0.05])
    ]
    assert offsets == pytest.approx([5.08, 5.03, 5.03])
    # Past two windows, old samples no longer count (a drifting clock is followed).
    assert sender.observe(130.0 - 5.5, 130.04) == pytest.approx(5.54)
    assert sender.observe(141.0 - 5.5, 141.04) == pytest.approx(5.54)
