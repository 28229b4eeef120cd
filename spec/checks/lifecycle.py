"""FLUSH, CLOSE and SYNC: emptying, closing and reopening a layer, and using it from sync code (SPEC.md)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from ..harness import Harness, Message, check, sync_check
from .common import nothing_on, same

__all__ = ["CloseChecks", "FlushChecks", "SyncChecks"]

KINDS = pytest.mark.parametrize("kind", ["named", "process"])
T = TypeVar("T")


async def _round_trip(harness: Harness, layer: Any, channels: list[str], tag: str) -> None:
    """Every channel delivers a message sent now (to a waiting receive); with groups, a group reaches them too."""
    for channel in channels:
        same(await harness.deliver(layer, channel, {"tag": tag}), {"tag": tag}, f"{tag}: message on {channel!r}")
    if "groups" in harness.extensions:
        group = harness.name("group")
        readers = [harness.reader(layer, channel) for channel in channels]  # receiving first, as in R-GROUP-1
        await harness.listening(*channels)
        for channel in channels:
            await layer.group_add(group, channel)
        await layer.group_send(group, {"group": tag})
        for channel, received in zip(channels, await asyncio.gather(*readers), strict=True):
            same(received, [{"group": tag}], f"{tag}: group message on {channel!r}")
            await layer.group_discard(group, channel)


async def _stored_everywhere(harness: Harness, layer: Any) -> tuple[list[str], str]:
    """A local channel (and a named one, when named channels keep a backlog) holding a message each, all members of
    a group (when groups exist)."""
    channels = [await harness.new_channel(layer)]
    if harness.can("named_backlog"):
        channels.insert(0, harness.name("stored"))
    group = harness.name("group")
    for channel in channels:
        await layer.send(channel, {"stored": True})
        if "groups" in harness.extensions:
            await layer.group_add(group, channel)
    return channels, group


async def _emptied(harness: Harness, layer: Any, channels: list[str], group: str) -> None:
    """Nothing stored before is received, and the group has no members left."""
    await nothing_on(harness, layer, channels, "flush() should have removed it")
    if "groups" in harness.extensions:
        await layer.group_send(group, {"after": "flush"})
        await nothing_on(harness, layer, channels, "flush() should have emptied the group")


class FlushChecks:
    @check("R-FLUSH-1", "flush")
    async def test_r_flush_1_flush_empties_the_layer(self, harness: Harness) -> None:
        """R-FLUSH-1: after flush() no earlier message is received and every group is empty."""
        layer = await harness.layer()
        channels, group = await _stored_everywhere(harness, layer)
        await layer.flush()
        await _emptied(harness, layer, channels, group)

    @check("R-FLUSH-2", "flush")
    async def test_r_flush_2_usable_after_flush(self, harness: Harness) -> None:
        """R-FLUSH-2: sends, receives and groups work after flush()."""
        layer = await harness.layer()
        channels, _ = await _stored_everywhere(harness, layer)
        await layer.flush()
        await _round_trip(harness, layer, channels, "after flush")

    @check("R-FLUSH-3", "flush", "shares_state")
    async def test_r_flush_3_flush_empties_shared_state(self, harness: Harness) -> None:
        """R-FLUSH-3: flush() on one instance removes what another instance stored."""
        layer, other = await harness.layer(), await harness.layer()
        channels, group = await _stored_everywhere(harness, layer)
        await other.flush()
        await _emptied(harness, layer, channels, group)


class CloseChecks:
    @check("R-CLOSE-1", "close")
    async def test_r_close_1_close_is_idempotent(self, harness: Harness) -> None:
        """R-CLOSE-1: close() on an unused layer, and repeatedly on a used one, raises nothing."""
        unused = harness.make_layer()
        await unused.close()
        await unused.close()
        layer = await harness.layer()
        await _round_trip(harness, layer, [await harness.new_channel(layer)], "before close")
        for _ in range(3):
            await layer.close()

    @check("R-CLOSE-2", "close")
    async def test_r_close_2_reopens_and_keeps_data(self, harness: Harness) -> None:
        """R-CLOSE-2: messages stored before close() are received after it; everything works again."""
        layer = await harness.layer()
        channels, _ = await _stored_everywhere(harness, layer)
        await layer.close()
        for channel in channels:
            received = await harness.receive(layer, channel)
            same(received, {"stored": True}, f"message stored before close() on {channel!r}")
        await _round_trip(harness, layer, channels, "after close")

    @KINDS
    @check("R-CLOSE-3", "close")
    async def test_r_close_3_close_ends_pending_receives(self, harness: Harness, kind: str) -> None:
        """R-CLOSE-3: a receive() waiting when close() is called ends with an exception; nothing is lost."""
        if kind == "named":  # the message after close() is sent before the next receive
            harness.require("named_backlog")
        layer = await harness.layer()
        channel = await harness.channel(layer, kind)
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(harness.knobs.settle)
        await layer.close()
        done, _ = await asyncio.wait({waiting}, timeout=harness.knobs.receive_wait)
        assert done, "a receive() pending during close() is still waiting"
        assert not waiting.cancelled() and waiting.exception() is not None, (
            f"a receive() pending during close() returned {waiting.result()!r} instead of raising"
        )
        await layer.send(channel, {"after": "close"})
        same(await harness.receive(layer, channel), {"after": "close"})


class SyncChecks:
    @sync_check("R-SYNC-1", "asgiref", "multi_loop")
    def test_r_sync_1_async_to_sync_every_call(self, harness: Harness) -> None:
        """R-SYNC-1: every call through async_to_sync (a new event loop each time) works, repeatedly."""
        layer = harness.make_layer()
        call = _sync_caller(harness)
        if "flush" in harness.extensions:
            call(layer.flush(), "flush()")
        channels = [call(harness.new_channel(layer), "new_channel()")]
        if harness.can("named_backlog"):
            channels.insert(0, harness.name("sync"))
        for round_number in range(3):
            for channel in channels:
                call(layer.send(channel, {"round": round_number}), f"send({channel!r}) round {round_number}")
                received = call(harness.receive(layer, channel), f"receive({channel!r}) round {round_number}")
                same(received, {"round": round_number}, f"on {channel!r}")
            if round_number == 1 and harness.has_close:
                call(layer.close(), "close()")
        call(_round_trip(harness, layer, channels, "sync"), "sends, receives and groups (after close())")
        if harness.has_close:
            call(layer.close(), "the last close()")

    @KINDS
    @sync_check("R-SYNC-2", "asgiref")
    def test_r_sync_2_sync_send_wakes_async_receive(self, harness: Harness, kind: str) -> None:
        """R-SYNC-2: async_to_sync(send) in one thread wakes a receive() waiting on a loop in another thread."""
        if kind == "process":  # made on one loop, received on another
            harness.require("multi_loop")
        layer = harness.make_layer()
        call = _sync_caller(harness)
        if "flush" in harness.extensions:
            call(layer.flush(), "flush()")
        channel = call(harness.channel(layer, kind), "new_channel()")
        consumer = _ThreadedConsumer(harness, layer, channel, 3)
        for i in range(3):
            time.sleep(0.05)
            call(layer.send(channel, {"i": i}), f"send #{i}")
        same(consumer.result(), [{"i": i} for i in range(3)], f"messages received in the other thread on {channel!r}")


def _sync_caller(harness: Harness) -> Callable[[Coroutine[Any, Any, T], str], T]:
    """``call(coroutine, what)``: run it through ``async_to_sync`` (a new event loop per call), time-limited."""
    from asgiref.sync import async_to_sync

    def call(coroutine: Coroutine[Any, Any, T], what: str) -> T:
        result: T = async_to_sync(harness.bounded)(coroutine, f"{what} through async_to_sync")
        return result

    return call


class _ThreadedConsumer:
    """An event loop in its own thread, receiving ``count`` messages on ``channel`` (like an ASGI server)."""

    def __init__(self, harness: Harness, layer: Any, channel: str, count: int) -> None:
        self.harness, self.layer, self.channel, self.count = harness, layer, channel, count
        self.received: list[Message] = []
        self.error: BaseException | None = None
        self.waiting = threading.Event()
        self.thread = threading.Thread(target=self._run, name="spec-consumer", daemon=True)
        self.thread.start()
        self.waiting.wait(harness.knobs.receive_wait)

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # reported by result()
            self.error = exc

    async def _consume(self) -> None:
        asyncio.get_running_loop().call_later(self.harness.knobs.settle, self.waiting.set)
        for _ in range(self.count):
            self.received.append(await self.harness.receive(self.layer, self.channel))

    def result(self) -> list[Message]:
        self.thread.join(self.harness.knobs.timeout)
        if self.error is not None:
            raise self.error
        assert not self.thread.is_alive(), f"the consumer thread still waits; it got {self.received!r}"
        return self.received
