"""A shard that is one server (or the master a Sentinel names): two connections per event loop in all.

Commands share one auto-pipelined :class:`~layers_redis.wire.CommandLink`.  Receiving uses no blocking command:
a reader with nothing to read *arms* its queue (the ARM script registers one token per item of its credit, each
naming its SUBSCRIBE channel), and the next pushes to that empty queue are PUBLISHed straight to it.  A busy
consumer therefore costs the server no pop round trip at all, and a queue that fills up while nobody is armed is
popped in batches.  Whatever arrives goes straight into the core's feed, from the subscriber's data callback.

Tokens carry a lease (their deadline), so tokens of a reader that vanished expire; a push also skips a token whose
PUBLISH reached nobody, so unsubscribing is what withdraws a reader for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from layers.backend import Feed
from layers.errors import ServerError

from .connection import UNAVAILABLE_REPLIES, ScriptCall, Shard, connection_options, refusal
from .hosts import HostSpec
from .scripts import ARM, HEADER, unframe
from .wire import CommandLink, LinkError, ReplyError, SubscriberLink

__all__ = ["DirectShard"]

# A reader's tokens outlive its wait by this much (covers clock differences between processes).
LEASE_SLACK = 2.0
# An armed reader re-arms after this long without using up its tokens, so a token count gone wrong (a lost
# PUBLISH) can only delay an item stored meanwhile by this much.  Costs an idle reader one round trip per period.
ARMED_WAIT = 1.0
# A hand-over is the ARM generation (6 digits) that made its token, then the element (deadline, then item).
TAG = 6


class _Subscription:
    """One queue's armed tokens on this server: the SUBSCRIBE channel they name, and the feed that gets arrivals."""

    def __init__(self, queue_key: str, readers_key: str, channel: bytes, feed: Feed) -> None:
        self.queue_key = queue_key
        self.readers_key = readers_key
        self.channel = channel
        self.feed = feed
        self.credits = 0  # tokens registered on the server and not yet used
        self.generation = 0  # which ARM the current tokens come from (arrivals name theirs)
        self.tag = b"%06d" % 0
        self.used = 0  # arrivals for the current generation
        self.token = b""
        self.lease_until = 0.0  # monotonic
        self.waiter: asyncio.Future[None] | None = None

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
        self.subscriber = SubscriberLink(self.pool, timeout, spec.label, self._arrived, self._lost)
        self._subscriptions: dict[str, _Subscription] = {}
        self._by_channel: dict[bytes, _Subscription] = {}
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
        raise ServerError(f"Redis {self.spec.label}: {what} failed: {reply}") from reply

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

    async def fill(self, queue_key: str, readers_key: str, feed: Feed, credit: int, timeout: float) -> None:
        """Arm ``credit`` tokens unless tokens of a live lease remain, then wait until they are used up or the
        lease (or ``timeout``) runs out; hand-overs reach ``feed`` from the subscriber callback meanwhile."""
        subscription = self._subscription(queue_key, readers_key, feed)
        rearm = subscription.credits <= 0 or time.monotonic() >= subscription.lease_until - LEASE_SLACK
        if rearm and await self._arm(subscription, credit, timeout):
            return
        if subscription.credits > 0:
            await self._wait(subscription, min(timeout, subscription.lease_until - LEASE_SLACK - time.monotonic()))

    def _subscription(self, queue_key: str, readers_key: str, feed: Feed) -> _Subscription:
        subscription = self._subscriptions.get(queue_key)
        if subscription is None:
            channel = f"{readers_key}:{self._name}".encode()
            subscription = _Subscription(queue_key, readers_key, channel, feed)
            self._subscriptions[queue_key] = self._by_channel[channel] = subscription
        subscription.feed = feed  # the core opens a new feed after closing one
        return subscription

    async def _arm(self, subscription: _Subscription, credit: int, timeout: float) -> bool:
        """Pop what the queue holds into the feed (True), or register ``credit`` tokens for hand-overs (False)."""
        try:
            await self.subscriber.subscribe(subscription.channel)
        except (LinkError, OSError, asyncio.TimeoutError) as exc:
            raise self.unavailable("subscribe", exc) from exc
        now = _now_ms()
        lease = min(timeout, ARMED_WAIT) + LEASE_SLACK
        unaccounted = subscription.credits > 0  # tokens of the last ARM neither seen arriving nor known unused
        subscription.generation = (subscription.generation + 1) % 1_000_000
        subscription.tag = b"%06d" % subscription.generation
        subscription.used = 0
        token = b"%015d" % (now + int(lease * 1000)) + subscription.tag + subscription.channel
        popped = await self._run_arm(subscription, (now, credit, token, subscription.token, int(lease * 1000) + 1000))
        subscription.token = token
        if popped:
            subscription.credits = 0  # the script withdrew our previous tokens and registered none
            try:
                if unaccounted:
                    await self._await_handovers(subscription)
            finally:  # cancelled (the layer closing): the core still gets them, to give back
                subscription.feed.deliver([unframe(element) for element in popped])
            return True
        # Pushes may have used some tokens already (their PUBLISH can arrive before this reply).
        subscription.credits = credit - subscription.used
        subscription.lease_until = time.monotonic() + lease
        return False

    async def _run_arm(self, subscription: _Subscription, args: tuple[Any, ...]) -> list[bytes]:
        """ARM, whose reply survives the fill being cancelled (the layer closing): what it popped then still
        reaches the feed, and its tokens are withdrawn by close_feed's LREM, which the link answers after it."""
        keys = (subscription.queue_key, subscription.readers_key)
        reply = self.commands.call_keeping(functools.partial(self._armed_late, subscription), "EVALSHA", ARM.sha,
                                           2, *keys, *args)
        try:
            result = await reply
        except asyncio.CancelledError:
            subscription.token, subscription.credits = args[2], 0
            raise
        except LinkError as exc:
            raise self.unavailable("arm", exc) from exc
        if isinstance(result, ReplyError):
            if not str(result).startswith("NOSCRIPT"):
                self._raise_reply("arm", result)
            result = await self.run_script(ARM, keys, *args)  # loads the script the server lost
        return list(result)

    @staticmethod
    def _armed_late(subscription: _Subscription, reply: Any) -> None:
        if isinstance(reply, list) and reply:
            subscription.feed.deliver([unframe(element) for element in reply])

    async def _await_handovers(self, subscription: _Subscription) -> None:
        """What ARM popped was stored after any hand-over its withdrawn tokens made, and such a hand-over may
        still be on its way over the subscriber connection: a PING there is answered after it, so it goes first."""
        with contextlib.suppress(LinkError, OSError, asyncio.TimeoutError):  # link gone: so is the hand-over
            await self.subscriber.barrier(subscription.channel)

    async def _wait(self, subscription: _Subscription, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        subscription.waiter = loop.create_future()
        timer = loop.call_later(max(timeout, 0.0), subscription.wake)
        try:
            await subscription.waiter
        finally:
            timer.cancel()
            subscription.waiter = None

    def _arrived(self, channel: bytes, data: bytes) -> None:
        subscription = self._by_channel.get(channel)
        if subscription is None:  # cannot happen: we only subscribe to our subscriptions' channels
            return
        subscription.feed.deliver((data[TAG + HEADER:],))
        if data[:TAG] == subscription.tag:  # a token of an earlier ARM does not use a current one
            subscription.used += 1
            subscription.credits -= 1
            if subscription.credits <= 0:
                subscription.wake()

    def _lost(self) -> None:
        """The subscriber connection died: whatever was armed is void; readers re-arm (and resubscribe)."""
        for subscription in self._subscriptions.values():
            subscription.disarm()

    async def close_feed(self, queue_key: str) -> None:
        """Withdraw the tokens, then unsubscribe: a barrier, every hand-over made before it has then been
        delivered.  A push that takes a token LREM missed reaches no subscriber and stores its item instead."""
        subscription = self._subscriptions.get(queue_key)
        if subscription is None:
            return
        try:
            if subscription.token:
                await self._call("release", "LREM", subscription.readers_key, 0, subscription.token)
        finally:
            subscription.token = b""
            subscription.disarm()
            try:
                await self.subscriber.unsubscribe(subscription.channel)
            except (LinkError, OSError, asyncio.TimeoutError) as exc:
                raise self.unavailable("unsubscribe", exc) from exc
        self._forget(subscription)  # only once unsubscribed: a late hand-over still finds its feed

    def _forget(self, subscription: _Subscription) -> None:
        if self._subscriptions.get(subscription.queue_key) is subscription:
            del self._subscriptions[subscription.queue_key]
            del self._by_channel[subscription.channel]

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
        """Withdraw tokens still registered (the core closed its feeds first; a bare backend may not have)."""
        subscriptions = list(self._subscriptions.values())
        if self.commands.connected:
            with contextlib.suppress(Exception):
                await asyncio.gather(*(self._call("release", "LREM", s.readers_key, 0, s.token)
                                       for s in subscriptions if s.token))
        for subscription in subscriptions:
            subscription.disarm()
        self._subscriptions.clear()
        self._by_channel.clear()
        await self.commands.close()
        await self.subscriber.close()
        with contextlib.suppress(Exception):
            await self.pool.disconnect()

    def abandon(self) -> None:
        self.commands.abandon()
        self.subscriber.abandon()
        self._subscriptions.clear()
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
