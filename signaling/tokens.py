"""Join tokens: one signed HS256 JWT per participant, bound to hearing, participant, role and window.

The token's ``jti`` is the participant's stored ``token_id``; issuing a new
link stores a new id, so every earlier token of that participant stops
verifying (``revoked``). ``nbf``/``exp`` record the booked window widened by
the configured margins at issue time; :meth:`TokenService.verify` checks the
window against the *stored* hearing, so a rescheduled hearing does not strand
the links already sent out, and a token can never outlive what is booked now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from rooms.errors import NotFound
from rooms.model import Hearing, HearingState, Participant, Role
from rooms.store import Store

ALGORITHM = "HS256"


class TokenError(Exception):
    """A join token that must not let anyone in; ``code`` is stable snake_case (WebSocket close 4001)."""

    code = "bad_token"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadToken(TokenError):
    """Not a token we issued: malformed, tampered with, wrong issuer or audience."""

    code = "bad_token"


class TokenExpired(TokenError):
    """The hearing's window (plus margin) is over."""

    code = "expired"


class TokenNotYetValid(TokenError):
    """The hearing's window (minus margin) has not begun."""

    code = "not_yet_valid"


class TokenRevoked(TokenError):
    """A newer link was issued, the participant was removed, or the hearing was cancelled."""

    code = "revoked"


@dataclass(frozen=True)
class JoinClaims:
    """What a verified join token grants: this participant, in this role, in this hearing."""

    hearing_id: str
    participant_id: str
    role: Role
    token_id: str
    not_before: datetime
    expires: datetime


class TokenService:
    """Issues and verifies join tokens; ``verify`` reads the store for revocation and the current window."""

    def __init__(
        self,
        secret: str,
        store: Store,
        *,
        issuer: str = "courtlink",
        audience: str = "courtlink-join",
        margin_before: timedelta = timedelta(minutes=30),
        margin_after: timedelta = timedelta(hours=2),
    ) -> None:
        self._secret = secret
        self._store = store
        self.issuer = issuer
        self.audience = audience
        self.margin_before = margin_before
        self.margin_after = margin_after

    def window(self, hearing: Hearing) -> tuple[datetime, datetime]:
        """When a link of ``hearing`` works: [starts_at - margin_before, ends_at + margin_after)."""
        return hearing.starts_at - self.margin_before, hearing.ends_at + self.margin_after

    def issue(self, hearing: Hearing, participant: Participant, *, now: datetime | None = None) -> str:
        """A signed token for ``participant``; its jti must already be the stored ``token_id``."""
        if not participant.token_id:
            raise ValueError("participant has no token_id to bind the token to")
        nbf, exp = self.window(hearing)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": participant.id,
            "hearing": hearing.id,
            "role": participant.role.value,
            "jti": participant.token_id,
            "iat": int((now or datetime.now(UTC)).timestamp()),
            "nbf": int(nbf.timestamp()),
            "exp": int(exp.timestamp()),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> JoinClaims:
        """Check signature, issuer, audience and shape (not time, not revocation); BadToken otherwise."""
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise BadToken("join token is missing or too long")
        try:
            raw = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                # The window is checked against the stored hearing in verify(); see the module docstring.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "require": ["iss", "aud", "sub", "jti", "nbf", "exp", "hearing", "role"],
                },
            )
        except jwt.PyJWTError as exc:
            raise BadToken(f"join token does not verify: {exc}") from None
        try:
            return JoinClaims(
                hearing_id=_text(raw["hearing"]),
                participant_id=_text(raw["sub"]),
                role=Role(raw["role"]),
                token_id=_text(raw["jti"]),
                not_before=datetime.fromtimestamp(int(raw["nbf"]), UTC),
                expires=datetime.fromtimestamp(int(raw["exp"]), UTC),
            )
        except (ValueError, TypeError, OverflowError) as exc:
            raise BadToken(f"join token has malformed claims: {exc}") from None

    async def verify(self, token: str, *, now: datetime | None = None) -> JoinClaims:
        """The claims of a token that may join now; a named :class:`TokenError` otherwise.

        Order of checks: signature and shape (bad_token), then the stored
        participant and its current token id (revoked), then the stored
        hearing's window with margins (not_yet_valid, expired).
        """
        claims = self.decode(token)
        try:
            hearing = await self._store.get_hearing(claims.hearing_id)
        except NotFound:
            raise TokenRevoked("the hearing of this link no longer exists") from None
        participant = hearing.participant(claims.participant_id)
        if participant is None:
            raise TokenRevoked("the participant of this link was removed from the hearing")
        if participant.token_id != claims.token_id:
            raise TokenRevoked("a newer join link was issued for this participant; this one no longer works")
        if participant.role != claims.role:
            raise TokenRevoked("the participant's role changed; a new link is needed")
        if hearing.state == HearingState.cancelled:
            raise TokenRevoked("the hearing was cancelled")
        moment = now or datetime.now(UTC)
        opens, closes = self.window(hearing)
        if moment < opens:
            raise TokenNotYetValid(f"this link works from {opens.isoformat()}")
        if moment >= closes:
            raise TokenExpired(f"this link stopped working at {closes.isoformat()}")
        return claims


def _text(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ValueError("claim must be a non-empty string")
    return value
