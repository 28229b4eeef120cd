"""A worker process for the multi-process reliability tests: ``python -m tests.reliability._worker MODE URL INDEX ...``.

It builds its layer with ``layers.from_url(URL)`` (so it is a real separate process on the same server and
prefix) and prints one JSON line with what it saw.  Modes:

``named CHANNEL``: announce itself on ``ready``, then receive from CHANNEL until a ``{"stop": ...}`` message.
``groups SEED GROUPS CHANNELS OPS``: churn group_add/group_discard (and noise group_sends) on its own channels
concurrently, report the final memberships on ``done``, then receive on its channels until each gets ``end``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

import layers

LIMIT = 120.0  # seconds any single wait may take before the worker gives up (the parent then fails the test)


async def named(layer: Any, index: int, channel: str) -> dict[str, Any]:
    await layer.send("ready", {"worker": index})
    got: list[int] = []
    while True:
        message = await asyncio.wait_for(layer.receive(channel), LIMIT)
        if "stop" in message:
            return {"worker": index, "got": got}
        got.append(message["seq"])


async def groups(layer: Any, index: int, seed: int, n_groups: int, n_channels: int, n_ops: int) -> dict[str, Any]:
    rng = random.Random(f"{seed}-{index}")
    channels = [await layer.new_channel() for _ in range(n_channels)]
    channels += [f"churn.named.{index}.{i}" for i in range(max(1, n_channels // 4))]
    names = [f"churn{g}" for g in range(n_groups)]
    final: dict[str, set[str]] = {channel: set() for channel in channels}

    async def churn(channel: str, ops: int, rng: random.Random) -> None:
        """One channel's operations, in order (its final membership is the last operation per group)."""
        for _ in range(ops):
            group = rng.choice(names)
            action = rng.random()
            if action < 0.5:
                await layer.group_add(group, channel)
                final[channel].add(group)
            elif action < 0.9:
                await layer.group_discard(group, channel)
                final[channel].discard(group)
            else:
                await layer.group_send(group, {"noise": index})
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    per_channel = max(1, n_ops // len(channels))
    await asyncio.gather(*(churn(c, per_channel, random.Random(rng.random())) for c in channels))
    await layer.send("done", {"worker": index, "members": {c: sorted(g) for c, g in final.items()}})

    async def collect(channel: str) -> list[str]:
        finals = []
        while True:
            message = await asyncio.wait_for(layer.receive(channel), LIMIT)
            if "end" in message:
                return finals
            if "final" in message:
                finals.append(message["final"])

    received = await asyncio.gather(*(collect(c) for c in channels))
    return {"worker": index, "received": dict(zip(channels, received, strict=True))}


async def main(argv: list[str]) -> None:
    mode, url, index = argv[0], argv[1], int(argv[2])
    layer: Any = layers.from_url(url)
    try:
        if mode == "named":
            result = await named(layer, index, argv[3])
        elif mode == "groups":
            result = await groups(layer, index, *(int(a) for a in argv[3:7]))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        await layer.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
