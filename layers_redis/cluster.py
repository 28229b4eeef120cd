"""Redis Cluster shards through ``redis.asyncio.RedisCluster``.

Every script touches one queue and its readers list, whose keys share the hash tag ``{queue}``, so each call runs
in one slot; a batch of pushes is one cluster pipeline (redis-py splits it per node).  Readers block with BLMPOP
(BLPOP before Redis 7) on a second client, so a waiting reader never holds up a send.  Semaphores of the pools'
size keep redis-py from ever raising ``MaxConnectionsError``: extra callers wait their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster

from layers.backend import Feed

from .connection import UNAVAILABLE, ScriptCall, Shard, connection_options
from .hosts import HostSpec
from .scripts import unframe
from .wire import close_without_loop

__all__ = ["ClusterShard"]

T = TypeVar("T")

# Pipeline results that mean the slot map may be stale (a master died, or its replica is taking over).
_STALE_TOPOLOGY = (rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError, rex.SlotNotCoveredError)
_REFRESH_EVERY = 0.1  # seconds: at most one slot-map refresh per interval, however many sends fail


class ClusterShard(Shard):
    def __init__(self, spec: HostSpec, timeout: float, max_connections: int) -> None:
        super().__init__(spec, timeout)
        self.max_connections = max_connections
        self.commands = self._client(timeout)
        self._blocking: RedisCluster | None = None
        self._command_slots = asyncio.Semaphore(max_connections)
        self._blocking_slots = asyncio.Semaphore(max_connections)
        self._has_blmpop: bool | None = None  # learned on first use (BLMPOP needs Redis 7)
        self._refreshed_at = 0.0

    def _client(self, timeout: float | None) -> RedisCluster:
        nodes = [ClusterNode(host, port) for host, port in self.spec.nodes]
        return RedisCluster(startup_nodes=nodes, max_connections=self.max_connections,
                            **connection_options(self.spec, timeout))

    @property
    def blocking(self) -> RedisCluster:
        if self._blocking is None:
            self._blocking = self._client(None)
        return self._blocking

    async def _guard(self, what: str, call: Callable[[], Awaitable[T]], limit: float | None = None) -> T:
        try:
            return await asyncio.wait_for(self._slotted(self._command_slots, call), limit or self.timeout)
        except UNAVAILABLE as exc:
            raise self.unavailable(what, exc) from exc

    @staticmethod
    async def _slotted(slots: asyncio.Semaphore, call: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await call()

    async def execute(self, *args: Any) -> Any:
        return await self._guard(str(args[0]), lambda: self.commands.execute_command(*args))

    async def run_scripts(self, what: str, calls: Sequence[ScriptCall]) -> list[Any]:
        return await self._guard(what, lambda: self._pipeline(calls))

    async def _pipeline(self, calls: Sequence[ScriptCall]) -> list[Any]:
        results = await self._send_pipeline(calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, rex.NoScriptError)]
        if missing:  # every EVALSHA of an unknown script failed without running: load and run just those
            for script in {calls[i][0] for i in missing}:
                await self.commands.script_load(script.source)
            retried = await self._send_pipeline([calls[i] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _send_pipeline(self, calls: Sequence[ScriptCall]) -> list[Any]:
        pipe = self.commands.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            results = list(await pipe.execute(raise_on_error=False))
        except _STALE_TOPOLOGY:
            await self._refresh_topology()
            raise
        if any(isinstance(result, _STALE_TOPOLOGY) for result in results):
            await self._refresh_topology()
        return results

    async def _refresh_topology(self) -> None:
        """Re-read the slot map.  redis-py does so after a single command fails on a connection, not after a
        pipeline does (without retries it neither re-reads nor marks the map stale): sends kept going to a dead
        master for good after its replica had taken over its slots."""
        now = asyncio.get_running_loop().time()
        if now - self._refreshed_at < _REFRESH_EVERY:
            return
        self._refreshed_at = now
        with contextlib.suppress(*UNAVAILABLE, rex.RedisClusterException):  # the next failed send tries again
            await asyncio.wait_for(self.commands.nodes_manager.initialize(), self.timeout)

    async def fill(self, queue_key: str, readers_key: str, feed: Feed, credit: int, timeout: float) -> None:
        elements = await self._pop(queue_key, credit, timeout)
        if elements:
            feed.deliver([unframe(element) for element in elements])

    async def _pop(self, queue_key: str, limit: int, timeout: float) -> list[bytes]:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout + self.timeout
        while True:
            call = self._blmpop if self._has_blmpop is not False else self._blpop
            try:
                return await asyncio.wait_for(
                    self._slotted(self._blocking_slots, functools.partial(call, queue_key, limit, max(timeout, 0.01))),
                    timeout + self.timeout)
            except _STALE_TOPOLOGY as exc:
                # The node is gone or the cluster is failing over: look again at a steady pace until the pop's
                # own time is up, instead of failing at once into the receive loop's growing back-off (which
                # left readers up to 1.6 s behind the cluster's recovery).
                if loop.time() + _REFRESH_EVERY >= give_up:
                    raise self.unavailable("pop", exc) from exc
                await asyncio.sleep(_REFRESH_EVERY)
            except UNAVAILABLE as exc:
                raise self.unavailable("pop", exc) from exc

    async def _blmpop(self, key: str, limit: int, timeout: float) -> list[bytes]:
        try:
            reply = await self._blocking_command(key, "BLMPOP", timeout, 1, key, "LEFT", "COUNT", limit)
        except rex.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            self._has_blmpop = False
            return await self._blpop(key, limit, timeout)
        self._has_blmpop = True
        return list(reply[1]) if reply else []

    async def _blpop(self, key: str, limit: int, timeout: float) -> list[bytes]:
        reply = await self._blocking_command(key, "BLPOP", key, timeout)
        return [reply[1]] if reply else []

    async def _blocking_command(self, key: str, *args: Any) -> Any:
        await self.blocking.initialize()  # loads the slot map once; a no-op afterwards
        node = self.blocking.get_node_from_key(key)
        return await self.blocking.execute_command(*args, target_nodes=node)

    async def _idempotent(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` (safe to repeat) once more, on a re-read slot map, if the first run met a dead node."""
        async def twice() -> T:
            try:
                return await call()
            except _STALE_TOPOLOGY:
                self._refreshed_at = 0.0
                await self._refresh_topology()
                return await call()

        return await self._guard(what, twice, limit=max(self.timeout, 60.0))

    async def scan_delete(self, pattern: str) -> int:
        async def delete_all() -> int:
            deleted, batch = 0, []
            async for key in self.commands.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self._unlink(batch)
                    batch = []
            if batch:
                deleted += await self._unlink(batch)
            return deleted

        return await self._idempotent("flush", delete_all)

    async def scan_keys(self, pattern: str) -> list[bytes]:
        async def scan_all() -> list[bytes]:
            return [key async for key in self.commands.scan_iter(match=pattern, count=1000)]

        return await self._idempotent("scan", scan_all)

    async def _unlink(self, keys: list[bytes]) -> int:
        pipe = self.commands.pipeline(transaction=False)
        for key in keys:  # one UNLINK per key: keys live in different slots
            pipe.execute_command("UNLINK", key)
        return sum(await pipe.execute())

    async def close(self) -> None:
        clients, self._blocking = [self.commands, self._blocking], None
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):  # closing a connection to a dead server must not fail
                    await client.aclose()

    def abandon(self) -> None:
        for client in (self.commands, self._blocking):
            if client is not None:
                for node in client.nodes_manager.nodes_cache.values():
                    for connection in getattr(node, "_connections", []):
                        _drop(connection)
        self._blocking = None


def _drop(connection: Any) -> None:
    writer = getattr(connection, "_writer", None)
    if writer is not None:
        with contextlib.suppress(Exception):  # best effort: the garbage collector closes it otherwise
            close_without_loop(writer.transport)
    connection._writer = connection._reader = None
