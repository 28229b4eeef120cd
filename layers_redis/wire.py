"""Two long-lived connections per server: an auto-pipelined command link and a subscriber link.

redis-py opens the connection (TLS, AUTH, SELECT, Sentinel master discovery); from then on this module speaks
RESP through hiredis on the raw streams, because per-command overhead is what limits a channel layer:

- :class:`CommandLink` writes every command issued during one event-loop iteration in ONE socket write and
  matches replies in order, so any number of concurrent callers share one connection (no pool to exhaust) and
  concurrent calls cost one round trip together.  A watchdog fails the link when the oldest unanswered command
  is older than ``timeout`` (a hung server never hangs callers).
- :class:`SubscriberLink` holds SUBSCRIBE channels on which the server pushes items to a waiting reader.

Taking the transport over reads redis-py's private ``Connection._reader`` / ``_writer`` (see :data:`TAKEOVER`).
When they are not what this module expects, or ``LAYERS_PLAIN_DRIVERS`` names ``redis``, a link keeps the
connection redis-py opened and speaks through its public ``send_packed_command`` / ``read_response`` instead:
the same links (one write per loop iteration, replies matched in order, the watchdog), a slower transport.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.exceptions import RedisError

from layers.drivers import FastPath

__all__ = ["CommandLink", "LinkError", "ReplyError", "SubscriberLink", "close_without_loop"]

ReplyError = hiredis.ReplyError


#: The transport take-over: redis-py's private stream attributes, checked on the first connection of a process.
TAKEOVER = FastPath("redis", "redis", "direct transport take-over (redis.asyncio.Connection._reader/_writer)")


def takeover_missing(conn: Any) -> str | None:
    """What the take-over needs from a connected redis-py connection and it lacks (None: all there)."""
    writer, reader = getattr(conn, "_writer", None), getattr(conn, "_reader", None)
    if not isinstance(writer, asyncio.StreamWriter):
        return f"Connection._writer is {type(writer).__name__}, not an asyncio.StreamWriter"
    if not isinstance(reader, asyncio.StreamReader):
        return f"Connection._reader is {type(reader).__name__}, not an asyncio.StreamReader"
    if not isinstance(getattr(reader, "_buffer", None), (bytes, bytearray)):
        return "Connection._reader._buffer (the bytes read past the handshake)"
    transport = writer.transport
    lacking = [name for name in ("set_protocol", "is_reading", "resume_reading", "is_closing")
               if not callable(getattr(transport, name, None))]
    return f"transport.{', '.join(lacking)}" if lacking else None


# redis-py turns an error reply into an exception and drops its first word for the codes it knows; the links
# hand error replies on as hiredis ReplyError with the server's text, so the code is put back.
_REPLY_CODES: tuple[tuple[type[Exception], str], ...] = (
    (rex.NoScriptError, "NOSCRIPT"), (rex.ReadOnlyError, "READONLY"), (rex.BusyLoadingError, "LOADING"),
    (rex.NoPermissionError, "NOPERM"), (rex.ExecAbortError, "EXECABORT"), (rex.MasterDownError, "MASTERDOWN"),
    (rex.ClusterDownError, "CLUSTERDOWN"), (rex.TryAgainError, "TRYAGAIN"), (rex.AskError, "ASK"),
    (rex.MovedError, "MOVED"), (rex.ClusterCrossSlotError, "CROSSSLOT"))


def _reply_error(exc: Exception) -> hiredis.ReplyError:
    text = str(exc)
    if isinstance(exc, rex.AuthenticationError):
        code = "NOAUTH" if "required" in text.lower() else "WRONGPASS"
    else:
        code = next((code for kind, code in _REPLY_CODES if isinstance(exc, kind)), "")
    if not code:
        first = text.split(" ", 1)[0]
        code = "" if first.isupper() and len(first) > 1 else "ERR"  # an unknown code is kept, "ERR " dropped
    return hiredis.ReplyError(f"{code} {text}" if code else text)


class LinkError(ConnectionError):
    """The connection failed, closed or timed out; what was in flight has an unknown outcome."""


class _Protocol(asyncio.Protocol):
    """Takes over the transport redis-py opened, so replies are parsed the moment bytes arrive."""

    def __init__(self, link: _Link) -> None:
        self.link = link

    def data_received(self, data: bytes) -> None:
        self.link._received(self, data)

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._lost_connection(self, exc)


class _Link(abc.ABC):
    """A connection opened by a redis-py pool (TLS, AUTH, SELECT, Sentinel), then spoken to through hiredis."""

    def __init__(self, pool: aioredis.ConnectionPool, timeout: float, label: str) -> None:
        self.pool = pool
        self.timeout = timeout
        self.label = label
        self._transport: Any = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[Any] | None = None
        self._streams: tuple[Any, Any] | None = None
        self._parser = hiredis.Reader()
        self._plain: Any = None  # the redis-py connection spoken to through its public API (the plain path)
        self._plain_reader: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._transport is not None or self._plain is not None

    async def connect(self) -> None:
        if self.connected:
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
            if isinstance(exc, RedisError):  # e.g. AuthenticationError; the caller maps the cause (raise from)
                raise LinkError(f"cannot connect to {self.label}: {type(exc).__name__}: {exc}") from exc
            raise
        if not TAKEOVER.usable(lambda: takeover_missing(conn)):
            self._open_plain(conn)
            return
        transport = conn._writer.transport
        leftover = bytes(conn._reader._buffer)  # anything read past the handshake (normally nothing)
        # The transport is ours now: redis-py must not touch it, and its stream objects must stay referenced
        # (a collected StreamWriter closes its transport).
        self._streams = (conn._reader, conn._writer)
        conn._reader = conn._writer = None
        if transport.is_closing():
            raise LinkError(f"{self.label} closed the connection right after the handshake")
        self._parser = hiredis.Reader()
        self._protocol = _Protocol(self)
        transport.set_protocol(self._protocol)
        if not transport.is_reading():
            transport.resume_reading()
        self._transport = transport
        if leftover:
            self._received(self._protocol, leftover)

    def _open_plain(self, conn: Any) -> None:
        self._plain = conn
        self._plain_reader = asyncio.ensure_future(self._read_plain(conn))

    async def _read_plain(self, conn: Any) -> None:
        """The plain path's reader: every reply through redis-py's public ``read_response``, in order."""
        while True:
            try:
                reply = await conn.read_response(disable_decoding=True, timeout=math.inf)
            except rex.ResponseError as exc:
                reply = _reply_error(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._plain is conn:
                    self.fail(LinkError(f"{self.label} closed the connection: {exc}"))
                return
            if self._plain is not conn:
                return
            self.on_reply(reply)

    def _write_plain(self, conn: Any, payload: bytes) -> None:
        # Writes start in call order (each task reaches writelines before its first await), so replies match.
        written = asyncio.ensure_future(conn.send_packed_command(payload, check_health=False))
        written.add_done_callback(lambda task: self._written(conn, task))

    def _written(self, conn: Any, task: asyncio.Future[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None and self._plain is conn:
            self.fail(LinkError(f"writing to {self.label} failed: {exc}"))

    def _received(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        try:
            self._parser.feed(data)
            while True:
                reply = self._parser.gets()
                if reply is False:
                    return
                self.on_reply(reply)
        except hiredis.ProtocolError as exc:
            self.fail(LinkError(f"{self.label} sent something that is not RESP: {exc}"))

    def _lost_connection(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            reason = f": {exc}" if exc else ""
            self.fail(LinkError(f"{self.label} closed the connection{reason}"))

    def write(self, payload: bytes) -> None:
        if self._plain is not None:
            self._write_plain(self._plain, payload)
        else:
            self._transport.write(payload)

    @abc.abstractmethod
    def on_reply(self, reply: Any) -> None:
        """One parsed RESP reply, in the order the server sent it."""

    def fail(self, error: BaseException) -> None:
        """Drop the connection; subclasses also fail what waited on it."""
        transport, self._transport, self._protocol = self._transport, None, None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.abort()
        self._streams = None
        reader, self._plain, self._plain_reader = self._plain_reader, None, None
        if reader is not None:
            reader.cancel()  # redis-py's read_response disconnects the connection when cancelled

    async def close(self) -> None:
        self.fail(LinkError(f"the link to {self.label} was closed"))

    def abandon(self) -> None:
        """The loop is gone: close the socket without the loop, forget everything."""
        transport, self._transport, self._protocol, self._connecting = self._transport, None, None, None
        self._streams = None
        conn, self._plain, self._plain_reader = self._plain, None, None
        writer = getattr(conn, "_writer", None)  # best effort: the plain path is used when this may be missing
        if transport is None and writer is not None:
            transport = getattr(writer, "transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                close_without_loop(transport)


def close_without_loop(transport: Any) -> None:
    """Close a transport's socket directly and mark it closing, so no finalizer touches the closed loop."""
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None) or transport
    for each in {id(transport): transport, id(inner): inner}.values():
        sock = getattr(each, "_sock", None)
        if sock is not None:
            sock.close()
            each._sock = None  # its finalizer must not close the descriptor a second time
        each._closing = each._closed = True  # is_closing() is then true: StreamWriter's finalizer leaves it


class _Waiting:
    """Replies expected for one caller: one command, or a batch answered as a list."""

    __slots__ = ("count", "future", "late", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[Any], count: int, late: Callable[[Any], None] | None) -> None:
        self.future = future
        self.count = count  # 0: a single command, answered by its reply itself
        self.late = late  # gets the reply if the caller stopped waiting (cancelled) before it came
        self.replies: list[Any] = []
        self.sent_at = 0.0


class CommandLink(_Link):
    """Auto-pipelined commands on one connection: one write per loop iteration, replies matched in order."""

    def __init__(self, pool: aioredis.ConnectionPool, timeout: float, label: str) -> None:
        super().__init__(pool, timeout, label)
        self._batch: list[tuple[list[bytes], _Waiting]] = []
        self._in_flight: deque[_Waiting] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._connect_task: asyncio.Future[None] | None = None

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Queue a command; the future resolves to its reply (a ReplyError instance for an error reply)."""
        return self._queue([hiredis.pack_command(args)], 0)

    def call_keeping(self, late: Callable[[Any], None], *args: Any) -> asyncio.Future[Any]:
        """Like :meth:`call`, for a command whose reply must not be lost: if the future is cancelled before the
        reply comes, ``late(reply)`` gets it (in order with the replies of every later command)."""
        return self._queue([hiredis.pack_command(args)], 0, late)

    def call_many(self, commands: list[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        """Queue several commands, sent together; the future resolves to the list of their replies."""
        return self._queue([hiredis.pack_command(args) for args in commands], len(commands))

    def _queue(self, packed: list[bytes], count: int, late: Callable[[Any], None] | None = None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(loop.create_future(), count, late)
        idle = not self._batch and not self._in_flight and self.connected
        self._batch.append((packed, waiting))
        if idle:
            # Nothing is in flight, so nobody's reply can be delayed by an extra write: send at once.  This saves
            # the lone caller a loop iteration (median send+receive 8.4k -> 9.9k msgs/s, named 7.2k -> 7.9k).
            self._flush()
        elif len(self._batch) == 1:
            # Otherwise written at the next loop iteration: every command issued until then shares the write.
            loop.call_soon(self._flush)
        return waiting.future

    def _flush(self) -> None:
        if not self._batch:
            return
        if not self.connected:
            if self._connecting is None and self._connect_task is None:
                self._connect_task = asyncio.ensure_future(self._connect_then_flush())
            return
        batch, self._batch = self._batch, []
        now = time.monotonic()
        payload: list[bytes] = []
        for packed, waiting in batch:
            payload.extend(packed)
            waiting.sent_at = now
            self._in_flight.append(waiting)
        try:
            self.write(b"".join(payload))
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
            if isinstance(exc, LinkError):
                error = exc
            else:
                error = LinkError(f"cannot connect to {self.label}: {type(exc).__name__}: {exc}")
                error.__cause__ = exc  # the caller maps it: a refusal (AuthenticationError) is not retried
            for _, waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            return
        self._connect_task = None
        self._flush()

    def _check_timeout(self) -> None:
        self._watchdog = None
        if not self._in_flight:
            return
        oldest = self._in_flight[0].sent_at
        if time.monotonic() - oldest >= self.timeout:
            self.fail(LinkError(f"{self.label} did not answer within {self.timeout}s"))
        else:
            self._watchdog = asyncio.get_running_loop().call_later(oldest + self.timeout - time.monotonic(),
                                                                   self._check_timeout)

    def on_reply(self, reply: Any) -> None:
        waiting = self._in_flight[0]
        if waiting.count:
            waiting.replies.append(reply)
            if len(waiting.replies) < waiting.count:
                return
            reply = waiting.replies
        self._in_flight.popleft()
        if not waiting.future.done():
            waiting.future.set_result(reply)
        elif waiting.late is not None:
            waiting.late(reply)

    def fail(self, error: BaseException) -> None:
        super().fail(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        failed = list(self._in_flight)
        self._in_flight.clear()
        if self._connecting is None and self._connect_task is None:
            failed += [waiting for _, waiting in self._batch]
            self._batch = []
        for waiting in failed:
            if not waiting.future.done():
                waiting.future.set_exception(error)


class SubscriberLink(_Link):
    """SUBSCRIBE channels; ``deliver(channel, data)`` is called for each message, ``lost()`` when the link dies."""

    def __init__(self, pool: aioredis.ConnectionPool, timeout: float, label: str,
                 deliver: Callable[[bytes, bytes], None], lost: Callable[[], None]) -> None:
        super().__init__(pool, timeout, label)
        self.deliver = deliver
        self.lost = lost
        self.channels: set[bytes] = set()
        self._confirmations: dict[tuple[bytes, bytes], asyncio.Future[None]] = {}

    async def subscribe(self, channel: bytes) -> None:
        if channel in self.channels and self.connected:
            return
        await self.connect()
        await self._request(b"subscribe", channel)

    async def unsubscribe(self, channel: bytes) -> None:
        """UNSUBSCRIBE and wait for the confirmation: every message published to ``channel`` before the
        UNSUBSCRIBE reached the server has then been delivered."""
        if self.connected and channel in self.channels:
            await self._request(b"unsubscribe", channel)

    async def barrier(self, channel: bytes) -> None:
        """PING and wait for the answer: every message the server published to us before it has then arrived.
        Only while subscribed to ``channel`` (a subscribed connection answers PING with a ``pong`` message)."""
        if self.connected and channel in self.channels:
            await self._request(b"pong", channel, (b"PING", channel))

    async def _request(self, kind: bytes, channel: bytes, command: tuple[bytes, bytes] | None = None) -> None:
        future = self._confirmations.get((kind, channel))
        if future is None:
            future = self._confirmations[kind, channel] = asyncio.get_running_loop().create_future()
            self.write(hiredis.pack_command(command or (kind.upper(), channel)))  # type: ignore[arg-type]
        await asyncio.wait_for(asyncio.shield(future), self.timeout)

    def on_reply(self, reply: Any) -> None:
        kind = reply[0]
        if kind == b"message":
            self.deliver(reply[1], reply[2])
            return
        if kind == b"subscribe":
            self.channels.add(reply[1])
        elif kind == b"unsubscribe":
            self.channels.discard(reply[1])
        future = self._confirmations.pop((kind, reply[1]), None)
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
