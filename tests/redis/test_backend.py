"""Redis-specific behaviour on the shared server: atomic capacity, expiry, key TTLs, groups, at-most-once."""

from __future__ import annotations

import asyncio

import pytest
import redis

from layers import ChannelFull, ServerError
from layers_redis import RedisChannelLayer
from layers_redis.backend import KEY_TTL_SLACK_MS
from tests.redis.helpers import run


def make(url: str, prefix: str, **options: object) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[url], prefix=prefix, **options)


def test_capacity_is_exact_under_concurrency(shared_url: str, prefix: str) -> None:
    """Two processes racing 60 sends each at a channel of capacity 10: exactly 10 are stored."""
    async def scenario() -> None:
        a, b = make(shared_url, prefix, capacity=10), make(shared_url, prefix, capacity=10)

        async def send(layer: RedisChannelLayer, i: int) -> bool:
            try:
                await layer.send("cap", {"i": i})
                return True
            except ChannelFull:
                return False

        results = await asyncio.gather(*(send(a if i % 2 else b, i) for i in range(120)))
        assert sum(results) == 10
        received = [await a.receive("cap") for _ in range(10)]
        assert len({m["i"] for m in received}) == 10
        await a.flush()
        await a.close()
        await b.close()

    run(scenario())


def test_expired_items_stop_counting_and_never_arrive(shared_url: str, prefix: str) -> None:
    async def scenario() -> None:
        layer = make(shared_url, prefix, capacity=2, expiry=0.3)
        await layer.send("exp", {"n": 1})
        await layer.send("exp", {"n": 2})
        with pytest.raises(ChannelFull):
            await layer.send("exp", {"n": 3})
        await asyncio.sleep(0.4)
        await layer.send("exp", {"n": 4})  # the two expired ones no longer count
        await layer.send("exp", {"n": 5})
        assert [(await layer.receive("exp"))["n"] for _ in range(2)] == [4, 5]
        await layer.flush()
        await layer.close()

    run(scenario())


def test_keys_expire_on_the_server(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """Abandoned queues and groups vanish by themselves: their keys carry TTLs."""
    async def scenario() -> None:
        layer = make(shared_url, prefix, expiry=30, group_expiry=120)
        await layer.send("ttl", {"a": 1})
        await layer.group_add("g", "ttl")
        await layer.close()

    run(scenario())
    queue_ttl = shared_client.pttl(f"{prefix}:q:{{ttl}}")
    group_ttl = shared_client.pttl(f"{prefix}:g:g")
    assert 25_000 < queue_ttl <= 30_000 + KEY_TTL_SLACK_MS
    assert 115_000 < group_ttl <= 120_000 + KEY_TTL_SLACK_MS
    shared_client.delete(f"{prefix}:q:{{ttl}}", f"{prefix}:g:g")


def test_group_expiry_and_full_members(shared_url: str, prefix: str) -> None:
    async def scenario() -> None:
        layer = make(shared_url, prefix, group_expiry=0.3, capacity=1)
        me = await layer.new_channel()
        await layer.group_add("g", me)
        await layer.group_add("g", "named")
        await layer.send("named", {"fill": 1})  # full now
        await layer.group_send("g", {"x": 1})
        assert layer.group_drops == 1
        assert await layer.receive(me) == {"x": 1}
        await asyncio.sleep(0.4)
        await layer.group_send("g", {"x": 2})  # memberships lapsed: nobody gets it
        backend = layer._state().backend
        assert await backend.group_members("g") == []
        await layer.flush()
        await layer.close()

    run(scenario())


def test_at_most_once_with_competing_readers(shared_url: str, prefix: str) -> None:
    async def scenario() -> None:
        sender = make(shared_url, prefix, capacity=1000)
        readers = [make(shared_url, prefix) for _ in range(3)]
        got: list[int] = []
        all_in = asyncio.Event()

        async def read(layer: RedisChannelLayer) -> None:
            while True:
                got.append((await layer.receive("work"))["i"])
                if len(got) >= 300:
                    all_in.set()

        tasks = [asyncio.create_task(read(layer)) for layer in readers]
        for i in range(300):
            await sender.send("work", {"i": i})
        await asyncio.wait_for(all_in.wait(), 10)
        await asyncio.sleep(0.2)  # a duplicate, if any, would arrive now
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert sorted(got) == list(range(300))
        await sender.flush()
        for layer in [sender, *readers]:
            await layer.close()

    run(scenario())


def test_flush_only_touches_its_prefix(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    neighbours = [f"{prefix}x:q:keep", f"other:{prefix}:q:keep", f"{prefix}:q"]
    for key in neighbours:
        shared_client.set(key, b"1")

    async def scenario() -> None:
        layer = make(shared_url, prefix)
        await layer.send("a", {"x": 1})
        await layer.group_add("g", "a")
        await layer.flush()
        await layer.close()

    run(scenario())
    assert list(shared_client.scan_iter(match=f"{prefix}:*")) == [f"{prefix}:q".encode()]
    assert all(shared_client.exists(key) for key in neighbours)
    shared_client.delete(*neighbours)


def test_repr_and_close_idempotent(shared_url: str, prefix: str) -> None:
    async def scenario() -> None:
        layer = make(shared_url, prefix)
        await layer.send("c", {"x": 1})
        await layer.close()
        await layer.close()
        assert await layer.receive("c") == {"x": 1}  # reopens lazily
        await layer.close()

    run(scenario())


def test_an_error_reply_is_a_server_error(shared_url: str, shared_client: redis.Redis, prefix: str) -> None:
    """An error reply that is neither a refusal nor an outage (WRONGTYPE: the queue's key holds a string) is a
    ServerError with the reply chained."""
    shared_client.set(f"{prefix}:q:{{wrong}}", b"x")

    async def scenario() -> None:
        layer = make(shared_url, prefix)
        with pytest.raises(ServerError, match="WRONGTYPE") as caught:
            await layer.send("wrong", {"x": 1})
        assert caught.value.__cause__ is not None
        await layer.flush()
        await layer.close()

    run(scenario())
