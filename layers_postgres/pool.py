"""A small connection pool that runs no background tasks.

psycopg_pool connects and grows from worker tasks; when ``async_to_sync`` (or ``asyncio.run``) closes its event
loop it cancels those tasks, and a worker whose connection attempt is cancelled logs the error and goes back to
waiting for work, so the loop's shutdown waits forever.  Here every connection is opened inside the caller's own
task, so cancelling the caller cancels the connect and nothing outlives the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg import pq

from layers.errors import AccessDenied, AuthenticationFailed, BackendRefused, DatabaseNotFound, TLSVerificationFailed

__all__ = ["Pool", "connect_or_refuse", "refusal"]

Conn = psycopg.AsyncConnection[Any]

# What the server (or libpq) says when retrying cannot help; connection errors carry no SQLSTATE, only this text.
_REFUSALS: list[tuple[re.Pattern[str], type[BackendRefused], str]] = [
    (re.compile(r"password authentication failed|role \S+ does not exist|no password supplied|"
                r"authentication failed for user"), AuthenticationFailed, "check the user name and password"),
    (re.compile(r"database \S+ does not exist"), DatabaseNotFound, "create the database or fix its name"),
    (re.compile(r"no pg_hba\.conf entry|permission denied for database|not permitted to log in|"
                r"CONNECT privilege"), AccessDenied, "the role may not connect to this database"),
    (re.compile(r"certificate verify failed|does not match host name|root certificate file .* does not exist"),
     TLSVerificationFailed, "check sslrootcert and the host name"),
]


def refusal(error: BaseException) -> BackendRefused | None:
    """The permanent refusal a connection error stands for, or None when it may heal (refused, timeout, restart)."""
    if not isinstance(error, psycopg.OperationalError):
        return None
    text = str(error)
    for pattern, kind, hint in _REFUSALS:
        if pattern.search(text):
            return kind(f"PostgreSQL refused the connection: {text.strip()} ({hint})")
    return None


async def connect_or_refuse(connect: Callable[[], Awaitable[Conn]]) -> Conn:
    """``connect()``, raising :class:`~layers.errors.BackendRefused` for what retrying cannot heal."""
    try:
        return await connect()
    except psycopg.OperationalError as exc:
        refused = refusal(exc)
        if refused is not None:
            raise refused from exc
        raise


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
            conn = await connect_or_refuse(self._connect)
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
