"""Consistent hashing: balance, minimal movement, determinism, and sends/receives meeting on one shard."""

from __future__ import annotations

import subprocess
import sys

import pytest

from layers_redis import RedisChannelLayer
from layers_redis.sharding import jump_hash, shard_of, stable_hash
from tests.redis.helpers import run

NAMES = 100_000


@pytest.fixture(scope="module")
def keys() -> list[int]:
    # Realistic names: process queues as new_channel() makes them, and named channels.
    names = [f"specific.{i:012x}!" for i in range(NAMES // 2)] + [f"chat.room-{i}" for i in range(NAMES // 2)]
    return [stable_hash(name) for name in names]


@pytest.mark.parametrize("shards", range(2, 17))
def test_balance_and_movement(keys: list[int], shards: int) -> None:
    before = [jump_hash(key, shards) for key in keys]
    counts = [0] * shards
    for bucket in before:
        counts[bucket] += 1
    mean = len(keys) / shards
    assert max(counts) <= 1.10 * mean, f"most loaded shard has {max(counts)} names, mean {mean:.0f}"

    after = [jump_hash(key, shards + 1) for key in keys]
    moved = sum(a != b for a, b in zip(before, after, strict=True))
    assert moved <= 1.15 * len(keys) / (shards + 1), f"adding shard {shards + 1} moved {moved} names"
    # Only moves *to* the new shard: nothing reshuffles among the old ones.
    assert all(b in (a, shards) for a, b in zip(before, after, strict=True))


def test_stable_across_python_runs() -> None:
    """Never the salted built-in hash(): another interpreter with another hash seed agrees."""
    names = ["specific.abc!", "tasks", "chat"]
    code = ("from layers_redis.sharding import shard_of; "
            f"print([shard_of(n, 7) for n in {names!r}])")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}, cwd=".")
        assert out.stdout.strip() == str([shard_of(n, 7) for n in names])


def test_process_channels_meet_on_one_shard(shards3: list, prefix: str) -> None:
    """channels_redis #221 cannot happen: a send to specific.X!y lands where the owner of specific.X! reads."""
    hosts = [server.url for server in shards3]

    async def scenario() -> None:
        owner = RedisChannelLayer(hosts=hosts, prefix=prefix)
        sender = RedisChannelLayer(hosts=hosts, prefix=prefix)
        channels = [await owner.new_channel() for _ in range(30)]
        for i, channel in enumerate(channels):
            await sender.send(channel, {"i": i})
        got = [(await owner.receive(channel))["i"] for channel in channels]
        assert got == list(range(30))
        for i in range(30):  # named channels too, FIFO even though queues are spread
            await sender.send(f"work{i % 5}", {"i": i})
        got = [(await owner.receive(f"work{i % 5}"))["i"] for i in range(30)]
        assert got == list(range(30))
        await owner.flush()
        await owner.close()
        await sender.close()

    run(scenario())


def test_queues_spread_over_shards(shards3: list, prefix: str) -> None:
    hosts = [server.url for server in shards3]

    async def fill() -> None:
        layer = RedisChannelLayer(hosts=hosts, prefix=prefix)
        for i in range(60):
            await layer.send(f"spread{i}", {"i": i})
        await layer.close()

    run(fill())
    per_shard = [len(list(server.client().scan_iter(match=f"{prefix}:*"))) for server in shards3]
    assert sum(per_shard) == 60 and all(per_shard), per_shard
    expected = [0, 0, 0]
    for i in range(60):
        expected[shard_of(f"spread{i}", 3)] += 1
    assert per_shard == expected
    for server in shards3:
        for key in server.client().scan_iter(match=f"{prefix}:*"):
            server.client().delete(key)
