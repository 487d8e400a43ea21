"""Hash-chained audit events: every state change leaves a trace that proves its order.

Each hearing has its own chain (``stream`` = the hearing id); actions that
belong to no hearing (sites, courtrooms) go to the ``system`` stream. An
event's ``hash`` is SHA-256 over the canonical JSON of all its other fields,
``prev_hash`` included, so altering, removing or reordering any stored event
breaks every hash after it and :func:`verify_chain` names the first bad one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field

from rooms.model import AwareDatetime, Frozen

SYSTEM_STREAM = "system"
"""The chain for actions that belong to no single hearing."""

GENESIS = "0" * 64
"""``prev_hash`` of the first event of every chain."""


class AuditEvent(Frozen):
    """One fact: who did what, when, to which hearing; chained to the previous one."""

    stream: str = Field(description="Hearing id, or 'system'.")
    seq: int = Field(ge=1, description="1-based position in the stream.")
    at: AwareDatetime = Field(description="When it happened (UTC).")
    actor: str = Field(description="Who did it: 'key:<name>', a participant id, or 'system'.")
    action: str = Field(description="snake_case fact, e.g. 'hearing_booked', 'participant_admitted'.")
    data: dict[str, Any] = Field(default_factory=dict, description="What changed.")
    prev_hash: str = Field(description="hash of the previous event in the stream, or 64 zeros.")
    hash: str = Field(description="SHA-256 (hex) over the canonical JSON of every other field.")


def canonical(payload: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _digest(stream: str, seq: int, at: datetime, actor: str, action: str, data: dict[str, Any], prev: str) -> str:
    body = {
        "stream": stream,
        "seq": seq,
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "data": data,
        "prev_hash": prev,
    }
    return hashlib.sha256(canonical(body)).hexdigest()


def chain_next(
    previous: AuditEvent | None,
    *,
    stream: str,
    at: datetime,
    actor: str,
    action: str,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """The event that follows ``previous`` (None: the first of ``stream``)."""
    seq = previous.seq + 1 if previous else 1
    prev = previous.hash if previous else GENESIS
    # Round-trip data through canonical JSON so that what is hashed is exactly what is stored.
    clean: dict[str, Any] = json.loads(canonical(data or {}))
    return AuditEvent(
        stream=stream,
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        data=clean,
        prev_hash=prev,
        hash=_digest(stream, seq, at, actor, action, clean, prev),
    )


@dataclass(frozen=True)
class ChainBreak:
    """Where and why a chain stops verifying."""

    seq: int
    reason: str


def verify_chain(events: Iterable[AuditEvent]) -> ChainBreak | None:
    """None when the chain is whole, else the first event that does not verify."""
    prev = GENESIS
    expected_seq = 1
    for event in events:
        if event.seq != expected_seq:
            return ChainBreak(expected_seq, f"event {expected_seq} is missing (found seq {event.seq})")
        if event.prev_hash != prev:
            return ChainBreak(event.seq, "prev_hash does not match the previous event's hash")
        digest = _digest(event.stream, event.seq, event.at, event.actor, event.action, event.data, event.prev_hash)
        if digest != event.hash:
            return ChainBreak(event.seq, "content does not match its hash (event altered)")
        prev = event.hash
        expected_seq += 1
    return None
