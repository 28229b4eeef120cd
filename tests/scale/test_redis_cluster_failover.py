"""Redis Cluster (3 masters + 3 replicas): a master is killed under traffic and its replica takes over.

The same two layer instances (a producer and a consumer, as two processes) keep running: sends to process and
named channels, group sends, receives pending since before the kill.  The master killed is the one holding the
consumer's process queue, and some named channels and one group live there too; the others live elsewhere and
must not notice.  The cluster's own recovery is the first moment the promoted replica accepts a write for the
dead master's slots; the layer must deliver again within 1 s of that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from layers.names import process_part
from layers_redis import RedisChannelLayer
from tests.servers.redis import RedisClusterWithReplicas, redis_available

from .traffic import Stream, check, run_failover

TIMEOUT = 1.0  # the layers' timeout option
LAG_LIMIT = 1.0  # seconds the layer may take beyond the cluster's own recovery


@pytest.fixture
def replicated_cluster() -> Iterator[RedisClusterWithReplicas]:
    if not redis_available():
        pytest.skip("redis-server/redis-cli are not installed")
    setup = RedisClusterWithReplicas().start()
    try:
        yield setup
    finally:
        setup.stop()


def _names(stem: str, count: int, on: Callable[[str], bool]) -> list[str]:
    found, i = [], 0
    while len(found) < count:
        if on(f"{stem}{i}"):
            found.append(f"{stem}{i}")
        i += 1
    return found


def _kill_and_wait(cluster: RedisClusterWithReplicas, victim_port: int, probe_key: str) -> Callable[[], Any]:
    def fault() -> tuple[float, float]:
        _id, replicas = cluster.topology()[victim_port]
        heir = cluster.node(replicas[0]).client(socket_timeout=0.2)
        killed_at = time.monotonic()
        cluster.node(victim_port).kill()
        while True:  # the replica answers MOVED until it is promoted
            try:
                heir.set(probe_key, "1")
                return killed_at, time.monotonic()
            except redis.RedisError:
                assert time.monotonic() - killed_at < 30, "the cluster did not fail over in 30 s"
                time.sleep(0.01)

    return fault


def test_master_killed_under_traffic(replicated_cluster: RedisClusterWithReplicas, prefix: str,
                                     record: Callable[..., None]) -> None:
    cluster = replicated_cluster

    async def scenario() -> None:
        producer = RedisChannelLayer(hosts=[cluster.url], prefix=prefix, timeout=TIMEOUT)
        consumer = RedisChannelLayer(hosts=[cluster.url], prefix=prefix, timeout=TIMEOUT)
        process = [await consumer.new_channel() for _ in range(3)]
        queue = process_part(process[0])
        assert queue is not None
        victim = cluster.master_of_slot(key_slot(queue.encode()))

        def on_victim(queue_name: str) -> bool:
            return cluster.master_of_slot(key_slot(queue_name.encode())) is victim

        def group_on_victim(group: str) -> bool:
            return cluster.master_of_slot(key_slot(f"{prefix}:g:{group}".encode())) is victim

        named_dead = _names("named.dead", 2, on_victim)
        named_alive = _names("named.alive", 2, lambda name: not on_victim(name))
        group_dead = _names("room.dead", 1, group_on_victim)[0]
        group_alive = _names("room.alive", 1, lambda g: not group_on_victim(g))[0]
        idle = [await consumer.new_channel(), _names("idle.named", 1, on_victim)[0]]
        members = [process[2], named_alive[1]]
        for group in (group_dead, group_alive):
            for member in members:
                await consumer.group_add(group, member)
        await asyncio.to_thread(cluster.wait_replicated)  # the memberships reached the replicas

        streams = [Stream(process[0], affected=True), Stream(process[1], affected=True),
                   *(Stream(name, affected=True) for name in named_dead),
                   Stream(named_alive[0], affected=False),
                   Stream(group_dead, affected=True, group=True, members=members),
                   Stream(group_alive, affected=True, group=True, members=members)]  # a member's queue dies
        fault = _kill_and_wait(cluster, victim.port, f"probe{{{queue}}}")
        report = await run_failover(producer, consumer, streams, idle, fault, TIMEOUT)
        figures = report.figures()
        record("redis-cluster master kill", **figures)
        print(figures)
        check(report)
        assert figures["lost_unaffected_streams"] == 0, figures
        assert figures["lag_behind_cluster_s"] <= LAG_LIMIT, figures
        # The same objects, not rebuilt, serve on: the new master took the dead one's slots.
        await producer.send(process[0], {"last": 1})
        assert await asyncio.wait_for(consumer.receive(process[0]), 5) == {"last": 1}
        await consumer.flush()
        await producer.close()
        await consumer.close()

    asyncio.run(asyncio.wait_for(scenario(), 180))
