"""WebSocket message models (protocol.client), their JSON Schema, and the per-connection rate limit."""

from __future__ import annotations

import json
from typing import get_args

import pytest
from pydantic import ValidationError

from protocol.client import (
    ClientCandidate,
    ClientMessage,
    Consult,
    Error,
    Join,
    Mute,
    Pong,
    ServerMessage,
    dump_server_message,
    parse_client_message,
    parse_server_message,
    ws_json_schema,
)
from rooms.model import Source
from signaling.ws import TokenBucket


def test_join_parses_with_id_and_resume() -> None:
    """A join with a numeric id and a resume key validates into the Join model."""
    msg = parse_client_message('{"type": "join", "id": 7, "token": "t", "resume": "k"}')
    assert msg == Join(id=7, token="t", resume="k")


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "teleport"}',
        '{"token": "t"}',
        '{"type": "join"}',
        '{"type": "join", "token": "t", "admin": true}',
        '{"type": "mute", "participant_id": "p", "source": "hologram"}',
        '{"type": "consult", "participant_ids": ["only-one"]}',
        '{"type": "session", "action": "dissolve"}',
        '{"type": "offer", "sdp": ""}',
        "[1, 2]",
        "{not json",
    ],
)
def test_bad_messages_are_refused(raw: str) -> None:
    """Unknown types, missing or extra fields, bad enums and broken JSON all fail validation."""
    with pytest.raises(ValidationError):
        parse_client_message(raw)


def test_candidate_keeps_browser_field_names() -> None:
    """A trickled candidate uses the browser's sdpMid/sdpMLineIndex names on the wire."""
    msg = parse_client_message(
        '{"type": "candidate", "candidate": "candidate:1 1 udp", "sdpMid": "0", "sdpMLineIndex": 0}'
    )
    assert isinstance(msg, ClientCandidate)
    assert (msg.sdpMid, msg.sdpMLineIndex) == ("0", 0)


def test_mute_defaults_to_muting() -> None:
    """mute without ``muted`` mutes; ``muted: false`` unmutes."""
    assert parse_client_message('{"type": "mute", "participant_id": "p", "source": "camera"}') == Mute(
        participant_id="p", source=Source.camera
    )
    unmute = parse_client_message('{"type": "mute", "participant_id": "p", "source": "camera", "muted": false}')
    assert isinstance(unmute, Mute)
    assert unmute.muted is False


def test_consult_takes_ids() -> None:
    """consult carries the participant ids of the defendant and counsel."""
    msg = parse_client_message('{"type": "consult", "participant_ids": ["d", "c"]}')
    assert isinstance(msg, Consult)
    assert msg.participant_ids == ("d", "c")


def test_server_messages_round_trip() -> None:
    """Server messages serialize to JSON with their type and ref, and parse back."""
    raw = dump_server_message(Error(ref="r1", code="not_allowed", message="no"))
    assert json.loads(raw) == {"type": "error", "ref": "r1", "code": "not_allowed", "message": "no"}
    assert parse_server_message(raw) == Error(ref="r1", code="not_allowed", message="no")
    assert json.loads(dump_server_message(Pong(ref=3))) == {"type": "pong", "ref": 3}


def test_schema_names_every_message_and_requires_type() -> None:
    """The served JSON Schema lists both directions, and every message requires ``type``."""
    schema = ws_json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    defs = schema["$defs"]
    for union in ("ClientMessage", "ServerMessage"):
        for ref in defs[union]["oneOf"]:
            model = defs[ref["$ref"].split("/")[-1]]
            assert model["required"][0] == "type"
            assert "const" in model["properties"]["type"]
    client = [r["$ref"] for r in defs["ClientMessage"]["oneOf"]]
    server = [r["$ref"] for r in defs["ServerMessage"]["oneOf"]]
    # Counted from the unions (other messages get added): every member is in the schema exactly once.
    assert len(client) == len(set(client)) == len(get_args(get_args(ClientMessage)[0]))
    assert len(server) == len(set(server)) == len(get_args(get_args(ServerMessage)[0]))
    assert "#/$defs/RestartMedia" in client
    assert "#/$defs/MediaRestart" in server
    json.dumps(schema)


def test_token_bucket_allows_burst_then_refuses() -> None:
    """The bucket lets ``burst`` messages through at once, refuses the next, and refills with time."""
    now = [0.0]
    bucket = TokenBucket(rate=20, burst=50, clock=lambda: now[0])
    assert all(bucket.take() for _ in range(50))
    assert not bucket.take()
    now[0] += 0.5
    assert sum(bucket.take() for _ in range(20)) == 10
