"""A process queue that vanishes while the layer stays connected (its cluster node died and the reader is connected
to another node; an operator deleted it; it expired): the layer declares it again and re-makes the group bindings
its live memberships need, so group sends reach the member again within a bounded time.  The queues are deleted
out of band, by a separate plain pika client, as an operator or a dying node would."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pika
import pytest

from layers_amqp import AMQPChannelLayer

#: How soon after the loss a group send must reach the member again (the layer re-declares on the broker's
#: consumer-cancel notification, which arrives within milliseconds of the deletion).
RESUME_BOUND = 2.0


def _delete_queues(url: str, names: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


def _process_queue(prefix: str, channel: str) -> str:
    return f"{prefix}:{channel[:channel.index('!') + 1]}"


async def _group_sends_until_received(sender: AMQPChannelLayer, owner: AMQPChannelLayer, channel: str,
                                      bound: float) -> tuple[float, list[int]]:
    """Group-send numbered messages every 50 ms until the member receives one (or ``bound`` + 3 s passed); then
    the seconds it took and the numbers received (each later send must arrive too)."""
    started = time.monotonic()
    received: list[int] = []
    waiting = asyncio.ensure_future(owner.receive(channel))
    sent = 0
    try:
        while time.monotonic() - started < bound + 3:
            await sender.group_send("room", {"n": sent})
            sent += 1
            done, _ = await asyncio.wait({waiting}, timeout=0.05)
            if done:
                received.append(waiting.result()["n"])
                break
        else:
            return time.monotonic() - started, received
        took = time.monotonic() - started
    finally:
        if not waiting.done():
            waiting.cancel()
    for n in range(sent, sent + 5):  # delivery carries on, in order
        await sender.group_send("room", {"n": n})
    for _ in range(5):
        received.append((await asyncio.wait_for(owner.receive(channel), 5))["n"])
    return took, received


@pytest.mark.parametrize("idle", [False, True], ids=["consuming", "idle"])
@pytest.mark.parametrize("lost", ["process queue", "process queue and inbox"])
def test_group_sends_reach_a_member_whose_queue_vanished(make_layer: Any, url: str, prefix: str,
                                                         lost: str, idle: bool) -> None:
    async def main() -> None:
        owner, sender = make_layer(), make_layer()
        channel = await owner.new_channel()
        await owner.group_add("room", channel)
        await sender.group_send("room", {"n": -1})
        assert await asyncio.wait_for(owner.receive(channel), 5) == {"n": -1}  # the owner consumes now
        if idle:  # its feed closes (the process-queue consumer is cancelled): the loss is seen at the next receive
            await asyncio.sleep(owner.feed_idle + 0.5)
        queue = _process_queue(prefix, channel)
        names = [queue] if lost == "process queue" else [queue, f"{queue}:groups"]
        await asyncio.to_thread(_delete_queues, url, names)
        took, received = await _group_sends_until_received(sender, owner, channel, RESUME_BOUND)
        print(f"[{lost}, idle={idle}] group sends reached the member again {took:.3f} s after the loss")
        assert received, f"no group send reached the member within {took:.1f} s of its queue's loss"
        assert took < RESUME_BOUND, f"group sends reached the member again only after {took:.2f} s"
        assert received == list(range(received[0], received[0] + 6)), received
        await sender.send(channel, {"direct": True})  # direct sends carry on too
        assert await asyncio.wait_for(owner.receive(channel), 5) == {"direct": True}
        for layer in (owner, sender):
            await layer.close()

    asyncio.run(main())


def test_flush_elsewhere_still_removes_the_memberships_of_a_consuming_process(make_layer: Any) -> None:
    """Re-making bindings after a loss must not undo a flush: the owner learns of the flush and forgets."""

    async def main() -> None:
        owner, other = make_layer(), make_layer()
        channel = await owner.new_channel()
        await owner.group_add("room", channel)
        await other.group_send("room", {"n": 1})
        assert await asyncio.wait_for(owner.receive(channel), 5) == {"n": 1}  # the owner consumes now
        waiting = asyncio.ensure_future(owner.receive(channel))
        await other.flush()
        await asyncio.sleep(0.5)  # whatever the owner does about its vanished queue, it has done it
        for n in range(2, 5):
            await other.group_send("room", {"n": n})
        done, _ = await asyncio.wait({waiting}, timeout=1.0)
        if done:
            raise AssertionError(f"a flushed membership still receives: {waiting.result()!r}")
        await other.send(channel, {"after": "flush"})
        assert await asyncio.wait_for(waiting, 5) == {"after": "flush"}
        for layer in (owner, other):
            await layer.close()

    asyncio.run(main())
