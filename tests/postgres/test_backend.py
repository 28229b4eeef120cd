"""What the PostgreSQL layer adds beyond the conformance suite, on the shared server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from layers import ChannelFull
from layers_postgres import PostgresChannelLayer
from tests.feeds import fill

ROOT = Path(__file__).resolve().parents[2]


def test_tables_created_once_when_many_start_at_once(make_layer: Any, prefix: str,
                                                     sql: psycopg.Connection[Any]) -> None:
    """Eight layers (own loops, own connections) create the same fresh tables at the same moment."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def start(index: int) -> None:
        async def main() -> None:
            layer = make_layer()
            barrier.wait()
            await layer.send(f"start.{index}", {"i": index})
            assert await layer.receive(f"start.{index}") == {"i": index}
            await layer.close()

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sql.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{prefix}_msg"',)).fetchone() == (True,)


def test_large_messages_beyond_the_notify_limit(make_layer: Any) -> None:
    async def main() -> None:
        layer = make_layer()
        channel = await layer.new_channel()
        for size in (8_001, 100_000, 900_000):
            await layer.send(channel, {"body": b"x" * size})
            await layer.send("big.named", {"body": "y" * size})
            assert len((await layer.receive(channel))["body"]) == size
            assert len((await layer.receive("big.named"))["body"]) == size
        await layer.close()

    asyncio.run(main())


def test_capacity_exact_under_concurrent_senders(make_layer: Any) -> None:
    """Four instances, each on its own loop and connections, race 200 sends into a queue of capacity 50."""
    outcomes: list[bool] = []
    lock = threading.Lock()

    def sender(index: int) -> None:
        async def main() -> None:
            layer = make_layer(capacity=50)

            async def one(n: int) -> bool:
                try:
                    await layer.send("cap.race", {"n": n})
                    return True
                except ChannelFull:
                    return False

            results = await asyncio.gather(*(one(index * 100 + n) for n in range(50)))
            with lock:
                outcomes.extend(results)
            await layer.close()

        asyncio.run(main())

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 200 and outcomes.count(True) == 50

    async def drain() -> int:
        layer = make_layer(capacity=50)
        count = 0
        with pytest.raises(asyncio.TimeoutError):
            while True:
                await asyncio.wait_for(layer.receive("cap.race"), 1.0)
                count += 1
        await layer.close()
        return count

    assert asyncio.run(drain()) == 50


def test_expired_items_stop_counting_and_are_swept(make_layer: Any, prefix: str,
                                                   sql: psycopg.Connection[Any]) -> None:
    async def main() -> None:
        layer = make_layer(capacity=2, expiry=0.5)
        await layer.send("exp.q", {"n": 1})
        await layer.send("exp.q", {"n": 2})
        with pytest.raises(ChannelFull):
            await layer.send("exp.q", {"n": 3})
        await asyncio.sleep(0.7)
        await layer.send("exp.q", {"n": 4})  # the expired two no longer count
        await layer.send(await layer.new_channel(), {"left": "to expire"})
        assert await layer.receive("exp.q") == {"n": 4}
        await asyncio.sleep(0.7)
        backend = layer._state().backend
        await backend._sweep(time.time())
        await layer.close()

    asyncio.run(main())
    assert sql.execute(f'SELECT count(*) FROM "{prefix}_msg"').fetchone() == (0,)
    assert sql.execute(f'SELECT count(*) FROM "{prefix}_queue"').fetchone() == (0,)


def test_group_send_server_side_and_pattern_fallback(make_layer: Any) -> None:
    """Uniform capacity: one server statement; channel_capacity patterns: the generic path.  Same result."""
    async def run(layer: PostgresChannelLayer) -> int:
        local = [await layer.new_channel() for _ in range(3)]
        members = [*local, "grp.named.a", "grp.named.b"]
        for channel in members:
            await layer.group_add("g", channel)
        for i in range(3):
            await layer.group_send("g", {"i": i})
        for channel in members:
            assert [await layer.receive(channel) for _ in range(2)] == [{"i": 0}, {"i": 1}]
        await layer.flush()
        await layer.close()
        return layer.group_drops

    # capacity 2: the third group_send drops every member (3 local in one bundle + 2 named).
    assert asyncio.run(run(make_layer(capacity=2))) == 5
    assert asyncio.run(run(make_layer(capacity=2, channel_capacity={"grp.*": 2}))) == 5


def test_durable_option_makes_logged_tables(dsn: str, prefix: str, sql: psycopg.Connection[Any]) -> None:
    async def main(durable: bool, name: str) -> None:
        layer = PostgresChannelLayer(dsn, prefix=name, durable=durable)
        await layer.send("d", {})
        await layer.close()

    asyncio.run(main(False, prefix))
    assert sql.execute("SELECT relpersistence FROM pg_class WHERE relname = %s", (f"{prefix}_msg",)).fetchone() \
        == ("u",)
    durable_prefix = prefix + "d"
    try:
        asyncio.run(main(True, durable_prefix))
        row = sql.execute("SELECT relpersistence FROM pg_class WHERE relname = %s", (f"{durable_prefix}_msg",))
        assert row.fetchone() == ("p",)
    finally:
        from layers_postgres import drop_ddl

        sql.execute(drop_ddl(durable_prefix).encode())


def test_listen_connection_killed_then_recovered(make_layer: Any, sql: psycopg.Connection[Any]) -> None:
    """pg_terminate_backend on the LISTEN session: a pending receive still gets what is sent afterwards."""
    async def main() -> None:
        layer = make_layer()
        channel = await layer.new_channel()
        pending = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.3)
        listener = layer._state().backend.listener
        assert listener.ready.is_set() and listener.conn is not None
        before = listener.connects
        sql.execute("SELECT pg_terminate_backend(%s)", (listener.conn.info.backend_pid,))
        await asyncio.sleep(0.05)
        await layer.send(channel, {"after": "kill"})  # possibly while the listener is still down
        assert await asyncio.wait_for(pending, 5) == {"after": "kill"}
        await asyncio.wait_for(listener.ready.wait(), 5)
        assert listener.connects == before + 1
        await layer.send(channel, {"wake": "up"})  # woken by NOTIFY again, not by polling
        started = time.monotonic()
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"wake": "up"}
        assert time.monotonic() - started < 0.4
        await layer.close()

    asyncio.run(main())


def test_pool_connections_killed(make_layer: Any, sql: psycopg.Connection[Any], prefix: str) -> None:
    """Every session of the layer terminated: at most one call fails (BackendUnavailable), then it works."""
    from layers import BackendUnavailable

    async def main() -> None:
        layer = make_layer()
        await layer.send("pool.q", {"n": 0})
        assert await layer.receive("pool.q") == {"n": 0}
        sql.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND query LIKE %s", (f"%{prefix}%",))
        failures = 0
        for n in range(1, 4):
            try:
                await layer.send("pool.q", {"n": n})
            except BackendUnavailable:
                failures += 1
        assert failures <= 1
        assert len([await layer.receive("pool.q") for _ in range(3 - failures)]) == 3 - failures
        await layer.close()

    asyncio.run(main())


def test_exactly_once_with_readers_in_several_processes(dsn: str, prefix: str) -> None:
    """Three processes read one named channel; 300 messages arrive once each, none twice, none lost."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    readers = [subprocess.Popen([sys.executable, str(Path(__file__).with_name("_reader.py")), dsn, prefix,
                                 "work.once"], stdout=subprocess.PIPE, env=env) for _ in range(3)]

    async def produce() -> None:
        layer = PostgresChannelLayer(dsn, prefix=prefix, capacity=1000)
        for _ in readers:
            await asyncio.wait_for(layer.receive("work.once.ready"), 30)
        await asyncio.sleep(0.3)
        for n in range(300):
            await layer.send("work.once", {"n": n})
        await layer.close()

    try:
        asyncio.run(produce())
        outputs = [json.loads(reader.communicate(timeout=60)[0]) for reader in readers]
    finally:
        for reader in readers:
            reader.kill()
    everything = [n for got in outputs for n in got]
    assert sorted(everything) == list(range(300)), "lost or duplicated"
    assert sum(1 for got in outputs if got) >= 2, f"one reader took everything: {[len(g) for g in outputs]}"
    for got in outputs:
        assert got == sorted(got), "FIFO per reader"


def test_claims_stay_indexed_when_the_table_grows_after_the_first_claims(make_layer: Any, prefix: str,
                                                                          sql: psycopg.Connection[Any]) -> None:
    """Prepared claims keep the generic plan of their first runs, made while the table was empty: they must still
    find rows through the index once other queues hold many rows (a ctid-based delete scanned the whole table:
    ~6 ms per claim at 100k rows)."""
    from layers_postgres.backend import PostgresBackend

    async def main() -> float:
        layer = make_layer()
        await layer.send("grow.warmup", {})
        backend = layer._state().backend
        assert isinstance(backend, PostgresBackend)
        for _ in range(12):  # past PostgreSQL's 5 custom plans: the generic plan is made on an empty queue
            assert await fill(backend, "grow.mine", 1, 0.0) == []
        sql.execute(f'INSERT INTO "{prefix}_msg" (queue, deadline, item) '
                    "SELECT 'grow.other', 1e12, 'x'::bytea FROM generate_series(1, 100000)")
        sql.execute(f'INSERT INTO "{prefix}_msg" (queue, deadline, item) '
                    "SELECT 'grow.mine', 1e12, 'x'::bytea FROM generate_series(1, 100)")
        started = time.perf_counter()
        for _ in range(100):
            assert len(await fill(backend, "grow.mine", 1, 0.0)) == 1
        elapsed = time.perf_counter() - started
        await layer.close()
        return elapsed

    elapsed = asyncio.run(main())
    assert elapsed < 0.3, f"100 claims took {elapsed:.3f}s: the claim scans the table"


def test_drop_leaves_nothing_of_the_prefix(make_layer: Any, prefix: str, sql: psycopg.Connection[Any]) -> None:
    """layer.drop(): no table, index or function of the prefix is left; the layer works again afterwards."""

    def objects() -> list[str]:
        rows = sql.execute("SELECT relname FROM pg_class WHERE relname LIKE %s UNION ALL "
                           "SELECT proname FROM pg_proc WHERE proname LIKE %s", (prefix + "%", prefix + "%"))
        return sorted(row[0] for row in rows.fetchall())

    async def main() -> tuple[list[str], list[str], Any]:
        layer = make_layer()
        await layer.group_add("g", "drop.a")
        await layer.send("drop.a", {"n": 1})
        before = objects()
        await layer.drop()
        after = objects()
        await layer.send("drop.a", {"n": 2})  # recreated on use
        got = await asyncio.wait_for(layer.receive("drop.a"), 5)
        await layer.drop()
        await layer.close()
        return before, after, got

    before, after, got = asyncio.run(main())
    assert len(before) >= 9, before  # 4 tables, the index, 5 functions
    assert after == []
    assert got == {"n": 2}
    assert objects() == []


def test_a_sql_error_is_a_server_error_with_the_driver_error_chained(make_layer: Any) -> None:
    """Neither unavailable nor a refusal: the server rejected this one statement (an int4 out of range)."""
    from layers import ServerError
    from layers.backend import Push

    async def main() -> BaseException:
        layer = make_layer()
        await layer.send("err.warmup", {})
        backend = layer._state().backend
        try:
            await backend.push([Push("err.q", b"x", 2**40, time.time() + 60)])
        except ServerError as exc:
            return exc
        finally:
            await layer.close()
        raise AssertionError("no error")

    error = asyncio.run(main())
    assert isinstance(error.__cause__, psycopg.errors.NumericValueOutOfRange), repr(error.__cause__)
