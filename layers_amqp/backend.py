"""The AMQP :class:`~layers.backend.Backend`: queues with length limits, publisher confirms, group bindings.

* ``push``: publish every item to its channel queue (default exchange, ``mandatory``) and await the confirms
  together.  A nack means the queue is at its ``x-max-length`` (``reject-publish``): the push was refused.  A
  return means the queue does not exist (expired, or flushed by another process): re-declare and publish again.
* ``fill`` of a process queue: while a fill is pending, a manual-ack consumer hands its deliveries from pika's
  callback straight into the core's feed, acknowledged as handed over (the core's from then on); what arrives
  while none is pending stays unacknowledged, the broker's, until the next fill.  The consumer's prefetch is the
  core's credit (its batch), so a process never holds more than one batch ahead of what its receivers asked for:
  the rest waits (and counts toward capacity) on the broker.  ``close_feed`` cancels the consumer and requeues
  what it held, so an idle process lets every further message wait there.
* ``fill`` of a named channel: ``basic.get`` (auto-ack) takes messages one by one, one per receiver waiting here,
  so a message is never held by a process that does not want it; while the queue is empty and a receiver waits, a
  prefetch-1, manual-ack consumer (the doorbell) takes the next message for that receiver and cancels itself.  A
  delivery that arrives after the wait ended is rejected back to its place, and the next ``basic.get`` waits until
  that reject is out.  A message nobody claimed stays with the core (``give_back``: AMQP cannot put a message
  back at the head of a queue).
* groups: see :mod:`layers_amqp.groups` (process channels: group messages enter the process queue itself, so they
  meet its capacity and keep their order with direct sends) and :meth:`Topology.member_args` (named channels).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from pika import spec

from layers.backend import Backend, Feed, GroupMessage, Push, background_task
from layers.errors import BackendUnavailable
from layers.names import process_part

from .connection import ChannelError, Link, channel_failure
from .declarations import Declarations
from .groups import ADD, DISCARD, FLUSHED, RECORD_TYPE, Directory, pack_record, record_ttl_ms
from .topology import GROUP_EXCHANGE, Topology
from .wire import Channel

__all__ = ["AMQPBackend"]

log = logging.getLogger("layers.amqp")

#: How many handed-over bodies a process queue remembers (at least 4 x its prefetch): more than the deliveries
#: whose acks a dying connection can lose (the broker has at most a prefetch unacknowledged out to a consumer).
_HANDED_MEMORY = 400


@dataclass
class _Consumers:
    """The consumers of one process queue and of the process's group inbox."""

    queue: str
    feed: Feed | None = None  # where deliveries go: the core's, from a fill until close_feed
    allowance: int = 0  # how many more deliveries the pending fill takes (0: no fill pending)
    # Delivered while no fill was pending, not yet handed to the core: (item for the core, delivery tag, hash of the
    # body as delivered), all unacknowledged, so they are still the broker's (they count toward the consumer's
    # prefetch, which bounds what a process takes ahead of its receivers, and come back if the process dies).
    held: deque[tuple[bytes, int, int]] = field(default_factory=deque)
    channel: Channel | None = None  # the channel the held deliveries came on (their tags belong to it)
    # Hashes of the bodies handed to the core lately (not the bodies: they may be large).  Their acks may not have
    # reached the broker when a connection died: it then delivers them again (``redelivered``), and these are
    # dropped instead of being received twice (a body carries its deadline to the microsecond, so two are alike
    # only by a hash collision).
    handed: deque[int] = field(default_factory=lambda: deque(maxlen=_HANDED_MEMORY))
    waiter: asyncio.Future[None] | None = None  # the fill waiting for a delivery
    tag: str | None = None  # the process-queue consumer
    generation: int = -1  # Link.ctl_generation the consumers were created in
    # The group-inbox consumer outlives a closed feed: a flush's FLUSHED record must reach the directory before the
    # flush deletes the queues, and the broker's cancel tells of a queue deleted meanwhile.
    inbox_tag: str | None = None
    inbox_generation: int = -1
    filling: int = 0
    acks: list[int] = field(default_factory=list)  # tags handed over, acknowledged at the next loop iteration
    wait_until: float = 0.0  # loop time the waiting fill gives up
    wait_timer: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _public(method: Callable[Concatenate[AMQPBackend, _P], Coroutine[Any, Any, _R]],
            ) -> Callable[Concatenate[AMQPBackend, _P], Coroutine[Any, Any, _R]]:
    """A call the core makes: a channel error the backend did not absorb leaves it as a ``layers.errors`` type
    (ChannelError is private to this package)."""

    @functools.wraps(method)
    async def call(self: AMQPBackend, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(self, *args, **kwargs)
        except ChannelError as exc:
            raise channel_failure(method.__name__, exc) from exc

    return call


class AMQPBackend(Backend):
    min_expiry = 1.0
    #: Each process knows only its own members (the broker routes group messages through bindings).
    lists_group_members = False
    #: Sends are not batched by the core: each publishes at once (no extra loop iteration, no task), pika
    #: pipelines them, the link writes all publishes of one loop iteration with one system call, and confirms
    #: come back in bulk.  Measured: ~20% more sequential sends/s than the core's batching, and still ~3x
    #: channels_rabbitmq with 100 concurrent producers.
    coalesce_pushes = False

    def __init__(self, link: Link, topology: Topology, capacity_for: Callable[[str], int],
                 directory: Directory) -> None:
        self.link = link
        self.top = topology
        self.capacity_for = capacity_for
        self.directory = directory
        self.declared = Declarations(link, topology)
        self._subs: dict[str, _Consumers] = {}
        self._doorbells: dict[str, asyncio.Future[bool]] = {}  # consumer tag -> its doorbell
        self._listening: dict[str, asyncio.Future[bool]] = {}  # named queue -> the doorbell of its fill
        self._unwatched: set[str] = set()  # named queues nobody here waits on any more (see stop_waiting)
        self._unsettled: set[str] = set()  # named queues whose doorbell was cancelled without a message
        self._cancelled_doorbells: list[tuple[Channel, str]] = []  # cancelled without waiting for cancel-ok
        self._bound: dict[str, int] = {}  # process queue -> Link.ctl_generation its groups were re-bound in
        self._keepalive: asyncio.Task[None] | None = None
        link.on_lost = self._on_lost
        link.on_cancelled = self._on_cancelled
        link.on_reconnected = self._on_reconnected
        self._restoring: asyncio.Task[None] | None = None
        self._recovering: dict[str, asyncio.Task[None]] = {}  # process queue -> its re-declaration after a loss

    # -- push ------------------------------------------------------------------------------------------------

    @_public
    async def push(self, pushes: Sequence[Push]) -> list[bool]:
        results: list[bool] = [False] * len(pushes)
        todo = list(range(len(pushes)))
        for _ in range(3):
            if not self.link.connected:
                await self.link.ready()
            stale = {pushes[i].queue: pushes[i].capacity for i in todo if not self.declared.fresh(pushes[i].queue)}
            if stale:
                await self.declared.channels(stale)
            now = time.time()
            futures = [self.link.publish("", self.top.queue(pushes[i].queue), pushes[i].item,
                                         _ttl(pushes[i].deadline, now), True) for i in todo]
            if self.link.unconfirmed == len(futures):
                # Nothing else in flight: write now.  Otherwise other sends of this loop iteration are probably
                # publishing too, and the write at the end of the iteration carries them all at once.
                self.link.flush()
            outcomes = [await future for future in futures]  # inline, not _confirmed(): the hot path
            missing = []
            for i, outcome in zip(todo, outcomes, strict=True):
                if outcome is None:  # the queue vanished since we declared it
                    missing.append(i)
                    self.declared.forget(self.top.queue(pushes[i].queue))
                else:
                    results[i] = outcome
            if not missing:
                return results
            todo = missing
        raise BackendUnavailable("AMQP queues keep disappearing while publishing (flushed concurrently?)")

    @staticmethod
    async def _confirmed(futures: Sequence[asyncio.Future[bool | None]]) -> list[bool | None]:
        """Wait for every confirm; the link fails them with ``BackendUnavailable`` when the broker stops
        answering for ``timeout`` seconds (one watchdog for all publishes, not a timer per call)."""
        return [await future for future in futures]

    # -- receiving: the core's reader fills its feed ------------------------------------------------------------

    @_public
    async def fill(self, feed: Feed, credit: int, timeout: float) -> None:
        if "!" in feed.queue:
            await self._fill_process(feed, credit, timeout)
        else:
            await self._fill_named(feed, credit, timeout)

    @_public
    async def close_feed(self, queue: str) -> None:
        if "!" in queue:
            await self._close_process_feed(queue)
        else:
            self._unwatched.discard(self.top.queue(queue))

    def stop_waiting(self, queue: str) -> None:
        """The core's last receiver of ``queue`` left: a named channel's doorbell wait ends so the fill takes
        nothing; a process queue's fill returns, so the core's reader stops and closes the feed in time."""
        if "!" in queue:
            sub = self._subs.get(queue)
            if sub is not None:
                sub.wake()
            return
        name = self.top.queue(queue)
        self._unwatched.add(name)
        rang = self._listening.get(name)
        if rang is not None:
            _ring(rang, False)

    # -- process queues -------------------------------------------------------------------------------------

    async def _fill_process(self, feed: Feed, credit: int, timeout: float) -> None:
        """A manual-ack consumer with prefetch ``credit`` delivers into ``feed`` from pika's callback, up to
        ``credit`` messages while this call is pending, each acknowledged as it is handed over.  What arrives while
        no fill is pending is held unacknowledged (at most the prefetch: the broker sends no more until it gets
        acks), handed over by the next fill; so a process never holds more than one batch ahead of what its
        receivers asked for, and the rest waits (and counts toward capacity) on the broker."""
        queue = feed.queue
        sub = self._subs.get(queue)
        if sub is None:
            sub = self._subs[queue] = _Consumers(queue)
        sub.feed = feed
        sub.allowance = credit
        sub.filling += 1
        try:
            if sub.held:
                self._hand_held(sub)
            if sub.allowance == credit and sub.generation != self.link.ctl_generation:
                await self._subscribe(sub, credit)
            if sub.allowance == credit:  # nothing handed over yet
                await self._wait_delivery(sub, timeout)
        finally:
            sub.filling -= 1
            if not sub.filling:
                sub.allowance = 0

    def _hand_held(self, sub: _Consumers) -> None:
        """Hand what arrived while no fill was pending to the core, up to the allowance."""
        channel, feed = sub.channel, sub.feed
        if channel is None or not channel.is_open or feed is None:  # (feed: set by the fill calling this)
            # The broker gives unacknowledged deliveries back to the queue when their channel closes: handing
            # these over too would deliver them twice.
            sub.held.clear()
            return
        count = min(sub.allowance, len(sub.held))
        taken = [sub.held.popleft() for _ in range(count)]
        if not taken:
            return
        if self._sole_holder(sub):
            channel.basic_ack(taken[-1][1], multiple=True)
        else:  # "multiple" would also acknowledge what another process queue's consumer holds on this channel
            for _, tag, _ in taken:
                channel.basic_ack(tag)
        sub.handed.extend(digest for _, _, digest in taken)
        sub.allowance -= count
        feed.deliver([item for item, _, _ in taken])

    def _ack_soon(self, sub: _Consumers, channel: Channel, tag: int) -> None:
        """Acknowledge at the start of the next loop iteration, ahead of every receiver the delivery wakes (both
        are scheduled from here, the ack first): a burst of deliveries costs one multiple-ack, and a loop closed
        before then ran no receiver of it, so the broker delivering it again to the next loop is no duplicate."""
        if not sub.acks:
            asyncio.get_running_loop().call_soon(self._flush_acks, sub, channel)
        sub.acks.append(tag)

    def _flush_acks(self, sub: _Consumers, channel: Channel) -> None:
        tags, sub.acks = sub.acks, []
        if not channel.is_open:  # the broker requeued them: redelivered, they are known by their hash (handed)
            return
        if len(tags) > 1 and tags[-1] - tags[0] == len(tags) - 1 and self._sole_holder(sub):
            channel.basic_ack(tags[-1], multiple=True)
        else:  # "multiple" would also acknowledge what another process queue's consumer holds on this channel
            for tag in tags:
                channel.basic_ack(tag)

    def _sole_holder(self, sub: _Consumers) -> bool:
        return all(other is sub or not other.held for other in self._subs.values())

    def _settle_held(self, sub: _Consumers, requeue: bool) -> None:
        """Give what ``sub`` holds back to its queue, at its place (``requeue``), or acknowledge it (a flush
        deleted its queue), so the channel forgets it."""
        channel = sub.channel
        if channel is not None and channel.is_open:
            for _, tag, _ in sub.held:
                if requeue:
                    channel.basic_reject(tag, requeue=True)
                else:
                    channel.basic_ack(tag)
        sub.held.clear()

    async def _close_process_feed(self, queue: str) -> None:
        """Cancel the consumer and wait for the broker's cancel-ok, so nothing is on its way when this returns;
        then requeue what it delivered that the core never got (at the head of the queue, in order)."""
        sub = self._subs.get(queue)
        if sub is None:
            return
        tag, sub.tag, sub.generation = sub.tag, None, -1
        try:
            if tag is not None and self.link.connected:
                await self.link.call(lambda ch, done: _cancel_consumer(ch, tag, done), self.top.queue(queue))
        finally:
            self._settle_held(sub, requeue=True)
            sub.feed = None

    async def _wait_delivery(self, sub: _Consumers, timeout: float) -> None:
        # A bare future (wait_for(Event.wait()) makes a task per fill), and one timer per process queue that is
        # re-armed only when it fires early, not a timer per fill (created and cancelled for every message).
        loop = self.link.loop
        waiter = sub.waiter = loop.create_future()
        sub.wait_until = loop.time() + timeout
        if sub.wait_timer is None:
            sub.wait_timer = loop.call_at(sub.wait_until, self._wait_expired, sub)
        try:
            await waiter
        finally:
            sub.waiter = None

    def _wait_expired(self, sub: _Consumers) -> None:
        sub.wait_timer = None
        if sub.waiter is None:
            return  # nobody waits: the next wait arms the timer again
        if self.link.loop.time() >= sub.wait_until:
            sub.wake()
        else:
            sub.wait_timer = self.link.loop.call_at(sub.wait_until, self._wait_expired, sub)

    async def _subscribe(self, sub: _Consumers, prefetch: int) -> None:
        await self.link.ready()
        if (sub.handed.maxlen or 0) < 4 * prefetch:
            sub.handed = deque(sub.handed, maxlen=4 * prefetch)
        self._cancel_consumers(sub)
        name = self.top.queue(sub.queue)

        def on_message(ch: Channel, method: Any, _props: Any, body: bytes) -> None:
            self._on_delivery(sub, ch, method, body)

        # The inbox first: once its consume-ok is here, the records already in it are on their way ahead of any
        # process-queue delivery, and while both consumers run the broker hands a record to us before it confirms
        # it to the process that added the member; so every record is applied before the group messages sent
        # after its group_add (or group_discard) returned are resolved.
        for attempt in range(3):
            try:
                await self._watch_inbox(sub)
                generation = self.link.ctl_generation
                if sub.inbox_generation != generation:  # the channel was lost meanwhile: again on the new one
                    continue
                tag = await self._consume_bounded(name, on_message, prefetch)
            except ChannelError as exc:
                # Deleted while its consumer was idle (an operator, x-expires, its cluster node; a flush wrote its
                # FLUSHED record first, which the inbox consumer applied unless it was down at that moment, as
                # after a reconnection, when the memberships are re-bound too).
                self.declared.missing(name, exc)
                self._lost(sub)
                if attempt == 2:
                    raise
                continue
            if generation == self.link.ctl_generation:
                sub.tag, sub.generation = tag, generation
                break
        self._keep_alive_started()

    async def _watch_inbox(self, sub: _Consumers) -> None:
        """Declare the process queue and its inbox, re-make its group bindings if the queue was lost, and run the
        inbox consumer (if it does not run on this channel yet)."""
        await self.link.ready()
        if self._bound.get(sub.queue) != self.link.ctl_generation:
            # Our consumers were lost (a new channel or connection), maybe with the queue: in a cluster whose node
            # holding it died, the broker cancels nothing, and a sender re-creates the queue elsewhere unbound.
            self.declared.forget(self.top.queue(sub.queue))
            self.declared.forget(self.top.group_inbox(sub.queue))
        await self.declared.channels({sub.queue: self.capacity_for(sub.queue)})
        await self.declared.inbox(sub.queue)
        await self._rebind(sub.queue)
        generation = self.link.ctl_generation  # the channel these calls ran on, up now
        if sub.inbox_generation == generation:
            return

        def on_record(_ch: Any, _method: Any, props: spec.BasicProperties, body: bytes) -> None:
            if props.type == RECORD_TYPE:  # anything else in an inbox is not ours (inboxes are bound to nothing)
                self.directory.apply(body)

        tag = await self.link.consume(self.top.group_inbox(sub.queue), on_record)
        if generation == self.link.ctl_generation:
            sub.inbox_tag, sub.inbox_generation = tag, generation
        else:
            self.link.cancel(tag)

    def _keep_alive_started(self) -> None:
        if self._keepalive is None:
            self._keepalive = background_task(self._keep_alive(), name="layers-amqp-keepalive",
                                              loop=self.link.loop)

    async def _consume_bounded(self, queue: str, on_message: Any, prefetch: int) -> str:
        """A manual-ack consumer of ``queue`` that the broker sends at most ``prefetch`` unacknowledged messages.

        ``basic.qos`` (per consumer) applies to the consumers created after it on the channel; pika sends these
        three methods one after the other before any other call made meanwhile, so the doorbells' prefetch of 1
        is back in place before they consume again."""
        tags: list[str] = []

        def start(ch: Channel, done: Any) -> None:
            ch.basic_qos(prefetch_count=prefetch)
            tags.append(ch.basic_consume(queue, on_message, auto_ack=False, callback=done))
            ch.basic_qos(prefetch_count=1)

        await self.link.call(start, queue)
        return tags[-1]

    def _on_delivery(self, sub: _Consumers, channel: Channel, method: Any, body: bytes) -> None:
        if sub.channel is not channel:
            sub.held.clear()  # delivered on a channel that is gone: back on the broker, and coming again
            sub.channel = channel
        tag = method.delivery_tag
        digest = hash(body)
        if method.redelivered and digest in sub.handed:  # handed over before, its ack lost with its connection
            channel.basic_ack(tag)
            return
        item = body
        if method.exchange == GROUP_EXCHANGE:
            resolved = self.directory.resolve(method.routing_key, body, sub.queue)
            if resolved is None:  # no live member here any more
                channel.basic_ack(tag)
                return
            item = resolved
        feed = sub.feed
        if sub.allowance <= 0 or sub.held or feed is None:  # not asked for (yet): the broker's until handed over
            sub.held.append((item, tag, digest))
            return
        self._ack_soon(sub, channel, tag)
        sub.handed.append(digest)
        sub.allowance -= 1
        sub.wake()
        feed.deliver((item,))

    def _cancel_consumers(self, sub: _Consumers, inbox: bool = False) -> None:
        if sub.tag is not None:
            self.link.cancel(sub.tag)
        sub.tag, sub.generation = None, -1
        if inbox:
            if sub.inbox_tag is not None:
                self.link.cancel(sub.inbox_tag)
            sub.inbox_tag, sub.inbox_generation = None, -1

    def _lost(self, sub: _Consumers) -> None:
        """``sub``'s process queue (or inbox) vanished while we stayed connected: declare both again and re-make
        the bindings of its live memberships, at once (a fill re-subscribes; an idle process recovers in a task),
        so group sends reach it again without waiting for a reconnection or the next group_add."""
        log.debug("AMQP queue %r vanished: declaring it again and re-binding its memberships", sub.queue)
        self._cancel_consumers(sub, inbox=True)
        self.declared.forget(self.top.queue(sub.queue))
        self.declared.forget(self.top.group_inbox(sub.queue))
        self._bound.pop(sub.queue, None)
        if sub.filling:
            sub.wake()
            return
        if not self.directory.live_members(sub.queue):
            return  # nothing to re-bind (after a flush, say): the next fill or send declares the queue again
        running = self._recovering.get(sub.queue)
        if running is None or running.done():
            self._recovering[sub.queue] = background_task(self._recover(sub), name="layers-amqp-recover",
                                                          loop=self.link.loop)

    async def _recover(self, sub: _Consumers) -> None:
        try:
            await self._watch_inbox(sub)
        except Exception as exc:  # the next fill or keep-alive retries
            log.debug("re-declaring AMQP queue %r after its loss failed: %s", sub.queue, exc)
            if isinstance(exc, ChannelError):
                self._bound.pop(sub.queue, None)
                self.declared.forget(self.top.queue(sub.queue))
                self.declared.forget(self.top.group_inbox(sub.queue))

    async def _rebind(self, queue: str) -> None:
        """Re-bind this process's members to their groups after a (re)connection (the broker may have lost the
        queue and its bindings) or after the queue vanished under a live connection (see :meth:`_lost`)."""
        if self._bound.get(queue) == self.link.ctl_generation:
            return
        members = self.directory.live_members(queue)
        log.debug("re-binding %d group memberships of %r", len(members), queue)
        for key, channel in members:
            await self._bind_member(queue, key, channel)
        self._bound[queue] = self.link.ctl_generation

    async def _bind_member(self, proc: str, key: str, channel: str) -> None:
        """Route group ``key`` into process queue ``proc`` for ``channel``: one binding per member (the binding's
        arguments tell them apart), so discarding one member never unbinds another's, and the queue gets one copy
        of each group message whatever the number of its members' bindings."""
        name, arguments = self.top.queue(proc), self.top.member_binding(channel)
        await self.link.call(lambda ch, done: ch.queue_bind(name, GROUP_EXCHANGE, key, arguments=arguments,
                                                            callback=done), name)

    async def _unbind_member(self, proc: str, key: str, channel: str) -> None:
        name, arguments = self.top.queue(proc), self.top.member_binding(channel)
        await self.link.call(lambda ch, done: ch.queue_unbind(name, GROUP_EXCHANGE, key, arguments=arguments,
                                                              callback=done), name)

    async def _keep_alive(self) -> None:
        """Keep our process queues from expiring while this process lives, even when nobody receives."""
        period = self.top.process_expires_ms / 3000
        while True:
            await asyncio.sleep(period)
            self.directory.sweep()
            for queue in list(self._subs):
                try:
                    await self.declared.channels({queue: self.capacity_for(queue)})
                    await self.declared.inbox(queue)
                except Exception as exc:  # the reader reconnects; try again next period
                    log.debug("keep-alive of %r failed: %s", queue, exc)

    # -- named channels -------------------------------------------------------------------------------------

    async def _fill_named(self, feed: Feed, credit: int, timeout: float) -> None:
        """``basic.get`` (auto-ack) takes messages one by one, each delivered at once, up to one per receiver
        waiting here, so a message is never taken by a process that does not want it; while the queue is empty, a
        doorbell takes the next message for a receiver waiting here."""
        queue = feed.queue
        name = self.top.queue(queue)
        self._unwatched.discard(name)  # the core fills only while someone waits
        give_up = time.monotonic() + timeout
        while True:
            await self.link.ready()
            await self.declared.channels({queue: self.capacity_for(queue)})
            try:
                if name in self._unsettled:
                    await self._settle_doorbell(name)
                if await self._get_named(feed, name, credit):
                    return
                remaining = give_up - time.monotonic()
                if remaining <= 0 or name in self._unwatched or not await self._wait_doorbell(feed, name, remaining):
                    return
            except ChannelError as exc:  # deleted under us (a flush elsewhere): declare it again
                self.declared.missing(name, exc)

    async def _get_named(self, feed: Feed, name: str, credit: int) -> int:
        """Take up to ``credit`` messages with ``basic.get`` while someone here waits; how many were taken."""
        taken = 0
        while taken < credit and name not in self._unwatched:
            before = len(self._cancelled_doorbells)
            body = await self.link.get(name)
            if before:  # this get was sent after those cancels: their deliveries are all in
                for channel, tag in self._cancelled_doorbells[:before]:
                    channel.forget_cancelled(tag)
                del self._cancelled_doorbells[:before]
            if body is None:
                break
            taken += 1
            feed.deliver((body,))
        return taken

    async def _wait_doorbell(self, feed: Feed, name: str, timeout: float) -> bool:
        """Wait for the next message of ``name`` while a receiver here waits for it, and deliver it into ``feed``
        (the doorbell: a prefetch-1, manual-ack consumer that cancels itself on its first message).  True to look
        again (the consumer was lost); False when the wait ended (a message, timeout, nobody waits any more)."""
        rang: asyncio.Future[bool] = self.link.loop.create_future()
        consumer: list[tuple[Channel, str]] = []

        def on_message(ch: Channel, method: Any, _props: Any, body: bytes) -> None:
            if rang.done():  # on its way when the wait ended: back to the queue, at its place, for any reader
                ch.basic_reject(method.delivery_tag, requeue=True)
                return
            # Taken, not rejected back for a basic.get: a message held here and requeued meanwhile would let any
            # reader's basic.get take the one behind it (out of order).  The cancel goes out before the ack, so
            # the broker sends this consumer nothing more.
            self._cancel_doorbell(ch, method.consumer_tag)
            ch.basic_ack(method.delivery_tag)
            rang.set_result(False)  # first: the core may call stop_waiting while it files the message
            feed.deliver((body,))

        def start(ch: Channel, done: Any) -> None:
            consumer.append((ch, ch.basic_consume(name, on_message, auto_ack=False, callback=done)))

        self._listening[name] = rang
        try:
            await self.link.call(start, name)
        except BaseException:
            self._listening.pop(name, None)
            raise
        channel, tag = consumer[-1]
        self._doorbells[tag] = rang
        timer = self.link.loop.call_later(timeout, _ring, rang, False)
        try:
            return await rang
        finally:
            timer.cancel()
            self._doorbells.pop(tag, None)
            self._listening.pop(name, None)
            if channel.is_open and not channel.cancelling(tag):  # ended without a message (timeout, nobody waits)
                self._cancel_doorbell(channel, tag)
                self._unsettled.add(name)

    async def _settle_doorbell(self, name: str) -> None:
        """A doorbell cancelled without a message may have one on its way: the broker holds that message for the
        doorbell until our callback rejects it, so a ``basic.get`` sent now would take the one behind it (out of
        order).  The reply to a call sent after the cancel comes after any such delivery, and the reject the
        callback writes on its arrival goes out before the next ``basic.get``."""
        await self.link.call(lambda ch, done: ch.basic_qos(prefetch_count=1, callback=done), name)
        self._unsettled.discard(name)

    def _cancel_doorbell(self, channel: Channel, tag: str) -> None:
        if not channel.cancelling(tag):
            channel.cancel_at_once(tag)
            self._cancelled_doorbells.append((channel, tag))

    # -- consumer loss ----------------------------------------------------------------------------------------

    def _on_lost(self) -> None:
        for sub in self._subs.values():
            sub.tag, sub.generation = None, -1
            sub.inbox_tag, sub.inbox_generation = None, -1
            sub.held.clear()  # unacknowledged: the broker delivers them again to the next consumer
            sub.channel = None
            sub.wake()  # the fill re-subscribes
        for rang in self._doorbells.values():
            _ring(rang, True)  # look again (the fill re-subscribes)

    def _on_reconnected(self) -> None:
        if self._subs and (self._restoring is None or self._restoring.done()):
            self._restoring = background_task(self._restore(), name="layers-amqp-restore", loop=self.link.loop)

    async def _restore(self) -> None:
        """After a reconnection (maybe a broker restart that lost every non-durable queue), re-declare our
        process queues and re-bind our groups at once, not only when someone next receives."""
        try:
            for queue in list(self._subs):
                await self.declared.channels({queue: self.capacity_for(queue)})
                await self.declared.inbox(queue)
                await self._rebind(queue)
        except Exception as exc:  # the next fill retries
            log.debug("restoring AMQP queues after reconnecting failed: %s", exc)

    def _on_cancelled(self, tag: str) -> None:
        """The broker cancelled a consumer: its queue was deleted (a flush, maybe by another process: then the
        flush's FLUSHED record reached the directory first, and its memberships are not re-bound)."""
        rang = self._doorbells.get(tag)
        if rang is not None:
            _ring(rang, True)
        for sub in self._subs.values():
            if tag in (sub.tag, sub.inbox_tag):
                self._lost(sub)

    # -- groups ----------------------------------------------------------------------------------------------

    @_public
    async def group_add(self, group: str, channel: str, deadline: float) -> None:
        await self.link.ready()
        proc = process_part(channel)
        if proc is None:
            await self._add_named_member(group, channel, deadline)
            return
        key = self.top.group_key(group)
        for _ in range(3):
            await self.declared.channels({proc: self.capacity_for(proc)})
            await self.declared.inbox(proc)
            try:
                await self._bind_member(proc, key, channel)
            except ChannelError as exc:
                self.declared.missing(self.top.queue(proc), exc)
                continue
            if await self._record(proc, pack_record(ADD, key, channel, deadline), deadline):
                return
        raise BackendUnavailable(f"AMQP queue for {channel!r} keeps disappearing")

    async def _record(self, proc: str, record: bytes, deadline: float) -> bool:
        """Publish a membership record to the process's group inbox; False if the inbox does not exist."""
        props = spec.BasicProperties(type=RECORD_TYPE, expiration=record_ttl_ms(deadline))
        inbox = self.top.group_inbox(proc)
        outcome = (await self._confirmed([self.link.publish("", inbox, record, props, True)]))[0]
        if outcome is None:
            self.declared.forget(inbox)
            return False
        if outcome is False:  # the inbox has no length limit: only a broker in trouble nacks
            raise BackendUnavailable(f"the broker refused a group membership record for {proc!r}")
        return True

    async def _add_named_member(self, group: str, channel: str, deadline: float) -> None:
        await self.declared.channels({channel: self.capacity_for(channel)})
        member = self.top.member_queue(group, channel)
        arguments = self.top.member_args(self.top.queue(channel))
        # Durable, so the membership survives a broker restart; re-declaring renews its x-expires.
        try:
            await self.link.declare(member, arguments, durable=True)
        except ChannelError as exc:  # declared with another group_expiry: replace it
            if exc.code != 406:
                raise channel_failure(f"declaring queue {member!r}", exc) from exc
            await self.link.delete(member)
            await self.link.declare(member, arguments, durable=True)
        await self.link.bind(member, GROUP_EXCHANGE, self.top.group_key(group))
        await self.declared.register(member, again=True)

    @_public
    async def group_discard(self, group: str, channel: str) -> None:
        await self.link.ready()
        proc = process_part(channel)
        if proc is None:
            await self.link.delete(self.top.member_queue(group, channel))
            return
        key = self.top.group_key(group)
        # Declared first: unbinding from a queue that does not exist would close the channel (and its consumers).
        await self.declared.channels({proc: self.capacity_for(proc)})
        try:
            await self._unbind_member(proc, key, channel)
        except ChannelError as exc:  # the queue vanished meanwhile, and its bindings with it
            self.declared.missing(self.top.queue(proc), exc)
        # The owner may have other members in the group: it must stop resolving messages for this one.  A missing
        # inbox has no records to correct.
        await self._record(proc, pack_record(DISCARD, key, channel, 0.0), time.time() + self.top.group_expiry)

    async def group_members(self, group: str) -> list[str]:
        """Only this process's own members are known here (the others live with their owners)."""
        return self.directory.members(self.top.group_key(group), time.time())

    @_public
    async def group_push(self, group: str, message: GroupMessage) -> int:
        """One publish to the group's routing key reaches each member queue once, whatever the group size.

        A process queue at its length limit refuses its copy (the others are stored) and the broker nacks the
        publish: it says that some member queue refused, not which or how many, so a nack counts one drop."""
        await self.link.ready()
        # Members resolve the named item: see Directory.resolve and Topology.member_args.
        future = self.link.publish(GROUP_EXCHANGE, self.top.group_key(group), message.named_item,
                                   _ttl(message.deadline, time.time()), False)
        self.link.flush()
        stored = (await self._confirmed([future]))[0]
        return 0 if stored else 1  # a nack: at least one member queue was full

    @_public
    async def ping(self) -> None:
        """A passive declare of the broker's built-in ``amq.direct`` exchange: one synchronous round trip on the
        control channel that changes nothing."""
        await self.link.call(lambda ch, done: ch.exchange_declare("amq.direct", passive=True, callback=done),
                             "amq.direct")

    # -- flush / close -----------------------------------------------------------------------------------------

    @_public
    async def flush(self) -> None:
        await self.link.ready()
        registry = self.top.registry
        await self.declared.declare_registry()
        names: set[str] = set()
        while True:
            body = await self.link.get(registry)
            if body is None:
                break
            names.add(body.decode())
        self.directory.clear()
        await self._announce_flush(names)
        for name in sorted(names):
            await self.link.delete(name)
        self.directory.clear()
        self.declared.clear()
        for sub in self._subs.values():
            self._settle_held(sub, requeue=False)

    @_public
    async def drop(self) -> None:
        """After :meth:`flush`: delete the registry queue too (flush keeps it, for the names other processes of
        the prefix record in it meanwhile)."""
        await self.link.ready()
        await self.link.delete(self.top.registry)
        self.declared.forget(self.top.registry)

    async def _announce_flush(self, names: set[str]) -> None:
        """Tell each owner that its memberships go (a FLUSHED record in its inbox) before deleting anything, so
        an owner does not take the loss of its queue for an accident and re-bind them."""
        futures = []
        for name in names:
            proc = self.top.inbox_process(name)
            if proc is not None:
                props = spec.BasicProperties(type=RECORD_TYPE, expiration=record_ttl_ms(time.time() + 60))
                futures.append(self.link.publish("", name, pack_record(FLUSHED, "", proc, 0.0), props, True))
        if futures:
            self.link.flush()
            await self._confirmed(futures)

    async def close(self) -> None:
        for task in self._recovering.values():
            task.cancel()
        if self._restoring is not None:
            self._restoring.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        for sub in self._subs.values():
            if sub.wait_timer is not None:
                sub.wait_timer.cancel()
                sub.wait_timer = None
        await self.link.close()

    def abandon(self) -> None:
        self._keepalive = None
        self.link.abandon()


def _ring(future: asyncio.Future[bool], look_again: bool) -> None:
    if not future.done():
        future.set_result(look_again)


def _cancel_consumer(channel: Channel, tag: str, done: Callable[[Any], None]) -> None:
    """``basic.cancel`` of ``tag`` with ``done`` called on its cancel-ok, at once if the channel no longer has it."""
    if tag in channel.consumer_tags and not channel.cancelling(tag):
        channel.basic_cancel(tag, callback=done)
    else:
        done(None)


_last_ttl: tuple[int, spec.BasicProperties] = (0, spec.BasicProperties())  # consecutive sends share their TTL


def _ttl(deadline: float, now: float) -> spec.BasicProperties:
    """Per-message TTL: the broker drops the message (and stops counting it) once it expired."""
    global _last_ttl
    ms = max(1, int((deadline - now) * 1000) + 1)
    last = _last_ttl  # one tuple, swapped whole: safe when loops in several threads share it
    if last[0] != ms:
        last = _last_ttl = (ms, spec.BasicProperties(expiration=str(ms)))
    return last[1]
