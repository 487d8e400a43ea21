"""A full cast of eight, the defendant in Chromium behind a thin, lossy link (issue 11, deliver 7; the court's
"seven people in one hearing" and "a defendant on a weak link").

Two network namespaces of the test's own (``tests.two_sites.adapting_server_on_a_link``). In the court: ``courtlink
serve``; six people who publish camera and microphone from aiortc (judge, clerk, prosecutor, two defence counsel,
interpreter: 192x144 painted video under noise at 15 fps and 50-200 kbit/s, Opus at 20 kbit/s, receiving nothing,
in one thread of their own there);
and the observer, in Chromium. In the detention center: the defendant, in Chromium with its fake camera. The
defendant receives six cameras and six microphones; the observer, the last six speakers' cameras (``[media]
last_n``) and every microphone.

(Eight Chromium pages on the machine's two cores starved the server: its loop lagged 1-2.5 s, what it then sent in
bursts overflowed the shaped link, and 9-25% of the defendant's audio was lost, with the court's browser at ``nice``
15 too. A court's media node runs on a machine of its own; the people beside it here cost little.)

Once everyone decodes everyone, the defendant's downlink is shaped to :data:`RATE_KBIT` with :data:`LOSS_PERCENT`
random loss, dropped where the packets arrive. Over a :data:`WINDOW` once the node has paused what does not fit:

- the defendant gets each of the six microphones with at most 1% of its packets lost, after the resends (audio always
  flows, and goes first);
- the judge's camera is never paused for the defendant and keeps decoding; other cameras are paused;
- the observer, on the court's unlimited side, keeps decoding every camera it gets (nobody else notices).

Then the limit is lifted, and every paused camera comes back at the defendant. The figures (loss and concealment per
microphone, the judge's frame rate and longest freeze at the defendant, the time back after the lift) are printed;
none is asserted as a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import aiortc.codecs.opus
import aiortc.codecs.vpx
import pytest
from playwright.sync_api import sync_playwright

import tests.e2e.test_recording_e2e as recording_e2e
import tests.media_clients
from tests.browser_fixtures import (
    artifact_dir,
    book_hearing,
    chromium_in,
    namespace_args,
    participant_group,
    require_chromium,
)
from tests.e2e.test_recording_e2e import PublishOnly, close_all, remote_court, session
from tests.e2e.test_simulcast_thin_link import video_paused
from tests.netns import Shape, enter_netns, shape, unshape
from tests.thin_link_client import NoisyCodeTrack
from tests.two_sites import adapting_server_on_a_link
from tests.ws_fixtures import VIDEO_SIZE, Participant

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Booking, Participants

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

T = TypeVar("T")

COURT, HOME = "10.83.0.1", "10.83.0.2"
PEOPLE = [
    ("Wang Fang", "judge", "court"),
    ("Chen Jing", "clerk", "court"),
    ("Liu Yang", "prosecutor", "court"),
    ("Sun Li", "counsel", "court"),
    ("Qian Wei", "counsel", "court"),
    ("Zhou Hui", "interpreter", "court"),
    ("Zhao Lei", "observer", "court"),
    ("Li Ming", "defendant", "remote"),
]
PUBLISHERS = ("judge", "clerk", "prosecutor", "counsel", "counsel#2", "interpreter")
"""The court-side people who publish from aiortc (by booking key), judge first; the defendant receives them all."""
RATE_KBIT = 600
"""The shaped downlink. Six microphones take about 270 kbit/s of it: 20 kbit/s of Opus each, and 50 packets a second
of some 62 bytes of headers (IP, UDP, RTP and its extensions, the SRTP tag), 25 kbit/s more. The judge's camera (at
most 200 kbit/s) fits beside them, all six cameras do not. (With the microphones at 46 kbit/s each, about 490 kbit/s in
all, the judge's camera starved: 0.2 fps at the defendant, frozen 10.5 s.)"""
LOSS_PERCENT = 2
PAUSED_WITHIN = 60.0
"""Seconds the node has to pause what does not fit (a bound for a shared machine, not a timing)."""
WINDOW = 15.0
"""Seconds measured once video is paused for the defendant."""
BACK_WITHIN = 60.0
"""Seconds every paused camera has to come back after the lift (a bound, not a timing; the figure is printed)."""
AUDIO_LOSS_MAX = 0.01
"""The issue's ">= 99% of audio": of each microphone's packets in the window, at most this share lost."""
CAMERA_KBPS = (50, 200)
"""The aiortc cameras' lowest and highest (and first) bitrate, kbit/s: about what a browser sends for a small tile.
Their frames carry noise, so VP8 spends what it is allowed."""
CAMERA_FPS = 15
OPUS_KBPS = 20
"""The aiortc microphones' Opus bitrate, near a browser's for speech (Chromium sent 28 kbit/s of Opus here). aiortc's
own is 96 kbit/s stereo, and six of those do not fit the shaped link at all; asked for 24-32 kbit/s, libopus sent
45-47 for aiortc's test tone (20 gives 20)."""
WAIT = 60.0
"""Seconds any one step of the court side may take (a bound, not a timing)."""


class NoisyPublisher(PublishOnly):
    """A court-side person: a small camera under noise at :data:`CAMERA_FPS`, a microphone; receives nothing."""

    def _setup(self) -> None:
        if self.video is not None:
            self.video = NoisyCodeTrack(self.video.tag, *VIDEO_SIZE, fps=CAMERA_FPS)
        super()._setup()


def _speech_opus(encoder: Any) -> None:
    """aiortc's Opus encoder, at a browser's speech bitrate."""
    _opus_init(encoder)
    encoder.codec.bit_rate = OPUS_KBPS * 1000


_opus_init = aiortc.codecs.opus.OpusEncoder.__init__


class CourtSide:
    """The six aiortc publishers, on an event loop in a thread inside the court's namespace: joined, admitted, the
    courtroom opened and the hearing started by the judge; :meth:`call` runs a coroutine of theirs from the test."""

    def __init__(self, netns: str, url: str, booking: Booking) -> None:
        self._url, self._booking = url, booking
        self._pool = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(netns,))
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.people: dict[str, Participant] = {}
        self._done = self._pool.submit(asyncio.run, self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with aiohttp.ClientSession() as http:
            court = remote_court(self._url, http)
            try:
                for tag, key in enumerate(PUBLISHERS, start=1):
                    token = parse_qs(urlsplit(self._booking.links[key]).query)["t"][0]
                    client, joined = await court.join(token)
                    p = Participant(key, client, joined, NoisyPublisher(key, tag=tag))
                    p.attach()
                    court.participants.append(p)
                    self.people[key] = p
                judge = self.people["judge"]
                await session(judge, "open")
                for key, p in self.people.items():
                    if p.joined["placement"] == "lobby":
                        await self.admit(key)
                for p in self.people.values():
                    await p.start_media()
                await session(judge, "start")
                self._ready.set()
                await self._stop.wait()
            finally:
                await close_all(court)

    async def admit(self, key: str) -> None:
        """The judge admits ``key`` from the lobby."""
        reply = await self.people["judge"].client.request_ok("admit", "roster", participant_id=self._booking.ids[key])
        assert reply["type"] == "roster", reply

    def ready(self) -> None:
        """Wait until everyone is seated and publishing, the hearing in session (or raise what went wrong)."""
        deadline = time.monotonic() + 2 * WAIT
        while not self._ready.wait(0.5):
            if self._done.done():
                self._done.result()
                raise AssertionError("the court side stopped before it was ready")
            assert time.monotonic() < deadline, "the court side never got ready"

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the court side's loop; its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(_awaited(make), self._loop).result(WAIT)

    def close(self) -> None:
        """Everyone leaves; the thread ends."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        with contextlib.suppress(Exception):
            self._done.result(WAIT)
        self._pool.shutdown(wait=False)


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


@contextlib.contextmanager
def court_side(netns: str, url: str, booking: Booking) -> Iterator[CourtSide]:
    """:class:`CourtSide`, ready; closed at the end."""
    side = CourtSide(netns, url, booking)
    try:
        side.ready()
        yield side
    finally:
        side.close()


def per_publisher(group: Participants, page: Page, ids: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``page``'s received streams, by publisher (booking key) and kind, cameras only for video."""
    by_id = {pid: key for key, pid in ids.items()}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for s in group.inbound(page):
        key = by_id.get(s["participant_id"] or "")
        if key is None or (s["kind"] == "video" and s.get("source") != "camera"):
            continue
        out.setdefault(key, {})[s["kind"]] = s
    return out


def count(stats: dict[str, dict[str, dict[str, Any]]], key: str, kind: str, field: str) -> int:
    return int(stats.get(key, {}).get(kind, {}).get(field, 0))


def test_a_full_cast_keeps_its_audio_and_the_judge_for_a_defendant_on_a_thin_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight people; the defendant behind 600 kbit/s + 2% loss keeps all six microphones and the judge's camera while
    other cameras pause for them, the observer notices nothing, and the paused cameras come back after the lift."""
    require_chromium()
    shots = artifact_dir("full-cast-thin")
    # The aiortc people offer host candidates on the court's address, where the node is (not on loopback).
    for module in (tests.media_clients, recording_e2e):
        monkeypatch.setattr(module, "LOOPBACK", (COURT,))
    monkeypatch.setattr(aiortc.codecs.opus.OpusEncoder, "__init__", _speech_opus)
    low, high = CAMERA_KBPS
    monkeypatch.setattr(aiortc.codecs.vpx, "MIN_BITRATE", low * 1000)
    monkeypatch.setattr(aiortc.codecs.vpx, "DEFAULT_BITRATE", high * 1000)
    monkeypatch.setattr(aiortc.codecs.vpx, "MAX_BITRATE", high * 1000)
    names = (("cl-fc-court", "cl-fc-home"), (COURT, HOME), ("vfccourt", "vfchome"))
    with adapting_server_on_a_link(tmp_path, *names) as (link, server):
        try:
            booking = book_hearing(server, PEOPLE)
            with court_side(link.a, server.base_url, booking) as court:
                args = namespace_args(server.base_url, COURT)
                allowed = frozenset({COURT})
                with sync_playwright() as playwright:
                    browsers = [
                        playwright.chromium.launch(executable_path=chromium_in(ns, tmp_path), headless=True, args=args)
                        for ns in (link.a, link.b)
                    ]
                    try:
                        with (
                            participant_group(browsers[0], also_allowed=allowed) as at_court,
                            participant_group(browsers[1], also_allowed=allowed) as at_home,
                        ):
                            _run(server, booking, link, court, at_court, at_home, shots)
                    finally:
                        for browser in browsers:
                            browser.close()
        finally:
            shutil.copyfile(server.log_path, shots / "server.log")


def _run(
    server: Any,
    booking: Booking,
    link: Any,
    court: CourtSide,
    at_court: Participants,
    at_home: Participants,
    shots: Path,
) -> None:
    ids = booking.ids
    observer = at_court.open(booking.links["observer"], viewport=(1024, 600))
    defendant = at_home.open(booking.links["defendant"], locale="zh-CN", viewport=(1024, 600))
    for group, page, key in ((at_court, observer, "observer"), (at_home, defendant, "defendant")):
        group.join(page)
        page.wait_for_selector("body[data-view=lobby], body[data-view=hearing]", timeout=60_000)
        if page.evaluate("() => document.body.dataset.view") == "lobby":
            court.call(lambda key=key: court.admit(key))  # type: ignore[misc]
        page.wait_for_selector("body[data-view=hearing]", timeout=60_000)

    def everyone(group: Participants, page: Page, cameras: int) -> bool:
        """Every microphone heard, and ``cameras`` of the cameras decoding."""
        stats = per_publisher(group, page, ids)
        return all(count(stats, key, "audio", "packetsReceived") > 0 for key in PUBLISHERS) and (
            sum(count(stats, key, "video", "framesDecoded") > 20 for key in stats) >= cameras
        )

    try:
        at_home.wait_until(lambda: everyone(at_home, defendant, 6), timeout=120, what="the defendant decoding all six")
        at_court.wait_until(lambda: everyone(at_court, observer, 6), timeout=60, what="the observer decoding six")
    except pytest.fail.Exception:
        print(f"defendant: {per_publisher(at_home, defendant, ids)}")
        print(f"observer: {per_publisher(at_court, observer, ids)}")
        raise
    before = per_publisher(at_home, defendant, ids)
    time.sleep(3.0)
    after = per_publisher(at_home, defendant, ids)
    rates = {
        key: {
            kind: (count(after, key, kind, "bytesReceived") - count(before, key, kind, "bytesReceived")) * 8 // 3000
            for kind in ("audio", "video")
        }
        for key in PUBLISHERS
    }
    print(f"at the defendant before the limit (kbit/s of payload): {rates}")
    # The node reports all twelve streams of the defendant's connection in compound packets (media.reports): Chromium
    # counts the reports of each.
    unreported = [
        (key, kind) for key in PUBLISHERS for kind in ("audio", "video") if count(after, key, kind, "senderReports") < 2
    ]
    assert not unreported, (unreported, after)

    shape(
        link.a, link.a_dev, Shape(rate_mbit=RATE_KBIT / 1000, loss_percent=LOSS_PERCENT), drop_at=(link.b, link.b_dev)
    )

    at_home.wait_until(
        lambda: video_paused(server.log_path, ids["defendant"]),
        timeout=PAUSED_WITHIN,
        what="video paused for the defendant",
    )
    time.sleep(2.0)  # (what a pause left in the link's queue drains)

    # The window: the defendant's and the observer's counters at its ends, the judge's frames every 0.25 s between.
    first_home, first_court = per_publisher(at_home, defendant, ids), per_publisher(at_court, observer, ids)
    judge_frames = [(time.monotonic(), count(first_home, "judge", "video", "framesDecoded"))]
    while time.monotonic() - judge_frames[0][0] < WINDOW:
        time.sleep(0.25)
        stats = per_publisher(at_home, defendant, ids)
        judge_frames.append((time.monotonic(), count(stats, "judge", "video", "framesDecoded")))
    last_home, last_court = per_publisher(at_home, defendant, ids), per_publisher(at_court, observer, ids)
    defendant.screenshot(path=str(shots / "defendant-thin.png"))

    def delta(first: Any, last: Any, key: str, kind: str, field: str) -> int:
        return count(last, key, kind, field) - count(first, key, kind, field)

    audio: dict[str, tuple[float, float]] = {}
    for key in PUBLISHERS:
        lost = delta(first_home, last_home, key, "audio", "packetsLost")
        got = delta(first_home, last_home, key, "audio", "packetsReceived")
        samples = delta(first_home, last_home, key, "audio", "totalSamplesReceived")
        concealed = delta(first_home, last_home, key, "audio", "concealedSamples")
        audio[key] = (max(0, lost) / max(1, got + max(0, lost)), concealed / max(1, samples))
    seconds = judge_frames[-1][0] - judge_frames[0][0]
    fps = (judge_frames[-1][1] - judge_frames[0][1]) / seconds
    longest, last_new = 0.0, judge_frames[0]
    for at, frames in judge_frames[1:]:
        if frames > last_new[1]:
            longest = max(longest, at - last_new[0])
            last_new = (at, frames)
    longest = max(longest, judge_frames[-1][0] - last_new[0])
    cameras = {key: delta(first_home, last_home, key, "video", "framesDecoded") for key in PUBLISHERS}
    at_observer = {
        key: delta(first_court, last_court, key, "video", "framesDecoded")
        for key in first_court
        if count(first_court, key, "video", "framesDecoded")
    }
    print(f"behind {RATE_KBIT} kbit/s + {LOSS_PERCENT}% loss, {seconds:.1f} s:")
    print("  the defendant's audio (lost after resends, concealed): " + ", ".join(
        f"{key} {lost:.2%}/{hidden:.2%}" for key, (lost, hidden) in audio.items()
    ))  # fmt: skip
    print(f"  the judge's camera at the defendant: {fps:.1f} fps, longest without a new frame {longest:.2f} s")
    print(f"  camera frames at the defendant: {cameras}; at the observer: {at_observer}")

    paused = [key for key in PUBLISHERS if cameras[key] <= 2]
    assert all(lost <= AUDIO_LOSS_MAX for lost, _ in audio.values()), audio
    assert "judge" not in paused, cameras
    assert cameras["judge"] >= 2 * WINDOW, ("the judge's camera hardly moved at the defendant", cameras)
    assert paused, ("nothing paused behind the thin link", cameras, rates)
    assert len(at_observer) >= len(PUBLISHERS) - 1, at_observer
    assert all(frames >= 2 * WINDOW for frames in at_observer.values()), ("the observer noticed", at_observer)

    # The lift: every paused camera comes back.
    unshape(link.a, link.a_dev, drop_at=(link.b, link.b_dev))
    lifted = time.monotonic()
    mark = per_publisher(at_home, defendant, ids)

    def back() -> bool:
        now = per_publisher(at_home, defendant, ids)
        return all(
            count(now, key, "video", "framesDecoded") > count(mark, key, "video", "framesDecoded") for key in paused
        )

    at_home.wait_until(back, timeout=BACK_WITHIN, what="the paused cameras back at the defendant")
    print(f"the {len(paused)} paused cameras back {time.monotonic() - lifted:.2f} s after the lift")
    defendant.screenshot(path=str(shots / "defendant-lifted.png"))
