"""Senders of this process serving this process's waiting fill directly, in the same statement as the push.

When the fill of a queue is parked (nothing was there at its last look), a push to that queue from the same
backend can claim the head of the queue for it in the push's own statement (see
:func:`layers_postgres.schema.push_claim_sql`) and deliver what it claimed straight into the fill's feed: one
round trip per message instead of a push, a NOTIFY and a claim.  Only one push serves a parked fill; it takes the
:class:`Slot` away so no other push does too.  The core owns what was delivered from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from layers.backend import Feed

__all__ = ["Handoffs", "Slot"]


class Slot:
    """One parked fill: the feed a push serving it delivers into, how many items it may take, its wake-up."""

    __slots__ = ("_settled", "answered", "credit", "delivered", "feed", "future", "released", "taken")

    def __init__(self, feed: Feed, credit: int, future: asyncio.Future[None]) -> None:
        self.feed = feed
        self.credit = credit
        self.future = future
        self.taken = False  # a push is claiming for this fill
        self.answered = False  # that push is done
        self.delivered = False  # and delivered items into the feed (else the fill looks at the table)
        self.released = False  # nobody in this process waits on the queue any more: the fill returns
        self._settled: list[asyncio.Future[None]] = []  # those waiting for the push to answer

    def wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    async def settled(self) -> None:
        """Wait until the push that took this slot has answered (it always does, within its time limit)."""
        if self.answered:
            return
        future = asyncio.get_running_loop().create_future()
        self._settled.append(future)
        await future

    def answer(self, items: Sequence[bytes] | None) -> None:
        if items:
            self.feed.deliver(items)
            self.delivered = True
        self.answered = True
        self.wake()
        for future in self._settled:
            if not future.done():
                future.set_result(None)


class Handoffs:
    """The parked fills of one backend by queue, and the pushes serving one."""

    #: Seconds after a fill returned during which its reader counts as coming back (see :meth:`between_fills`).
    comeback: float = 0.001
    #: Queues whose last fill is remembered; beyond this the memory is dropped (it only saves round trips).
    max_remembered: int = 1000

    def __init__(self) -> None:
        self._parked: dict[str, Slot] = {}
        self._serving: dict[str, Slot] = {}  # queue -> the slot a push took and has not answered yet
        self._returned: dict[str, float] = {}  # queue -> loop time its last fill returned (none in progress)

    def filling(self, queue: str) -> None:
        self._returned.pop(queue, None)

    def filled(self, queue: str, now: float) -> None:
        if len(self._returned) >= self.max_remembered:
            self._returned.clear()
        self._returned[queue] = now

    def between_fills(self, queue: str, now: float) -> bool:
        """Whether the reader of ``queue`` just got items and will most likely fill again at once."""
        returned = self._returned.get(queue)
        return returned is not None and now - returned < self.comeback

    def park(self, queue: str, feed: Feed, credit: int, future: asyncio.Future[None]) -> Slot:
        slot = self._parked[queue] = Slot(feed, credit, future)
        return slot

    def unpark(self, queue: str, slot: Slot) -> None:
        if self._parked.get(queue) is slot:
            del self._parked[queue]

    def take(self, queue: str) -> Slot | None:
        """The parked fill of ``queue`` for a push to serve, if there is one; no other push gets it."""
        slot = self._parked.pop(queue, None)
        if slot is not None:
            slot.taken = True
            self._serving[queue] = slot
        return slot

    def answer(self, queue: str, slot: Slot, items: Sequence[bytes] | None) -> None:
        """Deliver what the push claimed for ``slot`` (None: the push failed, the fill looks for itself)."""
        if self._serving.get(queue) is slot:
            del self._serving[queue]
        slot.answer(items)
        if items:  # the reader is as good as back from its fill: it usually fills again at once
            self.filled(queue, asyncio.get_running_loop().time())

    def release(self, queue: str) -> None:
        """Nobody waits on ``queue`` here any more: its parked fill (if no push took it yet) returns."""
        slot = self._parked.pop(queue, None)
        if slot is not None:
            slot.released = True
            slot.wake()

    async def settle(self, queue: str) -> None:
        """Wait for the push serving ``queue`` (if any) to deliver: nothing more arrives for it after this."""
        self.release(queue)
        self._returned.pop(queue, None)
        slot = self._serving.get(queue)
        if slot is not None:
            await slot.settled()

    def clear(self) -> None:
        for slot in self._parked.values():
            slot.wake()
        self._parked.clear()
        self._returned.clear()
