"""A channel layer with exactly the surface the Django Channels channel-layer spec asks for, and nothing more.

It is correct (per-channel FIFO, capacity, integer expiry and group expiry, groups, flush), subclasses
``channels.layers.BaseChannelLayer`` and uses its name checks, and has what this project's own layers add left
out on purpose: no ``close()``, no ``spec_knobs``, no ``prefix``, ``AssertionError`` for a non-dict message (as
Channels' own layer), no serializability or size checks.  The conformance suite must give it PASS with zero
failures: whatever it lacks is a tier above core or a capability shown as not applicable.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import string
import time
from collections import deque
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

__all__ = ["MinimalChannelLayer"]


class MessageTooLarge(Exception):
    pass


class MinimalChannelLayer(BaseChannelLayer):  # type: ignore[misc]  # channels is untyped
    extensions = ["groups", "flush"]
    ChannelFull = ChannelFull
    MessageTooLarge = MessageTooLarge

    def __init__(
        self, expiry: int = 60, group_expiry: int = 86400, capacity: int = 100,
        channel_capacity: dict[Any, int] | None = None,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.group_expiry = group_expiry
        self._client = "".join(random.choices(string.ascii_letters, k=12))
        # queue name (a named channel, or a process's non-local part) -> (expires at, channel, message)
        self._queues: dict[str, deque[tuple[float, str, dict[str, Any]]]] = {}
        # queue -> futures of the receives waiting on it (any event loop: async_to_sync makes a new one per call)
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._groups: dict[str, dict[str, float]] = {}

    def _queue_of(self, channel: str) -> str:
        return str(self.non_local_name(channel))

    def _live(self, queue: str) -> deque[tuple[float, str, dict[str, Any]]]:
        items = self._queues.setdefault(queue, deque())
        now = time.time()
        for item in [item for item in items if item[0] <= now]:
            items.remove(item)
        return items

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        queue = self._queue_of(channel)
        items = self._live(queue)
        if len(items) >= self.get_capacity(queue):
            raise self.ChannelFull(channel)
        items.append((time.time() + self.expiry, channel, _copy(message)))
        for waiter in self._waiters.pop(queue, set()):
            waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        queue = self._queue_of(channel)
        while True:
            items = self._live(queue)
            for item in items:
                if item[1] == channel:
                    items.remove(item)
                    return item[2]
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(queue, set()).add(waiter)
            try:
                await waiter
            finally:
                self._waiters.get(queue, set()).discard(waiter)

    async def new_channel(self, prefix: str = "specific") -> str:
        local = "".join(random.choices(string.ascii_letters, k=12))
        return f"{prefix}.{self._client}!{local}"

    async def flush(self) -> None:
        self._queues.clear()
        self._groups.clear()

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._groups.setdefault(group, {})[channel] = time.time() + self.group_expiry

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._groups.get(group, {}).pop(channel, None)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        now = time.time()
        for channel, expires in list(self._groups.get(group, {}).items()):
            if expires <= now:
                del self._groups[group][channel]
                continue
            with contextlib.suppress(self.ChannelFull):  # a full member misses this message (Channels spec)
                await self.send(channel, message)


def _copy(value: Any) -> Any:
    """The receiver's own copy; tuples become lists, as the Channels message format asks."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(item) for item in value]
    return copy.copy(value)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
