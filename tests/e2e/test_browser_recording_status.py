"""The REC indicator names the people the recording misses (``recording.missing``), in English and Chinese.

The server's `recording` message is fed to the real page through Playwright's
WebSocket routing (every other message passes through unchanged; the server's
own `recording` messages are held back once the test fed one), so the
client's display is checked against the message contract itself.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page, WebSocketRoute

    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser


def relay(page: Page) -> list[WebSocketRoute]:
    """Pass the page's WebSocket through to the server, except the server's own ``recording`` messages once the
    test fed the page one (the returned list holds the route once it opens): a real status naming who the recorder
    misses at that moment (the judge's media starting) would otherwise replace the test's, and did, once in CI."""
    routes: list[WebSocketRoute] = []

    def handler(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        fed: list[bool] = []
        original_send = ws.send

        def feed(message: str | bytes) -> None:
            fed.append(True)
            original_send(message)

        def from_server(message: str | bytes) -> None:
            if fed and isinstance(message, str) and _kind(message) == "recording":
                return
            original_send(message)

        server.on_message(from_server)
        ws.send = feed  # type: ignore[method-assign]
        routes.append(ws)

    page.route_web_socket("**/api/v1/ws", handler)
    return routes


def _kind(message: str) -> object:
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed.get("type") if isinstance(parsed, dict) else None


def test_rec_indicator_names_who_is_not_recorded(court_server: Server, participants: Participants) -> None:
    """A degraded recording shows "REC degraded — not recorded: ‹names›" and the console lists sources and reasons."""
    p = participants
    booking = court_server.book([("Wang Fang", "judge", "court"), ("Li Ming", "defendant", "remote")])
    judge = p.open("about:blank")
    routes = relay(judge)
    judge.goto(booking.links["judge"])
    p.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")
    judge.get_by_role("button", name="Start the hearing").click()
    judge.wait_for_selector("#rec-indicator[data-status=recording]", timeout=30_000)
    assert routes, "the page's WebSocket was not routed"

    missing: dict[str, Any] = {
        "type": "recording",
        "status": "degraded",
        "detail": "",
        "missing": [
            {
                "participant_id": booking.ids["defendant"],
                "name": "Li Ming",
                "source": "camera",
                "reason": "network",
                "since": time.time(),
            },
            {
                "participant_id": booking.ids["defendant"],
                "name": "Li Ming",
                "source": "microphone",
                "reason": "network",
                "since": time.time(),
            },
        ],
    }
    routes[0].send(json.dumps(missing))
    judge.wait_for_selector("#rec-indicator[data-status=degraded]")
    assert judge.locator("#rec-text").inner_text().strip() == "REC degraded — not recorded: Li Ming"
    line = judge.locator("#console-recording-missing li").inner_text()
    assert line == "Li Ming: camera, microphone not recorded (network)"
    judge.locator("#lang-toggle").click()
    judge.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    assert judge.locator("#rec-text").inner_text().strip() == "录制降级 — 未录制：Li Ming"

    # A consultation is expected: not named as a degradation.
    consult = {**missing, "status": "recording", "missing": [{**missing["missing"][0], "reason": "consultation"}]}
    routes[0].send(json.dumps(consult))
    judge.wait_for_selector("#rec-indicator[data-status=recording]")
    assert "Li Ming" not in judge.locator("#rec-text").inner_text()
