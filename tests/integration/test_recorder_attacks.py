"""Forgeries of a sealed archive, each built on a genuine recording: verify exits 1 and names what is wrong.

These are the attacks that once passed (issue 8, "Forged archives pass"), plus
the trust and identity rules that stop them: only trusted keys, valid at the
seal's time and belonging to the session's recorder, may seal; a session must
lie where its manifest says it belongs; nothing unlisted may be in it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from courtlink.cli import main as courtlink_main
from recorder.chain import LOCK_NAME, MANIFEST_NAME
from recorder.cli import keys_main
from recorder.directory import ArchiveDirectory
from recorder.keys import export_keys, load_or_create, rotate_key
from recorder.recorder import Recorder, key_dir_of
from recorder.trust import data_dir_keys, format_time
from recorder.verify import verify_archive
from rooms.model import Source
from rooms.store import Store
from signaling.app import create_app
from signaling.rest_directory import directory_routes
from tests import archive_fixtures as af
from tests import recorder_fixtures as fx
from tests.api_fixtures import api_config

T0 = af.T0
REPO = Path(__file__).resolve().parents[2]
OTHER = "hrg_other"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with two genuine sealed sessions by the same recorder: hearing hrg_test1 and hearing hrg_other."""
    base = tmp_path_factory.mktemp("genuine")
    af.record_sealed(base, "hrg_test1", T0)
    af.record_sealed(base, OTHER, T0 + 100)
    return base


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir where a recorder crashed 10 s in (disk copied mid-segment), restarted, and sealed the hearing."""
    base = tmp_path_factory.mktemp("crashed")
    live = Recorder(base / "live", "rec-a", segment_seconds=4.0)
    hearing = fx.hearing()
    live.start_session(hearing, fx.SITES, at=T0)
    feeds = [
        fx.Feed(fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video"), fx.encode_video(4.0)),
        fx.Feed(fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio"), fx.encode_audio(4.0)),
    ]
    fx.feed_hearing(live, feeds, media_start=T0, seconds=10.0)
    live.flush().result(60)
    # The disk as kill -9 leaves it: complete segments listed, each track's current segment partly written.
    shutil.copytree(base / "live", base / "data")
    live.close()
    restarted = Recorder(base / "data", "rec-a", segment_seconds=4.0)
    session = restarted.start_session(hearing, fx.SITES, at=T0 + 12)
    mic = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")
    fx.feed_hearing(restarted, [fx.Feed(mic, fx.encode_audio(2.0))], media_start=T0 + 12, seconds=4.0)
    session.seal(at=T0 + 16).result(60)
    restarted.close()
    return base / "data"


def sessions_of(data_dir: Path, hearing_id: str = "hrg_test1") -> list[Path]:
    """The hearing's session directories (recorder rec-a), oldest first."""
    return sorted(p.parent for p in (data_dir / "recordings" / hearing_id / "rec-a").glob(f"*/{MANIFEST_NAME}"))


@pytest.fixture
def data(genuine: Path, tmp_path: Path) -> Path:
    """A private copy of the genuine data dir."""
    copy = tmp_path / "archive-data"
    shutil.copytree(genuine, copy)
    return copy


@pytest.fixture
def crash_data(crashed: Path, tmp_path: Path) -> Path:
    """A private copy of the crashed-and-restarted data dir."""
    copy = tmp_path / "crash"
    shutil.copytree(crashed, copy)
    return copy


def exported(data_dir: Path, into: Path) -> Path:
    """The data dir's public keys as ``courtlink recorder keys export -o FILE`` writes them."""
    path = into / "courtlink-keys.json"
    assert keys_main(["export", "--data-dir", str(data_dir), "-o", str(path)], io.StringIO(), io.StringIO()) == 0
    return path


def test_genuine_archives_verify_on_the_server_and_with_exported_keys(data: Path, tmp_path: Path) -> None:
    """A genuine session and hearing verify with the data dir's keys and with the exported public keys."""
    (session,) = sessions_of(data)
    assert af.cli(str(session), data_dir=data)[0] == 0
    code, out = af.cli(str(session.parent.parent), "--trusted-keys", str(exported(data, tmp_path)))
    assert code == 0, out
    assert "OK valid: hearing hrg_test1, 1 session(s) in order" in out


def test_reports_begin_with_the_identity(data: Path) -> None:
    """Text and JSON output begin with hearing id, case number, session id, recorder id, first and last times."""
    (session,) = sessions_of(data)
    code, out = af.cli(str(session), data_dir=data)
    assert code == 0, out
    first = out.splitlines()[:3]
    assert first == [
        "hearing hrg_test1  case (2026) Test 0001",
        f"session {session.name}  recorder rec-a",
        "from 2027-01-15T08:00:00.000000Z  to 2027-01-15T08:00:12.040000Z",  # the last audio frame's end
    ]
    code, out = af.cli(str(session), "--json", data_dir=data)
    payload = json.loads(out)
    assert list(payload)[:6] == ["hearing_id", "case_number", "session_id", "recorder_id", "first_at", "last_at"]
    assert (payload["hearing_id"], payload["case_number"], payload["recorder_id"]) == (
        "hrg_test1",
        "(2026) Test 0001",
        "rec-a",
    )
    assert payload["first_at"] == "2027-01-15T08:00:00.000000Z"
    assert payload["last_at"] == "2027-01-15T08:00:12.040000Z"


# --- re-signed forgeries ---------------------------------------------------------------------------


def test_track_removed_and_resigned_with_a_fresh_key_is_untrusted(data: Path) -> None:
    """The judge's whole video track removed from the manifest and disk, re-signed: 'sealed by an untrusted key'."""
    (session,) = sessions_of(data)
    entries = [e for e in af.read(session) if e.get("track") != "judge_cam"]
    shutil.rmtree(session / "segments" / "judge_cam")
    key, public = af.fresh_key()
    forged = af.reseal(entries, key, public)
    af.write(session, forged)
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert f"sealed by an untrusted key {forged[-1]['key_id']}" in out
    # The integrity-only opt-out says exactly that: it proves nothing about who sealed.
    code, out = af.cli(str(session), "--any-key")
    assert code == 0, out
    assert "INTEGRITY ONLY" in out


def test_adjourn_time_moved_and_resigned_is_untrusted(data: Path, tmp_path: Path) -> None:
    """The adjourn (stop) time moved an hour, re-chained and re-signed: exit 1 with the exported keys too."""
    (session,) = sessions_of(data)
    entries = af.read(session)
    stop = next(e for e in entries if e["type"] == "stop")
    stop["at"] += 3600
    entries[-1]["at"] += 3600
    key, public = af.fresh_key()
    af.write(session, af.reseal(entries, key, public))
    code, out = af.cli(str(session), "--trusted-keys", str(exported(data, tmp_path)))
    assert code == 1, out
    assert "sealed by an untrusted key" in out


def test_no_trusted_keys_means_untrusted_not_valid(data: Path) -> None:
    """Without any trusted key (not on the server, no --trusted-keys) even a genuine seal is not 'valid'."""
    (session,) = sessions_of(data)
    code, out = af.cli(str(session))
    assert code == 1, out
    assert "sealed by an untrusted key" in out
    assert "no trusted keys (give --trusted-keys" in out


def test_seal_by_another_recorders_key_is_refused(data: Path) -> None:
    """Re-signed with the key of another recorder of the same server: the key does not belong to this session."""
    (session,) = sessions_of(data)
    other = load_or_create(key_dir_of(data), "rec-b")
    entries = af.reseal(af.read(session), other.private, other.public_b64)
    af.write(session, entries)
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert "of recorder 'rec-b', but the session is of recorder 'rec-a'" in out


def test_rotation_keeps_old_seals_valid_and_bounds_the_old_key(data: Path, tmp_path: Path) -> None:
    """After a key rotation old seals verify with the exported keys; the old key's seal dated later does not."""
    (session,) = sessions_of(data)
    key_dir = key_dir_of(data)
    old = load_or_create(key_dir, "rec-a")
    new = rotate_key(key_dir, "rec-a", at=T0 + 1000)
    assert new.key_id != old.key_id
    keys = {k.key_id: k for k in data_dir_keys(data)}
    assert keys[old.key_id].not_after == T0 + 1000
    assert keys[new.key_id].not_before == T0 + 1000
    trusted = exported(data, tmp_path)
    assert af.cli(str(session), "--trusted-keys", str(trusted))[0] == 0
    # Someone holding the retired key seals (backdating nothing): outside its validity.
    entries = af.read(session)
    entries[-1]["at"] = T0 + 2000
    af.write(session, af.reseal(entries, old.private, old.public_b64))
    code, out = af.cli(str(session), "--trusted-keys", str(trusted))
    assert code == 1, out
    assert f"sealed by key {old.key_id}" in out
    assert "outside its validity" in out


def test_private_keys_are_refused_as_trusted_keys(data: Path) -> None:
    """--trusted-keys given a private key file or the server's key folder: exit 2, 'give public keys only'."""
    (session,) = sessions_of(data)
    for path in (key_dir_of(data), key_dir_of(data) / "rec-a.ed25519.pem"):
        code, out = af.cli(str(session), "--trusted-keys", str(path))
        assert code == 2, out
        assert "holds a private key: give public keys only" in out


async def test_keys_endpoint_json_is_what_verify_accepts(sqlite_store: Store, data: Path, tmp_path: Path) -> None:
    """GET /api/v1/recorder/keys, saved as served, is accepted by --trusted-keys; export writes the same JSON."""
    app = create_app(api_config(), sqlite_store, registrars=[directory_routes(ArchiveDirectory(data), None)])
    async with running(app) as base, aiohttp.ClientSession() as http, http.get(f"{base}/api/v1/recorder/keys") as resp:
        assert resp.status == 200
        body = await resp.read()
    served = json.loads(body)
    assert served == export_keys(key_dir_of(data))
    assert served["items"][0]["not_before"]
    saved = tmp_path / "keys.json"
    saved.write_bytes(body)
    (session,) = sessions_of(data)
    code, out = af.cli(str(session), "--trusted-keys", str(saved))
    assert code == 0, out


# --- identity ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("trust", ["data-dir", "trusted-keys"])
def test_session_of_another_hearing_swapped_in_is_named(data: Path, tmp_path: Path, trust: str) -> None:
    """A genuine sealed session of another hearing (same recorder, same key) put in the archive's place: invalid."""
    (target,) = sessions_of(data)
    (other,) = sessions_of(data, OTHER)
    keys = ["--trusted-keys", str(exported(data, tmp_path))] if trust == "trusted-keys" else []
    server = data if trust == "data-dir" else None
    # 1. Its contents under the original session's name.
    shutil.rmtree(target)
    shutil.copytree(other, target)
    code, out = af.cli(str(target), *keys, data_dir=server)
    assert code == 1, out
    assert f"names session '{other.name}', but lies in directory '{target.name}'" in out
    assert out.startswith(f"hearing {OTHER}"), out  # the report says whose it really is
    # 2. Under its own name, in the first hearing's folder: named by the hearing check, session or hearing dir.
    shutil.rmtree(target)
    moved = target.parent / other.name
    shutil.copytree(other, moved)
    for path in (moved, target.parent.parent):
        code, out = af.cli(str(path), *keys, data_dir=server)
        assert code == 1, out
        assert f"names hearing '{OTHER}', but lies in the folder of hearing 'hrg_test1'" in out
    # 3. The other hearing's genuine folder, but the court asked about hrg_test1.
    code, out = af.cli(str(other.parent.parent), "--hearing", "hrg_test1", *keys, data_dir=server)
    assert code == 1, out
    assert f"this is a session of hearing '{OTHER}', not of hearing 'hrg_test1'" in out


# --- every file ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["evidence-added-later.webm", "extra/000001.webm", "segments/judge_cam/000099.webm"])
def test_added_files_are_named(data: Path, rel: str) -> None:
    """A file added at the archive root, in a new folder, or among the segments: invalid, naming it."""
    (session,) = sessions_of(data)
    (session / rel).parent.mkdir(parents=True, exist_ok=True)
    (session / rel).write_bytes(b"\x1a\x45\xdf\xa3 not recorded")
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert f"{rel}: file is not listed in the manifest" in out
    assert af.cli(str(session.parent.parent), data_dir=data)[0] == 1


@pytest.mark.parametrize("rel", ["segments/ghost", "empty"])
def test_unlisted_empty_folders_are_named(data: Path, rel: str) -> None:
    """An empty unlisted track folder (or any other folder): invalid, naming it."""
    (session,) = sessions_of(data)
    (session / rel).mkdir()
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert f"{rel}/: folder is not listed in the manifest" in out


def test_segment_replaced_by_a_symlink_is_refused(data: Path, tmp_path: Path) -> None:
    """A segment replaced by a symlink to identical bytes: refused (verify never follows links)."""
    (session,) = sessions_of(data)
    seg = next(e for e in af.read(session) if e["type"] == "segment")
    outside = tmp_path / "elsewhere.webm"
    shutil.copy(session / seg["file"], outside)
    (session / seg["file"]).unlink()
    (session / seg["file"]).symlink_to(outside)
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert f"{seg['file']}: symlink refused" in out


def test_lock_file_rules(data: Path) -> None:
    """A sealed session has no lock; one left with a process id is tolerated (noted), one holding more is not."""
    (session,) = sessions_of(data)
    assert not (session / LOCK_NAME).exists()
    (session / LOCK_NAME).write_text("4242\n")
    code, out = af.cli(str(session), data_dir=data)
    assert code == 0, out
    assert "recording.lock left by a recorder" in out
    (session / LOCK_NAME).write_bytes(b"4242\n" + b"x" * 100)
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert "recording.lock: the lock file of a sealed session holds more than a process id" in out


def test_damaged_byte_ranges_lie_within_the_file(data: Path) -> None:
    """A truncated or a grown segment: the message's byte range, when given, lies inside the file."""
    (session,) = sessions_of(data)
    seg = next(e for e in af.read(session) if e["type"] == "segment" and e["bytes"] > 2000)
    path = session / seg["file"]
    original = path.read_bytes()
    for damaged in (original[:1000], original + b"\0" * 300_000):
        path.write_bytes(damaged)
        result = verify_archive(session)
        assert result.status == "invalid"
        assert result.problem is not None
        assert f"{len(damaged)} bytes, {seg['bytes']} were recorded" in result.problem.reason
        if result.problem.byte_range is not None:
            start, end = result.problem.byte_range
            assert 0 <= start < end <= len(damaged)


# --- the manifest -----------------------------------------------------------------------------------


def test_truncated_manifest_is_named(data: Path) -> None:
    """The manifest cut (seal and last lines gone, or cut mid-line): exit 1, 'not sealed', never valid."""
    (session,) = sessions_of(data)
    raw = (session / MANIFEST_NAME).read_bytes()
    lines = raw.splitlines(keepends=True)
    (session / MANIFEST_NAME).write_bytes(b"".join(lines[:-4]))
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert f"complete up to line {len(lines) - 4}, not sealed" in out
    (session / MANIFEST_NAME).write_bytes(raw[:-10])
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert "not sealed" in out
    assert "torn" in out


def test_reordered_line_is_named(data: Path) -> None:
    """A segment line moved to the end (just before the seal): invalid at the first line out of place."""
    (session,) = sessions_of(data)
    entries = af.read(session)
    index = next(i for i, e in enumerate(entries) if e["type"] == "segment")
    moved = entries[:index] + entries[index + 1 : -1] + [entries[index], entries[-1]]
    af.write(session, moved)
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert f"line {index + 1}: line number field says {index + 2}" in out
    # Re-chained after the move, but not re-signed: the seal no longer covers the chain.
    af.write(session, [*af.rechain(moved[:-1]), moved[-1]])
    code, out = af.cli(str(session), data_dir=data)
    assert code == 1, out
    assert f"line {len(moved)}: prev does not match the hash of the line before" in out


# --- a crashed hearing ---------------------------------------------------------------------------------


def test_crashed_hearing_verifies_whole_and_names_the_gap(crash_data: Path) -> None:
    """After a crash and a restart, the hearing directory verifies (exit 0): interrupted seal, restart gap named."""
    crashed_session, _ = sessions_of(crash_data)
    code, out = af.cli(str(crashed_session.parents[1]), data_dir=crash_data)
    assert code == 0, out
    assert "sealed as INTERRUPTED" in out
    assert "2 recovered after a crash" in out
    seal = af.read(crashed_session)[-1]
    # The restart gap starts where the recovered partials end, which the interrupted seal records.
    assert seal["media_end"] > max(e["end"] for e in af.read(crashed_session) if e["type"] == "segment")
    assert f"gap recorder_restart {format_time(seal['media_end'])} to 2027-01-15T08:00:12.000000Z" in out


@pytest.mark.parametrize("attack", ["altered", "deleted"])
def test_recovered_partial_altered_or_deleted_is_named(crash_data: Path, attack: str) -> None:
    """A recovered partial of the crash altered or deleted: the hearing no longer verifies, naming the file."""
    crashed_session, _ = sessions_of(crash_data)
    line = next(e for e in af.read(crashed_session) if e["type"] == "recovered_segment")
    path = crashed_session / line["file"]
    if attack == "altered":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    code, out = af.cli(str(crashed_session.parents[1]), data_dir=crash_data)
    assert code == 1, out
    reason = "bytes do not match the SHA-256" if attack == "altered" else "recovered_segment file is missing"
    assert f"{line['file']}, line {line['n']}" in out, out
    assert reason in out, out


def test_session_removed_from_a_hearing_is_named(crash_data: Path) -> None:
    """The interrupted session deleted from the hearing: the later session's link names it as missing."""
    crashed_session, later = sessions_of(crash_data)
    shutil.rmtree(crashed_session)
    code, out = af.cli(str(later.parents[1]), data_dir=crash_data)
    assert code == 1, out
    assert f"the session it continues, {crashed_session.name}, is missing from the hearing" in out


def test_truncated_interrupted_session_breaks_the_hearing_chain(crash_data: Path) -> None:
    """The first session's manifest cut short (its seal gone): the hearing fails, named at the cut session."""
    crashed_session, _ = sessions_of(crash_data)
    lines = (crashed_session / MANIFEST_NAME).read_bytes().splitlines(keepends=True)
    (crashed_session / MANIFEST_NAME).write_bytes(b"".join(lines[:-1]))
    code, out = af.cli(str(crashed_session.parents[1]), data_dir=crash_data)
    assert code == 1, out
    assert "shorter than this one's link says" in out or "not sealed" in out, out


# --- standalone ----------------------------------------------------------------------------------------

_BLOCKED = textwrap.dedent(
    """
    import sys
    BLOCKED = {"aiortc", "av", "aiohttp", "pydantic", "pydantic_settings", "structlog", "numpy", "PIL", "rooms",
               "signaling", "media", "courtlink", "redis", "aioice"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    from recorder.cli import verify_main
    code = verify_main(sys.argv[1:])
    loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
    print("LOADED", loaded)
    sys.exit(code)
    """
)


def test_verifier_runs_alone_without_media_web_or_pydantic(data: Path) -> None:
    """recorder.verify and its CLI import only the standard library and cryptography: they run with the rest blocked."""
    (session,) = sessions_of(data)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args, want in (([str(session), "--data-dir", str(data)], 0), ([str(session)], 1)):
        done = subprocess.run(
            [sys.executable, "-c", _BLOCKED, *args, "--no-progress"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == want, done.stdout + done.stderr
        assert "LOADED []" in done.stdout
    assert (
        "OK valid"
        in subprocess.run(
            [sys.executable, "-c", _BLOCKED, str(session.parent.parent), "--data-dir", str(data)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )


class running:
    """Serve an aiohttp app on 127.0.0.1 (a free port) for the duration of an ``async with``; yields its base URL."""

    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None)

    async def __aenter__(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


def test_public_key_files_and_folders_are_trusted_keys(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--trusted-keys takes a PEM public key file, or a folder of public-key files, as a court keeps them."""
    (session,) = sessions_of(data)
    key = load_or_create(key_dir_of(data), "rec-a")
    pem = key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "rec-a.pem").write_bytes(pem)
    folder = tmp_path / "court-keys"
    folder.mkdir()
    for record in key_dir_of(data).glob("*.public.json"):
        shutil.copy(record, folder / record.name)
    (folder / "README.txt").write_text("public keys of the recording server, exported 2027-01-15\n")
    for trusted in (tmp_path / "rec-a.pem", folder):
        code, out = af.cli(str(session), "--trusted-keys", str(trusted))
        assert code == 0, out
    # The same, through the courtlink command: export, then verify elsewhere with only the export.
    exported_file = tmp_path / "export.json"
    assert courtlink_main(["recorder", "keys", "export", "--data-dir", str(data), "-o", str(exported_file)]) == 0
    assert json.loads(exported_file.read_text()) == export_keys(key_dir_of(data))
    capsys.readouterr()
    assert courtlink_main(["verify", str(session), "--trusted-keys", str(exported_file), "--no-progress"]) == 0
    assert "(trusted key)" in capsys.readouterr().out
