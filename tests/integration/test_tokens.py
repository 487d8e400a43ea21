"""Join tokens issued by booking: what verifies, and what is refused with which named error."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from signaling.tokens import BadToken, TokenExpired, TokenNotYetValid, TokenRevoked, TokenService

if TYPE_CHECKING:
    from tests.api_fixtures import Api

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture
async def hearing(api: Api) -> dict[str, Any]:
    """One booked hearing (09:00-11:00 +08:00) with a judge and a defendant; the 201 body."""
    await api.site("dc1", "detention_center")
    await api.site("court1", "court", terminals=5)
    await api.courtroom("room1", "court1")
    body = {
        "case_number": "(2031) Crim 11",
        "kind": "arraignment",
        "courtroom_id": "room1",
        "starts_at": api.at(9),
        "ends_at": api.at(11),
        "participants": [
            {"name": "Judge Wang", "role": "judge", "site_id": "court1"},
            {"name": "Defendant Chen", "role": "defendant", "site_id": "dc1"},
        ],
    }
    answer = await api.call("POST", "/api/v1/hearings", json_body=body, key=api.clerk_key)
    assert answer.status == 201, answer.text
    booked: dict[str, Any] = answer.body
    return booked


def _moment(api: Api, hour: int, minute: int = 0) -> datetime:
    return datetime.fromisoformat(api.at(hour, minute))


async def test_fresh_token_verifies(api: Api, hearing: dict[str, Any]) -> None:
    """A fresh link verifies during the window and names its hearing, participant and role."""
    defendant = hearing["participants"][1]
    claims = await api.tokens.verify(defendant["token"], now=_moment(api, 10))
    assert claims.hearing_id == hearing["id"]
    assert claims.participant_id == defendant["id"]
    assert claims.role.value == "defendant"
    raw = jwt.decode(defendant["token"], options={"verify_signature": False})
    assert raw["nbf"] == int((_moment(api, 9) - timedelta(minutes=30)).timestamp())
    assert raw["exp"] == int((_moment(api, 11) + timedelta(hours=2)).timestamp())
    assert (raw["iss"], raw["aud"], raw["sub"]) == ("courtlink", "courtlink-join", defendant["id"])


async def test_link_works_within_margins(api: Api, hearing: dict[str, Any]) -> None:
    """The link works from 30 minutes before the start until 2 hours after the end."""
    token = hearing["participants"][0]["token"]
    await api.tokens.verify(token, now=_moment(api, 8, 30))
    await api.tokens.verify(token, now=_moment(api, 12, 59))


async def test_tampered_token(api: Api, hearing: dict[str, Any]) -> None:
    """A token whose payload was edited (defendant -> judge) is bad_token."""
    token: str = hearing["participants"][1]["token"]
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "judge"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(BadToken) as caught:
        await api.tokens.verify(f"{header}.{forged}.{signature}", now=_moment(api, 10))
    assert caught.value.code == "bad_token"


async def test_token_signed_with_another_secret(api: Api, hearing: dict[str, Any]) -> None:
    """A well-formed token signed by someone else's secret is bad_token."""
    raw = jwt.decode(hearing["participants"][0]["token"], options={"verify_signature": False})
    forged = jwt.encode(raw, "another-secret-0123456789abcdef012345", algorithm="HS256")
    with pytest.raises(BadToken):
        await api.tokens.verify(forged, now=_moment(api, 10))


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "x" * 5000])
async def test_garbage_token(api: Api, hearing: dict[str, Any], garbage: str) -> None:
    """Anything that is not a token is bad_token, never a crash."""
    with pytest.raises(BadToken):
        await api.tokens.verify(garbage, now=_moment(api, 10))


async def test_expired_token(api: Api, hearing: dict[str, Any]) -> None:
    """After the end plus the margin the link is expired."""
    with pytest.raises(TokenExpired) as caught:
        await api.tokens.verify(hearing["participants"][0]["token"], now=_moment(api, 13))
    assert caught.value.code == "expired"


async def test_not_yet_valid_token(api: Api, hearing: dict[str, Any]) -> None:
    """Before the start minus the margin the link is not yet valid."""
    with pytest.raises(TokenNotYetValid) as caught:
        await api.tokens.verify(hearing["participants"][0]["token"], now=_moment(api, 8, 29))
    assert caught.value.code == "not_yet_valid"


async def test_reissued_link_revokes_the_old_one(api: Api, hearing: dict[str, Any]) -> None:
    """After reissuing, the new link verifies and the old one is revoked."""
    defendant = hearing["participants"][1]
    answer = await api.call(
        "POST", f"/api/v1/hearings/{hearing['id']}/participants/{defendant['id']}/link", key=api.clerk_key
    )
    assert answer.status == 200, answer.text
    fresh = answer.body["token"]
    assert answer.body["join_url"].endswith(fresh)
    assert (await api.tokens.verify(fresh, now=_moment(api, 10))).participant_id == defendant["id"]
    with pytest.raises(TokenRevoked) as caught:
        await api.tokens.verify(defendant["token"], now=_moment(api, 10))
    assert caught.value.code == "revoked"


async def test_removed_participant_and_cancelled_hearing_revoke(api: Api, hearing: dict[str, Any]) -> None:
    """Removing a participant revokes their link; cancelling the hearing revokes everyone's."""
    judge, defendant = hearing["participants"]
    path = f"/api/v1/hearings/{hearing['id']}"
    assert (await api.call("DELETE", f"{path}/participants/{defendant['id']}", key=api.clerk_key)).status == 200
    with pytest.raises(TokenRevoked):
        await api.tokens.verify(defendant["token"], now=_moment(api, 10))
    await api.tokens.verify(judge["token"], now=_moment(api, 10))
    assert (await api.call("DELETE", path, key=api.clerk_key)).status == 200
    with pytest.raises(TokenRevoked):
        await api.tokens.verify(judge["token"], now=_moment(api, 10))


async def test_rescheduled_hearing_keeps_links_working(api: Api, hearing: dict[str, Any]) -> None:
    """Links already sent out follow a rescheduled window: they work in the new one, not in the old one."""
    judge = hearing["participants"][0]
    moved = await api.call(
        "PATCH",
        f"/api/v1/hearings/{hearing['id']}",
        json_body={"starts_at": api.at(20), "ends_at": api.at(21)},
        key=api.clerk_key,
    )
    assert moved.status == 200, moved.text
    await api.tokens.verify(judge["token"], now=_moment(api, 20, 30))
    with pytest.raises(TokenNotYetValid):
        await api.tokens.verify(judge["token"], now=_moment(api, 10))


async def test_token_of_another_deployment(api: Api, hearing: dict[str, Any]) -> None:
    """A token for another audience (same secret) is bad_token."""
    other = TokenService(
        "test-secret-0123456789abcdef0123456789", api.store, audience="someone-else", issuer="courtlink"
    )
    raw = jwt.decode(hearing["participants"][0]["token"], options={"verify_signature": False})
    raw["aud"] = "someone-else"
    token = jwt.encode(raw, "test-secret-0123456789abcdef0123456789", algorithm="HS256")
    assert (await other.verify(token, now=_moment(api, 10))).hearing_id == hearing["id"]
    with pytest.raises(BadToken):
        await api.tokens.verify(token, now=_moment(api, 10))
