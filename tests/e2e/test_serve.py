"""`courtlink serve` as a new user runs it: booking with the CLI, restart, persistence, audit tamper."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve_process import ADMIN_KEY, ServeProcess, rest_call

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    """A running ``courtlink serve`` on a fresh data directory."""
    proc = ServeProcess(tmp_path / "data")
    proc.start()
    yield proc
    proc.stop()


def _api(server: ServeProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One REST call with the admin key: (status, parsed JSON body)."""
    return rest_call(f"{server.url}/api/v1{path}", ADMIN_KEY, method, body, timeout=10)


def _cli(server: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "courtlink.cli", *args, "--url", server.url, "--key", ADMIN_KEY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _catalog(server: ServeProcess) -> None:
    for site in (
        {"id": "dc1", "name": "No. 1 Detention Center", "kind": "detention_center", "terminals": 2},
        {"id": "court", "name": "Intermediate Court", "kind": "court"},
    ):
        assert _api(server, "POST", "/sites", site)[0] == 201
    room = {"id": "room1", "name": "Remote Courtroom 1", "site_id": "court"}
    assert _api(server, "POST", "/courtrooms", room)[0] == 201


def test_cli_books_the_example_hearing_and_lists_it(server: ServeProcess) -> None:
    """`courtlink hearings book --file deploy/hearing.example.toml` prints one join link per participant."""
    _catalog(server)
    booked = _cli(server, "hearings", "book", "--file", str(ROOT / "deploy" / "hearing.example.toml"))
    assert booked.returncode == 0, booked.stderr
    assert booked.stdout.count("/join?t=") == 4
    again = _cli(server, "hearings", "book", "--file", str(ROOT / "deploy" / "hearing.example.toml"))
    assert again.returncode == 1
    assert "courtroom" in again.stderr
    listed = _cli(server, "hearings", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert [h["case_number"] for h in items] == ["(2026) Xing Chu 123"]


def test_bookings_and_audit_survive_a_restart_and_tampering_is_named(tmp_path: Path) -> None:
    """After a restart the booking and its verified audit chain are there; an altered event is named."""
    data = tmp_path / "data"
    first = ServeProcess(data)
    first.start()
    try:
        _catalog(first)
        booked = _cli(first, "hearings", "book", "--file", str(ROOT / "deploy" / "hearing.example.toml"), "--json")
        assert booked.returncode == 0, booked.stderr
        hearing_id = json.loads(booked.stdout)["id"]
        _api(first, "PATCH", f"/hearings/{hearing_id}", {"title": "State v. Li Ming (retrial)"})
    finally:
        assert first.stop() == 0

    second = ServeProcess(data)
    second.start()
    try:
        hearing = _api(second, "GET", f"/hearings/{hearing_id}")[1]
        assert hearing["title"] == "State v. Li Ming (retrial)"
        audit = _api(second, "GET", f"/hearings/{hearing_id}/audit")[1]
        assert [e["action"] for e in audit["events"]][:1] == ["hearing_booked"]
        assert len(audit["events"]) >= 2
        assert audit["verified"]["ok"] is True
    finally:
        second.stop()

    with sqlite3.connect(data / "courtlink.sqlite3") as db:
        (body,) = db.execute("SELECT body FROM audit WHERE stream = ? AND seq = 1", (hearing_id,)).fetchone()
        event = json.loads(body)
        event["actor"] = "key:someone-else"
        db.execute("UPDATE audit SET body = ? WHERE stream = ? AND seq = 1", (json.dumps(event), hearing_id))

    third = ServeProcess(data)
    third.start()
    try:
        verified = _api(third, "GET", f"/hearings/{hearing_id}/audit")[1]["verified"]
        assert verified["ok"] is False
        assert verified["first_bad_seq"] == 1
    finally:
        third.stop()
