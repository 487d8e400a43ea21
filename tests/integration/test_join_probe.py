"""``POST /api/v1/join/probe``: the pre-join network check echoes a real aiortc client's media, then ends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from media.ice import restrict_host_candidates, rtc_configuration
from media.node import InProcessNode
from media.settings import NodeSettings
from rooms.backends import open_store
from signaling.app import create_app
from signaling.config import ApiKey, KeyScope, SignalingConfig
from signaling.ws import WsSettings, ws_registrar
from tests.media_clients import LOOPBACK, CodeVideoTrack, ToneAudioTrack, eventually, read_code

PROBE = "/api/v1/join/probe"
ADMIN_KEY = "probe-admin-key-0123456789abcdef"


@dataclass
class Court:
    """The running signaling app, its media node and an HTTP client."""

    base_url: str
    http: aiohttp.ClientSession
    node: InProcessNode
    _seq: int = 0

    async def rest(self, method: str, path: str, body: Any) -> Any:
        """One REST call with the admin key; the created resource."""
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with self.http.request(method, self.base_url + path, json=body, headers=headers) as resp:
            data = await resp.json()
            assert resp.status == 201, data
            return data

    async def book(self, roles: tuple[str, ...]) -> dict[str, str]:
        """Book a trial around now with one participant per role; their join tokens by role."""
        self._seq += 1
        n = self._seq
        await self.rest("POST", "/api/v1/sites", {"id": f"site-{n}", "name": "Site", "kind": "court", "terminals": 5})
        await self.rest("POST", "/api/v1/courtrooms", {"id": f"room-{n}", "name": "Room", "site_id": f"site-{n}"})
        start = datetime.now(UTC) - timedelta(minutes=5)
        body = await self.rest(
            "POST",
            "/api/v1/hearings",
            {
                "case_number": f"(2026) Probe {n}",
                "kind": "trial",
                "courtroom_id": f"room-{n}",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=2)).isoformat(),
                "participants": [{"name": f"P {r}", "role": r, "site_id": f"site-{n}"} for r in roles],
            },
        )
        return {role: p["token"] for role, p in zip(roles, body["participants"], strict=True)}


class EchoClient:
    """The page's side of a network check: sends painted video and a tone, reads back what returns."""

    def __init__(self, tag: int) -> None:
        self.tag = tag
        self.pc = RTCPeerConnection(configuration=rtc_configuration(()))
        self.codes: list[tuple[int, int]] = []
        self.audio_frames = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.addTransceiver(CodeVideoTrack(tag, 192, 144), direction="sendrecv")
        self.pc.addTransceiver(ToneAudioTrack(), direction="sendrecv")

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, VideoFrame):
                    self.codes.append(read_code(frame))
                else:
                    self.audio_frames += 1

    async def offer(self) -> str:
        restrict_host_candidates(self.pc, LOOPBACK)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def probe(self, court: Court, token: str) -> tuple[int, Any]:
        """Ask for a probe; on 200 apply the node's answer."""
        async with court.http.post(court.base_url + PROBE, json={"token": token, "sdp": await self.offer()}) as resp:
            body = await resp.json(content_type=None)
            if resp.status == 200:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
            return resp.status, (resp.content_type, body)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await task


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, settings: NodeSettings) -> AsyncIterator[Court]:
    """The real signaling app with the WebSocket session (which registers the probe route) on loopback."""
    store = await open_store(None, tmp_path / "data")
    node = InProcessNode(settings)
    config = SignalingConfig(
        api_keys=(ApiKey(name="ops", key=ADMIN_KEY, scope=KeyScope.admin),),
        token_secret="probe-test-secret-0123456789abcdef0123456789",
    )
    app = create_app(config, store, registrars=[ws_registrar(node, WsSettings())])
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    http = aiohttp.ClientSession()
    try:
        yield Court(f"http://127.0.0.1:{port}", http, node)
    finally:
        await http.close()
        await runner.cleanup()
        await node.close()
        await store.close()


@pytest.fixture
async def court(tmp_path: Path) -> AsyncIterator[Court]:
    async with serve(tmp_path, NodeSettings(probe_lifetime=3.0, max_probes=2)) as c:
        yield c


async def test_probe_echoes_media_and_closes_itself(court: Court) -> None:
    """The probe sends the client's own video and audio back, then closes after its lifetime."""
    tokens = await court.book(("judge", "witness"))
    client = EchoClient(tag=77)
    try:
        status, (_, body) = await client.probe(court, tokens["witness"])
        assert status == 200, body
        assert court.node.probes() == 1
        assert await eventually(lambda: len([c for c in client.codes if c[0] == 77]) >= 5, within=15)
        assert await eventually(lambda: client.audio_frames >= 10, within=10)
        counters = [n for tag, n in client.codes if tag == 77]
        assert counters == sorted(counters)  # our own frames, in order
        assert await eventually(lambda: court.node.probes() == 0, within=15)
        assert await eventually(lambda: client.pc.connectionState in ("closed", "failed"), within=15)
    finally:
        await client.close()


async def test_probe_ends_when_the_client_closes(tmp_path: Path) -> None:
    """Closing the client's connection ends its probe (well before the 20 s lifetime) and frees its place."""
    async with serve(tmp_path, NodeSettings(probe_lifetime=20.0)) as court:
        tokens = await court.book(("judge",))
        client = EchoClient(tag=78)
        status, _ = await client.probe(court, tokens["judge"])
        assert status == 200
        assert await eventually(lambda: len(client.codes) >= 3, within=15)
        await client.close()
        assert await eventually(lambda: court.node.probes() == 0, within=15)
        again = EchoClient(tag=79)
        try:
            status, _ = await again.probe(court, tokens["judge"])
            assert status == 200
        finally:
            await again.close()


async def test_invalid_token_is_401(court: Court) -> None:
    """A token that does not verify gets a 401 problem and starts nothing."""
    client = EchoClient(tag=1)
    try:
        status, (ctype, body) = await client.probe(court, "not-a-token")
        assert status == 401
        assert ctype == "application/problem+json"
        assert body["status"] == 401
        assert body["type"].startswith("urn:courtlink:problem:")
        assert court.node.probes() == 0
    finally:
        await client.close()


async def test_second_probe_of_a_participant_and_node_limit_are_429(court: Court) -> None:
    """One live probe per participant, and at most max_probes per node: beyond, 429 problems."""
    tokens = await court.book(("judge", "witness", "clerk"))
    first, second, third, fourth = (EchoClient(tag=n) for n in (10, 11, 12, 13))
    try:
        assert (await first.probe(court, tokens["judge"]))[0] == 200
        status, (ctype, body) = await second.probe(court, tokens["judge"])
        assert (status, ctype, body["type"]) == (429, "application/problem+json", "urn:courtlink:problem:probe_busy")
        assert (await third.probe(court, tokens["witness"]))[0] == 200
        status, (_, body) = await fourth.probe(court, tokens["clerk"])  # max_probes=2 reached
        assert (status, body["type"]) == (429, "urn:courtlink:problem:too_many_probes")
        assert court.node.probes() == 2
    finally:
        for client in (first, second, third, fourth):
            await client.close()


async def test_a_probe_on_a_node_whose_port_range_is_full_is_429_udp_ports_exhausted(tmp_path: Path) -> None:
    """With every port of the node's [media] UDP range taken, the network check is 429 udp_ports_exhausted with
    Retry-After (try again later), not a 503, and no probe stays behind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        async with serve(tmp_path, NodeSettings(udp_port_min=port, udp_port_max=port)) as court:
            tokens = await court.book(("judge",))
            client = EchoClient(tag=5)
            try:
                async with court.http.post(
                    court.base_url + PROBE, json={"token": tokens["judge"], "sdp": await client.offer()}
                ) as resp:
                    body = await resp.json(content_type=None)
                    assert (resp.status, body["type"]) == (429, "urn:courtlink:problem:udp_ports_exhausted"), body
                    assert resp.headers["Retry-After"] == "20"
                assert court.node.probes() == 0
            finally:
                await client.close()


async def test_bad_offer_is_422(court: Court) -> None:
    """An SDP that is no offer is refused with a named problem, and no probe stays behind."""
    tokens = await court.book(("judge",))
    async with court.http.post(
        court.base_url + PROBE, json={"token": tokens["judge"], "sdp": "v=0\r\nnonsense"}
    ) as resp:
        body = await resp.json(content_type=None)
    assert resp.status == 422
    assert body["type"] == "urn:courtlink:problem:invalid_sdp"
    assert court.node.probes() == 0
