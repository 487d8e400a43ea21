"""The web client as served: /join and /static with strict headers, nothing from elsewhere, the guard works."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]

WEB_DIR = Path(__file__).resolve().parents[2] / "signaling" / "web"


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET one URL on the loopback server: status, headers, body."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def test_join_page_and_modules_carry_strict_headers(court_server: Server) -> None:
    """/join and every static type answer with a strict CSP, nosniff, no-referrer and the right content type."""
    status, headers, body = fetch(court_server.base_url + "/join?t=abc")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self' ws: wss:",
        "media-src 'self' blob: mediastream:",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b'<script type="module" src="/static/js/main.js">' in body
    for path, content_type in (
        ("/static/js/main.js", "text/javascript"),
        ("/static/css/app.css", "text/css"),
        ("/static/i18n/zh-CN.json", "application/json"),
    ):
        status, headers, _ = fetch(court_server.base_url + path)
        assert status == 200, path
        assert headers["Content-Type"].startswith(content_type), (path, headers["Content-Type"])
        assert "Content-Security-Policy" in headers


def test_static_refuses_paths_outside_the_client(court_server: Server) -> None:
    """Traversal, unknown files and unknown file types are 404, never a file from elsewhere."""
    for path in (
        "/static/../webclient.py",
        "/static/%2e%2e/webclient.py",
        "/static/js/../../webclient.py",
        "/static/js/nothing.js",
        "/static/index.html.bak",
    ):
        status, _, body = fetch(court_server.base_url + path)
        assert status == 404, path
        assert b"def setup_web" not in body


def test_client_files_name_nothing_from_elsewhere() -> None:
    """No file of the client refers to another host: no CDN, fonts, scripts or images from outside."""
    files = [p for p in WEB_DIR.rglob("*") if p.is_file()]
    assert any(p.suffix == ".js" for p in files)
    external = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)
    allowed = {"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"}  # an RTP header extension URI, not a fetch
    for path in files:
        text = path.read_text(encoding="utf-8")
        found = {m.group(0) for m in external.finditer(text)}
        found = {f for f in found if not any(a.startswith(f) or f in a for a in allowed)}
        assert not found, f"{path.relative_to(WEB_DIR)} names other hosts: {found}"
    assert "@import" not in (WEB_DIR / "css" / "app.css").read_text(encoding="utf-8")


@pytest.mark.browser
def test_network_guard_catches_a_request_beyond_loopback(court_server: Server, participants: Participants) -> None:
    """The guard every browser test uses aborts and records a request to another host (so such a test fails)."""
    page = participants.open("about:blank")
    outcome = page.evaluate(
        "() => fetch('http://courtlink-guard-check.example/x').then(() => 'loaded', () => 'blocked')"
    )
    assert outcome == "blocked"
    assert any("courtlink-guard-check.example" in url for url in participants.guard.foreign)
    participants.guard.foreign.clear()  # the request was this test's own probe


@pytest.mark.browser
def test_content_security_policy_blocks_other_hosts(court_server: Server, participants: Participants) -> None:
    """Inside the client page the CSP itself refuses a connection to another host before any packet leaves."""
    page = participants.open(court_server.base_url + "/join?t=x")
    page.wait_for_selector("body[data-view=ended]")
    outcome = page.evaluate("() => fetch('http://courtlink-csp-check.example/x').then(() => 'loaded', () => 'blocked')")
    assert outcome == "blocked"
    assert not participants.guard.foreign, "the CSP should have stopped the request before the network"
    participants.wait_until(lambda: bool(participants.csp_violations), what="the CSP violation report")
    participants.csp_violations.clear()  # this test's own probe


@pytest.mark.browser
def test_bad_link_shows_a_clear_message(court_server: Server, participants: Participants) -> None:
    """A page without a usable token says the link does not work instead of trying to join."""
    page = participants.open(court_server.base_url + "/join")
    page.wait_for_selector("body[data-view=ended]")
    assert page.locator("#ended-heading").inner_text().strip() == "This link does not work"
