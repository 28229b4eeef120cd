"""Sends of one event loop: one made while no other is on its way goes at once; those made meanwhile are merged.

Deferring every send by a loop iteration to see whether others join would make a lone sender (a consumer that
answers, a producer awaiting each send) reach the server only after everything else the loop had to do, with no
overlap of its round trip and that work.  Here a send goes at once when nothing else is being sent, and only sends
made while others are on their way wait for the next loop iteration and go together in one backend call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from .backend import Push, background_task
from .errors import BackendUnavailable

__all__ = ["Coalescer"]

Send = Callable[[Sequence[Push]], Awaitable[list[bool]]]


class Coalescer:
    """Merges the pushes made while others are on their way into one ``send`` call per loop iteration."""

    #: Seconds after sends last overlapped during which every send joins a batch: concurrent senders (that all
    #: wake up in the same loop iteration) then go together, instead of the first alone and the others after.
    merge_window: float = 0.005

    def __init__(self, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self._send = send
        self._loop = loop
        self._sending = 0  # calls of ``send`` on their way
        self._waiting: list[tuple[Push, asyncio.Future[bool]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._merging_until = 0.0  # loop time until which sends join batches

    async def push(self, push: Push) -> bool:
        """Store ``push`` (at once, or with the others of this loop iteration); whether it was stored."""
        if self._busy():
            return await self._join(push)
        self._sending += 1
        try:
            return (await self._send([push]))[0]
        finally:
            self._sending -= 1

    def _busy(self) -> bool:
        now = self._loop.time()
        if self._sending or self._waiting:
            self._merging_until = now + self.merge_window
            return True
        return now < self._merging_until

    async def _join(self, push: Push) -> bool:
        future: asyncio.Future[bool] = self._loop.create_future()
        if not self._waiting:
            self._loop.call_soon(self._flush)
        self._waiting.append((push, future))
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = background_task(self._send_batch(batch), loop=self._loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, batch: list[tuple[Push, asyncio.Future[bool]]]) -> None:
        self._sending += 1
        try:
            results = await self._send([push for push, _ in batch])
        except Exception as exc:
            _settle(batch, error=exc)
        except BaseException:  # cancelled (the layer closes): the senders get an answer, not a hang
            _settle(batch, error=BackendUnavailable("send interrupted"))
            raise
        else:
            _settle(batch, results=results)
        finally:
            self._sending -= 1

    async def close(self) -> None:
        """Let the batches on their way finish (their senders get their answers)."""
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _settle(batch: list[tuple[Push, asyncio.Future[bool]]], results: list[bool] | None = None,
            error: BaseException | None = None) -> None:
    """Answer every sender still waiting: its push's result, or the error of the whole batch."""
    for index, (_, future) in enumerate(batch):
        if future.done():
            continue  # its sender was cancelled
        if error is not None:
            future.set_exception(error)
        else:
            assert results is not None
            future.set_result(results[index])
