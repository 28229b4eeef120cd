"""A push that claims the head of its queue for this process's parked fill, in the push's own statement, and
delivers into the fill's feed; items nobody claimed go back to the head of the queue."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from layers.backend import Push, Unclaimed
from layers_postgres.backend import PostgresBackend
from tests.feeds import fill

QUEUE = "hand.q"


def _backend(layer: Any) -> PostgresBackend:
    backend = layer._state().backend
    assert isinstance(backend, PostgresBackend)
    return backend


async def _parked_fill(backend: PostgresBackend, credit: int) -> asyncio.Task[list[bytes]]:
    """A fill of QUEUE that found nothing and now waits (parked) for a NOTIFY or a push of this backend."""
    task = asyncio.ensure_future(fill(backend, QUEUE, credit, 10.0))
    for _ in range(500):
        await asyncio.sleep(0.01)
        if QUEUE in backend._handoffs._parked:
            return task
    raise AssertionError("the fill never parked")


def _store_behind_its_back(sql: psycopg.Connection[Any], prefix: str, items: list[bytes], counted: int) -> None:
    """Rows another process stored whose NOTIFY has not arrived yet."""
    deadline = time.time() + 60
    sql.execute(f'INSERT INTO "{prefix}_queue" (queue, n) VALUES (%s, %s) '
                "ON CONFLICT (queue) DO UPDATE SET n = excluded.n", (QUEUE, counted))
    for item in items:
        sql.execute(f'INSERT INTO "{prefix}_msg" (queue, deadline, item) VALUES (%s, %s, %s)',
                    (QUEUE, deadline, item))


def _counter(sql: psycopg.Connection[Any], prefix: str) -> tuple[int, int]:
    """(counter value, rows) of QUEUE."""
    row = sql.execute(f'SELECT (SELECT n FROM "{prefix}_queue" WHERE queue = %s), '
                      f'(SELECT count(*) FROM "{prefix}_msg" WHERE queue = %s)', (QUEUE, QUEUE)).fetchone()
    assert row is not None
    return int(row[0] or 0), int(row[1])


def test_push_hands_the_oldest_item_and_stores_its_own(make_layer: Any, prefix: str,
                                                       sql: psycopg.Connection[Any]) -> None:
    """Older rows are claimed first (FIFO); the new item is stored behind them when the claim is full."""

    async def main() -> list[bytes]:
        layer = make_layer()
        await layer.send("hand.warmup", {})  # tables exist
        backend = _backend(layer)
        parked = await _parked_fill(backend, credit=1)
        _store_behind_its_back(sql, prefix, [b"a", b"b"], counted=2)
        assert await backend.push([Push(QUEUE, b"c", 10, time.time() + 60)]) == [True]
        got = await asyncio.wait_for(parked, 5)
        assert _counter(sql, prefix) == (2, 2)  # b and c stored, counted exactly
        for _ in range(2):
            got += await fill(backend, QUEUE, 1, 5.0)
        await layer.close()
        return got

    assert asyncio.run(main()) == [b"a", b"b", b"c"]
    assert _counter(sql, prefix) == (0, 0)


def test_push_hands_its_own_item_after_older_ones(make_layer: Any, prefix: str,
                                                  sql: psycopg.Connection[Any]) -> None:
    """A claim with room left takes the new item too, after the older ones, and stores no row for it."""

    async def main() -> list[bytes]:
        layer = make_layer()
        await layer.send("hand.warmup", {})
        backend = _backend(layer)
        parked = await _parked_fill(backend, credit=5)
        _store_behind_its_back(sql, prefix, [b"a", b"b"], counted=2)
        assert await backend.push([Push(QUEUE, b"c", 10, time.time() + 60)]) == [True]
        got = await asyncio.wait_for(parked, 5)
        await layer.close()
        return got

    assert asyncio.run(main()) == [b"a", b"b", b"c"]
    assert _counter(sql, prefix) == (0, 0)


def test_capacity_exact_when_pushing_to_a_parked_reader(make_layer: Any, prefix: str,
                                                        sql: psycopg.Connection[Any]) -> None:
    """The claimed item frees one place; the new item is refused when the queue is still full without it."""

    async def main() -> tuple[list[bytes], list[bool]]:
        layer = make_layer()
        await layer.send("hand.warmup", {})
        backend = _backend(layer)
        parked = await _parked_fill(backend, credit=1)
        _store_behind_its_back(sql, prefix, [b"a", b"b", b"c"], counted=3)
        stored = await backend.push([Push(QUEUE, b"d", 2, time.time() + 60)])  # 3 - 1 claimed = 2: full
        got = await asyncio.wait_for(parked, 5)
        stored += await backend.push([Push(QUEUE, b"e", 3, time.time() + 60)])  # 2 < 3: room for one
        stored += await backend.push([Push(QUEUE, b"f", 3, time.time() + 60)])
        await layer.close()
        return got, stored

    got, stored = asyncio.run(main())
    assert got == [b"a"]
    assert stored == [False, True, False]
    assert _counter(sql, prefix) == (3, 3)


async def _send_serving_a_parked_fill(layer: Any) -> tuple[PostgresBackend, asyncio.Future[Any], asyncio.Future[Any]]:
    """A receive parks a fill; a send's statement is claiming for it (not answered yet): (backend, receive, send)."""
    await layer.send("hand.warmup", {})
    backend = _backend(layer)
    receive = asyncio.ensure_future(layer.receive(QUEUE))
    for _ in range(500):
        await asyncio.sleep(0.01)
        if QUEUE in backend._handoffs._parked:
            break
    send = asyncio.ensure_future(layer.send(QUEUE, {"n": 1}))
    for _ in range(100):
        await asyncio.sleep(0)
        if QUEUE in backend._handoffs._serving:
            break
    assert QUEUE in backend._handoffs._serving, "the send did not take the parked fill"
    return backend, receive, send


async def _hand_to_a_receiver_that_leaves(layer: Any) -> PostgresBackend:
    """A send takes the parked fill, its receiver is cancelled before the push answers: the send returned, and
    the item is the core's (delivered into its feed) with nobody waiting for it."""
    backend, receive, send = await _send_serving_a_parked_fill(layer)
    receive.cancel()
    await send
    assert receive.cancelled()
    return backend


def test_items_handed_to_a_receiver_that_left_go_to_the_next_receive(make_layer: Any) -> None:
    async def main() -> Any:
        layer = make_layer()
        await _hand_to_a_receiver_that_leaves(layer)
        got = await asyncio.wait_for(layer.receive(QUEUE), 2)
        await layer.close()
        return got

    assert asyncio.run(main()) == {"n": 1}


def test_items_handed_to_a_receiver_that_left_are_stored_again_on_close(make_layer: Any) -> None:
    """The send returned (handed over), its receiver was cancelled, then the layer closed: the item is back in
    the table, for any reader."""

    async def main() -> Any:
        layer = make_layer()
        await _hand_to_a_receiver_that_leaves(layer)
        await layer.close()
        other = make_layer()
        got = await asyncio.wait_for(other.receive(QUEUE), 2)
        await other.close()
        return got

    assert asyncio.run(main()) == {"n": 1}


def test_given_back_items_go_to_the_head_of_the_queue_in_order(make_layer: Any, prefix: str,
                                                               sql: psycopg.Connection[Any]) -> None:
    """Ahead of what was stored meanwhile, counted (beyond capacity), expired ones dropped; into an empty queue
    too, ahead of what comes next."""

    async def main() -> tuple[list[bytes], tuple[int, int], list[bytes]]:
        layer = make_layer()
        await layer.send("hand.warmup", {})
        backend = _backend(layer)
        far = time.time() + 60
        assert await backend.push([Push(QUEUE, b"c", 1, far)]) == [True]
        assert await backend.give_back(QUEUE, [Unclaimed(b"a", far), Unclaimed(b"old", time.time() - 1),
                                               Unclaimed(b"b", far)])
        counted = _counter(sql, prefix)
        first = await fill(backend, QUEUE, 10, 1.0)
        assert await backend.give_back(QUEUE, [Unclaimed(b"x", far), Unclaimed(b"y", far)])
        assert await backend.push([Push(QUEUE, b"z", 10, far)]) == [True]
        second = await fill(backend, QUEUE, 10, 1.0)
        await layer.close()
        return first, counted, second

    first, counted, second = asyncio.run(main())
    assert first == [b"a", b"b", b"c"]
    assert counted == (3, 3)
    assert second == [b"x", b"y", b"z"]
    assert _counter(sql, prefix) == (0, 0)


def test_fifo_and_exactly_once_with_a_second_layer_reading(make_layer: Any) -> None:
    """Layer A sends to a named channel that A and B (its own connections) both read: each message arrives once,
    in order per reader, and A's pushes served A's reader directly."""
    count = 300

    async def main() -> tuple[list[int], list[int], int]:
        a, b = make_layer(capacity=1000), make_layer(capacity=1000)
        for n in range(20):  # a backlog, stored before anyone reads
            await a.send("hand.shared", {"n": n})
        got: dict[str, list[int]] = {"a": [], "b": []}
        done = asyncio.Event()

        async def read(name: str, layer: Any) -> None:
            while True:
                got[name].append((await layer.receive("hand.shared"))["n"])
                if len(got["a"]) + len(got["b"]) == count:
                    done.set()

        readers = [asyncio.ensure_future(read("a", a)), asyncio.ensure_future(read("b", b))]
        await asyncio.sleep(0.2)
        for n in range(20, count):
            await a.send("hand.shared", {"n": n})
        await asyncio.wait_for(done.wait(), 20)
        await asyncio.sleep(0.3)  # nothing else may arrive
        for reader in readers:
            reader.cancel()
        handed = _backend(a).handed
        await a.close()
        await b.close()
        return got["a"], got["b"], handed

    got_a, got_b, handed = asyncio.run(main())
    assert sorted(got_a + got_b) == list(range(count)), "lost or duplicated"
    assert got_a == sorted(got_a) and got_b == sorted(got_b), "FIFO per reader"
    assert handed > 0, "no push served the parked reader"


def test_a_reader_whose_receivers_left_is_not_served(make_layer: Any, prefix: str,
                                                     sql: psycopg.Connection[Any]) -> None:
    """After stop_waiting the parked fill returns empty and the next push stores its item for any reader."""

    async def main() -> tuple[list[bytes], int]:
        layer = make_layer()
        await layer.send("hand.warmup", {})
        backend = _backend(layer)
        parked = await _parked_fill(backend, credit=1)
        backend.stop_waiting(QUEUE)
        got = await asyncio.wait_for(parked, 1)
        assert await backend.push([Push(QUEUE, b"kept", 10, time.time() + 60)]) == [True]
        handed = backend.handed
        await layer.close()
        return got, handed

    assert asyncio.run(main()) == ([], 0)
    assert _counter(sql, prefix) == (1, 1)


def test_a_stream_from_this_process_stays_on_the_one_statement_path(make_layer: Any) -> None:
    """One producer awaits each send while a consumer of the same layer awaits each receive (the benchmark's
    shape): after a wake-up that made the reader claim by itself, the pushes serve the parked reader again instead
    of staying one message ahead of it (a push, a NOTIFY and a claim per message)."""
    count = 300

    async def main() -> tuple[list[int], int]:
        layer = make_layer(capacity=1000)
        got: list[int] = []

        async def consume() -> None:
            for _ in range(count):
                got.append((await layer.receive("hand.stream"))["n"])

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0.3)
        backend = _backend(layer)
        for n in range(count):
            if n == count // 2:
                backend.listener.watch("hand.stream").set()  # as a NOTIFY from elsewhere would
            await layer.send("hand.stream", {"n": n})
        await asyncio.wait_for(consumer, 20)
        handed = backend.handed
        await layer.close()
        return got, handed

    got, handed = asyncio.run(main())
    assert got == list(range(count))
    assert handed >= count * 0.9, f"only {handed} of {count} sends served the parked reader"


def test_a_send_ahead_of_a_reader_that_does_not_come_back_is_stored(make_layer: Any, prefix: str,
                                                                    sql: psycopg.Connection[Any]) -> None:
    """The reader just returned from a fill, so the send goes ahead of it; it does not fill again: the item is
    stored after all (counted, and there for the next reader), never held in the process."""

    async def main() -> tuple[list[bytes], int, int, tuple[int, int]]:
        layer = make_layer()
        await layer.send("hand.warmup", {})
        backend = _backend(layer)
        looks = []
        hand = backend._hand

        async def counted_hand(push: Push) -> list[bytes] | None:
            looks.append(push.item)
            return await hand(push)

        backend._hand = counted_hand  # type: ignore[method-assign]
        backend.listener.watch(QUEUE).clear()  # as if a fill found the queue empty and just returned
        backend._handoffs.filled(QUEUE, asyncio.get_running_loop().time())
        assert await backend.push([Push(QUEUE, b"kept", 10, time.time() + 60)]) == [True]
        counted = _counter(sql, prefix)
        got = await fill(backend, QUEUE, 1, 1.0)
        handed = backend.handed
        await layer.close()
        return got, len(looks), handed, counted

    got, looks, handed, counted = asyncio.run(main())
    assert looks == 1, "the send did not go ahead of the reader"
    assert counted == (1, 1)
    assert got == [b"kept"] and handed == 0


def test_sends_made_while_one_is_on_its_way_go_together(make_layer: Any) -> None:
    """A lone send goes at once; the 99 made while it is on its way are merged into few statements."""

    async def main() -> tuple[int, list[int]]:
        layer = make_layer(capacity=200)
        await layer.send("batch.q", {"n": -1})
        backend = _backend(layer)
        calls: list[int] = []
        push_many = backend._push_many

        async def counted(pushes: Any) -> list[bool]:
            calls.append(len(pushes))
            return await push_many(pushes)

        backend._push_many = counted  # type: ignore[method-assign]
        await asyncio.gather(*(layer.send("batch.q", {"n": n}) for n in range(100)))
        got = [(await layer.receive("batch.q"))["n"] for _ in range(101)]
        await layer.close()
        return len(calls), got

    statements, got = asyncio.run(main())
    assert sorted(got) == list(range(-1, 100))
    assert statements <= 5, f"{statements} statements for 100 concurrent sends"


def test_a_wake_up_during_a_claim_is_not_lost(make_layer: Any, prefix: str, sql: psycopg.Connection[Any]) -> None:
    """A NOTIFY that arrives while the reader claims (after its snapshot) makes it look again instead of parking
    until the next poll."""

    async def main() -> tuple[list[bytes], float]:
        layer = make_layer()
        await layer.send("hand.warmup", {})
        backend = _backend(layer)
        claim = backend._claim
        calls: list[int] = []

        async def claim_then_notified(queue: str, limit: int) -> list[bytes]:
            items = await claim(queue, limit)
            if not calls:
                _store_behind_its_back(sql, prefix, [b"late"], counted=1)
                backend.listener.watch(queue).set()  # its NOTIFY, as the listener delivers it
            calls.append(len(items))
            return items

        backend._claim = claim_then_notified  # type: ignore[method-assign]
        backend.listener.watch("hand.other")
        await asyncio.wait_for(backend.listener.ready.wait(), 5)  # listening: only a wake-up ends the wait
        started = time.monotonic()
        got = await fill(backend, QUEUE, 1, 5.0)
        elapsed = time.monotonic() - started
        await layer.close()
        return got, elapsed

    got, elapsed = asyncio.run(main())
    assert got == [b"late"]
    assert elapsed < 1.0, f"the reader parked for {elapsed:.2f}s"


def test_an_item_a_push_is_handing_over_when_the_layer_closes_is_stored_again(make_layer: Any) -> None:
    """The layer closes while a send's statement claims for the parked fill: close waits for that push, and the
    item, delivered to nobody, is back in the table."""

    async def main() -> Any:
        layer = make_layer()
        _, receive, send = await _send_serving_a_parked_fill(layer)
        receive.cancel()
        await layer.close()
        await send
        other = make_layer()
        got = await asyncio.wait_for(other.receive(QUEUE), 2)
        await other.close()
        return got

    assert asyncio.run(main()) == {"n": 1}
