"""The operating APIs' costs: ``group_size``/``group_channels`` of a big group, ``send_many`` against a loop of send.

    python -m benchmarks.operations [URL] [--members 10000] [--messages 100]

Works under a prefix of its own and flushes only that prefix at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import layers


async def _timed(call: Callable[[], Awaitable[Any]], times: int) -> tuple[float, float]:
    """(median, p90) seconds of ``times`` calls."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return statistics.median(seconds), seconds[int(len(seconds) * 0.9) - 1]


async def group_introspection(layer: Any, members: int) -> None:
    channels = [f"specific.p{i // 100}!c{i}" for i in range(members)]
    for start in range(0, members, 500):
        await asyncio.gather(*(layer.group_add("big", channel) for channel in channels[start:start + 500]))
    for name in ("group_size", "group_channels"):
        median, p90 = await _timed(lambda name=name: getattr(layer, name)("big"), 50)
        print(f"{name} of {members:,} members: median {median * 1e3:.2f} ms, p90 {p90 * 1e3:.2f} ms (50 calls)")


async def bulk_send(layer: Any, messages: int) -> None:
    local = await layer.new_channel()
    pairs = [(f"bulk.{i % 10}" if i % 2 else local, {"i": i}) for i in range(messages)]

    async def one_by_one() -> None:
        for channel, message in pairs:
            await layer.send(channel, message)

    loop_s, many_s = [], []
    for _ in range(30):  # alternating, each round on empty queues
        loop_s.append((await _timed(one_by_one, 1))[0])
        await layer.flush()
        many_s.append((await _timed(lambda: layer.send_many(pairs), 1))[0])
        await layer.flush()
    loop_m, many_m = statistics.median(loop_s), statistics.median(many_s)
    print(f"{messages} messages to 10 named + 1 local channel: loop of send {loop_m * 1e3:.2f} ms, "
          f"send_many {many_m * 1e3:.2f} ms: {loop_m / many_m:.1f}x (medians of 30 alternating rounds)")


async def main(url: str, members: int, messages: int) -> None:
    layer = layers.from_url(url, prefix=f"opsbench{uuid.uuid4().hex[:8]}", capacity=100_000)
    try:
        await group_introspection(layer, members)
        await bulk_send(layer, messages)
    finally:
        await layer.flush()
        await layer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.members, args.messages))
