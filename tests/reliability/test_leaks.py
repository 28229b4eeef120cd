"""Leaks: many channels used, then drained, leave nothing behind in the process or on the server.

N process-local channels (what WebSocket consumers use) each join a group, get a direct message and a group
message, are drained and leave their group; N/100 named channels get a message each and are drained.  Then the
layers' in-process maps are back to empty (``local_state_size()``) and the server holds nothing under the prefix
beyond the layer's fixed objects (``server_footprint()`` of the backend).

The default run uses 10k channels; the ``slow`` test does the full 100k (``LAYERS_LEAK_CHANNELS`` overrides).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

import pytest

from layers import BaseChannelLayer

from .conftest import Target, footprint, housekeeping

DEFAULT = int(os.environ.get("LAYERS_LEAK_CHANNELS", "10000"))
FULL = 100_000
GROUPS = 50
BATCH = 2000  # concurrent calls per step: pipelined sends, not 100k tasks at once


def named_channels(n: int) -> int:
    return max(1, n // 100)


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def _each(call: Any, items: Sequence[str]) -> None:
    for chunk in _chunks(items, BATCH):
        await asyncio.gather(*(call(i, item) for i, item in enumerate(chunk)))


async def _use_and_drain(sender: BaseChannelLayer, receiver: BaseChannelLayer, n: int) -> dict[str, float]:
    times: dict[str, float] = {}
    started = time.monotonic()
    channels = [await receiver.new_channel() for _ in range(n)]
    named = [f"leak.named.{i}" for i in range(named_channels(n))]

    async def join(i: int, channel: str) -> None:
        await receiver.group_add(f"leak{hash(channel) % GROUPS}", channel)

    async def send(i: int, channel: str) -> None:
        await sender.send(channel, {"direct": channel})

    async def take(i: int, channel: str) -> None:
        got = [await asyncio.wait_for(receiver.receive(channel), 60) for _ in range(2)]
        # Either order: the spec orders sends among themselves and group messages among themselves (AMQP keeps
        # group messages in a queue of their own, so a group message may overtake an earlier direct one).
        assert {"direct": channel} in got and any("group" in m for m in got), (channel, got)

    async def leave(i: int, channel: str) -> None:
        await receiver.group_discard(f"leak{hash(channel) % GROUPS}", channel)

    async def take_named(i: int, channel: str) -> None:
        assert await asyncio.wait_for(receiver.receive(channel), 60) == {"direct": channel}

    await _each(join, channels)
    times["group_add"] = time.monotonic() - started
    await _each(send, channels)
    for group in range(GROUPS):
        await sender.group_send(f"leak{group}", {"group": group})
    times["sends"] = time.monotonic() - started - sum(times.values())
    await _each(take, channels)
    times["receives"] = time.monotonic() - started - sum(times.values())
    await _each(leave, channels)
    await _each(send, named)
    await _each(take_named, named)
    times["total"] = time.monotonic() - started
    return times


async def _settled(layer: BaseChannelLayer, limit: float = 15.0) -> dict[str, Any]:
    """Local maps once every reader task noticed nobody waits any more (each finishes its current pop)."""
    deadline = time.monotonic() + limit
    while True:
        sizes = dict(layer.local_state_size())  # type: ignore[attr-defined]
        if not any(sizes.values()) or time.monotonic() > deadline:
            return sizes
        await asyncio.sleep(0.1)


def _leak_check(target: Target, n: int, record: Any) -> None:
    async def main() -> dict[str, Any]:
        options = {"capacity": 3 * n, "expiry": 120}
        sender, receiver = target.layer(**options), target.layer(**options)
        times = await _use_and_drain(sender, receiver, n)
        await housekeeping(receiver)
        local = [await _settled(sender), await _settled(receiver)]
        live = (await footprint(receiver, target.server))["server"]
        await sender.close()
        await receiver.close()
        checker = target.layer()  # a fresh instance looks at the server
        await housekeeping(checker)
        after_close = (await footprint(checker, target.server))["server"]
        assert not any(local[0].values()) and not any(local[1].values()), f"in-process maps not empty: {local}"
        # Live: the receiver; after close: the receiver's lingering AMQP queues and the checker's own.
        for when, seen, processes in (("while the processes live", live, 1), ("after they closed", after_close, 2)):
            fixed = target.fixed_footprint(named_channels(n), processes)
            leftover = {key: count for key, count in (seen or {}).items() if count > fixed.get(key, 0)}
            assert not leftover, f"left on the server {when} after draining {n} channels: {seen} (fixed: {fixed})"
        return {"channels": n, **{f"{k}_s": v for k, v in times.items()}, "server_live": live,
                "server_after_close": after_close}

    record("leaks", target.name, **asyncio.run(main()))


def test_channels_drained_leave_nothing(target: Target, record: Any) -> None:
    _leak_check(target, DEFAULT, record)


@pytest.mark.slow
def test_100k_channels_drained_leave_nothing(target: Target, record: Any) -> None:
    _leak_check(target, FULL, record)
