"""Hand-over of pushes to armed readers over Pub/Sub: nothing lost, nothing duplicated, order kept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from layers.backend import Push, Unclaimed
from layers_redis import RedisChannelLayer
from layers_redis.backend import RedisBackend
from layers_redis.hosts import parse_hosts
from layers_redis.scripts import unframe
from layers_redis.wire import LinkError
from tests.feeds import ListFeed
from tests.redis.helpers import run

FAR = 4_000_000_000.0  # a deadline far in the future


def backend(url: str, prefix: str) -> RedisBackend:
    return RedisBackend(parse_hosts([url]), prefix, timeout=2.0, max_connections=4)


def stored(client: redis.Redis, backend: RedisBackend, queue: str) -> list[bytes]:
    """The items the server holds in ``queue``, head first."""
    return [unframe(element) for element in client.lrange(backend.queue_key(queue), 0, -1)]


async def _armed(client: redis.Redis, key: str, tokens: int) -> None:
    for _ in range(500):  # polling the server: there is no event to wait on
        if client.llen(key) >= tokens:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} never got {tokens} tokens")


async def _delivered(feed: ListFeed, count: int) -> None:
    for _ in range(500):  # polling: hand-overs arrive on the subscriber connection by themselves
        if len(feed.items) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{feed.queue} got {len(feed.items)} of {count} items")


def _socket(link: Any) -> Any:
    """The transport under a link, to pause its reading; the plain driver path (LAYERS_PLAIN_DRIVERS) has none."""
    if link._transport is None:
        pytest.skip("pauses a socket under the link: needs the transport take-over")
    return link._transport


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_hand_overs_reach_the_feed_and_go_back_to_the_head(shared_url: str, shared_client: redis.Redis,
                                                            prefix: str) -> None:
    """Armed tokens deliver pushes straight into the feed; close_feed withdraws them, and give_back puts what
    nobody claimed in front of what was stored since."""
    async def scenario() -> None:
        reader, writer = backend(shared_url, prefix), backend(shared_url, prefix)
        feed = ListFeed("q")
        fill = asyncio.create_task(reader.fill(feed, 5, 5.0))
        await _armed(shared_client, reader.readers_key("q"), 5)
        assert await writer.push([Push("q", b"m%d" % i, 100, FAR) for i in range(3)]) == [True] * 3
        await _delivered(feed, 3)
        assert feed.items == [b"m0", b"m1", b"m2"]
        assert not fill.done()  # two tokens are left: the fill waits for them
        await _cancel(fill)  # as the core does on close
        await reader.close_feed("q")
        assert shared_client.llen(reader.readers_key("q")) == 0  # tokens withdrawn
        assert await writer.push([Push("q", b"later", 100, FAR)]) == [True]  # stored, not handed over
        assert await reader.give_back("q", [Unclaimed(item, FAR) for item in feed.items[1:]])
        assert stored(shared_client, writer, "q") == [b"m1", b"m2", b"later"]
        assert shared_client.pttl(reader.queue_key("q")) > 0
        await reader.close()
        await writer.flush()
        await writer.close()

    run(scenario())


def test_given_back_items_expire_with_their_queue(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """Items given back to a queue that no longer exists on the server make it again with a TTL, so a queue
    nobody reads any more does not stay behind for good."""
    async def scenario() -> None:
        reader = backend(shared_url, prefix)
        assert await reader.give_back("gone", [Unclaimed(b"x", FAR)])
        assert stored(shared_client, reader, "gone") == [b"x"]
        assert shared_client.pttl(reader.queue_key("gone")) > 0
        await reader.flush()
        await reader.close()

    run(scenario())


def test_tokens_of_a_dead_reader_are_skipped(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """A reader whose connection died leaves tokens behind: pushes skip them and store the item instead."""
    async def scenario() -> None:
        reader, writer = backend(shared_url, prefix), backend(shared_url, prefix)
        fill = asyncio.create_task(reader.fill(ListFeed("q"), 3, 5.0))
        await _armed(shared_client, reader.readers_key("q"), 3)
        await _cancel(fill)
        shard = reader.shards[0]
        for link in (shard.subscriber, shard.commands):  # type: ignore[attr-defined]
            link.fail(LinkError("the process died"))  # sockets dropped, tokens still registered
        await asyncio.sleep(0.2)
        assert shared_client.llen(reader.readers_key("q")) == 3
        assert await writer.push([Push("q", b"kept", 100, FAR)]) == [True]
        assert shared_client.llen(reader.readers_key("q")) == 0  # tried and dropped
        assert stored(shared_client, writer, "q") == [b"kept"]
        await writer.flush()
        await writer.close()

    run(scenario())


def test_competing_readers_share_and_never_duplicate(shared_url: str, shared_client: redis.Redis,
                                                     prefix: str) -> None:
    async def scenario() -> None:
        readers = [backend(shared_url, prefix) for _ in range(3)]
        feeds = [ListFeed("work") for _ in readers]
        writer = backend(shared_url, prefix)

        async def read(b: RedisBackend, feed: ListFeed) -> None:
            while True:
                await b.fill(feed, 1, 1.0)

        tasks = [asyncio.create_task(read(b, feed)) for b, feed in zip(readers, feeds, strict=True)]
        await asyncio.sleep(0.2)
        for i in range(200):
            assert await writer.push([Push("work", b"%d" % i, 1000, FAR)]) == [True]
        for _ in range(100):  # polling: the readers run on their own
            if sum(len(feed.items) for feed in feeds) >= 200:
                break
            await asyncio.sleep(0.05)
        for task in tasks:
            await _cancel(task)
        for b in readers:
            await b.close_feed("work")  # a hand-over still on its way is delivered before this returns
            await b.close()
        got = [item for feed in feeds for item in feed.items] + stored(shared_client, writer, "work")
        assert sorted(got, key=int) == [b"%d" % i for i in range(200)]
        await writer.flush()
        await writer.close()

    run(scenario())


def test_capacity_counts_only_stored_items(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """While a reader is armed, pushes are handed over and the queue stays empty; capacity applies once full."""
    async def scenario() -> None:
        writer = backend(shared_url, prefix)
        assert await writer.push([Push("cap", b"x", 2, FAR) for _ in range(3)]) == [True, True, False]
        assert stored(shared_client, writer, "cap") == [b"x", b"x"]
        await writer.flush()
        await writer.close()

    run(scenario())


def test_a_layer_whose_receivers_left_gives_items_back(shared_url: str, shared_client: redis.Redis,
                                                       prefix: str) -> None:
    """A message handed over to a process whose receiver was cancelled goes back to the queue once nobody there
    has waited for a while: tokens withdrawn, nothing kept for the queue in the backend."""
    async def scenario() -> None:
        reader = RedisChannelLayer(hosts=[shared_url], prefix=prefix)
        writer = RedisChannelLayer(hosts=[shared_url], prefix=prefix)
        served = asyncio.create_task(reader.receive("q"))
        cancelled = asyncio.create_task(reader.receive("q"))
        backend = reader._state().backend
        assert isinstance(backend, RedisBackend)
        await _armed(shared_client, backend.readers_key("q"), 2)
        await _cancel(cancelled)  # one token is left for a receiver that is gone
        await writer.send("q", {"type": "first"})
        await writer.send("q", {"type": "second"})  # handed over too: nobody in the reader claims it
        assert (await served)["type"] == "first"
        assert shared_client.llen(backend.queue_key("q")) == 0
        await asyncio.sleep(reader.feed_idle + 0.6)
        assert shared_client.llen(backend.readers_key("q")) == 0
        assert shared_client.llen(backend.queue_key("q")) == 1
        assert not backend.shards[0]._subscriptions  # type: ignore[attr-defined]
        assert (await writer.receive("q"))["type"] == "second"
        await writer.flush()
        await reader.close()
        await writer.close()

    run(scenario())


def test_an_item_handed_over_before_a_rearm_comes_before_what_the_rearm_pops(
        shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """A reader whose lease ran out re-arms while a hand-over is still on its way over the subscriber connection
    (in a server freeze: a push that ran at SIGCONT with the pusher's old clock).  The re-arm pops what was stored
    after that hand-over; the reader must still deliver the hand-over first.  Seen in the fault suite:
    ``redis/freeze`` delivered 22 before 21."""
    async def scenario() -> None:
        reader, writer = backend(shared_url, prefix), backend(shared_url, prefix)
        feed = ListFeed("q")
        fill = asyncio.create_task(reader.fill(feed, 1, 5.0))
        await _armed(shared_client, reader.readers_key("q"), 1)
        subscriber = _socket(reader.shards[0].subscriber)  # type: ignore[attr-defined]
        subscriber.pause_reading()  # the hand-over stays in the socket, as under a burst at SIGCONT
        assert await writer.push([Push("q", b"first", 100, FAR)]) == [True]  # handed over (the one token)
        assert await writer.push([Push("q", b"second", 100, FAR)]) == [True]  # no token left: stored
        assert shared_client.llen(reader.queue_key("q")) == 1
        await fill  # the lease ran out without an arrival read
        assert feed.items == []
        second_fill = asyncio.create_task(reader.fill(feed, 1, 5.0))  # re-arms: pops "second"
        await asyncio.sleep(0.3)
        subscriber.resume_reading()
        await second_fill
        assert feed.items == [b"first", b"second"]
        await reader.close_feed("q")
        await reader.close()
        await writer.flush()
        await writer.close()

    run(scenario())


def test_items_an_arm_popped_as_the_layer_closes_go_back(shared_url: str, shared_client: redis.Redis,
                                                         prefix: str) -> None:
    """The layer closes while a reader's ARM is on its way back with an item it popped: closing cancels the
    reader, and the item must still reach the core (its receiver, or back to the queue), not be dropped with the
    reply."""
    async def scenario() -> None:
        reader = RedisChannelLayer(hosts=[shared_url], prefix=prefix)
        writer = RedisChannelLayer(hosts=[shared_url], prefix=prefix)
        await reader.group_discard("warm", "up")  # opens the reader's command connection
        backend = reader._state().backend
        assert isinstance(backend, RedisBackend)
        transport = _socket(backend.shards[0].commands)  # type: ignore[attr-defined]
        await writer.send("q", {"type": "stored"})
        transport.pause_reading()  # the ARM's reply stays in the socket
        receiving = asyncio.create_task(reader.receive("q"))
        for _ in range(500):  # polling the server: the ARM has run once the queue is empty
            if not shared_client.llen(backend.queue_key("q")):
                break
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(reader.close())
        await asyncio.sleep(0.1)  # the close cancelled the reader and waits on the link
        transport.resume_reading()
        await closing
        (got,) = await asyncio.gather(receiving, return_exceptions=True)
        if isinstance(got, BaseException):  # the receiver was told the layer closed: the item went back
            got = await asyncio.wait_for(writer.receive("q"), 5)
        assert got == {"type": "stored"}
        assert shared_client.llen(backend.readers_key("q")) == 0
        await writer.flush()
        await writer.close()

    run(scenario())


def test_many_items_go_back_in_order(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """More items than one Lua call can take as arguments go back at the head in order, ahead of what is stored."""
    async def scenario() -> None:
        reader = backend(shared_url, prefix)
        assert await reader.push([Push("many", b"stored", 100, FAR)]) == [True]
        items = [b"%d" % i for i in range(10_000)]
        assert await reader.give_back("many", [Unclaimed(item, FAR) for item in items])
        assert stored(shared_client, reader, "many") == [*items, b"stored"]
        await reader.flush()
        await reader.close()

    run(scenario())
