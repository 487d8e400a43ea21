"""TURN credentials from `joined` against a real coturn (``use-auth-secret``) on loopback.

- coturn allocates a relay with the credential signaling issued, and refuses a forged or an expired one;
- an aiortc participant restricted to relayed candidates (``iceTransportPolicy=relay``) connects to the media
  node through coturn with the credential from its own `joined`, and media flows both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

from signaling.turn import TurnIssuer, TurnSettings, turn_credential
from signaling.ws import WsSettings
from tests.media_clients import MediaClient

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

from tests.topology import free_udp_port, stun_answers

pytest_plugins = ["tests.ws_fixtures"]

SECRET = "coturn-test-secret-0123456789abcdef"
REALM = "courtlink.test"


@dataclass
class Coturn:
    """A running ``turnserver`` on 127.0.0.1."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """The turn: URL clients are given."""
        return f"turn:127.0.0.1:{self.port}?transport=udp"


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    """coturn with coturn's TURN REST scheme (use-auth-secret), relaying on loopback only."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("turnserver binary not found (apt-get install coturn)")
    log = tmp_path / "turn.log"
    for _ in range(5):
        port = free_udp_port()
        proc = subprocess.Popen(
            [
                binary,
                "-n",  # no configuration file: every option is here
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                f"--listening-port={port}",
                "--min-port=40000",
                "--max-port=45000",
                "--use-auth-secret",
                f"--static-auth-secret={SECRET}",
                f"--realm={REALM}",
                "--allow-loopback-peers",  # the media node is on 127.0.0.1 in tests
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--fingerprint",
                f"--db={tmp_path / 'turndb'}",
                f"--pidfile={tmp_path / 'turn.pid'}",
                f"--log-file={log}",
                "--simple-log",
                "--verbose",  # sessions (and their user names) are logged
                "--no-stdout-log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None and not stun_answers(port):
            time.sleep(0.1)
        if proc.poll() is None and stun_answers(port):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("turnserver did not start: " + (log.read_text() if log.exists() else "no log"))
    try:
        yield Coturn(port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def ws_settings(coturn: Coturn) -> WsSettings:
    """The test server issues TURN credentials for the test's coturn."""
    return WsSettings(resume_grace_seconds=30, turn=TurnSettings(urls=(coturn.url,), secret=SECRET))


@contextlib.asynccontextmanager
async def _allocation(coturn: Coturn, username: str, password: str) -> AsyncIterator[tuple[str, int]]:
    """A TURN allocation on coturn with these credentials; its relayed address."""
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", coturn.port), username, password, lifetime=60
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        yield relayed
    finally:
        transport.close()


async def test_coturn_accepts_the_issued_credential_and_refuses_forged_or_expired_ones(coturn: Coturn) -> None:
    """A credential issued for `joined` allocates a relay on coturn; a wrong secret or a past expiry is refused."""
    issued = TurnIssuer(TurnSettings(urls=(coturn.url,), secret=SECRET)).issue("defendant", time.time())
    assert issued.username is not None
    assert issued.credential is not None
    async with _allocation(coturn, issued.username, issued.credential) as relayed:
        assert relayed[0] == "127.0.0.1"
    forged = turn_credential("another-secret-0123456789abcdef", issued.username)
    expired_user = f"{int(time.time()) - 60}:defendant"
    for username, password in ((issued.username, forged), (expired_user, turn_credential(SECRET, expired_user))):
        with pytest.raises(stun.TransactionFailed, match=r"401"):
            async with _allocation(coturn, username, password):
                pass


def _relay_configuration(joined: dict[str, Any]) -> RTCConfiguration:
    """The browser's configuration from `joined.ice_servers`, restricted to relayed candidates."""
    servers = [
        RTCIceServer(urls=list(s["urls"]), username=s.get("username"), credential=s.get("credential"))
        for s in joined["ice_servers"]
    ]
    return RTCConfiguration(
        iceServers=servers,
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


async def test_relay_only_participant_reaches_the_node_through_coturn(court: Court, coturn: Coturn) -> None:
    """A participant allowed only relayed candidates joins and exchanges media through coturn with its credential."""
    from tests.ws_fixtures import Participant, eventually, small

    b = await court.book(("judge", "defendant"))
    judge = await court.participant("judge", b.tokens["judge"], tag=1)
    client, joined = await court.join(b.tokens["defendant"])
    (turn,) = joined["ice_servers"]
    assert turn["username"].endswith(":" + b.ids["defendant"])
    media = MediaClient("defendant", tag=2, configuration=_relay_configuration(joined))
    defendant = Participant("defendant", client, joined, small(media))
    defendant.attach()
    court.participants.append(defendant)
    if joined["placement"] == "lobby":
        reply = await judge.client.request_ok("admit", "roster", participant_id=b.ids["defendant"])
        assert reply["type"] == "roster", reply
        await client.expect("admitted")
    for p in (judge, defendant):
        await p.start_media()
    for action in ("open", "start"):
        await judge.client.request_ok("session", "state", action=action)

    local_sdp = media.pc.localDescription.sdp
    candidates = [line for line in local_sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates, local_sdp
    assert all(" typ relay" in line for line in candidates), candidates
    assert await eventually(lambda: defendant.packets_from(b.ids["judge"], "video") > 30, 30), defendant.failures
    assert await eventually(lambda: judge.packets_from(b.ids["defendant"], "audio") > 30, 30), judge.failures
    assert media.pc.connectionState == "connected"
    seen = f"<{turn['username']}>"
    assert await eventually(lambda: seen in coturn.log.read_text(errors="replace"), 10), "coturn saw the user name"
    assert SECRET not in coturn.log.read_text(errors="replace")
