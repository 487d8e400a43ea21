"""Every WebSocket message of ``/api/v1/ws``, client to server and server to client (PROTOCOL.md).

Each message is a frozen pydantic model with a ``type`` discriminator; the two
directions are two discriminated unions. The WebSocket loop validates every
incoming frame once with :func:`parse_client_message` and serializes every
outgoing one with :func:`dump_server_message`; ``GET /api/v1/schema/ws.json``
serves :func:`ws_json_schema`, generated from these same models.

Additions to PROTOCOL.md (fields may be added, names stay): ``joined.resumed``,
``joined.consultation``, ``mute.muted`` (false unmutes), ``publish.track_id``,
``deny``/``remove`` ``reason``, roster entries' ``media`` and ``publishing``,
``state.permissions``, and the server message ``placement`` (your own placement
and permissions changed).
"""

from __future__ import annotations

import weakref
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from protocol.node import MediaKind, PeerState
from rooms.lifecycle import SessionAction
from rooms.model import HearingKind, HearingState, Placement, Role, Source

MediaHealth = Literal["none", "connecting", "ok", "stalled", "lost"]
"""A participant's media health in the roster (docs/protocol.md, "Media health")."""

RequestId = Annotated[str, Field(max_length=64)] | int
"""A client's request id, echoed as ``ref`` in the answer or error."""

ParticipantId = Annotated[str, Field(min_length=1, max_length=64)]
Reason = Annotated[str, Field(max_length=500)]
Sdp = Annotated[str, Field(min_length=1, max_length=60_000)]


def _type_required(schema: dict[str, Any]) -> None:
    """Every message must carry ``type`` on the wire, although the models default it."""
    if "type" in schema.get("properties", {}):
        required = schema.setdefault("required", [])
        if "type" not in required:
            required.insert(0, "type")


class Message(BaseModel):
    """Base of every WebSocket message: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_type_required)


class Request(Message):
    """A client message; ``id`` is optional and echoed as ``ref``.

    Strict: a JSON value must already have the field's type (``true`` is not the
    id 1, ``"yes"`` is not a boolean, ``1`` is not a string); enum values and
    literals are given as their JSON strings, arrays stand for tuples. Every
    client message inherits this, so new ones are strict too.
    """

    model_config = ConfigDict(strict=True)  # merged into Message's config

    id: RequestId | None = Field(default=None, description="Request id, echoed as `ref` by the answer or error.")


# --- client -> server --------------------------------------------------------------------------


class Join(Request):
    """The first message of every connection: enter the hearing with one's link token."""

    type: Literal["join"] = "join"
    token: str = Field(min_length=1, max_length=4096, description="The join token from the participant's link.")
    resume: str | None = Field(
        default=None,
        max_length=64,
        # The server issues secrets.token_urlsafe keys: anything else is invalid_message, never a compare error.
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The resume key of an earlier `joined`, to keep one's place.",
    )


class ClientOffer(Request):
    """An SDP offer for the participant's peer connection on the media node."""

    type: Literal["offer"] = "offer"
    sdp: Sdp = Field(description="The offer SDP.")


class ClientAnswer(Request):
    """The answer to a server `offer` (server-initiated renegotiation)."""

    type: Literal["answer"] = "answer"
    sdp: Sdp = Field(description="The answer SDP.")


class ClientCandidate(Request):
    """A trickled ICE candidate (full-SDP clients send none)."""

    type: Literal["candidate"] = "candidate"
    candidate: str = Field(max_length=2000, description="The candidate line, e.g. 'candidate:1 1 udp ...'.")
    sdpMid: str | None = Field(default=None, max_length=64, description="Media id the candidate belongs to.")
    sdpMLineIndex: int | None = Field(
        default=None, ge=0, le=1000, description="Index of the m-line the candidate belongs to."
    )


class Publish(Request):
    """Declare that one publishes (or stops publishing) a source; names the track carrying it."""

    type: Literal["publish"] = "publish"
    source: Source = Field(description="camera, microphone or evidence.")
    enabled: bool = Field(description="Whether the participant now sends this source.")
    track_id: str | None = Field(
        default=None, max_length=200, description="The track id (from the SDP msid) that carries the source."
    )


class Admit(Request):
    """Let a participant waiting in the lobby into the courtroom."""

    type: Literal["admit"] = "admit"
    participant_id: ParticipantId = Field(description="Who is admitted.")


class Deny(Request):
    """Refuse a participant waiting in the lobby; their connection is closed."""

    type: Literal["deny"] = "deny"
    participant_id: ParticipantId = Field(description="Who is refused.")
    reason: Reason = Field(default="", description="Shown to the refused participant.")


class Remove(Request):
    """Remove a participant from the hearing (close 4010); they cannot rejoin this session."""

    type: Literal["remove"] = "remove"
    participant_id: ParticipantId = Field(description="Who is removed.")
    reason: Reason = Field(default="", description="Shown to the removed participant.")


class Mute(Request):
    """Mute (or unmute) one source of a participant; enforced at the media node."""

    type: Literal["mute"] = "mute"
    participant_id: ParticipantId = Field(description="Whose source.")
    source: Source = Field(description="Which source.")
    muted: bool = Field(default=True, description="False unmutes.")


class SessionMsg(Request):
    """Move the hearing through its lifecycle (open, start, recess, resume, adjourn)."""

    type: Literal["session"] = "session"
    action: SessionAction = Field(description="The lifecycle action.")


class CallWitness(Request):
    """Bring a witness from the witness lobby into the courtroom."""

    type: Literal["call_witness"] = "call_witness"
    participant_id: ParticipantId = Field(description="The witness.")


class ReleaseWitness(Request):
    """Send a witness back to the witness lobby."""

    type: Literal["release_witness"] = "release_witness"
    participant_id: ParticipantId = Field(description="The witness.")


class Consult(Request):
    """Start a private consultation of a defendant with their counsel."""

    type: Literal["consult"] = "consult"
    participant_ids: tuple[ParticipantId, ...] = Field(
        min_length=2, max_length=8, description="The defendant and their counsel."
    )


class EndConsult(Request):
    """End the private consultation that these participants are in."""

    type: Literal["end_consult"] = "end_consult"
    participant_ids: tuple[ParticipantId, ...] = Field(
        min_length=1, max_length=8, description="Members of the consultation to end (one is enough)."
    )


class Leave(Request):
    """Leave the hearing for good (no resume)."""

    type: Literal["leave"] = "leave"


class Ping(Request):
    """Liveness check; answered with `pong`."""

    type: Literal["ping"] = "ping"


class RestartMedia(Request):
    """Ask for a fresh media peer (the client's connection failed): answered with `media_restart`."""

    type: Literal["restart_media"] = "restart_media"
    reason: str | None = Field(default=None, max_length=64, description="Why, for the logs (e.g. ice_failed).")


class RaiseHand(Request):
    """Ask the judge for the floor: raise one's hand (roster ``hand_raised_at``)."""

    type: Literal["raise_hand"] = "raise_hand"


class LowerHand(Request):
    """Lower a raised hand: one's own, or (judge, clerk) anyone's."""

    type: Literal["lower_hand"] = "lower_hand"
    participant_id: ParticipantId | None = Field(default=None, description="Whose hand; omitted: one's own.")


class MuteAll(Request):
    """Mute (or unmute) one source of everyone but the bench (judges, chairs, clerks); a court mute."""

    type: Literal["mute_all"] = "mute_all"
    source: Source = Field(default=Source.microphone, description="Which source (default microphone).")
    muted: bool = Field(default=True, description="False lifts the court's mutes of that source.")


class ViewTile(Message):
    """One received video and how big it is shown."""

    model_config = ConfigDict(strict=True)

    mid: str = Field(min_length=1, max_length=64, description="The media id the video arrives on (from `tracks`).")
    width: int = Field(ge=0, le=16_384, description="Device pixels wide it is shown at; 0: received but not shown.")
    height: int = Field(ge=0, le=16_384, description="Device pixels high it is shown at; 0: received but not shown.")


class View(Request):
    """How big the client shows each video it receives (a simulcast video is sent in the layer that fits)."""

    type: Literal["view"] = "view"
    tiles: tuple[ViewTile, ...] = Field(max_length=64, description="One entry per received video.")


ClientMessage = Annotated[
    Join
    | ClientOffer
    | ClientAnswer
    | ClientCandidate
    | Publish
    | Admit
    | Deny
    | Remove
    | Mute
    | SessionMsg
    | CallWitness
    | ReleaseWitness
    | Consult
    | EndConsult
    | Leave
    | Ping
    | RestartMedia
    | RaiseHand
    | LowerHand
    | MuteAll
    | View,
    Field(discriminator="type"),
]
"""Any message a client may send."""

CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """Validate one text frame; raises ``pydantic.ValidationError`` for unknown types or bad fields."""
    return CLIENT_MESSAGE.validate_json(raw)


# --- server -> client: parts -------------------------------------------------------------------


class ParticipantInfo(Message):
    """Who a participant is."""

    id: str = Field(description="Participant id.")
    name: str = Field(description="Display name.")
    role: Role = Field(description="Role in the hearing.")
    site: str = Field(description="Site id the participant joins from.")
    site_name: str = Field(default="", description='The site\'s name from the store ("" when unknown: show the id).')


class HearingInfo(Message):
    """The hearing as a participant sees it."""

    id: str = Field(description="Hearing id.")
    case_number: str = Field(description="The court's case number.")
    title: str = Field(default="", description="Short title.")
    kind: HearingKind = Field(description="Kind of hearing.")
    state: HearingState = Field(description="Lifecycle state.")
    starts_at: str = Field(default="", description="Start of the booked window (ISO 8601 with offset, as booked).")
    ends_at: str = Field(default="", description="End of the booked window (ISO 8601 with offset, as booked).")
    timezone: str = Field(default="", description="The court's time zone (IANA name, setting `court_timezone`).")
    in_session_since: float | None = Field(
        default=None, description="Unix seconds when the current `in_session` period began (null otherwise)."
    )


class PermissionsInfo(Message):
    """What the participant may do now (mirrors rooms.permissions; the server decides)."""

    publish: tuple[Source, ...] = Field(description="Sources the participant may publish now.")
    actions: tuple[str, ...] = Field(description="Moderation and session actions the participant may take now.")
    receives: bool = Field(description="Whether the participant receives anyone's media now.")
    raise_hand: bool = Field(default=False, description="Whether the participant may raise their hand now.")


class RosterEntry(Message):
    """One visible participant of the live session."""

    id: str = Field(description="Participant id.")
    name: str = Field(description="Display name.")
    role: Role = Field(description="Role.")
    site: str = Field(description="Site id.")
    site_name: str = Field(default="", description='The site\'s name from the store ("" when unknown: show the id).')
    placement: Placement = Field(description="lobby, witness_lobby, courtroom or consultation.")
    consultation: str | None = Field(default=None, description="Consultation group id when in consultation.")
    connected: bool = Field(description="False while the participant's connection is lost (grace period).")
    media: MediaHealth = Field(
        default="none",
        description="Media health: none (no peer expected), connecting, ok, stalled (a track it should send is "
        "idle > 2 s, or ICE disconnected), lost (peer failed/closed, no health report > 5 s, or connection lost).",
    )
    muted: tuple[Source, ...] = Field(default=(), description="Sources muted.")
    publishing: tuple[Source, ...] = Field(default=(), description="Sources the participant declares it sends.")
    media_since: float | None = Field(default=None, description="Unix seconds when the current `media` value began.")
    peer: PeerState | None = Field(default=None, description="The raw state of the media peer, once there is one.")
    consultation_since: float | None = Field(
        default=None, description="Unix seconds when the participant's current private consultation began."
    )
    muted_by_court: tuple[Source, ...] = Field(
        default=(),
        description="Sources muted by someone other than the participant (the court); the participant cannot unmute"
        " them (`muted_by_court`).",
    )
    hand_raised_at: float | None = Field(
        default=None, description="Unix seconds when the participant raised their hand (null: not raised)."
    )


class IceServer(Message):
    """An ICE server for the client's peer connection (STUN/TURN)."""

    urls: tuple[str, ...] = Field(description="stun: or turn: URLs.")
    username: str | None = Field(default=None, description="TURN user name.")
    credential: str | None = Field(default=None, description="TURN credential.")


class TrackInfo(Message):
    """Which received track carries whose source."""

    mid: str | None = Field(description="The transceiver's mid, when negotiated.")
    track_id: str = Field(description="The track id as in the SDP msid.")
    participant_id: str = Field(description="Whose media.")
    source: Source = Field(description="camera, microphone or evidence.")
    kind: MediaKind = Field(description="audio or video.")


class MissingTrack(Message):
    """A track the record should hold now and does not (see ``Recording.missing``)."""

    participant_id: str = Field(description="Whose track.")
    name: str = Field(description="Their display name.")
    source: Source = Field(description="camera, microphone or evidence.")
    reason: Literal["no_media", "left", "removed", "network", "node_lost", "consultation", "recorder_restart"] = Field(
        description="Why it is not recorded; consultation is expected (private) and not a degradation."
    )
    since: float = Field(description="Unix seconds since when it is missing.")


# --- server -> client: messages ----------------------------------------------------------------


class Reply(Message):
    """A server message; ``ref`` echoes the id of the request it answers, if any."""

    ref: RequestId | None = Field(default=None, description="The `id` of the request this answers.")


class Joined(Reply):
    """The join succeeded: who you are, where you are, what you may do, who is there."""

    type: Literal["joined"] = "joined"
    participant: ParticipantInfo
    hearing: HearingInfo
    placement: Placement
    consultation: str | None = Field(default=None, description="Consultation group id when in consultation.")
    permissions: PermissionsInfo
    roster: tuple[RosterEntry, ...]
    ice_servers: tuple[IceServer, ...]
    resume: str = Field(description="Key to resume this session after a dropped connection (join.resume).")
    resumed: bool = Field(default=False, description="True when an earlier session was resumed.")


class Admitted(Reply):
    """You were admitted into the courtroom."""

    type: Literal["admitted"] = "admitted"
    reason: str = ""


class Denied(Reply):
    """You were refused entry; the connection closes."""

    type: Literal["denied"] = "denied"
    reason: str = Field(default="", description='A reason code (docs/protocol.md, "Reason codes") or free text.')
    by: str | None = Field(default=None, description="Participant id of who refused you (null: the court).")
    by_name: str = Field(default="", description='Their display name ("" when not a participant).')
    by_role: Role | None = Field(default=None, description="Their role (null when not a participant).")


class Removed(Reply):
    """You were removed from the hearing; the connection closes with 4010."""

    type: Literal["removed"] = "removed"
    reason: str = Field(
        default="", description='A reason code (docs/protocol.md, "Reason codes"; `unbooked`) or free text.'
    )
    by: str | None = Field(default=None, description="Participant id of who removed you (null: the court's booking).")
    by_name: str = Field(default="", description='Their display name ("" when not a participant).')
    by_role: Role | None = Field(default=None, description="Their role (null when not a participant).")


class RosterMsg(Reply):
    """Everyone visible in the live session."""

    type: Literal["roster"] = "roster"
    participants: tuple[RosterEntry, ...]


class StateMsg(Reply):
    """The hearing's state changed."""

    type: Literal["state"] = "state"
    state: HearingState
    permissions: PermissionsInfo | None = Field(default=None, description="What you may do in the new state.")
    in_session_since: float | None = Field(
        default=None, description="Unix seconds when the current `in_session` period began (null otherwise)."
    )


class PlacementMsg(Reply):
    """Your own placement (and so your permissions) changed."""

    type: Literal["placement"] = "placement"
    placement: Placement
    consultation: str | None = None
    permissions: PermissionsInfo


class ServerOffer(Reply):
    """The media node renegotiates; answer with `answer`."""

    type: Literal["offer"] = "offer"
    sdp: str


class ServerAnswer(Reply):
    """The media node's answer to your `offer`."""

    type: Literal["answer"] = "answer"
    sdp: str


class ServerCandidate(Reply):
    """A trickled ICE candidate of the media node."""

    type: Literal["candidate"] = "candidate"
    candidate: str
    sdpMid: str | None = None
    sdpMLineIndex: int | None = None


class TracksMsg(Reply):
    """What you receive now: which track belongs to which participant and source."""

    type: Literal["tracks"] = "tracks"
    tracks: tuple[TrackInfo, ...]


class Speaker(Reply):
    """The active speaker changed."""

    type: Literal["speaker"] = "speaker"
    participant_id: str


class Muted(Reply):
    """A participant's source was muted or unmuted."""

    type: Literal["muted"] = "muted"
    participant_id: str
    source: Source
    by: str = Field(description="Participant id of who did it.")
    muted: bool = True


class Recording(Reply):
    """Recording health."""

    type: Literal["recording"] = "recording"
    status: Literal["recording", "degraded", "stopped", "sealed"]
    detail: str = ""
    reason: str = Field(
        default="", description='Why the recording stopped or degraded, as a code (recess, adjourned, disk) or "".'
    )
    missing: tuple[MissingTrack, ...] = Field(
        default=(),
        description="Permitted people whose tracks are not being recorded now (> 1 s); status is degraded when any"
        " is missing for another reason than consultation.",
    )


class Error(Reply):
    """A request was refused or a message was invalid; nothing changed."""

    type: Literal["error"] = "error"
    code: str = Field(description="Stable snake_case code, e.g. invalid_message, not_allowed.")
    message: str = Field(description="Human-readable explanation.")


class Pong(Reply):
    """Answer to `ping`."""

    type: Literal["pong"] = "pong"


class MediaRestart(Reply):
    """Close your RTCPeerConnection, make a new one, add your tracks and send a fresh `offer`.

    The answer to `restart_media` (with `ref`), or unprompted when the server replaced your peer (it failed or
    closed, the server's offer went unanswered, the media node was lost).
    """

    type: Literal["media_restart"] = "media_restart"
    reason: str = Field(description="Why: requested, failed, closed, offer_timeout, node_lost...")


ServerMessage = Annotated[
    Joined
    | Admitted
    | Denied
    | Removed
    | RosterMsg
    | StateMsg
    | PlacementMsg
    | ServerOffer
    | ServerAnswer
    | ServerCandidate
    | TracksMsg
    | Speaker
    | Muted
    | Recording
    | Error
    | Pong
    | MediaRestart,
    Field(discriminator="type"),
]
"""Any message the server sends."""

SERVER_MESSAGE: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def dump_server_message(message: Reply) -> str:
    """The JSON text frame of one server message."""
    return message.model_dump_json(exclude_none=False)


class FrameCache:
    """Serializes each server message once, however many connections it is broadcast to.

    Broadcasts hand the same message object to every recipient; entries live
    only as long as the message does (weak keys), so the cache never grows.
    """

    def __init__(self) -> None:
        self._texts: weakref.WeakKeyDictionary[Reply, str] = weakref.WeakKeyDictionary()

    def text(self, message: Reply) -> str:
        """The JSON text frame of ``message`` (computed on its first send)."""
        text = self._texts.get(message)
        if text is None:
            text = self._texts[message] = dump_server_message(message)
        return text


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Validate a server message (for clients and tests)."""
    return SERVER_MESSAGE.validate_json(raw)


def ws_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of every WebSocket message, both directions, from these models."""
    _, defs = TypeAdapter.json_schemas(
        [
            ("client", "validation", CLIENT_MESSAGE),
            ("server", "serialization", SERVER_MESSAGE),
        ],
        ref_template="#/$defs/{model}",
    )
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "/api/v1/schema/ws.json",
        "title": "courtlink WebSocket messages (/api/v1/ws)",
        "description": "One JSON text frame per message; every message has `type`.",
        "$defs": dict(defs.get("$defs", {})),
    }
    client_refs = [{"$ref": f"#/$defs/{m.__name__}"} for m in _members(ClientMessage)]
    server_refs = [{"$ref": f"#/$defs/{m.__name__}"} for m in _members(ServerMessage)]
    schema["$defs"]["ClientMessage"] = {
        "description": "Client to server.",
        "oneOf": client_refs,
        "discriminator": {"propertyName": "type"},
    }
    schema["$defs"]["ServerMessage"] = {
        "description": "Server to client.",
        "oneOf": server_refs,
        "discriminator": {"propertyName": "type"},
    }
    schema["oneOf"] = [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}]
    return schema


def _members(union: Any) -> list[type[BaseModel]]:
    """The model classes of an ``Annotated[A | B | ..., Field(discriminator=...)]`` union."""
    (members, *_) = get_args(union)
    return list(get_args(members))
