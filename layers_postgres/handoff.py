"""Senders of this process serving this process's waiting reader directly, in the same statement as the push.

When the reader of a queue is parked (nothing was there at its last look), a push to that queue from the same
backend can claim the head of the queue for that reader in the push's own statement (see
:func:`layers_postgres.schema.push_claim_sql`): one round trip per message instead of a push, a NOTIFY and a
claim.  Only one push serves a parked reader; it takes the :class:`Slot` away so no other push does too.
"""

from __future__ import annotations

import asyncio

__all__ = ["Handoffs", "Slot"]


class Slot:
    """One parked reader: how many items it takes, and the future that wakes it."""

    __slots__ = ("abandoned", "answered", "future", "items", "limit", "released", "taken")

    def __init__(self, limit: int, future: asyncio.Future[None]) -> None:
        self.limit = limit
        self.future = future
        self.taken = False  # a push is claiming for this reader
        self.answered = False  # that push is done
        self.items: list[bytes] | None = None  # what it claimed for this reader; None if it failed
        self.abandoned = False  # the reader stopped waiting (cancelled): its items go to the stash
        self.released = False  # nobody in this process waits on the queue any more: the reader returns []

    def wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class Handoffs:
    """The parked readers of one backend by queue, and items claimed for a reader that left meanwhile."""

    #: Seconds after a pop returned during which its reader counts as coming back (see :meth:`between_pops`).
    comeback: float = 0.001
    #: Queues whose last pop is remembered; beyond this the memory is dropped (it only saves round trips).
    max_remembered: int = 1000

    def __init__(self) -> None:
        self._parked: dict[str, Slot] = {}
        self._stash: dict[str, list[bytes]] = {}
        self._returned: dict[str, float] = {}  # queue -> loop time its last pop returned (none in progress)

    def popping(self, queue: str) -> None:
        self._returned.pop(queue, None)

    def popped(self, queue: str, now: float) -> None:
        if len(self._returned) >= self.max_remembered:
            self._returned.clear()
        self._returned[queue] = now

    def between_pops(self, queue: str, now: float) -> bool:
        """Whether the reader of ``queue`` just returned items and will most likely pop again at once."""
        returned = self._returned.get(queue)
        return returned is not None and now - returned < self.comeback

    def park(self, queue: str, limit: int, future: asyncio.Future[None]) -> Slot:
        slot = self._parked[queue] = Slot(limit, future)
        return slot

    def unpark(self, queue: str, slot: Slot) -> None:
        if self._parked.get(queue) is slot:
            del self._parked[queue]

    def take(self, queue: str) -> Slot | None:
        """The parked reader of ``queue`` for a push to serve, if there is one; no other push gets it."""
        slot = self._parked.pop(queue, None)
        if slot is not None:
            slot.taken = True
        return slot

    def release(self, queue: str) -> None:
        """Nobody waits on ``queue`` here any more: its parked reader (if no push took it yet) returns empty."""
        slot = self._parked.pop(queue, None)
        if slot is not None:
            slot.released = True
            slot.wake()

    def deliver(self, queue: str, slot: Slot, items: list[bytes] | None) -> None:
        """Give the reader what the push claimed for it (None: the push failed, the reader looks for itself)."""
        if slot.abandoned:
            if items:
                self._stash.setdefault(queue, []).extend(items)  # the next pop of this queue returns them
            return
        slot.items = items
        slot.answered = True
        slot.wake()
        if items:  # the reader is as good as back from its pop: it usually pops again at once
            self.popped(queue, asyncio.get_running_loop().time())

    def unstash(self, queue: str) -> list[bytes]:
        return self._stash.pop(queue, [])

    def take_stash(self) -> dict[str, list[bytes]]:
        """Every stashed item by queue (the backend closes: they must go back to the table, not vanish)."""
        stash, self._stash = self._stash, {}
        return stash

    def clear(self) -> None:
        for slot in self._parked.values():
            slot.wake()
        self._parked.clear()
        self._stash.clear()
        self._returned.clear()
