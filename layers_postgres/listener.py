"""The LISTEN connection of one layer on one event loop: wake-ups for readers, watched and re-opened.

NOTIFY is only a wake-up (the payload is a queue name; the items stay in the table), so a lost notification costs
latency, never a message: whenever the connection is (re-)established every waiting reader is woken to look at
the table again, which is how nothing is stranded after the connection dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import psycopg

from layers.backend import background_task
from layers.errors import BackendRefused

from .pool import connect_or_refuse
from .schema import quote_ident

__all__ = ["Listener", "Wake"]

if sys.version_info >= (3, 11):
    _timeout = asyncio.timeout
else:  # pragma: no cover - Python 3.10: wait_for-free fallback without a deadline
    _timeout = contextlib.nullcontext


def _raise_if_cancelled() -> None:
    """Stop if this task was asked to: a cancellation can get lost inside library code (asyncio.wait_for in 3.11
    returns a result that arrived together with the cancel), and an event loop shutting down (asyncio.run,
    async_to_sync) would then wait for this endless loop forever."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError

log = logging.getLogger("layers.postgres")


class Wake:
    """"Something may have arrived in this queue": set by a NOTIFY (or a reconnect), cleared by the reader before
    it looks at the table.  A waiting reader parks a future in :attr:`future`; ``set`` resolves it, and so may a
    sender handing items to that reader (see :mod:`layers_postgres.handoff`), so one await covers both."""

    __slots__ = ("future", "pending")

    def __init__(self) -> None:
        self.pending = True  # unknown state: look at the table first
        self.future: asyncio.Future[None] | None = None

    def set(self) -> None:
        self.pending = True
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)

    def clear(self) -> None:
        self.pending = False

    def is_set(self) -> bool:
        return self.pending


class Listener:
    """One session connection that LISTENs on the layer's channel and wakes the readers of the named queues."""

    #: Queues whose wake-ups are remembered (the queues this process reads: its own and named channels).
    max_watched: int = 10_000
    #: Seconds without notifications after which the connection is probed (detects silently dead peers).
    heartbeat: float = 15.0

    def __init__(self, connect: Callable[[], Any], channel: str, timeout: float,
                 backoff: tuple[float, float] = (0.05, 2.0)) -> None:
        self._connect = connect
        self._channel = channel
        self._timeout = timeout
        self._backoff = backoff
        self._wakers: dict[str, Wake] = {}
        self._task: asyncio.Task[None] | None = None
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.ready = asyncio.Event()  # set while LISTEN is active
        self.connects = 0  # how many times LISTEN was established (tests watch recoveries)

    def watch(self, queue: str) -> Wake:
        """The wake-up of ``queue``: set by a NOTIFY for it (or a reconnect), cleared by the reader before it
        looks at the table.  It stays registered between pops, so a wake-up between two pops is not lost and a
        reader that found the queue empty can skip the next look until something arrives."""
        event = self._wakers.get(queue)
        if event is None:
            if len(self._wakers) >= self.max_watched:
                self._wakers.clear()  # forget them all: a missing entry only costs one extra look at the table
            event = self._wakers[queue] = Wake()
        if self._task is None or self._task.done():
            self._task = background_task(self._run(), name="layers-postgres-listener")
        return event

    def may_hold(self, queue: str) -> bool:
        """Whether ``queue`` may hold items its reader has not looked at (a NOTIFY came, or we do not know)."""
        event = self._wakers.get(queue)
        return event is None or event.pending

    def forget(self, queue: str) -> None:
        self._wakers.pop(queue, None)

    async def _run(self) -> None:
        delay = 0.0
        while True:
            _raise_if_cancelled()
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except BackendRefused as exc:  # retrying cannot help; the next watch() (a new receive) tries again
                self.ready.clear()
                await self._drop()
                log.warning("LISTEN connection refused, not retrying: %s", exc)
                self._wake_all()  # readers look at the table, where they meet the same refusal
                return
            except Exception as exc:
                self.ready.clear()
                await self._drop()
                delay = min(self._backoff[1], max(self._backoff[0], delay * 2))
                log.warning("LISTEN connection lost (%s: %s); reconnecting in %.2fs", type(exc).__name__, exc, delay)
                self._wake_all()  # readers fall back to polling the table until we are back
                await asyncio.sleep(delay)
            else:
                delay = 0.0

    async def _listen(self) -> None:
        async with _timeout(self._timeout):
            self.conn = conn = await connect_or_refuse(self._connect)
            await conn.execute(f"LISTEN {quote_ident(self._channel)}")
        _raise_if_cancelled()
        self.connects += 1
        self.ready.set()
        self._wake_all()  # catch up: anything stored while we were not listening is in the table
        while True:
            async for notify in conn.notifies(timeout=self.heartbeat):
                self._wake(notify.payload)
            _raise_if_cancelled()
            async with _timeout(self._timeout):
                await conn.execute("SELECT 1")  # quiet for a while: still alive?

    def _wake(self, queue: str) -> None:
        event = self._wakers.get(queue)
        if event is not None:
            event.set()

    def _wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 1.0)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: psycopg may spend seconds cancelling a query on a dying connection.
            await asyncio.wait([task], timeout=2.0)
        self.ready.clear()
        await self._drop()

    def abandon(self) -> None:
        """Close the socket without awaiting (the loop this listener ran on is closed)."""
        conn, self.conn = self.conn, None
        self._task = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()
