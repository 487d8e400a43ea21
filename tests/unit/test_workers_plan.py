"""How ``courtlink media-node --workers N`` shares one node's settings among its workers (pure, no process)."""

from __future__ import annotations

import re

import pytest

from courtlink.settings import ConfigError, Settings
from courtlink.workers import MAX_BACKOFF_SECONDS, backoff_seconds, plan_workers, worker_settings


def _settings(**media: object) -> Settings:
    return Settings.model_validate({"media": media, "redis_url": "redis://127.0.0.1:6379/0"})


def test_the_udp_range_is_split_without_overlap_and_the_last_worker_takes_the_remainder() -> None:
    """Every port of the operator's range belongs to exactly one worker; none lies outside it."""
    plans = plan_workers(_settings(udp_port_min=40000, udp_port_max=40100), "media-north", 3)
    assert [p.udp_ports for p in plans] == [(40000, 40032), (40033, 40065), (40066, 40100)]
    assert [p.node_id for p in plans] == ["media-north-w0", "media-north-w1", "media-north-w2"]


def test_frame_ports_addresses_capacity_and_process_ids_are_per_worker() -> None:
    """Each worker listens on frame_port + k, advertises port + k, carries its share of the capacity and has a bus
    process id of its own; a worker's settings are the node's with these changed."""
    settings = _settings(frame_port=7400, frame_advertise="10.0.0.5:7400", capacity_peers=301).model_copy(
        update={"cluster": Settings().cluster.model_copy(update={"process_id": "media-north"})}
    )
    plans = plan_workers(settings, "n", 2)
    assert [(p.frame_port, p.frame_advertise, p.capacity_peers, p.process_id) for p in plans] == [
        (7400, "10.0.0.5:7400", 150, "media-north-w0"),
        (7401, "10.0.0.5:7401", 150, "media-north-w1"),
    ]
    worker = worker_settings(settings, plans[1])
    assert (worker.media.node_id, worker.media.frame_port, worker.cluster.process_id) == (
        "n-w1",
        7401,
        "media-north-w1",
    )
    assert (worker.media.udp_port_min, worker.media.udp_port_max) == (0, 0)  # no range: any port, as before
    assert worker.redis_url == settings.redis_url


def test_frame_port_zero_stays_any_port_for_every_worker() -> None:
    """frame_port 0 (any free port) is 0 for each worker, never 0 + k."""
    assert {p.frame_port for p in plan_workers(_settings(), "n", 4)} == {0}


@pytest.mark.parametrize(
    ("media", "count", "words"),
    [
        ({"udp_port_min": 40000, "udp_port_max": 40002}, 4, "3 ports) cannot be shared by 4 workers"),
        ({"frame_port": 65535}, 2, "goes beyond port 65535"),
        ({"frame_advertise": "10.0.0.5"}, 2, "must be host:port"),
        ({}, 0, "--workers must be between 1 and 64"),
    ],
)
def test_settings_that_cannot_be_shared_are_refused_with_a_reason(
    media: dict[str, object], count: int, words: str
) -> None:
    """A range smaller than the workers, frame ports beyond 65535, an advertised frame address without a port."""
    with pytest.raises(ConfigError, match=re.escape(words)):
        plan_workers(_settings(**media), "n", count)


def test_restarts_back_off_doubling_up_to_a_bound() -> None:
    """A worker that keeps dying is restarted after 0.5, 1, 2, 4 ... seconds, never more than the bound."""
    assert [backoff_seconds(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff_seconds(50) == MAX_BACKOFF_SECONDS
