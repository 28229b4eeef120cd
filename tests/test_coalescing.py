"""The core's send coalescer: a lone send goes at once, sends made while others are on their way go together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from layers import BackendUnavailable
from layers.backend import Push
from layers.coalescing import Coalescer


class _Server:
    """Counts calls; each call takes ``delay`` seconds; refuses pushes whose item is b"full"."""

    def __init__(self, delay: float = 0.01, error: Exception | None = None) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.error = error

    async def send(self, pushes: Sequence[Push]) -> list[bool]:
        self.calls.append(len(pushes))
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return [push.item != b"full" for push in pushes]


def _push(item: bytes = b"x") -> Push:
    return Push("q", item, 100, 4e9)


def test_a_lone_send_reaches_the_backend_before_the_loop_turns() -> None:
    async def scenario() -> None:
        server = _Server()
        coalescer = Coalescer(server.send, asyncio.get_running_loop())
        sent = asyncio.ensure_future(coalescer.push(_push()))
        await asyncio.sleep(0)  # the task starts; its backend call must already be made, not deferred
        assert server.calls == [1]
        assert await sent is True

    asyncio.run(scenario())


def test_sends_made_while_one_is_on_its_way_go_together_each_with_its_own_answer() -> None:
    async def scenario() -> None:
        server = _Server()
        coalescer = Coalescer(server.send, asyncio.get_running_loop())
        items = [b"full" if i % 7 == 0 else b"x" for i in range(50)]
        results = await asyncio.gather(*(coalescer.push(_push(item)) for item in items))
        assert results == [item != b"full" for item in items]
        assert server.calls[0] == 1 and sum(server.calls) == 50 and len(server.calls) <= 3

    asyncio.run(scenario())


def test_a_failed_batch_fails_each_of_its_senders_and_a_cancelled_sender_is_skipped() -> None:
    async def scenario() -> None:
        server = _Server(error=BackendUnavailable("down"))
        coalescer = Coalescer(server.send, asyncio.get_running_loop())
        first = asyncio.ensure_future(coalescer.push(_push()))
        await asyncio.sleep(0)
        joined = [asyncio.ensure_future(coalescer.push(_push())) for _ in range(3)]
        await asyncio.sleep(0)
        joined[1].cancel()
        outcomes = await asyncio.gather(first, *joined, return_exceptions=True)
        assert [type(outcome) for outcome in outcomes] == [BackendUnavailable, BackendUnavailable,
                                                           asyncio.CancelledError, BackendUnavailable]
        await coalescer.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("delay", [0.0, 0.005])
def test_order_of_one_writers_sends_is_kept(delay: float) -> None:
    """A writer awaiting each send, beside others sending concurrently: its pushes reach the server in order."""
    async def scenario() -> None:
        seen: list[bytes] = []

        async def send(pushes: Sequence[Push]) -> list[bool]:
            seen.extend(push.item for push in pushes)
            await asyncio.sleep(delay)
            return [True for _ in pushes]

        coalescer = Coalescer(send, asyncio.get_running_loop())

        async def writer(name: bytes) -> None:
            for i in range(30):
                await coalescer.push(_push(name + b"%02d" % i))

        await asyncio.gather(*(writer(bytes([65 + w])) for w in range(5)))
        for w in range(5):
            mine = [item for item in seen if item[:1] == bytes([65 + w])]
            assert mine == sorted(mine) and len(mine) == 30

    asyncio.run(scenario())
