"""Simulcast decisions of the media node: the SDP lines that negotiate it, and which layer each subscriber gets.

Pure: no aiortc, no I/O, the clock passed in. aiortc 1.16 negotiates no
``a=rid`` / ``a=simulcast`` (RFC 8851, RFC 8853); a browser publishing its
camera in 2-3 layers offers, in that m-section::

    a=rid:q send
    a=rid:h send
    a=rid:f send
    a=simulcast:send q;h;f

and sends all of them only if the answer says ``a=rid:<r> recv`` for each and
``a=simulcast:recv q;h;f``. :func:`offered_layers` reads what a client offered
(refusing, by ignoring, anything malformed: the client then sends one layer),
:func:`with_simulcast` writes the node's side into its answer and into every
later node offer (a node offer without those lines makes the browser drop to
one layer).

Each layer reaches the node as its own RTP stream (its own SSRC, told by the
``rtp-stream-id`` header extension). :class:`LayerChooser` picks one layer per
subscriber slot from the size of the tile the subscriber shows it in and the
bitrate the subscriber's link can take, switching up only after a hold so a
noisy estimate does not flap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_LAYERS = 3
"""Layers one published video may have (the browser client asks for 3 at most: quarter, half and full size)."""

RID_EXTENSIONS = (
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
)
"""The RTP header extensions that name a packet's layer (and its RTX stream's layer); needed for simulcast."""

_RID = re.compile(r"[A-Za-z0-9_-]{1,16}")
"""A rid the node accepts (RFC 8851 allows alphanumerics, ``-`` and ``_``; 16 characters is plenty)."""

UP_HOLD = 3.0
"""Seconds a better layer must stay the choice before a subscriber is switched up (down is at once)."""

RETRY_HOLD = 10.0
"""Seconds a layer the subscriber's link refused (the budget stepped it down from there) must stay the choice,
once the link shows no loss, before the subscriber is switched back up to it: the estimate is trusted only with
loss, so a step down leaves a clean link and, after :data:`UP_HOLD` alone, a switch back up that overflows it
again (measured on a 400 kbit/s link with ``tc tbf``: down, up 8 s later, down 0.9 s after that, and so on)."""

RETRY_HOLD_MAX = 80.0
"""The longest hold before trying a refused layer again: each retry the link refuses again (within
:data:`RETRY_FAILED_WITHIN`) doubles the hold up to this."""

RETRY_FAILED_WITHIN = 10.0
"""Seconds after a switch up to a refused layer within which a step down by the budget counts as the link
refusing it again; a subscriber that stays on it this long has it back for good (the refusal is forgotten)."""

ACTIVE_WITHIN = 1.5
"""Seconds: a layer without a packet for this long is not chosen (the publisher stopped sending it)."""

TILE_MARGIN = 0.85
"""A layer is big enough for a tile when its width (or height) is at least this share of the tile's."""

PROBED_WITHIN = 2.0
"""Seconds after a padding probe showed the link carries the layer the tile wants during which the switch up to it
goes at once (no :data:`UP_HOLD`, no :data:`RETRY_HOLD`): the probe, not the passing of time, showed the link
widened (a lifted limit)."""

LAYER_PROBE_SECONDS = 0.6
"""Seconds a probe for a refused layer sends padding (see :data:`LAYER_PROBE_MARGIN`)."""

LAYER_PROBE_MARGIN = 1.4
"""A probe for a refused layer pads to this times what the subscriber's videos would take after the step up, for
:data:`LAYER_PROBE_SECONDS`. The probe is judged by loss alone: a browser's REMB, already at its floor after the step
down, neither falls nor rises during a probe, and the node gets no per-packet delay feedback (no transport-wide CC).
On a link that cannot carry the step, the excess (at least 0.4 of the total) then overflows a router buffer of up to
0.24 s of the link's rate, and the loss fails the probe. Measured with ``tc tbf`` (a 100 ms buffer): a probe of the
step times 1.15 for 0.2 s, as for paused video, only queued, and passed on a link that could not carry the layer."""

LAYER_PROBE_WAIT_MAX = 4.0
"""Seconds: the longest wait between two padding probes for a refused layer. A failed layer probe overflows the
link by one layer step's bitrate for a probe's 0.2 s, much less than a probe for paused video, so it is tried again
sooner than those (whose wait doubles to a minute): a lifted limit is then found within a few seconds."""


class SimulcastIgnored(ValueError):
    """An offered ``a=simulcast`` the node does not take (malformed, or more layers than it forwards)."""


@dataclass(frozen=True, slots=True)
class OfferedLayers:
    """The layers a client offered for one m-section, in its order, and the header extension ids naming them."""

    mid: str
    rids: tuple[str, ...]
    extensions: tuple[tuple[int, str], ...]
    """``(id, uri)`` of the client's rid header extensions (:data:`RID_EXTENSIONS`) in that m-section."""


def _sections(sdp: str) -> list[list[str]]:
    """The SDP's lines cut into the session part (first) and one list per m-section."""
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _attribute(line: str, name: str) -> str | None:
    prefix = f"a={name}:"
    return line[len(prefix) :].strip() if line.startswith(prefix) else None


def _parse_section(lines: list[str]) -> OfferedLayers | None:
    """The layers one m-section offers, None without ``a=simulcast``; raise SimulcastIgnored when malformed."""
    if not lines or not lines[0].startswith("m=video"):
        if any(_attribute(line, "simulcast") is not None for line in lines):
            raise SimulcastIgnored("a=simulcast outside a video section")
        return None
    mid: str | None = None
    simulcast: list[str] = []
    send_rids: set[str] = set()
    extensions: list[tuple[int, str]] = []
    direction = "sendrecv"
    for line in lines:
        if (value := _attribute(line, "mid")) is not None:
            mid = value
        elif (value := _attribute(line, "simulcast")) is not None:
            simulcast.append(value)
        elif (value := _attribute(line, "rid")) is not None:
            bits = value.split()
            if len(bits) >= 2 and bits[1] == "send":
                send_rids.add(bits[0])
        elif (value := _attribute(line, "extmap")) is not None:
            bits = value.split()
            if len(bits) >= 2 and bits[1] in RID_EXTENSIONS:
                number = bits[0].split("/")[0]
                if number.isdigit() and 1 <= int(number) <= 255:
                    extensions.append((int(number), bits[1]))
        elif line in ("a=sendonly", "a=recvonly", "a=sendrecv", "a=inactive"):
            direction = line[2:]
    if not simulcast:
        return None
    if len(simulcast) > 1:
        raise SimulcastIgnored("more than one a=simulcast line")
    if mid is None:
        raise SimulcastIgnored("a=simulcast in a section without a=mid")
    if direction not in ("sendonly", "sendrecv"):
        raise SimulcastIgnored(f"a=simulcast in a {direction} section")
    words = simulcast[0].split()
    if len(words) != 2 or words[0] != "send":
        # "recv ..." or "send ... recv ...": the node never sends simulcast.
        raise SimulcastIgnored(f"a=simulcast:{simulcast[0][:40]!r} is not 'send <rids>'")
    rids: list[str] = []
    for stream in words[1].split(";"):
        # "a,b" are alternatives for one stream (take the first); "~a" is a layer offered paused.
        rid = stream.split(",")[0].lstrip("~")
        if not _RID.fullmatch(rid):
            raise SimulcastIgnored(f"rid {rid[:20]!r} is not 1-16 letters, digits, '-' or '_'")
        if rid not in send_rids:
            raise SimulcastIgnored(f"rid {rid!r} has no 'a=rid:{rid} send' line")
        if rid in rids:
            raise SimulcastIgnored(f"rid {rid!r} listed twice")
        rids.append(rid)
    if not 2 <= len(rids) <= MAX_LAYERS:
        raise SimulcastIgnored(f"{len(rids)} layers (the node takes 2 to {MAX_LAYERS})")
    uris = {uri for _, uri in extensions}
    if RID_EXTENSIONS[0] not in uris:
        raise SimulcastIgnored("no rtp-stream-id header extension (the layers could not be told apart)")
    return OfferedLayers(mid=mid, rids=tuple(rids), extensions=tuple(extensions))


def offered_layers(sdp: str) -> tuple[dict[str, OfferedLayers], dict[str, str]]:
    """The simulcast layers a client's offer asks to send, by mid; and, by mid (or section number), why an
    ``a=simulcast`` was ignored. Never raises: what is ignored is sent as one layer by the client."""
    found: dict[str, OfferedLayers] = {}
    ignored: dict[str, str] = {}
    for index, lines in enumerate(_sections(sdp)[1:]):
        try:
            layers = _parse_section(lines)
        except SimulcastIgnored as exc:
            mid = next((v for line in lines if (v := _attribute(line, "mid")) is not None), f"#{index}")
            ignored[mid] = str(exc)
            continue
        if layers is not None:
            found[layers.mid] = layers
    return found, ignored


def with_simulcast(sdp: str, layers: Mapping[str, Sequence[str]]) -> str:
    """The node's SDP (answer or offer) with, in each m-section whose mid is in ``layers``, ``a=rid:<r> recv``
    per rid and ``a=simulcast:recv r1;r2;...`` in place of any rid/simulcast lines it had."""
    if not layers:
        return sdp
    newline = "\r\n" if "\r\n" in sdp else "\n"
    sections = _sections(sdp)
    out: list[str] = list(sections[0])
    for lines in sections[1:]:
        mid = next((v for line in lines if (v := _attribute(line, "mid")) is not None), None)
        rids = layers.get(mid) if mid is not None else None
        if rids is None or not lines[0].startswith("m=video"):
            out.extend(lines)
            continue
        kept = [line for line in lines if not line.startswith(("a=rid:", "a=simulcast:")) and line != ""]
        kept.extend(f"a=rid:{rid} recv" for rid in rids)
        kept.append("a=simulcast:recv " + ";".join(rids))
        out.extend(kept)
    text = newline.join(out)
    return text if text.endswith(newline) else text + newline


# --- layer choice -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """What the chooser knows of one layer of a published video."""

    rid: str
    width: int
    """Pixels, from its last keyframe (0: not known yet)."""
    height: int
    bitrate: int
    """Bit/s received over the last seconds."""
    active: bool
    """A packet came within :data:`ACTIVE_WITHIN`."""


def order_layers(layers: Sequence[LayerInfo]) -> list[int]:
    """Indexes of ``layers`` from the smallest to the largest: by known width, else by the offer's order."""
    return sorted(range(len(layers)), key=lambda i: (layers[i].width or 0, layers[i].bitrate, i))


def best_layer(layers: Sequence[LayerInfo], tile: tuple[int, int] | None, budget: int | None) -> int | None:
    """The index of the layer a subscriber should get now (None: no layer is flowing).

    - Only active layers count.
    - ``tile`` (pixels, width and height the subscriber shows it at; None: not told): the smallest layer that
      is big enough for it (at least :data:`TILE_MARGIN` of its width or height), else the largest. A tile of 0x0
      (received but not shown) takes the smallest. Unknown sizes (no keyframe yet) count as big enough.
    - ``budget`` (bit/s the subscriber's link can spare for this video; None: no limit): the largest of those
      not above the tile's choice whose bitrate fits, else the smallest.
    """
    active = [i for i in order_layers(layers) if layers[i].active]
    if not active:
        return None
    choice = active[-1]
    if tile is not None:
        width, height = tile
        if width <= 0 or height <= 0:
            choice = active[0]
        else:
            for i in active:
                layer = layers[i]
                if layer.width == 0 or (layer.width >= width * TILE_MARGIN or layer.height >= height * TILE_MARGIN):
                    choice = i
                    break
    if budget is not None:
        allowed = active[: active.index(choice) + 1]
        fitting = [i for i in allowed if layers[i].bitrate <= budget]
        choice = fitting[-1] if fitting else active[0]
    return choice


class LayerChooser:
    """One subscriber slot's layer of one simulcast video: down at once, up only after :data:`UP_HOLD` seconds, or
    :data:`RETRY_HOLD` (doubling with each refusal) when the link refused that layer before."""

    __slots__ = ("_better_since", "_candidate", "_probed_at", "_refused", "_retry_hold", "_up_at", "current")

    def __init__(self) -> None:
        self.current: str | None = None
        """The rid chosen last (None before any choice)."""
        self._candidate: str | None = None
        self._better_since = 0.0
        self._refused: str | None = None
        """The smallest layer the budget stepped the slot down from (None: the link refused nothing lately)."""
        self._retry_hold = RETRY_HOLD
        self._up_at = float("-inf")
        """When the slot last went up to (or past) the refused layer."""
        self._probed_at = float("-inf")
        """When a padding probe last showed the link carries the layer the tile wants (see :meth:`probed`)."""

    @property
    def held(self) -> bool:
        """Whether the link refused a layer lately (the slot may sit below its tile's layer because of it)."""
        return self._refused is not None

    def link_gap(self, layers: Sequence[LayerInfo], tile: tuple[int, int] | None) -> int:
        """Bit/s more the slot would take at the layer its tile wants, when the link (not the tile, not the hold
        after a tile change) keeps it below that layer: what a padding probe must show the link carries before the
        slot goes up (0: nothing is held down by the link)."""
        current, refused = self.current, self._refused
        if current is None or refused is None:
            return 0
        index = best_layer(layers, tile, None)
        rank = {layers[i].rid: n for n, i in enumerate(order_layers(layers))}
        if index is None or current not in rank or refused not in rank:
            return 0
        wanted = layers[index]
        if rank[wanted.rid] <= rank[current] or rank[wanted.rid] < rank[refused]:
            return 0
        return max(0, wanted.bitrate - layers[_index(layers, current)].bitrate)

    def probed(self, now: float) -> None:
        """A padding probe showed the link carries the layer the tile wants: the refusal is over, and the switch up
        goes at once (within :data:`PROBED_WITHIN`)."""
        self._refused, self._retry_hold = None, RETRY_HOLD
        self._probed_at = now

    def decide(
        self, now: float, layers: Sequence[LayerInfo], tile: tuple[int, int] | None, budget: int | None
    ) -> str | None:
        """The rid the slot should get now (unchanged while nothing better held long enough)."""
        index = best_layer(layers, tile, budget)
        if index is None:
            return self.current
        wanted = layers[index].rid
        rank = {layers[i].rid: n for n, i in enumerate(order_layers(layers))}
        current = self.current
        if current is None or current not in rank or not layers[_index(layers, current)].active:
            self.current, self._candidate = wanted, None
            return wanted
        refused = self._refused if self._refused in rank else None
        if refused is not None and rank[current] >= rank[refused] and now - self._up_at >= RETRY_FAILED_WITHIN:
            self._refused, self._retry_hold, refused = None, RETRY_HOLD, None  # the link carries it now
        if rank[wanted] < rank[current]:
            by_tile = best_layer(layers, tile, None)
            if budget is not None and by_tile is not None and rank[wanted] < rank[layers[by_tile].rid]:
                # The link, not the tile, asks for less: the layer above the new one is refused for a while.
                ordered = [layers[i].rid for i in order_layers(layers)]
                step = ordered[rank[wanted] + 1]
                if refused is not None and rank[step] <= rank[refused] and now - self._up_at < RETRY_FAILED_WITHIN:
                    self._retry_hold = min(self._retry_hold * 2, RETRY_HOLD_MAX)  # a retry that failed
                if refused is None or rank[step] < rank[refused]:
                    self._refused = step
            self.current, self._candidate = wanted, None  # down: the link or the tile asks for less now
        elif rank[wanted] > rank[current]:
            hold = self._retry_hold if refused is not None and rank[wanted] >= rank[refused] else UP_HOLD
            if now - self._probed_at < PROBED_WITHIN:
                hold = 0.0  # a probe just showed the link carries it
            if self._candidate != wanted:
                self._candidate, self._better_since = wanted, now
            if now - self._better_since >= hold:
                self.current, self._candidate = wanted, None
                if refused is not None and rank[wanted] >= rank[refused]:
                    self._up_at = now
        else:
            self._candidate = None
        return self.current


def _index(layers: Sequence[LayerInfo], rid: str) -> int:
    return next(i for i, layer in enumerate(layers) if layer.rid == rid)


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a VP8 key frame (RFC 6386 9.1: frame tag, start code 9d 01 2a, then 14-bit sizes)."""
    if len(data) < 10 or data[0] & 0x01 or data[3:6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(data[8:10], "little") & 0x3FFF


def plan_layers(
    videos: Sequence[tuple[str, int]],
    layers: Mapping[str, tuple[Sequence[LayerInfo], tuple[int, int] | None]],
    estimate: int | None,
) -> tuple[dict[str, int], dict[str, int | None]]:
    """Step a constrained subscriber's simulcast videos down before anything is paused.

    ``videos`` are ``(key, bitrate)`` highest priority first; ``layers`` the layers (and tile) of those that are
    simulcast. Going down the priority order, each simulcast video gets the largest layer its tile wants that fits
    what the estimate leaves after the videos before it (else its smallest layer). Returns each video's need
    (bit/s: its chosen layer's bitrate, for the pause decision that follows) and each simulcast video's budget
    (None: no estimate, no limit).
    """
    needs: dict[str, int] = {}
    budgets: dict[str, int | None] = {}
    remaining = estimate
    for key, bitrate in videos:
        need = bitrate
        entry = layers.get(key)
        if entry is not None:
            infos, tile = entry
            budget = None if remaining is None else max(remaining, 0)
            index = best_layer(infos, tile, budget)
            if index is not None:
                need = infos[index].bitrate
            budgets[key] = budget
        needs[key] = need
        if remaining is not None:
            remaining -= need
    return needs, budgets
