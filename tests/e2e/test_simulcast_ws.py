"""The `view` message through the public door: tile sizes reach the media node; bad ones are refused by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

pytest_plugins = ["tests.ws_fixtures"]


async def test_view_reaches_the_node_and_bad_views_are_refused(court: Court) -> None:
    """A seated judge's tile sizes reach its peer on the node; malformed views and views from the lobby get named
    errors, change nothing, and the socket stays."""
    b = await court.book(("judge", "defendant"))
    judge = await court.participant("judge", b.tokens["judge"], audio=False)
    await judge.start_media()
    defendant, _ = await court.join(b.tokens["defendant"])

    reply = await defendant.request("view", "pong", tiles=[{"mid": "1", "width": 320, "height": 180}])
    assert (reply["type"], reply["code"]) == ("error", "not_admitted")

    for tiles in (
        [{"mid": "1", "width": -1, "height": 180}],
        [{"mid": "1", "width": 99_999, "height": 180}],
        [{"mid": "1", "width": "320", "height": 180}],
        [{"mid": "", "width": 320, "height": 180}],
        [{"mid": "1", "width": 320}],
        [{"mid": "1", "width": 320, "height": 180, "zoom": 2}],
        [{"mid": str(i), "width": 1, "height": 1} for i in range(65)],
        "all of them",
    ):
        reply = await judge.client.request("view", "pong", tiles=tiles)
        assert (reply["type"], reply["code"]) == ("error", "invalid_message"), (tiles, reply)
    peer = court.node.peer(b.hearing_id, b.ids["judge"])
    assert peer is not None
    assert peer.tiles == {}

    await judge.client.send("view", id="v1", tiles=[{"mid": "3", "width": 1280, "height": 720}])
    assert (await judge.client.ping())["type"] == "pong"
    assert peer.tiles == {"3": (1280, 720)}
    assert not [m for m in judge.client.messages if m.get("type") == "error" and m.get("ref") == "v1"]
