"""One shard's connections on one event loop: a client for commands and one for blocking pops.

Commands (pushes, group operations, pops that do not wait) share a small pool; every batch of pushes is one
pipeline.  Blocking pops get their own pool so a reader waiting on an empty queue never holds up a send.  Both
pools are guarded by semaphores of the pools' size, so redis-py never raises ``MaxConnectionsError`` however many
coroutines call at once: the extra callers wait their turn (within ``timeout``).

Every driver failure becomes :class:`layers.BackendUnavailable` naming the shard (never its password).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from layers.errors import BackendUnavailable

from .hosts import HostSpec
from .scripts import Script

__all__ = ["Shard"]

T = TypeVar("T")
Client = Any  # redis.asyncio.Redis or RedisCluster: the calls we make exist on both

# Errors that mean "the server is not reachable or not serving right now" (a failover turns a master read-only).
_UNAVAILABLE = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, rex.BusyLoadingError,
                rex.ClusterDownError, rex.ClusterError, rex.TryAgainError, rex.MasterDownError, rex.SlotNotCoveredError,
                OSError, asyncio.TimeoutError)


class Shard:
    """The connections to one shard (a server, a Sentinel-managed master or a cluster) for one event loop."""

    def __init__(self, spec: HostSpec, timeout: float, max_connections: int) -> None:
        self.spec = spec
        self.timeout = timeout
        self.max_connections = max_connections
        self.commands: Client = _make_client(spec, timeout, max_connections, blocking=False)
        self._blocking: Client | None = None
        self._command_slots = asyncio.Semaphore(max_connections)
        self._blocking_slots = asyncio.Semaphore(max_connections)
        self._has_blmpop: bool | None = None  # learned on first use (BLMPOP needs Redis 7)

    @property
    def blocking(self) -> Client:
        if self._blocking is None:
            self._blocking = _make_client(self.spec, None, self.max_connections, blocking=True)
        return self._blocking

    # -- calls ---------------------------------------------------------------------------------------------

    async def guard(self, what: str, call: Callable[[], Awaitable[T]], limit: float | None = None) -> T:
        """Run ``call`` holding a command slot, failing with BackendUnavailable after ``limit`` seconds."""
        try:
            return await asyncio.wait_for(self._slotted(self._command_slots, call), limit or self.timeout)
        except _UNAVAILABLE as exc:
            raise self.unavailable(what, exc) from exc

    async def _slotted(self, slots: asyncio.Semaphore, call: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await call()

    def unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
        return BackendUnavailable(f"Redis {self.spec.label}: {what} failed: {reason}")

    async def execute(self, *args: Any) -> Any:
        return await self.guard(str(args[0]), lambda: self.commands.execute_command(*args))

    async def run_script(self, script: Script, key: str, *args: Any) -> Any:
        return (await self.run_scripts(script.name, [(script, key, args)]))[0]

    async def run_scripts(self, what: str, calls: Sequence[tuple[Script, str, Sequence[Any]]]) -> list[Any]:
        """Run scripts in one pipeline (one round trip per server), loading them first if the server lost them."""
        return await self.guard(what, lambda: self._pipeline(calls))

    async def _pipeline(self, calls: Sequence[tuple[Script, str, Sequence[Any]]]) -> list[Any]:
        if len(calls) == 1:
            script, key, args = calls[0]
            try:
                return [await self.commands.evalsha(script.sha, 1, key, *args)]
            except rex.NoScriptError:
                await self.commands.script_load(script.source)
                return [await self.commands.evalsha(script.sha, 1, key, *args)]
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

    async def _send_pipeline(self, calls: Iterable[tuple[Script, str, Sequence[Any]]]) -> list[Any]:
        pipe = self.commands.pipeline(transaction=False)
        for script, key, args in calls:
            pipe.execute_command("EVALSHA", script.sha, 1, key, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def blocking_pop(self, key: str, limit: int, timeout: float) -> list[bytes]:
        """Pop up to ``limit`` elements, waiting up to ``timeout`` for the first; on a connection of its own."""
        try:
            call = self._blmpop if self._has_blmpop is not False else self._blpop
            return await asyncio.wait_for(self._slotted(self._blocking_slots, lambda: call(key, limit, timeout)),
                                          timeout + self.timeout)
        except _UNAVAILABLE as exc:
            raise self.unavailable("pop", exc) from exc

    async def _blmpop(self, key: str, limit: int, timeout: float) -> list[bytes]:
        try:
            reply = await self._blocking_command("BLMPOP", timeout, 1, key, "LEFT", "COUNT", limit, key=key)
        except rex.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            self._has_blmpop = False
            return await self._blpop(key, limit, timeout)
        self._has_blmpop = True
        return list(reply[1]) if reply else []

    async def _blpop(self, key: str, limit: int, timeout: float) -> list[bytes]:
        reply = await self._blocking_command("BLPOP", key, timeout, key=key)
        return [reply[1]] if reply else []

    async def _blocking_command(self, *args: Any, key: str) -> Any:
        if isinstance(self.blocking, RedisCluster):
            await self.blocking.initialize()  # loads the slot map once; a no-op afterwards
            node = self.blocking.get_node_from_key(key)
            return await self.blocking.execute_command(*args, target_nodes=node)
        return await self.blocking.execute_command(*args)

    async def scan_delete(self, pattern: str) -> int:
        """Delete every key matching ``pattern`` with SCAN + UNLINK batches (never KEYS)."""
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

        return await self.guard("flush", delete_all, limit=max(self.timeout, 60.0))

    async def _unlink(self, keys: list[bytes]) -> int:
        if isinstance(self.commands, RedisCluster):  # one UNLINK per key: keys live in different slots
            pipe = self.commands.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("UNLINK", key)
            return sum(await pipe.execute())
        return int(await self.commands.unlink(*keys))

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def close(self) -> None:
        clients = [self.commands, self._blocking]
        self._blocking = None
        for client in clients:
            if client is None:
                continue
            try:
                if isinstance(client, RedisCluster):
                    await client.aclose()
                else:
                    await client.aclose(close_connection_pool=True)
            except Exception:  # closing a connection to a dead server must not fail close()
                pass

    def abandon(self) -> None:
        """Forget every connection without touching the (closed) event loop they belong to."""
        for client in (self.commands, self._blocking):
            if client is not None:
                for connection in _connections(client):
                    _drop_connection(connection)
        self._blocking = None


def _make_client(spec: HostSpec, timeout: float | None, max_connections: int, blocking: bool) -> Client:
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout if timeout is not None else 5.0,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),  # a retried push could be stored twice: the caller decides
        **spec.kwargs,
    }
    if spec.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in spec.nodes]
        return RedisCluster(startup_nodes=nodes, max_connections=max_connections, **options)
    if spec.kind == "sentinel":
        sentinel_kwargs = {"socket_timeout": 5.0, **spec.sentinel_kwargs}
        sentinel = Sentinel(spec.nodes, sentinel_kwargs=sentinel_kwargs, **options)  # type: ignore[no-untyped-call]
        return sentinel.master_for(str(spec.master_name), max_connections=max_connections)
    if spec.url is not None:
        pool = aioredis.ConnectionPool.from_url(spec.url, max_connections=max_connections, **options)
    else:
        pool = aioredis.ConnectionPool(max_connections=max_connections, **options)
    return aioredis.Redis(connection_pool=pool)


def _connections(client: Client) -> list[Any]:
    if isinstance(client, RedisCluster):
        found: list[Any] = []
        for node in client.nodes_manager.nodes_cache.values():
            found.extend(getattr(node, "_connections", []))
        return found
    pool = client.connection_pool
    return [*getattr(pool, "_available_connections", []), *getattr(pool, "_in_use_connections", [])]


def _drop_connection(connection: Any) -> None:
    """Close the socket under a connection whose event loop is gone, so nothing later touches that loop."""
    writer = getattr(connection, "_writer", None)
    if writer is None:
        return
    try:
        transport = writer.transport
        inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None) or transport
        sock = getattr(inner, "_sock", None)
        if sock is not None:
            sock.close()
            inner._sock = None  # the transport's finalizer must not close the descriptor a second time
    except Exception:  # best effort: the socket is closed by the garbage collector otherwise
        pass
    connection._writer = connection._reader = None
