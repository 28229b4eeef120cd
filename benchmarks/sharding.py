"""Sharding benchmark: throughput vs number of private Redis shards, key balance, keys moved on adding a shard.

    python -m benchmarks.sharding [--shards 1,2,4] [--messages 20000] [--json FILE] [--plot FILE.png]

Starts its own ``redis-server`` processes on free ports (nothing persisted) and stops them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from layers.bench import Result, Target, run_workload
from layers.bench.workloads import close_layer
from tests.servers.redis import RedisServer

WORKLOADS = ["many-channels", "producers-100", "group-1000"]


@dataclass
class ShardRun:
    shards: int
    rates: dict[str, float] = field(default_factory=dict)
    keys_per_shard: list[int] = field(default_factory=list)

    @property
    def balance(self) -> float:
        mean = statistics.mean(self.keys_per_shard) if self.keys_per_shard else 0
        return max(self.keys_per_shard) / mean if mean else 0.0


def _target(urls: list[str]) -> Target:
    from layers_redis import RedisChannelLayer

    return Target(f"redis x{len(urls)}", lambda **options: RedisChannelLayer(hosts=urls, **options), "",
                  cross_process=False)


async def many_channels(target: Target, count: int, channels: int = 64) -> Result:
    """One producer and one consumer per named channel, ``channels`` at once: load that sharding can spread."""
    layer = target.factory(capacity=count, expiry=300)
    per_channel = count // channels
    names = [f"bench.shard.{i}.{time.monotonic_ns()}" for i in range(channels)]

    async def produce(name: str) -> None:
        for i in range(per_channel):
            await layer.send(name, {"type": "bench", "n": i})

    async def consume(name: str) -> None:
        for _ in range(per_channel):
            await layer.receive(name)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(produce(n) for n in names), *(consume(n) for n in names))
        return Result("many-channels", target.name, per_channel * channels, time.perf_counter() - started)
    finally:
        await close_layer(layer)


async def keys_per_shard(target: Target, servers: list[RedisServer], names: int) -> list[int]:
    """Send one message to each of ``names`` named channels and count the keys each shard holds."""
    layer = target.factory(capacity=10, expiry=300)
    try:
        for start in range(0, names, 500):
            await asyncio.gather(*(layer.send(f"balance.{i}", {"n": i}) for i in range(start, start + 500)))
        return [server.client().dbsize() for server in servers]
    finally:
        await close_layer(layer)


def moved_fraction(shards: int, names: int = 100_000) -> float:
    from layers_redis.sharding import shard_of

    moved = sum(shard_of(f"name.{i}", shards) != shard_of(f"name.{i}", shards + 1) for i in range(names))
    return moved / names


def run(shard_counts: list[int], messages: int, rounds: int) -> list[ShardRun]:
    runs = []
    for count in shard_counts:
        servers = [RedisServer(name=f"bench-shard{i}").start() for i in range(count)]
        try:
            target = _target([s.url for s in servers])
            shard_run = ShardRun(count)
            for workload in WORKLOADS:
                best = 0.0
                for _ in range(rounds):
                    if workload == "many-channels":
                        result = asyncio.run(many_channels(target, messages))
                    else:
                        result = asyncio.run(run_workload(workload, target, messages))
                    if result.error:
                        raise RuntimeError(f"{workload} on {count} shards: {result.error}")
                    best = max(best, result.rate)
                shard_run.rates[workload] = best
            shard_run.keys_per_shard = asyncio.run(keys_per_shard(target, servers, 20_000))
            runs.append(shard_run)
        finally:
            for server in servers:
                server.stop()
    return runs


def plot(runs: list[ShardRun], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for workload in WORKLOADS:
        ax.plot([r.shards for r in runs], [r.rates[workload] for r in runs], marker="o", label=workload)
    ax.set_xlabel("Redis shards (private redis-server processes)")
    ax.set_ylabel("messages (deliveries) per second")
    ax.set_xticks([r.shards for r in runs])
    ax.set_title("channel-layers Redis: throughput vs shard count")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(runs: list[ShardRun]) -> str:
    lines = ["| shards | " + " | ".join(WORKLOADS) + " | keys per shard (max/mean) | moved when adding one |",
             "|---:|" + "---:|" * len(WORKLOADS) + "---:|---:|"]
    for r in runs:
        rates = " | ".join(f"{r.rates[w]:,.0f}" for w in WORKLOADS)
        lines.append(f"| {r.shards} | {rates} | {r.balance:.3f} | {moved_fraction(r.shards):.1%} "
                     f"(ideal {1 / (r.shards + 1):.1%}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    runs = run([int(n) for n in args.shards.split(",")], args.messages, args.rounds)
    table = markdown(runs)
    print(table)
    payload = {"runs": [{"shards": r.shards, "rates": r.rates, "keys_per_shard": r.keys_per_shard} for r in runs],
               "table": table}
    if args.json:
        with open(args.json, "w") as file:
            json.dump(payload, file, indent=2)
    if args.plot:
        plot(runs, args.plot)
    return payload


if __name__ == "__main__":
    main()
