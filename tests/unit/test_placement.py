"""Which media node a hearing is placed on: two random choices in its courtroom's region, else any region."""

from __future__ import annotations

import random
from collections import Counter

from protocol.cluster import NodeRecord
from signaling.node_pool import choose_node


def node(node_id: str, region: str, load: float = 0.0, state: str = "up") -> NodeRecord:
    """A heartbeat record."""
    return NodeRecord.model_validate(
        {"id": node_id, "region": region, "state": state, "capacity_peers": 100, "load": load,
         "started_at": 1.0, "heartbeat_at": 2.0}
    )  # fmt: skip


def test_a_node_in_the_courtrooms_region_is_chosen() -> None:
    """Nodes of other regions are never chosen while one in the hearing's region is up."""
    nodes = [node("n-east", "east", 0.9), node("w1", "west", 0.0), node("w2", "west", 0.1)]
    for seed in range(50):
        chosen = choose_node(nodes, "east", random.Random(seed))
        assert chosen == (nodes[0], "region")


def test_the_less_loaded_of_two_random_choices_wins() -> None:
    """Of two sampled nodes the less loaded is taken: the most loaded node is never chosen, the least most often."""
    nodes = [node(f"n{i}", "east", load=i / 10) for i in range(4)]
    counts = Counter(choose_node(nodes, "east", random.Random(seed))[0].id for seed in range(400))  # type: ignore[index]
    assert counts["n3"] == 0
    assert counts["n0"] > counts["n1"] > counts["n2"] > 0


def test_no_node_in_the_region_falls_back_to_any_region() -> None:
    """A region without a node up (one draining) places on another region's node, reason fallback."""
    nodes = [node("e1", "east", state="draining"), node("w1", "west", 0.5)]
    assert choose_node(nodes, "east", random.Random(1)) == (nodes[1], "fallback")


def test_no_region_means_every_node_is_in_scope() -> None:
    """A courtroom without a region is placed on any node, as a placement in its region."""
    nodes = [node("w1", "west", 0.5)]
    assert choose_node(nodes, "", random.Random(1)) == (nodes[0], "region")


def test_no_node_up_is_no_placement() -> None:
    """Only draining nodes, or none: nothing to place on."""
    assert choose_node([node("e1", "east", state="draining")], "east", random.Random(1)) is None
    assert choose_node([], "east", random.Random(1)) is None
