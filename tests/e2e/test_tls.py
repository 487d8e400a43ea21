"""`courtlink serve --tls-cert/--tls-key`: HTTPS and WSS with a real certificate, TURN credentials in `joined`,
and one-line refusals of an unusable certificate and key."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cli_fixtures import courtlink, one_line_error
from tests.serve_process import ADMIN_KEY, ServeProcess
from tests.tls_fixtures import make_pair

TURN_SECRET = "tls-test-turn-secret-0123456789"
TURN_URL = "turn:127.0.0.1:3478?transport=udp"


async def _https_session(cert: Path, url: str) -> dict[str, Any]:
    """Health over HTTPS, a booking, and a WSS join, with the certificate trusted as a CA."""
    trusted = ssl.create_default_context(cafile=str(cert))
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/healthz", ssl=trusted) as resp:
            out["health"] = resp.status
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"{url}/healthz", ssl=ssl.create_default_context())
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(f"{url}/api/v1{path}", json=body, headers=headers, ssl=trusted) as resp:
                assert resp.status == 201, await resp.text()
                result: dict[str, Any] = await resp.json()
                return result

        await post("/sites", {"id": "court", "name": "Intermediate Court", "kind": "court"})
        await post("/courtrooms", {"id": "room1", "name": "Remote Courtroom 1", "site_id": "court"})
        start = datetime.now(UTC) - timedelta(minutes=5)
        booking = await post(
            "/hearings",
            {
                "case_number": "(2026) TLS 1",
                "kind": "trial",
                "courtroom_id": "room1",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=1)).isoformat(),
                "participants": [
                    {"name": "Judge Wang", "role": "judge", "site_id": "court"},
                    {"name": "Clerk Li", "role": "clerk", "site_id": "court"},
                ],
            },
        )
        out["join_urls"] = [p["join_url"] for p in booking["participants"]]
        out["joined"] = []
        for participant in booking["participants"]:
            ws_url = url.replace("https://", "wss://") + "/api/v1/ws"
            async with http.ws_connect(ws_url, ssl=trusted) as ws:
                await ws.send_str(json.dumps({"type": "join", "id": "join", "token": participant["token"]}))
                while True:
                    message = json.loads(await asyncio.wait_for(ws.receive_str(), 15))
                    if message.get("ref") == "join":
                        out["joined"].append(message)
                        break
    return out


def test_serve_with_tls_answers_https_and_wss_and_issues_turn_credentials(tmp_path: Path) -> None:
    """With a certificate the server prints an https URL, answers HTTPS and WSS, and `joined` carries TURN."""
    cert, key = make_pair(tmp_path)
    server = ServeProcess(
        tmp_path / "data",
        env={"COURTLINK_MEDIA__TURN_URLS": json.dumps([TURN_URL]), "COURTLINK_MEDIA__TURN_SECRET": TURN_SECRET},
        args=("--tls-cert", str(cert), "--tls-key", str(key)),
    )
    url = server.start()
    try:
        assert url.startswith("https://127.0.0.1:"), url
        before = time.time()
        result = asyncio.run(_https_session(cert, url))
    finally:
        assert server.stop() == 0
    assert result["health"] == 200
    assert all(link.startswith(f"{url}/join?t=") for link in result["join_urls"]), result["join_urls"]
    turns = []
    for joined in result["joined"]:
        assert joined["type"] == "joined", joined
        (turn,) = joined["ice_servers"]
        assert turn["urls"] == [TURN_URL]
        expiry, _, user = turn["username"].partition(":")
        assert user == joined["participant"]["id"]
        assert before + 3600 - 5 <= int(expiry) <= time.time() + 3600 + 5
        mac = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
        assert turn["credential"] == base64.b64encode(mac).decode()
        turns.append(turn["credential"])
    assert len(set(turns)) == 2
    assert TURN_SECRET not in "".join(server.output)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_cert", "--tls-cert: certificate file {cert} does not exist"),
        ("cert_only", "--tls-cert and --tls-key go together"),
        ("not_pem", "--tls-cert: {cert} is not a PEM certificate"),
        ("mismatch", "--tls-key: {other_key} is not the private key of the certificate {cert}"),
        ("key_in_settings_missing", "http.tls_key: private key file {missing} does not exist"),
    ],
)
def test_unusable_certificate_or_key_is_one_line(tmp_path: Path, case: str, expected: str) -> None:
    """A missing, non-PEM or mismatched certificate/key stops `courtlink serve` with one line (exit 2)."""
    cert, key = make_pair(tmp_path)
    _, other_key = make_pair(tmp_path, "other")
    missing = tmp_path / "nowhere.key"
    args: tuple[str, ...] = ("--tls-cert", str(cert), "--tls-key", str(key))
    if case == "missing_cert":
        cert = tmp_path / "absent.crt"
        args = ("--tls-cert", str(cert), "--tls-key", str(key))
    elif case == "cert_only":
        args = ("--tls-cert", str(cert))
    elif case == "not_pem":
        cert.write_text("not a certificate\n", encoding="utf-8")
    elif case == "mismatch":
        args = ("--tls-cert", str(cert), "--tls-key", str(other_key))
    elif case == "key_in_settings_missing":
        config = tmp_path / "courtlink.toml"
        config.write_text(f'[http]\ntls_cert = "{cert}"\ntls_key = "{missing}"\n', encoding="utf-8")
        args = ("--config", str(config))
    result = courtlink("serve", "--port", "0", "--data-dir", str(tmp_path / "data"), *args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_line_error(result)
    assert expected.format(cert=cert, other_key=other_key, missing=missing) in line, line
