"""The PostgreSQL :class:`~layers.backend.Backend`: a message table, a connection pool and a LISTEN connection.

Every call is one statement (a function of :mod:`layers_postgres.schema`), prepared once per connection, so a
coalesced batch of sends, a claim of many items or a whole group fan-out costs one round trip.  The statements of
every send and receive go through libpq directly (:mod:`layers_postgres.wire`).

The core's reader of a queue calls :meth:`PostgresBackend.fill`, which claims rows into the core's feed and parks
on LISTEN/NOTIFY when there are none.  A send to a queue whose fill in this backend is parked (it found the queue
empty and waits), or has just delivered and is about to park again, serves that fill in its own statement
(:mod:`layers_postgres.handoff`) and delivers into its feed: one round trip per message and no NOTIFY, instead of
a push, a NOTIFY and a claim.  Readers in other processes are unaffected: the statement only hands over what is
at the head of the queue on the server.  The core merges sends made while others are on their way into one
:meth:`PostgresBackend.push` (:mod:`layers.coalescing`); a lone send comes at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from layers.backend import Backend, Feed, GroupMessage, Push, Unclaimed, background_task
from layers.errors import BackendUnavailable, ServerError
from layers.options import redact_url

from . import wire
from .handoff import Handoffs, Slot
from .listener import Listener, Wake
from .pool import Pool
from .schema import (
    HANDED,
    NOT_STORED,
    VERSION,
    Names,
    create_sql,
    drop_sql,
    give_back_sql,
    hand_sql,
    pop_sql,
    push_claim_sql,
    push_one_sql,
    push_sql,
)
from .wire import BYTEA, FLOAT8, INT4, TEXT, Statement

__all__ = ["PostgresBackend", "PostgresConfig"]

log = logging.getLogger("layers.postgres")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

# Errors that mean "the server or the connection is not there".
_UNAVAILABLE = (psycopg.OperationalError, OSError, asyncio.TimeoutError)
# Errors that mean "our tables or functions are gone" (dropped by hand or by a test): recreate and retry once.
_MISSING = (pg_errors.UndefinedTable, pg_errors.UndefinedFunction, pg_errors.InvalidSchemaName)
# Races between processes creating the same objects at once.
_CREATE_RACES = (pg_errors.UniqueViolation, pg_errors.DuplicateObject, pg_errors.DuplicateTable,
                 pg_errors.DuplicateSchema, pg_errors.DuplicateFunction)


@dataclass
class PostgresConfig:
    """What every backend of one layer shares (the layer builds it once)."""

    dsn: str
    listen_dsn: str
    names: Names
    durable: bool
    max_pool_size: int
    timeout: float
    prepared_statements: bool
    sweep_every: float
    connect_kwargs: dict[str, Any] = field(default_factory=dict)
    schema_ready: bool = False  # set once the tables are known to exist at the current VERSION


class PostgresBackend(Backend):
    min_expiry = 0.5

    #: Seconds between looks at the table while the LISTEN connection is down.
    poll_interval: float = 0.5
    #: Seconds a process-queue reader woken during a busy stream waits before it claims (0 disables).
    gather_delay: float = 0.001
    #: Loop turns a push waits for this backend's fill of its queue to park (after its claim, if claiming).
    rejoin_turns: int = 4

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self.names = config.names
        self._pool: Pool | None = None
        self._ready_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_sweep = time.time() + self._sweep_delay()
        self._last_claim = 0.0  # loop time of the latest claim (any queue), for gather_delay
        self.listener = Listener(self._listen_connect, self.names.channel, config.timeout)
        n = self.names
        self._sql_store = f"SELECT {n.obj('_store')}(%s::text[], %s::bytea[], %s::int[], %s::float8[], %s)"
        self._sql_push = push_sql(n)
        self._st_push_one = _statement("push1", push_one_sql(n), [TEXT, BYTEA, INT4, FLOAT8])
        self._st_pop = _statement("pop", pop_sql(n), [TEXT, INT4, FLOAT8])
        self._st_hand = _statement("hand", hand_sql(n), [TEXT, BYTEA])
        self._st_push_claim = _statement("pushclaim", push_claim_sql(n), [TEXT, BYTEA, INT4, FLOAT8, INT4, FLOAT8])
        self._sql_give_back = give_back_sql(n)
        self._handoffs = Handoffs()
        self._claiming: dict[str, asyncio.Future[None]] = {}  # queue -> done when this backend's claim of it ends
        self.handed = 0  # pushes that claimed for this backend's parked fill (tests and benchmarks read it)
        self._sql_group_push = f"SELECT {n.obj('_group_push')}(%s, %s, %s, %s, %s, %s, %s)"
        self._sql_sweep = f"SELECT {n.obj('_sweep')}(%s, %s)"
        self._sql_flush = f"SELECT {n.obj('_flush')}()"
        self._sql_group_add = (f"INSERT INTO {n.grp} (grp, channel, deadline) VALUES (%s, %s, %s) "
                               "ON CONFLICT (grp, channel) DO UPDATE SET deadline = excluded.deadline")
        self._sql_group_discard = f"DELETE FROM {n.grp} WHERE grp = %s AND channel = %s"
        self._sql_group_members = (f"SELECT channel FROM {n.grp} WHERE grp = %s AND deadline >= %s "
                                   "ORDER BY channel")

    # -- the contract --------------------------------------------------------------------------------------

    async def push(self, pushes: Sequence[Push]) -> list[bool]:
        return [await self._push_one(pushes[0])] if len(pushes) == 1 else await self._push_many(pushes)

    async def _push_one(self, push: Push) -> bool:
        """One send: served to this backend's fill of its queue when that fill waits or is about to, else stored
        like any other."""
        queue = push.queue
        slot = self._handoffs.take(queue)
        if slot is None and queue in self._claiming:
            slot = await self._rejoin(queue)
        if slot is not None:
            return await self._push_to_reader(push, slot)
        if self._goes_ahead(push) and await self._push_ahead(push):
            return True
        return (await self._push_many([push]))[0]

    async def _push_many(self, pushes: Sequence[Push]) -> list[bool]:
        if not pushes:
            return []
        self._maybe_sweep()
        stored = await self._push_fast(pushes)
        rest = [i for i, push in enumerate(pushes) if push.queue not in stored]
        if not rest:
            return [True] * len(pushes)
        # New queues, full-looking queues: the function creates counters and deletes expired items first.
        slow = [pushes[i] for i in rest]
        results = [True] * len(pushes)
        for i, ok in zip(rest, await self._store(slow), strict=True):
            results[i] = ok
        return results

    async def _store(self, pushes: Sequence[Push]) -> list[bool]:
        args = ([p.queue for p in pushes], [p.item for p in pushes], [p.capacity for p in pushes],
                [p.deadline for p in pushes], time.time())
        return [bool(ok) for ok in await self._fetch_one(self._sql_store, args)]

    async def _push_fast(self, pushes: Sequence[Push]) -> set[str]:
        """The queues whose pushes were all stored by the one-statement path (existing counter, room for all)."""
        if len(pushes) == 1:
            push = pushes[0]
            params = [wire.encode_text(push.queue), push.item, wire.encode_int(push.capacity),
                      wire.encode_float(push.deadline)]
            result = await self._raw(self._st_push_one, params)
            return {push.queue} if result.ntuples else set()
        args = {"queues": [p.queue for p in pushes], "items": [p.item for p in pushes],
                "caps": [p.capacity for p in pushes], "deadlines": [p.deadline for p in pushes]}

        async def run(conn: Conn) -> set[str]:
            cur = await conn.execute(self._sql_push, args)
            return {row[0] for row in await cur.fetchall()}

        return await self._run(run)

    async def _rejoin(self, queue: str) -> Slot | None:
        """This backend's fill of ``queue`` if it parks within a few loop turns, waiting for its claim first.

        A push stored behind the back of a fill that is claiming would keep it one message behind (a push, a
        NOTIFY and a claim per message) for as long as a stream lasts; after its claim it usually parks at once."""
        for _ in range(self.rejoin_turns):
            claiming = self._claiming.get(queue)
            if claiming is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((claiming,), timeout=self.config.timeout)  # the claim has its own limit too
            slot = self._handoffs.take(queue)
            if slot is not None:
                return slot
        return None

    def _goes_ahead(self, push: Push) -> bool:
        """Whether to serve the fill of the push's queue before it parks again: it just delivered items and its
        queue held nothing more as far as we know (else the statement would find older items and the item would
        be stored after all: two statements instead of one)."""
        return (self._handoffs.between_fills(push.queue, asyncio.get_running_loop().time())
                and not self.listener.may_hold(push.queue))

    async def _push_ahead(self, push: Push) -> bool:
        """Serve a fill that is about to come back (its reader just got items and usually asks again at once).

        The statement goes now, while the receiver processes what it got, and the item goes into the feed when
        the next fill parks: only then has the core asked for it.  If the queue was not empty, or no fill parks
        within a few loop turns, the item is stored after all (False): its send has not returned yet, so the
        sender's order is kept."""
        items = await self._hand(push)
        if items is None:
            return False
        slot = self._handoffs.take(push.queue) or await self._rejoin(push.queue)
        if slot is None:
            return False
        self._handoffs.answer(push.queue, slot, items)
        self.handed += 1
        return True

    async def _push_to_reader(self, push: Push, slot: Slot) -> bool:
        """Push one item and claim the head of its queue for this backend's parked fill, up to its credit: one
        statement when the queue is empty (the common case), else a second one that claims older items first."""
        handed: list[bytes] | None = None
        status = HANDED
        try:
            handed = await self._hand(push)
            if handed is None:
                handed, status = await self._push_claiming(push, slot.credit)
        finally:
            self._handoffs.answer(push.queue, slot, handed)  # None (failed): the fill looks for itself
        self.handed += 1
        if status == NOT_STORED:  # full-looking or a new queue: the function cleans up and creates counters
            return (await self._store([push]))[0]
        return True

    async def _hand(self, push: Push) -> list[bytes] | None:
        """The item, if its queue holds nothing at all (see :func:`layers_postgres.schema.hand_sql`)."""
        result = await self._raw(self._st_hand, [wire.encode_text(push.queue), push.item])
        return [_value(result, 0, 0)] if result.ntuples else None

    async def _push_claiming(self, push: Push, limit: int) -> tuple[list[bytes], int]:
        """The items claimed for the fill and the push's status (see :func:`schema.push_claim_sql`)."""
        params = [wire.encode_text(push.queue), push.item, wire.encode_int(push.capacity),
                  wire.encode_float(push.deadline), wire.encode_int(limit), wire.encode_float(time.time())]
        result = await self._raw(self._st_push_claim, params)
        last = result.ntuples - 1
        claimed = [_value(result, row, 1) for row in range(last)]
        status = wire.decode_int4(_value(result, last, 2))
        if status == HANDED:
            claimed.append(push.item)  # the claim had room left: the new item is next in line, for the fill too
        else:
            self.listener.watch(push.queue).set()  # the claim took a full batch: there may be more
        return claimed, status

    async def fill(self, feed: Feed, credit: int, timeout: float) -> None:
        queue = feed.queue
        self._handoffs.filling(queue)
        try:
            items = await self._take(feed, credit, timeout)
            if items:
                feed.deliver(items)
        finally:
            self._handoffs.filled(queue, asyncio.get_running_loop().time())

    async def _take(self, feed: Feed, credit: int, timeout: float) -> list[bytes]:
        """What a claim found; [] when a push of ours delivered into ``feed`` instead, or nobody waits any more."""
        self._maybe_sweep()
        queue = feed.queue
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        wake = self.listener.watch(queue)
        while True:
            listening = self.listener.ready.is_set()
            if wake.is_set() or not listening:
                wake.clear()  # before the claim: a NOTIFY for anything the claim misses sets it again
                items = await self._claim(queue, credit)
                if len(items) >= credit:
                    wake.set()  # there may be more: look again next time without waiting
                if items:
                    return items
            remaining = end - loop.time()
            if remaining <= 0:
                # Safety net: rows another reader claimed and then rolled back come back without a NOTIFY.
                return await self._claim(queue, credit)
            if not listening:
                remaining = min(remaining, self.poll_interval)  # no wake-ups while it reconnects: poll
            if await self._park(feed, credit, wake, remaining):
                return []
            if self.gather_delay and "!" in queue and loop.time() - self._last_claim < 5 * self.gather_delay:
                # A stream into our process queue (we are its only reader): let a few more items land, so
                # one claim takes several.  An isolated message (no recent claim) is not delayed.
                await asyncio.sleep(self.gather_delay)

    async def _park(self, feed: Feed, credit: int, wake: Wake, seconds: float) -> bool:
        """Wait up to ``seconds`` for a NOTIFY (False: go and look) or for a push of ours that delivers into
        ``feed`` (True), or for our receivers to leave (True)."""
        if wake.pending:
            return False  # a NOTIFY (or a reconnect) came while we looked: look again
        queue = feed.queue
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        slot = self._handoffs.park(queue, feed, credit, future)
        wake.future = future
        timer = loop.call_later(seconds, slot.wake)  # cheaper than asyncio.timeout: this runs for every message
        try:
            await future
        finally:
            timer.cancel()
            wake.future = None
            self._handoffs.unpark(queue, slot)
        if slot.taken:
            await slot.settled()  # a claim now could overtake the items that push's statement holds
            if not slot.delivered:
                wake.set()  # the push failed (or claimed only expired items): look at the table
            return slot.delivered
        return slot.released

    async def _claim(self, queue: str, limit: int) -> list[bytes]:
        params = [wire.encode_text(queue), wire.encode_int(limit), wire.encode_float(time.time())]
        loop = asyncio.get_running_loop()
        claiming = self._claiming[queue] = loop.create_future()
        try:
            result = await self._raw(self._st_pop, params)
        finally:
            self._last_claim = loop.time()
            claiming.set_result(None)
            if self._claiming.get(queue) is claiming:
                del self._claiming[queue]
        return [_value(result, row, 0) for row in range(result.ntuples)]

    def stop_waiting(self, queue: str) -> None:
        self._handoffs.release(queue)  # a parked fill returns now, and no push of ours serves it any more

    async def close_feed(self, queue: str) -> None:
        await self._handoffs.settle(queue)  # a push serving the last fill delivers first
        self.listener.forget(queue)

    async def give_back(self, queue: str, items: Sequence[Unclaimed]) -> bool:
        """Store ``items`` again ahead of what ``queue`` holds, in order, beyond its capacity (they were admitted
        when they were sent), with one NOTIFY for readers elsewhere."""
        params = {"queue": queue, "items": [u.item for u in items], "deadlines": [u.deadline for u in items],
                  "now": time.time()}
        await self._execute(self._sql_give_back, params)
        return True

    async def group_add(self, group: str, channel: str, deadline: float) -> None:
        await self._execute(self._sql_group_add, (group, channel, deadline))

    async def group_discard(self, group: str, channel: str) -> None:
        await self._execute(self._sql_group_discard, (group, channel))

    async def group_members(self, group: str) -> list[str]:
        async def run(conn: Conn) -> list[str]:
            cur = await conn.execute(self._sql_group_members, (group, time.time()))
            return [row[0] for row in await cur.fetchall()]

        return await self._run(run)

    async def group_push(self, group: str, message: GroupMessage) -> int:
        """The whole fan-out in one statement: the server builds each process's bundle from ``message.head`` and
        ``message.payload`` (the envelope's layout), when one capacity applies to every member."""
        capacity = message.uniform_capacity
        if capacity is None:  # per-queue capacities: members, then one push
            return await super().group_push(group, message)
        args = (group, time.time(), capacity, message.deadline, message.named_item, message.head, message.payload)
        return int(await self._fetch_one(self._sql_group_push, args))

    async def flush(self) -> None:
        await self._execute(self._sql_flush, ())

    async def drop(self) -> None:
        """Drop the prefix's tables and functions (the next call creates them again)."""

        async def run(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.names.ddl_lock,))
                await conn.execute(drop_sql(self.names).encode(), prepare=False)

        await self._run(run)
        self.config.schema_ready = False

    async def ping(self) -> None:
        """``SELECT 1`` on a pooled connection (the first one also makes the tables, as any first call does)."""

        async def run(conn: Conn) -> None:
            await conn.execute("SELECT 1")

        await self._run(run)

    async def server_footprint(self) -> dict[str, int] | None:
        """Rows the layer's tables hold: stored items, queue counters (empty ones go at the next sweep) and
        group memberships (leak checks)."""
        n = self.names
        sql = (f"SELECT (SELECT count(*) FROM {n.msg}), (SELECT count(*) FROM {n.queue}), "
               f"(SELECT count(*) FROM {n.queue} WHERE n > 0), (SELECT count(*) FROM {n.grp})")

        async def run(conn: Conn) -> dict[str, int]:
            cur = await conn.execute(sql)
            row = await cur.fetchone()
            assert row is not None
            return dict(zip(("items", "counters", "nonempty_counters", "members"), map(int, row), strict=True))

        return await self._run(run)

    async def close(self) -> None:
        self._handoffs.clear()
        for task in list(self._tasks):
            task.cancel()
        await self.listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def abandon(self) -> None:
        self.listener.abandon()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- running statements --------------------------------------------------------------------------------

    async def _execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any]) -> None:
        async def run(conn: Conn) -> None:
            await conn.execute(sql, args)

        await self._run(run)

    async def _fetch_one(self, sql: str, args: Sequence[Any]) -> Any:
        async def run(conn: Conn) -> Any:
            cur = await conn.execute(sql, args)
            row = await cur.fetchone()
            assert row is not None
            return row[0]

        return await self._run(run)

    async def _raw(self, statement: Statement, params: Sequence[wire.Param]) -> wire.PGresult:
        prepared = self.config.prepared_statements

        async def run(conn: Conn) -> wire.PGresult:
            return await statement.run(conn, params, prepared)

        return await self._run(run)

    async def _run(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``op`` on a pooled connection within the layer's timeout, creating the tables on first use."""
        for attempt in (1, 2):
            try:
                pool = self._pool if self._pool is not None and self.config.schema_ready else await self._ready()
                async with _HardDeadline(self.config.timeout):
                    conn = await pool.acquire()
                    try:
                        return await op(conn)
                    finally:
                        pool.release(conn)
            except _MISSING as exc:
                if attempt == 2:
                    raise self._server_error(exc) from exc
                self.config.schema_ready = False  # someone dropped our objects: create them again
            except _UNAVAILABLE as exc:
                self._check_pool_soon()
                raise BackendUnavailable(
                    f"PostgreSQL at {redact_url(self.config.dsn)} is unavailable: {type(exc).__name__}: {exc}"
                ) from exc
            except psycopg.Error as exc:  # the server rejected this statement: retrying cannot help
                raise self._server_error(exc) from exc
        raise AssertionError("unreachable")

    def _server_error(self, exc: psycopg.Error) -> ServerError:
        return ServerError(f"PostgreSQL at {redact_url(self.config.dsn)} answered {type(exc).__name__}: {exc}")

    @staticmethod
    async def _on_connection(pool: Pool, op: Callable[[Conn], Awaitable[T]]) -> T:
        async with pool.connection() as conn:
            return await op(conn)

    async def _ready(self) -> Pool:
        if self._pool is not None and self.config.schema_ready:
            return self._pool
        async with self._ready_lock:
            if self._pool is None:
                self._pool = Pool(self._connect, self.config.max_pool_size)
            if not self.config.schema_ready:
                await asyncio.wait_for(self._on_connection(self._pool, self._ensure_schema), self.config.timeout)
                self.config.schema_ready = True
            return self._pool

    def _conn_kwargs(self) -> dict[str, Any]:
        # prepare_threshold=0 prepares every statement on first use; None never prepares (old PgBouncers).
        threshold = 0 if self.config.prepared_statements else None
        return {**self.config.connect_kwargs, "autocommit": True, "prepare_threshold": threshold}

    async def _connect(self) -> Conn:
        return await psycopg.AsyncConnection.connect(self.config.dsn, **self._conn_kwargs())

    async def _listen_connect(self) -> Conn:
        return await psycopg.AsyncConnection.connect(self.config.listen_dsn, **self._conn_kwargs())

    async def _ensure_schema(self, conn: Conn) -> None:
        """Create the tables and functions unless they exist at this VERSION; safe when many processes start."""
        if await _schema_version(conn, self.names) == VERSION:
            return
        for attempt in range(5):
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.names.ddl_lock,))
                    if await _schema_version(conn, self.names) != VERSION:
                        await conn.execute(create_sql(self.names, self.config.durable).encode(), prepare=False)
                return
            except _CREATE_RACES:  # another layer (other prefix) created the same schema at the same moment
                await asyncio.sleep(0.05 * (attempt + 1))
        raise BackendUnavailable(f"could not create the tables of prefix {self.names.prefix!r}")

    def _check_pool_soon(self) -> None:
        """After a connection error, drop the idle connections: after a server restart they are all dead."""
        if self._pool is not None:
            self._pool.drop_idle()

    # -- housekeeping --------------------------------------------------------------------------------------

    def _sweep_delay(self) -> float:
        return self.config.sweep_every * random.uniform(0.5, 1.5)  # jitter: processes do not sweep in step

    def _maybe_sweep(self) -> None:
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_delay()
            self._spawn(self._sweep(now))

    async def _sweep(self, now: float) -> None:
        try:
            deleted = await self._fetch_one(self._sql_sweep, (now, self.config.sweep_every))
        except Exception as exc:  # housekeeping never breaks a send or a receive
            log.debug("sweep failed: %s: %s", type(exc).__name__, exc)
        else:
            if deleted and deleted > 0:
                log.debug("swept %d expired item(s) under prefix %r", deleted, self.names.prefix)

    def _spawn(self, call: Coroutine[Any, Any, Any]) -> None:
        task = background_task(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _statement(kind: str, sql: str, types: list[int]) -> Statement:
    """A prepared statement named after its text, so layers with different prefixes never mix them up."""
    return Statement(f"layers_{kind}_{hashlib.sha1(sql.encode()).hexdigest()[:16]}", sql, types)


def _value(result: wire.PGresult, row: int, column: int) -> bytes:
    value = result.get_value(row, column)
    assert value is not None
    return value


class _HardDeadline:
    """``asyncio.timeout`` that also bounds psycopg's clean-up: psycopg answers the cancellation of a running
    query by asking the server to cancel it and waiting up to 10 s more (a frozen server never answers, so a send
    took ``timeout`` + 10 s); a second cancellation, ``grace`` later, makes it drop the connection at once.
    Raises ``TimeoutError`` when it cancelled the block; an outside cancellation stays a ``CancelledError``."""

    __slots__ = ("_cancels", "_handle", "_seconds", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancels = 0
        self._handle = asyncio.get_running_loop().call_later(self._seconds, self._expire)

    def _expire(self) -> None:
        self._cancels += 1
        self._task.cancel()
        if self._cancels == 1:
            grace = min(1.0, 0.25 * self._seconds)
            self._handle = asyncio.get_running_loop().call_later(grace, self._expire)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        self._handle.cancel()
        if not self._cancels:
            return
        outside = False
        uncancel = getattr(self._task, "uncancel", None)  # Python 3.11+: tell our cancellations from others
        if uncancel is not None:
            remaining = 0
            for _ in range(self._cancels):
                remaining = uncancel()
            outside = remaining > 0
        if exc_type is asyncio.CancelledError and not outside:
            raise asyncio.TimeoutError(f"no answer within {self._seconds}s") from exc


async def _schema_version(conn: Conn, names: Names) -> int | None:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (names.meta,))
    row = await cur.fetchone()
    if not row or not row[0]:
        return None
    cur = await conn.execute(f"SELECT version FROM {names.meta} WHERE id = 1")
    row = await cur.fetchone()
    return int(row[0]) if row else None
