"""Redis Cluster (3 masters) and Sentinel (master, replica, sentinel; with a failover), real processes."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from layers import ServerError
from layers_redis import RedisChannelLayer
from tests.redis.helpers import run
from tests.servers.redis import RedisCluster3, RedisSentinelSetup


async def _exercise(layer: RedisChannelLayer, other: RedisChannelLayer) -> None:
    """The main paths: named + process channels, batches, groups, flush."""
    channels = [await layer.new_channel() for _ in range(5)]
    for i in range(20):
        await other.send(f"named{i % 4}", {"i": i})
    assert [(await layer.receive(f"named{i % 4}"))["i"] for i in range(20)] == list(range(20))
    await asyncio.gather(*(other.send(ch, {"to": ch}) for ch in channels))
    assert [(await layer.receive(ch))["to"] for ch in channels] == channels
    for ch in [*channels, "named0"]:
        await layer.group_add("room", ch)
    await other.group_send("room", {"hello": 1})
    for ch in [*channels, "named0"]:
        assert await layer.receive(ch) == {"hello": 1}
    await layer.flush()


def test_cluster(cluster: RedisCluster3, prefix: str) -> None:
    async def scenario() -> None:
        layer = RedisChannelLayer(hosts=[cluster.url], prefix=prefix)
        other = RedisChannelLayer(hosts=[cluster.url], prefix=prefix)
        for i in range(30):  # spread over all three masters
            await other.send(f"spread{i}", {"i": i})
        per_node = [len(list(node.client().scan_iter(match=f"{prefix}:*"))) for node in cluster.nodes]
        assert sum(per_node) == 30 and all(per_node), per_node
        await _exercise(layer, other)
        assert [len(list(node.client().scan_iter(match=f"{prefix}:*"))) for node in cluster.nodes] == [0, 0, 0]
        await layer.close()
        await other.close()

    run(scenario())


def test_cluster_from_dict_config(cluster: RedisCluster3, prefix: str) -> None:
    node = cluster.nodes[1]

    async def scenario() -> None:
        layer = RedisChannelLayer(hosts=[{"cluster": True, "address": ("127.0.0.1", node.port)}], prefix=prefix)
        await layer.send("d", {"x": 1})
        assert await layer.receive("d") == {"x": 1}
        await layer.close()

    run(scenario())


def test_cluster_error_reply_is_a_server_error(cluster: RedisCluster3, prefix: str) -> None:
    """An error reply on a cluster (WRONGTYPE: the queue's key holds a string) is a ServerError, as on one server."""
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    client.set(f"{prefix}:q:{{wrong}}", b"x")

    async def scenario() -> None:
        layer = RedisChannelLayer(hosts=[cluster.url], prefix=prefix)
        with pytest.raises(ServerError, match="WRONGTYPE") as caught:
            await layer.send("wrong", {"x": 1})
        assert caught.value.__cause__ is not None
        await layer.flush()
        await layer.close()

    try:
        run(scenario())
    finally:
        client.close()


def test_sentinel_and_failover(sentinel: RedisSentinelSetup, prefix: str) -> None:
    async def scenario() -> None:
        layer = RedisChannelLayer(hosts=[sentinel.config], prefix=prefix, timeout=1.0)
        other = RedisChannelLayer(hosts=[sentinel.url], prefix=prefix, timeout=1.0)
        await _exercise(layer, other)
        me = await layer.new_channel()
        pending = asyncio.create_task(layer.receive(me))
        await layer.group_add("after", me)
        await asyncio.sleep(0.1)

        await asyncio.to_thread(sentinel.failover)
        # The layers follow the new master; calls may fail while the roles switch, never for long.
        deadline = time.monotonic() + 20
        while True:
            try:
                await other.send(me, {"after": "failover"})
                break
            except redis.RedisError as exc:  # must never leak: it is a bug if this triggers
                raise AssertionError(f"driver error leaked: {exc!r}") from exc
            except ConnectionError:
                assert time.monotonic() < deadline, "the layer did not recover after the failover"
                await asyncio.sleep(0.2)
        assert await asyncio.wait_for(pending, 15) == {"after": "failover"}
        await layer.group_add("after", me)  # lost with the old master? the new one has it now
        await other.group_send("after", {"group": 2})
        assert await asyncio.wait_for(layer.receive(me), 10) == {"group": 2}
        await layer.flush()
        await layer.close()
        await other.close()

    run(scenario(), timeout=90)
