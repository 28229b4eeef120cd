"""DELIV, PROC and CANCEL: how messages travel through channels (SPEC.md)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from ..harness import ROOM, Harness, check
from .common import nothing_on, numbered, same, send_numbered

__all__ = ["ROOMY", "CancelChecks", "DeliveryChecks", "ProcessChecks", "competing_receivers"]

KINDS = pytest.mark.parametrize("kind", ["named", "process"])
#: Capacity for checks whose writer does not wait for the reader (room for every message they send).
ROOMY = ROOM
LOCAL_NAME = re.compile(r"[A-Za-z0-9\-_.]+![A-Za-z0-9\-_.]+")


async def competing_receivers(
    harness: Harness, receivers: Sequence[Any], senders: Sequence[Any], channel: str, count: int
) -> None:
    """``count`` messages sent round-robin by ``senders`` to ``channel``, read by two receivers per layer of
    ``receivers``: every message arrives exactly once (R-DELIV-1, R-MULTI-1)."""
    got: list[int] = []
    all_in = asyncio.Event()

    async def consume(layer: Any) -> None:
        while True:
            got.append((await layer.receive(channel))["i"])
            if len(got) >= count:
                all_in.set()

    tasks = [asyncio.create_task(consume(layer)) for layer in receivers for _ in range(2)]
    await harness.listening(channel)
    try:
        for message in numbered(count):
            await senders[message["i"] % len(senders)].send(channel, message)
        await asyncio.wait_for(all_in.wait(), harness.knobs.receive_wait)
    except asyncio.TimeoutError:
        missing = sorted(set(range(count)) - set(got))
        raise AssertionError(f"{len(missing)} of {count} messages never arrived, e.g. {missing[:10]}") from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    duplicated = sorted(i for i, n in Counter(got).items() if n > 1)
    assert not duplicated, f"messages received more than once: {duplicated[:10]}"
    assert sorted(got) == list(range(count)), f"received {sorted(got)[:20]}..., expected 0..{count - 1}"
    await nothing_on(harness, receivers[0], [channel], "every message was already received once")


class DeliveryChecks:
    @check("R-DELIV-1")
    async def test_r_deliv_1_exactly_once_with_competing_receivers(self, harness: Harness) -> None:
        """R-DELIV-1: four receivers compete on one named channel; each message is received exactly once."""
        layer = await harness.layer(capacity=ROOMY)
        await competing_receivers(harness, [layer, layer], [layer], harness.name("compete"), 100)

    @KINDS
    @check("R-DELIV-2")
    async def test_r_deliv_2_fifo_one_writer_one_reader(self, harness: Harness, kind: str) -> None:
        """R-DELIV-2: 200 messages from one writer arrive at one concurrent reader in order."""
        layer = await harness.layer(capacity=ROOMY)
        channel = await harness.channel(layer, kind)
        reader = harness.reader(layer, channel, 200)
        await harness.listening(channel)
        await _paced_writer(harness, layer, channel, 200)
        received = [message["i"] for message in await reader]
        assert received == list(range(200)), f"out of order: {_first_disorder(received)}"

    @KINDS
    @check("R-DELIV-3")
    async def test_r_deliv_3_receive_waits_for_a_send(self, harness: Harness, kind: str) -> None:
        """R-DELIV-3: receive() on an empty channel waits, then returns the message sent later."""
        layer = await harness.layer()
        channel = await harness.channel(layer, kind)
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(harness.knobs.settle)
        if waiting.done():
            raise AssertionError(f"receive() on an empty channel returned early: {waiting.result()!r}")
        await layer.send(channel, {"late": True})
        same(await asyncio.wait_for(waiting, harness.knobs.receive_wait), {"late": True})

    @check("R-DELIV-4")
    async def test_r_deliv_4_channels_are_separate(self, harness: Harness) -> None:
        """R-DELIV-4: similar names (a / a.b, x! / x!y, sibling local channels) never see each other's messages."""
        layer = await harness.layer()
        base = harness.name("sep")
        local_a, local_b = await harness.new_channel(layer), await harness.new_channel(layer)
        channels = [base, base + ".b", local_a, local_b]
        process = harness.non_local(local_a)  # None when new_channel() gave no '!' (R-PROC-1 says so)
        channels += [process] if process else []
        readers = [harness.reader(layer, channel) for channel in channels]  # waiting: no backlog needed
        await harness.listening(*channels)
        for channel in channels:
            await layer.send(channel, {"to": channel})
        for channel, received in zip(channels, await asyncio.gather(*readers), strict=True):
            same(received, [{"to": channel}], f"message on {channel!r}")
        await nothing_on(harness, layer, channels)


class ProcessChecks:
    @check("R-PROC-1")
    async def test_r_proc_1_new_channel_names(self, harness: Harness) -> None:
        """R-PROC-1: new_channel() is a valid name with one '!' between non-empty parts, and usable."""
        layer = await harness.layer()
        name = await layer.new_channel()
        assert isinstance(name, str), f"new_channel() returned {type(name).__name__} {name!r}, not a str"
        assert "!" in name, f"new_channel() returned {name!r} without '!'"
        assert len(name) < 100 and LOCAL_NAME.fullmatch(name), (
            f"new_channel() returned {name!r}, not a valid process-local channel name (one '!' between non-empty "
            "parts of ASCII letters, digits, '-', '_', '.'; under 100 characters)"
        )
        await layer.send(name, {"to": name})
        same(await harness.receive(layer, name), {"to": name})

    @check("R-PROC-7")
    async def test_r_proc_7_new_channel_prefix(self, harness: Harness) -> None:
        """R-PROC-7: new_channel() starts with 'specific.', new_channel('chat') with 'chat.'."""
        layer = await harness.layer()
        for prefix, name in (("specific", await layer.new_channel()), ("chat", await layer.new_channel("chat"))):
            call = "new_channel()" if prefix == "specific" else f"new_channel({prefix!r})"
            assert isinstance(name, str), f"{call} returned {type(name).__name__} {name!r}, not a str"
            assert name.startswith(prefix + "."), f"{call} returned {name!r}, not starting with {prefix + '.'!r}"

    @check("R-PROC-2")
    async def test_r_proc_2_new_channels_unique(self, harness: Harness) -> None:
        """R-PROC-2: 1000 new channels from each of two instances are all distinct."""
        first, second = await harness.layer(), await harness.layer()
        names = [await layer.new_channel() for layer in (first, second) for _ in range(1000)]
        repeated = [name for name, n in Counter(names).items() if n > 1]
        assert not repeated, f"new_channel() repeated names: {repeated[:5]}"

    @check("R-PROC-3")
    async def test_r_proc_3_sent_before_first_receive(self, harness: Harness) -> None:
        """R-PROC-3: messages sent to a new local channel before any receive are delivered in order."""
        layer = await harness.layer()
        channel = await harness.new_channel(layer)
        await send_numbered(layer, channel, 5)
        same(await harness.receive_many(layer, channel, 5), numbered(5))

    @check("R-PROC-4")
    async def test_r_proc_4_demultiplexing(self, harness: Harness) -> None:
        """R-PROC-4: ten local channels, interleaved sends, concurrent receivers: each gets only its own, in order."""
        layer = await harness.layer()
        channels = [await harness.new_channel(layer) for _ in range(10)]
        schedule = [(channel, i) for i in range(8) for channel in channels]  # 80 < the default capacity 100
        await _send_schedule(layer, schedule[:40])
        readers = [asyncio.create_task(harness.receive_many(layer, channel, 8)) for channel in channels]
        await asyncio.sleep(0)
        await _send_schedule(layer, schedule[40:])
        for channel, received in zip(channels, await asyncio.gather(*readers), strict=True):
            same(received, [{"to": channel, "i": i} for i in range(8)], f"messages on {channel!r}")
        await nothing_on(harness, layer, channels)


class CancelChecks:
    @KINDS
    @check("R-CANCEL-1")
    async def test_r_cancel_1_cancelled_receive_takes_nothing(self, harness: Harness, kind: str) -> None:
        """R-CANCEL-1: receives cancelled before or right after a send never swallow the message."""
        if kind == "named":  # sends while no receive is pending: they must wait on the channel
            harness.require("named_backlog")
        layer = await harness.layer()
        channel = await harness.channel(layer, kind)
        for i in range(30):
            pending = asyncio.create_task(layer.receive(channel))
            await asyncio.sleep(harness.rng.choice([0, 0.001, 0.01]))
            if i % 2:  # the message may already be on its way to the cancelled receive
                await layer.send(channel, {"i": i})
                for _ in range(i // 2 % 4):  # ... or inside it, a few steps further
                    await asyncio.sleep(0)
            pending.cancel()
            got = await _result_or_none(pending)
            if i % 2 == 0:
                assert got is None, f"a receive on an empty channel returned {got!r}"
                await layer.send(channel, {"i": i})
            if got is None:
                got = await harness.receive(layer, channel)
            same(got, {"i": i}, f"message after cancelled receive #{i}")
        await harness.expect_nothing(layer, channel, "a message was delivered twice")

    @KINDS
    @check("R-CANCEL-2")
    async def test_r_cancel_2_cancellation_storm(self, harness: Harness, kind: str) -> None:
        """R-CANCEL-2: 300 messages flow while hundreds of receives are cancelled: none lost, none doubled, in order."""
        if kind == "named":  # sends while no receive is pending: they must wait on the channel
            harness.require("named_backlog")
        layer = await harness.layer(capacity=ROOMY)
        channel = await harness.channel(layer, kind)
        writer = asyncio.create_task(_paced_writer(harness, layer, channel, 300, pause=0.002))
        got: list[int] = []
        cancelled = 0
        while not writer.done():
            pending = asyncio.create_task(layer.receive(channel))
            for _ in range(harness.rng.choice([0, 1, 2, 3, 5])):
                await asyncio.sleep(0)
            pending.cancel()
            message = await _result_or_none(pending)
            if message is None:
                cancelled += 1
            else:
                got.append(message["i"])
        await writer
        await _drain(harness, layer, channel, got, 300)
        assert cancelled >= 100, f"only {cancelled} receives were cancelled: the storm did not happen"

    @KINDS
    @check("R-CANCEL-3")
    async def test_r_cancel_3_polling_with_timeouts(self, harness: Harness, kind: str) -> None:
        """R-CANCEL-3: ``wait_for(receive(), short)`` in a loop gets every message once, in order."""
        if kind == "named":  # sends while no receive is pending: they must wait on the channel
            harness.require("named_backlog")
        layer = await harness.layer(capacity=ROOMY)
        channel = await harness.channel(layer, kind)
        writer = asyncio.create_task(_paced_writer(harness, layer, channel, 100, pause=0.005))
        got: list[int] = []
        timeouts = 0
        while not writer.done():
            try:
                got.append((await asyncio.wait_for(layer.receive(channel), harness.rng.choice([0.001, 0.003])))["i"])
            except asyncio.TimeoutError:
                timeouts += 1
        await writer
        await _drain(harness, layer, channel, got, 100)
        assert timeouts >= 20, f"only {timeouts} receives timed out: the polling did not happen"


async def _paced_writer(harness: Harness, layer: Any, channel: str, count: int, pause: float = 0.0) -> None:
    """Send ``count`` numbered messages, sleeping a random fraction of ``pause`` (or yielding) between them."""
    for message in numbered(count):
        await layer.send(channel, message)
        await asyncio.sleep(harness.rng.uniform(0, pause) if pause else 0)


async def _send_schedule(layer: Any, schedule: list[tuple[str, int]]) -> None:
    for channel, i in schedule:
        await layer.send(channel, {"to": channel, "i": i})


async def _result_or_none(task: asyncio.Task[Any]) -> Any:
    try:
        return await task
    except asyncio.CancelledError:
        return None


async def _drain(harness: Harness, layer: Any, channel: str, got: list[int], count: int) -> None:
    """Receive (without cancelling) until ``count`` messages are in ``got``; then check it is exactly 0..count-1."""
    try:
        while len(got) < count:
            got.append((await harness.receive(layer, channel))["i"])
    except AssertionError:
        missing = sorted(set(range(count)) - set(got))
        raise AssertionError(f"{len(missing)} of {count} messages were lost, e.g. {missing[:10]}") from None
    await harness.expect_nothing(layer, channel, "a message was delivered twice")
    duplicated = sorted(i for i, n in Counter(got).items() if n > 1)
    assert not duplicated, f"messages received twice: {duplicated[:10]}"
    assert got == list(range(count)), f"out of order: {_first_disorder(got)}"


def _first_disorder(received: list[int]) -> str:
    for position, (got, want) in enumerate(zip(received, range(len(received)), strict=True)):
        if got != want:
            return f"position {position} holds message {got}, expected {want}: {received[position:position + 10]}"
    return f"{len(received)} messages received"
