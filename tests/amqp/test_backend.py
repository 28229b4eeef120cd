"""AMQP-specific behaviour on the shared RabbitMQ: confirms and capacity, TTL, groups across processes, flush
isolation, configuration, several readers of one named channel in separate processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import ssl
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync

import layers
from layers import BackendUnavailable, ChannelFull, ConfigError
from layers_amqp import AMQPChannelLayer


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def receive(layer: AMQPChannelLayer, channel: str, wait: float = 5.0) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), wait)


async def nothing(layer: AMQPChannelLayer, channel: str, wait: float = 0.5) -> None:
    try:
        message = await asyncio.wait_for(layer.receive(channel), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message on {channel!r}: {message!r}")


# -- capacity through x-max-length + publisher confirms ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["named", "process"])
def test_send_to_a_full_queue_raises_channel_full(make_layer: Any, kind: str) -> None:
    async def main() -> None:
        layer = make_layer(capacity=3)
        channel = "full.named" if kind == "named" else await layer.new_channel()
        for i in range(3):
            await layer.send(channel, {"i": i})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"i": 3})
        assert [(await receive(layer, channel))["i"] for _ in range(3)] == [0, 1, 2]
        await layer.close()

    run(main())


def test_concurrent_sends_each_get_their_own_answer(make_layer: Any) -> None:
    """Coalesced sends are published together; the confirms tell exactly which ones found room."""

    async def main() -> None:
        layer = make_layer(capacity=10)
        results = await asyncio.gather(*(layer.send("crowd", {"i": i}) for i in range(25)),
                                       return_exceptions=True)
        stored = [i for i, r in enumerate(results) if r is None]
        assert stored == list(range(10))
        assert all(isinstance(r, ChannelFull) for r in results[10:])
        assert [(await receive(layer, "crowd"))["i"] for _ in range(10)] == stored
        await nothing(layer, "crowd")
        await layer.close()

    run(main())


def test_queue_capacity_is_fixed_by_its_first_declarer(make_layer: Any, caplog: Any) -> None:
    """Queue arguments cannot change: a layer configured with another capacity uses the queue as it is."""

    async def main() -> None:
        small, large = make_layer(capacity=2), make_layer(capacity=5)
        await small.send("fixed", {"i": 0})
        with caplog.at_level(logging.WARNING, logger="layers.amqp"):
            await large.send("fixed", {"i": 1})
            with pytest.raises(ChannelFull):
                await large.send("fixed", {"i": 2})
        assert "other arguments" in caplog.text
        await small.close()
        await large.close()

    run(main())


def test_expired_messages_stop_counting_toward_capacity(make_layer: Any) -> None:
    """Per-message TTLs in one queue never decrease, so RabbitMQ drops expired messages at the head and the
    length limit counts only live ones."""

    async def main() -> None:
        layer = make_layer(capacity=2, expiry=1)
        for kind in ("named", "process"):
            channel = "ttl.named" if kind == "named" else await layer.new_channel()
            await layer.send(channel, {"old": 1})
            await layer.send(channel, {"old": 2})
            with pytest.raises(ChannelFull):
                await layer.send(channel, {"old": 3})
            await asyncio.sleep(1.3)
            await layer.send(channel, {"new": 1})
            await layer.send(channel, {"new": 2})
            assert await receive(layer, channel) == {"new": 1}
            assert await receive(layer, channel) == {"new": 2}
        await layer.close()

    run(main())


# -- groups --------------------------------------------------------------------------------------------------------


def test_group_add_of_a_channel_owned_by_another_process(make_layer: Any) -> None:
    async def main() -> None:
        owner, adder, sender = make_layer(), make_layer(), make_layer()
        channel = await owner.new_channel()
        await adder.group_add("room", channel)
        await sender.group_send("room", {"hello": "from afar"})
        assert await receive(owner, channel) == {"hello": "from afar"}
        await adder.group_discard("room", channel)
        await sender.group_send("room", {"after": "discard"})
        await nothing(owner, channel)
        for layer in (owner, adder, sender):
            await layer.close()

    run(main())


def test_group_expiry_is_enforced_for_both_kinds_of_member(make_layer: Any) -> None:
    async def main() -> None:
        layer = make_layer(group_expiry=1)
        local = await layer.new_channel()
        for channel in (local, "gexp.named"):
            await layer.group_add("lapsing", channel)
        await layer.group_send("lapsing", {"n": 1})
        assert await receive(layer, local) == {"n": 1}
        assert await receive(layer, "gexp.named") == {"n": 1}
        await asyncio.sleep(1.5)
        await layer.group_send("lapsing", {"n": 2})
        await nothing(layer, local)
        await nothing(layer, "gexp.named")
        await layer.close()

    run(main())


def test_group_send_to_many_local_members_is_one_message(make_layer: Any) -> None:
    async def main() -> None:
        layer = make_layer()
        members = [await layer.new_channel() for _ in range(50)]
        for channel in members:
            await layer.group_add("many", channel)
        await layer.group_send("many", {"all": True})
        for channel in members:
            assert await receive(layer, channel) == {"all": True}
        await layer.close()

    run(main())


def _ready_messages(url: str, queue: str) -> int:
    """Messages waiting in ``queue`` on the broker (not counting what a consumer holds unacknowledged)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def test_group_messages_enter_the_process_queue_until_its_last_member_leaves(make_layer: Any, url: str,
                                                                           prefix: str) -> None:
    async def main() -> None:
        owner, other = make_layer(), make_layer()
        first, second = await owner.new_channel(), await owner.new_channel()
        queue = f"{prefix}:{first[:first.index('!') + 1]}"
        for channel in (first, second):
            await owner.group_add("room", channel)
        await other.group_discard("room", first)  # from another process: only that member's binding goes
        await other.group_send("room", {"n": 1})
        assert await asyncio.to_thread(_ready_messages, url, queue) == 1  # waiting, and counted, in the queue
        assert await receive(owner, second) == {"n": 1}
        await nothing(owner, first)
        await other.group_discard("room", second)
        await other.group_send("room", {"n": 2})
        await asyncio.sleep(owner.feed_idle + 0.5)  # the owner's feed closed: a message routed here is ready
        assert await asyncio.to_thread(_ready_messages, url, queue) == 0, "the group is still bound"
        for layer in (owner, other):
            await layer.close()

    run(main())


def test_a_receiving_process_holds_at_most_one_batch_ahead(make_layer: Any, url: str, prefix: str) -> None:
    async def main() -> None:
        layer, sender = make_layer(capacity=1000), make_layer(capacity=1000)
        channel = await layer.new_channel()
        queue = f"{prefix}:{channel[:channel.index('!') + 1]}"
        await sender.send(channel, {"i": -1})
        assert await receive(layer, channel) == {"i": -1}  # the consumer runs now
        for i in range(300):
            await sender.send(channel, {"i": i})
        await asyncio.sleep(0.2)
        batch = AMQPChannelLayer.receive_batch
        assert await asyncio.to_thread(_ready_messages, url, queue) >= 300 - batch
        assert [(await receive(layer, channel))["i"] for _ in range(300)] == list(range(300))
        await nothing(layer, channel)
        for each in (layer, sender):
            await each.close()

    run(main())


def test_what_an_idle_process_was_sent_waits_on_the_broker_once_its_feed_closes(make_layer: Any, url: str,
                                                                               prefix: str) -> None:
    """Deliveries nobody here asked for stay unacknowledged; closing the idle feed gives them back, in order."""

    async def main() -> None:
        layer, sender = make_layer(), make_layer()
        channel = await layer.new_channel()
        queue = f"{prefix}:{channel[:channel.index('!') + 1]}"
        await sender.send(channel, {"i": -1})
        assert await receive(layer, channel) == {"i": -1}  # the consumer runs now; nobody receives after this
        for i in range(5):
            await sender.send(channel, {"i": i})
        await asyncio.sleep(layer.feed_idle + 0.5)
        assert await asyncio.to_thread(_ready_messages, url, queue) == 5
        assert [(await receive(layer, channel))["i"] for _ in range(5)] == list(range(5))
        await nothing(layer, channel)
        for each in (layer, sender):
            await each.close()

    run(main())


def test_a_redelivery_of_what_was_received_is_not_received_twice(make_layer: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Received messages whose acks died with the connection come back from the broker (``redelivered``); the
    layer recognises them instead of delivering them again, and still delivers what it had not handed over."""
    from layers_amqp.wire import Channel

    async def main() -> None:
        layer, sender = make_layer(), make_layer()
        channel = await layer.new_channel()
        with monkeypatch.context() as patch:
            patch.setattr(Channel, "basic_ack", lambda *_args, **_kwargs: None)  # the acks never leave
            for i in range(5):
                await sender.send(channel, {"i": i})
            assert [(await receive(layer, channel))["i"] for _ in range(5)] == list(range(5))
            await sender.send(channel, {"i": 5})  # delivered to the process, not yet received
            await asyncio.sleep(0.2)
        link = layer._state().backend.link  # type: ignore[attr-defined]
        link._drop_connection()  # the broker requeues every unacknowledged delivery of that connection
        assert await receive(layer, channel) == {"i": 5}
        await sender.send(channel, {"i": 6})
        assert await receive(layer, channel) == {"i": 6}
        await nothing(layer, channel)
        for each in (layer, sender):
            await each.close()

    run(main())


# -- flush ----------------------------------------------------------------------------------------------------------


def test_flush_is_isolated_between_prefixes(url: str, prefix: str) -> None:
    async def main() -> None:
        mine = AMQPChannelLayer(url, prefix=prefix + "a")
        theirs = AMQPChannelLayer(url, prefix=prefix + "b")
        await mine.send("shared.name", {"who": "mine"})
        await theirs.send("shared.name", {"who": "theirs"})
        await theirs.group_add("g", "member.b")
        await mine.flush()
        await nothing(mine, "shared.name")
        assert await receive(theirs, "shared.name") == {"who": "theirs"}
        await theirs.group_send("g", {"still": "grouped"})
        assert await receive(theirs, "member.b") == {"still": "grouped"}
        await theirs.flush()
        await mine.close()
        await theirs.close()

    run(main())


def test_flush_by_another_instance_empties_a_queue_being_consumed(make_layer: Any) -> None:
    async def main() -> None:
        owner, other = make_layer(), make_layer()
        channel = await owner.new_channel()
        waiting = asyncio.ensure_future(owner.receive(channel))
        await asyncio.sleep(0.3)  # the owner consumes its queue now
        await other.flush()
        await other.send(channel, {"after": "flush"})  # the queue is declared again; the owner re-subscribes
        assert await asyncio.wait_for(waiting, 10) == {"after": "flush"}
        await owner.close()
        await other.close()

    run(main())


# -- configuration ------------------------------------------------------------------------------------------------


def test_from_url_options_and_redaction(url: str, prefix: str) -> None:
    secret_url = url.replace("guest:guest@", "guest:s3cret-pw@")
    layer = layers.from_url(f"{secret_url}?prefix={prefix}&capacity=7&expiry=30&timeout=0.5&heartbeat=30")
    assert isinstance(layer, AMQPChannelLayer)
    assert (layer.prefix, layer.capacity, layer.expiry, layer.timeout) == (prefix, 7, 30, 0.5)
    assert "s3cret-pw" not in repr(layer)
    assert AMQPChannelLayer(host=secret_url).url == secret_url  # channels_rabbitmq's CONFIG name

    async def main() -> None:
        with pytest.raises(layers.AuthenticationFailed) as failure:
            await layer.send("x", {})  # wrong password: refused at once, never retried
        assert "s3cret-pw" not in str(failure.value)
        await layer.close()

    run(main())


def test_amqps_url_and_ssl_context() -> None:
    layer = layers.from_url("amqps://u:pw@broker.example:5671/vh?prefix=tls")
    assert isinstance(layer, AMQPChannelLayer)
    params = layer._brokers[0][0]
    assert params.ssl_options is not None and params.port == 5671
    context = ssl.create_default_context()
    custom = AMQPChannelLayer("amqps://u:pw@broker.example/vh", ssl_context=context)
    assert custom._brokers[0][0].ssl_options.context is context
    with pytest.raises(ConfigError):
        AMQPChannelLayer("redis://localhost")


def test_several_brokers_in_one_url_or_a_list() -> None:
    layer = layers.from_url("amqp://u:pw@h1:5672,h2:5673/vh?timeout=2")
    assert isinstance(layer, AMQPChannelLayer)
    assert [(p.host, p.port, p.credentials.password, where) for p, where in layer._brokers] == [
        ("h1", 5672, "pw", "h1:5672/vh"), ("h2", 5673, "pw", "h2:5673/vh")]
    listed = AMQPChannelLayer(["amqp://u:pw@h1/vh", "amqp://u:pw@h2:5999/vh"])
    assert [p.port for p, _where in listed._brokers] == [5672, 5999]
    assert "pw" not in repr(layer)
    for bad in ("amqp://u:pw@h1,,h2/vh", ["amqp://h1/vh", "redis://h2"], []):
        with pytest.raises(ConfigError):
            AMQPChannelLayer(bad)  # type: ignore[arg-type]


def test_unreachable_broker_raises_backend_unavailable_in_time() -> None:
    from tests.servers import free_port

    layer = AMQPChannelLayer(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", timeout=1)

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await layer.send("nowhere", {})
        assert time.monotonic() - started < 3
        await layer.close()

    run(main())


def test_works_as_a_channels_backend(url: str, prefix: str) -> None:
    from channels.layers import ChannelLayerManager
    from django.test import override_settings

    config = {"BACKEND": "layers_amqp.AMQPChannelLayer", "CONFIG": {"url": url, "prefix": prefix}}
    with override_settings(CHANNEL_LAYERS={"default": config}):
        layer = ChannelLayerManager().make_backend("default")
    assert isinstance(layer, AMQPChannelLayer)

    async def main() -> None:
        await layer.send("channels.backend", {"type": "x.y"})
        assert await receive(layer, "channels.backend") == {"type": "x.y"}
        await layer.flush()
        await layer.close()

    run(main())


def test_repeated_async_to_sync_calls(make_layer: Any) -> None:
    layer = make_layer()
    for i in range(5):
        async_to_sync(layer.send)("sync.channel", {"i": i})
    got = [async_to_sync(layer.receive)("sync.channel")["i"] for _ in range(5)]
    assert got == list(range(5))
    async_to_sync(layer.group_add)("sync-group", "sync.member")
    async_to_sync(layer.group_send)("sync-group", {"to": "member"})
    assert async_to_sync(layer.receive)("sync.member") == {"to": "member"}


def test_close_is_idempotent_and_reopens(make_layer: Any) -> None:
    async def main() -> None:
        layer = make_layer()
        await layer.close()
        await layer.send("reopen", {"n": 1})
        await layer.close()
        await layer.close()
        assert await receive(layer, "reopen") == {"n": 1}
        await layer.close()

    run(main())


# -- several readers of one named channel in separate processes -------------------------------------------------


def _reader(url: str, prefix: str, channel: str, out: Any, stop_after: float) -> None:
    async def main() -> None:
        layer = AMQPChannelLayer(url, prefix=prefix, capacity=1000)
        got = []
        try:
            while True:
                message = await asyncio.wait_for(layer.receive(channel), stop_after)
                got.append(message["n"])
        except asyncio.TimeoutError:
            pass
        out.put(got)
        await layer.close()

    asyncio.run(main())


def test_named_channel_shared_by_readers_in_several_processes(make_layer: Any, url: str, prefix: str) -> None:
    """Each message goes to exactly one reader: no loss, no duplicate, across processes."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    readers = [context.Process(target=_reader, args=(url, prefix, "work.shared", out, 3.0)) for _ in range(3)]
    for reader in readers:
        reader.start()

    async def main() -> None:
        layer = make_layer(capacity=1000)
        await asyncio.sleep(2.0)  # let the readers start waiting
        await asyncio.gather(*(layer.send("work.shared", {"n": n}) for n in range(300)))
        await layer.close()

    run(main())
    results = [out.get(timeout=30) for _ in readers]
    for reader in readers:
        reader.join(30)
    everything = sorted(n for got in results for n in got)
    assert everything == list(range(300)), f"lost or duplicated: {len(everything)} received"
    assert sum(1 for got in results if got) >= 2, f"one reader took everything: {[len(g) for g in results]}"
    # No per-reader order check: with several readers RabbitMQ may requeue a message a doorbell rejected
    # "closer to the head" than where it was; FIFO holds for one writer and one reader.


def test_an_idle_reader_holds_no_named_channel_message(make_layer: Any) -> None:
    """Messages are taken with basic.get: a process that stopped receiving never sits on the next message."""

    async def main() -> None:
        first, second = make_layer(), make_layer()
        for n in range(3):
            await first.send("jobs", {"n": n})
        assert await receive(first, "jobs") == {"n": 0}
        cancelled = asyncio.ensure_future(first.receive("never.sent"))
        await asyncio.sleep(0.2)
        cancelled.cancel()
        assert await receive(second, "jobs", wait=1.0) == {"n": 1}
        waiting = asyncio.ensure_future(first.receive("jobs.later"))
        await asyncio.sleep(0.3)  # first waits on an empty queue (its doorbell consumer is subscribed)
        waiting.cancel()
        await first.send("jobs.later", {"late": True})
        assert await receive(second, "jobs.later", wait=2.0) == {"late": True}
        assert await receive(second, "jobs", wait=1.0) == {"n": 2}
        await first.close()
        await second.close()

    run(main())
