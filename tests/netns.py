"""Network namespaces for tests: two private namespaces joined by a veth pair, a thread inside one, a shaped link.

Everything here touches only namespaces the test makes itself (names unique per run, removed afterwards even on
failure); the machine's own network is never changed. It needs root, ``ip`` and ``nft`` (and ``tc`` to shape):
:func:`namespaces` skips the test with the reason when the host cannot.

- :func:`namespaces` makes the pair (IPv6 off inside, links up, no address tentative before it yields).
- :func:`netns_thread` runs calls on a thread moved into one namespace: sockets it opens, and child processes it
  starts, live there.
- :func:`shape` limits one direction of the veth link: ``tc tbf`` on an interface's egress for the rate, nftables
  ``numgen random`` for loss (``netem`` is not available on these machines), best dropped where the packets arrive
  (``drop_at``: a drop on the sender's own output is no loss it cannot see); :func:`unshape` lifts both.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import pytest

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
LOSS_TABLE = "courtlink_loss"
"""The nftables table (inet family) :func:`shape` adds its random-loss rule to."""


def run(*args: str, stdin: str | None = None) -> str:
    """Run one admin command (``ip``, ``tc``, ``nft``), raising with its output on failure; its stdout."""
    done = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, list(args), done.stdout, done.stderr)
    return done.stdout


def netns_cannot() -> str | None:
    """Why this host cannot make network namespaces for a test (None: it can)."""
    missing = [tool for tool in ("ip", "nft", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"network namespaces need {', '.join(missing)}"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI and the dev machine run tests as root)"
    return None


@dataclass(frozen=True)
class Link:
    """Two namespaces joined by a veth pair: ``a`` (interface ``a_dev``, address ``a_address``) and ``b``."""

    a: str
    b: str
    a_dev: str
    b_dev: str
    a_address: str
    b_address: str


@contextmanager
def namespaces(
    prefixes: tuple[str, str] = ("cl-court", "cl-home"),
    addresses: tuple[str, str] = ("10.77.0.1", "10.77.0.2"),
    devices: tuple[str, str] = ("vcourt", "vhome"),
) -> Iterator[tuple[str, str]]:
    """Two fresh network namespaces joined by a veth pair; removed afterwards (skip if the host cannot)."""
    with veth_link(prefixes, addresses, devices) as link:
        yield link.a, link.b


@contextmanager
def veth_link(
    prefixes: tuple[str, str], addresses: tuple[str, str], devices: tuple[str, str] = ("veth-a", "veth-b")
) -> Iterator[Link]:
    """:func:`namespaces`, yielding the whole :class:`Link` (names, interfaces, /24 addresses)."""
    reason = netns_cannot()
    if reason is not None:
        pytest.skip(reason)
    suffix = secrets.token_hex(3)
    a, b = (f"{prefix}-{suffix}" for prefix in prefixes)
    made: list[str] = []
    try:
        for name in (a, b):
            try:
                run("ip", "netns", "add", name)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"cannot create a network namespace here: {str(exc.stderr).strip()}")
            made.append(name)
            # No IPv6 inside: a link-local address finishing duplicate detection a second after the link is up
            # is a "network change" to Chromium, which then fails the page loads in flight (ERR_NETWORK_CHANGED).
            for key in ("all", "default"):
                run("ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
            run("ip", "-n", name, "link", "set", "lo", "up")
        a_dev, b_dev = devices
        run("ip", "-n", a, "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b)
        run("ip", "-n", a, "addr", "add", f"{addresses[0]}/24", "dev", a_dev)
        run("ip", "-n", b, "addr", "add", f"{addresses[1]}/24", "dev", b_dev)
        run("ip", "-n", a, "link", "set", a_dev, "up")
        run("ip", "-n", b, "link", "set", b_dev, "up")
        settle(a, b)
        yield Link(a, b, a_dev, b_dev, addresses[0], addresses[1])
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20, check=False)


def settle(*names: str) -> None:
    """Wait until every veth end is up and no address is still tentative, so no browser starts while the
    namespace's network is still changing under it."""

    def show(name: str, what: str) -> list[str]:
        out = subprocess.run(["ip", "-n", name, "-o", what, "show"], capture_output=True, text=True, timeout=20)
        return out.stdout.splitlines()

    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        links = [line for name in names for line in show(name, "link") if "LOOPBACK" not in line]
        addrs = [line for name in names for line in show(name, "addr")]
        if all("state UP" in line for line in links) and not any("tentative" in line for line in addrs):
            return
        time.sleep(0.1)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (its sockets are made there from now on)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


@contextmanager
def netns_thread(name: str) -> Iterator[Callable[[Callable[[], T]], T]]:
    """A function that runs a call on a thread inside namespace ``name`` and returns its result (a child process
    started by such a call lives in that namespace)."""
    with ThreadPoolExecutor(1, initializer=enter_netns, initargs=(name,)) as pool:

        def inside(call: Callable[[], T]) -> T:
            return pool.submit(call).result()

        yield inside


def nsenter(name: str) -> tuple[str, ...]:
    """The command prefix that runs a program inside namespace ``name``."""
    return ("nsenter", f"--net=/run/netns/{name}")


# --- shaping --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One direction of a link: a rate limit (None: unlimited) and a random loss (percent of UDP packets)."""

    rate_mbit: float | None = None
    loss_percent: int = 0

    @property
    def label(self) -> str:
        """As the issue's tables name it: ``unlimited``, ``2 Mbit/s``, ``2% loss``, ``1 Mbit/s + 2% loss``."""
        parts = []
        if self.rate_mbit is not None:
            parts.append(f"{self.rate_mbit:g} Mbit/s")
        if self.loss_percent:
            parts.append(f"{self.loss_percent}% loss")
        return " + ".join(parts) or "unlimited"


TBF_LATENCY_MS = 100
"""How long a packet may wait in the token bucket's queue before tbf drops it (a router's buffer, ~100 ms)."""


def shape(netns: str, dev: str, link: Shape, *, drop_at: tuple[str, str] | None = None) -> None:
    """Shape what leaves ``dev`` in ``netns`` (replacing any earlier shape): ``tc tbf`` for the rate, nftables
    random drop of that many percent of UDP packets for the loss (TCP signaling is left alone).

    ``drop_at`` (namespace, interface): drop where the packets arrive, on that interface's input, as a lossy link
    does, silently. Without it the drop is on ``dev``'s output in ``netns``, and the sender sees every drop: its
    ``sendto``/``sendmmsg`` fails with ``EPERM``, and a sender that then sends the packet again (the node's direct
    send path hands what ``sendmmsg`` did not send to the transport) loses almost nothing (2% became 0.04%).
    """
    unshape(netns, dev, drop_at=drop_at)
    if link.rate_mbit is not None:
        rate_kbit = int(link.rate_mbit * 1000)
        # A burst of at least rate/HZ (and one full-size packet or more): ~10 ms of the rate, at least 4 kB.
        burst = max(4096, rate_kbit * 1000 // 8 // 100)
        run(
            "ip", "netns", "exec", netns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
            "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms",
        )  # fmt: skip
    if link.loss_percent:
        where, hook, match = (
            (netns, "output", f'oifname "{dev}"')
            if drop_at is None
            else (drop_at[0], "input", f'iifname "{drop_at[1]}"')
        )
        rules = (
            f"table inet {LOSS_TABLE} {{\n"
            f"  chain loss {{ type filter hook {hook} priority 0; policy accept;\n"
            f"    {match} meta l4proto udp numgen random mod 100 < {link.loss_percent} drop; }}\n"
            f"}}\n"
        )
        run("ip", "netns", "exec", where, "nft", "-f", "-", stdin=rules)


def unshape(netns: str, dev: str, *, drop_at: tuple[str, str] | None = None) -> None:
    """Lift any rate limit and loss :func:`shape` set on ``dev`` in ``netns`` (and at ``drop_at``)."""
    subprocess.run(
        ["ip", "netns", "exec", netns, "tc", "qdisc", "del", "dev", dev, "root"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    for where in (netns, *(() if drop_at is None else (drop_at[0],))):
        subprocess.run(
            ["ip", "netns", "exec", where, "nft", "delete", "table", "inet", LOSS_TABLE],
            capture_output=True,
            timeout=20,
            check=False,
        )


def qdisc_counts(netns: str, dev: str) -> tuple[int, int]:
    """(packets sent, packets dropped) by the root qdisc of ``dev`` since it was added (0, 0 without stats)."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "tc", "-s", "qdisc", "show", "dev", dev],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    ).stdout
    words = out.split()
    try:
        sent = int(words[words.index("Sent") + 3])
        dropped = int(words[words.index("(dropped") + 1].rstrip(","))
    except (ValueError, IndexError):
        return 0, 0
    return sent, dropped
