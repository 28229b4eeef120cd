"""A 3-node RabbitMQ cluster: the conformance suite with instances on different nodes, and a node killed under
traffic.

The layer's queues are classic, non-durable and not mirrored, declared by whichever connection uses them first,
so each lives on the node that connection was on (RabbitMQ's default ``client-local`` placement).  A node that
dies takes its queues and everything in them; the cluster's exchanges (the groups exchange) survive on the other
nodes.  The failover tests say exactly which queues were on the dead node and what the layer lost with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from layers import BackendUnavailable
from layers_amqp import AMQPChannelLayer
from spec import ConformanceSuite
from tests.servers.amqp import RabbitCluster, RabbitNode, rabbitmq_available

from .traffic import Stream, check, run_failover

TIMEOUT = 2.0


def _cluster() -> Iterator[RabbitCluster]:
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed")
    cluster = RabbitCluster(3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


conformance_cluster = pytest.fixture(scope="module", name="conformance_cluster")(_cluster)


def _urls(cluster: RabbitCluster, first: int) -> list[str]:
    """Every node's URL, starting with node ``first``: the layer connects there and moves on in this order."""
    nodes = cluster.nodes[first:] + cluster.nodes[:first]
    return [node.url for node in nodes]


class TestRabbitClusterConformance(ConformanceSuite):
    """Each layer instance the suite makes connects to the next node: sender and receiver sit on different nodes,
    and a second OS process (R-MULTI-5) on yet another."""

    spec_knobs: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def layer_factory(self, conformance_cluster: RabbitCluster) -> Any:
        cluster = conformance_cluster
        other = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes[2:] + cluster.nodes[:2])
        type(self).spec_knobs = {"process_target": f"amqp://guest:guest@{other}/%2F?prefix=spec"}
        turn = itertools.count()
        return lambda **overrides: AMQPChannelLayer(_urls(cluster, next(turn) % 3),
                                                    **{"prefix": "spec", **overrides})


rabbit_cluster = pytest.fixture(name="rabbit_cluster")(_cluster)  # a fresh cluster for each node it kills


def _queues_by_node(node: RabbitNode, prefix: str) -> dict[str, str]:
    """Queue name -> the node it lives on (from the queue process id, ``<node.1.2.3>``)."""
    listing = node.ctl("-q", "list_queues", "name", "pid", "--no-table-headers")
    rows = [line.split("\t") for line in listing.splitlines() if line.startswith(prefix + ":")]
    return {row[0]: row[1].strip("<>").rsplit(".", 3)[0] for row in rows}


def _kill(cluster: RabbitCluster, victim: RabbitNode, prefix: str,
          placement: dict[str, str]) -> Callable[[], tuple[float, float]]:
    """Note where each queue lives, kill ``victim``; the cluster has recovered once the surviving nodes no longer
    count it as running."""
    def fault() -> tuple[float, float]:
        survivor = next(node for node in cluster.nodes if node is not victim)
        placement.update(_queues_by_node(survivor, prefix))
        killed_at = time.monotonic()
        victim.kill()
        while victim.nodename in cluster.running(survivor):
            assert time.monotonic() - killed_at < 60, "the cluster still counts the killed node as running"
            time.sleep(0.05)
        return killed_at, time.monotonic()

    return fault


@pytest.mark.parametrize("victim_role", ["connected-node", "queue-node"])
def test_node_killed_under_traffic(rabbit_cluster: RabbitCluster, prefix: str, victim_role: str,
                                   record: Callable[..., None]) -> None:
    """The consumer is connected to node 0, the producer to node 1.  A queue lives where it was first declared:
    the producer's sends come first, so the channel queues (process queue, group inbox, named channels) are on
    node 1; the consumer's group_add declares the member queue of a named channel (and the prefix's registry)
    on node 0.

    * ``connected-node``: node 0 dies: the consumer's connection goes, and with it the named channel's group
      membership; the consumer reconnects to node 1 and finds its queues there.
    * ``queue-node``: node 1 dies: the producer reconnects to node 2; the consumer keeps its connection but its
      queues and everything in them are gone (the broker cancels its consumers); both declare them again.
    """
    cluster = rabbit_cluster
    victim = cluster.nodes[0] if victim_role == "connected-node" else cluster.nodes[1]

    async def scenario() -> None:
        consumer = AMQPChannelLayer(_urls(cluster, 0), prefix=prefix, timeout=TIMEOUT)
        producer = AMQPChannelLayer(_urls(cluster, 1), prefix=prefix, timeout=TIMEOUT)
        process = [await consumer.new_channel() for _ in range(3)]
        members = [process[2], "named.member"]
        for name in [*process, "named.a", "named.b", *members]:  # the producer declares the channel queues
            await producer.send(name, {"stream": "warm-up", "seq": -1})
        for name in [*process, "named.a", "named.b", *members]:
            assert (await asyncio.wait_for(consumer.receive(name), 10))["seq"] == -1
        for member in members:
            await consumer.group_add("room", member)
        idle = [await consumer.new_channel(), "named.idle"]
        streams = [Stream(process[0], affected=True), Stream(process[1], affected=True),
                   Stream("named.a", affected=True), Stream("named.b", affected=True),
                   Stream("room", affected=True, group=True, members=members)]
        placement: dict[str, str] = {}

        def fault() -> tuple[float, float]:
            times = _kill(cluster, victim, prefix, placement)()
            on_victim = {name for name, node in placement.items() if node == victim.nodename}
            # A named channel's membership is a durable record queue that dead-letters into the channel's queue
            # by name: lost with the record's node, not with the channel queue's (which is declared again).  A
            # process's memberships are bindings of its process queue, made again whenever the owner declares
            # that queue again (after a reconnection, or when it vanished under a connection that stayed up).
            streams[-1].lost_members = {m for m in members if f"{prefix}::member:room:{m}" in on_victim}
            return times

        report = await run_failover(producer, consumer, streams, idle, fault, TIMEOUT, warmup=1.5)
        on_victim = sorted(name[len(prefix):] for name, node in placement.items() if node == victim.nodename)
        room = streams[-1]
        after_kill = {seq for seq, start, _end in room.sent if start >= report.killed_at}
        membership_losses = {m: len(after_kill - {seq for seq, _at in room.received.get(m, [])})
                             for m in room.lost_members}
        figures = {**report.figures(), "queues_on_dead_node": on_victim,
                   "group_sends_missed_by_lost_members": membership_losses}
        record(f"rabbitmq 3-node cluster, {victim_role} killed", **figures)
        check(report)
        expected = {"named.member"} if victim_role == "connected-node" else set()
        assert room.lost_members == expected, (room.lost_members, on_victim)
        assert all(membership_losses.values()), figures  # gone: group sends after the kill missed them
        # Known gap: a new group_add restores a membership only where its durable record queue survived; a
        # record on the dead node cannot be declared again until that node is back (or forgotten).
        outcomes = {}
        for member in sorted(room.lost_members):
            try:
                await consumer.group_add("room", member)
                outcomes[member] = "restored"
            except BackendUnavailable as exc:
                outcomes[member] = f"BackendUnavailable: {str(exc)[:60]}"
        await producer.group_send("room", {"stream": "again", "seq": 0})
        for member in outcomes:
            delivered = False
            with contextlib.suppress(asyncio.TimeoutError):
                while not delivered:
                    delivered = (await asyncio.wait_for(consumer.receive(member), 3))["stream"] == "again"
            outcomes[member] += ", delivered" if delivered else ", not delivered"
        try:
            await consumer.flush()
            flushed = "ok"
        except Exception as exc:
            flushed = f"{type(exc).__name__}: {str(exc)[:60]}"
        record(f"rabbitmq 3-node cluster, {victim_role} killed: afterwards", group_add_again=outcomes,
               flush=flushed)
        for member, outcome in outcomes.items():  # restored where the membership record survived
            record_lost = f"::member:room:{member}" in on_victim
            assert outcome.startswith("restored") is (not record_lost), outcomes
            assert outcome.endswith(", delivered") is (not record_lost), outcomes
        await producer.send(process[0], {"stream": process[0], "seq": 10**6})
        assert (await asyncio.wait_for(consumer.receive(process[0]), 10))["seq"] == 10**6
        await producer.close()
        await consumer.close()

    asyncio.run(asyncio.wait_for(scenario(), 240))
