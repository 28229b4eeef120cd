"""A shard that is one server (or the master a Sentinel names): two connections per event loop in all.

Commands share one auto-pipelined :class:`~layers_redis.wire.CommandLink`.  Receiving uses no blocking command:
a reader with nothing to read *arms* its queue (the ARM script registers ``limit`` tokens naming its SUBSCRIBE
channel), and the next pushes to that empty queue are PUBLISHed straight to it.  A busy consumer therefore
costs the server no pop round trip at all, and a queue that fills up while nobody is armed is popped in batches.

Tokens carry a lease (their deadline), so tokens of a reader that vanished expire; a push also skips a token whose
PUBLISH reached nobody.  Items handed over but not yet returned by :meth:`pop` stay in this shard's inbox for
the next :meth:`pop`, and :meth:`close` puts them back at the head of their queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from layers.backend import background_task
from layers.errors import LayerError

from .connection import UNAVAILABLE_REPLIES, ScriptCall, Shard, connection_options, refusal
from .hosts import HostSpec
from .scripts import ARM, POP
from .wire import CommandLink, LinkError, ReplyError, SubscriberLink

__all__ = ["DirectShard"]

log = logging.getLogger("layers.redis")

# A reader's tokens outlive its wait by this much (covers clock differences between processes).
LEASE_SLACK = 2.0
# An armed reader re-arms after this long without arrivals, so a token count gone wrong (a lost PUBLISH) can
# only delay an item stored meanwhile by this much.  Costs an idle reader one round trip per period.
ARMED_WAIT = 1.0


class _Inbox:
    """One queue's reader state: its subscription channel, armed tokens and items handed over."""

    def __init__(self, queue_key: str, readers_key: str, channel: bytes) -> None:
        self.queue_key = queue_key
        self.readers_key = readers_key
        self.channel = channel
        self.arrived: deque[bytes] = deque()
        self.credits = 0  # tokens registered on the server and not yet used
        self.generation = 0  # which ARM the current tokens come from (arrivals name theirs)
        self.used = 0  # arrivals for the current generation
        self.token = b""
        self.lease_until = 0.0  # monotonic
        self.waiter: asyncio.Future[None] | None = None
        self.popping = 0  # pop() calls in progress
        self.last_pop = 0.0  # monotonic end of the latest pop()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.releasing: asyncio.Future[None] | None = None

    def take(self, limit: int) -> list[bytes]:
        return [self.arrived.popleft() for _ in range(min(limit, len(self.arrived)))]

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def disarm(self) -> None:
        self.credits = 0
        self.wake()


class DirectShard(Shard):
    pipelines_concurrent_calls = True  # the CommandLink writes every command of one loop iteration together

    def __init__(self, spec: HostSpec, timeout: float) -> None:
        super().__init__(spec, timeout)
        self.pool = _make_pool(spec, timeout)
        self.commands = CommandLink(self.pool, timeout, spec.label)
        self.subscriber = SubscriberLink(self.pool, timeout, spec.label, self._deliver, self._lost)
        self._inboxes: dict[str, _Inbox] = {}
        self._by_channel: dict[bytes, _Inbox] = {}
        self._name = uuid.uuid4().hex[:16]

    # -- commands ------------------------------------------------------------------------------------------

    async def _call(self, what: str, *args: Any) -> Any:
        try:
            reply = await self.commands.call(*args)
        except LinkError as exc:
            raise self.unavailable(what, exc) from exc
        if isinstance(reply, ReplyError):
            self._raise_reply(what, reply)
        return reply

    def _raise_reply(self, what: str, reply: ReplyError) -> None:
        refused = refusal(self.spec.label, what, reply)
        if refused is not None:
            raise refused
        if str(reply).split(" ", 1)[0] in UNAVAILABLE_REPLIES:
            # e.g. READONLY after a failover: reconnect, which asks the Sentinel for the new master.
            self.commands.fail(LinkError(str(reply)))
            raise self.unavailable(what, reply)
        raise LayerError(f"Redis {self.spec.label}: {what} failed: {reply}")

    async def execute(self, *args: Any) -> Any:
        return await self._call(str(args[0]), *args)

    async def run_scripts(self, what: str, calls: Sequence[ScriptCall]) -> list[Any]:
        try:
            commands = [("EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args in calls]
            results = [await self.commands.call(*commands[0])] if len(commands) == 1 else \
                await self.commands.call_many(commands)
        except LinkError as exc:
            raise self.unavailable(what, exc) from exc
        missing = [i for i, r in enumerate(results) if isinstance(r, ReplyError) and str(r).startswith("NOSCRIPT")]
        if missing:  # the server lost its scripts (restart, SCRIPT FLUSH): every EVALSHA failed without running
            for script in {calls[i][0] for i in missing}:
                await self._call("SCRIPT LOAD", "SCRIPT", "LOAD", script.source)
            retried = await self.run_scripts(what, [calls[i] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, ReplyError):
                self._raise_reply(what, result)
        return results

    # -- receiving -----------------------------------------------------------------------------------------

    async def pop(self, queue_key: str, readers_key: str, limit: int, timeout: float) -> list[bytes]:
        if timeout <= 0:
            return list(await self.run_script(POP, (queue_key, readers_key), _now_ms(), limit))
        inbox = self._inbox(queue_key, readers_key)
        while inbox.releasing is not None:
            await asyncio.shield(inbox.releasing)
            inbox = self._inbox(queue_key, readers_key)  # the release may have dropped it
        inbox.popping += 1
        try:
            if not inbox.arrived and (inbox.credits <= 0 or time.monotonic() >= inbox.lease_until - LEASE_SLACK):
                popped = await self._arm(inbox, limit, timeout)
                if popped:
                    return popped
            if not inbox.arrived:
                await self._wait(inbox, min(timeout, inbox.lease_until - LEASE_SLACK - time.monotonic()))
            return inbox.take(limit)
        finally:
            inbox.popping -= 1
            inbox.last_pop = time.monotonic()
            if inbox.idle_timer is None:
                inbox.idle_timer = asyncio.get_running_loop().call_later(ARMED_WAIT, self._check_idle, inbox)

    def _check_idle(self, inbox: _Inbox) -> None:
        """Nobody has popped this queue for a while: withdraw its tokens and give back what was handed over,
        so items never wait in a process that stopped reading them."""
        inbox.idle_timer = None
        if inbox.popping or inbox.releasing is not None or self._inboxes.get(inbox.queue_key) is not inbox:
            return
        idle_for = time.monotonic() - inbox.last_pop
        if idle_for < ARMED_WAIT:
            inbox.idle_timer = asyncio.get_running_loop().call_later(ARMED_WAIT - idle_for, self._check_idle, inbox)
        elif inbox.token or inbox.arrived:
            inbox.releasing = background_task(self._release(inbox))
        else:
            self._forget(inbox)

    async def _release(self, inbox: _Inbox) -> None:
        try:
            await self._give_back(inbox)
        except Exception as exc:  # the server is away: the tokens lapse by themselves, items stay for a pop
            log.debug("could not release %s: %s", inbox.queue_key, exc)
        finally:
            inbox.releasing = None
        if not (inbox.popping or inbox.token or inbox.arrived):
            self._forget(inbox)

    def _forget(self, inbox: _Inbox) -> None:
        """Drop an idle inbox, so queues read once leave nothing behind in this process."""
        if self._inboxes.get(inbox.queue_key) is inbox:
            del self._inboxes[inbox.queue_key]
            del self._by_channel[inbox.channel]

    async def _give_back(self, inbox: _Inbox) -> None:
        """Withdraw the tokens, wait until every hand-over made before that has arrived, requeue the arrivals."""
        if inbox.token:
            await self._call("release", "LREM", inbox.readers_key, 0, inbox.token)
            inbox.token, inbox.credits = b"", 0
            await self.subscriber.unsubscribe(inbox.channel)  # a barrier: earlier PUBLISHes have now arrived
        if inbox.arrived:
            items = list(inbox.arrived)
            await self._call("release", "LPUSH", inbox.queue_key, *reversed(items))
            for _ in items:
                inbox.arrived.popleft()

    def _inbox(self, queue_key: str, readers_key: str) -> _Inbox:
        inbox = self._inboxes.get(queue_key)
        if inbox is None:
            channel = f"{readers_key}:{self._name}".encode()
            inbox = self._inboxes[queue_key] = self._by_channel[channel] = _Inbox(queue_key, readers_key, channel)
        return inbox

    async def _arm(self, inbox: _Inbox, limit: int, timeout: float) -> list[bytes]:
        """Pop what the queue holds, or register ``limit`` tokens and wait for pushes to be handed over."""
        try:
            await self.subscriber.subscribe(inbox.channel)
        except (LinkError, OSError, asyncio.TimeoutError) as exc:
            raise self.unavailable("subscribe", exc) from exc
        now = _now_ms()
        lease = min(timeout, ARMED_WAIT) + LEASE_SLACK
        unaccounted = inbox.credits > 0  # tokens of the last ARM neither seen arriving nor known to be unused
        inbox.generation = (inbox.generation + 1) % 1_000_000
        inbox.used = 0
        token = b"%015d%06d" % (now + int(lease * 1000), inbox.generation) + inbox.channel
        popped = await self.run_script(ARM, (inbox.queue_key, inbox.readers_key), now, limit, token, inbox.token,
                                       int(lease * 1000) + 1000)
        inbox.token = token
        if popped:
            inbox.credits = 0  # the script withdrew our previous tokens and registered none
            if unaccounted:
                return await self._after_handovers(inbox, list(popped), limit)
            return list(popped)
        # Pushes may have used some tokens already (their PUBLISH can arrive before this reply).
        inbox.credits = limit - inbox.used
        inbox.lease_until = time.monotonic() + lease
        return []

    async def _after_handovers(self, inbox: _Inbox, popped: list[bytes], limit: int) -> list[bytes]:
        """What ARM popped was stored after any hand-over its withdrawn tokens made, and such a hand-over may
        still be on its way over the subscriber connection: a PING there is answered after it, so it goes first."""
        with contextlib.suppress(LinkError, OSError, asyncio.TimeoutError):  # link gone: so is the hand-over
            await self.subscriber.barrier(inbox.channel)
        inbox.arrived.extend(popped)
        return inbox.take(limit)

    async def _wait(self, inbox: _Inbox, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        inbox.waiter = loop.create_future()
        timer = loop.call_later(max(timeout, 0.0), inbox.wake)
        try:
            await inbox.waiter
        finally:
            timer.cancel()
            inbox.waiter = None

    def _deliver(self, channel: bytes, data: bytes) -> None:
        inbox = self._by_channel.get(channel)
        if inbox is None:  # cannot happen: we only subscribe to our inboxes' channels
            return
        inbox.arrived.append(data[6:])
        if data[:6] == b"%06d" % inbox.generation:  # a token of an earlier ARM does not use a current one
            inbox.used += 1
            inbox.credits -= 1
        inbox.wake()

    def _lost(self) -> None:
        """The subscriber connection died: whatever was armed is void; readers re-arm (and resubscribe)."""
        for inbox in self._inboxes.values():
            inbox.disarm()

    # -- flush and lifecycle -------------------------------------------------------------------------------

    async def scan_delete(self, pattern: str) -> int:
        deleted, cursor = 0, b"0"
        while True:
            cursor, keys = await self._call("flush", "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if keys:
                deleted += await self._call("flush", "UNLINK", *keys)
            if cursor in (b"0", 0):
                return deleted

    async def scan_keys(self, pattern: str) -> list[bytes]:
        found, cursor = [], b"0"
        while True:
            cursor, keys = await self._call("scan", "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found.extend(keys)
            if cursor in (b"0", 0):
                return found

    async def close(self) -> None:
        """Withdraw our tokens and put what was handed over but not returned back at the head of its queue."""
        inboxes = list(self._inboxes.values())
        for inbox in inboxes:
            if inbox.idle_timer is not None:
                inbox.idle_timer.cancel()
        if self.commands.connected:
            with contextlib.suppress(Exception):
                await asyncio.gather(*(inbox.releasing or self._give_back(inbox) for inbox in inboxes))
        for inbox in inboxes:
            inbox.arrived.clear()
            inbox.disarm()
        self._inboxes.clear()
        self._by_channel.clear()
        await self.commands.close()
        await self.subscriber.close()
        with contextlib.suppress(Exception):
            await self.pool.disconnect()

    def abandon(self) -> None:
        for inbox in self._inboxes.values():
            if inbox.idle_timer is not None:
                inbox.idle_timer.cancel()
        self.commands.abandon()
        self.subscriber.abandon()
        self._inboxes.clear()
        self._by_channel.clear()


def _make_pool(spec: HostSpec, timeout: float) -> aioredis.ConnectionPool:
    """A redis-py pool used only to open connections (it resolves URLs, TLS, AUTH, the Sentinel master)."""
    options = connection_options(spec, timeout)
    if spec.kind == "sentinel":
        sentinel_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **spec.sentinel_kwargs}
        sentinel = Sentinel(spec.nodes, sentinel_kwargs=sentinel_kwargs, **options)  # type: ignore[no-untyped-call]
        pool: aioredis.ConnectionPool = sentinel.master_for(str(spec.master_name)).connection_pool
        return pool
    if spec.url is not None:
        return aioredis.ConnectionPool.from_url(spec.url, **options)
    return aioredis.ConnectionPool(**options)


def _now_ms() -> int:
    return int(time.time() * 1000)
