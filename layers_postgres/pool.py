"""A small connection pool that runs no background tasks.

psycopg_pool connects and grows from worker tasks; when ``async_to_sync`` (or ``asyncio.run``) closes its event
loop it cancels those tasks, and a worker whose connection attempt is cancelled logs the error and goes back to
waiting for work, so the loop's shutdown waits forever.  Here every connection is opened inside the caller's own
task, so cancelling the caller cancels the connect and nothing outlives the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg import pq

__all__ = ["Pool"]

Conn = psycopg.AsyncConnection[Any]


class Pool:
    """Up to ``max_size`` connections for one event loop; the most recently used idle one is handed out first."""

    def __init__(self, connect: Callable[[], Awaitable[Conn]], max_size: int) -> None:
        self._connect = connect
        self.max_size = max_size
        self._idle: deque[Conn] = deque()
        self._open: set[Conn] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        conn = await self.acquire()
        try:
            yield conn
        finally:
            self.release(conn)

    async def acquire(self) -> Conn:
        """A connection for the caller alone; give it back with :meth:`release` (the hot path's cheaper form of
        :meth:`connection`)."""
        while True:
            while self._idle:
                conn = self._idle.pop()
                if _usable(conn):
                    return conn
                self._discard(conn)
            if len(self._open) + self._connecting < self.max_size:
                return await self._new()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # the caller's deadline bounds this wait
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _new(self) -> Conn:
        self._connecting += 1
        try:
            conn = await self._connect()
        finally:
            self._connecting -= 1
            self._wake_one()
        self._open.add(conn)
        return conn

    def release(self, conn: Conn) -> None:
        if conn in self._open and _usable(conn):
            self._idle.append(conn)
        else:
            self._discard(conn)
        self._wake_one()

    def _discard(self, conn: Conn) -> None:
        self._open.discard(conn)
        _finish(conn)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def drop_idle(self) -> None:
        """Close the idle connections (after a connection error they are most likely dead too)."""
        while self._idle:
            self._discard(self._idle.pop())

    def close(self) -> None:
        """Close every connection now; connections in use are closed as they come back."""
        self.drop_idle()
        for conn in list(self._open):
            self._discard(conn)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


def _usable(conn: Conn) -> bool:
    # IDLE: no query in flight, no transaction left open (a cancelled query leaves it ACTIVE).
    return not conn.closed and not conn.broken and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE


def _finish(conn: Conn) -> None:
    """Close the socket without awaiting, so it works from any state and even after the loop has closed."""
    with contextlib.suppress(Exception):
        conn.pgconn.finish()
