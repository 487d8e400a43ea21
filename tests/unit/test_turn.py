"""TURN credentials in coturn's shared-secret scheme, issued in `joined`; the TURN and TLS settings' checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest

from courtlink.settings import ConfigError, load_settings
from protocol.client import IceServer, Joined
from signaling.session import HearingRoom, Send
from signaling.turn import TurnIssuer, TurnSettings, turn_credential
from tests.unit.test_session import info, make_hearing

SECRET = "coturn-shared-secret-0123456789"
TURN_URLS = ("turn:turn.court.example:3478?transport=udp", "turns:turn.court.example:5349?transport=tcp")
NOW = 1_800_000_000.0


def _coturn_accepts(server: IceServer, secret: str, now: float) -> bool:
    """What coturn with use-auth-secret checks: the password is the HMAC of the user name, the expiry is ahead."""
    assert server.username is not None
    assert server.credential is not None
    expiry, _, _user = server.username.partition(":")
    expected = base64.b64encode(hmac.new(secret.encode(), server.username.encode(), hashlib.sha1).digest()).decode()
    return hmac.compare_digest(expected, server.credential) and int(expiry) > now


def _joined(room: HearingRoom, pid: str, conn: int) -> Joined:
    effects = room.join(info(pid), conn, None).effects
    return next(e.message for e in effects if isinstance(e, Send) and isinstance(e.message, Joined))


def test_issued_credential_follows_the_coturn_scheme_and_expires_in_bounds() -> None:
    """An issued TURN credential is base64(HMAC-SHA1(secret, '<expiry>:<participant>')), valid for the lifetime."""
    issuer = TurnIssuer(TurnSettings(urls=TURN_URLS, secret=SECRET, lifetime_seconds=1800))
    server = issuer.issue("defendant", NOW)
    assert server.urls == TURN_URLS
    assert server.username == f"{int(NOW) + 1800}:defendant"
    assert _coturn_accepts(server, SECRET, NOW)
    assert not _coturn_accepts(server, SECRET, NOW + 1801), "expired after its lifetime"
    assert not _coturn_accepts(server, "another-secret-0123456789", NOW)
    assert server.credential == turn_credential(SECRET, server.username)


def test_credentials_differ_per_participant_and_a_strange_id_becomes_a_random_user() -> None:
    """Two participants get different credentials; an id unfit for a TURN user name is not sent to the TURN server."""
    issuer = TurnIssuer(TurnSettings(urls=TURN_URLS, secret=SECRET))
    judge, defendant = issuer.issue("judge", NOW), issuer.issue("defendant", NOW)
    assert judge.username != defendant.username
    assert judge.credential != defendant.credential
    odd = issuer.issue("a:b c", NOW)
    assert odd.username is not None
    assert "a:b c" not in odd.username
    assert _coturn_accepts(odd, SECRET, NOW)
    assert SECRET not in repr(issuer)


def test_lifetime_is_bounded() -> None:
    """The credential lifetime is refused below a minute and above a day."""
    for bad in (10, 2 * 24 * 3600):
        with pytest.raises(ValueError, match="lifetime_seconds"):
            TurnSettings(urls=TURN_URLS, secret=SECRET, lifetime_seconds=bad)


def test_joined_carries_plain_stun_and_a_fresh_turn_credential_per_join() -> None:
    """`joined.ice_servers`: STUN URLs without credentials, then TURN with a credential issued at this join."""
    clock = [NOW]
    issuer = TurnIssuer(TurnSettings(urls=TURN_URLS, secret=SECRET, lifetime_seconds=3600))
    stun = IceServer(urls=("stun:stun.court.example:3478",))
    room = HearingRoom(make_hearing(), ice_servers=(stun,), clock=lambda: clock[0], turn=issuer)
    first = _joined(room, "judge", 1)
    assert first.ice_servers[0] == stun
    turn = first.ice_servers[1]
    assert turn.urls == TURN_URLS
    assert _coturn_accepts(turn, SECRET, NOW)
    clock[0] = NOW + 600
    again = _joined(room, "judge", 2).ice_servers[1]
    assert again.username == f"{int(NOW) + 600 + 3600}:judge", "a later join gets a credential issued then"
    assert _joined(room, "defendant", 3).ice_servers[1].credential != again.credential
    plain = HearingRoom(make_hearing(), ice_servers=(stun,))
    assert _joined(plain, "judge", 1).ice_servers == (stun,)


def test_turn_settings_are_checked_and_the_secret_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TURN URLs without the secret, or not turn:/turns:, are refused in one line that never shows the secret."""
    for name in [k for k in os.environ if k.upper().startswith("COURTLINK_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "c.toml"
    config.write_text('[media]\nturn_urls = ["turn:127.0.0.1:3478?transport=udp"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"media: .*turn_secret"):
        load_settings(config)
    config.write_text(f'[media]\nturn_urls = ["stun:127.0.0.1:3478"]\nturn_secret = "{SECRET}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"media\.turn_urls: each entry must be a turn: or turns: URL") as err:
        load_settings(config)
    assert SECRET not in str(err.value)
    config.write_text('[media]\nturn_urls = ["turn:127.0.0.1"]\nturn_secret = "s3cr3t-xyz"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"media\.turn_secret: must be at least 16") as err:
        load_settings(config)
    assert "s3cr3t-xyz" not in str(err.value)
    monkeypatch.setenv("COURTLINK_MEDIA__TURN_SECRET", SECRET)
    monkeypatch.setenv("COURTLINK_MEDIA__TURN_URLS", '["turns:turn.court.example:5349?transport=tcp"]')
    settings = load_settings()
    assert settings.media.turn_urls == ["turns:turn.court.example:5349?transport=tcp"]
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert settings.media.turn_credential_seconds == 3600


def test_tls_cert_and_key_go_together(tmp_path: Path) -> None:
    """`http.tls_cert` without `http.tls_key` is refused in one line naming both keys."""
    config = tmp_path / "c.toml"
    config.write_text('[http]\ntls_cert = "cert.pem"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"http: tls_cert and tls_key go together"):
        load_settings(config)
