"""Which queues exist: declare on first use, renew before ``x-expires``, and record every name for ``flush``.

AMQP has no way to list queues, so every queue this prefix declares is also written, once per connection and then
at least every half registry TTL, into the prefix's *registry* queue; ``flush`` drains it and deletes each name.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from pika import spec

from layers.errors import BackendUnavailable

from .connection import ChannelError, Link, channel_failure
from .topology import Topology

__all__ = ["Declarations"]

log = logging.getLogger("layers.amqp")

_PERSISTENT = spec.BasicProperties(delivery_mode=2)


class Declarations:
    """The per-connection cache of declared queues (AMQP name -> monotonic time of our last declare)."""

    def __init__(self, link: Link, topology: Topology) -> None:
        self.link = link
        self.top = topology
        self._declared: dict[str, float] = {}
        self._registered: dict[str, float] = {}  # AMQP name -> monotonic time of its last registry record
        self._generation = 0  # Link.generation the caches belong to
        self._warned: set[str] = set()
        self._inflight: dict[str, asyncio.Future[None]] = {}  # name -> the declaration in progress
        self._registry_down_until = 0.0  # monotonic time before which the registry is not tried again

    def _sync(self) -> None:
        if self._generation != self.link.generation:  # a new connection: the broker may have lost its queues
            self._generation = self.link.generation
            self.clear()

    def clear(self) -> None:
        self._declared.clear()
        self._registered.clear()

    def forget(self, name: str) -> None:
        """``name`` turned out missing (expired, or deleted by a flush elsewhere): declare it again next time."""
        self._declared.pop(name, None)

    def missing(self, name: str, exc: ChannelError) -> None:
        """A call found ``name`` missing; any other channel error is not something a retry fixes."""
        if exc.code != 404:
            raise channel_failure(f"call on {name!r}", exc) from exc
        self.forget(name)

    def fresh(self, queue: str) -> bool:
        """Whether the queue of this channel was declared on this connection recently enough (no await)."""
        last = self._declared.get(self.top.queue(queue))
        return (last is not None and self._generation == self.link.generation
                and time.monotonic() - last <= self._renew_after(queue))

    async def channels(self, capacities: dict[str, int]) -> None:
        """Make sure the queues of these channels (named or process queues) exist, with their capacity."""
        self._sync()
        now = time.monotonic()
        for queue, capacity in capacities.items():
            name = self.top.queue(queue)
            last = self._declared.get(name)
            if last is None or now - last > self._renew_after(queue):
                await self.declare(name, self.top.channel_args(queue, capacity))

    async def inbox(self, proc: str) -> None:
        """Make sure the group inbox of process queue ``proc`` exists."""
        self._sync()
        name = self.top.group_inbox(proc)
        last = self._declared.get(name)
        if last is None or time.monotonic() - last > self._renew_after(proc):
            await self.declare(name, self.top.inbox_args())

    def _renew_after(self, queue: str) -> float:
        """Re-declare (which renews ``x-expires``) well before an unused queue could expire."""
        expires = self.top.process_expires_ms if "!" in queue else self.top.named_expires_ms
        return expires / 2000

    async def declare(self, name: str, arguments: dict[str, Any], durable: bool = False) -> None:
        """Declare a queue; if it exists with other arguments (another layer's capacity or expiry settings), use
        it as it is: queue arguments are fixed when a queue is created, so the first declarer's limits win.

        Concurrent calls for one name share one declaration: 2,000 concurrent group_adds of a new process used
        to declare its inbox 2,000 times and write 2,000 registry records (the registry drops its oldest records
        past 100k, so such bursts could push out the names ``flush`` needs)."""
        pending = self._inflight.get(name)
        if pending is not None:
            await asyncio.shield(pending)
            return
        pending = self._inflight[name] = asyncio.get_running_loop().create_future()
        try:
            await self._declare(name, arguments, durable)
        except BaseException as exc:
            pending.set_exception(exc if isinstance(exc, Exception) else BackendUnavailable("declaration interrupted"))
            pending.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            pending.set_result(None)
        finally:
            del self._inflight[name]

    async def _declare(self, name: str, arguments: dict[str, Any], durable: bool) -> None:
        try:
            await self.link.declare(name, arguments, durable=durable)
        except ChannelError as exc:
            if exc.code != 406:
                raise BackendUnavailable(f"declaring AMQP queue {name!r} failed: {exc}") from exc
            if name not in self._warned:
                self._warned.add(name)
                log.warning("AMQP queue %r exists with other arguments than %r (%s); using it as it is",
                            name, arguments, exc)
            try:
                await self.link.declare(name, None, passive=True)
            except ChannelError as again:
                raise BackendUnavailable(f"AMQP queue {name!r} vanished while declaring it: {again}") from again
        self._declared[name] = time.monotonic()
        await self.register(name)

    async def register(self, name: str, again: bool = False) -> None:
        """Record ``name`` in the prefix's registry queue so ``flush`` can find it."""
        now = time.monotonic()
        last = self._registered.get(name)
        if not again and last is not None and now - last < self.top.registry_ttl_ms / 2000:
            return
        registry = self.top.registry
        if now < self._registry_down_until:
            return
        if now - self._registered.get(registry, -math.inf) > self.top.registry_ttl_ms / 2000:
            try:
                await self.renew_registry()
            except BackendUnavailable as exc:
                if not _home_node_down(exc):
                    raise
                # The registry is durable, so it lives on one node of a cluster; while that node is down nothing
                # can declare it.  The layer must keep serving: skip recording (such queues still expire on their
                # own) and look again at the next renewal, not on every declaration (each failed declare closes
                # the ctl channel and its consumers).
                self._registry_down_until = now + self.top.registry_ttl_ms / 2000
                log.warning("AMQP registry queue %r is unavailable (%s): queues declared until it is back are "
                            "not recorded for flush", registry, exc)
                return
            self._registered[registry] = now
        # Persistent in a durable queue: member queues are durable too and must stay findable after a restart.
        self.link.publish("", registry, name.encode(), _PERSISTENT, False)  # confirm not awaited: best effort
        self._registered[name] = now

    async def renew_registry(self) -> None:
        """Declare the registry, which renews its ``x-expires``: in full the first time on a connection, then
        passively, so a registry declared with other arguments (other layer settings, or made before registries
        expired) is not argued with every time (each 406 closes the ``ctl`` channel and its consumers)."""
        if self.top.registry not in self._registered:
            await self.declare_registry()
            return
        try:
            await self.link.declare(self.top.registry, None, passive=True)
        except ChannelError as exc:
            if exc.code != 404:
                raise BackendUnavailable(f"renewing the AMQP registry queue failed: {exc}") from exc
            await self.declare_registry()  # it expired, or a flush elsewhere raced us: make it again

    async def declare_registry(self) -> None:
        try:
            await self.link.declare(self.top.registry, self.top.registry_args(), durable=True)
        except ChannelError as exc:
            if exc.code != 406:
                raise BackendUnavailable(f"declaring the AMQP registry queue failed: {exc}") from exc
            await self.link.declare(self.top.registry, None, passive=True)


def _home_node_down(exc: BaseException) -> bool:
    """RabbitMQ's 404 for a durable classic queue whose cluster node is down (``home node ... is down or
    inaccessible``)."""
    cause = exc.__cause__
    return isinstance(cause, ChannelError) and cause.code == 404 and "home node" in str(cause)
