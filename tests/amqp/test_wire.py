"""The frames layers_amqp codes itself (layers_amqp/wire.py) against the real broker: every body size, content split
over many reads, confirms and deliveries in flight together, returns and other frames still going through pika."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from layers_amqp import AMQPChannelLayer

# Body frames hold up to frame_max - 8 bytes (RabbitMQ's default frame_max is 131072): one frame, just past one,
# several, and a 1 MB message that arrives over many socket reads.
SIZES = [0, 1, 131_000, 131_064, 131_065, 300_000, 1_000_000]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def backend(layer: AMQPChannelLayer) -> Any:
    return layer._state().backend


@pytest.mark.parametrize("kind", ["process", "named"])
def test_messages_of_every_size_in_flight_together(make_layer: Any, kind: str) -> None:
    async def main() -> None:
        layer = make_layer(capacity=100)
        channel = await layer.new_channel() if kind == "process" else "wire.sizes"
        sent = [{"i": i, "body": bytes([i % 251]) * size} for i, size in enumerate(SIZES * 3)]
        await asyncio.gather(*(layer.send(channel, message) for message in sent))
        received = [await asyncio.wait_for(layer.receive(channel), 10) for _ in sent]
        assert sorted(received, key=lambda m: m["i"]) == sent
        await layer.close()

    run(main())


def test_sequential_round_trips_keep_pika_counters(make_layer: Any) -> None:
    """pika's heartbeat checker watches bytes_received: the frames coded here must count too."""

    async def main() -> None:
        layer = make_layer()
        channel = await layer.new_channel()
        await layer.send(channel, {"warm": "up"})
        await layer.receive(channel)
        conn = backend(layer).link._conn
        bytes_before, frames_before = conn.bytes_received, conn.frames_received
        for i in range(200):
            await layer.send(channel, {"i": i, "body": b"x" * 1000})
            assert (await asyncio.wait_for(layer.receive(channel), 5))["i"] == i
        assert conn.bytes_received - bytes_before > 200 * 1000
        assert conn.frames_received - frames_before >= 200 * 4  # deliver, header, body, ack
        assert conn._frame_buffer == b""
        await layer.close()

    run(main())


def test_returns_and_deliveries_interleaved(make_layer: Any) -> None:
    """An unroutable mandatory publish comes back through pika (basic.return) between confirms and deliveries
    coded here; each publish still gets its own answer and the deliveries arrive in order."""

    async def main() -> None:
        layer = make_layer()
        channel = await layer.new_channel()
        await layer.send(channel, {"warm": "up"})
        await layer.receive(channel)
        link = backend(layer).link
        answers = []
        for i in range(50):
            answers.append(link.publish("", f"{layer.prefix}:wire.nowhere.{i}", b"lost", None, True))
            await layer.send(channel, {"i": i})
        assert [await answer for answer in answers] == [None] * 50
        assert [(await asyncio.wait_for(layer.receive(channel), 5))["i"] for _ in range(50)] == list(range(50))
        await layer.close()

    run(main())


def test_deliveries_after_a_consumer_cancel_are_kept(make_layer: Any) -> None:
    """An auto-ack delivery is taken from the queue when the broker sends it: the ones already on their way when
    a consumer is cancelled (an idle process queue's consumer is) must reach the callback, not be dropped as pika
    does (it forgets a consumer as soon as it sends basic.cancel without waiting for cancel-ok)."""

    async def main() -> None:
        layer = make_layer()
        link = backend(layer).link
        await link.ready()
        queue = f"{layer.prefix}:wire.cancel"
        await link.declare(queue, {"x-expires": 60_000})
        got: list[bytes] = []
        tags: list[str] = []

        def on_message(_ch: Any, _method: Any, _props: Any, body: bytes) -> None:
            got.append(body)
            if len(got) == 1:
                link.cancel(tags[0])  # the broker has sent many more by now

        tags.append(await link.consume(queue, on_message))
        total = 2000
        answers = [link.publish("", queue, b"%d" % i, None, False) for i in range(total)]
        assert all([await answer for answer in answers])
        await asyncio.sleep(0.5)
        left = []
        while (body := await link.get(queue)) is not None:
            left.append(body)
        assert got + left == [b"%d" % i for i in range(total)]  # nothing lost (pika dropped ~1,800 here)
        await link.delete(queue)
        await layer.close()

    run(main())
