"""The channel-layer interface and the core that implements it over any :class:`~layers.backend.Backend`.

Everything a user can observe as semantics is decided here once: name and message rules, serialization, size
limits, capacity lookup, expiry deadlines, send coalescing, group fan-out bundling, and the whole receive side:
one reader per queue that asks the backend for items (``fill``, within a credit the core sets), per-channel
buffers that file what a process queue delivers for its ``!`` channels, waiting receivers and their cancellation,
and what happens to items nobody claimed.  Backends only move bytes.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import time
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .backend import Backend, Feed, GroupMessage, Push, Unclaimed, background_task, settle_background_tasks
from .capacity import CapacityRules, Pattern
from .coalescing import Coalescer
from .envelope import pack_item, unpack_item
from .errors import (
    BackendRefused,
    BackendUnavailable,
    ChannelFull,
    ChannelNotOwned,
    ConfigError,
    InvalidChannelName,
    LayerClosed,
    LayerError,
    MessageTooLarge,
    ServerError,
    Unsupported,
)
from .names import INVALID_NAME_ERROR, MAX_NAME_LENGTH, check_channel, check_group, process_part
from .options import LayerOptions, explain_unknown, parse_url
from .serialization import Message, Serializer, decode_message, encode_message, get_serializer

__all__ = ["BackendChannelLayer", "BaseChannelLayer"]

log = logging.getLogger("layers")

Entry = tuple[float, bytes]  # (deadline, serialized payload) waiting in a local buffer

if TYPE_CHECKING:

    class _ChannelsLayer:
        """Stands in for channels.layers.BaseChannelLayer."""

else:
    try:  # Channels is optional; when present our layers are also its layers (isinstance checks in Channels code).
        from channels.layers import BaseChannelLayer as _ChannelsLayer
    except ImportError:  # pragma: no cover - exercised without Channels installed

        class _ChannelsLayer:
            """Stands in for channels.layers.BaseChannelLayer."""


_Layer = TypeVar("_Layer", bound="BaseChannelLayer")


class BaseChannelLayer(_ChannelsLayer, abc.ABC):
    """The async API Django Channels calls, and the settings every layer shares.

    Subclass :class:`BackendChannelLayer` to write a backend; subclass this only to implement the whole API
    yourself (the conformance suite in ``spec`` then tells you what you got right).  With Channels installed it
    is a ``channels.layers.BaseChannelLayer``, whose helpers it provides with this project's rules.
    """

    MAX_NAME_LENGTH: ClassVar[int] = MAX_NAME_LENGTH
    #: Channels' wording for a bad name (``.format("Channel")`` or ``"Group"``); our name errors start with it.
    invalid_name_error: ClassVar[str] = INVALID_NAME_ERROR

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    ChannelFull: ClassVar[type[ChannelFull]] = ChannelFull
    MessageTooLarge: ClassVar[type[MessageTooLarge]] = MessageTooLarge

    #: What the conformance suite may assume about this layer (see ``spec.Knobs``).
    spec_knobs: ClassVar[dict[str, Any]] = {}
    #: The options this layer takes besides the common ones (its own, its driver's URL options, hints for names
    #: from other layers): :meth:`from_url` parses, types and checks a URL's query against them.
    url_options: ClassVar[LayerOptions] = LayerOptions()

    def __init__(
        self,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[Pattern, int] | None = None,
        max_message_size: int = 1024 * 1024,
        serializer_format: str = "msgpack",
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        prefix: str = "asgi",
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ConfigError(explain_unknown(type(self).__name__, unknown, type(self).url_options))
        self.expiry = _positive("expiry", expiry, _MAX_SECONDS)
        if group_expiry == 0:  # channels_postgres's "never lapses"
            raise ConfigError(
                "group_expiry must be a positive number of seconds, not 0: memberships always lapse here (a group "
                f"member that died must not stay forever); for 'practically never' use e.g. {365 * 86400} (a year)"
            )
        self.group_expiry = _positive("group_expiry", group_expiry, _MAX_SECONDS)
        self.capacity = capacity
        if channel_capacity is not None and not isinstance(channel_capacity, Mapping):
            raise ConfigError(f"channel_capacity must be a dict of pattern -> capacity, not {channel_capacity!r}")
        self.channel_capacity = dict(channel_capacity or {})
        self.capacity_rules = CapacityRules(capacity, self.channel_capacity)
        self.max_message_size = int(_positive("max_message_size", max_message_size, 2**31))
        self.serializer: Serializer = get_serializer(serializer_format, symmetric_encryption_keys)
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{}!"):
            raise ConfigError(f"prefix must be a non-empty string without '{{', '}}' or '!', not {prefix!r}")
        self.prefix = prefix

    @classmethod
    def from_url(cls: type[_Layer], url: str, **overrides: Any) -> _Layer:
        """Build the layer from a URL whose query string carries options (``?capacity=500&expiry=30``): the
        declared ones (:attr:`url_options`) typed, a typo refused with a suggestion, the driver's left in the URL."""
        rest, options = parse_url(url, cls.url_options, cls.__name__)
        return cls(**{**cls.url_target(rest), **options, **overrides})

    @classmethod
    def url_target(cls, url: str) -> dict[str, Any]:
        """The constructor arguments for what ``url`` addresses once the declared options are out of its query
        (a backend layer: its server, e.g. ``{"dsn": url}``); none by default."""
        return {}

    @abc.abstractmethod
    async def send(self, channel: str, message: Message) -> None:
        """Put ``message`` on ``channel``; raise ``ChannelFull`` if the channel is at capacity."""

    @abc.abstractmethod
    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message on ``channel``."""

    @abc.abstractmethod
    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new process-local channel name owned by this layer (``prefix.<process>!<local>``)."""

    @abc.abstractmethod
    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (membership lapses ``group_expiry`` seconds after the latest add)."""

    @abc.abstractmethod
    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``."""

    @abc.abstractmethod
    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every member of ``group``; full members are skipped, never raised."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Delete every message and group of this layer."""

    async def drop(self) -> None:
        """Flush, then remove every server object this layer's ``prefix`` created that ``flush`` keeps for other
        processes (tables, functions, registries): for tools and tests that made a prefix of their own."""
        await self.flush()

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; idempotent, and a later call reopens lazily."""

    async def close_pools(self) -> None:
        """channels_redis's name for :meth:`close`."""
        await self.close()

    # -- the helpers of channels.layers.BaseChannelLayer, with this project's rules ------------------------------

    def require_valid_channel_name(self, name: str, receive: bool = False) -> bool:
        """True for a valid channel name, else ``InvalidChannelName`` (a ``TypeError``) naming it and the rule.
        ``receive`` is accepted for Channels' signature: ``receive()`` here takes full process-local names."""
        check_channel(name)
        return True

    def require_valid_group_name(self, name: str) -> bool:
        """True for a valid group name, else ``InvalidGroupName`` (a ``TypeError``) naming it and the rule."""
        check_group(name)
        return True

    def valid_channel_names(self, names: list[str], receive: bool = False) -> bool:
        """True if ``names`` is a non-empty list of valid channel names."""
        if not isinstance(names, list) or not names:
            raise InvalidChannelName(f"names must be a non-empty list of channel names, not {names!r}")
        for name in names:
            check_channel(name)
        return True

    def valid_channel_name(self, channel_name: str, receive: bool = False) -> bool:
        """Deprecated in Channels: use :meth:`require_valid_channel_name`."""
        warnings.warn("valid_channel_name is deprecated, use require_valid_channel_name instead.",
                      DeprecationWarning, stacklevel=2)
        return self.require_valid_channel_name(channel_name)

    def valid_group_name(self, group_name: str) -> bool:
        """Deprecated in Channels: use :meth:`require_valid_group_name`."""
        warnings.warn("valid_group_name is deprecated, use require_valid_group_name instead.",
                      DeprecationWarning, stacklevel=2)
        return self.require_valid_group_name(group_name)

    def match_type_and_length(self, name: object) -> bool:
        """Whether ``name`` is a ``str`` shorter than :attr:`MAX_NAME_LENGTH`."""
        return type(name) is str and len(name) < self.MAX_NAME_LENGTH

    def non_local_name(self, name: str) -> str:
        """The part of a process-local channel up to and including ``!``; a named channel's whole name."""
        return process_part(name) or name

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: of its process (non-local part) for a process-local channel (spec R-CAP-3)."""
        return self.capacity_rules.lookup(process_part(channel) or channel)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self.prefix!r}>"


# Durations are bounded so every deadline stays a finite number a server can store (Redis keeps deadlines as
# 15-digit milliseconds, so infinity or 1e300 would break the queue, not mean "forever").
_MAX_SECONDS = 10 * 365 * 86400.0


def _positive(name: str, value: object, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, not {value!r}")
    if not value <= maximum:
        raise ConfigError(f"{name} must be at most {maximum:g}, not {value!r}")
    return value


class BackendChannelLayer(BaseChannelLayer):
    """A complete channel layer over a :class:`Backend`; a backend package only provides :meth:`make_backend`."""

    #: Items popped per round trip for a process queue (every local channel of this process).
    receive_batch: ClassVar[int] = 100
    #: Seconds one blocking pop may wait before the reader checks whether anyone still listens.
    poll_timeout: ClassVar[float] = 5.0
    #: Backoff bounds (seconds) for a reader whose backend is unavailable.
    retry_delays: ClassVar[tuple[float, float]] = (0.05, 2.0)
    #: Seconds nobody waits on a queue before its feed is closed and unclaimed named-channel items go back to
    #: the server.  A consumer that receives, works and receives again keeps its feed in between.
    feed_idle: ClassVar[float] = 1.0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.client_prefix = uuid.uuid4().hex[:12]
        self._own_suffix = f".{self.client_prefix}!"  # how the non-local part of this instance's channels ends
        self.group_drops = 0  # members skipped by group_send because they were full
        self._counts = _Counts()
        self._buffers: dict[str, deque[Entry]] = {}
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    @abc.abstractmethod
    def make_backend(self) -> Backend:
        """A new backend for the running event loop."""

    # -- sending -------------------------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        push = self._push_for(channel, message)
        if not await self._state().push(push):
            self._counts.full += 1
            raise ChannelFull(f"channel {channel!r} is full (capacity {push.capacity} for {push.queue!r})", [channel])
        self._counts.sent += 1

    def _push_for(self, channel: str, message: Message) -> Push:
        """The push that sends ``message`` to ``channel``; raises for a bad name or message, storing nothing."""
        check_channel(channel)
        payload = encode_message(self.serializer, message, self.max_message_size)
        proc = process_part(channel)
        queue = proc or channel
        deadline = time.time() + self.expiry
        capacity = self.capacity_rules.lookup(queue)
        return Push(queue, pack_item(deadline, [channel] if proc else None, payload), capacity, deadline)

    async def group_send(self, group: str, message: Message) -> None:
        await self._fan_out(group, self._group_message(group, message), "group_send")

    def _group_message(self, group: str, message: Message) -> GroupFanOut:
        """What the backend gets for one group_send; raises for a bad name or message, sending nothing."""
        check_group(group)
        payload = encode_message(self.serializer, message, self.max_message_size)
        return GroupFanOut(self.capacity_rules, payload, time.time() + self.expiry)

    async def _fan_out(self, group: str, fan_out: GroupFanOut, what: str) -> None:
        dropped = await _guarded(what, self._state().backend.group_push(self._group_key(group), fan_out))
        self._counts.group_sends += 1
        if dropped:
            self.group_drops += dropped
            log.debug("%s to %r skipped %d full member(s)", what, group, dropped)

    # -- groups --------------------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        check_group(group)
        check_channel(channel)
        deadline = time.time() + self.group_expiry
        await _guarded("group_add", self._state().backend.group_add(self._group_key(group), channel, deadline))

    async def group_discard(self, group: str, channel: str) -> None:
        check_group(group)
        check_channel(channel)
        await _guarded("group_discard", self._state().backend.group_discard(self._group_key(group), channel))

    def _group_key(self, group: str) -> str:
        """Groups and channels share one namespace on some servers; backends get groups already distinguished."""
        return group

    # -- receiving -----------------------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        check_group(prefix)  # same rules as a group name: no '!'
        return f"{prefix}.{self.client_prefix}!{uuid.uuid4().hex[:12]}"

    async def receive(self, channel: str) -> Message:
        check_channel(channel)
        proc = process_part(channel)
        if proc is not None and not proc.endswith(self._own_suffix):
            raise ChannelNotOwned(
                f"receive({channel!r}) refused: that process-local channel belongs to another layer instance (its "
                f"non-local part {proc!r} does not end in this instance's {self._own_suffix!r}); only the instance "
                "whose new_channel() made it can receive it (any instance may send to it)"
            )
        queue = proc or channel
        while True:
            entry = self._take_buffered(channel)
            if entry is None:
                state = self._state()
                entry = state.take_ready(channel, queue) or await state.wait(channel, queue)
            message = self._decode(channel, entry[1])
            if message is not None:
                self._counts.received += 1
                return message

    def _take_buffered(self, channel: str) -> Entry | None:
        buffer = self._buffers.get(channel)
        while buffer:
            entry = buffer.popleft()
            if not buffer:
                del self._buffers[channel]
            if entry[0] >= time.time():
                return entry
            self._counts.expired_on_read += 1
        return None

    def _decode(self, channel: str, payload: bytes) -> Message | None:
        try:
            return decode_message(self.serializer, payload, self.max_message_size)
        except Exception as exc:  # garbage, or a key this layer does not hold: log and skip, never break
            log.warning("dropping undecodable message on %r: %s: %s", channel, type(exc).__name__, exc)
            self._counts.undecodable += 1
            return None

    def _unclaimed(self, channel: str) -> list[Entry]:
        """Take every unexpired entry buffered for ``channel`` out of its buffer."""
        now = time.time()
        return [entry for entry in self._buffers.pop(channel, ()) if entry[0] >= now]

    def _buffer(self, channel: str, entry: Entry, front: bool = False) -> None:
        buffer = self._buffers.setdefault(channel, deque())
        if front:
            buffer.appendleft(entry)
        else:
            buffer.append(entry)

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def flush(self) -> None:
        await _guarded("flush", self._state().backend.flush())
        self._buffers.clear()

    async def drop(self) -> None:
        await self.flush()
        await _guarded("drop", self._state().backend.drop())

    async def close(self) -> None:
        self._drop_dead_loops()
        loop = asyncio.get_running_loop()
        state = self._loops.pop(loop, None)
        if state is not None:
            await state.close()

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            self._drop_dead_loops()
            state = self._loops[loop] = _LoopState(self, loop, self.make_backend())
        return state

    def _drop_dead_loops(self) -> None:
        for loop in [loop for loop in self._loops if loop.is_closed()]:
            self._loops.pop(loop).backend.abandon()
            settle_background_tasks(loop)

    # -- operating it: group introspection, bulk sends, counters (spec R-OPS) -----------------------------

    async def group_channels(self, group: str) -> list[str]:
        """The channels of ``group`` whose membership has not lapsed, whichever process added them, sorted: one
        round trip to the group's server."""
        return sorted(await self._members(group, "group_channels"))

    async def group_size(self, group: str) -> int:
        """How many channels :meth:`group_channels` would list."""
        return len(await self._members(group, "group_size"))

    async def _members(self, group: str, what: str) -> list[str]:
        check_group(group)
        backend = self._state().backend
        if not backend.lists_group_members:  # a partial list would be a wrong answer, not a smaller one
            raise Unsupported(
                f"{what}: {type(backend).__name__} cannot list a group's members: its server routes group messages "
                "itself, and no process knows the members the others added"
            )
        members = await _guarded(what, backend.group_members(self._group_key(group)))
        return list(members)

    async def send_many(self, messages: Iterable[tuple[str, Message]]) -> None:
        """``send`` each ``(channel, message)`` pair, in one backend call (one round trip per server shard).

        Every pair is checked first: a bad name or message raises before anything is stored.  Messages to one
        channel are stored in the given order.  A full channel does not stop the others: the rest are stored,
        then ``ChannelFull`` is raised, its ``channels`` listing the full channels."""
        pairs = _pairs("send_many", messages)
        pushes = [self._push_for(channel, message) for channel, message in pairs]
        if not pushes:
            return
        stored = await _guarded("send_many", self._state().backend.push(pushes))
        refused = [channel for (channel, _), ok in zip(pairs, stored, strict=True) if not ok]
        self._counts.sent += len(pushes) - len(refused)
        if refused:
            self._counts.full += len(refused)
            raise _many_full(refused, len(pushes))

    async def group_send_many(self, messages: Iterable[tuple[str, Message]]) -> None:
        """``group_send`` each ``(group, message)`` pair: the groups concurrently, one group's messages in the
        given order.  Every pair is checked first: a bad name or message raises before anything is sent."""
        per_group: dict[str, list[GroupFanOut]] = {}
        for group, message in _pairs("group_send_many", messages):
            per_group.setdefault(group, []).append(self._group_message(group, message))
        results = await asyncio.gather(*(self._fan_out_in_order(group, fan_outs)
                                         for group, fan_outs in per_group.items()), return_exceptions=True)
        for result in results:  # every group was tried; the first error is the caller's
            if isinstance(result, BaseException):
                raise result

    async def _fan_out_in_order(self, group: str, fan_outs: list[GroupFanOut]) -> None:
        for fan_out in fan_outs:
            await self._fan_out(group, fan_out, "group_send_many")

    async def ping(self) -> float:
        """Seconds one round trip to every server (shard) of this layer took, made concurrently: the slowest
        one's.  Raises ``BackendUnavailable`` (unreachable in time), ``BackendRefused`` (refused, e.g. a wrong
        password) or ``Unsupported`` (a backend without ping), whose message says why."""
        backend = self._state().backend
        started = time.perf_counter()
        await _guarded("ping", backend.ping())
        return time.perf_counter() - started

    def stats(self) -> dict[str, int]:
        """This process's counts since the layer was made: messages sent and received, sends refused as full,
        group sends and the members they skipped as full, entries found expired or undecodable on read, and now:
        receivers waiting and entries held in this process for its receivers."""
        counts = self._counts
        return {
            "sent": counts.sent,
            "received": counts.received,
            "full": counts.full,
            "group_sends": counts.group_sends,
            "group_drops": self.group_drops,
            "expired_on_read": counts.expired_on_read,
            "undecodable": counts.undecodable,
            "receivers_waiting": sum(sum(state.waiting.values()) for state in self._loops.values()),
            "messages_held": sum(len(buffer) for buffer in self._buffers.values()),
        }

    # -- introspection for tests and tools ----------------------------------------------------------------

    def local_state_size(self) -> dict[str, int]:
        """How many entries the in-process maps hold (all zero once every channel is drained)."""
        sizes = {"buffers": len(self._buffers), "waiters": 0, "readers": 0}
        for state in self._loops.values():
            sizes["waiters"] += len(state.waiters)
            sizes["readers"] += len(state.readers)
        return sizes


class _Counts:
    """The counters of :meth:`BackendChannelLayer.stats`: plain ints, bumped on the send and receive paths."""

    __slots__ = ("expired_on_read", "full", "group_sends", "received", "sent", "undecodable")

    def __init__(self) -> None:
        self.sent = self.received = self.full = self.group_sends = self.expired_on_read = self.undecodable = 0


def _pairs(what: str, items: Iterable[tuple[str, Message]]) -> list[tuple[str, Message]]:
    """``items`` read once into a list of ``(name, message)`` pairs; anything else is refused before any send."""
    if isinstance(items, (str, bytes, Mapping)):
        raise TypeError(f"{what} takes an iterable of (name, message) pairs, not {type(items).__name__}")
    pairs = list(items)
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{what} takes (name, message) pairs, not {pair!r}")
    return pairs


def _many_full(refused: list[str], sent: int) -> ChannelFull:
    """The error of a send_many that stored all but ``refused`` (the channel of each message refused)."""
    channels = list(dict.fromkeys(refused))
    return ChannelFull(
        f"send_many: {len(refused)} of {sent} message(s) not stored, channel(s) full: "
        f"{', '.join(map(repr, channels))}; the other messages were stored",
        channels,
    )


class GroupFanOut(GroupMessage):
    """A :class:`~layers.backend.GroupMessage` that still shows the layer's capacity rules (``rules``), for the
    backends that read them before GroupMessage existed; goes once none does."""

    __slots__ = ("rules",)

    def __init__(self, rules: CapacityRules, payload: bytes, deadline: float) -> None:
        super().__init__(payload, deadline, rules.lookup, rules.default if rules.uniform else None)
        self.rules = rules

    def item_for(self, channels: list[str] | None) -> bytes:
        return self.named_item if channels is None else self.bundle(channels)

    def __call__(self, members: Sequence[str]) -> tuple[list[Push], list[int]]:
        return self.pushes(members)


async def _guarded(what: str, call: Any) -> Any:
    """Await a backend call; what a backend let through unwrapped still reaches the caller as a ``LayerError``:
    a connection error as ``BackendUnavailable``, anything else as ``ServerError`` (the driver error chained)."""
    try:
        return await call
    except LayerError:
        raise
    except (OSError, asyncio.TimeoutError) as exc:
        raise BackendUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise ServerError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


class _LoopState:
    """What a layer keeps per event loop: the backend, the send coalescer, readers and waiting receivers."""

    def __init__(self, layer: BackendChannelLayer, loop: asyncio.AbstractEventLoop, backend: Backend) -> None:
        self.layer = layer
        self.loop = loop
        self.backend = backend
        self.readers: dict[str, asyncio.Task[None]] = {}
        self.feeds: dict[str, _Feed] = {}  # queues the backend may deliver into (a reader ran, not closed since)
        self.idle: dict[str, asyncio.TimerHandle] = {}  # feeds nobody waits on, to close when the timer fires
        self.closing: dict[str, asyncio.Task[None]] = {}  # feeds being closed (a new reader waits for it)
        self.waiters: dict[str, deque[asyncio.Future[Entry]]] = {}
        self.waiting: dict[str, int] = {}  # queue -> receivers waiting on its channels
        self.lingering: set[str] = set()  # queues whose reader has no waiter and looks again next iteration
        self._coalescer = Coalescer(self._send, loop) if backend.coalesce_pushes else None
        self._pops_nowait = type(backend).pop_nowait is not Backend.pop_nowait
        kind = type(backend)
        self._closes_feeds = kind.close_feed is not Backend.close_feed or kind.give_back is not Backend.give_back

    # -- sends: a lone send goes at once; those made while others are on their way go as one backend call -----

    async def push(self, push: Push) -> bool:
        if self._coalescer is None:
            return (await self._send([push]))[0]
        return await self._coalescer.push(push)

    async def _send(self, pushes: Sequence[Push]) -> list[bool]:
        return await _guarded("send", self.backend.push(pushes))  # type: ignore[no-any-return]

    # -- receives: one reader per queue files items into local buffers -------------------------------------

    def take_ready(self, channel: str, queue: str) -> Entry | None:
        """Without awaiting: file what a same-process backend has ready for ``channel`` and take the first."""
        if not self._pops_nowait or (queue in self.readers and queue not in self.lingering):
            return None  # the reader owns this queue; popping here could reorder
        limit = 1 if queue == channel else self.layer.receive_batch
        items = self.backend.pop_nowait(queue, limit)
        if not items:
            return None
        self._file_items(queue, items)
        return self.layer._take_buffered(channel)

    async def wait(self, channel: str, queue: str) -> Entry:
        future: asyncio.Future[Entry] = self.loop.create_future()
        self.waiters.setdefault(channel, deque()).append(future)
        self.waiting[queue] = self.waiting.get(queue, 0) + 1
        if queue not in self.readers:
            self.readers[queue] = background_task(self._read(queue), name=f"layers-reader-{queue}",
                                                  loop=self.loop)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.file(channel, queue, future.result(), front=True)  # fetched but not handed out: keep it
            else:
                self._forget(channel, queue, future)
            raise

    def _forget(self, channel: str, queue: str, future: asyncio.Future[Entry]) -> None:
        waiters = self.waiters.get(channel)
        if waiters is not None and future in waiters:
            waiters.remove(future)
            self._unwait(channel, queue, waiters)

    def _unwait(self, channel: str, queue: str, waiters: deque[asyncio.Future[Entry]]) -> None:
        if not waiters:
            del self.waiters[channel]
        count = self.waiting[queue] - 1
        if count:
            self.waiting[queue] = count
        else:
            del self.waiting[queue]
            self.backend.stop_waiting(queue)

    def _refuse(self, queue: str, error: BackendRefused) -> None:
        """Fail every receiver waiting on a channel of ``queue`` with ``error``."""
        for channel in [channel for channel in self.waiters if (process_part(channel) or channel) == queue]:
            for future in self.waiters.pop(channel):
                if not future.done():
                    future.set_exception(error)
        if self.waiting.pop(queue, None):
            self.backend.stop_waiting(queue)

    def file(self, channel: str, queue: str, entry: Entry, front: bool = False) -> None:
        """Hand ``entry`` to the oldest receiver waiting on ``channel`` (of ``queue``), else keep it buffered."""
        waiters = self.waiters.get(channel)
        while waiters:
            future = waiters.popleft()
            self._unwait(channel, queue, waiters)
            if not future.done():  # a cancelled receiver may not have unregistered yet
                future.set_result(entry)
                return
        self.layer._buffer(channel, entry, front)

    async def _read(self, queue: str) -> None:
        named = "!" not in queue
        delay = 0.0
        try:
            idle = self.idle.pop(queue, None)
            if idle is not None:
                idle.cancel()
            closing = self.closing.get(queue)
            if closing is not None:  # the backend must not be asked again before the old feed is closed
                await asyncio.shield(closing)
            feed = self.feeds.get(queue)
            if feed is None:
                feed = self.feeds[queue] = _Feed(self, queue)
            while self.waiting.get(queue) or await self._linger(queue):
                credit = self.waiting[queue] if named else self.layer.receive_batch
                try:
                    await self.backend.fill(feed, credit, self.layer.poll_timeout)
                except BackendRefused as exc:  # retrying cannot help: every receiver of this queue hears it now
                    log.warning("receive from %r refused: %s", queue, exc)
                    self._refuse(queue, exc)
                    return
                except Exception as exc:
                    delay = _next_delay(delay, self.layer.retry_delays)
                    log.warning(
                        "receive from %r failed (%s: %s); retrying in %.2fs",
                        queue,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                delay = 0.0
        finally:
            if self.readers.get(queue) is asyncio.current_task():
                del self.readers[queue]
                if not self._closes_feeds:
                    self.feeds.pop(queue, None)
                elif queue in self.feeds and not self.loop.is_closed():
                    self.idle[queue] = self.loop.call_later(self.layer.feed_idle, self._feed_idle, queue)

    def _feed_idle(self, queue: str) -> None:
        if self.idle.pop(queue, None) is not None and queue not in self.readers and queue not in self.closing:
            task = self.closing[queue] = background_task(self._close_feed(queue), loop=self.loop)
            task.add_done_callback(lambda _: self.closing.pop(queue, None))

    async def _close_feed(self, queue: str) -> None:
        """Withdraw the backend's asks for ``queue``, then return what it delivered that nobody here claimed (a
        named channel's items: a reader elsewhere may take them; a process queue's stay, they are only ours)."""
        self.feeds.pop(queue, None)
        try:
            await self.backend.close_feed(queue)
        except Exception as exc:  # the server is away: its asks lapse by themselves
            log.debug("closing the feed of %r failed: %s: %s", queue, type(exc).__name__, exc)
        if "!" in queue:
            return
        entries = self.layer._unclaimed(queue)
        if not entries:
            return
        try:
            returned = await self.backend.give_back(queue, [Unclaimed(pack_item(deadline, None, payload), deadline)
                                                            for deadline, payload in entries])
        except Exception as exc:
            log.debug("giving back %d item(s) of %r failed: %s: %s", len(entries), queue, type(exc).__name__, exc)
            returned = False
        if not returned:  # kept for the next receiver here, ahead of anything delivered since
            self.restore(queue, entries)

    def restore(self, channel: str, entries: list[Entry]) -> None:
        """Put ``entries`` (taken out of ``channel``'s buffer) back at its head, serving waiting receivers first."""
        buffer = self.layer._buffers.setdefault(channel, deque())
        buffer.extendleft(reversed(entries))
        waiters = self.waiters.get(channel)
        while waiters and buffer:
            entry = self.layer._take_buffered(channel)
            if entry is None:
                break
            self.file(channel, channel, entry)
        if not buffer:
            self.layer._buffers.pop(channel, None)

    async def _linger(self, queue: str) -> bool:
        """Whether someone waits on ``queue`` again one loop iteration later.  A receiver that just got a message
        usually asks for the next at once; keeping its reader saves a task and a loop iteration per message
        (Redis named channel send+receive: median +6% over 10 alternating rounds)."""
        self.lingering.add(queue)
        try:
            await asyncio.sleep(0)
        finally:
            self.lingering.discard(queue)
        return bool(self.waiting.get(queue))

    def _file_items(self, queue: str, items: Sequence[bytes]) -> None:
        now = time.time()
        for item in items:
            try:
                deadline, channels, payload = unpack_item(item)
            except ValueError as exc:
                log.warning("skipping an item in %r that is not a channel-layers message: %s", queue, exc)
                self.layer._counts.undecodable += 1
                continue
            if deadline < now:
                self.layer._counts.expired_on_read += 1
                continue
            if channels is None:
                self.file(queue, queue, (deadline, payload))
                continue
            foreign = 0
            for channel in channels:
                if channel.startswith(queue) and "!" in queue:
                    self.file(channel, queue, (deadline, payload))
                else:  # forged or misrouted: if kept, nobody would ever receive it
                    foreign += 1
            if foreign:
                log.warning("skipping %d cop(ies) in %r addressed to channels that are not its own", foreign, queue)

    async def close(self) -> None:
        readers = list(self.readers.values())
        for reader in readers:
            reader.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._coalescer is not None:
            await self._coalescer.close()
        for timer in self.idle.values():
            timer.cancel()
        self.idle.clear()
        for task in list(self.closing.values()):
            with contextlib.suppress(Exception):
                await task
        for queue in list(self.feeds):
            await self._close_feed(queue)
        closed = LayerClosed("the channel layer was closed while receive() was waiting")
        for waiters in self.waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(closed)
        self.waiters.clear()
        self.waiting.clear()
        await self.backend.close()


class _Feed(Feed):
    """What a backend delivers into: the loop state files each item for its channel's receivers."""

    def __init__(self, state: _LoopState, queue: str) -> None:
        self.queue = queue
        self._state = state

    def deliver(self, items: Sequence[bytes]) -> None:
        self._state._file_items(self.queue, items)


def _next_delay(delay: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return min(high, max(low, delay * 2))
