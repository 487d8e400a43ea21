"""Every ``courtlink`` command against a live ``courtlink serve``, run as a newcomer runs it (docs/cli.md)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import archive_fixtures as af
from tests.cli_fixtures import LiveServer, courtlink, live_server, one_line_error
from tests.ws_fixtures import WsClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "hearing.example.toml"
DEMO_ROLES = ["judge", "clerk", "defendant", "counsel", "observer"]
LINK = re.compile(r"^(JUDGE|CLERK|DEFENDANT|COUNSEL|OBSERVER) +(.+), at (.+)\n +(http://\S+/join\?t=(\S+))$", re.M)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One running server for the module, in a working directory of its own (data in ./courtlink-data)."""
    with live_server(tmp_path_factory.mktemp("cli")) as running:
        yield running


def _demo(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    # The newcomer's way: in the server's directory, the port from the settings (here the environment).
    return courtlink("demo", *args, cwd=server.workdir, env={"COURTLINK_PORT": str(server.port)})


def _links(stdout: str) -> list[tuple[str, str, str, str]]:
    """(role, name, site name, token) of each labelled link the demo printed."""
    return [(m[0].lower(), m[1], m[2], m[4]) for m in LINK.findall(stdout)]


async def _join(base_url: str, token: str) -> dict[str, Any]:
    """Join over the WebSocket as the web client does; the ``joined`` answer."""
    async with aiohttp.ClientSession() as http:
        client = WsClient(await http.ws_connect(base_url.replace("http://", "ws://") + "/api/v1/ws"))
        await client.send("join", id="join", token=token)
        joined = await client.expect_any(lambda m: m.get("ref") == "join")
        await client.close()
        return joined


def test_demo_books_a_hearing_now_with_every_role_and_runs_twice(server: LiveServer) -> None:
    """`courtlink demo` prints a working, labelled link per role at three sites; a second run books another."""
    first = _demo(server)
    assert first.returncode == 0, first.stderr
    links = _links(first.stdout)
    assert [role for role, *_ in links] == DEMO_ROLES, first.stdout
    sites = {site for _, _, site, _ in links}
    assert sites == {"Demo District Court", "Demo No. 1 Detention Center", "Demo Law Office"}
    now = datetime.now(UTC)
    for role, name, _, token in links:
        status, info = server.api("POST", "/join/info", {"token": token})
        assert status == 200, info
        assert (info["participant"]["role"], info["participant"]["name"]) == (role, name)
    for role in ("judge", "defendant"):
        joined = asyncio.run(_join(server.url, next(t for r, _, _, t in links if r == role)))
        assert joined["type"] == "joined", joined
    hearing_id = re.search(r"demo hearing (\S+)", first.stdout)
    assert hearing_id is not None
    status, hearing = server.api("GET", f"/hearings/{hearing_id.group(1)}")
    assert status == 200
    starts, ends = datetime.fromisoformat(hearing["starts_at"]), datetime.fromisoformat(hearing["ends_at"])
    assert starts <= now < ends
    assert now - starts < timedelta(minutes=2)

    second = _demo(server, "--json")
    assert second.returncode == 0, second.stderr
    booked = json.loads(second.stdout)
    assert booked["id"] != hearing_id.group(1)
    assert sorted(p["role"] for p in booked["participants"]) == sorted(DEMO_ROLES)
    assert server.api("POST", "/join/info", {"token": links[0][3]})[0] == 200, "the first demo's links still work"


def test_demo_errors_are_one_line(server: LiveServer, tmp_path: Path) -> None:
    """No server, a wrong key, or no key at all: one line saying what to do, no traceback, no key printed."""
    down = courtlink("demo", "--url", "http://127.0.0.1:9", cwd=server.workdir)
    assert down.returncode == 1
    assert "no courtlink server answers at http://127.0.0.1:9" in one_line_error(down)
    wrong_key = "wrong-key-0123456789abcdef"
    refused = courtlink("demo", "--url", server.url, "--key", wrong_key, cwd=server.workdir)
    assert refused.returncode == 1
    line = one_line_error(refused)
    assert "refused the API key (401)" in line
    assert wrong_key not in line
    keyless = courtlink("demo", "--url", server.url, cwd=tmp_path)
    assert keyless.returncode == 2
    assert "admin.key does not exist" in one_line_error(keyless)
    listing = courtlink("hearings", "list", "--url", server.url, "--key", wrong_key, cwd=tmp_path)
    assert listing.returncode == 1
    assert "401" in one_line_error(listing)


def test_hearings_book_and_list(server: LiveServer) -> None:
    """`hearings book --file` (dates overridden) prints a link per person; `hearings list` shows it, with filters."""
    for site in (
        {"id": "dc1", "name": "No. 1 Detention Center", "kind": "detention_center", "terminals": 2},
        {"id": "court", "name": "Intermediate Court", "kind": "court"},
    ):
        assert server.api("POST", "/sites", site)[0] == 201
    room = {"id": "room1", "name": "Remote Courtroom 1", "site_id": "court"}
    assert server.api("POST", "/courtrooms", room)[0] == 201
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    window = ["--starts-at", start.isoformat(), "--ends-at", (start + timedelta(hours=2)).isoformat()]
    port = {"COURTLINK_PORT": str(server.port)}
    booked = courtlink("hearings", "book", "--file", str(EXAMPLE), *window, cwd=server.workdir, env=port)
    assert booked.returncode == 0, booked.stderr
    assert booked.stdout.count("/join?t=") == 4
    assert start.isoformat().replace("+00:00", "Z") in booked.stdout
    again = courtlink("hearings", "book", "--file", str(EXAMPLE), *window, cwd=server.workdir, env=port)
    assert again.returncode == 1
    assert "courtroom 'room1' is booked" in one_line_error(again)

    listed = courtlink("hearings", "list", "--url", server.url, cwd=server.workdir)
    assert listed.returncode == 0, listed.stderr
    assert "(2026) Xing Chu 123" in listed.stdout
    assert "scheduled" in listed.stdout
    as_json = courtlink("hearings", "list", "--json", "--courtroom", "room1", "--url", server.url, cwd=server.workdir)
    assert [h["case_number"] for h in json.loads(as_json.stdout)["items"]] == ["(2026) Xing Chu 123"]
    by_site = courtlink("hearings", "list", "--site", "dc1", "--url", server.url, cwd=server.workdir)
    assert "(2026) Xing Chu 123" in by_site.stdout
    assert "DEMO" not in by_site.stdout
    later = (start + timedelta(days=2)).isoformat()
    empty = courtlink("hearings", "list", "--from", later, "--url", server.url, cwd=server.workdir)
    assert empty.returncode == 0
    assert empty.stdout.strip() == "no hearings"
    bad = courtlink("hearings", "list", "--from", "tomorrow", "--url", server.url, cwd=server.workdir)
    assert bad.returncode == 1
    assert "from" in one_line_error(bad)


def test_nodes_list_drain_and_undrain(server: LiveServer) -> None:
    """`nodes list` shows the embedded node up; `nodes drain` turns it draining, `nodes undrain` back up; an
    unknown node is a one-line 404 naming node_not_found."""
    listed = courtlink("nodes", "list", "--json", "--url", server.url, cwd=server.workdir)
    assert listed.returncode == 0, listed.stderr
    (node,) = json.loads(listed.stdout)["items"]
    assert node["state"] == "up"
    try:
        drained = courtlink("nodes", "drain", node["id"], "--url", server.url, cwd=server.workdir)
        assert drained.returncode == 0, drained.stderr
        assert drained.stdout.split()[:2] == [node["id"], "draining"], drained.stdout
        shown = courtlink("nodes", "list", "--url", server.url, cwd=server.workdir)
        assert f"{node['id']}  draining" in shown.stdout
    finally:
        back = courtlink("nodes", "undrain", node["id"], "--url", server.url, cwd=server.workdir)
    assert back.returncode == 0, back.stderr
    assert back.stdout.split()[:2] == [node["id"], "up"], back.stdout
    unknown = courtlink("nodes", "drain", "no-such-node", "--url", server.url, cwd=server.workdir)
    assert unknown.returncode == 1
    assert "node_not_found" in one_line_error(unknown) or "404" in one_line_error(unknown)


def test_recorder_keys_export_from_the_servers_data_dir(server: LiveServer) -> None:
    """`courtlink recorder keys export` in the server's directory writes the keys /api/v1/recorder/keys serves."""
    exported = courtlink("recorder", "keys", "export", "-o", "keys.json", cwd=server.workdir)
    assert exported.returncode == 0, exported.stderr
    written = json.loads((server.workdir / "keys.json").read_text(encoding="utf-8"))
    status, served = server.api("GET", "/recorder/keys")
    assert status == 200
    assert written == served


def test_recorder_keys_rotate_rotates_the_settings_recorder(tmp_path: Path) -> None:
    """`courtlink recorder keys rotate` rotates the key of the recorder the settings run (rec-1), never a guessed
    id; with only a data dir and no settings it asks for the recorder id instead of guessing."""
    from recorder.keys import load_or_create
    from recorder.recorder import key_dir_of

    key_dir = key_dir_of(tmp_path / "courtlink-data")
    load_or_create(key_dir, "rec-1")
    rotated = courtlink("recorder", "keys", "rotate", cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert "rec-1" in rotated.stdout
    exported = courtlink("recorder", "keys", "export", cwd=tmp_path)
    items = json.loads(exported.stdout)["items"]
    assert {item["recorder_id"] for item in items} == {"rec-1"}
    assert len(items) == 2
    guessed = courtlink("recorder", "keys", "rotate", "--data-dir", str(tmp_path / "courtlink-data"), cwd=tmp_path)
    assert guessed.returncode == 2
    assert "--recorder-id" in guessed.stderr


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine sealed session recorded by the real recorder, in a server-like data dir."""
    return af.record_sealed(tmp_path_factory.mktemp("archive") / "data")


def test_verify_and_render_take_options_before_or_after_the_path(archive: Path, tmp_path: Path) -> None:
    """`verify` and `render` accept their options on either side of the archive path."""
    data = str(af.data_dir_of(archive))
    before_path = ["--data-dir", data, "--no-progress", str(archive)]
    for args in (before_path, [str(archive), "--no-progress", "--data-dir", data]):
        verified = courtlink("verify", *args, cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "valid" in verified.stdout
    small = ["--width", "320", "--height", "240", "--fps", "5", "--no-progress"]
    before = courtlink("render", "-o", str(tmp_path / "a.mp4"), *small, str(archive), cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    after = courtlink("render", str(archive), "-o", str(tmp_path / "b.mp4"), *small, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert (tmp_path / "a.mp4").stat().st_size > 0
    assert (tmp_path / "b.mp4").stat().st_size > 0


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["verify"], ["--trusted-keys", "--data-dir", "--any-key", "--hearing", "--json", "--no-progress"]),
        (["render"], ["--output", "--recorder", "--width", "--height", "--fps", "--no-progress"]),
        (["demo"], ["--url", "--key", "--data-dir", "--config", "--json", "--minutes"]),
        (["hearings", "book"], ["--url", "--key", "--file", "--starts-at", "--ends-at", "--json"]),
        (["hearings", "list"], ["--url", "--key", "--courtroom", "--site", "--from", "--to", "--json"]),
        (["nodes", "drain"], ["--url", "--key", "--json"]),
        (["serve"], ["--host", "--port", "--data-dir", "--config"]),
    ],
)
def test_help_shows_every_option(command: list[str], options: list[str], tmp_path: Path) -> None:
    """`courtlink COMMAND --help` lists every option the command takes, and exits 0."""
    shown = courtlink(*command, "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    missing = [o for o in options if o not in shown.stdout]
    assert missing == []
