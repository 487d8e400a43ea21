"""How the processes of a courtlink network find each other: bus channels, shared record names, node heartbeats.

Every name a process publishes, subscribes, serves or stores on the bus (:mod:`rooms.bus`) is made here, so
two processes can only agree. The payloads are the JSON of ``protocol`` models:

| name | kind | payload |
| --- | --- | --- |
| ``node.<node_id>.cmd`` | request/reply | a ``protocol.node`` command; the reply a ``protocol.node`` reply |
| ``node.<node_id>.events`` | publish | a ``protocol.node`` event |
| ``node.<node_id>`` | record, TTL | :class:`NodeRecord` (the heartbeat) |
| ``placement.<hearing_id>`` | record | :class:`Placement` (the hearing's home node) |
| ``lease.room.<hearing_id>`` | lease | the id of the signaling process that owns the live room |
| ``hearing.changed`` | publish | :class:`HearingChanged` (a REST change every live room must follow) |
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocol.client import ParticipantInfo, RequestId
from protocol.directory import AdaptationCounts
from rooms.model import Frozen

HEARTBEAT_SECONDS = 2.0
"""How often a media node writes its :class:`NodeRecord`."""

NODE_TTL_SECONDS = 6.0
"""A node record lives this long after its last heartbeat: a node silent for longer is gone."""

NODE_PREFIX = "node."
PLACEMENT_PREFIX = "placement."
ROOM_LEASE_PREFIX = "lease.room."
HEARING_CHANGED = "hearing.changed"


def node_command_channel(node_id: str) -> str:
    """Where a node answers node-control commands."""
    return f"node.{node_id}.cmd"


def node_event_channel(node_id: str) -> str:
    """Where a node publishes its events."""
    return f"node.{node_id}.events"


def node_record_key(node_id: str) -> str:
    """The node's heartbeat record."""
    return f"{NODE_PREFIX}{node_id}"


NODE_DRAIN_PREFIX = "drain.node."


def node_drain_key(node_id: str) -> str:
    """Present (any value, no expiry) while an operator drains the node: its heartbeat then says ``draining``, so
    placement gives it no new hearing, while the hearings it has stay until they end. Deleted to put it back."""
    return f"{NODE_DRAIN_PREFIX}{node_id}"


def node_state(drain_flag: bytes | None) -> Literal["up", "draining"]:
    """The state a node's heartbeat announces, given what its :func:`node_drain_key` holds."""
    return "up" if drain_flag is None else "draining"


def placement_key(hearing_id: str) -> str:
    """The hearing's placement record."""
    return f"{PLACEMENT_PREFIX}{hearing_id}"


def room_lease_key(hearing_id: str) -> str:
    """The lease naming the signaling process that owns the hearing's live room."""
    return f"{ROOM_LEASE_PREFIX}{hearing_id}"


class NodeRecord(Frozen):
    """A media node's heartbeat: who it is, where, and how loaded (written every 2 s, lives 6 s)."""

    id: str = Field(min_length=1, max_length=128)
    region: str = Field(default="", max_length=128, description="The region of courts the node serves.")
    state: Literal["up", "draining"] = Field(
        default="up", description="draining: keeps its hearings, takes no new ones."
    )
    capacity_peers: int = Field(ge=1, description="Peer connections the node is sized for.")
    peers: int = Field(default=0, ge=0, description="Peer connections now (probes included).")
    rooms: int = Field(default=0, ge=0, description="Hearings with peers on the node.")
    cpu: float = Field(default=0.0, ge=0, description="Cores the node process used since its last heartbeat.")
    packets_per_second: float = Field(default=0.0, ge=0, description="RTP packets forwarded per second, recently.")
    load: float = Field(
        default=0.0, ge=0, description="max(peers / capacity_peers, cpu): 1 is full; placement prefers the lowest."
    )
    frame_address: str | None = Field(
        default=None, description="host:port where recorders connect for the node's frames (the frame pipe)."
    )
    started_at: float = Field(description="Unix time the node started (a restart is a new node life).")
    heartbeat_at: float = Field(description="Unix time of this heartbeat.")
    version: str = Field(default="", description="courtlink version the node runs.")
    send_path: str = Field(
        default="",
        max_length=32,
        description="How the node sends forwarded RTP: native (one C call per frame and subscriber), python, or "
        "aiortc (its stock sender loop); empty from a node that does not say.",
    )
    adaptation: AdaptationCounts = Field(
        default_factory=AdaptationCounts, description="Bandwidth adaptation figures (counts so far, or now)."
    )


class Placement(Frozen):
    """A hearing's home node, chosen when its live room first needs media."""

    hearing_id: str
    node_id: str
    region: str = Field(default="", description="The node's region when placed.")
    reason: Literal["region", "fallback", "failover"] = Field(
        description="region: in the courtroom's region; fallback: no node up there; failover: the previous "
        "node was lost."
    )
    placed_at: float = Field(description="Unix time of the placement.")
    previous_node_id: str | None = Field(default=None, description="The node a failover moved the hearing from.")


class HearingChanged(Frozen):
    """A stored hearing changed outside its live room (a REST call): the room's owner refreshes it."""

    hearing_id: str
    version: int = Field(ge=0)
    actor: str = "system"


# --- placement (part placement) ---------------------------------------------------------------------------------

PLACEMENT_TTL_SECONDS = 6 * 3600.0
"""A placement record lives this long unless the signaling process routing the hearing renews it (every
``PLACEMENT_RENEW_SECONDS``); a hearing whose room closed gives its placement up at once."""

PLACEMENT_RENEW_SECONDS = 600.0
"""How often a signaling process renews the placements of the hearings it routes."""


# --- recorder (part recorder): payloads are the models of protocol.recorder ---------------------------------------

RECORDER_PREFIX = "recorder."
"""Records ``recorder.<id>`` (:class:`protocol.recorder.RecorderRecord`, ttl ``RECORDER_TTL_SECONDS``)."""
RECORDER_ROOMS = "recorder.rooms"
"""publish: :class:`protocol.recorder.RoomEvent` (a live room opened or was given up)."""
RECORDER_HELLO = "recorder.hello"
"""publish: :class:`protocol.recorder.RecorderHello` (a recorder started: announce the live rooms again)."""
RECORDER_AUDIT = "recorder.audit"
"""publish: :class:`protocol.recorder.AuditNote` (a live session's audit event was stored)."""
RECORDER_STATUS = "recorder.status"
"""publish: :class:`protocol.recorder.StatusNote` (a recorder's ``recording`` status for a hearing)."""
RECORDER_LINK = "recorder.link"
"""request/reply: :class:`protocol.recorder.JoinRequest` -> ``JoinReply``, served by every signaling process."""


def recorder_record_key(recorder_id: str) -> str:
    """The recorder's heartbeat record."""
    return f"{RECORDER_PREFIX}{recorder_id}"


def recorder_link_channel(process_id: str) -> str:
    """Where one signaling process answers a recorder's join and leave (the process holding the live room)."""
    return f"{RECORDER_LINK}.{process_id}"


def recorder_command_channel(recorder_id: str) -> str:
    """Where a recorder answers signaling (:class:`protocol.recorder.RecorderCommand`)."""
    return f"recorder.{recorder_id}.cmd"


def recorder_session_channel(recorder_id: str) -> str:
    """Where a recorder hears its hidden participants' session messages (:class:`protocol.recorder.SessionNote`)."""
    return f"recorder.{recorder_id}.session"


# --- part bus: the media node's own names ----------------------------------------------------------------------

NODE_LEASE_PREFIX = "lease.node."


def node_lease_key(node_id: str) -> str:
    """The lease a running media node holds on its id (``Records.claim``, renewed with every heartbeat), so two
    processes started with the same node id cannot both answer its commands."""
    return f"{NODE_LEASE_PREFIX}{node_id}"


# --- part snapshot: the live room's snapshot ------------------------------------------------------

ROOM_SNAPSHOT_PREFIX = "snapshot.room."


def room_snapshot_key(hearing_id: str) -> str:
    """The record holding the snapshot of the hearing's live room (``signaling.snapshot.RoomSnapshot`` JSON)."""
    return f"{ROOM_SNAPSHOT_PREFIX}{hearing_id}"


# --- several signaling processes (part owners) ---------------------------------------------------
#
# | name | kind | payload |
# | --- | --- | --- |
# | ``signaling.<process_id>.open`` | request/reply | :class:`RelayOpen` -> :class:`RelayOpened` |
# | ``signaling.<process_id>.up`` | publish | :class:`RelayUp` (a relayed client's messages, to the room's owner) |
# | ``signaling.<process_id>.down`` | publish | :class:`RelayDown` (the owner's messages, to the relaying process) |
# | ``signaling.process.<process_id>`` | record, TTL ``lease_seconds`` | the process is alive (its relays and rooms) |

SIGNALING_PREFIX = "signaling."
SIGNALING_PROCESS_PREFIX = "signaling.process."


def relay_open_channel(process_id: str) -> str:
    """Where a room's owner accepts a WebSocket that landed on another signaling process."""
    return f"{SIGNALING_PREFIX}{process_id}.open"


def relay_up_channel(process_id: str) -> str:
    """Where a room's owner receives the messages of the clients relayed to it, in order per connection."""
    return f"{SIGNALING_PREFIX}{process_id}.up"


def relay_down_channel(process_id: str) -> str:
    """Where a relaying process receives the owner's messages for its clients, in order per connection."""
    return f"{SIGNALING_PREFIX}{process_id}.down"


def signaling_process_key(process_id: str) -> str:
    """The record that says a signaling process is alive (rewritten every third of ``lease_seconds``)."""
    return f"{SIGNALING_PROCESS_PREFIX}{process_id}"


class RelayOpen(Frozen):
    """A client joined on the relaying process (its token verified there): the owner joins it to the live room."""

    origin: str = Field(min_length=1, max_length=128, description="The relaying process's id.")
    conn: int = Field(ge=0, description="The connection's number on the relaying process.")
    hearing_id: str = Field(min_length=1, max_length=128)
    participant: ParticipantInfo = Field(description="The verified participant, as the relay read it from the store.")
    token_id: str = Field(default="", max_length=128, description="The join link's id (``jti``).")
    resume: str | None = Field(default=None, max_length=64, description="The client's resume key, if any.")
    ref: RequestId | None = Field(default=None, description="The join message's ``id``.")


class RelayOpened(Frozen):
    """The owner's answer to :class:`RelayOpen`."""

    accepted: bool = Field(description="True: the owner runs the join; its answer comes as RelayDown messages.")
    owner: str | None = Field(default=None, description="Not accepted: the process that owns the room now.")


class RelayUp(Frozen):
    """One step of a relayed connection, from the relaying process to the owner."""

    origin: str = Field(min_length=1, max_length=128)
    conn: int = Field(ge=0)
    kind: Literal["message", "closed"] = Field(description="message: a client message; closed: the client left.")
    text: str = Field(default="", description="The client's message, the JSON text as validated by the relay.")


class RelayDown(Frozen):
    """One step of a relayed connection, from the owner to the relaying process."""

    conn: int = Field(ge=0)
    kind: Literal["message", "close"] = Field(description="message: a server message; close: close the socket.")
    text: str = Field(default="", description="The server message's JSON text frame.")
    code: int = Field(default=1000, ge=1000, le=4999, description="close: the WebSocket close code.")
    reason: str = Field(default="", max_length=123, description="close: the close reason.")
