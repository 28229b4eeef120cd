"""Every failure a caller can see is a ``layers.LayerError``, with the driver's error chained.

Backends wrap what their driver raises; what one lets through (a driver's error class nobody mapped yet) is still
turned into ``BackendUnavailable`` (a connection error) or ``ServerError`` (anything else) by the core, at every
call site.  Here a backend that raises real driver exception classes from each method stands in for a driver
failing at that point; the real servers' error answers are tested per backend below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pika.exceptions
import psycopg.errors
import pytest
import redis.exceptions

from layers import (
    BackendUnavailable,
    InMemoryChannelLayer,
    LayerClosed,
    LayerError,
    ServerError,
)
from layers.backend import Backend, Feed, GroupMessage, Push

DRIVER_ERRORS: dict[str, tuple[BaseException, type[LayerError]]] = {
    "redis reply": (redis.exceptions.ResponseError("WRONGTYPE Operation against a key"), ServerError),
    "psycopg undefined table": (psycopg.errors.UndefinedTable("relation does not exist"), ServerError),
    "pika channel closed": (pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND"), ServerError),
    "socket reset": (ConnectionResetError(104, "Connection reset by peer"), BackendUnavailable),
    "timeout": (asyncio.TimeoutError(), BackendUnavailable),
    "bug": (AttributeError("'NoneType' object has no attribute 'write'"), ServerError),
}


class _Failing(Backend):
    """Raises ``error`` from every server call."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def _fail(self) -> Any:
        raise self.error

    async def push(self, pushes: Sequence[Push]) -> list[bool]:
        return self._fail()  # type: ignore[no-any-return]

    async def pop(self, queue: str, limit: int, timeout: float) -> list[bytes]:
        return self._fail()  # type: ignore[no-any-return]

    async def group_add(self, group: str, channel: str, deadline: float) -> None:
        self._fail()

    async def group_discard(self, group: str, channel: str) -> None:
        self._fail()

    async def group_members(self, group: str) -> list[str]:
        return self._fail()  # type: ignore[no-any-return]

    async def group_push(self, group: str, message: GroupMessage) -> int:
        return self._fail()  # type: ignore[no-any-return]

    async def flush(self) -> None:
        self._fail()

    async def close(self) -> None:
        pass


class _FailingLayer(InMemoryChannelLayer):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def make_backend(self) -> Backend:
        return _Failing(self.error)


CALLS = {
    "send": lambda layer: layer.send("work", {"type": "x"}),
    "send (process channel)": lambda layer: layer.send("specific.abc!def", {"type": "x"}),
    "group_add": lambda layer: layer.group_add("room", "work"),
    "group_discard": lambda layer: layer.group_discard("room", "work"),
    "group_send": lambda layer: layer.group_send("room", {"type": "x"}),
    "flush": lambda layer: layer.flush(),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("kind", list(DRIVER_ERRORS))
def test_a_driver_error_reaches_the_caller_as_a_layer_error(call: str, kind: str) -> None:
    error, expected = DRIVER_ERRORS[kind]

    async def scenario() -> None:
        layer = _FailingLayer(error)
        with pytest.raises(expected) as raised:
            await CALLS[call](layer)
        assert raised.value.__cause__ is error
        assert type(error).__name__ in str(raised.value) and call.split()[0] in str(raised.value)
        await layer.close()

    asyncio.run(scenario())


def test_a_failing_fill_keeps_the_receiver_waiting_and_close_ends_it_with_layer_closed() -> None:
    """A receive does not fail on an error that may heal (its reader retries with backoff); closing the layer
    ends the wait with LayerClosed."""
    async def scenario() -> None:
        layer = _FailingLayer(redis.exceptions.ConnectionError("Connection reset"))
        pending = asyncio.ensure_future(layer.receive("work"))
        await asyncio.sleep(0.3)
        assert not pending.done()
        await layer.close()
        with pytest.raises(LayerClosed):
            await pending

    asyncio.run(scenario())


class _Delivering(Backend):
    """A push backend in miniature: hands what ``fill`` is asked for to the feed from a callback."""

    def __init__(self) -> None:
        self.feeds: list[Feed] = []

    async def fill(self, feed: Feed, credit: int, timeout: float) -> None:
        self.feeds.append(feed)
        await asyncio.sleep(timeout)

    async def push(self, pushes: Sequence[Push]) -> list[bool]:
        return [True for _ in pushes]

    async def group_add(self, group: str, channel: str, deadline: float) -> None:
        pass

    async def group_discard(self, group: str, channel: str) -> None:
        pass

    async def group_members(self, group: str) -> list[str]:
        return []

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_bad_item_delivered_into_a_feed_is_skipped() -> None:
    """Feed.deliver never raises for an item that is not ours: it is logged and skipped, the next one arrives."""
    from layers.envelope import pack_item
    from layers.serialization import encode_message

    backend = _Delivering()

    class Layer(InMemoryChannelLayer):
        def make_backend(self) -> Backend:
            return backend

    async def scenario() -> None:
        layer = Layer()
        pending = asyncio.ensure_future(layer.receive("work"))
        for _ in range(100):
            if backend.feeds:
                break
            await asyncio.sleep(0.01)
        payload = encode_message(layer.serializer, {"type": "ok"}, layer.max_message_size)
        backend.feeds[0].deliver([b"garbage", pack_item(4e9, None, payload)])
        assert await asyncio.wait_for(pending, 5) == {"type": "ok"}
        await layer.close()

    asyncio.run(scenario())
