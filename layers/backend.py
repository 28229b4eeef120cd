"""The contract between the core and a backend: what a backend must do to move bytes.

A backend never sees a message dict, a capacity pattern or a clock setting: the core hands it opaque items with
the queue they go to, the capacity of that queue and the deadline after which they are void.  One backend object
serves one event loop (the core creates one per loop and drops it when the loop closes), so it may hold
connections bound to that loop.

Queues: a named channel is its own queue (``"tasks"``); every process-local channel ``"specific.abc!xyz"`` lives in
its process queue ``"specific.abc!"``.  Items in a process queue carry the local channel names inside them, so the
backend never needs to look at them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .envelope import item_head, pack_item
from .errors import Unsupported
from .names import process_part

__all__ = ["Backend", "Feed", "GroupMessage", "Push", "Unclaimed", "background_task"]

_T = TypeVar("_T")

# Every task a layer starts on its own (readers, listeners, keep-alives, releases), so that the core can settle, in
# one place, those that an event loop closed without layer.close() left behind (settle_background_tasks).
_background_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def background_task(coro: Coroutine[Any, Any, _T], name: str | None = None,
                    loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Task[_T]:
    """Start ``coro`` as a task on ``loop`` (the running one by default); a backend starts every task of its own
    through this.

    Keep a reference to the task as with ``create_task``.  A loop may be closed under it without
    ``layer.close()`` (a bare ``loop.close()``; DESIGN principle 4): the core then abandons that loop's state,
    this task with it, so asyncio's "Task was destroyed but it is pending!" (meant for a task someone forgot)
    is turned off for it, as asyncio's own ``run_until_complete`` does for the task it owns.
    """
    task = (loop or asyncio.get_running_loop()).create_task(coro, name=name)
    task._log_destroy_pending = False  # type: ignore[attr-defined]
    _background_tasks.add(task)
    return task


def settle_background_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """``loop`` is closed: its pending background tasks can never run, nor be cancelled (that schedules a callback
    on the loop).  Close their coroutines now, so that their ``finally`` clauses run here rather than whenever the
    collector finds them, and one that never started is not reported as never awaited."""
    for task in [task for task in _background_tasks if task.get_loop() is loop]:
        _background_tasks.discard(task)
        if not task.done():
            with contextlib.suppress(Exception):  # a clause that needs the loop fails: nothing is left to do it for
                task.get_coro().close()


@dataclass(frozen=True, slots=True)
class Push:
    """One item for one queue.

    The backend must store ``item`` at the tail of ``queue`` only if the queue holds fewer than ``capacity``
    unexpired items, atomically with that check, and must never deliver it after ``deadline`` (a Unix time).
    Expired items must stop counting toward capacity.
    """

    queue: str
    item: bytes
    capacity: int
    deadline: float


@dataclass(frozen=True, slots=True)
class Unclaimed:
    """An item the core took through a :class:`Feed` and no receiver claimed: :meth:`Backend.give_back` returns it
    to the head of its queue.  ``deadline`` is the one it was pushed with."""

    item: bytes
    deadline: float


class Feed(abc.ABC):
    """The core's end of one queue's receive path (one per queue and event loop); the backend delivers into it.

    The core owns everything a receiver sees: per-channel buffers, waiting receivers, their cancellation, expiry on
    read, and what happens to items nobody claimed.  A backend only takes items off the server and calls
    :meth:`deliver`, from the event loop's thread, in queue order, at any time (inside :meth:`Backend.fill` or from
    a push callback after it returned); it never buffers items for receivers itself.
    """

    queue: str

    @abc.abstractmethod
    def deliver(self, items: Sequence[bytes]) -> None:
        """Items taken off the server for :attr:`queue`, oldest first.  The core owns them from here: each goes to a
        receiver, or waits in this process, or (a named channel nobody here waits on) goes back through
        :meth:`Backend.give_back`.  Never raises for a bad item: the core logs and skips it.

        Settle an item on the server (remove it, acknowledge it) no later than delivering it: an event loop may be
        closed without ``close()`` (``async_to_sync`` does), and an item still the server's would then be
        delivered again to the next loop's backend."""


class Backend(abc.ABC):
    """Moves items between this process and a server, on one event loop.

    Every method that talks to the server raises :class:`layers.BackendUnavailable` (wrapping the driver error)
    when the server cannot be reached within the backend's time limit.
    """

    #: The shortest expiry (seconds) the backend can enforce precisely; the conformance suite reads it.
    min_expiry: float = 0.0
    #: Whether :meth:`group_members` answers for every process.  False: it knows only this process's members
    #: (the server routes group messages itself), so the core refuses to list a group (``Unsupported``).
    lists_group_members: bool = True
    #: Whether the core should coalesce concurrent sends into one ``push`` call (one round trip).
    coalesce_pushes: bool = True

    @abc.abstractmethod
    async def push(self, pushes: Sequence[Push]) -> list[bool]:
        """Store each push atomically with its capacity check; return, per push, whether it was stored.

        The core coalesces concurrent sends into one call, so this should cost one round trip per server shard.
        Pushes to the same queue in one call must be stored in the given order.
        """

    # -- receiving: the core runs one reader per queue and event loop, which calls fill() while anyone waits ----

    async def fill(self, feed: Feed, credit: int, timeout: float) -> None:
        """Take up to ``credit`` more items of ``feed.queue`` off the server and deliver them into ``feed``.

        Return once ``credit`` items were delivered, or after at most ``timeout`` seconds, or earlier when it is
        worth being asked again (the core calls again at once while anyone waits).  ``credit`` is how many items
        the core may hold ahead of its receivers: one per waiting receiver for a named channel, so a process
        never takes a message a reader elsewhere could have had; a bounded batch for a process queue, so what a
        process holds stays bounded and the rest keeps counting toward capacity on the server (spec R-CAP-5).
        A push server's subscription may outlive the call and deliver later, but never more than the credit of
        its latest ask; :meth:`close_feed` ends it.  Deliveries that arrive while no fill runs may be held
        unsettled on the server (unacknowledged, still counting toward its capacity) until the next fill: that is
        the server's, not a buffer of the backend's.  Each item is delivered to exactly one feed across all
        processes (at-most-once, never duplicated).  Not cancelled, except by the core closing.

        The default pulls: one :meth:`pop` delivered into the feed.  A backend whose server pushes overrides this.
        """
        items = await self.pop(feed.queue, credit, timeout)
        if items:
            feed.deliver(items)

    async def pop(self, queue: str, limit: int, timeout: float) -> list[bytes]:
        """A pull backend's :meth:`fill`: remove and return up to ``limit`` unexpired items from the head of
        ``queue``, oldest first; wait up to ``timeout`` seconds for the first and return ``[]`` if none came."""
        raise NotImplementedError(f"{type(self).__name__} implements neither fill() nor pop()")

    async def close_feed(self, queue: str) -> None:  # noqa: B027 - optional hook, empty by design
        """Nobody in this process has waited on ``queue`` for a while: withdraw whatever still asks the server for
        its items.  Once this returns, nothing more is delivered for ``queue`` until the next :meth:`fill`.  What
        was delivered and not claimed, the core then hands to :meth:`give_back`."""

    async def give_back(self, queue: str, items: Sequence[Unclaimed]) -> bool:
        """Put ``items`` (delivered from a named channel, claimed by nobody) back at the head of ``queue`` in this
        order, as if never taken; True when done.  False (the default) keeps them in this process for its next
        receiver."""
        return False

    def pop_nowait(self, queue: str, limit: int) -> list[bytes] | None:
        """Optional: pop without waiting or awaiting (a backend whose store is in this process); None if unsupported.

        Lets ``receive`` take a ready message without starting a reader task.
        """
        return None

    async def server_footprint(self) -> dict[str, int] | None:
        """Optional: what the server holds for this layer (keys, rows, queues), for leak checks and benchmarks."""
        return None

    async def ping(self) -> None:
        """One round trip to every server (shard) this backend uses, concurrently; return once all answered.

        Raises what a call would: ``BackendUnavailable`` when a server cannot be reached in time,
        ``BackendRefused`` when it refuses the client.  The default raises ``Unsupported``.
        """
        raise Unsupported(f"{type(self).__name__} has no ping()")

    @abc.abstractmethod
    async def group_add(self, group: str, channel: str, deadline: float) -> None:
        """Make ``channel`` a member of ``group`` until ``deadline`` (a later add extends it)."""

    @abc.abstractmethod
    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no error if it is not a member."""

    @abc.abstractmethod
    async def group_members(self, group: str) -> list[str]:
        """The channels whose membership of ``group`` has not lapsed (and forget those that have)."""

    async def group_push(self, group: str, message: GroupMessage) -> int:
        """Deliver ``message`` to every member of ``group``; return how many members were full (dropped).

        The default costs one ``group_members`` plus one ``push`` of :meth:`GroupMessage.pushes`; a backend can
        override it to do the whole fan-out server-side.
        """
        members = await self.group_members(group)
        if not members:
            return 0
        pushes, counts = message.pushes(members)
        stored = await self.push(pushes)
        return sum(count for ok, count in zip(stored, counts, strict=True) if not ok)

    @abc.abstractmethod
    async def flush(self) -> None:
        """Delete every queue, item and group this layer (its ``prefix``) owns on the server."""

    async def drop(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Optional: after :meth:`flush`, remove what this prefix created on the server that ``flush`` keeps
        (tables and functions, a queue registry), for a tool that made the prefix and is done with it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection; must be idempotent."""

    def abandon(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Drop connections without awaiting (the event loop they belong to has closed)."""

    def stop_waiting(self, queue: str) -> None:  # noqa: B027 - optional hook, empty by design
        """Optional: nobody in this process waits on ``queue`` any more (the last receiver was served or
        cancelled).  A :meth:`fill` of it still waiting may return early without taking anything, so a process
        whose receivers left does not take a named-channel message that a reader elsewhere could have had.
        """


class GroupMessage:
    """One ``group_send`` as a backend sees it (the core builds it): the items to store and the capacity that
    applies, nothing of the layer's settings beyond that.

    A named member's queue gets :attr:`named_item`; the members of one process share one :meth:`bundle` in their
    process queue (spec R-GROUP-5).  Items follow :mod:`layers.envelope` (version 1): a backend that builds bundles
    on its server uses :attr:`head` and :attr:`payload` as that module lays out, and its tests compare the result
    with :meth:`bundle`.
    """

    __slots__ = ("capacity", "deadline", "head", "named_item", "payload", "uniform_capacity")

    def __init__(self, payload: bytes, deadline: float, capacity: Callable[[str], int],
                 uniform_capacity: int | None) -> None:
        self.payload = payload  #: the serialized message
        self.deadline = deadline  #: Unix time after which no copy may be delivered
        self.capacity = capacity  #: the capacity of a queue (a named channel or a process queue)
        #: The capacity of every queue when one applies to all (a server-side fan-out can then check each member
        #: against it), else None: per-queue capacities, use :attr:`capacity` or the default :meth:`pushes`.
        self.uniform_capacity = uniform_capacity
        self.head = item_head(deadline)  #: the first bytes of every item of this message
        self.named_item = pack_item(deadline, None, payload)

    def bundle(self, channels: list[str]) -> bytes:
        """The item for these local channels of one process."""
        return pack_item(self.deadline, channels, self.payload)

    def pushes(self, members: Sequence[str]) -> tuple[list[Push], list[int]]:
        """The pushes for these members (one per named channel, one bundle per process) and, per push, how many
        member channels it serves (for drop counts)."""
        pushes: list[Push] = []
        counts: list[int] = []
        bundles: dict[str, list[str]] = {}
        for channel in members:
            proc = process_part(channel)
            if proc is None:
                pushes.append(Push(channel, self.named_item, self.capacity(channel), self.deadline))
                counts.append(1)
            else:
                bundles.setdefault(proc, []).append(channel)
        for proc, channels in bundles.items():
            pushes.append(Push(proc, self.bundle(channels), self.capacity(proc), self.deadline))
            counts.append(len(channels))
        return pushes, counts


FanOut = GroupMessage  # the name before GroupMessage; kept while backends move to the new one
