"""PostgreSQL primary + streaming standby: the primary dies, the standby is promoted, the layer carries on.

Both layers connect with one multi-host DSN and ``target_session_attrs=read-write`` (libpq tries the hosts in
order and keeps the one that accepts writes), so after the promotion every new connection — the pool's and the
LISTEN session's — lands on the new primary without the layer being rebuilt.

* ``durable=True`` with a synchronous standby: nothing whose ``send`` returned is lost, not the backlog stored
  before the crash nor the traffic around it (a claim the dead primary committed but whose answer never arrived
  would be lost, at-most-once; the figures count it).
* the default UNLOGGED tables are not replicated at all: after the promotion they are empty, though the layer
  works on at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from layers_postgres import PostgresChannelLayer
from tests.servers.postgres import PostgresStandbyPair, postgres_available

from .traffic import Stream, check, run_failover

TIMEOUT = 2.0
BACKLOG = 50
LAG_LIMIT = 3.0  # seconds the layer may take beyond the promotion (the LISTEN session backs off up to 2 s)


@pytest.fixture
def standby_pair() -> Iterator[PostgresStandbyPair]:
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    pair = PostgresStandbyPair(synchronous=True).start()
    try:
        yield pair
    finally:
        pair.stop()


def _fail_over(pair: PostgresStandbyPair) -> Callable[[], tuple[float, float]]:
    def fault() -> tuple[float, float]:
        killed_at = time.monotonic()
        pair.primary.kill()
        pair.promote()
        return killed_at, time.monotonic()

    return fault


def test_primary_crash_durable_failover(standby_pair: PostgresStandbyPair, prefix: str,
                                        record: Callable[..., None]) -> None:
    pair = standby_pair

    async def scenario() -> None:
        producer = PostgresChannelLayer(pair.dsn, prefix=prefix, durable=True, timeout=TIMEOUT)
        consumer = PostgresChannelLayer(pair.dsn, prefix=prefix, durable=True, timeout=TIMEOUT)
        process = [await consumer.new_channel() for _ in range(3)]
        members = [process[2], "named.member"]
        for member in members:
            await consumer.group_add("room", member)
        idle = [await consumer.new_channel(), "idle.named"]
        backlog = await consumer.new_channel()
        for i in range(BACKLOG):  # stored, unread, when the primary dies
            await producer.send("backlog.named", {"i": i})
            await producer.send(backlog, {"i": i})
        listener = consumer._state().backend.listener  # type: ignore[attr-defined]
        connects_before = listener.connects

        streams = [Stream(process[0], affected=True), Stream(process[1], affected=True),
                   Stream("named.a", affected=True), Stream("named.b", affected=True),
                   Stream("room", affected=True, group=True, members=members)]
        report = await run_failover(producer, consumer, streams, idle, _fail_over(pair), TIMEOUT)
        kept = [(await asyncio.wait_for(consumer.receive(channel), 10))["i"]
                for channel in ("backlog.named", backlog) for _ in range(BACKLOG)]
        figures = {**report.figures(), "backlog_kept": len(kept), "backlog_stored": 2 * BACKLOG,
                   "listen_reconnects": listener.connects - connects_before}
        record("postgres primary crash + promote (durable, synchronous standby)", **figures)
        check(report)
        assert kept == list(range(BACKLOG)) * 2, kept
        assert figures["lost_sent_before_kill"] == 0, figures
        assert figures["listen_reconnects"] >= 1, figures  # the LISTEN session moved to the new primary
        assert listener.conn is not None and listener.conn.info.port == pair.standby.port
        assert figures["lag_behind_cluster_s"] <= LAG_LIMIT, figures
        await consumer.flush()
        await producer.close()
        await consumer.close()

    asyncio.run(asyncio.wait_for(scenario(), 240))


def test_unlogged_tables_are_not_replicated(standby_pair: PostgresStandbyPair, prefix: str,
                                            record: Callable[..., None]) -> None:
    """The default (``durable=False``) keeps messages in UNLOGGED tables: fast, and not in the WAL, so a standby
    never has them.  A clean stop of the primary loses them too, once the standby takes over."""
    pair = standby_pair

    async def scenario() -> None:
        layer = PostgresChannelLayer(pair.dsn, prefix=prefix, timeout=TIMEOUT)
        me = await layer.new_channel()
        await layer.group_add("room", me)
        for i in range(10):
            await layer.send("stored.named", {"i": i})
        await layer.send(me, {"stored": True})
        assert await layer.receive("stored.named") == {"i": 0}  # the table works before the failover

        pair.primary.stop(cleanup=False)  # a clean shutdown: everything in the WAL reached the standby
        await asyncio.to_thread(pair.promote)
        started = time.monotonic()
        while True:  # the same layer object moves to the new primary
            try:
                await layer.send("after.named", {"after": 1})
                break
            except Exception:
                assert time.monotonic() - started < 30, "the layer did not reach the promoted standby"
                await asyncio.sleep(0.1)
        assert await asyncio.wait_for(layer.receive("after.named"), 10) == {"after": 1}
        with pytest.raises(asyncio.TimeoutError):  # the 9 unread messages and the group did not survive
            await asyncio.wait_for(layer.receive("stored.named"), 1.5)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(me), 0.5)
        await layer.group_send("room", {"group": 1})
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(me), 1.0)
        record("postgres UNLOGGED (default) + promote", stored_before=11, kept_after=0,
               group_members_kept=0, recovered_s=round(time.monotonic() - started, 2))
        await layer.flush()
        await layer.close()

    asyncio.run(asyncio.wait_for(scenario(), 180))
