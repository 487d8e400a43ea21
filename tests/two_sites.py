"""A trial held across two network namespaces of the test's own, with a Chromium at each site.

``court`` runs ``courtlink serve`` (its media node announcing only the court address) and the judge's Chromium;
``home`` runs the defendant's Chromium. They are joined by a veth pair (:data:`COURT_ADDRESS` <->
:data:`HOME_ADDRESS`, interfaces :data:`COURT_DEV` and :data:`HOME_DEV`): nothing of it touches the machine's own
network, and a test can cut or shape the link between the sites (``tests.netns``). :func:`two_site_hearing` books
the hearing, has the judge open the courtroom and admit the defendant, and waits until each receives the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.browser_fixtures import (
    Booking,
    Participants,
    Server,
    admit_defendant,
    book_hearing,
    chromium_in,
    fake_video_clip,
    namespace_args,
    participant_group,
    require_chromium,
    run_server,
)
from tests.netns import Link, namespaces, netns_thread, veth_link

COURT_ADDRESS = "10.77.0.1"
HOME_ADDRESS = "10.77.0.2"
COURT_DEV, HOME_DEV = "vcourt", "vhome"


@dataclass(frozen=True)
class TwoSites:
    """The hearing under way: the namespaces, the server, and each site's people and page."""

    court: str
    home: str
    server: Server
    booking: Booking
    at_court: Participants
    at_home: Participants
    judge: Page
    defendant: Page

    @property
    def judge_id(self) -> str:
        return self.booking.ids["judge"]

    @property
    def defendant_id(self) -> str:
        return self.booking.ids["defendant"]


@contextmanager
def two_site_hearing(tmp_path: Path, shots: Path) -> Iterator[TwoSites]:
    """The judge at ``court`` and the defendant at ``home`` in one open hearing, each receiving the other; the
    server's log is copied to ``shots`` afterwards (failure or not)."""
    require_chromium()
    clip = fake_video_clip(tmp_path / "small.y4m")
    with (
        namespaces(addresses=(COURT_ADDRESS, HOME_ADDRESS), devices=(COURT_DEV, HOME_DEV)) as (court, home),
        netns_thread(court) as in_court,
        run_server(
            tmp_path / "serve",
            host=COURT_ADDRESS,
            wrap=("nsenter", f"--net=/run/netns/{court}"),
            env_extra={"COURTLINK_MEDIA__ANNOUNCE_ADDRESSES": f'["{COURT_ADDRESS}"]'},
            via=in_court,
        ) as server,
    ):
        try:
            booking = book_hearing(server, [("Zhang Wei", "judge", "court"), ("Ma Jun", "defendant", "remote")])
            allowed = frozenset({COURT_ADDRESS})
            args = namespace_args(server.base_url, COURT_ADDRESS, f"--use-file-for-fake-video-capture={clip}")
            with sync_playwright() as playwright:
                court_browser = playwright.chromium.launch(
                    executable_path=chromium_in(court, tmp_path), headless=True, args=args
                )
                home_browser = playwright.chromium.launch(
                    executable_path=chromium_in(home, tmp_path), headless=True, args=args
                )
                try:
                    with (
                        participant_group(court_browser, also_allowed=allowed) as at_court,
                        participant_group(home_browser, also_allowed=allowed) as at_home,
                    ):
                        judge, defendant = admit_defendant(at_court, at_home, booking)
                        sites = TwoSites(court, home, server, booking, at_court, at_home, judge, defendant)
                        yield sites
                finally:
                    home_browser.close()
                    court_browser.close()
        finally:
            shutil.copyfile(server.log_path, shots / "server.log")


@contextmanager
def adapting_server_on_a_link(
    tmp_path: Path, prefixes: tuple[str, str], addresses: tuple[str, str], devices: tuple[str, str]
) -> Iterator[tuple[Link, Server]]:
    """A veth link between two namespaces of the test's own (:func:`tests.netns.veth_link`) and ``courtlink serve``
    in the first, listening and announcing ICE candidates on its address, with bandwidth adaptation on, JSON info
    logs, and one datagram per packet (no GSO: the nftables loss rule then drops packets, not whole GSO runs)."""
    with (
        veth_link(prefixes, addresses, devices) as link,
        netns_thread(link.a) as in_court,
        run_server(
            tmp_path / "serve",
            host=addresses[0],
            wrap=("nsenter", f"--net=/run/netns/{link.a}"),
            env_extra={
                "COURTLINK_MEDIA__ANNOUNCE_ADDRESSES": f'["{addresses[0]}"]',
                "COURTLINK_MEDIA__ADAPTATION": "true",
                "COURTLINK_LOG_FORMAT": "json",
                "COURTLINK_LOG_LEVEL": "info",
                "COURTLINK_UDP_GSO": "0",
            },
            via=in_court,
        ) as server,
    ):
        yield link, server
