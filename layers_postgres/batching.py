"""Sends of one event loop: one made while no other is on its way goes at once; those made meanwhile are merged.

The core can merge concurrent sends itself (``Backend.coalesce_pushes``), but it always defers a send by a loop
iteration and a task to see whether others join.  A lone sender (the common case: a consumer that answers, a
producer awaiting each send) then reaches the server only after everything else the loop had to do, and its
round trip cannot overlap with that work.  Here a send goes at once when nothing else is being sent, and only
sends made while others are on their way wait for the next loop iteration and go together in one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

from layers.backend import Push
from layers.errors import BackendUnavailable

__all__ = ["Batcher"]

Send = Callable[[Sequence[Push]], Awaitable[list[bool]]]


class Batcher:
    """Merges the sends made while others are on their way into one ``send`` call per loop iteration."""

    #: Seconds after sends last overlapped during which every send joins a batch: concurrent senders (that all
    #: wake up in the same loop iteration) then go together, instead of the first alone and the others after.
    merge_window: float = 0.005

    def __init__(self, send: Send) -> None:
        self._send = send
        self._sending = 0  # calls of ``send`` on their way
        self._waiting: list[tuple[Push, asyncio.Future[bool]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._merging_until = 0.0  # loop time until which sends join batches

    def busy(self, now: float) -> bool:
        """Whether a new send should join the next batch: others are on their way, or were lately."""
        if self._sending or self._waiting:
            self._merging_until = now + self.merge_window
            return True
        return now < self._merging_until

    @contextmanager
    def sending(self) -> Iterator[None]:
        """Count a send that goes at once, so that sends made meanwhile are merged."""
        self._sending += 1
        try:
            yield
        finally:
            self._sending -= 1

    async def join(self, push: Push) -> bool:
        """Send ``push`` with the others made in this loop iteration; whether it was stored."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((push, future))
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, batch: list[tuple[Push, asyncio.Future[bool]]]) -> None:
        futures = [future for _, future in batch]
        try:
            with self.sending():
                results = await self._send([push for push, _ in batch])
        except Exception as exc:
            _settle(futures, error=exc)
        except BaseException:  # cancelled (the backend closes): the senders get an answer, not a hang
            _settle(futures, error=BackendUnavailable("send interrupted"))
            raise
        else:
            _settle(futures, results=results)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _settle(futures: list[asyncio.Future[bool]], results: list[bool] | None = None,
            error: BaseException | None = None) -> None:
    """Answer every sender still waiting: its push's result, or the error of the whole batch."""
    for index, future in enumerate(futures):
        if future.done():
            continue  # its sender was cancelled
        if error is not None:
            future.set_exception(error)
        else:
            assert results is not None
            future.set_result(results[index])
