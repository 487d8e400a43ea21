"""Tampering with a sealed archive: each change is caught and named by verify and by `courtlink verify`."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from recorder.cli import ProgressBar
from recorder.keys import key_id_of, public_keys
from recorder.manifest import MANIFEST_NAME, entry_hash
from recorder.recorder import key_dir_of
from recorder.verify import verify_archive
from recorder.writer import seal_message
from tests import archive_fixtures as af

T0 = af.T0


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sealed 12 s session (two tracks, audit events, a recess), recorded once for the module."""
    path = af.record_sealed(tmp_path_factory.mktemp("sealed"))
    assert verify_archive(path).ok
    return path


@pytest.fixture
def archive(sealed: Path, tmp_path: Path) -> Path:
    """A private copy of the sealed session (in a copy of its data directory) to tamper with."""
    return af.copy_data_dir(sealed, tmp_path)


read = af.read
write = af.write


def cli(*args: str) -> tuple[int, str]:
    """Run `courtlink verify` in-process, on the server of the first argument's data dir; (exit code, output)."""
    data_dir = Path(args[0]).parents[3] if args and len(Path(args[0]).parents) > 3 else None
    return af.cli(*args, data_dir=data_dir)


def test_untouched_archive_verifies(archive: Path) -> None:
    """A sealed archive as recorded verifies: exit 0, every segment counted."""
    code, out = cli(str(archive))
    assert code == 0, out
    assert "OK valid:" in out


def test_flipped_byte_names_the_segment_and_byte_range(archive: Path) -> None:
    """One flipped byte in a segment: invalid, naming the file, its manifest line and the damaged range."""
    seg = next(e for e in read(archive) if e["type"] == "segment" and e["bytes"] > 1000)
    path = archive / seg["file"]
    data = bytearray(path.read_bytes())
    data[700] ^= 0x01
    path.write_bytes(bytes(data))
    result = verify_archive(archive)
    assert result.status == "invalid"
    assert result.problem is not None
    assert (result.problem.file, result.problem.line) == (seg["file"], seg["n"])
    assert result.problem.byte_range is not None
    assert result.problem.byte_range[0] <= 700 < result.problem.byte_range[1]
    code, out = cli(str(archive))
    assert code == 1
    assert seg["file"] in out


def test_deleted_segment_is_named(archive: Path) -> None:
    """A deleted segment file: invalid, 'missing', with the file and line."""
    seg = [e for e in read(archive) if e["type"] == "segment"][2]
    (archive / seg["file"]).unlink()
    result = verify_archive(archive)
    assert result.status == "invalid"
    assert result.problem is not None
    assert "missing" in result.problem.reason
    assert (result.problem.file, result.problem.line) == (seg["file"], seg["n"])


def test_swapped_manifest_lines_are_named(archive: Path) -> None:
    """Two manifest lines swapped: invalid at the first of them."""
    entries = read(archive)
    entries[3], entries[4] = entries[4], entries[3]
    write(archive, entries)
    result = verify_archive(archive)
    assert result.status == "invalid"
    assert result.problem is not None
    assert (result.problem.file, result.problem.line) == (MANIFEST_NAME, 4)


def test_edited_audit_event_is_named(archive: Path) -> None:
    """An audit event line edited (the actor changed): invalid at that line, 'altered'."""
    entries = read(archive)
    index = next(i for i, e in enumerate(entries) if e["type"] == "audit")
    entries[index]["event"]["actor"] = "p_clerk"
    write(archive, entries)
    result = verify_archive(archive)
    assert result.status == "invalid"
    assert result.problem is not None
    assert result.problem.line == index + 1
    assert "altered" in result.problem.reason


def test_rehashed_edit_still_breaks_the_chain(archive: Path) -> None:
    """An edited line whose own hash was recomputed still breaks the next line's prev link."""
    entries = read(archive)
    index = next(i for i, e in enumerate(entries) if e["type"] == "gap")
    entries[index]["end"] = entries[index]["start"] + 0.5  # shorten the recess on paper
    entries[index]["hash"] = entry_hash(entries[index])
    write(archive, entries)
    result = verify_archive(archive)
    assert result.status == "invalid"
    assert result.problem is not None
    assert result.problem.line == index + 2


def _other_key() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, base64.b64encode(raw).decode()


def test_seal_signed_by_another_key_fails(archive: Path) -> None:
    """The seal's signature replaced by another key's (line hash fixed up): the signature does not verify."""
    entries = read(archive)
    seal = entries[-1]
    key, _ = _other_key()
    seal["signature"] = base64.b64encode(key.sign(seal_message(seal))).decode()
    seal["hash"] = entry_hash(seal)
    write(archive, entries)
    result = verify_archive(archive)
    assert result.status == "invalid"
    assert result.problem is not None
    assert result.problem.line == len(entries)
    assert "signature" in result.problem.reason


def test_seal_resigned_with_a_foreign_key_is_untrusted(archive: Path, sealed: Path) -> None:
    """A seal wholly re-signed by a foreign key (key and id replaced): caught by the trusted key set."""
    entries = read(archive)
    seal = entries[-1]
    key, public = _other_key()
    seal["public_key"] = public
    seal["key_id"] = key_id_of(base64.b64decode(public))
    seal["signature"] = base64.b64encode(key.sign(seal_message(seal))).decode()
    seal["hash"] = entry_hash(seal)
    write(archive, entries)
    data_dir = sealed.parents[3]
    trusted = [k["public_key"] for k in public_keys(key_dir_of(data_dir))]
    assert trusted
    result = verify_archive(archive, trusted_keys=trusted)
    assert result.status == "invalid"
    assert result.problem is not None
    assert "sealed by an untrusted key" in result.problem.reason
    code, out = cli(str(archive), "--data-dir", str(data_dir))
    assert code == 1
    assert "untrusted key" in out
    code, out = cli(str(sealed), "--trusted-keys", str(key_dir_of(data_dir)))
    assert code == 2, out  # a key directory holds private keys: refused as trusted keys
    assert "private key" in out
    assert cli(str(sealed), "--data-dir", str(data_dir))[0] == 0


def test_added_file_is_named(archive: Path) -> None:
    """A file slipped into the segments of a sealed archive: invalid, naming it."""
    extra = archive / "segments" / "judge_mic" / "000099.webm"
    extra.write_bytes(b"\x1a\x45\xdf\xa3")
    result = verify_archive(archive)
    assert result.status == "invalid"
    assert result.problem is not None
    assert result.problem.file == "segments/judge_mic/000099.webm"


def test_lines_after_the_seal_are_refused(archive: Path) -> None:
    """A chained line appended after the seal: invalid (a sealed archive cannot grow)."""
    entries = read(archive)
    extra = {"type": "gap", "reason": "disk", "track": None, "start": T0, "end": T0 + 1}
    extra |= {"n": len(entries) + 1, "prev": entries[-1]["hash"]}
    extra["hash"] = entry_hash(extra)
    write(archive, [*entries, extra])
    result = verify_archive(archive)
    assert result.status == "invalid"
    assert result.problem is not None
    assert result.problem.line == len(entries) + 1


def test_unsealed_archive_reports_complete_up_to_line(archive: Path) -> None:
    """Without its seal line the archive is 'complete up to line N, not sealed': exit 1."""
    entries = read(archive)
    write(archive, entries[:-1])
    result = verify_archive(archive)
    assert result.status == "unsealed"
    assert result.lines == len(entries) - 1
    code, out = cli(str(archive))
    assert code == 1
    assert f"complete up to line {len(entries) - 1}, not sealed" in out


def test_unusable_inputs_exit_2(tmp_path: Path) -> None:
    """Not a directory, no manifest, or an unparsable first line: exit 2."""
    assert cli(str(tmp_path / "nope"))[0] == 2
    assert cli(str(tmp_path))[0] == 2
    (tmp_path / MANIFEST_NAME).write_text("this is not json\n")
    assert cli(str(tmp_path))[0] == 2
    assert cli()[0] == 2


def test_verify_reports_progress_and_draws_a_bar(archive: Path) -> None:
    """Verification reports hashed bytes up to the total; the CLI's bar is drawn on stderr for large archives."""
    seen: list[tuple[int, int]] = []
    assert verify_archive(archive, progress=lambda done, total: seen.append((done, total))).ok
    assert seen[0][0] == 0
    assert seen[-1][0] == seen[-1][1] > 0
    err = io.StringIO()
    bar = ProgressBar(err, "verifying", min_total=1)
    for done, total in seen:
        bar(done, total)
    bar.finish()
    assert "100.0%" in err.getvalue()
