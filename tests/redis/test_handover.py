"""Hand-over of pushes to armed readers over Pub/Sub: nothing lost, nothing duplicated, order kept."""

from __future__ import annotations

import asyncio

import redis

from layers.backend import Push
from layers_redis.backend import RedisBackend
from layers_redis.hosts import parse_hosts
from tests.redis.helpers import run

FAR = 4_000_000_000.0  # a deadline far in the future


def backend(url: str, prefix: str) -> RedisBackend:
    return RedisBackend(parse_hosts([url]), prefix, timeout=2.0, max_connections=4)


async def _armed(client: redis.Redis, key: str, tokens: int) -> None:
    for _ in range(500):  # polling the server: there is no event to wait on
        if client.llen(key) >= tokens:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} never got {tokens} tokens")


def test_handed_over_items_survive_close(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """Items handed to a reader but not yet returned go back to the head of the queue on close()."""
    async def scenario() -> None:
        reader, writer = backend(shared_url, prefix), backend(shared_url, prefix)
        pop = asyncio.create_task(reader.pop("q", 5, 5.0))
        await _armed(shared_client, reader.readers_key("q"), 5)
        assert await writer.push([Push("q", b"m%d" % i, 100, FAR) for i in range(3)]) == [True] * 3
        first = await pop  # returns as soon as something arrived: at least m0
        assert first and first == [b"m%d" % i for i in range(len(first))]
        await asyncio.sleep(0.1)  # the rest arrive in the reader's inbox
        await reader.close()
        assert shared_client.llen(reader.readers_key("q")) == 0  # tokens withdrawn
        rest = await writer.pop("q", 10, 0)
        assert first + rest == [b"m0", b"m1", b"m2"]
        await writer.flush()
        await writer.close()

    run(scenario())


def test_tokens_of_a_dead_reader_are_skipped(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """A reader whose connection died leaves tokens behind: pushes skip them and store the item instead."""
    async def scenario() -> None:
        reader, writer = backend(shared_url, prefix), backend(shared_url, prefix)
        pop = asyncio.create_task(reader.pop("q", 3, 5.0))
        await _armed(shared_client, reader.readers_key("q"), 3)
        pop.cancel()
        reader.abandon()  # like a process that died: sockets closed, tokens still registered
        await asyncio.sleep(0.2)
        assert shared_client.llen(reader.readers_key("q")) == 3
        assert await writer.push([Push("q", b"kept", 100, FAR)]) == [True]
        assert shared_client.llen(reader.readers_key("q")) == 0  # tried and dropped
        assert await writer.pop("q", 10, 0) == [b"kept"]
        await writer.flush()
        await writer.close()

    run(scenario())


def test_competing_readers_share_and_never_duplicate(shared_url: str, prefix: str) -> None:
    async def scenario() -> None:
        readers = [backend(shared_url, prefix) for _ in range(3)]
        writer = backend(shared_url, prefix)
        got: list[bytes] = []

        async def read(b: RedisBackend) -> None:
            while True:
                got.extend(await b.pop("work", 1, 1.0))

        tasks = [asyncio.create_task(read(b)) for b in readers]
        await asyncio.sleep(0.2)
        for i in range(200):
            assert await writer.push([Push("work", b"%d" % i, 1000, FAR)]) == [True]
        for _ in range(100):  # polling: the readers run on their own
            if len(got) >= 200:
                break
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for b in readers:
            await b.close()  # puts back anything handed over but not returned
        got.extend(await writer.pop("work", 1000, 0))
        assert sorted(got, key=int) == [b"%d" % i for i in range(200)]
        await writer.flush()
        await writer.close()

    run(scenario())


def test_capacity_counts_only_stored_items(shared_url: str, prefix: str) -> None:
    """While a reader is armed, pushes are handed over and the queue stays empty; capacity applies once full."""
    async def scenario() -> None:
        writer = backend(shared_url, prefix)
        assert await writer.push([Push("cap", b"x", 2, FAR) for _ in range(3)]) == [True, True, False]
        assert await writer.pop("cap", 10, 0) == [b"x", b"x"]
        await writer.flush()
        await writer.close()

    run(scenario())


def test_a_reader_that_stops_gives_items_back(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """Items handed to a process that stopped popping go back to the queue after a second, tokens withdrawn."""
    async def scenario() -> None:
        reader, writer = backend(shared_url, prefix), backend(shared_url, prefix)
        pop = asyncio.create_task(reader.pop("q", 4, 5.0))
        await _armed(shared_client, reader.readers_key("q"), 4)
        assert await writer.push([Push("q", b"first", 100, FAR)]) == [True]
        assert await pop == [b"first"]  # the reader stops here; 3 tokens are still registered
        assert await writer.push([Push("q", b"%d" % i, 100, FAR) for i in range(2)]) == [True, True]
        assert shared_client.llen(reader.queue_key("q")) == 0  # handed over, not stored
        await asyncio.sleep(1.6)
        assert shared_client.llen(reader.readers_key("q")) == 0
        assert await writer.pop("q", 10, 0) == [b"0", b"1"]
        assert not reader.shards[0]._inboxes  # nothing kept for a queue nobody reads  # type: ignore[attr-defined]
        await reader.close()
        await writer.flush()
        await writer.close()

    run(scenario())


def test_an_item_handed_over_before_a_rearm_comes_before_what_the_rearm_pops(
        shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """A reader whose lease ran out re-arms while a hand-over is still on its way over the subscriber connection
    (in a server freeze: a push that ran at SIGCONT with the pusher's old clock).  The re-arm pops what was stored
    after that hand-over; the reader must still return the hand-over first.  Seen in the fault suite:
    ``redis/freeze`` delivered 22 before 21."""
    async def scenario() -> None:
        reader, writer = backend(shared_url, prefix), backend(shared_url, prefix)
        pop = asyncio.create_task(reader.pop("q", 1, 5.0))
        await _armed(shared_client, reader.readers_key("q"), 1)
        subscriber = reader.shards[0].subscriber  # type: ignore[attr-defined]
        subscriber._transport.pause_reading()  # the hand-over stays in the socket, as under a burst at SIGCONT
        assert await writer.push([Push("q", b"first", 100, FAR)]) == [True]  # handed over (the one token)
        assert await writer.push([Push("q", b"second", 100, FAR)]) == [True]  # no token left: stored
        assert shared_client.llen(reader.queue_key("q")) == 1
        assert await pop == []  # the lease ran out without an arrival read
        second_pop = asyncio.create_task(reader.pop("q", 1, 5.0))  # re-arms: pops "second"
        await asyncio.sleep(0.3)
        subscriber._transport.resume_reading()
        got = [await second_pop]
        got.append(await reader.pop("q", 1, 5.0))
        assert got == [[b"first"], [b"second"]]
        await reader.close()
        await writer.flush()
        await writer.close()

    run(scenario())
