"""A shard's connections for one event loop, and the errors they turn into.

Two kinds: :class:`~layers_redis.direct.DirectShard` (a server or a Sentinel-managed master: an auto-pipelined
command link, pushes handed to waiting readers over Pub/Sub) and :class:`~layers_redis.cluster.ClusterShard`
(Redis Cluster through ``redis.asyncio.RedisCluster``).  Both answer the same calls, listed in :class:`Shard`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from layers.errors import BackendUnavailable

from .hosts import HostSpec
from .scripts import Script

__all__ = ["UNAVAILABLE", "ScriptCall", "Shard", "connection_options", "make_shard"]

ScriptCall = tuple[Script, Sequence[str], Sequence[Any]]  # script, keys, args

# Errors that mean "the server is not reachable or not serving right now" (a failover turns a master read-only).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, rex.BusyLoadingError, rex.ClusterDownError,
    rex.ClusterError, rex.TryAgainError, rex.MasterDownError, rex.SlotNotCoveredError, OSError,
    asyncio.TimeoutError)

# Error replies that mean the same (first word of the reply).
UNAVAILABLE_REPLIES = ("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")


class Shard(abc.ABC):
    """The calls the backend makes on one shard."""

    #: Whether commands issued during one loop iteration already share one write (an auto-pipelined link); if
    #: not, the core should coalesce concurrent sends into one ``run_scripts`` pipeline.
    pipelines_concurrent_calls: bool = False

    def __init__(self, spec: HostSpec, timeout: float) -> None:
        self.spec = spec
        self.timeout = timeout

    def unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
        return BackendUnavailable(f"Redis {self.spec.label}: {what} failed: {reason}")

    @abc.abstractmethod
    async def run_scripts(self, what: str, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run the scripts in order, one round trip for all of them; load them first if the server lost them."""

    async def run_script(self, script: Script, keys: Sequence[str], *args: Any) -> Any:
        return (await self.run_scripts(script.name, [(script, keys, args)]))[0]

    @abc.abstractmethod
    async def execute(self, *args: Any) -> Any:
        """One plain command."""

    @abc.abstractmethod
    async def pop(self, queue_key: str, readers_key: str, limit: int, timeout: float) -> list[bytes]:
        """Up to ``limit`` framed elements of the queue, waiting up to ``timeout`` for the first."""

    @abc.abstractmethod
    async def scan_delete(self, pattern: str) -> int:
        """Delete every key matching ``pattern`` with SCAN + UNLINK batches (never KEYS)."""

    @abc.abstractmethod
    async def scan_keys(self, pattern: str) -> list[bytes]:
        """Every key matching ``pattern`` (SCAN, never KEYS); for leak checks and tools, not the hot path."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection (idempotent)."""

    @abc.abstractmethod
    def abandon(self) -> None:
        """Forget every connection without touching the (closed) event loop they belong to."""


def connection_options(spec: HostSpec, timeout: float | None) -> dict[str, Any]:
    """redis-py connection keyword arguments: our timeouts, no silent retries, RESP2, then the user's options."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout if timeout is not None else 5.0,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),  # a retried push could be stored twice: the caller decides
        "protocol": 2,
        **spec.kwargs,
    }


def make_shard(spec: HostSpec, timeout: float, max_connections: int) -> Shard:
    if spec.kind == "cluster":
        from .cluster import ClusterShard

        return ClusterShard(spec, timeout, max_connections)
    from .direct import DirectShard

    return DirectShard(spec, timeout)
