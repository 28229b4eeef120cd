"""Connections: bounded under concurrency, flush by SCAN, sync use through async_to_sync."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from asgiref.sync import async_to_sync

from layers_redis import RedisChannelLayer
from tests.redis.helpers import run
from tests.servers.redis import RedisServer


def test_100_concurrent_producers_never_exhaust_connections(private_redis: RedisServer) -> None:
    client = private_redis.client()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, int(client.info("clients")["connected_clients"]) - 1)  # minus this watcher
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        layer = RedisChannelLayer(hosts=[private_redis.url], capacity=100_000, max_connections=8)
        watcher = asyncio.create_task(watch())

        async def producer(p: int) -> None:
            for i in range(50):
                await layer.send("sink", {"p": p, "i": i})
                await layer.group_add(f"g{p % 10}", f"c{i}")  # uncoalesced calls too

        async def consumer() -> int:
            return len([await layer.receive("sink") for _ in range(5000)])

        results = await asyncio.gather(consumer(), *(producer(p) for p in range(100)))
        assert results[0] == 5000
        watcher.cancel()
        await layer.close()

    run(scenario())
    assert 0 < peak <= 2, f"{peak} connections at peak"  # one command link + one subscriber link
    assert int(client.info("clients")["connected_clients"]) == 1  # close() released them all


def test_flush_scans_never_keys(private_redis: RedisServer) -> None:
    client = private_redis.client()
    client.config_resetstat()

    async def scenario() -> None:
        layer = RedisChannelLayer(hosts=[private_redis.url], prefix="scan")
        for i in range(1200):
            await layer.send(f"c{i}", {"i": i})
        await layer.flush()
        await layer.close()

    run(scenario())
    stats = client.info("commandstats")
    assert stats["cmdstat_scan"]["calls"] >= 2  # 1200 keys take several SCAN pages
    assert "cmdstat_keys" not in stats
    assert client.dbsize() == 0


def test_repeated_async_to_sync_calls(private_redis: RedisServer) -> None:
    """Each async_to_sync call runs in a new event loop that is then closed: no 'Event loop is closed'."""
    layer = RedisChannelLayer(hosts=[private_redis.url])
    problems: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: problems.append(unraisable.exc_value)
    try:
        for i in range(5):
            async_to_sync(layer.send)("sync", {"i": i})
            assert async_to_sync(layer.receive)("sync") == {"i": i}
            async_to_sync(layer.group_add)("g", "sync")
            async_to_sync(layer.group_send)("g", {"g": i})
            assert async_to_sync(layer.receive)("sync") == {"g": i}
        import gc

        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert not [p for p in problems if "closed" in str(p)], problems
    async_to_sync(layer.flush)()
    async_to_sync(layer.close)()
