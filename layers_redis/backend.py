"""The Redis backend: moves the core's items to and from Redis shards.

Keys: a queue is the list ``<prefix>:q:{<queue>}`` with its waiting readers in ``<prefix>:r:{<queue>}`` (the
same hash tag, so one script may touch both in a Redis Cluster), a group is the sorted set ``<prefix>:g:<group>``
(member -> membership deadline in ms).  Queues and groups are placed on shards by jump consistent hashing of their
name; a process queue (``specific.abc!``) is one queue, so every send to ``specific.abc!xyz`` and the receive for
it meet on the same shard by construction.  Every script touches one slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from layers.backend import Backend, Feed, Push, Unclaimed

from .cluster import ClusterShard
from .connection import ScriptCall, Shard
from .direct import DirectShard
from .hosts import HostSpec
from .scripts import GIVE_BACK, GROUP_ADD, GROUP_MEMBERS, PUSH, frame
from .sharding import shard_of

__all__ = ["RedisBackend"]

# Keys outlive their newest item (or membership) by this much, then expire on the server if nobody used them.
KEY_TTL_SLACK_MS = 10_000
# Items one GIVE_BACK call puts back (a Lua call unpacks a few thousand arguments at most).
GIVE_BACK_CHUNK = 1000


class RedisBackend(Backend):
    """The Redis backend for one event loop."""

    min_expiry = 0.1

    def __init__(self, hosts: Sequence[HostSpec], prefix: str, timeout: float, max_connections: int) -> None:
        self.shards: list[Shard] = [ClusterShard(spec, timeout, max_connections) if spec.kind == "cluster"
                                    else DirectShard(spec, timeout) for spec in hosts]
        # Servers reached through a command link batch concurrent sends by themselves: the core's coalescer would
        # only add a task and two loop iterations to each send (process send+receive 5.5k -> 7.2-8k msgs/s).
        # A Redis Cluster client sends each call as its own pipeline, so there the core coalesces (100 producers on
        # a 3-master cluster: 19.8k msgs/s coalesced, 7.1k not).
        self.coalesce_pushes = not all(shard.pipelines_concurrent_calls for shard in self.shards)
        self.prefix = prefix
        self._group_prefix = f"{prefix}:g:"
        self._key_cache: dict[str, tuple[str, str]] = {}

    def shard_for(self, name: str) -> Shard:
        return self.shards[shard_of(name, len(self.shards))]

    def queue_key(self, queue: str) -> str:
        return f"{self.prefix}:q:{{{queue}}}"

    def readers_key(self, queue: str) -> str:
        return f"{self.prefix}:r:{{{queue}}}"

    def _keys(self, queue: str) -> tuple[str, str]:
        """Both keys of a queue, remembered: a process sends to the same few queues over and over."""
        keys = self._key_cache.get(queue)
        if keys is None:
            if len(self._key_cache) >= 10_000:
                self._key_cache.clear()
            keys = self._key_cache[queue] = (self.queue_key(queue), self.readers_key(queue))
        return keys

    def group_key(self, group: str) -> str:
        return self._group_prefix + group

    # -- queues --------------------------------------------------------------------------------------------

    async def push(self, pushes: Sequence[Push]) -> list[bool]:
        now_ms = int(time.time() * 1000)
        shards = len(self.shards)
        calls: dict[int, list[ScriptCall]] = {}
        positions: dict[int, list[int]] = {}
        for position, push in enumerate(pushes):
            deadline_ms = int(push.deadline * 1000)
            args = (now_ms, push.capacity, b"%015d" % deadline_ms + push.item,  # scripts.frame, inlined
                    max(deadline_ms - now_ms, 0) + KEY_TTL_SLACK_MS)
            index = 0 if shards == 1 else shard_of(push.queue, shards)
            if index not in calls:
                calls[index], positions[index] = [], []
            calls[index].append((PUSH, self._keys(push.queue), args))
            positions[index].append(position)
        if shards == 1:
            return [result == 1 for result in await self.shards[0].run_scripts("send", calls[0])]
        stored = [False] * len(pushes)
        for index, results in await _gather({i: self.shards[i].run_scripts("send", c) for i, c in calls.items()}):
            for position, result in zip(positions[index], results, strict=True):
                stored[position] = result == 1
        return stored

    async def fill(self, feed: Feed, credit: int, timeout: float) -> None:
        await self.shard_for(feed.queue).fill(*self._keys(feed.queue), feed, credit, timeout)

    async def close_feed(self, queue: str) -> None:
        await self.shard_for(queue).close_feed(self.queue_key(queue))

    async def give_back(self, queue: str, items: Sequence[Unclaimed]) -> bool:
        if items:
            ttl_ms = max(int((max(item.deadline for item in items) - time.time()) * 1000), 0) + KEY_TTL_SLACK_MS
            elements = [frame(item.deadline, item.item) for item in reversed(items)]
            keys = (self.queue_key(queue),)
            # The chunks go in last first, in one round trip.
            await self.shard_for(queue).run_scripts("give_back", [
                (GIVE_BACK, keys, (ttl_ms, *elements[start:start + GIVE_BACK_CHUNK]))
                for start in range(0, len(elements), GIVE_BACK_CHUNK)])
        return True

    # -- groups --------------------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str, deadline: float) -> None:
        deadline_ms = int(deadline * 1000)
        ttl_ms = max(deadline_ms - int(time.time() * 1000), 0) + KEY_TTL_SLACK_MS
        await self.shard_for(group).run_script(GROUP_ADD, (self.group_key(group),), channel, deadline_ms, ttl_ms)

    async def group_discard(self, group: str, channel: str) -> None:
        await self.shard_for(group).execute("ZREM", self.group_key(group), channel)

    async def group_members(self, group: str) -> list[str]:
        now_ms = int(time.time() * 1000)
        members = await self.shard_for(group).run_script(GROUP_MEMBERS, (self.group_key(group),), now_ms)
        return [member.decode() for member in members]

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """PING on every shard, concurrently (on a cluster shard, where its client sends a key-less command)."""
        await asyncio.gather(*(shard.execute("PING") for shard in self.shards))

    async def server_footprint(self) -> dict[str, int] | None:
        """Keys under the prefix on every shard: queues, reader-token lists and groups (leak checks)."""
        kinds = {"q": "queues", "r": "readers", "g": "groups"}
        counts = dict.fromkeys(kinds.values(), 0)
        start = len(self.prefix.encode()) + 1
        for shard in self.shards:
            for key in await shard.scan_keys(_glob_escape(self.prefix) + ":[qgr]:*"):
                if self._owns(key):
                    counts[kinds[chr(key[start])]] += 1
        return counts

    def _owns(self, key: bytes) -> bool:
        """Whether a key matched by ``<prefix>:[qgr]:*`` is ours and not a layer's whose prefix extends ours with
        ':' (prefix ``a:q`` keeps ``a:q:q:{...}`` and ``a:q:g:...``, which the glob matches too).  Ours have
        ``{`` right after ``q:``/``r:`` and no ':' after ``g:`` (prefixes hold no '{', names no ':')."""
        rest = key[len(self.prefix.encode()) + 1:]
        kind, name = rest[:1], rest[2:]
        return name.startswith(b"{") if kind in (b"q", b"r") else b":" not in name

    async def flush(self) -> None:
        base = _glob_escape(self.prefix)
        for shard in self.shards:
            await shard.scan_delete(base + ":[qr]:{*")  # cannot match a longer prefix's keys (see _owns)
            groups = [key for key in await shard.scan_keys(base + ":g:*") if self._owns(key)]
            for start in range(0, len(groups), 1000):
                await asyncio.gather(*(shard.execute("UNLINK", key) for key in groups[start:start + 1000]))

    async def close(self) -> None:
        for shard in self.shards:
            await shard.close()

    def abandon(self) -> None:
        for shard in self.shards:
            shard.abandon()


async def _gather(calls: dict[int, Any]) -> list[tuple[int, Any]]:
    """Await per-shard calls concurrently (one round trip each, in parallel); a single shard needs no task."""
    if len(calls) == 1:
        ((index, call),) = calls.items()
        return [(index, await call)]
    results = await asyncio.gather(*calls.values())
    return list(zip(calls, results, strict=True))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
