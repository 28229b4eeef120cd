"""One AMQP connection on one event loop, with publisher confirms and reconnection.

A :class:`Link` holds a pika ``AsyncioConnection`` and two channels:

* ``pub`` publishes in confirm mode; each publish gets a future that resolves to True (acked), False (nacked: a
  queue at its length limit refused it) or None (returned as unroutable: the queue does not exist);
* ``ctl`` carries everything else (declarations, bindings, consumers, ``basic.get``).  A channel-level error on
  it (406 for a queue declared with other arguments, 404 for a queue deleted under us) closes only ``ctl``; the
  link reopens it and bumps :attr:`Link.ctl_generation` so the consumers that lived on it are re-created.

When the connection drops, unconfirmed publishes fail with ``BackendUnavailable`` (they may or may not have been
stored: never retried, so never duplicated), and a background task reconnects with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions
from pika import spec
from pika.adapters.asyncio_connection import AsyncioConnection

from layers.backend import background_task
from layers.errors import (
    AccessDenied,
    AuthenticationFailed,
    BackendRefused,
    BackendUnavailable,
    DatabaseNotFound,
    LayerError,
    ServerError,
    TLSVerificationFailed,
    caused_by,
)

from .wire import Channel, Connection

__all__ = ["ChannelError", "Link", "channel_failure", "refusal"]

log = logging.getLogger("layers.amqp")

OnMessage = Callable[[Channel, Any, spec.BasicProperties, bytes], None]


class ChannelError(Exception):
    """The broker closed the ``ctl`` channel in answer to a call (``code`` 404 NOT_FOUND, 406 PRECONDITION_FAILED)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        # RabbitMQ names the queue at fault: "NOT_FOUND - no queue 'x' in vhost '/'"
        found = re.search(r"queue '(.*?)' in vhost", text)
        self.queue = found.group(1) if found else None


def channel_failure(call: str, error: ChannelError) -> LayerError:
    """The public error for a channel error that no retry inside the backend absorbed (raise it ``from error``):
    403 ACCESS_REFUSED and a queue declared elsewhere with other arguments (406 "inequivalent arg") are permanent;
    404 (a queue whose cluster node is down) and 405 (a queue another connection holds exclusively) may heal;
    anything else (406 for a stale delivery tag, 541 INTERNAL_ERROR) is the broker's answer to this call."""
    message = f"AMQP {call} failed: the broker closed the channel: {error}"
    if error.code == 403:
        return AccessDenied(f"{message} (check the user's permissions on this prefix's queues)")
    if error.code == 406 and "inequivalent arg" in str(error):
        return BackendRefused(f"{message} (another client declared it with other arguments)")
    if error.code in (404, 405):
        return BackendUnavailable(message)
    return ServerError(message)


def refusal(where: str, error: BaseException) -> BackendRefused | None:
    """The permanent refusal a connection error stands for (the broker's 403 ACCESS_REFUSED or 530 NOT_ALLOWED, a
    certificate that fails verification), or None when it may heal.  pika's "probable" errors alone are not
    enough: it raises them for any disconnect during the handshake (a broker shutting down), so the broker's
    reply code must be in them."""
    tls = caused_by(error, ssl.SSLCertVerificationError)
    if tls is not None:
        return TLSVerificationFailed(f"AMQP broker {where}: TLS verification failed: {tls} (check the CA and host)")
    text = _describe(error)
    if isinstance(error, pika.exceptions.AuthenticationError) or (
            isinstance(error, pika.exceptions.ProbableAuthenticationError) and "(403)" in text):
        return AuthenticationFailed(f"AMQP broker {where} refused the login: {text} (check user and password)")
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError) and "(530)" in text:
        if "not found" in text:
            return DatabaseNotFound(f"AMQP broker {where}: the virtual host does not exist: {text}")
        return AccessDenied(f"AMQP broker {where}: the user may not use this virtual host: {text}")
    return None


class Link:
    """A self-healing connection: call :meth:`ready` before using :meth:`publish` or the ``ctl`` helpers."""

    def __init__(self, brokers: Sequence[tuple[pika.ConnectionParameters, str]], timeout: float,
                 retry_delays: tuple[float, float] = (0.05, 2.0)) -> None:
        # (parameters, host:port/vhost for messages, never the password) of every node the layer may use: it
        # stays on one while it answers and moves to the next when its connection fails or is lost.
        self.brokers = list(brokers)
        self._broker = 0
        self.params, self.where = self.brokers[0]
        self.timeout = timeout
        self.retry_delays = retry_delays
        self.loop = asyncio.get_running_loop()
        self.generation = 0  # bumps on every (re)connection: queues may have vanished (broker restart)
        self.ctl_generation = 0  # bumps whenever consumers were lost (new connection or new ctl channel)
        self.on_cancelled: Callable[[str], None] = lambda tag: None  # the broker cancelled a consumer
        self.on_lost: Callable[[], None] = lambda: None  # consumers are gone (connection or ctl channel lost)
        self.on_reconnected: Callable[[], None] = lambda: None  # a new connection replaced a lost one
        self.last_error: BaseException | None = None
        self._conn: Connection | None = None
        self._pub: Channel | None = None
        self._ctl: Channel | None = None
        self._up = asyncio.Event()
        self._ctl_up = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None
        # The outcome of the connector's current run for ready(): done when it connected, gave up or was refused.
        self._attempt: asyncio.Future[None] = self.loop.create_future()
        self._reopening: asyncio.Task[None] | None = None
        self._waiting = 0  # callers inside ready()
        self._closed = False
        self._tag = 0
        self._confirms: dict[int, asyncio.Future[bool | None]] = {}
        self._order: deque[int] = deque()
        self._mandatory: dict[str, deque[int]] = {}
        self._tag_key: dict[int, str] = {}
        self._returned: set[int] = set()
        self._rpcs: set[asyncio.Future[Any]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_from: tuple[int, float] = (0, 0.0)  # (tag, loop time) the confirm watchdog waits on
        self._get_lock = asyncio.Lock()
        self._get: asyncio.Future[bytes | None] | None = None

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    # -- connecting ------------------------------------------------------------------------------------------

    async def ready(self) -> None:
        """Return once connected; raise ``BackendUnavailable`` after ``timeout`` seconds without a connection, or
        ``BackendRefused`` as soon as every broker refused the client for good (credentials, vhost, TLS)."""
        if self._up.is_set():
            return
        deadline = self.loop.time() + self.timeout
        self._waiting += 1
        try:
            while not self._up.is_set():
                if self._closed:
                    raise BackendUnavailable("the AMQP connection was closed")
                self._start_connector()
                await asyncio.wait_for(asyncio.shield(self._attempt), max(0.0, deadline - self.loop.time()))
        except asyncio.TimeoutError:
            cause = f" (last error: {_describe(self.last_error)})" if self.last_error else ""
            raise BackendUnavailable(f"AMQP broker {self.where} unreachable for {self.timeout}s{cause}") from None
        finally:
            self._waiting -= 1

    def _start_connector(self) -> None:
        if self._connector is None or self._connector.done():
            if self._attempt.done():
                self._attempt = self.loop.create_future()
            attempt = self._attempt
            self._connector = background_task(self._connect_loop(), name="layers-amqp-connect", loop=self.loop)
            self._connector.add_done_callback(lambda _task: _settle(attempt, None))  # ready() looks again

    def _next_broker(self) -> None:
        self._broker = (self._broker + 1) % len(self.brokers)
        self.params, self.where = self.brokers[self._broker]

    async def _connect_loop(self) -> None:
        delay = 0.0
        untried = len(self.brokers) - 1  # other nodes to try before backing off
        refusals = 0  # nodes in a row that refused the client for good
        while not self._closed:
            try:
                await self._connect_once()
                return
            except asyncio.CancelledError:
                self._drop_connection()  # closed while connecting: do not leave a half-open socket behind
                raise
            except Exception as exc:
                self.last_error = exc
                self._drop_connection()
                failed = self.where
                self._next_broker()
                refused = refusal(failed, exc)
                refusals = refusals + 1 if refused is not None else 0
                if refused is not None and refusals >= len(self.brokers):  # retrying cannot help
                    log.debug("%s; not retrying", refused)
                    _fail(self._attempt, refused)
                    return
                if not self._waiting:  # nobody needs the broker now; the next ready() starts over
                    log.warning("AMQP connection to %s failed (%s)", failed, _describe(exc))
                    return
                if untried:  # another node may answer: no back-off until every node was tried
                    untried -= 1
                    log.warning("AMQP connection to %s failed (%s); trying %s", failed, _describe(exc), self.where)
                    continue
                untried = len(self.brokers) - 1
                low, high = self.retry_delays
                delay = min(high, max(low, delay * 2))
                log.warning("AMQP connection to %s failed (%s); retrying in %.2fs", self.where, _describe(exc), delay)
                await asyncio.sleep(delay)

    async def _connect_once(self) -> None:
        opened: asyncio.Future[None] = self.loop.create_future()

        def on_open(_conn: AsyncioConnection) -> None:
            conn.choose_publisher()
            _settle(opened, None)

        def on_open_error(_conn: AsyncioConnection, exc: BaseException) -> None:
            _fail(opened, exc if isinstance(exc, Exception) else RuntimeError(str(exc)))

        conn = Connection(self.params, on_open, on_open_error, self._on_connection_closed,
                           custom_ioloop=self.loop)
        self._conn = conn
        await asyncio.wait_for(opened, self.timeout)
        pub = await self._open_channel(conn)
        selected: asyncio.Future[None] = self.loop.create_future()
        pub.confirm_delivery(self._on_confirm, callback=lambda _frame: _settle(selected, None))
        await asyncio.wait_for(selected, self.timeout)
        conn.on_confirm, conn.confirm_channel = self._on_ack, pub.channel_number
        pub.add_on_return_callback(self._on_return)
        pub.add_on_close_callback(self._on_pub_closed)
        self._pub, self._tag = pub, 0
        await self._open_ctl(conn)
        self.generation += 1
        self.last_error = None
        self._up.set()
        if self.generation > 1:
            log.info("AMQP connection to %s re-established", self.where)
            self.on_reconnected()

    async def _open_channel(self, conn: AsyncioConnection) -> Channel:
        opened: asyncio.Future[Channel] = self.loop.create_future()
        conn.channel(on_open_callback=lambda channel: _settle(opened, channel))
        return await asyncio.wait_for(opened, self.timeout)

    async def _open_ctl(self, conn: AsyncioConnection) -> None:
        ctl = await self._open_channel(conn)
        ctl.add_on_close_callback(self._on_ctl_closed)
        ctl.add_on_cancel_callback(self._on_broker_cancel)
        ctl.add_callback(self._on_get_empty, [spec.Basic.GetEmpty], one_shot=False)
        qos: asyncio.Future[None] = self.loop.create_future()
        ctl.basic_qos(prefetch_count=1, callback=lambda _frame: _settle(qos, None))
        await asyncio.wait_for(qos, self.timeout)
        self._ctl = ctl
        self.ctl_generation += 1
        self._ctl_up.set()

    def _on_connection_closed(self, conn: AsyncioConnection, reason: BaseException) -> None:
        if conn is not self._conn:
            return
        self.last_error = reason
        was_up = self._up.is_set()
        self._drop_connection()
        if was_up and not self._closed:
            lost = self.where
            if len(self.brokers) > 1:
                self._next_broker()  # its node may be gone: reconnect elsewhere first
            log.warning("AMQP connection to %s lost (%s); reconnecting to %s", lost, _describe(reason), self.where)
            self._start_connector()

    def _drop_connection(self) -> None:
        """Forget the connection and fail everything that waited on it."""
        self._up.clear()
        self._ctl_up.clear()
        conn, self._conn, self._pub, self._ctl = self._conn, None, None, None
        if conn is not None and not (conn.is_closed or conn.is_closing):
            with contextlib.suppress(Exception):  # already broken: nothing left to close
                conn.close()
        error = BackendUnavailable(f"AMQP connection to {self.where} lost before the broker answered")
        self._fail_confirms(error)
        self._fail_rpcs(error)
        self.ctl_generation += 1
        self.on_lost()

    def _on_pub_closed(self, channel: Channel, reason: BaseException) -> None:
        if channel is self._pub and not self._closed:
            # Publishing never names anything that can vanish, so this is unexpected: start over cleanly.
            log.warning("AMQP publish channel closed (%s); reconnecting", _describe(reason))
            self.last_error = reason
            self._drop_connection()
            self._start_connector()

    def _on_ctl_closed(self, channel: Channel, reason: BaseException) -> None:
        if channel is not self._ctl:
            return
        self._ctl = None
        self._ctl_up.clear()
        code = getattr(reason, "reply_code", 0)
        self._fail_rpcs(ChannelError(code, getattr(reason, "reply_text", str(reason))))
        self.ctl_generation += 1
        self.on_lost()
        conn = self._conn
        if conn is not None and conn.is_open and not self._closed:
            self._reopening = background_task(self._reopen_ctl(conn), loop=self.loop)  # referenced: tasks are weak

    async def _reopen_ctl(self, conn: AsyncioConnection) -> None:
        try:
            await self._open_ctl(conn)
        except Exception as exc:  # the connection is going down too; its close handler reconnects
            log.debug("reopening the AMQP ctl channel failed: %s", _describe(exc))

    # -- publishing with confirms --------------------------------------------------------------------------

    def publish(self, exchange: str, key: str, body: bytes, properties: spec.BasicProperties | None,
                mandatory: bool) -> asyncio.Future[bool | None]:
        """Publish now (call after :meth:`ready`); the future says acked (True), nacked (False), returned (None)."""
        pub, conn = self._pub, self._conn
        if pub is None or conn is None:
            raise BackendUnavailable(f"AMQP connection to {self.where} is down")
        if not pub.is_open or not conn.is_open:  # e.g. closing: callers only know our errors
            raise BackendUnavailable(f"AMQP connection to {self.where} is going down")
        conn.publish(pub, exchange, key, body, properties, mandatory)
        self._tag += 1
        tag = self._tag
        future: asyncio.Future[bool | None] = self.loop.create_future()
        self._confirms[tag] = future
        self._order.append(tag)
        if self._watchdog is None:
            self._watch_from = (tag, self.loop.time())
            self._watchdog = self.loop.call_later(self.timeout / 4, self._check_confirms)
        if mandatory:
            self._tag_key[tag] = key
            self._mandatory.setdefault(key, deque()).append(tag)
        return future

    @property
    def unconfirmed(self) -> int:
        """Publishes still waiting for their confirm."""
        return len(self._confirms)

    def flush(self) -> None:
        """Send everything published in this loop iteration now instead of at the end of the iteration."""
        if self._conn is not None:
            self._conn.flush_outgoing()

    def _check_confirms(self) -> None:
        """One timer for all publishes (not one per publish: the hot path): if the oldest unconfirmed publish has
        waited ``timeout`` seconds, the broker is not answering.  The timer looks every quarter ``timeout`` for
        a new oldest publish, so a send fails at most 1.25 x ``timeout`` after it was published (it used to look
        once per ``timeout``, which let a send wait up to twice as long)."""
        self._watchdog = None
        if not self._confirms:
            return
        now = self.loop.time()
        tag, since = self._watch_from
        if tag not in self._confirms:  # confirmed: watch the publish that is oldest now
            oldest = self._order[0] if self._order else tag
            tag, since = self._watch_from = (oldest, now)
        if tag in self._confirms and now - since >= self.timeout:
            error = BackendUnavailable(f"AMQP broker {self.where} did not confirm within {self.timeout}s")
            self._fail_confirms(error)
            log.warning("%s; dropping the connection", error)
            # Not a polite close, which a frozen broker never answers (publishes meanwhile found the channel
            # "closing"): forget this connection now and connect afresh; its close callback is then ignored.
            self._drop_connection()
            if not self._closed:
                self._start_connector()
            return
        self._watchdog = self.loop.call_later(min(since + self.timeout - now, self.timeout / 4),
                                              self._check_confirms)

    def _on_confirm(self, frame: Any) -> None:
        """pika's path for confirms (the connection normally takes :meth:`_on_ack` directly)."""
        method = frame.method
        self._on_ack(method.delivery_tag, method.multiple, isinstance(method, spec.Basic.Ack))

    def _on_ack(self, tag: int, multiple: bool, ok: bool) -> None:
        if multiple:
            while self._order and self._order[0] <= tag:
                self._resolve(self._order.popleft(), ok)
        else:
            self._resolve(tag, ok)
            while self._order and self._order[0] not in self._confirms:
                self._order.popleft()

    def _resolve(self, tag: int, ok: bool) -> None:
        future = self._confirms.pop(tag, None)
        if future is None:
            return
        key = self._tag_key.pop(tag, None)
        if key is not None:
            pending = self._mandatory.get(key)
            while pending and pending[0] not in self._confirms:
                pending.popleft()
            if not pending:
                self._mandatory.pop(key, None)
        returned = tag in self._returned
        if returned:
            self._returned.discard(tag)
        if not future.done():
            future.set_result(None if returned else ok)

    def _on_return(self, _channel: Channel, method: Any, _props: Any, _body: bytes) -> None:
        # The broker sends basic.return just before the ack of that publish, in publish order per routing key.
        for tag in self._mandatory.get(method.routing_key, ()):
            if tag in self._confirms and tag not in self._returned:
                self._returned.add(tag)
                return

    def _fail_confirms(self, error: Exception) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        confirms, self._confirms = self._confirms, {}
        self._order.clear()
        self._mandatory.clear()
        self._tag_key.clear()
        self._returned.clear()
        for future in confirms.values():
            _fail(future, error)

    # -- ctl channel calls ---------------------------------------------------------------------------------

    async def _ctl_channel(self) -> Channel:
        await self.ready()
        if not self._ctl_up.is_set():
            try:
                await asyncio.wait_for(self._ctl_up.wait(), self.timeout)
            except asyncio.TimeoutError:
                raise BackendUnavailable(f"AMQP channel to {self.where} did not reopen") from None
        assert self._ctl is not None
        return self._ctl

    async def call(self, start: Callable[[Channel, Callable[[Any], None]], Any], queue: str) -> Any:
        """Run one synchronous AMQP method about ``queue`` on ``ctl``: ``start(channel, done)`` sends it and
        ``done`` gets the reply.  A channel error caused by another call (it names another queue) closed the
        channel under this one too: that is not this call's failure, so it runs again on the reopened channel."""
        while True:
            try:
                return await self._call_once(start)
            except ChannelError as exc:
                if exc.queue is not None and exc.queue != queue:
                    continue
                raise

    async def _call_once(self, start: Callable[[Channel, Callable[[Any], None]], Any]) -> Any:
        ctl = await self._ctl_channel()
        future: asyncio.Future[Any] = self.loop.create_future()
        self._rpcs.add(future)
        try:
            start(ctl, lambda reply: _settle(future, reply))
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            raise BackendUnavailable(f"AMQP broker {self.where} did not answer within {self.timeout}s") from None
        finally:
            self._rpcs.discard(future)

    def _fail_rpcs(self, error: Exception) -> None:
        rpcs, self._rpcs = self._rpcs, set()
        for future in rpcs:
            _fail(future, error)
        if self._get is not None:
            _fail(self._get, error)

    async def declare(self, queue: str, arguments: dict[str, Any] | None, passive: bool = False,
                      durable: bool = False) -> int:
        """Declare ``queue``; return how many ready messages it holds."""
        reply = await self.call(lambda ch, done: ch.queue_declare(
            queue, passive=passive, durable=durable, arguments=arguments, callback=done), queue)
        return int(reply.method.message_count)

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        await self.call(lambda ch, done: ch.queue_bind(queue, exchange, key, callback=done), queue)

    async def unbind(self, queue: str, exchange: str, key: str) -> None:
        await self.call(lambda ch, done: ch.queue_unbind(queue, exchange, key, callback=done), queue)

    async def delete(self, queue: str) -> None:
        await self.call(lambda ch, done: ch.queue_delete(queue, callback=done), queue)

    async def consume(self, queue: str, on_message: OnMessage, auto_ack: bool = True) -> str:
        """Start a consumer.  Auto-ack: delivered means taken, never redelivered, so never duplicated.  Manual
        ack consumers get one unacknowledged message at a time (``basic.qos`` prefetch 1 on ``ctl``).

        A channel that does not keep the deliveries arriving after a cancel (pika's plain path drops them when
        auto-ack) gets an auto-ack consumer as a manual-ack one without a prefetch bound that acknowledges each
        delivery as it arrives: the same flow, and what a cancel catches on its way goes back to the queue (a
        delivery whose ack a dying connection lost comes again: the group inbox's records may be applied twice)."""
        tags: list[str] = []

        def start(ch: Channel, done: Callable[[Any], None]) -> None:
            if auto_ack and not ch.keeps_late_deliveries:
                ch.basic_qos(prefetch_count=0)  # for the consumers created next on ch: no bound
                tags.append(ch.basic_consume(queue, _taken_on_arrival(on_message), auto_ack=False, callback=done))
                ch.basic_qos(prefetch_count=1)
                return
            tags.append(ch.basic_consume(queue, on_message, auto_ack=auto_ack, callback=done))

        await self.call(start, queue)
        return tags[-1]

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer without waiting (messages already sent to us still arrive and are kept: with a
        callback pika keeps the consumer until ``cancel-ok``, and :class:`~layers_amqp.wire.DirectChannel` hands
        them on instead of dropping them; on the plain path pika rejects them back to the queue, see
        :meth:`consume`)."""
        if self._ctl is not None and self._ctl.is_open and consumer_tag in self._ctl.consumer_tags:
            self._ctl.basic_cancel(consumer_tag, callback=_ignore)

    async def get(self, queue: str) -> bytes | None:
        """``basic.get`` with auto-ack: take one message from the head of ``queue``, or None when it is empty."""
        while True:
            try:
                return await self._get_once(queue)
            except ChannelError as exc:
                if exc.queue is not None and exc.queue != queue:
                    continue  # another call's error closed the channel: not ours, ask again
                raise

    async def _get_once(self, queue: str) -> bytes | None:
        async with self._get_lock:
            ctl = await self._ctl_channel()
            future: asyncio.Future[bytes | None] = self.loop.create_future()
            self._get = future
            try:
                ctl.basic_get(queue, lambda _ch, _m, _p, body: _settle(future, body), auto_ack=True)
                return await asyncio.wait_for(future, self.timeout)
            except asyncio.TimeoutError:
                raise BackendUnavailable(f"AMQP broker {self.where} did not answer within {self.timeout}s") from None
            finally:
                self._get = None

    def _on_get_empty(self, _frame: Any) -> None:
        if self._get is not None:
            _settle(self._get, None)

    def _on_broker_cancel(self, frame: Any) -> None:
        self.on_cancelled(frame.method.consumer_tag)

    # -- shutting down --------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection and wait (briefly) for the broker to acknowledge; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_connector()
        conn = self._conn
        if conn is None or conn.is_closed:
            self._drop_connection()
            return
        closed: asyncio.Future[None] = self.loop.create_future()
        conn.add_on_close_callback(lambda _c, _r: _settle(closed, None))
        self._drop_connection()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(closed, 2.0)

    def abandon(self) -> None:
        """The loop is closed: nothing can be awaited or scheduled, so just close the socket."""
        self._closed = True
        conn, self._conn, self._pub, self._ctl = self._conn, None, None, None
        self._connector = None
        sock = getattr(getattr(conn, "_transport", None), "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _stop_connector(self) -> None:
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
        self._connector = None


def _ignore(_frame: Any) -> None:
    pass


def _taken_on_arrival(on_message: OnMessage) -> OnMessage:
    """``on_message`` for a manual-ack consumer standing in for an auto-ack one (see :meth:`Link.consume`)."""

    def deliver(channel: Channel, method: Any, properties: spec.BasicProperties, body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        on_message(channel, method, properties, body)

    return deliver


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # mark retrieved: nobody may be waiting any more


def _describe(exc: BaseException | None) -> str:
    """A short description of a driver error (pika errors never carry the password)."""
    if exc is None:
        return "unknown"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
