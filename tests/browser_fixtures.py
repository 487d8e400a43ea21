"""Browser end-to-end helpers: a real ``courtlink serve`` subprocess, bookings over REST, Debian's Chromium.

Chromium is launched with the fake camera and microphone and the loopback
hygiene flags of AIORTC-FACTS.md ("Headless Chromium against aiortc"), so every
packet stays on 127.0.0.1. A :class:`NetworkGuard` on every browser context
aborts and records any request the page makes to a host other than loopback;
tests assert it recorded none.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Route,
    WebSocket,
    sync_playwright,
)

from tests.serve_process import rest_call

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
"""Screenshots and server logs of the browser tests (gitignored)."""

CHROMIUM = "/usr/bin/chromium"
MEDIA_WAIT = 45.0
"""Upper bound for media to start flowing on a loaded 2-core machine (a bound, never asserted as a duration)."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# Playwright passes its own --disable-features list; Chromium honours only the last one given, so ours must
# repeat Playwright's entries (dropping them brings back update and sign-in look-ups) and add mDNS hiding.
_PLAYWRIGHT_DISABLED_FEATURES_FALLBACK = (
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
    "msForceBrowserSignIn",
    "msEdgeUpdateLaunchServicesPreferredVersion",
)


def playwright_disabled_features() -> list[str]:
    """The features the installed Playwright disables in Chromium (read from its driver, else a known copy)."""
    import playwright

    bundle = Path(playwright.__file__).parent / "driver" / "package" / "lib" / "coreBundle.js"
    try:
        text = bundle.read_text(encoding="utf-8")
    except OSError:
        return list(_PLAYWRIGHT_DISABLED_FEATURES_FALLBACK)
    match = re.search(r"disabledFeatures\s*=\s*\[(.*?)\]\.filter\(Boolean\)", text, re.DOTALL)
    if match is None:
        return list(_PLAYWRIGHT_DISABLED_FEATURES_FALLBACK)
    body = re.sub(r"//[^\n]*", "", match.group(1))
    names = re.findall(r'"([A-Za-z0-9_]+)"', body)
    return names or list(_PLAYWRIGHT_DISABLED_FEATURES_FALLBACK)


def chromium_args() -> list[str]:
    """Fake devices plus the flags that keep Chromium's traffic on loopback (AIORTC-FACTS.md)."""
    disabled = [*playwright_disabled_features(), "WebRtcHideLocalIpsWithMdns"]
    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--allow-loopback-in-peer-connection",
        "--webrtc-ip-handling-policy=default_public_interface_only",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--disable-features={','.join(dict.fromkeys(disabled))}",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
        # Received audio plays without a click in the test (a real participant clicks "Join").
        "--autoplay-policy=no-user-gesture-required",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def chromium_in(netns: str, folder: Path) -> str:
    """A launcher (written into ``folder``) that starts Debian's Chromium inside the network namespace ``netns``
    (Playwright talks to it over a pipe)."""
    script = folder / f"chromium-{netns}"
    script.write_text(f'#!/bin/sh\nexec nsenter --net=/run/netns/{netns} {CHROMIUM} "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return str(script)


def namespace_args(origin: str, server_address: str, *extra: str) -> list[str]:
    """:func:`chromium_args` for a Chromium in a network namespace the test made: host candidates (the namespaces
    themselves keep every packet in), names resolved for the server's ``server_address`` too, and the server's
    ``origin`` treated as secure (a camera is only offered to secure origins; this one is not loopback); then
    ``extra`` flags."""
    args = [a for a in chromium_args() if not a.startswith(("--webrtc-ip-handling-policy", "--host-resolver-rules"))]
    rules = f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE {server_address}"
    return [*args, rules, f"--unsafely-treat-insecure-origin-as-secure={origin}", *extra]


def fake_video_clip(path: Path, *, width: int = 160, height: int = 120, fps: int = 10) -> Path:
    """A small moving test picture as Y4M, for ``--use-file-for-fake-video-capture`` (Chromium loops it)."""
    if not path.is_file():
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            pytest.skip("ffmpeg not found (apt-get install ffmpeg)")
        subprocess.run(
            [
                ffmpeg,
                *("-hide_banner", "-loglevel", "error", "-f", "lavfi"),
                *("-i", f"testsrc=size={width}x{height}:rate={fps}", "-t", "4", "-pix_fmt", "yuv420p", "-y"),
                str(path),
            ],
            check=True,
            timeout=60,
        )
    return path


def require_chromium() -> None:
    """Skip when Debian's chromium is not installed (never ``playwright install``)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")


def admit_defendant(
    judges: Participants, defendants: Participants, booking: Booking, *, what: str = ""
) -> tuple[Page, Page]:
    """The judge (in ``judges``' browser) joins, opens the courtroom and admits the defendant (in ``defendants``',
    which may be the same group); both pages once each receives the other. ``what`` labels the waits."""
    judge = judges.open(booking.links["judge"])
    judges.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")
    defendant = defendants.open(booking.links["defendant"])
    defendants.join(defendant)
    judge.get_by_role("button", name=f"Admit {booking.names['defendant']}").click()
    defendant.wait_for_selector("body[data-view=hearing]")
    judges.wait_receiving(judge, booking.ids["defendant"], f"judge <- defendant{what}")
    defendants.wait_receiving(defendant, booking.ids["judge"], f"defendant <- judge{what}")
    return judge, defendant


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running ``courtlink serve`` subprocess."""

    base_url: str
    admin_key: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    via: Callable[[Callable[[], Any]], Any] | None = None
    """Runs the test's own HTTP calls (e.g. in a thread inside the server's network namespace)."""

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One REST call with the admin key; returns (status, decoded JSON body)."""
        if self.via is not None:
            result: tuple[int, Any] = self.via(lambda: self._request(method, path, body))
            return result
        return self._request(method, path, body)

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return rest_call(self.base_url + path, self.admin_key, method, body)

    def book(self, participants: list[tuple[str, str, str]], *, kind: str = "trial") -> Booking:
        """Book a hearing starting now (see :func:`book_hearing`)."""
        return book_hearing(self, participants, kind=kind)

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server's output (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _courtlink_binary() -> list[str]:
    # COURTLINK_E2E_SERVE names another command line that behaves like ``courtlink`` (e.g. an installed build).
    override = os.environ.get("COURTLINK_E2E_SERVE")
    if override:
        return shlex.split(override)
    venv_script = Path(sys.executable).parent / "courtlink"
    if venv_script.is_file():
        return [str(venv_script)]
    found = shutil.which("courtlink")
    return [found] if found else [sys.executable, "-m", "courtlink.cli"]


@contextmanager
def run_server(
    workdir: Path,
    *,
    host: str = "127.0.0.1",
    wrap: tuple[str, ...] = (),
    env_extra: dict[str, str] | None = None,
    via: Callable[[Callable[[], Any]], Any] | None = None,
) -> Iterator[Server]:
    """Start ``courtlink serve`` on a free loopback port with a fresh data dir; stop it afterwards.

    ``wrap`` prefixes the command (e.g. ``nsenter --net=...`` to run it in a network namespace the test
    made, listening on ``host`` there); ``via`` then runs the test's HTTP calls where they reach it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    admin_key = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "COURTLINK_ADMIN_KEY": admin_key,
        "COURTLINK_LOG_FORMAT": "console",
        "PYTHONUNBUFFERED": "1",
        **(env_extra or {}),
    }
    env.pop("COURTLINK_REDIS_URL", None)
    log_path = workdir / "server.log"
    last_error = ""
    for _ in range(3):
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *wrap,
                    *_courtlink_binary(),
                    "serve",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--data-dir",
                    str(data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
            )
        server = Server(f"http://{host}:{port}", admin_key, data_dir, log_path, process, via)
        if _wait_healthy(server):
            try:
                yield server
            finally:
                _stop(process)
            return
        _stop(process)
        last_error = server.log_tail()
    pytest.fail(f"courtlink serve did not become healthy:\n{last_error}")


def _wait_healthy(server: Server, timeout: float = 30.0) -> bool:
    def healthy() -> bool:
        try:
            with urllib.request.urlopen(server.base_url + "/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if server.via(healthy) if server.via is not None else healthy():
            return True
        time.sleep(0.2)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass(frozen=True)
class Booking:
    """A booked hearing and each participant's join link, by role."""

    hearing_id: str
    case_number: str
    links: dict[str, str]
    """Role (or role#n for a second of a role) -> join URL."""
    names: dict[str, str]
    """Role -> display name."""
    ids: dict[str, str]
    """Role -> participant id."""


def book_hearing(server: Server, participants: list[tuple[str, str, str]], *, kind: str = "trial") -> Booking:
    """Create two sites and a courtroom, then book a hearing starting now; ``participants`` are (name, role, site).

    Every counsel is booked as representing every defendant and party (``represents``), so they may consult.
    """
    suffix = secrets.token_hex(3)
    court, remote = f"court-{suffix}", f"detention-{suffix}"
    for site, site_kind, site_name in (
        (court, "court", f"Intermediate Court {suffix}"),
        (remote, "detention_center", f"No. 1 Detention Center {suffix}"),
    ):
        status, body = server.request(
            "POST", "/api/v1/sites", {"id": site, "name": site_name, "kind": site_kind, "terminals": 5}
        )
        assert status == 201, (status, body)
    status, body = server.request(
        "POST", "/api/v1/courtrooms", {"id": f"room-{suffix}", "name": "Courtroom 3", "site_id": court}
    )
    assert status == 201, (status, body)
    now = datetime.now(UTC).replace(microsecond=0)
    clients = [i for i, (_, role, _) in enumerate(participants) if role in ("defendant", "party")]
    status, body = server.request(
        "POST",
        "/api/v1/hearings",
        {
            "case_number": f"(2026) Xing Chu {suffix}",
            "title": "Browser test",
            "kind": kind,
            "courtroom_id": f"room-{suffix}",
            "starts_at": (now - timedelta(minutes=5)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat(),
            "participants": [
                {"name": name, "role": role, "site_id": court if site == "court" else remote}
                | ({"represents": clients} if role == "counsel" else {})
                for name, role, site in participants
            ],
        },
    )
    assert status == 201, (status, body)
    links: dict[str, str] = {}
    names: dict[str, str] = {}
    ids: dict[str, str] = {}
    for p in body["participants"]:
        key = p["role"] if p["role"] not in links else f"{p['role']}#{sum(k.startswith(p['role']) for k in links) + 1}"
        links[key] = p["join_url"]
        names[key] = p["name"]
        ids[key] = p["id"]
    return Booking(body["id"], body["case_number"], links, names, ids)


@dataclass
class NetworkGuard:
    """Aborts and records every request of a browser context to a host that is not loopback."""

    foreign: list[str] = field(default_factory=list)
    allowed: frozenset[str] = LOOPBACK_HOSTS
    """Hosts the pages may reach (a test's own network namespace adds its addresses)."""

    def attach(self, context: BrowserContext) -> None:
        """Watch ``context``: HTTP(S) through a route, WebSockets through each page's event."""
        context.route("**/*", self._route)
        context.on("page", self._watch_page)
        for page in context.pages:
            self._watch_page(page)

    def _watch_page(self, page: Page) -> None:
        page.on("request", self._request)
        page.on("websocket", self._websocket)

    def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about", "chrome", "devtools"):
            return True
        return (parts.hostname or "") in self.allowed

    def _route(self, route: Route) -> None:
        url = route.request.url
        if self._allowed(url):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort("blockedbyclient")

    def _request(self, request: Request) -> None:
        if not self._allowed(request.url) and request.url not in self.foreign:
            self.foreign.append(request.url)

    def _websocket(self, ws: WebSocket) -> None:
        if not self._allowed(ws.url):
            self.foreign.append(ws.url)

    def assert_clean(self) -> None:
        """Fail when the page asked for anything beyond loopback."""
        assert not self.foreign, f"the page made requests beyond loopback: {self.foreign}"


def artifact_dir(name: str) -> Path:
    """A folder under artifacts/browser/ for one test's screenshots; printed so a developer finds it."""
    path = ARTIFACTS / name
    path.mkdir(parents=True, exist_ok=True)
    print(f"browser artifacts: {path}")
    return path


def wait_until(check: Callable[[], bool], *, timeout: float = 30.0, interval: float = 0.25, what: str = "") -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        time.sleep(interval)


def inbound(page: Page) -> list[dict[str, Any]]:
    """The page's received RTP streams (getStats inbound-rtp), each with participant and source."""
    result: list[dict[str, Any]] = page.evaluate("() => window.courtlink.inbound()")
    return result


def totals(page: Page, participant_id: str) -> dict[str, int]:
    """Bytes and decoded frames received from one participant, by kind."""
    out = {"audio_bytes": 0, "video_bytes": 0, "video_frames": 0}
    for s in inbound(page):
        if s["participant_id"] != participant_id:
            continue
        if s["kind"] == "audio":
            out["audio_bytes"] += int(s["bytesReceived"])
        else:
            out["video_bytes"] += int(s["bytesReceived"])
            out["video_frames"] += int(s["framesDecoded"])
    return out


def client_state(page: Page) -> dict[str, Any]:
    """The client's own view of its connection, placement and view."""
    result: dict[str, Any] = page.evaluate("() => window.courtlink.state()")
    return result


# --- pytest fixtures (test modules load them with ``pytest_plugins = ["tests.browser_fixtures"]``) -------------


@pytest.fixture(scope="session")
def court_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ``courtlink serve`` for every browser test (each test books its own hearing)."""
    with run_server(tmp_path_factory.mktemp("courtlink-serve")) as server:
        yield server
    (ARTIFACTS).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server.log_path, ARTIFACTS / "server.log")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, with fake devices and loopback-only networking.

    Module-scoped: Playwright's sync API runs an event loop in this thread while
    it is open, which would break every asyncio test that runs after it.
    """
    yield from _launch(chromium_args())


@pytest.fixture(scope="module")
def small_chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium whose fake camera plays a 160x120, 10 fps clip, so a full cast of eight pages fits on 2 cores."""
    clip = fake_video_clip(tmp_path_factory.mktemp("clip") / "small.y4m")
    yield from _launch([*chromium_args(), f"--use-file-for-fake-video-capture={clip}"])


def _launch(args: list[str]) -> Iterator[Browser]:
    """Debian's Chromium, headless, with ``args``; closed when the generator ends."""
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Participants:
    """Opens each participant's page in a browser context of its own; checks the network guard at the end."""

    browser: Browser
    guard: NetworkGuard = field(default_factory=NetworkGuard)
    contexts: list[BrowserContext] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    signals: dict[int, Counter[str]] = field(default_factory=dict)
    """Per page (by ``id``): WebSocket messages seen, e.g. ``sent:offer``, ``recv:error:renegotiation_pending``."""

    def open(self, url: str, *, locale: str = "en-US", viewport: tuple[int, int] = (1280, 800)) -> Page:
        """A new context (own profile, own devices) with ``url`` loaded, at ``viewport`` (width, height) pixels."""
        width, height = viewport
        context = self.browser.new_context(locale=locale, viewport={"width": width, "height": height})
        self.guard.attach(context)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        # Printed at teardown; pytest shows it only when the test fails.
        tag = f"page{len(self.contexts)}"
        page.on("console", lambda message: self._console(tag, message))
        counts: Counter[str] = Counter()
        self.signals[id(page)] = counts
        page.on("websocket", lambda ws: self._count_signals(ws, counts))
        page.goto(url)
        return page

    @staticmethod
    def _count_signals(ws: WebSocket, counts: Counter[str]) -> None:
        def count(direction: str, payload: str | bytes) -> None:
            try:
                message = json.loads(payload)
            except (ValueError, TypeError):
                return
            if not isinstance(message, dict):
                return
            kind = str(message.get("type"))
            counts[f"{direction}:{kind}"] += 1
            if kind == "error":
                counts[f"{direction}:error:{message.get('code')}"] += 1
            if kind == "media_restart":
                counts[f"{direction}:media_restart:{message.get('reason')}"] += 1

        ws.on("framesent", lambda payload: count("sent", payload))
        ws.on("framereceived", lambda payload: count("recv", payload))

    def signal_counts(self, page: Page) -> Counter[str]:
        """The WebSocket messages ``page`` sent and received so far, by type (and error code)."""
        return self.signals.get(id(page), Counter())

    def _console(self, tag: str, message: ConsoleMessage) -> None:
        print(f"[{tag} console.{message.type}] {message.text}")
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    # The helpers below are reachable through the fixture, so test modules import this module for types only.

    @staticmethod
    def totals(page: Page, participant_id: str) -> dict[str, int]:
        """Bytes and decoded frames ``page`` received from one participant (see :func:`totals`)."""
        return totals(page, participant_id)

    @staticmethod
    def inbound(page: Page) -> list[dict[str, Any]]:
        """Every received RTP stream of ``page`` (see :func:`inbound`)."""
        return inbound(page)

    @staticmethod
    def state(page: Page) -> dict[str, Any]:
        """The client's view of its connection, placement and view (see :func:`client_state`)."""
        return client_state(page)

    @staticmethod
    def wait_until(check: Callable[[], bool], *, timeout: float = 30.0, what: str = "") -> None:
        """Poll until ``check`` holds (see :func:`wait_until`)."""
        wait_until(check, timeout=timeout, what=what)

    @staticmethod
    def join(page: Page, *, keyboard: bool = False) -> None:
        """Wait for the device check to show the camera (an observer's page has none), then press the join button (or
        focus it and press Enter)."""
        page.wait_for_selector("body[data-view=prejoin]")
        page.wait_for_function(
            "() => document.body.dataset.audience === '1' || document.getElementById('pj-preview').videoWidth > 0"
        )
        if keyboard:
            page.locator("#pj-join").focus()
            page.keyboard.press("Enter")
        else:
            page.locator("#pj-join").click()

    @staticmethod
    def unlabelled_controls(page: Page) -> list[str]:
        """Visible buttons, selects and links without an accessible name (text, aria-label or a <label>)."""
        result: list[str] = page.evaluate(
            """() => [...document.querySelectorAll('button, select, a[href], [role=button]')]
                .filter((el) => el.offsetParent !== null)
                .filter((el) => !((el.getAttribute('aria-label') || '').trim() || (el.textContent || '').trim()
                    || (el.id && document.querySelector(`label[for="${el.id}"]`))))
                .map((el) => el.outerHTML.slice(0, 120))"""
        )
        return result

    @staticmethod
    def wait_receiving(page: Page, participant_id: str, what: str, *, timeout: float = MEDIA_WAIT) -> None:
        """Wait until ``page`` decodes more and more video frames and gets more and more audio bytes from someone."""
        try:
            wait_until(
                lambda: (t := totals(page, participant_id))["video_frames"] > 0 and t["audio_bytes"] > 0,
                timeout=timeout,
                what=f"{what}: first media",
            )
            first = totals(page, participant_id)
            wait_until(
                lambda: (
                    (t := totals(page, participant_id))["video_frames"] > first["video_frames"] + 10
                    and t["audio_bytes"] > first["audio_bytes"]
                ),
                timeout=timeout,
                what=f"{what}: frames decoded and audio bytes rising",
            )
        except pytest.fail.Exception:
            print(f"{what}: client state {client_state(page)}, inbound {inbound(page)}")
            raise

    @staticmethod
    def artifacts(name: str) -> Path:
        """The screenshot folder of one test (see :func:`artifact_dir`)."""
        return artifact_dir(name)

    def close(self) -> None:
        """Close every context."""
        for context in self.contexts:
            context.close()
        self.contexts.clear()


@contextmanager
def participant_group(browser: Browser, *, also_allowed: frozenset[str] = frozenset()) -> Iterator[Participants]:
    """Participant pages in ``browser``; fails on any request beyond loopback (and ``also_allowed`` hosts, the
    addresses of a network namespace the test made) or any uncaught page error."""
    group = Participants(browser, guard=NetworkGuard(allowed=LOOPBACK_HOSTS | also_allowed))
    try:
        yield group
    finally:
        group.close()
    group.guard.assert_clean()
    assert not group.page_errors, f"uncaught errors in the page: {group.page_errors}"
    assert not group.csp_violations, f"the page broke its own Content-Security-Policy: {group.csp_violations}"


@pytest.fixture
def participants(chromium: Browser) -> Iterator[Participants]:
    """Participant pages of one test; fails the test on any request beyond loopback or any uncaught page error."""
    with participant_group(chromium) as group:
        yield group
