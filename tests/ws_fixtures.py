"""Fixtures for WebSocket session tests: the real signaling app with the WebSocket session and a real media node.

``court`` runs ``create_app`` + ``setup_ws`` on 127.0.0.1 (free port), on a
real SQLite store, driving a real :class:`media.node.InProcessNode` (loopback
only). :class:`WsClient` is a participant's WebSocket; :class:`Participant`
adds a real aiortc peer (``tests.media_clients.MediaClient``) that answers the
server's offers and keeps the ``tracks`` map.

Test modules load the fixtures with ``pytest_plugins = ["tests.ws_fixtures"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from courtlink.nodes import NodeHeartbeat
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import NodeControl, TrackRef
from rooms.backends import open_store
from rooms.bus import InProcessRecords
from rooms.model import Source
from rooms.store import Store
from signaling.app import TOKENS_KEY, create_app
from signaling.config import ApiKey, KeyScope, SignalingConfig
from signaling.node_pool import NodePool, store_regions
from signaling.tokens import TokenService
from signaling.ws import HUB_KEY, SessionHub, WsSettings, ws_registrar
from tests.media_clients import MediaClient

ADMIN_KEY = "ws-admin-key-0123456789abcdef"
TOKEN_SECRET = "ws-test-secret-0123456789abcdef0123456789"
WAIT = 15.0
"""Upper bound for any single wait in these tests (never asserted as a duration)."""

VIDEO_SIZE = (192, 144)
"""Size of the painted test video (6x4 code blocks of 32x36 pixels)."""

ROLES = ("judge", "clerk", "prosecutor", "counsel", "defendant", "witness", "observer")


def ws_config() -> SignalingConfig:
    """Signaling configuration of the WebSocket tests."""
    return SignalingConfig(
        api_keys=(ApiKey(name="ops", key=ADMIN_KEY, scope=KeyScope.admin),),
        token_secret=TOKEN_SECRET,
    )


class WsClient:
    """One participant's WebSocket to the server; collects every message, answers nothing by itself."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._unread: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self.hooks: list[Callable[[dict[str, Any]], None]] = []
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    message = json.loads(frame.data)
                    self.messages.append(message)
                    self._unread.append(message)
                    for hook in self.hooks:
                        hook(message)
                    self._arrived.set()
        finally:
            if not self.closed.done():
                self.closed.set_result(self.ws.close_code)
            self._arrived.set()

    def skip_unread(self) -> None:
        """Forget every message received so far (later ``expect`` calls see only newer ones)."""
        self._unread.clear()

    async def send(self, type: str, **fields: Any) -> None:
        """Send one message."""
        await self.ws.send_str(json.dumps({"type": type, **fields}))

    async def send_raw(self, text: str) -> None:
        """Send one text frame as is."""
        await self.ws.send_str(text)

    async def expect(
        self, type: str, where: Callable[[dict[str, Any]], bool] = lambda m: True, within: float = WAIT
    ) -> dict[str, Any]:
        """The next unread message of ``type`` matching ``where`` (earlier unread ones of other kinds stay unread)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for i, message in enumerate(self._unread):
                if message.get("type") == type and where(message):
                    del self._unread[i]
                    return message
            if self.closed.done():
                raise AssertionError(f"closed ({self.closed.result()}) before a {type!r}; got {self.messages[-5:]}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {type!r} message; last ones: {self.messages[-5:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def request(self, type: str, reply: str, **fields: Any) -> dict[str, Any]:
        """Send a request with an id and wait for the ``reply`` type (or an ``error``) that echoes it."""
        ref = f"r{len(self.messages)}-{type}-{id(fields)}"
        await self.send(type, id=ref, **fields)
        return await self.expect_ref(ref, reply)

    async def request_ok(self, type: str, reply: str, **fields: Any) -> dict[str, Any]:
        """:meth:`request` for a setup step: an ``error`` reply fails the test at once, naming the refusal."""
        message = await self.request(type, reply, **fields)
        if message.get("type") == "error":
            pytest.fail(f"{type} was refused: {message.get('code')}: {message.get('message')}")
        return message

    async def expect_ref(self, ref: str, reply: str) -> dict[str, Any]:
        """The ``reply`` or ``error`` that carries ``ref``."""
        message = await self.expect_any(lambda m: m.get("ref") == ref and m.get("type") in (reply, "error"))
        return message

    async def expect_any(self, where: Callable[[dict[str, Any]], bool], within: float = WAIT) -> dict[str, Any]:
        """The next unread message matching ``where``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for i, message in enumerate(self._unread):
                if where(message):
                    del self._unread[i]
                    return message
            if self.closed.done():
                raise AssertionError(f"closed ({self.closed.result()}); last ones: {self.messages[-5:]}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no matching message; last ones: {self.messages[-5:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def close_code(self, within: float = WAIT) -> int | None:
        """Wait until the server closes the socket; its close code."""
        return await asyncio.wait_for(asyncio.shield(self.closed), within)

    async def ping(self) -> dict[str, Any]:
        """A ping answered by a pong."""
        return await self.request("ping", "pong")

    async def close(self) -> None:
        """Close from the client side and stop reading."""
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._reader, 5)


@dataclass
class Booking:
    """A booked hearing: its id and every participant's id and token, by role name."""

    hearing_id: str
    ids: dict[str, str]
    tokens: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Court:
    """The running server, its store, node and session hub, and an HTTP client."""

    base_url: str
    http: aiohttp.ClientSession
    store: Store
    node: InProcessNode
    app: web.Application
    clients: list[WsClient] = field(default_factory=list)
    participants: list[Participant] = field(default_factory=list)
    _seq: int = 0
    pool: NodePool | None = None
    """The node pool the session drives ``node`` through (as ``courtlink serve`` does)."""

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint."""
        return self.base_url.replace("http://", "ws://") + "/api/v1/ws"

    @property
    def hub(self) -> SessionHub:
        """The WebSocket session hub."""
        return self.app[HUB_KEY]

    @property
    def tokens(self) -> TokenService:
        """The join-token service."""
        return self.app[TOKENS_KEY]

    async def rest(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One REST call with the admin key."""
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with self.http.request(method, self.base_url + path, json=body, headers=headers) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def book(
        self,
        roles: tuple[str, ...] = ROLES,
        *,
        starts: datetime | None = None,
        hours: float = 2.0,
        represents: dict[str, tuple[str, ...]] | None = None,
    ) -> Booking:
        """Book a trial (via REST) around now with one participant per role name (``counsel2`` is a counsel).

        ``represents`` links counsel (by role name) to their clients; by default ``counsel`` represents
        ``defendant`` (when both are booked), so the two may consult.
        """
        self._seq += 1
        n = self._seq
        site, room = f"site-{n}", f"room-{n}"
        status, body = await self.rest(
            "POST", "/api/v1/sites", {"id": site, "name": site, "kind": "court", "terminals": 5}
        )
        assert status == 201, body
        status, body = await self.rest("POST", "/api/v1/courtrooms", {"id": room, "name": room, "site_id": site})
        assert status == 201, body
        start = starts or datetime.now(UTC) - timedelta(minutes=5)
        links = {"counsel": ("defendant",)} if represents is None else represents
        participants: list[dict[str, Any]] = [
            {"name": f"{name.title()} {n}", "role": name.rstrip("0123456789"), "site_id": site} for name in roles
        ]
        for name, clients in links.items():
            if name in roles:
                indexes = [roles.index(c) for c in clients if c in roles]
                participants[roles.index(name)]["represents"] = indexes
        status, body = await self.rest(
            "POST",
            "/api/v1/hearings",
            {
                "case_number": f"(2026) WS {n}",
                "kind": "trial",
                "courtroom_id": room,
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=hours)).isoformat(),
                "participants": participants,
            },
        )
        assert status == 201, body
        ids = {name: p["id"] for name, p in zip(roles, body["participants"], strict=True)}
        tokens = {name: p["token"] for name, p in zip(roles, body["participants"], strict=True)}
        return Booking(body["id"], ids, tokens, body)

    async def connect(self, **kwargs: Any) -> WsClient:
        """Open a WebSocket (nothing sent yet)."""
        ws = await self.http.ws_connect(self.ws_url, autoping=True, **kwargs)
        client = WsClient(ws)
        self.clients.append(client)
        return client

    async def join(self, token: str, resume: str | None = None) -> tuple[WsClient, dict[str, Any]]:
        """Connect and join; the client and its ``joined`` message."""
        client = await self.connect()
        fields: dict[str, Any] = {"token": token}
        if resume is not None:
            fields["resume"] = resume
        await client.send("join", id="join", **fields)
        joined = await client.expect_any(lambda m: m.get("ref") == "join")
        assert joined["type"] == "joined", joined
        return client, joined

    async def participant(
        self,
        name: str,
        token: str,
        *,
        tag: int = 0,
        video: bool = True,
        audio: bool = True,
        count_only: bool = False,
        loud: bool = True,
    ) -> Participant:
        """A participant with a WebSocket and a real aiortc peer (media starts with :meth:`Participant.start_media`)."""
        client, joined = await self.join(token)
        media = MediaClient(name, tag=tag, video=video, audio=audio, count_only=count_only, loud=loud)
        p = Participant(name, client, joined, small(media))
        p.attach()
        self.participants.append(p)
        return p

    async def seat(
        self, b: Booking, names: tuple[str, ...], tags: Mapping[str, int], *, start: bool = True
    ) -> dict[str, Participant]:
        """Join ``names`` (judge first) with media tagged ``tags[name]``, admit the others from the lobby, start
        everyone's media (the observer only receives), and open + start the hearing unless ``start`` is False."""
        people = {name: await self.participant(name, b.tokens[name], tag=tags[name]) for name in names}
        judge = people["judge"]
        for name in names[1:]:
            if people[name].joined["placement"] == "lobby":
                reply = await judge.client.request_ok("admit", "roster", participant_id=b.ids[name])
                assert reply["type"] == "roster", reply
                await people[name].client.expect("admitted")
        for p in people.values():
            await p.start_media(publish=p.name != "observer")
        if start:
            for action in ("open", "start"):
                reply = await judge.client.request_ok("session", "state", action=action)
                assert reply["type"] == "state", reply
        return people


def small(media: MediaClient) -> MediaClient:
    """Paint small frames: two shared cores run the server, the node and every client's decoder in one process."""
    if media.video is not None:
        media.video.width, media.video.height = VIDEO_SIZE
    return media


REFUSALS_BEFORE_RESTART = 3
"""A client refused this many times in a row (no answer between) asks for a media restart (docs/protocol.md)."""


class Participant:
    """A WebSocket participant with a real aiortc peer, negotiating as the polite side (docs/protocol.md).

    - Server offers are answered in order; a re-sent offer already answered is ignored; a re-offer of ours
      still waiting for its answer is dropped for it (aiortc's stand-in for rollback, see MediaClient.offer).
    - A refused offer (``renegotiation_pending``) is never retried on a timer: the server's pending offer
      follows the refusal; after answering it we offer again only if something is still to negotiate.
      Three refusals in a row ask for ``restart_media``.
    - ``media_restart``: a new peer connection with the same tracks and a fresh first offer.
    """

    def __init__(self, name: str, client: WsClient, joined: dict[str, Any], media: MediaClient) -> None:
        self.name = name
        self.client = client
        self.joined = joined
        self.id: str = joined["participant"]["id"]
        self.media = media
        self.failures: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._negotiation = asyncio.Lock()
        self.offer_ref: str | None = None
        """The ``id`` of our offer waiting for its answer."""
        self.refusals = 0
        """``renegotiation_pending`` refusals of our offers, in all."""
        self.refused_in_row = 0
        self.offers_sent = 0
        self.offers_answered = 0
        """Server offers we answered."""
        self.drop_offers = 0
        """Test hook: this many coming server offers are lost (ignored, as if never delivered)."""
        self.dropped_offers = 0
        self.restarts: list[tuple[float, str]] = []
        """(loop time, reason) of every ``media_restart`` carried out."""
        self.publishing = False
        self.extra_sources: list[str] = []
        """The source of each of ``media.extra``."""
        self._answered_sdp: str | None = None
        self._seq = 0
        self._closing = False
        """Set by :meth:`close`: nothing the server says any more starts new work (no restart after teardown)."""

    def attach(self) -> None:
        """Start reacting to server offers and tracks on the current WebSocket."""
        self.client.hooks.append(self._on_message)
        self.media.on_failed = self._connection_failed

    def _connection_failed(self) -> None:
        # The client's rule: a failed connection asks for a media restart (at most one in flight: the
        # server answers restart_pending to a second one).
        self._spawn(
            self.client.send("restart_media", id=f"{self.name}-restart-{self._next()}", reason="connection_failed")
        )

    def _on_message(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        kind = message.get("type")
        if kind == "offer":
            if self.drop_offers > 0:
                self.drop_offers -= 1
                self.dropped_offers += 1
                return
            self._spawn(self._answer(message["sdp"]))
        elif kind == "tracks":
            self.media.tracks = tuple(TrackRef.model_validate(t) for t in message["tracks"])
        elif kind == "answer" and message.get("ref") is not None and message.get("ref") == self.offer_ref:
            self._spawn(self._accept(message["ref"], message["sdp"]))
        elif kind == "error" and str(message.get("ref", "")).startswith(f"{self.name}-offer-"):
            self._spawn(self._refused(message["ref"], message.get("code", "")))
        elif kind == "media_restart":
            self._spawn(self._restart(message.get("reason", "")))

    def _spawn(self, work: Any) -> None:
        if self._closing:
            work.close()  # a coroutine never awaited: close it so it does not warn
            return
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.ensure_future(work))

    async def _answer(self, sdp: str) -> None:
        async with self._negotiation:
            if sdp == self._answered_sdp:
                return  # re-sent after our answer left: the server has it by now
            try:
                if self.offer_ref is not None:
                    self.offer_ref = None  # polite: drop our re-offer for theirs (the server refuses it)
                answer = await self.media.answer(sdp)
                await self.client.send("answer", sdp=answer)
                self._answered_sdp = sdp
                self.offers_answered += 1
            except Exception as exc:
                if self._closing:
                    return  # an offer that raced our own leaving: nothing left to answer
                traceback.print_exc()  # shown with the failing test's output
                self.failures.append(f"{type(exc).__name__}: {exc}")
                return
        await self.renegotiate_if_needed()

    async def _accept(self, ref: str, sdp: str) -> None:
        async with self._negotiation:
            if ref != self.offer_ref:
                return
            self.offer_ref = None
            self.refused_in_row = 0
            try:
                await self.media.accept_answer(sdp)
            except Exception as exc:
                if self._closing:
                    return  # an offer that raced our own leaving: nothing left to answer
                traceback.print_exc()  # shown with the failing test's output
                self.failures.append(f"{type(exc).__name__}: {exc}")
                return
        await self.renegotiate_if_needed()

    async def _refused(self, ref: str, code: str) -> None:
        async with self._negotiation:
            if ref == self.offer_ref:
                self.offer_ref = None
                self.media.rollback()
            if code != "renegotiation_pending":
                if code not in ("peer_replaced", "no_such_peer"):  # both come with a media_restart
                    self.failures.append(f"offer refused: {code}")
                return
            self.refusals += 1
            self.refused_in_row += 1
            if self.refused_in_row < REFUSALS_BEFORE_RESTART:
                return  # the server's pending offer is on its way: answer it, then offer again
            self.refused_in_row = 0
        await self.client.send("restart_media", id=f"{self.name}-restart-{self._next()}", reason="refused")

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    async def renegotiate_if_needed(self) -> None:
        """Offer what is still to negotiate (a new track), unless an exchange of ours is under way."""
        async with self._negotiation:
            if self.offer_ref is not None or not self.media.needs_negotiation():
                return
            await self._send_offer()

    async def _send_offer(self) -> None:
        sdp = await self.media.offer()
        self.offer_ref = f"{self.name}-offer-{self._next()}"
        self.offers_sent += 1
        await self.client.send("offer", id=self.offer_ref, sdp=sdp)

    async def add_track(self, track: Any, source: str) -> None:
        """Publish one more track: declare it and negotiate it (politely)."""
        async with self._negotiation:  # never while an exchange is being applied
            self.media.add_track(track)
            self.extra_sources.append(source)
        await self.client.send("publish", source=source, enabled=True, track_id=track.id)
        await self.renegotiate_if_needed()

    async def _restart(self, reason: str) -> None:
        loop = asyncio.get_running_loop()
        async with self._negotiation:
            self.offer_ref = None
            self._answered_sdp = None
            self.refused_in_row = 0
            await self.media.reset()
            self.restarts.append((loop.time(), reason))
            await self._declare()  # the new tracks have new ids: say which source each is before they arrive
            await self._send_offer()

    async def _declare(self) -> None:
        tracks: list[tuple[str, Any]] = list(zip(self.extra_sources, self.media.extra, strict=True))
        if self.publishing:
            tracks += [("camera", self.media.video), ("microphone", self.media.audio)]
        for source, track in tracks:
            if track is not None:
                await self.client.send("publish", source=source, enabled=True, track_id=track.id)

    async def request_restart(self, reason: str = "test") -> dict[str, Any]:
        """Ask for a media restart; the server's reply (``media_restart`` or ``error``)."""
        return await self.client.request("restart_media", "media_restart", reason=reason)

    async def start_media(self, publish: bool = True) -> None:
        """Offer our tracks, apply the node's answer, and declare what we publish."""
        async with self._negotiation:
            sdp = await self.media.offer()
            reply = await self.client.request("offer", "answer", sdp=sdp)
            assert reply["type"] == "answer", reply
            await self.media.accept_answer(reply["sdp"])
        if publish:
            self.publishing = True
            if self.media.video is not None:
                await self.client.send("publish", source="camera", enabled=True, track_id=self.media.video.id)
            if self.media.audio is not None:
                await self.client.send("publish", source="microphone", enabled=True, track_id=self.media.audio.id)

    def packets_from(self, participant_id: str, kind: str | None = None) -> int:
        """RTP packets received so far on the media ids currently carrying ``participant_id``."""
        mids = set(self.media.mids_of(participant_id, kind))
        return sum(r.rtp_packets for mid, r in self.media.received.items() if mid in mids)

    def codes_from(self, tag: int) -> list[tuple[int, int]]:
        """Codes read back from decoded video painted with ``tag``."""
        return self.media.codes(tag)

    async def drop_and_resume(self, court: Court, token: str) -> dict[str, Any]:
        """Lose the WebSocket and the peer, then join again with the resume key and a fresh peer; the new ``joined``."""
        key = self.joined["resume"]
        for task in self._tasks:
            task.cancel()
        await self.client.close()
        await self.media.close()
        old = self.media
        client, joined = await court.join(token, resume=key)
        self.client, self.joined = client, joined
        self.media = small(
            MediaClient(
                self.name,
                tag=old.video.tag if old.video is not None else 0,
                video=old.video is not None,
                audio=old.audio is not None,
                count_only=old.count_only,
            )
        )
        self._tasks = []
        self.offer_ref = None
        self._answered_sdp = None
        self.attach()
        return joined

    async def close(self) -> None:
        """Close the WebSocket, then the peer: the server sees a participant leave, never a dying peer to restart."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await self.client.close()
        await self.media.close()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
def ws_settings() -> WsSettings:
    """WebSocket limits of the test server (override in a module to change them)."""
    return WsSettings(resume_grace_seconds=30)


@pytest.fixture
def node_settings() -> NodeSettings:
    """Settings of the test server's media node (override in a module to change them)."""
    return NodeSettings(announce_addresses=("127.0.0.1",))


@pytest.fixture
async def court(tmp_path: Path, ws_settings: WsSettings, node_settings: NodeSettings) -> AsyncIterator[Court]:
    """The real server with the WebSocket session and a real in-process media node, on loopback."""
    store = await open_store(None, tmp_path / "data")
    node = InProcessNode(node_settings)
    # Through a one-node pool, as `courtlink serve` does: every session test runs the placement path too.
    records = InProcessRecords()
    heartbeat = NodeHeartbeat(node, records, region="", capacity_peers=300)
    await heartbeat.start()

    async def connect(node_id: str) -> NodeControl:
        return node

    pool = NodePool(records, connect, region_of=store_regions(store))
    await pool.start()
    app = create_app(ws_config(), store, registrars=[ws_registrar(pool, ws_settings)])
    runner, base = await _serve(app)
    http = aiohttp.ClientSession()
    court = Court(base, http, store, node, app, pool=pool)
    try:
        yield court
    finally:
        # Everyone leaves at once, each within a bound: twelve sequential closes on a loaded machine (a WebSocket
        # close handshake, then a peer's DTLS/ICE teardown each) once outlasted the test's whole time budget.
        await asyncio.gather(*(_bounded(p.close()) for p in court.participants))
        await asyncio.gather(*(_bounded(c.close()) for c in court.clients))
        await http.close()
        await runner.cleanup()
        await pool.close()
        await heartbeat.stop()
        await node.close()
        await store.close()


async def _bounded(closing: Awaitable[None], within: float = 20.0) -> None:
    """Await a close in teardown, giving up after ``within`` seconds; a close that fails is a closed thing."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, within)


async def eventually(check: Callable[[], bool], within: float = WAIT, step: float = 0.05) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes (a bound, never asserted as a duration)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if check():
            return True
        await asyncio.sleep(step)
    return check()


__all__ = ["ROLES", "WAIT", "Booking", "Court", "Participant", "Source", "WsClient", "eventually"]
