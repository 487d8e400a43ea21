"""The WebSocket session, ``/api/v1/ws``: one connection per participant, one live room per hearing.

:func:`setup_ws` plugs the session into the signaling application and binds it
to one media node, reached only through :class:`protocol.node.NodeControl`.
This module is the aiohttp side: it validates every frame with the pydantic
models of :mod:`protocol.client`, enforces the per-connection limits, and
hands each message to the :class:`~signaling.session_hub.SessionHub`, which
runs the live rooms (:class:`signaling.session.HearingRoom`).

Limits and close codes (PROTOCOL.md; choices documented here):

- The first message must be ``join`` (within ``join_timeout_seconds``);
  anything else gets an ``error`` and close 4003.
- Token refused (bad, expired, not yet valid, revoked: a newer link, a removed
  participant, a cancelled hearing): ``error`` {code: the token error's code}
  and close 4001. An adjourned hearing: ``error`` hearing_closed, close 4003.
- A forbidden action gets ``error`` {code: "not_allowed"} and the socket stays.
  Other refusals keep the socket too (``invalid_message``, ``invalid_target``,
  ``unknown_participant``, ``invalid_transition``, ``not_admitted``,
  ``publish_not_allowed``, ``invalid_sdp`` and the node's other codes).
- ``remove``: ``removed`` then close 4010; that participant's joins to this
  live session are refused with 4010. ``deny``: ``denied`` then close 4003.
  A second connection of a participant closes the first with 4009.
  Adjournment: ``state`` then close 1000 for everyone.
- Changes made over REST while people are connected: a participant removed
  from the booking gets ``removed`` then close 4010; the connection of a link
  that was reissued gets ``error`` revoked then close 4001; a cancelled
  hearing sends ``state`` cancelled then close 1000 to everyone.
- A message larger than ``max_message_bytes`` (64 KiB; one frame or its
  fragments together): close 1009 (message too big). A client frame without a
  mask: close 1002 (protocol error). No ``error`` is sent first (the frame
  cannot be skipped safely); the server reads on until the client's close
  frame, so the client sees the code rather than a TCP reset
  (:mod:`signaling.ws_guard`).
- A handshake with a ``Sec-WebSocket-Version`` other than 13: 426 problem
  ``unsupported_websocket_version`` with ``Sec-WebSocket-Version: 13``.
- Text nested deeper than 32 arrays/objects: ``error`` json_too_deep (checked
  before parsing, :mod:`signaling.json_input`); text that is not JSON or holds
  a lone surrogate, or a value of the wrong JSON type (client messages are
  strict: ``true`` is no id, ``"yes"`` no boolean): ``error`` invalid_message.
  After ``join`` the socket stays; before it, close 4003.
- More frames than the token bucket allows (``rate_per_second`` sustained,
  ``rate_burst`` at once): ``error`` too_many_messages and close 4008.
- A client that does not read its messages (send queue full): close 1013.
- Server shutdown: close 1001.
- Several signaling processes (a hub with a bus and records): a client whose
  hearing's live room runs in another process is relayed there after its
  token checked here (:mod:`signaling.ownership`, :mod:`signaling.relay`);
  when the room moves or its process dies, close 1012 (reconnect at once with
  ``resume``).

Media: only admitted participants (not in the lobby) exchange SDP and ICE
(``not_admitted`` otherwise). The client makes the first offer of every peer;
until the node has answered it, the node is not told whom the participant
receives, so the node's own offers (renegotiation) never cross that first
offer. A resumed session gets a fresh peer and offers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import structlog
from aiohttp import WebSocketError, WSMsgType, hdrs, web
from pydantic import ValidationError

from protocol.client import (
    Error,
    FrameCache,
    Join,
    ParticipantInfo,
    Reply,
    RequestId,
    parse_client_message,
    ws_json_schema,
)
from protocol.node import NodeControl
from rooms.bus import Bus, Records
from rooms.errors import NotFound
from rooms.model import Hearing
from signaling import json_input, rest_probe
from signaling.keys import STORE_KEY, TOKENS_KEY
from signaling.ownership import OwnerSettings
from signaling.problems import Problem
from signaling.relay import RelayedConn, finish_writer
from signaling.routing import ROUTES_KEY, RouteSpec
from signaling.session import (
    CLOSE_BAD_TOKEN,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NOT_ALLOWED,
    CLOSE_TOO_MANY_MESSAGES,
    CLOSE_TRY_AGAIN_LATER,
    SessionError,
)
from signaling.session_hub import Outlet, SessionHub, WsSettings
from signaling.tokens import TokenError
from signaling.ws_guard import GuardedWebSocketResponse

__all__ = [
    "HUB_KEY",
    "SCHEMA_PATH",
    "WS_PATH",
    "Outlet",
    "OwnerSettings",
    "SessionHub",
    "TokenBucket",
    "WsOutlet",
    "WsSettings",
    "setup_ws",
    "ws_handler",
    "ws_registrar",
]

WS_PATH = "/api/v1/ws"
SCHEMA_PATH = "/api/v1/schema/ws.json"


class TokenBucket:
    """Per-connection rate limit: ``burst`` frames at once, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class WsOutlet:
    """A WebSocket's outgoing side: a bounded queue drained in order by one writer task."""

    def __init__(self, ws: web.WebSocketResponse, limit: int, frames: FrameCache) -> None:
        self.ws = ws
        self._frames = frames
        self._queue: asyncio.Queue[str | tuple[int, str]] = asyncio.Queue(maxsize=limit)
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._write())

    def send(self, message: Reply) -> None:
        """Queue one message; a client that does not keep up is closed with 1013."""
        if self._closing:
            return
        self.send_text(self._frames.text(message))

    def send_text(self, text: str) -> None:
        """Queue one text frame as is (a relayed owner's message); a client that does not keep up gets 1013."""
        if self._closing:
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self._closing = True
            # The queue is full: make room for the close itself.
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            self._queue.put_nowait((CLOSE_TRY_AGAIN_LATER, "not reading its messages"))

    def close(self, code: int, reason: str) -> None:
        """Close with ``code`` after every message queued so far."""
        if self._closing:
            return
        self._closing = True
        try:
            self._queue.put_nowait((code, reason))
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            self._queue.put_nowait((code, reason))

    @property
    def closing(self) -> bool:
        """A close has been queued."""
        return self._closing

    async def _write(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, str):
                    await self.ws.send_str(item)
                else:
                    code, reason = item
                    await self.ws.close(code=code, message=reason.encode()[:120])
                    return
            except (ConnectionError, RuntimeError):
                # The peer is gone; the reader notices and cleans up.
                return

    async def finish(self, grace: float = 0.0) -> None:
        """Stop the writer (after the socket ended), letting it deliver a queued close for up to ``grace`` s."""
        await finish_writer(self._task, closing=self._closing, grace=grace)


# --- the aiohttp side ---------------------------------------------------------------------------

HUB_KEY = web.AppKey("signaling_ws_hub", SessionHub)
"""The WebSocket session hub of the application."""


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts) or "invalid message"


def _invalid_summary(raw: str, exc: ValidationError) -> str:
    """Why a frame is invalid; for text that is not JSON, the shared decoder's words (e.g. a lone surrogate)."""
    if exc.error_count() == 1 and exc.errors(include_url=False)[0]["type"] == "json_invalid":
        try:
            json_input.loads(raw)
        except json_input.JsonRefused as refused:
            return refused.detail
    return _validation_summary(exc)


def _ref_of(raw: str) -> RequestId | None:
    """The ``id`` of a frame that failed validation, when it is a usable one."""
    try:
        data = json_input.loads(raw)
    except json_input.JsonRefused:
        return None
    ref = data.get("id") if isinstance(data, dict) else None
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int) or (isinstance(ref, str) and len(ref) <= 64):
        return ref
    return None


async def _authorize(hub: SessionHub, join: Join) -> tuple[ParticipantInfo, Hearing, str]:
    """Who joins, in which stored hearing, with which link id (SessionError with close 4001 for any token problem)."""
    try:
        claims = await hub.tokens.verify(join.token)
        hearing = await hub.store.get_hearing(claims.hearing_id)
    except TokenError as exc:
        raise SessionError(exc.code, exc.detail, close=CLOSE_BAD_TOKEN) from None
    except NotFound:
        raise SessionError("revoked", "the hearing of this link no longer exists", close=CLOSE_BAD_TOKEN) from None
    booked = hearing.participant(claims.participant_id)
    if booked is None:
        raise SessionError("revoked", "the participant of this link is not booked", close=CLOSE_BAD_TOKEN)
    try:
        site_name = (await hub.store.get_site(booked.site_id)).name
    except NotFound:
        site_name = ""  # the client shows the id
    info = ParticipantInfo(id=booked.id, name=booked.name, role=booked.role, site=booked.site_id, site_name=site_name)
    return info, hearing, claims.token_id


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/ws``: one participant's session (see PROTOCOL.md and the module docstring)."""
    hub = request.app[HUB_KEY]
    settings = hub.settings
    version = request.headers.get(hdrs.SEC_WEBSOCKET_VERSION)
    if version is not None and version.strip() != "13":
        # RFC 6455 4.4: refuse other versions with 426 naming the one we speak (aiohttp would accept 7 and 8).
        raise Problem(
            426,
            "unsupported_websocket_version",
            "Unsupported WebSocket version",
            f"WebSocket version {version[:16]!r} is not supported; use version 13 (RFC 6455)",
            headers={hdrs.SEC_WEBSOCKET_VERSION: "13"},
        )
    ws = GuardedWebSocketResponse(max_msg_size=settings.max_message_bytes, heartbeat=20.0)
    await ws.prepare(request)
    outlet = WsOutlet(ws, settings.send_queue, hub.frames)
    conn = hub.attach(outlet)
    bucket = TokenBucket(settings.rate_per_second, settings.rate_burst)
    log = hub.log.bind(conn=conn, peer=request.remote)
    joined = False
    relayed: RelayedConn | None = None
    """Set when the hearing's live room runs in another signaling process: messages go there over the bus."""
    try:
        while not outlet.closing:
            timeout = None if joined else settings.join_timeout_seconds
            try:
                frame = await ws.receive(timeout=timeout)
            except TimeoutError:
                outlet.send(Error(code="join_expected", message="send join first"))
                outlet.close(CLOSE_NOT_ALLOWED, "join expected")
                break
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                if frame.type is WSMsgType.ERROR:
                    refused = frame.data if isinstance(frame.data, WebSocketError) else None
                    code = refused.code if refused is not None else ws.close_code
                    log.info("ws_frame_refused", error=str(frame.data), code=code)
                    if refused is not None and not ws.closed:
                        # The frame guard refused a frame (1002 unmasked, 1009 too big): close with its code;
                        # the guard keeps reading until the client's close, so the client sees the code, not a reset.
                        outlet.close(refused.code, str(refused)[:100])
                break
            if not bucket.take():
                log.warning("ws_rate_limited")
                outlet.send(Error(code="too_many_messages", message="message rate limit exceeded"))
                outlet.close(CLOSE_TOO_MANY_MESSAGES, "too many messages")
                break
            if frame.type is not WSMsgType.TEXT:
                outlet.send(Error(code="invalid_message", message="messages are JSON text frames"))
                if not joined:
                    outlet.close(CLOSE_NOT_ALLOWED, "join expected")
                continue
            raw: str = frame.data
            try:
                json_input.check_depth(raw)
            except json_input.JsonRefused as exc:
                outlet.send(Error(code=exc.code, message=exc.detail))
                if not joined:
                    outlet.close(CLOSE_NOT_ALLOWED, "join expected")
                continue
            try:
                msg = parse_client_message(raw)
            except ValidationError as exc:
                outlet.send(Error(ref=_ref_of(raw), code="invalid_message", message=_invalid_summary(raw, exc)))
                if not joined:
                    outlet.close(CLOSE_NOT_ALLOWED, "join expected")
                continue
            if joined:
                if relayed is not None:
                    relayed.forward(raw)
                else:
                    await hub.handle(conn, msg)
                continue
            if not isinstance(msg, Join):
                outlet.send(Error(ref=msg.id, code="join_expected", message="the first message must be join"))
                outlet.close(CLOSE_NOT_ALLOWED, "join expected")
                break
            try:
                info, hearing, token_id = await _authorize(hub, msg)
                if hub.owners is None:
                    await hub.join(conn, info, hearing, msg.resume, msg.id, token_id=token_id)
                else:
                    relayed = await hub.owners.join(conn, outlet, info, hearing, msg.resume, msg.id, token_id)
            except SessionError as exc:
                log.info("join_refused", code=exc.code)
                outlet.send(Error(ref=msg.id, code=exc.code, message=exc.detail))
                outlet.close(exc.close or CLOSE_NOT_ALLOWED, exc.code)
                break
            joined = True
            # This request's task handles only this participant: every log line of it names them.
            structlog.contextvars.bind_contextvars(hearing_id=hearing.id, participant_id=info.id)
    except Exception:
        log.exception("ws_session_failed")
        outlet.close(CLOSE_INTERNAL_ERROR, "internal error")
    finally:
        if relayed is not None:
            relayed.closed()
        await hub.detach(conn)
        # Let the writer deliver a queued close, then stop it.
        await outlet.finish(grace=5.0)
        log.info("ws_closed", code=ws.close_code)
    return ws


def setup_ws(
    app: web.Application,
    node: NodeControl,
    settings: WsSettings | None = None,
    *,
    bus: Bus | None = None,
    records: Records | None = None,
    owners: OwnerSettings | None = None,
) -> SessionHub:
    """Add the WebSocket session and its schema to ``app``, driving ``node``.

    Needs the store and token service under ``STORE_KEY``/``TOKENS_KEY``
    (:func:`signaling.app.create_app` puts them there). Connections are
    closed with 1001 on shutdown. With ``records``, the live rooms' snapshots are kept there (another process
    restores a room from its snapshot, and participants resume in place); with ``bus`` and ``records`` the process
    shares the live rooms with other signaling processes (:mod:`signaling.ownership`, settings ``owners``).
    """
    hub = SessionHub(
        app[STORE_KEY], app[TOKENS_KEY], node, settings or WsSettings(), bus=bus, records=records, owners=owners
    )
    app[HUB_KEY] = hub
    if hub.owners is not None:
        cluster = hub.owners

        async def _start_owners(_: web.Application) -> None:
            await cluster.start()

        app.on_startup.append(_start_owners)
    app.router.add_get(WS_PATH, ws_handler)
    schema = json.dumps(ws_json_schema())

    async def ws_schema(request: web.Request) -> web.StreamResponse:
        """The JSON Schema of every WebSocket message, both directions."""
        return web.Response(text=schema, content_type="application/json")

    routes = app[ROUTES_KEY]
    routes.add(
        app.router,
        RouteSpec("GET", SCHEMA_PATH, "JSON Schema of every WebSocket message", "ws_schema", "session"),
        ws_schema,
    )

    async def _shutdown(_: web.Application) -> None:
        await hub.shutdown()

    app.on_shutdown.append(_shutdown)
    # The device-check page's network check runs on the same node as the sessions.
    rest_probe.register(app, node)
    return hub


def ws_registrar(
    node: NodeControl,
    settings: WsSettings | None = None,
    *,
    bus: Bus | None = None,
    records: Records | None = None,
    owners: OwnerSettings | None = None,
) -> Callable[[web.Application], None]:
    """A registrar for :func:`signaling.app.create_app` (``registrars=[ws_registrar(node, settings)]``)."""

    def register(app: web.Application) -> None:
        setup_ws(app, node, settings, bus=bus, records=records, owners=owners)

    return register
