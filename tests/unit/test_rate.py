"""The native bandwidth estimator (media/_rate.c) against aiortc's (aiortc/rate.py): the same packets, the same REMBs.

Both estimators are fed the same packet sequences: a camera through a link with a queue (at, below and above the
link's rate, so the detector goes through normal, overusing and underusing, and the rate control through every
state), pauses that empty the rate counter, 24-bit abs-send-time wrap-around, several SSRCs, reordered and
duplicated packets, and random input (arrival times that go back, any sizes). After every packet their results
and their whole state must be equal: floats bit for bit.
"""

from __future__ import annotations

import itertools
import random
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from aiortc.rate import RemoteBitrateEstimator

from media.aiortc_compat import native_estimator, rate_matches

try:
    from media import _rate
except ImportError:
    _rate = None  # type: ignore[assignment]
needs_native = pytest.mark.skipif(_rate is None, reason="the native estimator is not built here")

Packet = tuple[int, int, int, int]
"""arrival_time_ms, abs_send_time, payload_size, ssrc"""

NTP_MS = 3_973_000_000_000
"""An arrival time in aiortc's receiver clock (NTP milliseconds, 2025)."""


def python_snapshot(estimator: RemoteBitrateEstimator) -> dict[str, Any]:
    """aiortc's estimator's state, named as the native one's ``snapshot()``."""
    counter: Any = estimator.incoming_bitrate
    inter = estimator.inter_arrival
    kalman = estimator.estimator
    detector = estimator.detector
    control = estimator.rate_control
    return {
        "incoming_bitrate.total_count": counter._total.count,
        "incoming_bitrate.total_value": counter._total.value,
        "incoming_bitrate.origin_ms": counter._origin_ms,
        "incoming_bitrate_initialized": int(estimator.incoming_bitrate_initialized),
        "inter_arrival.current_group.last_timestamp": (
            inter.current_group.last_timestamp if inter.current_group is not None else None
        ),
        "inter_arrival.previous_group.last_timestamp": (
            inter.previous_group.last_timestamp if inter.previous_group is not None else None
        ),
        "estimator.E00": kalman.E[0][0],
        "estimator.E01": kalman.E[0][1],
        "estimator.E10": kalman.E[1][0],
        "estimator.E11": kalman.E[1][1],
        "estimator.num_of_deltas": kalman.num_of_deltas(),
        "estimator.offset": kalman.offset(),
        "estimator.previous_offset": kalman.previous_offset,
        "estimator.slope": kalman.slope,
        "estimator.avg_noise": kalman.avg_noise,
        "estimator.var_noise": kalman.var_noise,
        "detector.hypothesis": detector.hypothesis.value,
        "detector.overuse_counter": detector.overuse_counter,
        "detector.overuse_time": detector.overuse_time,
        "detector.threshold": detector.threshold,
        "detector.last_update_ms": detector.last_update_ms,
        "rate_control.avg_max_bitrate_kbps": control.avg_max_bitrate_kbps,
        "rate_control.var_max_bitrate_kbps": control.var_max_bitrate_kbps,
        "rate_control.current_bitrate": control.current_bitrate,
        "rate_control.current_bitrate_initialized": int(control.current_bitrate_initialized),
        "rate_control.first_estimated_throughput_time": control.first_estimated_throughput_time,
        "rate_control.last_change_ms": control.last_change_ms,
        "rate_control.near_max": int(control.near_max),
        "rate_control.latest_estimated_throughput": control.latest_estimated_throughput,
        "rate_control.state": control.state.value,
        "last_update_ms": estimator.last_update_ms,
    }


def same_state(python: dict[str, Any], native: dict[str, Any]) -> bool:
    """Equal, and every float equal bit for bit (``==`` and the same type apart from aiortc's int-valued floats)."""
    if python.keys() != native.keys():
        return False
    for key, value in python.items():
        other = native[key]
        if value is None or other is None:
            if value is not other:
                return False
        elif float(value).hex() != float(other).hex():
            return False
    return True


def replay(packets: list[Packet], check_every: int = 1) -> tuple[int, set[int], set[int]]:
    """Feed both estimators; fail at the first packet whose result or state differs. Returns how many REMBs were
    returned, and the detector hypotheses and rate-control states seen (to show what the sequence exercised)."""
    assert _rate is not None
    python = RemoteBitrateEstimator()
    native = _rate.RemoteBitrateEstimator()
    rembs = 0
    hypotheses: set[int] = set()
    states: set[int] = set()
    for index, (arrival, abs_send_time, size, ssrc) in enumerate(packets):
        expected = python.add(arrival_time_ms=arrival, abs_send_time=abs_send_time, payload_size=size, ssrc=ssrc)
        got = native.add(arrival, abs_send_time, size, ssrc)
        assert got == expected, f"packet {index}: {got} != {expected}"
        if expected is not None:
            rembs += 1
        assert list(native.ssrcs.items()) == list(python.ssrcs.items())
        if index % check_every == 0 or index == len(packets) - 1:
            snapshot = python_snapshot(python)
            assert same_state(snapshot, native.snapshot()), f"packet {index}: state differs"
            hypotheses.add(snapshot["detector.hypothesis"])
            states.add(snapshot["rate_control.state"])
    return rembs, hypotheses, states


def camera_through_link(
    seconds: float,
    send_kbps: Iterator[float] | float,
    link_kbps: float,
    start_ms: float = NTP_MS,
    seed: int = 1,
    ssrc: int = 0x1234,
    abs_start: float = 0.0,
) -> list[Packet]:
    """30 fps video packetized at 1200 bytes, sent at ``send_kbps`` (one value, or one per frame) through a link of
    ``link_kbps`` with an unbounded queue, with up to 1 ms of jitter: what a node's receiver sees."""
    rng = random.Random(seed)
    packets: list[Packet] = []
    link_free = 0.0
    t = 0.0
    while t < seconds * 1000:
        rate = send_kbps if isinstance(send_kbps, float) else next(send_kbps)
        frame_bytes = max(200, int(rate * 1000 / 8 / 30 * rng.uniform(0.7, 1.3)))
        sent = t
        while frame_bytes > 0:
            size = min(1200, frame_bytes)
            frame_bytes -= size
            link_free = max(link_free, sent) + size * 8 / link_kbps
            abs_send_time = int(((abs_start + sent) / 1000) * (1 << 18)) & 0xFFFFFF
            arrival = int(start_ms + link_free + rng.uniform(0, 1))
            packets.append((arrival, abs_send_time, size, ssrc))
            sent += 0.1  # the sender's pacing within a frame
        t += 1000 / 30
    packets.sort(key=lambda p: p[0])
    return packets


@needs_native
def test_a_steady_camera_below_its_link_gives_the_same_rembs() -> None:
    rembs, hypotheses, states = replay(camera_through_link(20, 1000.0, 3000.0))
    assert rembs >= 30  # one every 0.5 s once the first 3 s are over
    assert hypotheses == {0}
    assert 1 in states  # increasing


@needs_native
def test_a_camera_above_its_link_overuses_and_both_decrease_alike() -> None:
    def ramp() -> Iterator[float]:
        rate = 300.0
        while True:
            yield rate
            rate = min(rate * 1.01, 4000.0)

    packets = camera_through_link(40, ramp(), 1500.0, seed=2)
    rembs, hypotheses, states = replay(packets)
    assert 2 in hypotheses  # overusing seen
    assert states >= {0, 1}  # held after each decrease, then increasing
    assert rembs >= 40


@needs_native
def test_a_draining_queue_underuses_and_pauses_empty_the_counter() -> None:
    def burst_then_quiet() -> Iterator[float]:
        for frame in itertools.count():
            yield 3000.0 if frame < 150 else 300.0

    queue = camera_through_link(14, burst_then_quiet(), 1500.0, seed=3)  # a queue builds for 5 s, then drains
    # a queue drained faster than it was sent into: each frame arrives 0.7 frame periods after the last
    start = queue[-1][0] + 40
    for frame in range(200):
        sent = frame * 1000 / 30
        arrival = start + (sent if frame < 60 else 2000 + (sent - 2000) * 0.7)
        for part in range(4):
            abs_send_time = int((14 + (sent + part * 0.1) / 1000) * (1 << 18)) & 0xFFFFFF
            queue.append((int(arrival + part * 0.3), abs_send_time, 1000, 0x1234))
    # a pause of 2.5 s (the counter empties and is reset), then of 2 hours (erased at once)
    later = camera_through_link(4, 800.0, 3000.0, start_ms=queue[-1][0] + 2500, seed=5, abs_start=24000)
    much_later = camera_through_link(4, 800.0, 3000.0, start_ms=later[-1][0] + 7_200_000, seed=6, abs_start=40000)
    rembs, hypotheses, states = replay(queue + later + much_later)
    assert rembs > 0
    assert hypotheses >= {0, 1, 2}
    assert states >= {0, 1}


@needs_native
def test_abs_send_time_wraps_and_ssrcs_are_kept_in_order_of_arrival() -> None:
    # abs-send-time is 6.18 bits of seconds: it wraps every 64 s; start 2 s before it does
    a = camera_through_link(8, 900.0, 5000.0, seed=7, ssrc=111, abs_start=62_000)
    b = camera_through_link(8, 150.0, 5000.0, seed=8, ssrc=222, abs_start=62_000)
    rembs, _, _ = replay(sorted(a + b, key=lambda p: p[0]))
    assert rembs > 0


@needs_native
def test_reordered_duplicated_and_random_packets_give_the_same_results() -> None:
    rng = random.Random(9)
    packets = camera_through_link(10, 1200.0, 2000.0, seed=10)
    shuffled = list(packets)
    for i in range(0, len(shuffled) - 3, 7):  # local reordering and duplicates, as on a lossy path with resends
        shuffled[i], shuffled[i + 2] = shuffled[i + 2], shuffled[i]
        shuffled.insert(i + 3, shuffled[i])
    replay(shuffled)
    noise: list[Packet] = []
    arrival = NTP_MS
    for _ in range(20_000):
        arrival += rng.choice([0, 0, 1, 2, 5, 30, -3, 400, 1500])
        noise.append(
            (arrival, rng.randrange(1 << 24), rng.choice([0, 1, 60, 1200, rng.randrange(70_000)]), rng.randrange(4))
        )
    replay(noise, check_every=7)


@needs_native
def test_it_refuses_what_aiortc_never_passes_and_takes_keywords() -> None:
    assert _rate is not None
    native = _rate.RemoteBitrateEstimator()
    with pytest.raises(ValueError, match="24-bit"):
        native.add(NTP_MS, 1 << 24, 100, 1)
    with pytest.raises(TypeError):
        native.add(NTP_MS, 5, 100)  # type: ignore[call-arg]
    assert native.add(arrival_time_ms=NTP_MS, abs_send_time=5, payload_size=100, ssrc=1) is None
    assert list(native.ssrcs) == [1]


def test_the_native_estimator_stands_in_only_for_the_rate_module_it_copies() -> None:
    """Where aiortc's rate.py is the copied one (and the module is built), receivers get the native estimator."""
    estimator = native_estimator()
    if _rate is None or not rate_matches():
        assert estimator is None
    else:
        assert type(estimator).__name__ == "RemoteBitrateEstimator"
        assert type(estimator).__module__ == "media._rate"


def test_the_native_estimator_is_built_where_a_c_compiler_is() -> None:
    """An install on a machine with a C compiler (as CI's) has the native estimator."""
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    assert _rate is not None
    assert rate_matches()
