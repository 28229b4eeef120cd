"""A shard's connections for one event loop, and the errors they turn into.

Two kinds: :class:`~layers_redis.direct.DirectShard` (a server or a Sentinel-managed master: an auto-pipelined
command link, pushes handed to waiting readers over Pub/Sub) and :class:`~layers_redis.cluster.ClusterShard`
(Redis Cluster through ``redis.asyncio.RedisCluster``).  Both answer the same calls, listed in :class:`Shard`.
"""

from __future__ import annotations

import abc
import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from layers.backend import Feed
from layers.errors import (
    AccessDenied,
    AuthenticationFailed,
    BackendRefused,
    BackendUnavailable,
    DatabaseNotFound,
    LayerError,
    TLSVerificationFailed,
    caused_by,
)

from .hosts import HostSpec
from .scripts import Script

__all__ = ["UNAVAILABLE", "ScriptCall", "Shard", "connection_options", "refusal"]

ScriptCall = tuple[Script, Sequence[str], Sequence[Any]]  # script, keys, args

# Errors that mean "the server is not reachable or not serving right now" (a failover turns a master read-only).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, rex.BusyLoadingError, rex.ClusterDownError,
    rex.ClusterError, rex.TryAgainError, rex.MasterDownError, rex.SlotNotCoveredError, OSError,
    asyncio.TimeoutError)

# Error replies that mean the same (first word of the reply).
UNAVAILABLE_REPLIES = ("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")

# Error replies that retrying cannot heal (first word of the reply), and what they mean.
REFUSED_REPLIES: dict[str, tuple[type[BackendRefused], str]] = {
    "WRONGPASS": (AuthenticationFailed, "check the user name and password"),
    "NOAUTH": (AuthenticationFailed, "the server requires a password: put it in the URL"),
    "NOPERM": (AccessDenied, "the user lacks a permission the layer needs (ACL)"),
}


def refusal(label: str, what: str, error: BaseException) -> BackendRefused | None:
    """The permanent refusal ``error`` stands for (bad credentials, a missing permission or database, a server
    certificate that fails verification), or None when it may heal (refused connection, timeout, restart)."""
    cause = caused_by(error, (rex.AuthenticationError, rex.AuthenticationWrongNumberOfArgsError, rex.ResponseError,
                              ssl.SSLCertVerificationError))
    text = str(error if cause is None else cause)
    kind: type[BackendRefused]
    if isinstance(cause, ssl.SSLCertVerificationError):
        kind, hint = TLSVerificationFailed, "check ssl_ca_certs and the host name"
    elif isinstance(cause, (rex.AuthenticationError, rex.AuthenticationWrongNumberOfArgsError)):
        kind, hint = AuthenticationFailed, "check the user name and password"
    elif isinstance(cause, rex.NoPermissionError):
        kind, hint = AccessDenied, "the user lacks a permission the layer needs (ACL)"
    elif isinstance(cause, rex.ResponseError) and "DB index" in text:
        kind, hint = DatabaseNotFound, "the database number in the URL is beyond the server's 'databases'"
    elif text.split(" ", 1)[0] in REFUSED_REPLIES:  # an error reply read by our own link
        kind, hint = REFUSED_REPLIES[text.split(" ", 1)[0]]
    else:
        return None
    return kind(f"Redis {label}: {what} refused: {type(cause or error).__name__}: {text} ({hint})")


class Shard(abc.ABC):
    """The calls the backend makes on one shard."""

    #: Whether commands issued during one loop iteration already share one write (an auto-pipelined link); if
    #: not, the core should coalesce concurrent sends into one ``run_scripts`` pipeline.
    pipelines_concurrent_calls: bool = False

    def __init__(self, spec: HostSpec, timeout: float) -> None:
        self.spec = spec
        self.timeout = timeout

    def unavailable(self, what: str, exc: BaseException) -> LayerError:
        """The error for a failed call: ``BackendRefused`` when retrying cannot help, else ``BackendUnavailable``."""
        refused = refusal(self.spec.label, what, exc)
        if refused is not None:
            return refused
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
    async def fill(self, queue_key: str, readers_key: str, feed: Feed, credit: int, timeout: float) -> None:
        """Take up to ``credit`` more items of the queue into ``feed`` (:meth:`layers.backend.Backend.fill`)."""

    async def close_feed(self, queue_key: str) -> None:  # noqa: B027 - optional hook, empty by design
        """Withdraw whatever still asks for the queue's items (:meth:`layers.backend.Backend.close_feed`)."""

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

