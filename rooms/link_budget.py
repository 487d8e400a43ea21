"""The site link budget: what the hearings booked at a site are expected to send and receive over its link.

A detention center's link (say 20 Mbit/s) carries every hearing it joins at once. When a clerk books, each site of
the booking that declares ``Site.link_mbps`` gets an entry: the hearings that overlap this one on that site, the
bitrate they are expected to need at the busiest instant of the window, and whether that is over the link. It is a
warning, never a refusal: the node adapts video per subscriber to what a link really carries (issue 11), but a
clerk who sees the warning can move a hearing before the morning's arraignments freeze each other.

Pure: no I/O. Every figure is one named constant below (the planning figures, not measurements of a live link).

How a hearing is counted on one site's link: every participant booked at that site has a terminal of their own
(their own join link), so each one's traffic crosses the link:

- up: their camera (:data:`CAMERA_MBPS`) and microphone (:data:`AUDIO_MBPS`), as their role may publish
  (``rooms.permissions.TABLE``; an observer publishes nothing);
- down: the cameras of the other camera publishers of the hearing, at most :data:`LAST_N` (the node forwards the
  cameras of the N most recent speakers), the audio of every other audio publisher, and one evidence stream
  (:data:`EVIDENCE_MBPS`) when anyone else in the hearing may present evidence.

A link carries that much each way (a leased line is symmetric), so a hearing's figure, and the site's, is the
busier direction: almost always down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field

from rooms.model import Frozen, Hearing, Participant, Site, Source
from rooms.permissions import TABLE
from rooms.schedule import overlaps

CAMERA_MBPS = 1.2
"""One camera stream: VP8 at 640x480-720p, 15-30 fps, as the browser client and the bench publish it."""

AUDIO_MBPS = 0.05
"""One microphone stream: Opus at about 32-40 kbit/s plus RTP/UDP/IP overhead at 50 packets/s."""

EVIDENCE_MBPS = 1.5
"""One evidence stream (a shared screen or document): screen content at full resolution, bursty on page turns."""

LAST_N = 6
"""How many cameras one participant receives at most: the default of ``[media] last_n``."""

MBPS_DECIMALS = 2
"""Figures in answers are rounded to this many decimals (10 kbit/s): estimates, not measurements."""


@dataclass(frozen=True)
class Load:
    """Expected traffic of one participant, or a sum of them, in Mbit/s per direction."""

    up_mbps: float = 0.0
    """From the site to the court network (what the site's participants publish)."""
    down_mbps: float = 0.0
    """From the court network to the site (what its participants receive)."""

    def __add__(self, other: Load) -> Load:
        return Load(self.up_mbps + other.up_mbps, self.down_mbps + other.down_mbps)

    @property
    def busier_mbps(self) -> float:
        """The busier direction: what the link must carry each way."""
        return max(self.up_mbps, self.down_mbps)


def _publishes(p: Participant, source: Source) -> bool:
    return source in TABLE[p.role].publish


def participant_load(p: Participant, hearing: Hearing) -> Load:
    """What ``p``'s terminal is expected to send and receive in ``hearing`` (see the module doc)."""
    others = [o for o in hearing.participants if o.id != p.id]
    up = (CAMERA_MBPS if _publishes(p, Source.camera) else 0.0) + (
        AUDIO_MBPS if _publishes(p, Source.microphone) else 0.0
    )
    cameras = min(LAST_N, sum(_publishes(o, Source.camera) for o in others))
    voices = sum(_publishes(o, Source.microphone) for o in others)
    evidence = any(_publishes(o, Source.evidence) for o in others)
    down = cameras * CAMERA_MBPS + voices * AUDIO_MBPS + (EVIDENCE_MBPS if evidence else 0.0)
    return Load(up, down)


def hearing_load(hearing: Hearing, site_id: str) -> Load:
    """What ``hearing`` is expected to put on ``site_id``'s link: the sum over its participants at that site."""
    total = Load()
    for p in hearing.participants:
        if p.site_id == site_id:
            total += participant_load(p, hearing)
    return total


def _mbps(value: float) -> float:
    return round(value, MBPS_DECIMALS)


class LinkHearing(Frozen):
    """One hearing on a site's link during the window."""

    id: str = Field(description="Hearing identifier.")
    case_number: str = Field(description="The court's case number.")
    starts_at: datetime = Field(description="Start of its window.")
    ends_at: datetime = Field(description="End of its window.")
    expected_mbps: float = Field(description="What it alone is expected to need on this site's link, Mbit/s.")


class SiteLinkBudget(Frozen):
    """A site's link during a window: the hearings on it, what they are expected to need, and whether it fits."""

    site_id: str = Field(description="The site.")
    link_mbps: float | None = Field(description="The site's link, Mbit/s each way; null: not declared, not checked.")
    expected_mbps: float = Field(
        description="Expected need of the overlapping hearings at the busiest instant of the window, Mbit/s."
    )
    hearings: tuple[LinkHearing, ...] = Field(
        description="Every hearing on the site's link that overlaps the window (the booked one included), by start."
    )
    over: bool = Field(description="True when expected_mbps exceeds link_mbps: a warning, the booking stands.")


def _peak(loads: list[tuple[Hearing, Load]], starts_at: datetime, ends_at: datetime) -> float:
    """The most the overlapping hearings need at any one instant of [starts_at, ends_at), busier direction."""
    events: list[tuple[datetime, int, Load]] = []
    for h, load in loads:
        events.append((max(h.starts_at, starts_at), 1, load))
        events.append((min(h.ends_at, ends_at), -1, load))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant: back to back is no overlap
    up = down = peak = 0.0
    for _, sign, load in events:
        up += sign * load.up_mbps
        down += sign * load.down_mbps
        peak = max(peak, up, down)
    return peak


def site_link(
    site: Site,
    hearings: Iterable[Hearing],
    starts_at: datetime,
    ends_at: datetime,
) -> SiteLinkBudget:
    """``site``'s link during [starts_at, ends_at): the hearings among ``hearings`` that are on it then.

    ``hearings`` may hold any hearings (a booking passes itself and everything the store found around it); those
    that do not join the site, do not overlap the window or no longer block the schedule (cancelled, adjourned)
    are left out, and a hearing given twice (by id) counts once, the last copy winning.
    """
    by_id = {h.id: h for h in hearings}
    on_link = sorted(
        (
            h
            for h in by_id.values()
            if h.blocks_schedule and site.id in h.site_ids() and overlaps(starts_at, ends_at, h.starts_at, h.ends_at)
        ),
        key=lambda h: (h.starts_at, h.id),
    )
    loads = [(h, hearing_load(h, site.id)) for h in on_link]
    expected = _mbps(_peak(loads, starts_at, ends_at))
    return SiteLinkBudget(
        site_id=site.id,
        link_mbps=site.link_mbps,
        expected_mbps=expected,
        hearings=tuple(
            LinkHearing(
                id=h.id,
                case_number=h.case_number,
                starts_at=h.starts_at,
                ends_at=h.ends_at,
                expected_mbps=_mbps(load.busier_mbps),
            )
            for h, load in loads
        ),
        over=site.link_mbps is not None and expected > site.link_mbps,
    )


def booking_budget(booked: Hearing, sites: Mapping[str, Site], others: Iterable[Hearing]) -> list[SiteLinkBudget]:
    """One entry per site of ``booked`` that declares a link (by site id): ``booked`` beside ``others`` on it.

    ``sites`` maps site ids to sites (sites missing from it, or without ``link_mbps``, get no entry); ``others``
    are the hearings found around the booking (``booked`` itself among them is replaced by ``booked``).
    """
    around = [h for h in others if h.id != booked.id]
    out: list[SiteLinkBudget] = []
    for site_id in sorted(booked.site_ids()):
        site = sites.get(site_id)
        if site is None or site.link_mbps is None:
            continue
        out.append(site_link(site, [*around, booked], booked.starts_at, booked.ends_at))
    return out
