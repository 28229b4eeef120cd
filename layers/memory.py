"""The in-memory backend: the embedded default, for tests and single-process sites.

It runs the same core as the network backends (validation, serialization, capacity, expiry, receive buffers) and only
replaces the server with dicts in this process, so a message that would fail on Redis fails here too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

from .backend import Backend, Push
from .core import BackendChannelLayer

__all__ = ["InMemoryChannelLayer"]


class _Store:
    """The "server": queues of (deadline, item) and groups of channel -> membership deadline."""

    def __init__(self, sweep_every: float) -> None:
        self.queues: dict[str, deque[tuple[float, bytes]]] = {}
        self.groups: dict[str, dict[str, float]] = {}
        self.poppers: dict[str, list[asyncio.Future[None]]] = {}
        self._sweep_every = sweep_every
        self._next_sweep = time.time() + sweep_every

    def push(self, push: Push, now: float) -> bool:
        queue = self.queues.get(push.queue)
        if queue is None:
            queue = self.queues[push.queue] = deque()
        else:
            _drop_expired(queue, now)
        if len(queue) >= push.capacity:
            return False
        queue.append((push.deadline, push.item))
        self._wake(push.queue)
        return True

    def pop(self, name: str, limit: int, now: float) -> list[bytes]:
        queue = self.queues.get(name)
        if queue is None:
            return []
        _drop_expired(queue, now)
        items = [queue.popleft()[1] for _ in range(min(limit, len(queue)))]
        if not queue:
            del self.queues[name]
        return items

    def _wake(self, name: str) -> None:
        for future in self.poppers.pop(name, ()):
            if not future.done():
                loop = future.get_loop()
                if loop is _running_loop():
                    future.set_result(None)
                elif not loop.is_closed():
                    loop.call_soon_threadsafe(_resolve, future)

    def sweep(self, now: float) -> None:
        """Forget queues whose every item expired and groups whose every membership lapsed (no leaks)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        for name in [name for name, queue in self.queues.items() if queue and queue[-1][0] < now]:
            del self.queues[name]
        for group in list(self.groups):
            self.live_members(group, now)

    def live_members(self, group: str, now: float) -> list[str]:
        members = self.groups.get(group)
        if members is None:
            return []
        lapsed = [channel for channel, deadline in members.items() if deadline < now]
        for channel in lapsed:
            del members[channel]
        if not members:
            del self.groups[group]
        return list(members)


def _drop_expired(queue: deque[tuple[float, bytes]], now: float) -> None:
    # Deadlines in one queue only grow (one expiry per layer), so expired items are always at the head.
    while queue and queue[0][0] < now:
        queue.popleft()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _MemoryBackend(Backend):
    coalesce_pushes = False  # a push costs no round trip, so batching would only add latency
    # named_pop_limit stays None (one item per waiting receiver): items moved into the layer's local buffer would
    # stop counting toward the channel's capacity, so a full named channel would accept more (spec R-CAP-4).

    def __init__(self, store: _Store) -> None:
        self.store = store

    async def push(self, pushes: Sequence[Push]) -> list[bool]:
        now = time.time()
        self.store.sweep(now)
        return [self.store.push(push, now) for push in pushes]

    def pop_nowait(self, queue: str, limit: int) -> list[bytes] | None:
        return self.store.pop(queue, limit, time.time())

    async def ping(self) -> None:
        """The store is in this process: nothing to reach."""

    async def server_footprint(self) -> dict[str, int] | None:
        return {"queues": len(self.store.queues), "groups": len(self.store.groups)}

    async def pop(self, queue: str, limit: int, timeout: float) -> list[bytes]:
        items = self.store.pop(queue, limit, time.time())
        if items:
            return items
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.store.poppers.setdefault(queue, []).append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            poppers = self.store.poppers.get(queue)
            if poppers is not None and future in poppers:
                poppers.remove(future)
                if not poppers:
                    del self.store.poppers[queue]
        return self.store.pop(queue, limit, time.time())

    async def group_add(self, group: str, channel: str, deadline: float) -> None:
        self.store.groups.setdefault(group, {})[channel] = deadline

    async def group_discard(self, group: str, channel: str) -> None:
        members = self.store.groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self.store.groups[group]

    async def group_members(self, group: str) -> list[str]:
        return self.store.live_members(group, time.time())

    async def flush(self) -> None:
        self.store.queues.clear()
        self.store.groups.clear()

    async def close(self) -> None:
        pass


class InMemoryChannelLayer(BackendChannelLayer):
    """A channel layer inside one process.  Two instances share nothing, like two separate servers."""

    spec_knobs: ClassVar[dict[str, Any]] = {"shares_state": False, "min_expiry": 0.2}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._store = _Store(sweep_every=min(self.expiry, 60.0))

    def make_backend(self) -> Backend:
        return _MemoryBackend(self._store)

    def local_state_size(self) -> dict[str, int]:
        sizes = super().local_state_size()
        sizes.update(
            queues=len(self._store.queues), groups=len(self._store.groups), poppers=len(self._store.poppers)
        )
        return sizes
