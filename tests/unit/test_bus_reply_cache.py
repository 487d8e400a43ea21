"""The Redis bus responder's cache of recent replies: retries are answered from it, its memory stays bounded."""

from __future__ import annotations

from rooms.backends.redis_bus import _ReplyCache


async def test_a_finished_reply_is_kept_for_a_retry() -> None:
    """A retried request id finds the reply of its first run (so it is not run again)."""
    cache = _ReplyCache(size=4, max_bytes=1000)
    done = cache.start("r1")
    assert cache.get("r1") is done
    cache.finish("r1", done, b"reply")
    found = cache.get("r1")
    assert found is not None
    assert found.result() == b"reply"


async def test_the_cache_forgets_the_oldest_beyond_its_count_and_its_bytes() -> None:
    """However many or large the replies, the cache keeps at most its count and its byte budget."""
    cache = _ReplyCache(size=3, max_bytes=250)
    for i in range(10):
        done = cache.start(f"r{i}")
        cache.finish(f"r{i}", done, b"x" * 100)
    kept = [i for i in range(10) if cache.get(f"r{i}") is not None]
    assert kept == [8, 9]  # three would be 300 bytes, over the budget of 250
    for i in range(10, 20):
        cache.start(f"r{i}")  # still running: counted, not sized
    assert [i for i in range(20) if cache.get(f"r{i}") is not None] == [17, 18, 19]
