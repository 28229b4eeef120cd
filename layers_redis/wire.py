"""Two long-lived connections per server: an auto-pipelined command link and a subscriber link.

redis-py opens the connection (TLS, AUTH, SELECT, Sentinel master discovery); from then on this module speaks
RESP through hiredis on the raw streams, because per-command overhead is what limits a channel layer:

- :class:`CommandLink` writes every command issued during one event-loop iteration in ONE socket write and
  matches replies in order, so any number of concurrent callers share one connection (no pool to exhaust) and
  concurrent calls cost one round trip together.  A watchdog fails the link when the oldest unanswered command
  is older than ``timeout`` (a hung server never hangs callers).
- :class:`SubscriberLink` holds SUBSCRIBE channels on which the server pushes items to a waiting reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis

__all__ = ["CommandLink", "LinkError", "ReplyError", "SubscriberLink"]

ReplyError = hiredis.ReplyError


class LinkError(ConnectionError):
    """The connection failed, closed or timed out; what was in flight has an unknown outcome."""


class _Link:
    """A connection made by a redis-py pool, read by our own task through hiredis."""

    def __init__(self, pool: aioredis.ConnectionPool, timeout: float, label: str) -> None:
        self.pool = pool
        self.timeout = timeout
        self.label = label
        self._conn: Any = None
        self._connecting: asyncio.Task[Any] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._parser = hiredis.Reader()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def connect(self) -> None:
        if self._conn is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> None:
        conn = self.pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await asyncio.wait_for(conn.connect(), self.timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            if isinstance(exc, asyncio.TimeoutError):
                raise LinkError(f"connecting to {self.label} timed out") from exc
            raise
        self._conn = conn
        self._parser = hiredis.Reader()
        self._reader_task = asyncio.ensure_future(self._read_loop(conn))

    async def _read_loop(self, conn: Any) -> None:
        error: BaseException = LinkError(f"{self.label} closed the connection")
        try:
            while True:
                data = await conn._reader.read(65536)
                if not data:
                    break
                self._parser.feed(data)
                while True:
                    reply = self._parser.gets()
                    if reply is False:
                        break
                    self.on_reply(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = LinkError(f"reading from {self.label} failed: {type(exc).__name__}: {exc}")
        if self._conn is conn:
            self.fail(error)

    def write(self, payload: bytes) -> None:
        self._conn._writer.write(payload)

    def on_reply(self, reply: Any) -> None:
        raise NotImplementedError

    def fail(self, error: BaseException) -> None:
        """Drop the connection; subclasses also fail what waited on it."""
        conn, self._conn = self._conn, None
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn._writer.transport.abort()
            conn._reader = conn._writer = None

    async def close(self) -> None:
        self.fail(LinkError(f"the link to {self.label} was closed"))

    def abandon(self) -> None:
        """The loop is gone: close the socket without the loop, forget everything."""
        conn, self._conn = self._conn, None
        self._reader_task = self._connecting = None
        if conn is not None and conn._writer is not None:
            transport = conn._writer.transport
            inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None) or transport
            sock = getattr(inner, "_sock", None)
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.close()
                    inner._sock = None  # the transport's finalizer must not close the descriptor again
            conn._reader = conn._writer = None


class CommandLink(_Link):
    """Auto-pipelined commands on one connection: one write per loop iteration, replies matched in order."""

    def __init__(self, pool: aioredis.ConnectionPool, timeout: float, label: str) -> None:
        super().__init__(pool, timeout, label)
        self._batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._in_flight: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._connect_task: asyncio.Future[None] | None = None

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Queue a command; the future resolves to its reply (a ReplyError instance for an error reply)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._batch:
            loop.call_soon(self._flush_later)
        self._batch.append((args, future))
        return future

    def _flush_later(self) -> None:
        # One more loop iteration before writing: a receiver re-arming right after a delivery and the next send
        # of a producer then usually share one write (measured: 1.7 -> 1.0 writes per message send+receive).
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if not self._batch:
            return
        if self._conn is None:
            if self._connecting is None and self._connect_task is None:
                self._connect_task = asyncio.ensure_future(self._connect_then_flush())
            return
        batch, self._batch = self._batch, []
        now = time.monotonic()
        payload = b"".join(hiredis.pack_command(args) for args, _ in batch)
        self._in_flight.extend((now, future) for _, future in batch)
        try:
            self.write(payload)
        except Exception as exc:
            self.fail(LinkError(f"writing to {self.label} failed: {exc}"))
            return
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout, self._check_timeout)

    async def _connect_then_flush(self) -> None:
        try:
            await self.connect()
        except Exception as exc:
            self._connect_task = None
            batch, self._batch = self._batch, []
            error = exc if isinstance(exc, LinkError) else LinkError(
                f"cannot connect to {self.label}: {type(exc).__name__}: {exc}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self._connect_task = None
        self._flush()

    def _check_timeout(self) -> None:
        self._watchdog = None
        if not self._in_flight:
            return
        oldest = self._in_flight[0][0]
        if time.monotonic() - oldest >= self.timeout:
            self.fail(LinkError(f"{self.label} did not answer within {self.timeout}s"))
        else:
            self._watchdog = asyncio.get_running_loop().call_later(oldest + self.timeout - time.monotonic(),
                                                                   self._check_timeout)

    def on_reply(self, reply: Any) -> None:
        _, future = self._in_flight.popleft()
        if not future.done():
            future.set_result(reply)

    def fail(self, error: BaseException) -> None:
        super().fail(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting = [future for _, future in self._in_flight]
        self._in_flight.clear()
        if self._conn is None and self._connecting is None:
            waiting += [future for _, future in self._batch]
            self._batch = []
        for future in waiting:
            if not future.done():
                future.set_exception(error)


class SubscriberLink(_Link):
    """SUBSCRIBE channels; ``deliver(channel, data)`` is called for each message, ``lost()`` when the link dies."""

    def __init__(self, pool: aioredis.ConnectionPool, timeout: float, label: str,
                 deliver: Callable[[bytes, bytes], None], lost: Callable[[], None]) -> None:
        super().__init__(pool, timeout, label)
        self.deliver = deliver
        self.lost = lost
        self.channels: set[bytes] = set()
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}

    async def subscribe(self, channel: bytes) -> None:
        if channel in self.channels and self.connected:
            return
        await self.connect()
        future = self._confirmations.get(channel)
        if future is None:
            future = self._confirmations[channel] = asyncio.get_running_loop().create_future()
            self.write(hiredis.pack_command(("SUBSCRIBE", channel)))  # type: ignore[arg-type]
        await asyncio.wait_for(asyncio.shield(future), self.timeout)

    async def unsubscribe_all(self) -> None:
        """UNSUBSCRIBE and wait for the confirmation: every message published before it has then arrived."""
        if not self.connected or not self.channels:
            return
        future = self._confirmations[b""] = asyncio.get_running_loop().create_future()
        self.write(hiredis.pack_command(("UNSUBSCRIBE",)))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(future), self.timeout)

    def on_reply(self, reply: Any) -> None:
        kind = reply[0]
        if kind == b"message":
            self.deliver(reply[1], reply[2])
        elif kind == b"subscribe":
            self.channels.add(reply[1])
            self._confirm(reply[1])
        elif kind == b"unsubscribe":
            self.channels.discard(reply[1])
            if reply[2] == 0:
                self._confirm(b"")

    def _confirm(self, channel: bytes) -> None:
        future = self._confirmations.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(None)

    def fail(self, error: BaseException) -> None:
        had = self.connected
        super().fail(error)
        self.channels.clear()
        confirmations, self._confirmations = self._confirmations, {}
        for future in confirmations.values():
            if not future.done():
                future.set_exception(error)
        if had:
            self.lost()
